"""Shared argument checks and the one reduction helper used by every loss.

Every public function validates its inputs here so that errors read the same
everywhere: they name the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, get_args

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
        allowed: the accepted values; defaults to every `Reduction`.
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
    if not math.isfinite(float(value)) or float(value) <= 0:
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
