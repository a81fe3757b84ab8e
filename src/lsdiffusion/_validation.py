"""Shared argument checks and the one reduction helper used by every loss.

Every public function validates its inputs here so that errors read the same
everywhere: they name the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, get_args

import torch

__all__ = [
    "Reduction",
    "check_bool",
    "check_chunk_size",
    "check_dim_type",
    "check_finite_positive",
    "check_ignore_index",
    "check_in_unit_interval",
    "check_reduction",
    "normalize_dim",
]

Reduction = Literal["none", "mean", "sum", "batchmean"]


def check_reduction(reduction: str, allowed: tuple[str, ...] | None = None) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``allowed``.

    Args:
        reduction: the value passed by the user.
        allowed: the accepted values; defaults to every :data:`Reduction`.
    """
    options = allowed if allowed is not None else get_args(Reduction)
    if reduction not in options:
        raise ValueError(f"reduction must be one of {list(options)}, got {reduction!r}")


def check_in_unit_interval(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not (0.0 <= float(value) <= 1.0):  # numbers.Real converts to float
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_finite_positive(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    # comparisons, not math.isfinite: they also work on the symbolic floats that
    # torch.compile(dynamic=True) passes (NaN fails both)
    v: Any = value  # a Python number, or a SymFloat while compiling
    if not (v > 0 and v < math.inf):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def check_bool(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_ignore_index(value: object) -> None:
    """Raise unless ``value`` is an integer (not a bool) within the int64 range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {type(value).__name__} {value!r}")
    if not _INT64_MIN <= int(value) <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in int64, got {value}")


def check_dim_type(dim: object) -> None:
    """Raise ``TypeError`` unless ``dim`` is an integer (not a bool or float)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {type(dim).__name__} {dim!r}")


def check_chunk_size(chunk_size: object) -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is ``None`` or a positive int."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def normalize_dim(name: str, dim: object, tensor: torch.Tensor) -> int:
    """Return ``dim`` as a non-negative index into ``tensor``'s shape."""
    check_dim_type(dim)
    assert isinstance(dim, numbers.Integral)
    dim = int(dim)
    ndim = tensor.dim()
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"dim={dim} is out of range for {name} of shape {tuple(tensor.shape)} "
            f"(expected -{ndim} <= dim < {ndim})"
        )
    return dim % ndim


# -- measurement accumulators (centroids, cluster geometry, entropy) ------------


def flatten_labelled(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int | None,
    check_range: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check (..., D) features against (...) labels; return (M, D) rows and (M,) int64 labels.

    Rows whose label equals ``ignore_index`` (padding) are dropped. Labels are
    compared in int64, so a narrow dtype (uint8 with 300 classes) cannot wrap.
    With ``check_range`` every kept label must lie in [0, ``num_classes``).

    Args:
        features: (..., D) real floating features.
        labels: (...) integer labels, the shape of ``features`` without its last dim.
        num_classes: the number of classes C.
        ignore_index: a label value to skip, or ``None``.
        check_range: whether to check that the labels are in range.

    Returns:
        The kept features as (M, D) and their labels as (M,) int64.

    Raises:
        TypeError: for a non-floating or complex ``features`` or non-integer ``labels``.
        ValueError: for mismatched shapes or out-of-range labels.
    """
    if features.dim() < 1:
        raise ValueError("features must be (..., D) with the feature dim last, got a 0-d tensor")
    if features.is_complex() or not features.is_floating_point():
        raise TypeError(f"features must have a real floating dtype, got {features.dtype}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    lead = tuple(int(s) for s in features.shape[:-1])
    if tuple(labels.shape) != lead:
        raise ValueError(
            f"labels must have the shape of features without its last (feature) dim: "
            f"features has shape {tuple(features.shape)}, so labels must be {lead}; "
            f"got labels of shape {tuple(labels.shape)}"
        )
    rows = features.reshape(-1, features.shape[-1])
    labs = labels.reshape(-1).long()
    if ignore_index is not None and labs.numel() > 0:
        keep = labs != ignore_index
        if not bool(keep.all()):
            rows, labs = rows[keep], labs[keep]
    if check_range and labs.numel() > 0:
        bad = (labs < 0) | (labs >= num_classes)
        if bool(bad.any()):
            values = torch.unique(labs[bad]).cpu().tolist()
            shown = ", ".join(str(v) for v in values[:10])
            more = f", ... ({len(values)} in total)" if len(values) > 10 else ""
            skip = "" if ignore_index is None else f"; ignore_index={ignore_index} is skipped"
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes}{skip}), "
                f"got [{shown}{more}]"
            )
    return rows, labs


def count_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class counts of (M,) int64 ``labels``, with a clear error for bad labels.

    This is the check left when ``validate=False``: ``bincount`` must look at
    every label anyway, so a label outside [0, ``num_classes``) costs nothing
    extra to report, and it is reported before any state is changed.
    """
    try:
        counts = torch.bincount(labels, minlength=num_classes)
    except RuntimeError:  # negative labels
        counts = None
    if counts is None or counts.shape[0] != num_classes:
        raise ValueError(
            f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes}), got values "
            f"outside it (validate=False skips only the detailed range report; the labels are "
            f"still counted, and a bad one still raises)"
        )
    return counts
