"""Argument checks of the diffusion measurements: centroids, targets and class sets.

Private to [`lsdiffusion.diffusion`][lsdiffusion.diffusion]: every function of
the package turns its sets into boolean `(T, C)` masks here, so that one set
check (and one message per rule) serves the single-target and the vectorised
functions alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

from lsdiffusion._arrays import ArrayLike, as_tensor, index_array, shape_of
from lsdiffusion._validation import check_class_indices, short_list

PerTargetSets: TypeAlias = Mapping[int, Iterable[int]] | Sequence[Iterable[int]] | ArrayLike
"""Class sets of several targets: ragged lists, a dict `{target: classes}` or a bool mask."""


def as_centroids(name: str, centroids: object) -> torch.Tensor:
    """Return `centroids` as a float64 (C, D) tensor with C >= 2, D >= 1, or raise."""
    c = as_tensor(name, centroids)
    if c.dim() != 2:
        raise ValueError(f"{name} must be 2-D (C, D), got shape {shape_of(c)}")
    if not c.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {c.dtype}")
    if c.shape[0] < 2 or c.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least 2 classes and 1 feature, got shape {shape_of(c)}"
        )
    return c.to(torch.float64)


def centroid_pair(c0: object, c1: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The T0 and T1 centroids as float64 tensors of one shape, on `c0`'s device."""
    a = as_centroids("centroids_t0", c0)
    b = as_centroids("centroids_t1", c1)
    if a.shape != b.shape:
        raise ValueError(
            f"centroids_t1 must have shape {shape_of(a)} like centroids_t0, got {shape_of(b)}"
        )
    if b.device != a.device:
        b = b.to(a.device)
    return a, b


def check_target(target: object, num_classes: int) -> int:
    """One target class index (int, numpy int or one-element integer tensor) in range."""
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be an int class index, got {type(target).__name__}")
    t = int(target)
    if not 0 <= t < num_classes:
        raise ValueError(
            f"target must be a class index in [0, {num_classes - 1}] "
            f"(the centroids have {num_classes} rows), got {t}"
        )
    return t


def check_targets(targets: object, similar: object, num_classes: int) -> npt.NDArray[np.int64]:
    """Distinct target classes as an int64 array; `None` read from the form of `similar`."""
    if targets is None:
        if isinstance(similar, Mapping):
            targets = list(similar.keys())
        elif isinstance(similar, (torch.Tensor, np.ndarray)) and similar.shape[0] == num_classes:
            targets = list(range(num_classes))
        else:
            raise ValueError(
                "targets=None needs similar as a dict {target: classes} or as a "
                f"({num_classes}, {num_classes}) mask; pass the targets explicitly"
            )
    tgt = index_array("targets", targets)
    if tgt.size == 0:
        raise ValueError("targets is empty; pass at least one target class")
    check_class_indices(
        "targets", tgt, num_classes, source=f"the centroids have {num_classes} rows"
    )
    uniq, counts = np.unique(tgt, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"targets has duplicate classes {short_list(uniq[counts > 1])}")
    return tgt


def set_masks(
    similar: object, dissimilar: object, targets: npt.NDArray[np.int64], num_classes: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Both sets as disjoint, checked (T, C) masks aligned with `targets`."""
    sim = build_mask("similar", similar, targets, num_classes)
    dis = build_mask("dissimilar", dissimilar, targets, num_classes)
    both = sim & dis
    if both.any():
        i = int(np.nonzero(both)[0][0])
        raise ValueError(
            f"similar and dissimilar of target {int(targets[i])} overlap in classes "
            f"{short_list(np.nonzero(both[i])[0])}"
        )
    return sim, dis


def _check_mask_rows(
    name: str, mask: npt.NDArray[np.bool_], targets: npt.NDArray[np.int64]
) -> None:
    """No empty row, no row holding its own target."""
    sizes = mask.sum(axis=1)
    if (sizes == 0).any():
        t = int(targets[int(np.argmax(sizes == 0))])
        raise ValueError(f"{name} of target {t} is empty; it needs at least one class")
    self_hit = mask[np.arange(targets.shape[0]), targets]
    if self_hit.any():
        t = int(targets[int(np.argmax(self_hit))])
        raise ValueError(f"{name} of target {t} contains the target itself")


def _mask_from_array(
    name: str,
    sets: torch.Tensor | npt.NDArray[Any],
    targets: npt.NDArray[np.int64],
    num_classes: int,
) -> npt.NDArray[np.bool_]:
    num_targets = int(targets.shape[0])
    arr: npt.NDArray[Any] = sets.detach().cpu().numpy() if isinstance(sets, torch.Tensor) else sets
    if arr.dtype != np.bool_:
        raise TypeError(
            f"{name} given as an array must be a boolean mask of shape "
            f"({num_targets}, {num_classes}), got dtype {arr.dtype}; "
            "pass ragged sets as a list of lists or a dict {target: classes}"
        )
    if (
        arr.shape == (num_classes, num_classes)
        and num_targets == num_classes
        and not np.array_equal(targets, np.arange(num_classes))
    ):
        raise ValueError(
            f"{name} is a ({num_classes}, {num_classes}) mask and there are {num_targets} "
            "targets in a non-identity order: it could be aligned with targets or indexed "
            "by class. Pass targets=None (every class, row t for class t) or a list of "
            "per-target class lists"
        )
    if arr.shape == (num_classes, num_classes):
        mask: npt.NDArray[np.bool_] = arr[targets]  # row t holds the sets of class t
    elif arr.shape == (num_targets, num_classes):
        mask = arr.copy()
    else:
        raise ValueError(
            f"{name} mask must have shape ({num_targets}, {num_classes}) (aligned with "
            f"targets) or ({num_classes}, {num_classes}) (row t for class t), "
            f"got {arr.shape}"
        )
    _check_mask_rows(name, mask, targets)
    return mask


def build_mask(
    name: str,
    sets: object,
    targets: npt.NDArray[np.int64],
    num_classes: int,
) -> npt.NDArray[np.bool_]:
    """Turn ragged sets (aligned with `targets`), a dict or a bool mask into a (T, C) mask.

    The one set check of the package: every set non-empty, class indices in
    range, no duplicates, not the target itself.
    """
    num_targets = int(targets.shape[0])
    if isinstance(sets, (torch.Tensor, np.ndarray)):
        return _mask_from_array(name, sets, targets, num_classes)
    if isinstance(sets, Mapping):
        missing = [int(t) for t in targets if int(t) not in sets]
        if missing:
            raise KeyError(f"{name} has no entry for targets {short_list(missing)}")
        rows: list[object] = [sets[int(t)] for t in targets]
    elif isinstance(sets, Sequence) and not isinstance(sets, (str, bytes)):
        if len(sets) != num_targets:
            raise ValueError(
                f"{name} must hold one set per target: {num_targets} targets, got {len(sets)} sets"
            )
        rows = list(sets)
    else:
        raise TypeError(
            f"{name} must be a list of class-index lists (one per target), a dict "
            f"{{target: classes}} or a boolean (targets, classes) mask, got {type(sets).__name__}"
        )
    arrays = [index_array(f"{name}[{i}]", r) for i, r in enumerate(rows)]
    lengths = np.asarray([a.size for a in arrays], dtype=np.int64)
    if (lengths == 0).any():
        t = int(targets[int(np.argmax(lengths == 0))])
        raise ValueError(f"{name} of target {t} is empty; it needs at least one class")
    flat = np.concatenate(arrays)
    row_of = np.repeat(np.arange(num_targets), lengths)
    bad = (flat < 0) | (flat >= num_classes)
    if bad.any():
        i = int(row_of[int(np.argmax(bad))])
        check_class_indices(
            f"{name} of target {int(targets[i])}",
            arrays[i],
            num_classes,
            source=f"the centroids have {num_classes} rows",
        )
    mask = np.zeros((num_targets, num_classes), dtype=np.bool_)
    mask[row_of, flat] = True
    sizes = mask.sum(axis=1)
    if (sizes != lengths).any():
        i = int(np.argmax(sizes != lengths))
        uniq, counts = np.unique(arrays[i], return_counts=True)
        raise ValueError(
            f"{name} of target {int(targets[i])} has duplicate classes "
            f"{short_list(uniq[counts > 1])}"
        )
    _check_mask_rows(name, mask, targets)
    return mask


def finite_rows(c: torch.Tensor) -> torch.Tensor:
    """(C,) bool, True where the row of `c` is all finite (one cheap pass over `c`)."""
    finite = torch.isfinite(c.sum(dim=1))
    if not bool(finite.all()):  # a sum can also overflow: check the suspects exactly
        suspects = torch.nonzero(~finite).flatten()
        finite[suspects] = torch.isfinite(c.index_select(0, suspects)).all(dim=1)
    return finite


def check_finite(name: str, c: torch.Tensor, needed: torch.Tensor) -> None:
    """Raise unless every row of `c` marked in the (C,) bool `needed` is finite."""
    bad = needed & ~finite_rows(c)
    if bool(bad.any()):
        raise_non_finite(name, torch.nonzero(bad).flatten().cpu().tolist())


def raise_non_finite(name: str, classes: list[int]) -> NoReturn:
    """The error of a non-finite centroid the measurement needs."""
    raise ValueError(
        f"{name} has non-finite rows for classes {short_list(classes)} "
        "(NaN or inf) that the diffusion index needs; an empty class has a NaN centroid: collect "
        "samples for it or drop it from the sets"
    )
