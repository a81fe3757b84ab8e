"""Feature-distance class sets (the paper's method 2) and set consistency (Table G.1).

For class centroids $μ_1..μ_C$ (e.g. penultimate-layer features of a
teacher, averaged per class), the classes other than the target π are ranked
by the Euclidean distance $‖μ_π − μ_c‖_2$:

* $S_{sim}(π)$: the ``n_sim`` closest, with
  ``n_sim = max(1, round(similar_frac · C))``;
* $S_{dissim}(π)$: the ``n_dissim`` farthest, with
  ``n_dissim = max(1, round(dissimilar_frac · C))``.

Fractions are of all ``C`` classes (the paper's "closest 1%" of ImageNet's
1000 classes is 10 classes, "farthest 90%" is 900), rounded half up, at least
one class each; the two sets must fit in the ``C − 1`` other classes, so they
never overlap. Equal distances are broken by class index (lower index counts
as closer).

Inputs may be numpy arrays, torch tensors (any device; detached and copied to
the CPU) or nested sequences; the work is done in float64 with numpy.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lsdiffusion._validation import check_int
from lsdiffusion.semantics.hierarchy import ClassSetMasks, ClassSets

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch

    ArrayLike: TypeAlias = npt.ArrayLike | torch.Tensor

__all__ = ["feature_class_masks", "feature_class_sets", "feature_set_sizes", "set_consistency"]


def _to_numpy(name: str, value: Any) -> npt.NDArray[Any]:
    torch = sys.modules.get("torch")  # a tensor implies torch is already imported
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a {value.dtype} tensor")
        dtype = torch.bool if value.dtype == torch.bool else None
        t = value.detach().cpu()
        if dtype is None and t.is_floating_point():
            t = t.to(torch.float64)
        return np.asarray(t.numpy())
    return np.asarray(value)


def _check_frac(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in (0, 1], got {type(value).__name__}")
    v = float(value)
    if not (0.0 < v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def feature_set_sizes(
    num_classes: int, similar_frac: float = 0.01, dissimilar_frac: float = 0.9
) -> tuple[int, int]:
    """Sizes ``(n_sim, n_dissim)`` of the feature-distance sets for ``C`` classes.

    ``n = max(1, floor(frac · C + 1/2))`` for each; raises unless
    ``n_sim + n_dissim <= C − 1``.

    Examples:
        >>> from lsdiffusion.semantics import feature_set_sizes
        >>> feature_set_sizes(1000), feature_set_sizes(200), feature_set_sizes(10, 0.1, 0.5)
        ((10, 900), (2, 180), (1, 5))
    """
    c = check_int("num_classes", num_classes)
    sf = _check_frac("similar_frac", similar_frac)
    df = _check_frac("dissimilar_frac", dissimilar_frac)
    n_sim = max(1, math.floor(sf * c + 0.5))
    n_dis = max(1, math.floor(df * c + 0.5))
    if n_sim + n_dis > c - 1:
        raise ValueError(
            f"similar_frac={similar_frac} and dissimilar_frac={dissimilar_frac} leave no room: "
            f"with C={c} classes they select {n_sim} + {n_dis} = {n_sim + n_dis} of the "
            f"C - 1 = {c - 1} other classes; lower one of them"
        )
    return n_sim, n_dis


def _centroids(centroids: Any) -> npt.NDArray[np.float64]:
    x = _to_numpy("centroids", centroids)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"centroids must be a real numeric array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"centroids must be 2-D (C, D), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"centroids must have D >= 1 feature columns, got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"centroids must be finite; rows {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''} ({bad.size} of {x.shape[0]}) hold NaN or inf "
            "(a class with no samples?)"
        )
    centred: npt.NDArray[np.float64] = x - x.mean(axis=0)
    return centred  # distances are translation-invariant; this limits cancellation


def _squared_distances(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(C, C) squared distances: the Gram expansion, exact where it could cancel.

    `|a|² + |b|² - 2 a·b` loses the digits of a pair whose distance is small
    next to the norms (centroids 1e-8·|μ| apart come out as 0 or noise), so
    the pairs with `d² <= 1e-6 (|a|² + |b|²)` are recomputed by differences
    (then the relative error is below ~1e-10): the masks rank like
    [`feature_class_sets`][lsdiffusion.semantics.feature_class_sets].
    """
    sq = np.einsum("ij,ij->i", x, x)
    norms = sq[:, None] + sq[None, :]
    d2: npt.NDArray[np.float64] = norms - 2.0 * (x @ x.T)
    rows, cols = np.nonzero(d2 <= 1e-6 * norms)
    for start in range(0, rows.size, 1 << 16):  # bounded memory when many pairs are close
        r, c = rows[start : start + (1 << 16)], cols[start : start + (1 << 16)]
        diff = x[r] - x[c]
        d2[r, c] = np.einsum("ij,ij->i", diff, diff)
    np.maximum(d2, 0.0, out=d2)
    return d2


def feature_class_masks(
    centroids: ArrayLike, similar_frac: float = 0.01, dissimilar_frac: float = 0.9
) -> ClassSetMasks:
    """Feature-distance class sets of every class at once, as ``(C, C)`` bool masks.

    Row ``t`` holds the ``n_sim`` classes closest to class ``t``'s centroid
    (``similar``) and the ``n_dissim`` farthest (``dissimilar``); see the
    module doc for the sizes and tie-breaking. Cost: one ``C × C`` Gram matrix
    and one sort per row.

    Args:
        centroids: ``(C, D)`` class centroids, row ``c`` for class ``c``.
        similar_frac: fraction of ``C`` taken as similar, in ``(0, 1]``.
        dissimilar_frac: fraction of ``C`` taken as dissimilar, in ``(0, 1]``.

    Returns:
        ``ClassSetMasks(similar, dissimilar)``, numpy bool ``(C, C)``, with
        False diagonals.

    Examples:
        >>> import numpy as np
        >>> from lsdiffusion.semantics import feature_class_masks
        >>> centroids = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
        >>> masks = feature_class_masks(centroids, similar_frac=0.2, dissimilar_frac=0.4)
        >>> masks.similar.astype(int)
        array([[0, 1, 0, 0, 0],
               [1, 0, 0, 0, 0],
               [0, 1, 0, 0, 0],
               [0, 0, 0, 0, 1],
               [0, 0, 0, 1, 0]])
        >>> np.flatnonzero(masks.dissimilar[0]).tolist()
        [3, 4]
    """
    x = _centroids(centroids)
    c = x.shape[0]
    n_sim, n_dis = feature_set_sizes(c, similar_frac, dissimilar_frac)
    d2 = _squared_distances(x)
    np.fill_diagonal(d2, -1.0)  # the target sorts first
    order = np.argsort(d2, axis=1)  # quicksort: 4x faster than a stable sort ...
    ranked = np.take_along_axis(d2, order, axis=1)
    tied = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    if tied.size:  # ... rows with equal distances are redone stably (ties by index)
        order[tied] = np.argsort(d2[tied], axis=1, kind="stable")
    rows = np.arange(c)[:, None]
    similar = np.zeros((c, c), dtype=bool)
    similar[rows, order[:, 1 : 1 + n_sim]] = True
    dissimilar = np.zeros((c, c), dtype=bool)
    dissimilar[rows, order[:, c - n_dis :]] = True
    return ClassSetMasks(similar, dissimilar)


def feature_class_sets(
    centroids: ArrayLike,
    target: int,
    similar_frac: float = 0.01,
    dissimilar_frac: float = 0.9,
) -> ClassSets:
    """Feature-distance similar / dissimilar classes of one target (paper's method 2).

    The ``n_sim = max(1, round(similar_frac · C))`` classes whose centroids are
    closest to the target's, and the ``n_dissim = max(1, round(dissimilar_frac
    · C))`` farthest (module doc). For every target at once use
    [`feature_class_masks`][lsdiffusion.semantics.features.feature_class_masks] (same sets, up to
    rounding on exact ties).

    Args:
        centroids: ``(C, D)`` class centroids (numpy array or torch tensor).
        target: index of the target class, ``0 <= target < C``.
        similar_frac: fraction of ``C`` taken as similar, in ``(0, 1]``.
        dissimilar_frac: fraction of ``C`` taken as dissimilar, in ``(0, 1]``.

    Returns:
        ``ClassSets(similar, dissimilar)`` of ascending class indices.

    Examples:
        >>> import numpy as np
        >>> from lsdiffusion.semantics import feature_class_sets
        >>> rng = np.random.default_rng(0)
        >>> centroids = rng.normal(size=(1000, 64))
        >>> centroids[1:11] = centroids[0] + 0.01 * rng.normal(size=(10, 64))
        >>> sim, dis = feature_class_sets(centroids, 0)
        >>> sim, len(dis)
        ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 900)
    """
    x = _centroids(centroids)
    c = x.shape[0]
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be a class index (int), got {type(target).__name__}")
    if not 0 <= target < c:
        raise ValueError(f"target must be in [0, {c - 1}] for C={c} centroids, got {target}")
    t = int(target)
    n_sim, n_dis = feature_set_sizes(c, similar_frac, dissimilar_frac)
    diff = x - x[t]
    d2 = np.einsum("ij,ij->i", diff, diff)
    d2[t] = -1.0
    order = np.argsort(d2, kind="stable")
    return ClassSets(
        tuple(sorted(int(i) for i in order[1 : 1 + n_sim])),
        tuple(sorted(int(i) for i in order[c - n_dis :])),
    )


def set_consistency(
    a: Sequence[int] | ArrayLike, b: Sequence[int] | ArrayLike
) -> float | npt.NDArray[np.float64]:
    """Consistency of selection ``b`` with selection ``a``: ``|A ∩ B| / |A|`` (Table G.1).

    Either two collections of class indices (returns a float; ``a`` must be
    non-empty, neither may repeat an index), or two bool masks of the same
    shape: ``(C,)`` gives a float, ``(T, C)`` (e.g.
    [`ClassSetMasks`][lsdiffusion.semantics.hierarchy.ClassSetMasks] fields) gives one value per
    row, NaN where ``a``'s row is empty (0/0), so average with ``np.nanmean``. Not symmetric: divide
    by ``|A|``.

    Examples:
        >>> import numpy as np
        >>> from lsdiffusion.semantics import set_consistency
        >>> set_consistency([205, 206, 208, 209], [206, 208, 210])
        0.5
        >>> a = np.array([[True, True, False], [False, False, False]])
        >>> b = np.array([[True, False, True], [True, False, False]])
        >>> set_consistency(a, b)
        array([0.5, nan])
    """
    xa, xb = _to_numpy("a", a), _to_numpy("b", b)
    a_mask, b_mask = xa.dtype == np.bool_, xb.dtype == np.bool_
    if a_mask != b_mask:
        raise TypeError(
            "a and b must both be bool masks or both be collections of class indices, "
            f"got dtypes {xa.dtype} and {xb.dtype}"
        )
    if a_mask:
        if xa.shape != xb.shape or xa.ndim not in (1, 2):
            raise ValueError(
                "masks a and b must have the same shape, (C,) or (T, C), "
                f"got {tuple(xa.shape)} and {tuple(xb.shape)}"
            )
        inter = np.count_nonzero(xa & xb, axis=-1).astype(np.float64)
        size = np.count_nonzero(xa, axis=-1).astype(np.float64)
        if xa.ndim == 1:
            if size == 0:
                raise ValueError("mask a must select at least one class, got an all-False mask")
            return float(inter / size)
        out = np.full(size.shape, np.nan)
        np.divide(inter, size, out=out, where=size > 0)
        return out
    sets = []
    for name, arr in (("a", xa), ("b", xb)):
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(
                f"{name} must be a 1-D collection of int class indices (or a bool mask), "
                f"got dtype {arr.dtype} and shape {tuple(arr.shape)}"
            )
        s = {int(v) for v in arr}
        if len(s) != arr.size:
            raise ValueError(f"{name} must not repeat class indices, got {arr.tolist()}")
        sets.append(s)
    if not sets[0]:
        raise ValueError("a must hold at least one class index, got an empty collection")
    return len(sets[0] & sets[1]) / len(sets[0])
