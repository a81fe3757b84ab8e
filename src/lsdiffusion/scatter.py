r"""Cluster geometry of penultimate features in one streaming, mergeable pass.

The numbers behind "information erasure" (Müller et al. 2019; Shen et al. 2021):
an LS-trained teacher's classes form tighter clusters, farther apart. With class
means $\mu_c$, $\bar\mu$ the mean of the $K$ class means and $N$ samples:

- NC1 (Papyan, Han and Donoho 2020), lower = tighter clusters:

$$
\mathrm{NC1} = \frac{1}{K}\operatorname{tr}\big(\Sigma_W \Sigma_B^{\dagger}\big), \quad
\Sigma_W = \frac{1}{N}\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top, \quad
\Sigma_B = \frac{1}{K}\sum_c (\mu_c - \bar\mu)(\mu_c - \bar\mu)^\top
$$

- CDNV (Galanti et al. 2022), $\sigma_c^2 = \frac{1}{N_c}\sum_{i \in c}\lVert h_i - \mu_c\rVert^2$:

$$
\mathrm{CDNV}(c, c') = \frac{\sigma_c^2 + \sigma_{c'}^2}{2\lVert \mu_c - \mu_{c'}\rVert^2}
$$

- class separation $R^2$ (Kornblith et al. 2021) with cosine distance $d = 1 - \cos$,
  every pair counted (the $m = n$ ones too):

$$
R^2 = 1 - \frac{\bar d_\mathrm{within}}{\bar d_\mathrm{total}}, \quad
\bar d_\mathrm{within} = \frac{1}{K}\sum_k \frac{1}{N_k^2}\sum_{m,n \in k} d(x_m, x_n), \quad
\bar d_\mathrm{total} = \frac{1}{K^2}\sum_{j,k} \frac{1}{N_j N_k}\sum_{m\in j,n\in k} d(x_m, x_n)
$$

[`ClassScatter`][lsdiffusion.ClassScatter] accumulates them over a data loader;
[`class_scatter`][lsdiffusion.class_scatter] computes them for features in memory.
Both return a [`ClusterGeometry`][lsdiffusion.ClusterGeometry].
"""

# Over 600 lines with a reason: about 210 are docstrings (each statistic's formula and a
# runnable example); the code is ~450 lines: the accumulator, its function form and the
# result type, which share the statistics' definitions.

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch

from lsdiffusion._arrays import ArrayLike, as_tensor, index_array
from lsdiffusion._distributed import (
    _agree_across_ranks,
    _all_reduce_sum,
    _distributed_ready,
    _resolve_device,
)
from lsdiffusion._validation import (
    check_choice,
    check_class_indices,
    check_ignore_index,
    check_int,
    count_labels,
    flatten_labelled,
    short_list,
)
from lsdiffusion.centroids import EmptyClassWarning

__all__ = ["ClassScatter", "ClusterGeometry", "class_scatter"]

EmptyPolicy: TypeAlias = Literal["warn", "raise", "ignore"]

_EMPTY_POLICIES: tuple[str, ...] = ("warn", "raise", "ignore")
_F64 = torch.float64


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True, eq=False)
class ClusterGeometry:
    r"""Per-class statistics and the cluster-geometry measures of one set of features.

    Classes without samples have NaN rows in ``means``, NaN in ``within_variance``
    and NaN rows and columns in ``cdnv``; the scalar measures (``nc1``,
    ``class_separation``) and ``sigma_b`` are taken over the classes present
    (their number is ``num_present``), ``sigma_w`` over every sample.

    Attributes:
        counts: (K,) int64 samples per class.
        means: (K, D) float64 class means $\mu_c$.
        within_variance: (K,) float64 $\sigma_c^2$, the mean squared distance of a
            class's samples to its mean (the trace of its covariance).
        sigma_w: (D, D) float64 pooled within-class covariance $\Sigma_W$.
        sigma_b: (D, D) float64 between-class covariance $\Sigma_B$ (about $\bar\mu$).
        nc1: $\operatorname{tr}(\Sigma_W \Sigma_B^\dagger)/K$; NaN with fewer than two
            classes present. The pseudo-inverse drops the structural null direction
            of $\Sigma_B$ exactly and the singular values of the centred means at
            the rounding level of the means ($\max(K, D)\,\epsilon\,\sqrt{K}\max_c
            \lVert\mu_c\rVert$, NumPy's rank rule measured against the means).
        cdnv: (K, K) float64 CDNV of every pair. The diagonal is NaN (a class against
            itself is not a pair); two distinct classes with the same mean give inf
            (NaN when both also have zero variance).
        class_separation: Kornblith's $R^2$ (NaN when every feature points the same
            way). A zero feature vector has cosine 0 with everything, itself included
            (the ``F.normalize`` convention).
    """

    counts: torch.Tensor
    means: torch.Tensor
    within_variance: torch.Tensor
    sigma_w: torch.Tensor
    sigma_b: torch.Tensor
    nc1: float
    cdnv: torch.Tensor
    class_separation: float

    @property
    def num_classes(self) -> int:
        """K, the number of classes (present or not)."""
        return int(self.counts.shape[0])

    @property
    def num_present(self) -> int:
        """The number of classes with at least one sample."""
        return int((self.counts > 0).sum())

    @property
    def num_samples(self) -> int:
        """N, the number of samples."""
        return int(self.counts.sum())

    def mean_cdnv(self, target: int, classes: object) -> float:
        r"""Mean CDNV between class ``target`` and each class of ``classes``.

        Read it over $S_\mathrm{sim}$ and over $S_\mathrm{dissim}$ as the
        diffusion index is: similar classes are expected to be closer (higher
        CDNV) than dissimilar ones.

        Args:
            target: the target class index $\pi$.
            classes: class indices (an iterable, array or tensor), not containing ``target``.

        Returns:
            The mean of ``cdnv[target, c]`` over ``classes`` (NaN if an empty class is involved).

        Raises:
            ValueError: if ``classes`` is empty, holds ``target`` or is out of range.
        """
        k = self.num_classes
        t = check_int("target", target)
        if t >= k:
            raise ValueError(f"target must be in [0, {k - 1}], got {t}")
        idx = index_array("classes", classes)
        if idx.size == 0:
            raise ValueError("classes must hold at least one class index, got none")
        check_class_indices("classes", idx, k)
        if (idx == t).any():
            raise ValueError(f"classes must not contain the target class {t}")
        row = self.cdnv[t].index_select(0, torch.from_numpy(idx).to(self.cdnv.device))
        return float(row.mean())

    def to_dict(self) -> dict[str, Any]:
        """The scalars and per-class values as plain Python (JSON-safe: NaN becomes ``None``).

        The (D, D) and (K, K) matrices are left out; read them from the attributes.
        """
        return {
            "num_classes": self.num_classes,
            "num_present": self.num_present,
            "num_samples": self.num_samples,
            "num_features": int(self.means.shape[1]),
            "nc1": _nan_to_none(self.nc1),
            "class_separation": _nan_to_none(self.class_separation),
            "counts": [int(v) for v in self.counts.cpu().tolist()],
            "within_variance": [_nan_to_none(float(v)) for v in self.within_variance.cpu()],
        }


class ClassScatter:
    r"""Streaming class means, within-class scatter and normalised sums, in float64.

    The state, for K classes and D features: per-class counts, a per-class
    reference point $r_c$ (the first sample of the class), the sums of
    $h - r_c$, of $\lVert h - r_c\rVert^2$ and of $h/\lVert h\rVert$, and one
    pooled D × D matrix $\sum_i (h_i - r_{y_i})(h_i - r_{y_i})^\top$: D × D + 3·K × D
    numbers (the reference points, the sums of $h - r_c$ and of $h/\lVert h\rVert$)
    plus two of K, no per-class covariance and no stored feature. Centring on a reference near
    the mean keeps the digits of features far from the origin (a 1e4 offset in
    float32); accumulators and DDP ranks merge by moving every state to a common
    reference first (the parallel-axis form of Chan et al.'s update), never by
    adding raw second moments.

    **Cost.** Each batch costs a (N, D) × (D, N) product for the D × D scatter:
    on CPU that dominates for large D (about $2 N D^2$ flops, far more than
    class means alone). ``exact=True`` (default) runs it in float64;
    ``exact=False`` runs it in float32 on the centred features (about 2× faster
    on CPU; relative error about $10^{-6}$ of $\Sigma_W$), everything else
    staying float64.

    **Distributed, empty classes, validation, devices**: as
    [`ClassCentroids`][lsdiffusion.ClassCentroids].
    [`compute`][lsdiffusion.scatter.ClassScatter.compute] is a collective when a process group is
    initialised and ``sync`` is true; the first sync checks once that every rank has the same
    ``num_classes`` and ``num_features`` (one small all-gather).

    Args:
        num_classes: number of classes K.
        num_features: feature dimension D; inferred from the first batch if ``None``.
        device: where the state lives; defaults to the device of the first batch.
        sync: whether ``compute`` reduces over an initialised process group.
        process_group: the group to reduce over (``None``: the default group).
        on_empty: what ``compute`` does about classes without samples: ``"warn"``
            (an [`EmptyClassWarning`][lsdiffusion.EmptyClassWarning]), ``"raise"``
            or ``"ignore"``; the measures are taken over the classes present.
        validate: report out-of-range labels in detail (one device sync per batch).
        exact: float64 scatter product (default); ``False``: float32 product.
        ignore_index: a label to skip (padding tokens); ``None`` keeps every label.

    Shape:
        - features: (..., D), any real floating dtype.
        - labels: (...), integer class indices in [0, K), or ``ignore_index``.

    Examples:
        >>> import torch
        >>> acc = ClassScatter(num_classes=2)
        >>> acc.update(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 0]))
        >>> acc.update(torch.tensor([[10.0, 0.0], [10.0, 2.0]]), torch.tensor([1, 1]))
        >>> g = acc.compute()
        >>> g.within_variance.tolist(), round(g.nc1, 4)
        ([1.0, 1.0], 0.0123)
        >>> round(g.cdnv[0, 1].item(), 4)  # (1 + 1) / (2 * 9**2); the diagonal is NaN
        0.0123
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int | None = None,
        *,
        device: torch.device | str | None = None,
        sync: bool = True,
        process_group: Any | None = None,
        on_empty: EmptyPolicy = "warn",
        validate: bool = True,
        exact: bool = True,
        ignore_index: int | None = -100,
    ) -> None:
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self._init_features = (
            None if num_features is None else check_int("num_features", num_features, minimum=1)
        )
        check_choice("on_empty", on_empty, _EMPTY_POLICIES)
        if ignore_index is not None:
            check_ignore_index(ignore_index)
        self.device: torch.device | None = None if device is None else _resolve_device(device)
        self.sync = bool(sync)
        self.process_group = process_group
        self.on_empty: EmptyPolicy = on_empty
        self.validate = bool(validate)
        self.exact = bool(exact)
        self.ignore_index = ignore_index
        self.num_features: int | None = self._init_features
        self._state: dict[str, torch.Tensor] | None = None
        self._ranks_checked = False

    # -- state ---------------------------------------------------------------
    def _allocate(self, device: torch.device, num_features: int) -> dict[str, torch.Tensor]:
        k, d = self.num_classes, num_features
        self.device = device
        self.num_features = d
        self._state = {
            "counts": torch.zeros(k, dtype=torch.int64, device=device),
            "ref": torch.zeros(k, d, dtype=_F64, device=device),
            "sums": torch.zeros(k, d, dtype=_F64, device=device),
            "sq": torch.zeros(k, dtype=_F64, device=device),
            "unit": torch.zeros(k, d, dtype=_F64, device=device),
            "scatter": torch.zeros(d, d, dtype=_F64, device=device),
        }
        return self._state

    def _local(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            if self.num_features is None:
                raise RuntimeError(
                    "ClassScatter has seen no data and does not know the feature dimension: "
                    "call update() first, or pass num_features=..."
                )
            return self._allocate(self.device or torch.device("cpu"), self.num_features)
        return self._state

    @property
    def counts(self) -> torch.Tensor:
        """The local per-class sample counts, (K,) int64 (a view of the state)."""
        return self._local()["counts"]

    # -- API -----------------------------------------------------------------
    def update(self, features: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch of features and their labels.

        Args:
            features: (..., D) floating features.
            labels: (...) integer class indices in [0, K) (``ignore_index`` skipped).
        """
        feats = as_tensor("features", features)
        labs = as_tensor("labels", labels)
        if labs.device != feats.device:
            labs = labs.to(feats.device)
        x, y = flatten_labelled(
            feats, labs, self.num_classes, ignore_index=self.ignore_index, check_range=self.validate
        )
        d = int(x.shape[1])
        if self.num_features is not None and d != self.num_features:
            raise ValueError(
                f"features must have {self.num_features} features in their last dim like the "
                f"previous batches (num_features), got shape {tuple(feats.shape)}"
            )
        if self._state is None and self.device is not None and x.device != self.device:
            raise ValueError(
                f"features are on {x.device} but ClassScatter was created with "
                f"device={self.device}; move the batch or call .to({str(x.device)!r})"
            )
        state = self._state if self._state is not None else self._allocate(x.device, d)
        if state["counts"].device != x.device:
            raise ValueError(
                f"features are on {x.device} but the ClassScatter state is on "
                f"{state['counts'].device}; move the batch or call .to({str(x.device)!r})"
            )
        batch_counts = count_labels(y, self.num_classes)
        if x.shape[0] == 0:
            return
        x = x.detach()
        x64 = x.to(_F64)
        # a class seen for the first time takes its first sample as reference point
        m = int(x.shape[0])
        first = torch.full((self.num_classes,), m, dtype=torch.int64, device=x.device)
        first.scatter_reduce_(0, y, torch.arange(m, device=x.device), reduce="amin")
        new = (state["counts"] == 0) & (batch_counts > 0)
        rows = x64.index_select(0, first.clamp_(max=m - 1))
        state["ref"].copy_(torch.where(new.unsqueeze(1), rows, state["ref"]))
        centred = x64 - state["ref"].index_select(0, y)
        state["sums"].index_add_(0, y, centred)
        state["sq"].index_add_(0, y, (centred * centred).sum(dim=1))
        if self.exact or x.dtype == _F64:
            state["scatter"].addmm_(centred.T, centred)
        else:
            c32 = centred.to(torch.float32)
            state["scatter"] += torch.mm(c32.T, c32).to(_F64)
        norms = torch.linalg.vector_norm(x64, dim=1, keepdim=True)
        state["unit"].index_add_(0, y, x64 / norms.clamp_(min=torch.finfo(_F64).tiny))
        state["counts"] += batch_counts

    def merge(self, *others: ClassScatter) -> ClassScatter:
        """Add the states of ``others`` into this accumulator (in place) and return it.

        Raises:
            TypeError: for something other than a ``ClassScatter``.
            ValueError: for a different ``num_classes`` or ``num_features``, or
                ``self`` among ``others`` (merging an accumulator into itself
                would count its samples twice).
        """
        for other in others:
            if not isinstance(other, ClassScatter):
                raise TypeError(f"can only merge ClassScatter, got {type(other).__name__}")
            if other is self:
                raise ValueError(
                    "cannot merge a ClassScatter into itself (its samples would count twice)"
                )
            if other.num_classes != self.num_classes:
                raise ValueError(
                    f"cannot merge ClassScatter with num_classes={other.num_classes} into "
                    f"one with num_classes={self.num_classes}"
                )
            if other._state is None:
                continue
            if self.num_features is not None and other.num_features != self.num_features:
                raise ValueError(
                    f"cannot merge ClassScatter with num_features={other.num_features} into "
                    f"one with num_features={self.num_features}"
                )
            if self._state is None:
                assert other.num_features is not None
                self._allocate(self.device or other._state["counts"].device, other.num_features)
            mine = self._local()
            theirs = {k: v.to(mine["counts"].device) for k, v in other._state.items()}
            ref = torch.where((mine["counts"] > 0).unsqueeze(1), mine["ref"], theirs["ref"])
            moved = _rebase(theirs, ref)
            mine["ref"].copy_(ref)
            for key in ("counts", "sums", "sq", "unit", "scatter"):
                mine[key] += moved[key]
        return self

    def reset(self) -> None:
        """Forget every sample (the feature dimension too, unless given at construction)."""
        self.num_features = self._init_features
        self._ranks_checked = False
        if self._state is not None and self.num_features is not None:
            for value in self._state.values():
                value.zero_()
        else:
            self._state = None

    def to(self, device: torch.device | str) -> ClassScatter:
        """Move the state to ``device`` (in place) and return ``self``."""
        self.device = _resolve_device(device)
        if self._state is not None:
            self._state = {k: v.to(self.device) for k, v in self._state.items()}
        return self

    def _synced(self, sync: bool | None) -> dict[str, torch.Tensor]:
        do_sync = self.sync if sync is None else bool(sync)
        if not (do_sync and _distributed_ready()):
            return self._local()
        if not self._ranks_checked or self.num_features is None:
            config: dict[str, object] = {
                "num_classes": self.num_classes,
                "num_features": self.num_features,
            }
            agreed = _agree_across_ranks(
                "ClassScatter", config, self.process_group, optional=("num_features",)
            )
            if self.num_features is None and agreed["num_features"] is not None:
                assert isinstance(agreed["num_features"], int)
                self.num_features = agreed["num_features"]
            self._ranks_checked = self.num_features is not None
        state = self._local()
        # common reference: the global class means (raw float64 sums are fine for a mean)
        n = state["counts"]
        totals = state["sums"] + n.unsqueeze(1).to(_F64) * state["ref"]
        n_all, totals_all = _all_reduce_sum([n, totals], self.process_group)
        mean = totals_all / n_all.clamp(min=1).unsqueeze(1).to(_F64)
        local_ref = torch.where((n > 0).unsqueeze(1), state["ref"], mean)
        moved = _rebase({**state, "ref": local_ref}, mean)
        keys = ("sums", "sq", "unit", "scatter")
        reduced = _all_reduce_sum([moved[k] for k in keys], self.process_group)
        return {"counts": n_all, "ref": mean, **dict(zip(keys, reduced, strict=True))}

    def compute(
        self, *, sync: bool | None = None, on_empty: EmptyPolicy | None = None
    ) -> ClusterGeometry:
        """Return the cluster geometry of every sample seen (on every rank when syncing).

        Args:
            sync: override the instance's ``sync`` for this call.
            on_empty: override the instance's ``on_empty`` for this call.

        Raises:
            RuntimeError: if no sample was seen.
            ValueError: with ``on_empty="raise"``, if some class has no sample; if a
                statistic is not finite (NaN or inf features, or features so
                large that their squares overflow float64): the statistic and
                the classes are named.
        """
        policy = self.on_empty if on_empty is None else on_empty
        check_choice("on_empty", policy, _EMPTY_POLICIES)
        state = self._synced(sync)
        return _geometry(state, policy, stacklevel=3)

    def __repr__(self) -> str:
        seen = 0 if self._state is None else int(self._state["counts"].sum())
        return (
            f"ClassScatter(num_classes={self.num_classes}, num_features={self.num_features}, "
            f"device={self.device}, samples={seen})"
        )


def _rebase(state: dict[str, torch.Tensor], new_ref: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""The state's centred sums about ``new_ref`` instead of ``state["ref"]`` (a new dict).

    With $\delta_c = r_c - r'_c$ and $s_c = \sum_{i \in c}(h_i - r_c)$:
    $\sum (h - r')(h - r')^\top = S + \Delta^\top S_m + S_m^\top \Delta + \Delta^\top
    \mathrm{diag}(n) \Delta$, the parallel-axis (Chan) update. Rows of empty
    classes have zero sums and contribute nothing.
    """
    n = state["counts"].to(_F64).unsqueeze(1)
    delta = state["ref"] - new_ref
    delta = torch.where(n > 0, delta, torch.zeros_like(delta))
    sums = state["sums"]
    cross = delta.T @ sums
    scatter = state["scatter"] + cross + cross.T + delta.T @ (n * delta)
    return {
        "counts": state["counts"],
        "ref": new_ref,
        "sums": sums + n * delta,
        "sq": state["sq"] + 2.0 * (delta * sums).sum(dim=1) + (n * delta * delta).sum(dim=1),
        "unit": state["unit"],
        "scatter": scatter,
    }


def _geometry(state: dict[str, torch.Tensor], policy: str, *, stacklevel: int) -> ClusterGeometry:
    """The measures from a (synchronised) state; see the module docstring for the formulas."""
    counts = state["counts"]
    total = int(counts.sum())
    if total == 0:
        raise RuntimeError(
            "ClassScatter has seen no samples: call update() first (or every label so far "
            "was ignore_index)"
        )
    k = int(counts.shape[0])
    present = counts > 0
    _check_finite(state)
    if policy != "ignore" and not bool(present.all()):
        missing = torch.nonzero(~present).flatten().cpu().tolist()
        msg = (
            f"{len(missing)} of {k} classes have no samples (their means, variances and "
            f"CDNV are NaN; the other measures use the {k - len(missing)} classes present): "
            f"classes {short_list(missing)}"
        )
        if policy == "raise":
            raise ValueError(msg)
        warnings.warn(msg, EmptyClassWarning, stacklevel=stacklevel + 1)
    n = counts.to(_F64)
    sums = state["sums"]
    offset = sums / n.unsqueeze(1)  # NaN rows for empty classes
    means = state["ref"] + offset
    within = ((state["sq"] - (sums * offset).sum(dim=1)) / n).clamp(min=0.0)
    within = torch.where(present, within, torch.full_like(within, math.nan))
    root = torch.where(present, n, torch.ones_like(n)).rsqrt().unsqueeze(1) * sums
    sigma_w = (state["scatter"] - root.T @ root) / total
    sigma_w = 0.5 * (sigma_w + sigma_w.T)
    centred = means[present] - means[present].mean(dim=0)
    kp = int(centred.shape[0])
    sigma_b = centred.T @ centred / kp
    scale = math.sqrt(kp) * float(torch.linalg.vector_norm(means[present], dim=1).max())
    nc1 = _nc1(sigma_w, centred, scale)
    cdnv = torch.full((k, k), math.nan, dtype=_F64, device=counts.device)
    if kp >= 2:
        dist2 = torch.cdist(centred, centred, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        var = within[present]
        block = (var.unsqueeze(1) + var.unsqueeze(0)) / (2.0 * dist2)
        idx = torch.nonzero(present).flatten()
        cdnv[idx.unsqueeze(1), idx.unsqueeze(0)] = block
    cdnv.fill_diagonal_(math.nan)
    unit = state["unit"][present] / n[present].unsqueeze(1)
    d_within = 1.0 - float((unit * unit).sum(dim=1).mean())
    d_total = 1.0 - float((unit.mean(dim=0) ** 2).sum())
    separation = 1.0 - d_within / d_total if d_total > 0 else math.nan
    return ClusterGeometry(
        counts=counts.clone(),
        means=means,
        within_variance=within,
        sigma_w=sigma_w,
        sigma_b=sigma_b,
        nc1=nc1,
        cdnv=cdnv,
        class_separation=separation,
    )


def _check_finite(state: dict[str, torch.Tensor]) -> None:
    """Raise a `ValueError` naming every non-finite statistic and its classes."""
    per_class = {
        "class means": state["ref"].isfinite().all(dim=1) & state["sums"].isfinite().all(dim=1),
        "within-class variances": state["sq"].isfinite(),
        "normalised feature sums (for R²)": state["unit"].isfinite().all(dim=1),
    }
    scatter_ok = bool(state["scatter"].isfinite().all())
    if scatter_ok and all(bool(ok.all()) for ok in per_class.values()):
        return
    k = int(state["counts"].shape[0])
    good = torch.stack(list(per_class.values())).all(dim=0)
    if not bool(good.all()):
        names = [name for name, ok in per_class.items() if not bool(ok.all())]
        what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        bad = torch.nonzero(~good).flatten().cpu().tolist()
        which = f"class {bad[0]}" if len(bad) == 1 else f"classes {short_list(bad)}"
        raise ValueError(
            f"non-finite {what} for {len(bad)} of {k} classes ({which}): the features given "
            "to update() hold NaN or inf values (or values whose squares overflow float64); "
            "check the model's features or drop those samples before update()"
        )
    raise ValueError(
        "the pooled within-class scatter (D × D) is non-finite although every class's "
        "statistics are finite: the squared features overflow float64 when summed over "
        "the classes; rescale the features (e.g. divide by their largest norm)"
    )


def _nc1(sigma_w: torch.Tensor, centred: torch.Tensor, scale: float) -> float:
    r"""$\operatorname{tr}(\Sigma_W \Sigma_B^\dagger)/K$ from the SVD of the centred means.

    The (K, D) centred means have rows summing to zero, so $\Sigma_B$ has rank at
    most $K - 1$; multiplying by an orthonormal (K - 1, K) basis $Q$ of the
    complement of $\mathbf{1}$ (Helmert's) removes that null direction exactly
    ($Q^\top Q = I - \mathbf{1}\mathbf{1}^\top/K$). With $QM = U s V^\top$,
    $\Sigma_B = V \mathrm{diag}(s^2/K) V^\top$, so the NC1 is
    $\sum_j v_j^\top \Sigma_W v_j / s_j^2$ over the singular values kept:
    better conditioned than a pseudo-inverse of the squared matrix. A singular
    value at or below the rounding level of the means ($\max(K, D)\,\epsilon$
    times the larger of $s_{\max}$ and ``scale``) is dropped.
    """
    kp = int(centred.shape[0])
    if kp < 2:
        return math.nan
    j = torch.arange(1, kp, dtype=_F64, device=centred.device).unsqueeze(1)
    col = torch.arange(kp, dtype=_F64, device=centred.device).unsqueeze(0)
    helmert = torch.where(col < j, 1.0, torch.where(col == j, -j, 0.0)) / torch.sqrt(j * (j + 1))
    _, s, vh = torch.linalg.svd(helmert @ centred, full_matrices=False)
    tol = max(kp, int(centred.shape[1])) * torch.finfo(_F64).eps * max(float(s.max()), scale)
    keep = s > tol
    if not bool(keep.any()):
        return math.nan  # every class mean coincides
    v = vh[keep].T
    quad = (v * (sigma_w @ v)).sum(dim=0)
    return float((quad / s[keep] ** 2).sum())


def class_scatter(
    features: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    *,
    on_empty: EmptyPolicy = "warn",
    ignore_index: int | None = -100,
) -> ClusterGeometry:
    r"""The cluster geometry of features in memory (local data; no DDP reduction).

    Args:
        features: (..., D) floating features (tensor on any device, or numpy array).
        labels: (...) integer class indices (``ignore_index`` skipped).
        num_classes: K; ``None`` takes the largest label + 1.
        on_empty: ``"warn"``, ``"raise"`` or ``"ignore"``, as in
            [`ClassScatter`][lsdiffusion.ClassScatter].
        ignore_index: a label to skip, or ``None``.

    Returns:
        A [`ClusterGeometry`][lsdiffusion.ClusterGeometry] (float64, on the device of ``features``).

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
        >>> g = class_scatter(x, torch.tensor([0, 0, 1, 1]))
        >>> g.means.tolist(), g.within_variance.tolist(), g.class_separation
        ([[2.0, 0.0], [0.0, 2.0]], [1.0, 1.0], 1.0)
    """
    feats = as_tensor("features", features)
    labs = as_tensor("labels", labels)
    kept = labs if ignore_index is None else labs[labs != ignore_index]
    if kept.numel() == 0 and labs.numel() > 0:
        raise ValueError(
            f"class_scatter has no samples: all {labs.numel()} labels are ignore_index "
            f"({ignore_index}); pass labels of the classes (or ignore_index=None)"
        )
    if num_classes is None:
        if kept.numel() == 0:
            raise ValueError("class_scatter needs num_classes when there are no labels")
        if kept.dtype == torch.bool or kept.is_floating_point() or kept.is_complex():
            raise TypeError(f"labels must have an integer dtype, got {labs.dtype}")
        num_classes = int(kept.max()) + 1
        if num_classes < 1:
            raise ValueError(f"labels must be >= 0, got a largest label of {num_classes - 1}")
    acc = ClassScatter(
        num_classes,
        device=feats.device,
        sync=False,
        on_empty=on_empty,
        ignore_index=ignore_index,
    )
    acc.update(feats, labs)
    return _geometry(acc._local(), on_empty, stacklevel=2)
