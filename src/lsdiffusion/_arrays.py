"""Array conversion and argument checks shared by the measurement modules.

Private: [`lsdiffusion.centroids`][lsdiffusion.centroids],
[`lsdiffusion.diffusion`][lsdiffusion.diffusion] and
[`lsdiffusion.projection`][lsdiffusion.projection] import from here instead of from each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

ArrayLike: TypeAlias = torch.Tensor | npt.NDArray[Any]
"""A torch tensor or a numpy array."""


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _as_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` as a tensor (no copy for tensors), or raise ``TypeError``."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}")


def _check_int(name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)


def _check_choice(name: str, value: object, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def _short_list(values: Iterable[int], limit: int = 10) -> str:
    items = [int(v) for v in values]
    text = ", ".join(str(v) for v in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items)} in total)"
    return "[" + text + "]"


def _check_features(name: str, features: torch.Tensor) -> None:
    if features.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), got {features.dim()}-D shape {_shape(features)}"
        )
    if not (features.is_floating_point() or features.is_complex()):
        raise TypeError(f"{name} must have a floating dtype, got {features.dtype}")
    if features.is_complex():
        raise TypeError(f"{name} must be real, got {features.dtype}")


def _check_labels(
    labels: torch.Tensor, num_rows: int, num_classes: int, *, check_range: bool
) -> None:
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {_shape(labels)}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.shape[0] != num_rows:
        raise ValueError(
            f"labels must have one entry per row of features: features has {num_rows} rows, "
            f"labels has {labels.shape[0]}"
        )
    if check_range and labels.numel() > 0:
        bad = (labels < 0) | (labels >= num_classes)
        if bool(bad.any()):
            values = np.unique(labels[bad].cpu().numpy())
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes}), "
                f"got {_short_list(values)}"
            )


def _index_array(name: str, values: object) -> npt.NDArray[np.int64]:
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


def _check_range(name: str, arr: npt.NDArray[np.int64], num_classes: int) -> None:
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}] "
            f"(the centroids have {num_classes} rows), got {_short_list(np.unique(arr[bad]))}"
        )
