r"""Target entropy: how smooth a teacher's softened targets are (paper Appendix H).

$$
H_T = \frac{1}{N} \sum_{i=1}^{N} \Big( -\sum_{k=1}^{K} p^T_{ik} \ln p^T_{ik} \Big),
\qquad p^T_i = \mathrm{softmax}(z_i / T)
$$

in nats, with maximum $\ln K$ (uniform targets; $\ln 200 \approx 5.298$
for CUB-200). [`target_entropy`][lsdiffusion.target_entropy] computes it for one temperature;
[`TargetEntropy`][lsdiffusion.TargetEntropy] accumulates it for several temperatures in one pass
over teacher logits, with summable float64 state that all-reduces under DDP.

The entropy of a row is evaluated as $H = \ln S + \sum_k e_k (-s_k) / S$
with $s = (z - \max z)/T \le 0$, $e = \exp s$, $S = \sum_k e_k$:
both terms are non-negative, so nothing cancels, and ``-inf`` logits (masked
classes) contribute exactly 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lsdiffusion._distributed import _agree_across_ranks, _all_reduce_sum, _distributed_ready
from lsdiffusion._validation import (
    check_dim_type,
    check_finite_positive,
    check_ignore_index,
    check_integer_dtype,
    check_reduction,
    normalize_dim,
)

__all__ = ["EntropyReport", "TargetEntropy", "target_entropy"]

_CHUNK_ELEMENTS = 1 << 18  # rows are processed in blocks of about this many logits (1 MiB f32)


def _as_rows(name: str, logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Return logits as (M, K) with the class dim last, and the shape of the other dims."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {logits.dtype}")
    d = normalize_dim(name, dim, logits)
    if logits.shape[d] < 1:
        raise ValueError(
            f"{name} must have at least one class along dim={dim}, got shape {tuple(logits.shape)}"
        )
    moved = logits.movedim(d, -1)
    rest = tuple(int(s) for s in moved.shape[:-1])
    return moved.reshape(-1, moved.shape[-1]), rest


def _kept_rows(
    rows: torch.Tensor, rest: tuple[int, ...], labels: object, ignore_index: int | None
) -> torch.Tensor | None:
    """The (M,) mask of rows whose label is not ``ignore_index``; ``None`` keeps every row.

    ``labels`` has the logits' shape without the class dim (token targets, say);
    only whether each equals ``ignore_index`` matters, so its values are not
    range-checked.
    """
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    check_integer_dtype("labels", labels)
    if tuple(labels.shape) != rest:
        raise ValueError(
            f"labels must have the shape of logits without the class dim, {rest}; "
            f"got labels of shape {tuple(labels.shape)}"
        )
    if ignore_index is None:
        return None
    return labels.to(rows.device).reshape(-1).long() != ignore_index


def _scale_dtype(wd: torch.dtype, temperatures: Sequence[float]) -> torch.dtype:
    """The dtype in which ``1/T`` and ``(z - max z)/T`` stay finite (float64 if not ``wd``).

    A temperature below ``1/finfo(float32).max`` (about 2.9e-39) overflows ``1/T``
    in float32; such rows are computed in float64. A ``1/T`` beyond float64
    (T below about 5.6e-309, subnormal) is refused.
    """
    smallest = min(temperatures)
    if 1.0 / smallest <= torch.finfo(wd).max:
        return wd
    if 1.0 / smallest <= torch.finfo(torch.float64).max:
        return torch.float64
    raise ValueError(
        f"temperature must be at least 1/finfo(float64).max (about 5.6e-309) so that 1/T is "
        f"finite, got {smallest!r}"
    )


def _one_temperature(value: object) -> float | None:
    """`value` as one float temperature (a number or a 0-d tensor), for a hint; else None."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex():
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_entropies(
    rows: torch.Tensor, temperatures: Sequence[float], name: str = "logits"
) -> torch.Tensor:
    """Entropies (len(temperatures), M) of the rows of ``rows`` (M, K), in nats.

    Works block by block over rows (about ``_CHUNK_ELEMENTS`` logits at a time)
    so that the temporaries stay small and cache-resident.
    """
    wd = _work_dtype(rows.dtype)
    cd = _scale_dtype(wd, temperatures)  # float64 when 1/T overflows wd
    num_rows, num_classes = int(rows.shape[0]), int(rows.shape[1])
    out = torch.empty(len(temperatures), num_rows, dtype=wd, device=rows.device)
    if num_rows == 0:
        return out
    # Clamping -inf to this bound keeps e * s finite (0 * -inf would be NaN) and
    # changes nothing else: exp(bound / T) underflows to 0 for every T <= 1e30.
    bound = torch.finfo(cd).min * 0.5 * min(1.0, min(temperatures))
    block = max(1, _CHUNK_ELEMENTS // max(1, num_classes))
    for start in range(0, num_rows, block):
        z = rows[start : start + block].to(cd)
        shifted = (z - z.amax(dim=1, keepdim=True)).clamp_(min=bound)
        for j, t in enumerate(temperatures):
            s = shifted if t == 1.0 else shifted * (1.0 / t)
            e = torch.exp(s)
            total = e.sum(dim=1)
            weighted = (e * s).sum(dim=1)
            out[j, start : start + block] = torch.log(total) - weighted / total
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"{name} contain NaN or +inf, or a row whose logits are all -inf: "
            "the entropy is undefined"
        )
    return out


def target_entropy(
    logits: torch.Tensor,
    temperature: float = 1.0,
    dim: int = 1,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
    labels: torch.Tensor | None = None,
    ignore_index: int | None = -100,
) -> torch.Tensor:
    r"""Shannon entropy (nats) of ``softmax(logits / temperature)`` along ``dim``.

    $$
    H_i = -\sum_{k=1}^{K} p^T_{ik} \ln p^T_{ik}, \qquad
    p^T_i = \mathrm{softmax}(z_i / T), \qquad 0 \le H_i \le \ln K
    $$

    ``reduction="mean"`` (default) averages over every other position (samples,
    tokens), which is the paper's target smoothness; ``"sum"`` sums; ``"none"``
    returns $H_i$ per position. ``-inf`` logits count as probability 0.
    Half-precision logits are computed in float32; float64 stays float64.
    With token ``labels`` (the logits' shape without ``dim``), positions whose
    label is ``ignore_index`` (padding) are skipped: left out of ``"mean"`` and
    ``"sum"`` and 0 in ``"none"`` (as in ``F.cross_entropy``); their logits are
    not read.

    Args:
        logits: teacher logits, (N, K) or (N, K, ...) with the classes along ``dim``.
        temperature: the softmax temperature $T > 0$.
        dim: the class dimension.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        labels: optional (...) integer labels, the logits' shape without ``dim``,
            that mark the positions to skip.
        ignore_index: the label of a skipped position; ``None`` skips nothing.

    Returns:
        A scalar, or the logits' shape without ``dim`` for ``"none"``.

    Shape:
        - logits: (N, K) or (N, K, d1, ...); output: () or (N, d1, ...).

    Examples:
        >>> import math, torch
        >>> z = torch.zeros(2, 200)  # uniform: entropy is ln 200
        >>> round(target_entropy(z).item(), 3), round(math.log(200), 3)
        (5.298, 5.298)
        >>> target_entropy(torch.tensor([[2.0, 0.0, -1.0]]), temperature=64.0).item() > 1.09
        True
    """
    check_finite_positive("temperature", temperature)
    check_reduction(reduction, ("mean", "sum", "none"))
    if ignore_index is not None:
        check_ignore_index(ignore_index)
    rows, rest = _as_rows("logits", logits, dim)
    keep = _kept_rows(rows, rest, labels, ignore_index)
    kept = rows if keep is None else rows[keep]
    if kept.shape[0] == 0 and reduction == "mean":
        raise ValueError(
            f"logits has no rows to average over (shape {tuple(logits.shape)}"
            + ("" if keep is None else f", every label is ignore_index={ignore_index}")
            + ")"
        )
    h = _row_entropies(kept, [float(temperature)])[0]
    if reduction == "none":
        if keep is not None:
            h = torch.zeros(rows.shape[0], dtype=h.dtype, device=h.device).masked_scatter_(keep, h)
        return h.reshape(rest)
    total = h.sum(dtype=torch.float64)
    if reduction == "sum":
        return total.to(h.dtype)
    return (total / h.shape[0]).to(h.dtype)


@dataclass(frozen=True)
class EntropyReport:
    r"""Mean target entropy per temperature, as accumulated by `TargetEntropy`.

    Attributes:
        temperatures: the temperatures, in the order given.
        entropy: mean entropy (nats) per temperature, aligned with ``temperatures``.
        max_entropy: $\ln K$, the entropy of uniform targets.
        num_samples: number of rows (samples or tokens) averaged.
        num_classes: K.
    """

    temperatures: tuple[float, ...]
    entropy: tuple[float, ...]
    max_entropy: float
    num_samples: int
    num_classes: int

    def as_dict(self) -> dict[float, float]:
        """``{temperature: mean entropy}``."""
        return dict(zip(self.temperatures, self.entropy, strict=True))

    @property
    def normalized(self) -> tuple[float, ...]:
        """Mean entropy divided by ln K (in [0, 1]; NaN when K = 1)."""
        if self.max_entropy == 0:
            return tuple(math.nan for _ in self.entropy)
        return tuple(h / self.max_entropy for h in self.entropy)

    def __getitem__(self, temperature: float) -> float:
        try:
            return self.entropy[self.temperatures.index(float(temperature))]
        except ValueError:
            raise KeyError(
                f"temperature {temperature} was not tracked; tracked: {list(self.temperatures)}"
            ) from None

    def __str__(self) -> str:
        lines = [f"{'T':>6}  {'entropy (nats)':>14}  {'/ ln K':>7}"]
        for t, h, r in zip(self.temperatures, self.entropy, self.normalized, strict=True):
            lines.append(f"{t:>6g}  {h:>14.4f}  {r:>7.3f}")
        lines.append(f"{'ln K':>6}  {self.max_entropy:>14.4f}  (K = {self.num_classes})")
        return "\n".join(lines)


class TargetEntropy:
    r"""Streaming mean target entropy for several temperatures in one pass.

    For every batch of teacher logits, the entropy of
    $\mathrm{softmax}(z / T)$ is computed for each temperature
    (see [`target_entropy`][lsdiffusion.target_entropy]) and summed in float64;
    [`compute`][lsdiffusion.entropy.TargetEntropy.compute] divides by the number of rows and reports
    $\ln K$ alongside. The state is one float64 vector and a count: it merges across batches,
    accumulators ([`merge`][lsdiffusion.entropy.TargetEntropy.merge]) and DDP ranks. When
    ``torch.distributed`` is initialised and ``sync`` is true,
    [`compute`][lsdiffusion.entropy.TargetEntropy.compute] all-reduces a *copy* of the state (a
    collective every rank must call); the local state is never changed.

    Under DDP the first synchronising ``compute`` checks once (one small
    all-gather) that every rank tracks the same temperatures in the same order
    and the same K, and raises a ``ValueError`` naming the ranks and values that
    differ instead of mixing sums or hanging; a rank that saw no batch takes K
    from the others.

    Args:
        temperatures: the temperatures $T > 0$ to track, an iterable (for
            one temperature, ``(T,)``).
        dim: the class dimension of the logits (an int).
        num_classes: K, if known in advance; otherwise taken from the first batch.
        sync: whether [`compute`][lsdiffusion.entropy.TargetEntropy.compute] all-reduces over an
            initialised process group.
        process_group: the group to reduce over (``None``: the default group).
        ignore_index: the label of positions to skip when
            [`update`][lsdiffusion.entropy.TargetEntropy.update] is given token labels.

    Examples:
        >>> import torch
        >>> acc = TargetEntropy(temperatures=(1, 64))
        >>> acc.update(torch.tensor([[4.0, 0.0, 0.0, 0.0]]))
        >>> acc.update(torch.zeros(3, 4))
        >>> report = acc.compute()
        >>> [round(h, 3) for h in report.entropy], round(report.max_entropy, 3)
        ([1.105, 1.386], 1.386)
    """

    def __init__(
        self,
        temperatures: Iterable[float] = (1.0, 2.0, 3.0, 64.0),
        *,
        dim: int = 1,
        num_classes: int | None = None,
        sync: bool = True,
        process_group: Any | None = None,
        ignore_index: int | None = -100,
    ) -> None:
        scalar = isinstance(temperatures, torch.Tensor) and temperatures.dim() == 0
        if (
            scalar
            or isinstance(temperatures, (numbers.Number, str, bytes))
            or not isinstance(temperatures, Iterable)
        ):
            one = _one_temperature(temperatures)
            hint = f"; for one temperature pass ({one!r},)" if one is not None else ""
            raise TypeError(
                f"temperatures must be an iterable of temperatures such as (1.0, 4.0), got "
                f"{type(temperatures).__name__} {temperatures!r}{hint}"
            )
        temps: tuple[object, ...] = tuple(temperatures)
        if not temps:
            raise ValueError("temperatures must not be empty")
        values: list[float] = []
        for i, t in enumerate(temps):
            if isinstance(t, bool) or not isinstance(t, numbers.Real):
                raise TypeError(
                    f"temperatures[{i}] must be a number, got {type(t).__name__} {t!r}; pass "
                    "floats such as (1.0, 4.0)"
                    + (" (tensor.tolist() for a tensor)" if isinstance(t, torch.Tensor) else "")
                )
            check_finite_positive("temperatures", t)
            values.append(float(t))
        if len(set(temps)) != len(temps):
            raise ValueError(f"temperatures must be distinct, got {list(temps)}")
        if 1.0 / min(values) > torch.finfo(torch.float64).max:
            raise ValueError(
                "temperatures must be at least 1/finfo(float64).max (about 5.6e-309) so that "
                f"1/T is finite, got {min(values)!r}"
            )
        self.temperatures: tuple[float, ...] = tuple(values)
        check_dim_type(dim)
        self.dim = int(dim)
        if ignore_index is not None:
            check_ignore_index(ignore_index)
        self.ignore_index = ignore_index
        self._ranks_checked = False
        self.sync = bool(sync)
        self.process_group = process_group
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self._init_classes = num_classes
        self.num_classes: int | None = num_classes
        self._sums: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def _state(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sums is None or self._count is None:
            dev = device or torch.device("cpu")
            self._sums = torch.zeros(len(self.temperatures), dtype=torch.float64, device=dev)
            self._count = torch.zeros((), dtype=torch.int64, device=dev)
        return self._sums, self._count

    def update(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add a batch of teacher logits, classes along ``dim``.

        Args:
            logits: (N, K), (N, K, ...) or, with ``dim=-1``, token logits (B, L, K).
            labels: optional integer labels of the logits' shape without ``dim``;
                positions labelled ``ignore_index`` (padding) are skipped.
        """
        rows, rest = _as_rows("logits", logits, self.dim)
        keep = _kept_rows(rows, rest, labels, self.ignore_index)
        if keep is not None:
            rows = rows[keep]
        k = int(rows.shape[1])
        if self.num_classes is not None and k != self.num_classes:
            raise ValueError(
                f"logits must have {self.num_classes} classes along dim={self.dim} like the "
                f"previous batches, got shape {tuple(logits.shape)}"
            )
        self.num_classes = k
        sums, count = self._state(rows.device)
        if rows.device != sums.device:
            raise ValueError(
                f"logits are on {rows.device} but the TargetEntropy state is on {sums.device}"
            )
        h = _row_entropies(rows, self.temperatures)
        sums += h.sum(dim=1, dtype=torch.float64)
        count += rows.shape[0]

    def compute(self, *, sync: bool | None = None) -> EntropyReport:
        """Return the mean entropy per temperature (an `EntropyReport`)."""
        do_sync = self.sync if sync is None else bool(sync)
        distributed = do_sync and _distributed_ready()
        if distributed and not self._ranks_checked:
            self._check_ranks()
        sums, count = self._state()
        if distributed:
            sums, count = _all_reduce_sum([sums, count], self.process_group)
        n = int(count)
        if n == 0 or self.num_classes is None:
            raise RuntimeError("TargetEntropy has seen no logits: call update() first")
        means = (sums / n).cpu().tolist()
        return EntropyReport(
            temperatures=self.temperatures,
            entropy=tuple(float(v) for v in means),
            max_entropy=math.log(self.num_classes),
            num_samples=n,
            num_classes=self.num_classes,
        )

    def _check_ranks(self) -> None:
        """Once, at the first sync: the same temperatures (count, values, order) and K."""
        config: dict[str, object] = {
            "number of temperatures": len(self.temperatures),
            "temperatures": list(self.temperatures),
            "num_classes": self.num_classes,
        }
        agreed = _agree_across_ranks(
            "TargetEntropy", config, self.process_group, optional=("num_classes",)
        )
        if self.num_classes is None and agreed["num_classes"] is not None:
            assert isinstance(agreed["num_classes"], int)
            self.num_classes = agreed["num_classes"]
        self._ranks_checked = self.num_classes is not None

    def merge(self, *others: TargetEntropy) -> TargetEntropy:
        """Add the states of ``others`` (same temperatures and K) into this one; return it."""
        for other in others:
            if not isinstance(other, TargetEntropy):
                raise TypeError(f"can only merge TargetEntropy, got {type(other).__name__}")
            if other.temperatures != self.temperatures:
                raise ValueError(
                    f"cannot merge temperatures {list(other.temperatures)} into "
                    f"{list(self.temperatures)}"
                )
            if other._sums is None or other._count is None or other.num_classes is None:
                continue
            if self.num_classes is not None and other.num_classes != self.num_classes:
                raise ValueError(
                    f"cannot merge K={other.num_classes} classes into K={self.num_classes}"
                )
            sums, count = self._state(other._sums.device)
            sums += other._sums.to(sums.device)
            count += other._count.to(count.device)
            self.num_classes = other.num_classes
        return self

    def reset(self) -> None:
        """Forget every sample."""
        self._sums = None
        self._count = None
        self.num_classes = self._init_classes
        self._ranks_checked = False

    def __repr__(self) -> str:
        n = 0 if self._count is None else int(self._count)
        return f"TargetEntropy(temperatures={list(self.temperatures)}, samples={n})"
