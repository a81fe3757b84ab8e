"""Array conversion shared by the measurement modules.

Private: [`lsdiffusion.centroids`][lsdiffusion.centroids],
[`lsdiffusion.diffusion`][lsdiffusion.diffusion],
[`lsdiffusion.projection`][lsdiffusion.projection] and
[`lsdiffusion.scatter`][lsdiffusion.scatter] import from here instead of from each other;
their argument checks are in `lsdiffusion._validation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ArrayLike", "as_tensor", "index_array", "shape_of"]

ArrayLike: TypeAlias = torch.Tensor | npt.NDArray[Any]
"""A torch tensor or a numpy array."""


def shape_of(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of ``x`` as a tuple of Python ints (for messages)."""
    return tuple(int(s) for s in x.shape)


def as_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` as a tensor (no copy for tensors), or raise ``TypeError``."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}")


def index_array(name: str, values: object) -> npt.NDArray[np.int64]:
    """Turn an iterable of class indices into a 1-D int64 numpy array."""
    if isinstance(values, torch.Tensor):
        arr: npt.NDArray[Any] = values.detach().cpu().numpy()
    elif isinstance(values, np.ndarray):
        arr = values
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be an iterable of class indices, got {type(values).__name__}")
    else:
        items = values if isinstance(values, (list, tuple)) else list(values)
        try:
            arr = np.asarray(items)
        except ValueError as exc:  # ragged nesting
            raise TypeError(f"{name} must be a flat collection of class indices ({exc})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D collection of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must contain integer class indices, got {arr.dtype} values "
            f"(first: {arr.flat[0]!r})"
        )
    return arr.astype(np.int64, copy=False)
