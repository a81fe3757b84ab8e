r"""Relative distances and the diffusion index (paper Eq. 1): one implementation.

[`diffusion_indices`][lsdiffusion.diffusion.diffusion_indices] computes Eq. 1
for many targets at once; [`diffusion_index`][lsdiffusion.diffusion.diffusion_index]
is its one-target case and [`relative_distances`][lsdiffusion.diffusion.relative_distances]
shares its normaliser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from lsdiffusion._arrays import ArrayLike, index_array
from lsdiffusion._validation import check_choice, short_list
from lsdiffusion.diffusion._sets import (
    PerTargetSets,
    as_centroids,
    build_mask,
    centroid_pair,
    check_finite,
    check_target,
    check_targets,
    set_masks,
)
from lsdiffusion.diffusion._table import DiffusionIndexTable, Reference

_REFERENCES: tuple[str, ...] = ("union", "all")


def _scaled(c: torch.Tensor, needed: torch.Tensor) -> torch.Tensor:
    """`c` times a power of two bringing its largest needed entry into [0.5, 1), if far off.

    Eq. 1 is invariant to a uniform scale, and a power of two scales every
    distance exactly, so ordinary inputs give the same bits; centroids near
    float64's limits (1e-170: squares underflow to 0; 1e155: squares
    overflow) then give the same index as at scale 1.
    """
    row_peak = torch.maximum(c.amax(dim=1), c.amin(dim=1).neg())  # no (C, D) temporary
    peak = float(torch.where(needed, row_peak, 0.0).amax())
    if not 0.0 < peak < math.inf or 1e-100 < peak < 1e100:
        return c  # far from under/overflow: no need to touch the data
    k = -math.frexp(peak)[1]
    half = k // 2  # two factors: 2**k alone over/underflows for subnormal or huge peaks
    out: torch.Tensor = c * math.ldexp(1.0, half) * math.ldexp(1.0, k - half)
    return out


def _distances_to(c: torch.Tensor, targets: torch.Tensor, centre_row: int) -> torch.Tensor:
    """Euclidean distances (T, C) from `c[targets]` to every row of `c`, in float64.

    One target: exact differences. More: the matrix-product expansion
    `|a|² + |b|² - 2 a·b` on rows centred at a finite row (so nothing cancels
    because of a far-away origin), then an exact recomputation, by differences,
    of the pairs where the expansion could lose precision
    (`d² <= 1e-6 (|a|² + |b|²)`: then the relative error could exceed ~1e-10).
    """
    x = c - c[centre_row]
    if targets.shape[0] == 1:
        one: torch.Tensor = torch.linalg.vector_norm(x - x[targets[0]], dim=1).unsqueeze(0)
        return one
    sq = torch.linalg.vector_norm(x, dim=1).square()
    everything = targets.shape[0] == c.shape[0] and bool(
        torch.equal(targets, torch.arange(c.shape[0], device=targets.device))
    )
    xt = x if everything else x.index_select(0, targets)
    sq_t = (sq if everything else sq.index_select(0, targets)).unsqueeze(1)
    d2 = (xt @ x.T).mul_(-2.0).add_(sq_t).add_(sq)
    risky = d2 <= 1e-6 * (sq_t + sq)
    own = torch.arange(targets.shape[0], device=targets.device)
    risky[own, targets] = False  # a target's distance to itself is exactly 0
    dist = d2.clamp_min_(0.0).sqrt_()
    dist[own, targets] = 0.0
    rows, cols = torch.nonzero(risky, as_tuple=True)
    if rows.numel():
        exact = torch.linalg.vector_norm(x.index_select(0, cols) - xt.index_select(0, rows), dim=1)
        dist[rows, cols] = exact
    return dist


def _relative(
    name: str,
    c: torch.Tensor,
    targets: npt.NDArray[np.int64],
    ref: torch.Tensor,
    needed: torch.Tensor,
) -> torch.Tensor:
    r"""The normaliser of Eq. 1: (T, C) distances $d(\pi_i, c)$ over the (T, C) reference mask.

    Rows of `c` outside `needed` may be non-finite; their entries are then too.
    """
    t_idx = torch.from_numpy(targets).to(c.device)
    dist = _distances_to(_scaled(c, needed), t_idx, int(targets[0]))
    total = torch.where(ref, dist, 0.0).sum(dim=1, keepdim=True)
    collapsed = ~(total.squeeze(1) > 0)
    if bool(collapsed.any()):
        i = int(torch.nonzero(collapsed)[0, 0])
        raise ValueError(
            f"{name}: every reference class coincides with the centroid of target "
            f"{int(targets[i])}, so relative distances are undefined"
        )
    return dist / total


def _reference_mask(
    reference: str, in_sets: torch.Tensor, targets: npt.NDArray[np.int64], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (T, C) reference mask and the (C,) rows Eq. 1 reads (the targets included)."""
    device = in_sets.device
    t_idx = torch.from_numpy(targets).to(device)
    if reference == "union":
        needed = in_sets.any(dim=0)
        needed[t_idx] = True
        return in_sets, needed
    ref = torch.ones_like(in_sets)
    ref[torch.arange(len(targets), device=device), t_idx] = False
    return ref, torch.ones(num_classes, dtype=torch.bool, device=device)


def _changes(
    c0: torch.Tensor,
    c1: torch.Tensor,
    targets: npt.NDArray[np.int64],
    similar: npt.NDArray[np.bool_],
    dissimilar: npt.NDArray[np.bool_],
    reference: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 1 on checked masks: the (T, C) percent changes (0 outside the sets), α_sim, α_dissim."""
    device = c0.device
    sim_m = torch.from_numpy(similar).to(device)
    dis_m = torch.from_numpy(dissimilar).to(device)
    in_sets = sim_m | dis_m
    ref, needed = _reference_mask(reference, in_sets, targets, int(c0.shape[0]))
    check_finite("centroids_t0", c0, needed)
    check_finite("centroids_t1", c1, needed)
    d0 = _relative("centroids_t0", c0, targets, ref, needed)
    d1 = _relative("centroids_t1", c1, targets, ref, needed)
    # only the classes in the sets are divided by: other reference classes may coincide
    degenerate = in_sets & ~(d0 > 0)
    if bool(degenerate.any()):
        i = int(torch.nonzero(degenerate.any(dim=1))[0, 0])
        classes = torch.nonzero(degenerate[i]).flatten().cpu().tolist()
        raise ValueError(
            f"centroids_t0: the centroid of target {int(targets[i])} coincides with those of "
            f"classes {short_list(classes)}, so the relative change is undefined"
        )
    change = torch.where(in_sets, (d1 - d0) / torch.where(in_sets, d0, 1.0), 0.0) * 100.0
    a_sim = change.mul(sim_m).sum(dim=1) / sim_m.sum(dim=1)
    a_dis = change.mul(dis_m).sum(dim=1) / dis_m.sum(dim=1)
    return change, a_sim, a_dis


def relative_distances(
    centroids: ArrayLike,
    target: int,
    reference: Iterable[int] | Literal["all"] = "all",
) -> torch.Tensor:
    r"""Relative distance from `target`'s centroid to every class centroid.

    $$
    d(\pi, c) = \frac{\lVert \mu_\pi - \mu_c \rVert_2}
                     {\sum_{c' \in R} \lVert \mu_\pi - \mu_{c'} \rVert_2}
    $$

    Args:
        centroids: (C, D) class centroids (tensor or numpy array).
        target: the target class $\pi$.
        reference: the normalising set $R$: `"all"` (every class except
            the target) or an iterable of class indices (without the target).

    Returns:
        (C,) float64 tensor; entry `target` is 0. Entries of classes outside
        $R$ are still defined (same normaliser).

    Examples:
        >>> import torch
        >>> mu = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
        >>> relative_distances(mu, target=0)
        tensor([0.0000, 0.2500, 0.7500], dtype=torch.float64)
    """
    c = as_centroids("centroids", centroids)
    num_classes = int(c.shape[0])
    tgt = np.asarray([check_target(target, num_classes)], dtype=np.int64)
    in_sets = torch.zeros((1, num_classes), dtype=torch.bool, device=c.device)
    if isinstance(reference, str):
        check_choice("reference", reference, ("all",))
        ref, needed = _reference_mask("all", in_sets, tgt, num_classes)
    else:
        mask = build_mask("reference", [reference], tgt, num_classes)
        ref, needed = _reference_mask(
            "union", torch.from_numpy(mask).to(c.device), tgt, num_classes
        )
    check_finite("centroids", c, needed)
    return _relative("centroids", c, tgt, ref, needed)[0]


@dataclass(frozen=True)
class DiffusionIndex:
    r"""The diffusion index of one target class (paper Eq. 1), in percent.

    Attributes:
        target: the target class $\pi$.
        similar: $\alpha_{T_0 \to T_1}(\pi, S_{sim})$ in percent.
        dissimilar: $\alpha_{T_0 \to T_1}(\pi, S_{dissim})$ in percent.
        similar_classes: the classes of $S_{sim}$.
        dissimilar_classes: the classes of $S_{dissim}$.
        reference: `"union"` or `"all"`, the normalising set used.
        changes: per class of either set, the percent change
            $100 (d_{T_1} - d_{T_0}) / d_{T_0}$.
    """

    target: int
    similar: float
    dissimilar: float
    similar_classes: tuple[int, ...]
    dissimilar_classes: tuple[int, ...]
    reference: Reference
    changes: dict[int, float] = field(repr=False, compare=False)

    @property
    def systematic(self) -> bool:
        """True when the target diffuses towards its similar classes (α_sim < 0 < α_dissim)."""
        return self.similar < 0.0 < self.dissimilar

    def __str__(self) -> str:
        return (
            f"target {self.target}: similar {self.similar:+.2f}%, "
            f"dissimilar {self.dissimilar:+.2f}%"
        )


def diffusion_index(
    centroids_t0: ArrayLike,
    centroids_t1: ArrayLike,
    target: int,
    similar: Iterable[int],
    dissimilar: Iterable[int],
    *,
    reference: Reference = "union",
) -> DiffusionIndex:
    r"""Diffusion index of one target class from temperature T0 to T1 (paper Eq. 1).

    $$
    d_T(\pi, c) = \frac{\lVert \mu^T_\pi - \mu^T_c \rVert_2}
                       {\sum_{c' \in R} \lVert \mu^T_\pi - \mu^T_{c'} \rVert_2},
    \qquad
    \alpha_{T_0 \to T_1}(\pi, S) = \frac{100}{|S|} \sum_{c \in S}
        \frac{d_{T_1}(\pi, c) - d_{T_0}(\pi, c)}{d_{T_0}(\pi, c)}
    $$

    with $R = S_{sim} \cup S_{dissim}$ (`reference="union"`) or every
    class but $\pi$ (`reference="all"`). Systematic diffusion shows as
    `similar < 0` and `dissimilar > 0`. The index is invariant to
    translating, rotating or uniformly scaling either feature space, at any
    float64 scale (the centroids are rescaled by a power of two first, so
    1e-170 and 1e155 give the index of scale 1). Distances are computed in
    float64; only the rows the index needs must be finite. This is the
    one-target case of [`diffusion_indices`][lsdiffusion.diffusion.diffusion_indices].

    Args:
        centroids_t0: (C, D) centroids of the student distilled at T0.
        centroids_t1: (C, D) centroids of the student distilled at T1.
        target: the target class $\pi$.
        similar: the classes of $S_{sim}$ (non-empty, no duplicates, no target).
        dissimilar: the classes of $S_{dissim}$ (same rules, disjoint from `similar`).
        reference: the normalising set, `"union"` or `"all"`.

    Returns:
        A [`DiffusionIndex`][lsdiffusion.diffusion.DiffusionIndex]; `.similar`
        and `.dissimilar` are in percent.

    Examples:
        >>> import torch
        >>> t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # d0 = 1/4, 3/4
        >>> t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])  # d1 = 1/5, 4/5
        >>> r = diffusion_index(t0, t1, target=0, similar=[1], dissimilar=[2])
        >>> round(r.similar, 3), round(r.dissimilar, 3)
        (-20.0, 6.667)
    """
    check_choice("reference", reference, _REFERENCES)
    c0, c1 = centroid_pair(centroids_t0, centroids_t1)
    num_classes = int(c0.shape[0])
    t = check_target(target, num_classes)
    tgt = np.asarray([t], dtype=np.int64)
    sim_arr = index_array("similar", similar)
    dis_arr = index_array("dissimilar", dissimilar)
    sim, dis = set_masks([sim_arr], [dis_arr], tgt, num_classes)
    change, a_sim, a_dis = _changes(c0, c1, tgt, sim, dis, reference)
    row = change[0].cpu().tolist()
    sim_classes = tuple(sim_arr.tolist())
    dis_classes = tuple(dis_arr.tolist())
    return DiffusionIndex(
        target=t,
        similar=float(a_sim[0]),
        dissimilar=float(a_dis[0]),
        similar_classes=sim_classes,
        dissimilar_classes=dis_classes,
        reference=reference,
        changes={k: row[k] for k in (*sim_classes, *dis_classes)},
    )


def diffusion_indices(
    centroids_t0: ArrayLike,
    centroids_t1: ArrayLike,
    targets: Iterable[int] | ArrayLike | None,
    similar: PerTargetSets,
    dissimilar: PerTargetSets,
    *,
    reference: Reference = "union",
) -> DiffusionIndexTable:
    """Diffusion indices of many targets at once (Eq. 1, vectorised).

    The sets become two boolean (T, C) masks; all target-to-class distances are
    one float64 matrix product, so all 1000 ImageNet classes against sets of
    hundreds of classes take a fraction of a second on a CPU. The formula, the
    rules for the sets and the scale rule are those of
    [`diffusion_index`][lsdiffusion.diffusion.diffusion_index].

    Args:
        centroids_t0: (C, D) centroids of the student distilled at T0.
        centroids_t1: (C, D) centroids of the student distilled at T1.
        targets: the T target classes (distinct). `None` takes the keys of
            `similar` when it is a dict, or every class `0..C-1` when the sets
            are masks with C rows.
        similar: $S_{sim}$ per target: a ragged list of class-index lists
            aligned with `targets`, a dict `{target: classes}`, a boolean
            (T, C) mask aligned with `targets`, or a boolean (C, C) mask whose
            row `t` holds the set of class `t` (as
            [`ClassSetMasks`][lsdiffusion.semantics.ClassSetMasks]).
        dissimilar: $S_{dissim}$ per target, in the same forms.
        reference: the normalising set, `"union"` or `"all"`.

    Returns:
        A [`DiffusionIndexTable`][lsdiffusion.diffusion.DiffusionIndexTable]
        (percent), rows in the order of `targets`.

    Examples:
        >>> import torch
        >>> t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
        >>> t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
        >>> tab = diffusion_indices(t0, t1, [0, 1], similar=[[1], [0]], dissimilar=[[2], [2]])
        >>> print(tab.to_text(decimals=1))
        target  α_sim (%)  α_dissim (%)
        -------------------------------
        0           -20.0          +6.7
        1           -18.8          +5.9
        -------------------------------
        mean        -19.4          +6.3
    """
    check_choice("reference", reference, _REFERENCES)
    c0, c1 = centroid_pair(centroids_t0, centroids_t1)
    num_classes = int(c0.shape[0])
    tgt = check_targets(targets, similar, num_classes)
    sim, dis = set_masks(similar, dissimilar, tgt, num_classes)
    _, a_sim, a_dis = _changes(c0, c1, tgt, sim, dis, reference)
    return DiffusionIndexTable(
        targets=tgt.copy(),
        similar=a_sim.cpu().numpy().astype(np.float64),
        dissimilar=a_dis.cpu().numpy().astype(np.float64),
        reference=reference,
    )
