r"""Projections of penultimate features onto the plane of three class templates.

Two methods (see :func:`muller_projection`): Müller et al.'s plane through the
three templates, and the seed paper's Algorithm 1 (a QR basis of the
templates' span, then a PCA to 2-D). :func:`templates_from_linear` takes the
templates from a final linear layer, by global class index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lsdiffusion._arrays import (
    ArrayLike,
    _as_tensor,
    _check_choice,
    _check_features,
    _check_range,
    _index_array,
    _shape,
)

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
            is used, see :func:`lsdiffusion.features.find_final_linear`).
        classes: three distinct global class indices.
        bias: append the biases (Müller's augmentation); the layer must have one.

    Returns:
        :class:`Templates` with (3, D) weights, (3,) biases or ``None``, and ``classes``.

    Example:
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
    idx = _index_array("classes", classes)
    if idx.size != 3:
        raise ValueError(f"classes must hold exactly 3 class indices, got {idx.size}")
    out_features = int(linear.weight.shape[0])
    _check_range("classes", idx, out_features)
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
    """Features and templates drawn on a 2-D plane (see :func:`muller_projection`).

    Unpacks as ``points, templates = muller_projection(...)``.

    Attributes:
        points: (N, 2) float64 coordinates of the features.
        templates: (3, 2) float64 coordinates of the three templates.
        classes: the templates' global class indices, if known.
        basis: (D', 2) orthonormal basis of the plane (D' = D + 1 with bias),
            or (D', 3) QR basis followed by a PCA for ``method="pca"``.
        origin: (D',) point of the feature space mapped to (0, 0)
            (for ``method="plane"``, the mean of the three templates).
        method: ``"plane"`` or ``"pca"``.
    """

    points: torch.Tensor
    templates: torch.Tensor
    classes: tuple[int, int, int] | None
    basis: torch.Tensor
    origin: torch.Tensor
    method: Literal["plane", "pca"] = "plane"

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.points
        yield self.templates


def muller_projection(
    features: ArrayLike,
    templates: Templates | ArrayLike,
    bias: ArrayLike | None = None,
    *,
    method: Literal["plane", "pca"] = "plane",
) -> Projection:
    r"""Project features onto the plane through three class templates (Müller et al., 2019).

    With templates :math:`w_0, w_1, w_2` (each with its bias appended,
    :math:`\tilde w_k = [w_k, b_k]`, and features augmented as
    :math:`\tilde x = [x, 1]` when biases are given), ``method="plane"``
    (Algorithm 1) builds an orthonormal basis :math:`Q = [q_1, q_2]` of
    :math:`\mathrm{span}(\tilde w_1 - \tilde w_0, \tilde w_2 - \tilde w_0)`
    by QR (:math:`q_1` along :math:`\tilde w_1 - \tilde w_0`, :math:`q_2` towards
    :math:`\tilde w_2`) and returns

    .. math::

        p = Q^\top (\tilde x - o), \qquad o = \tfrac13 (\tilde w_0 + \tilde w_1 + \tilde w_2)

    The map is an orthogonal projection: it keeps the templates' pairwise
    distances, and moving a feature orthogonally to the plane does not move its point.

    ``method="pca"`` follows the paper's released code instead: a QR basis of the
    3-D span of the templates (through the origin), then a PCA of the projected
    features down to 2-D; template distances are not preserved in general.

    Args:
        features: (N, D) features (tensor or numpy array).
        templates: :class:`Templates` (e.g. from :func:`templates_from_linear`), or a
            (3, D) array of template weights.
        bias: (3,) template biases when ``templates`` is an array (``None``: no
            augmentation); must be ``None`` when ``templates`` is :class:`Templates`.
        method: ``"plane"`` (default) or ``"pca"``.

    Returns:
        A :class:`Projection` with ``points`` (N, 2) and ``templates`` (3, 2), float64.

    Shape:
        - features: (N, D); templates: (3, D); bias: (3,); points: (N, 2).

    Example:
        >>> import torch
        >>> w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        >>> pts, tpl = muller_projection(x, w)  # x[1] is the template w0
        >>> pts.round(decimals=4)
        tensor([[ 0.0000,  0.0000],
                [-0.7071, -0.4082]], dtype=torch.float64)
        >>> torch.cdist(tpl, tpl).round(decimals=4)[0, 1].item()  # |w1 - w0| = sqrt(2)
        1.4142
    """
    _check_choice("method", method, ("plane", "pca"))
    x = _as_tensor("features", features)
    _check_features("features", x)
    classes: tuple[int, int, int] | None = None
    if isinstance(templates, Templates):
        if bias is not None:
            raise ValueError(
                "bias must be None when templates is a Templates (it carries its own bias)"
            )
        tpl = templates
        classes = templates.classes
    else:
        w = _as_tensor("templates", templates)
        b = None if bias is None else _as_tensor("bias", bias)
        tpl = Templates(weight=w, bias=b)
    w_raw = tpl.weight
    if w_raw.dim() != 2 or w_raw.shape[0] != 3:
        raise ValueError(f"templates must have shape (3, D), got {_shape(w_raw)}")
    if not w_raw.is_floating_point():
        raise TypeError(f"templates must have a floating dtype, got {w_raw.dtype}")
    if w_raw.shape[1] != x.shape[1]:
        raise ValueError(
            f"templates must have D={int(x.shape[1])} columns like features {_shape(x)}, "
            f"got {_shape(w_raw)}"
        )
    if tpl.bias is not None and _shape(tpl.bias) != (3,):
        raise ValueError(f"bias must have shape (3,), got {_shape(tpl.bias)}")
    w_aug = tpl.augmented().to(x.device)
    xf = x.detach().to(torch.float64)
    if tpl.bias is not None:
        xf = torch.cat([xf, xf.new_ones(xf.shape[0], 1)], dim=1)
    if not bool(torch.isfinite(w_aug).all()):
        raise ValueError("templates (and bias) must be finite")

    if method == "plane":
        origin = w_aug.mean(dim=0)
        spans = torch.stack([w_aug[1] - w_aug[0], w_aug[2] - w_aug[0]], dim=1)  # (D', 2)
        q, r = torch.linalg.qr(spans)
        signs = torch.sign(torch.diagonal(r))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        q = q * signs
        scale = torch.linalg.vector_norm(spans, dim=0).max()
        rel_tol = 100 * torch.finfo(w_raw.dtype).eps  # collinear up to the input's precision
        if not bool(scale > 0) or not bool(torch.diagonal(r).abs().min() > rel_tol * scale):
            raise ValueError("the three templates are collinear (or coincide): they span no plane")
        return Projection(
            points=(xf - origin) @ q,
            templates=(w_aug - origin) @ q,
            classes=classes,
            basis=q,
            origin=origin,
            method="plane",
        )

    if x.shape[0] < 2:
        raise ValueError(f"method='pca' needs at least 2 features, got shape {_shape(x)}")
    q3, _ = torch.linalg.qr(w_aug.T)  # (D', 3)
    proj = xf @ q3
    mean = proj.mean(dim=0)
    _, _, vh = torch.linalg.svd(proj - mean, full_matrices=False)
    v = vh[:2].T  # (3, 2)
    flip = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))
    v = v * torch.where(flip == 0, torch.ones_like(flip), flip)
    return Projection(
        points=(proj - mean) @ v,
        templates=(w_aug @ q3 - mean) @ v,
        classes=classes,
        basis=q3,
        origin=q3 @ mean,
        method="pca",
    )

