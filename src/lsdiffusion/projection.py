r"""Projections of penultimate features onto three class templates, as 2-D points.

Two methods, both orthogonal projections onto a 2-D plane of the
(bias-augmented) feature space; they differ in which plane
([`muller_projection`][lsdiffusion.muller_projection] gives the formulas):

* ``method="plane"`` (the default) is **Müller et al.'s construction** (2019,
  "When does label smoothing help?", Section 2): the plane through the three
  templates. Nothing is fitted to the data.
* ``method="pca"`` is **the seed paper's Algorithm 1** (Chandrasegaran et al.,
  2022) as its released code runs it: a QR basis of the 3-D span of the
  templates, then a PCA to 2-D fitted on the features *and* the three class
  centroids. [`Projection.transform`][lsdiffusion.projection.Projection.transform] reuses the fitted
  map on another split (the paper fits on the training split and plots the validation split).

[`templates_from_linear`][lsdiffusion.templates_from_linear] takes the templates from a final linear
layer, weights and biases both by *global* class index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lsdiffusion._arrays import ArrayLike, as_tensor, index_array, shape_of
from lsdiffusion._validation import check_choice, check_class_indices, check_features

__all__ = ["Projection", "Templates", "muller_projection", "templates_from_linear"]


@dataclass(frozen=True)
class Templates:
    """Three class templates: rows of a final linear layer, optionally with biases.

    Attributes:
        weight: (3, D) template weight rows.
        bias: (3,) template biases, or ``None`` (no bias augmentation).
        classes: the *global* class indices of the three templates, if known.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    classes: tuple[int, int, int] | None = None

    def augmented(self) -> torch.Tensor:
        """The templates as (3, D+1) ``[w, b]`` rows (or (3, D) without bias), float64."""
        w = self.weight.detach().to(torch.float64)
        if self.bias is None:
            return w
        b = self.bias.detach().to(device=w.device, dtype=torch.float64)
        return torch.cat([w, b.unsqueeze(1)], dim=1)


def templates_from_linear(
    linear: nn.Module, classes: Sequence[int], bias: bool = True
) -> Templates:
    """Take the templates of three classes from a final linear layer.

    Rows and biases are both indexed by the *global* class index, so
    ``classes=[266, 267, 833]`` takes ``weight[266]`` with ``bias[266]`` (the
    paper's released code paired them with local indices 0, 1, 2; that bug is
    not reproduced).

    Args:
        linear: an ``nn.Linear`` (or a model: its last registered ``nn.Linear``
            is used, see [`lsdiffusion.features.find_final_linear`][lsdiffusion.find_final_linear]).
        classes: three distinct global class indices.
        bias: append the biases (Müller's augmentation); the layer must have one.

    Returns:
        [`Templates`][lsdiffusion.Templates] with (3, D) weights, (3,) biases or ``None``, and
        ``classes``.

    Examples:
        >>> import torch
        >>> fc = torch.nn.Linear(4, 10)
        >>> tpl = templates_from_linear(fc, [2, 5, 9])
        >>> tpl.weight.shape, tpl.bias.shape, tpl.classes
        (torch.Size([3, 4]), torch.Size([3]), (2, 5, 9))
        >>> bool(tpl.bias[2] == fc.bias[9])
        True
    """
    if not isinstance(linear, nn.Linear):
        if not isinstance(linear, nn.Module):
            raise TypeError(
                f"linear must be an nn.Linear or an nn.Module, got {type(linear).__name__}"
            )
        from lsdiffusion.features import find_final_linear

        _, layer = find_final_linear(linear)
        if not isinstance(layer, nn.Linear):  # pragma: no cover - find_final_linear ensures it
            raise TypeError("the final layer is not an nn.Linear")
        linear = layer
    idx = index_array("classes", classes)
    if idx.size != 3:
        raise ValueError(f"classes must hold exactly 3 class indices, got {idx.size}")
    out_features = int(linear.weight.shape[0])
    check_class_indices(
        "classes", idx, out_features, source=f"the layer has {out_features} outputs"
    )
    if np.unique(idx).size != 3:
        raise ValueError(f"classes must be 3 distinct classes, got {idx.tolist()}")
    rows = torch.from_numpy(idx).to(linear.weight.device)
    weight = linear.weight.detach().index_select(0, rows)
    b: torch.Tensor | None = None
    if bias:
        if linear.bias is None:
            raise ValueError("bias=True but the linear layer has no bias; pass bias=False")
        b = linear.bias.detach().index_select(0, rows)
    c = (int(idx[0]), int(idx[1]), int(idx[2]))
    return Templates(weight=weight, bias=b, classes=c)


@dataclass(frozen=True)
class Projection:
    r"""Features, templates and (optionally) class centroids mapped to 2-D, and the map.

    The map is $p = B^\top (\tilde x - o)$, with $\tilde x = [x, 1]$
    when the templates carry biases ([`augmented`][lsdiffusion.projection.Templates.augmented]),
    else $x$. For both methods $B$ has orthonormal columns, so the map is an orthogonal
    projection onto a 2-D plane: distances within that plane are kept exactly,
    and moving a feature orthogonally to it does not move its point.
    [`transform`][lsdiffusion.projection.Projection.transform] applies the same map to other
    features.

    Unpacks as ``points, templates = muller_projection(...)``.

    Attributes:
        points: (N, 2) float64 coordinates of the features.
        templates: (3, 2) float64 coordinates of the three templates.
        classes: the templates' global class indices, if known.
        basis: $B$, (D', 2) float64 with orthonormal columns (D' = D + 1
            with biases). ``"plane"``: the QR basis of
            $\tilde w_1 - \tilde w_0, \tilde w_2 - \tilde w_0$.
            ``"pca"``: $Q V$, the 3-D QR basis of the templates times the
            PCA's two principal directions.
        origin: $o$, (D',) the point mapped to (0, 0): the templates' mean
            (``"plane"``) or the mean of the points the PCA was fitted on (``"pca"``).
        method: ``"plane"`` (Müller et al.) or ``"pca"`` (the paper's Algorithm 1).
        centroids: (3, 2) float64 coordinates of the three class centroids, when
            they were given, else ``None``.
        augmented: whether features get a 1 appended (the templates carry biases).
    """

    points: torch.Tensor
    templates: torch.Tensor
    classes: tuple[int, int, int] | None
    basis: torch.Tensor
    origin: torch.Tensor
    method: Literal["plane", "pca"] = "plane"
    centroids: torch.Tensor | None = None
    augmented: bool = False

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.points
        yield self.templates

    @property
    def num_features(self) -> int:
        """D, the feature dimension the map expects (without the appended 1)."""
        return int(self.basis.shape[0]) - int(self.augmented)

    def transform(self, features: ArrayLike) -> torch.Tensor:
        """Map other features with this fitted projection (no refit).

        Fitting on one split and drawing another, as the paper does (PCA fitted
        on the training split, validation split plotted), is
        ``muller_projection(train, tpl, method="pca", centroids=c).transform(val)``.
        On the features it was fitted on it returns `points` exactly.

        Args:
            features: (N, D) features (tensor on any device, or numpy array).

        Returns:
            (N, 2) float64 coordinates, on the device of `basis`.

        Examples:
            >>> import torch
            >>> w = torch.eye(3)
            >>> x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
            >>> proj = muller_projection(x, w)
            >>> torch.equal(proj.transform(x), proj.points)
            True
            >>> torch.allclose(proj.transform(w), proj.templates)  # templates land on theirs
            True
        """
        x = as_tensor("features", features)
        check_features("features", x)
        if int(x.shape[1]) != self.num_features:
            raise ValueError(
                f"features must have D={self.num_features} columns like the features this "
                f"projection was fitted on, got shape {shape_of(x)}"
            )
        return _apply(_lift(x, self.augmented, self.basis.device), self.origin, self.basis)


def _lift(x: torch.Tensor, augmented: bool, device: torch.device) -> torch.Tensor:
    """``x`` as float64 on ``device``, with a column of ones appended when ``augmented``."""
    xf = x.detach().to(device=device, dtype=torch.float64)
    if augmented:
        xf = torch.cat([xf, xf.new_ones(xf.shape[0], 1)], dim=1)
    return xf


def _apply(xf: torch.Tensor, origin: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The one formula every point goes through: ``(x_aug - origin) @ basis``."""
    out: torch.Tensor = (xf - origin) @ basis
    return out


def _fix_signs(basis: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its entry of largest magnitude is positive."""
    pick = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True))
    signs = torch.where(pick < 0, -1.0, 1.0).to(basis.dtype)
    return basis * signs


def muller_projection(
    features: ArrayLike,
    templates: Templates | ArrayLike,
    bias: ArrayLike | None = None,
    *,
    method: Literal["plane", "pca"] = "plane",
    centroids: ArrayLike | None = None,
) -> Projection:
    r"""Project features onto three class templates: Müller's plane or the paper's QR + PCA.

    The templates are $\tilde w_k = [w_k, b_k]$ and the features
    $\tilde x = [x, 1]$ when biases are given ($w_k$ and $x$
    otherwise). Both methods return $p = B^\top (\tilde x - o)$ with an
    orthonormal (D', 2) basis $B$; they differ in the plane.

    **method="plane": Müller et al. (2019), the default.** $B = [q_1, q_2]$
    is the QR basis of $\tilde w_1 - \tilde w_0,\ \tilde w_2 - \tilde w_0$
    ($q_1$ along $\tilde w_1 - \tilde w_0$, $q_2$ towards
    $\tilde w_2$) and $o = \tfrac13 (\tilde w_0 + \tilde w_1 + \tilde w_2)$:
    the plane *through* the three templates. It keeps every distance within
    that plane, so the templates' triangle is drawn true to size, and drops
    each feature's offset orthogonal to the plane.

    **method="pca": the seed paper's Algorithm 1** (Chandrasegaran et al., 2022),
    step for step as its released code runs it: (1) $Q$ (D', 3), the QR
    basis of the span of $\tilde w_0, \tilde w_1, \tilde w_2$ (through
    the origin); (2) features and class centroids to 3-D,
    $\tilde x Q$ and $\tilde \mu_k Q$; (3) a PCA to 2-D *fitted
    on the projected features plus the three projected centroids* (mean
    $m$, principal directions $V$, 3 x 2); so $B = Q V$,
    $o = Q m$. It keeps the distances within the 2-D plane of largest
    spread of the fitted points inside the templates' 3-D span; template
    distances are not kept in general. The map depends on the data it was
    fitted on: reuse it on another split with
    [`Projection.transform`][lsdiffusion.projection.Projection.transform]. Biases are taken by
    *global* class index (the released code indexed them by 0, 1, 2: a bug not copied). Each axis is
    signed so that its largest basis entry is positive (a PCA fixes axes only up to sign).

    **Why "plane" is the default.** It fits nothing: the map is a function of
    the three templates alone, so every split, subset or batch of features
    lands in the same coordinates, it is what "Müller's projection" names,
    and the templates keep their true geometry. Use ``"pca"`` with
    ``centroids=`` to reproduce the paper's figures.

    Args:
        features: (N, D) features (tensor or numpy array).
        templates: [`Templates`][lsdiffusion.Templates] (e.g. from
            [`templates_from_linear`][lsdiffusion.templates_from_linear]), or a (3, D) array of
            template weights.
        bias: (3,) template biases when ``templates`` is an array (``None``: no
            augmentation); must be ``None`` when ``templates`` is
            [`Templates`][lsdiffusion.Templates].
        method: ``"plane"`` (default, Müller et al.) or ``"pca"`` (the paper's Algorithm 1).
        centroids: (3, D) centroids of the three template classes, in template
            order (e.g. [`class_centroids`][lsdiffusion.class_centroids] rows).
            They are projected too (`Projection.centroids`); for
            ``"pca"`` they enter the PCA fit, as in the paper's code.

    Returns:
        A [`Projection`][lsdiffusion.Projection]: ``points`` (N, 2), ``templates`` (3, 2) and
        ``centroids`` (3, 2) or ``None``, all float64, and the map itself.

    Shape:
        - features: (N, D); templates: (3, D); bias: (3,); centroids: (3, D).
        - points: (N, 2); templates, centroids: (3, 2).

    Examples:
        >>> import torch
        >>> w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        >>> pts, tpl = muller_projection(x, w)  # x[1] is the template w0
        >>> pts.round(decimals=4)
        tensor([[ 0.0000,  0.0000],
                [-0.7071, -0.4082]], dtype=torch.float64)
        >>> torch.cdist(tpl, tpl).round(decimals=4)[0, 1].item()  # |w1 - w0| = sqrt(2)
        1.4142
        >>> paper = muller_projection(x, w, method="pca", centroids=w)
        >>> paper.points.shape, paper.centroids.shape
        (torch.Size([2, 2]), torch.Size([3, 2]))
    """
    # Long on purpose: Algorithm 1 step by step (templates, plane, projection), each step's checks
    # beside it.
    check_choice("method", method, ("plane", "pca"))
    x = as_tensor("features", features)
    check_features("features", x)
    classes: tuple[int, int, int] | None = None
    if isinstance(templates, Templates):
        if bias is not None:
            raise ValueError(
                "bias must be None when templates is a Templates (it carries its own bias)"
            )
        tpl = templates
        classes = templates.classes
    else:
        w = as_tensor("templates", templates)
        b = None if bias is None else as_tensor("bias", bias)
        tpl = Templates(weight=w, bias=b)
    w_raw = tpl.weight
    if w_raw.dim() != 2 or w_raw.shape[0] != 3:
        raise ValueError(f"templates must have shape (3, D), got {shape_of(w_raw)}")
    if not w_raw.is_floating_point():
        raise TypeError(f"templates must have a floating dtype, got {w_raw.dtype}")
    if w_raw.shape[1] != x.shape[1]:
        raise ValueError(
            f"templates must have D={int(x.shape[1])} columns like features {shape_of(x)}, "
            f"got {shape_of(w_raw)}"
        )
    if tpl.bias is not None and shape_of(tpl.bias) != (3,):
        raise ValueError(f"bias must have shape (3,), got {shape_of(tpl.bias)}")
    augmented = tpl.bias is not None
    w_aug = tpl.augmented().to(x.device)
    if not bool(torch.isfinite(w_aug).all()):
        raise ValueError("templates (and bias) must be finite")
    xf = _lift(x, augmented, x.device)
    cf: torch.Tensor | None = None
    if centroids is not None:
        c = as_tensor("centroids", centroids)
        if c.dim() != 2 or shape_of(c) != (3, int(x.shape[1])):
            raise ValueError(
                f"centroids must have shape (3, {int(x.shape[1])}) (one row per template "
                f"class, D like features), got {shape_of(c)}"
            )
        if not c.is_floating_point():
            raise TypeError(f"centroids must have a floating dtype, got {c.dtype}")
        cf = _lift(c, augmented, x.device)
        if not bool(torch.isfinite(cf).all()):
            raise ValueError(
                "centroids must be finite; an empty class has a NaN centroid: collect "
                "samples of all three template classes"
            )
    # Degenerate up to the precision of the values as given, at least float32's: the
    # work is float64, and a 16-bit head's eps (bfloat16: 100 eps = 0.78) would refuse
    # random templates. Templates combined in float32 (w0 + w1) are still refused.
    rel_tol = 100 * torch.finfo(torch.promote_types(w_raw.dtype, torch.float32)).eps
    dims = int(w_aug.shape[1])
    needed = 2 if method == "plane" else 3
    if dims < needed:
        raise ValueError(
            f"method={method!r} needs templates spanning {needed} dimensions, but they have "
            f"{dims} column{'s' if dims > 1 else ''}{' (with the bias)' if augmented else ''}: "
            "three points on a line span no plane"
        )
    if not bool(torch.isfinite(xf).all()):
        bad = torch.nonzero(~torch.isfinite(xf).all(dim=1)).flatten()
        raise ValueError(
            f"features must be finite; rows {bad[:10].cpu().tolist()}"
            f"{' ...' if bad.numel() > 10 else ''} hold NaN or inf"
        )

    if method == "plane":
        origin = w_aug.mean(dim=0)
        spans = torch.stack([w_aug[1] - w_aug[0], w_aug[2] - w_aug[0]], dim=1)  # (D', 2)
        q, r = torch.linalg.qr(spans)
        signs = torch.sign(torch.diagonal(r))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        basis = q * signs
        scale = torch.linalg.vector_norm(spans, dim=0).max()
        if not bool(scale > 0) or not bool(torch.diagonal(r).abs().min() > rel_tol * scale):
            raise ValueError("the three templates are collinear (or coincide): they span no plane")
    else:
        fitted = int(x.shape[0]) + (0 if cf is None else 3)
        if fitted < 2:
            raise ValueError(
                "method='pca' needs at least 2 points to fit (features plus centroids), "
                f"got features of shape {shape_of(x)} and no centroids"
            )
        q3, r3 = torch.linalg.qr(w_aug.T)  # (D', 3): step 1, the templates' span
        diag = torch.diagonal(r3).abs()
        if not bool(diag.max() > 0) or not bool(diag.min() > rel_tol * diag.max()):
            raise ValueError(
                "the three templates are linearly dependent: they span fewer than 3 dimensions"
            )
        fit = xf @ q3 if cf is None else torch.cat([xf, cf]) @ q3  # step 2
        mean = fit.mean(dim=0)
        _, _, vh = torch.linalg.svd(fit - mean, full_matrices=False)  # step 3, the PCA
        basis = _fix_signs(q3 @ vh[:2].T)
        origin = q3 @ mean
    return Projection(
        points=_apply(xf, origin, basis),
        templates=_apply(w_aug, origin, basis),
        classes=classes,
        basis=basis,
        origin=origin,
        method=method,
        centroids=None if cf is None else _apply(cf, origin, basis),
        augmented=augmented,
    )
