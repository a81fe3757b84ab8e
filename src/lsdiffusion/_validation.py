"""Argument checks shared by the modules of the package, in one message style.

Every error names the argument, what was expected and what was received. The
public modules import the checks they share from here, never from each other.

Private, and light to import: torch is not loaded at module level (the
numpy-only ``lsdiffusion.semantics`` modules use the scalar checks); the tensor
checks import it when they run.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

__all__ = [
    "Backend",
    "KDReduction",
    "LSReduction",
    "check_backend",
    "check_bool",
    "check_choice",
    "check_chunk_size",
    "check_class_indices",
    "check_class_weight",
    "check_dim_type",
    "check_features",
    "check_finite_positive",
    "check_fused_linear_ls_options",
    "check_fused_linear_options",
    "check_ignore_index",
    "check_in_unit_interval",
    "check_int",
    "check_integer_dtype",
    "check_kd_reduction",
    "check_labels",
    "check_reduction",
    "check_target_range",
    "count_labels",
    "flatten_labelled",
    "inspectable",
    "normalize_dim",
    "short_list",
]

# -- messages --------------------------------------------------------------------


def short_list(values: Iterable[int], limit: int = 10) -> str:
    """``values`` as ``[a, b, ...]``: the first ``limit``, then how many in total."""
    items = [int(v) for v in values]
    text = ", ".join(str(v) for v in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items)} in total)"
    return "[" + text + "]"


# -- Python scalars ----------------------------------------------------------------


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` (a numpy integer included, a bool not), if ``>= minimum``.

    Raises:
        TypeError: unless ``value`` is an integer.
        ValueError: if it is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {int(value)}")
    return int(value)


def check_bool(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


def check_choice(name: str, value: object, options: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


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


# -- loss options ------------------------------------------------------------------

Backend = Literal["auto", "eager", "triton"]
_BACKENDS: tuple[Backend, ...] = ("auto", "eager", "triton")


def check_backend(backend: object) -> Backend:
    """Return ``backend`` if it names a backend, else raise ``ValueError``."""
    for option in _BACKENDS:
        if backend == option:
            return option
    raise ValueError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")


def check_reduction(reduction: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``allowed``."""
    check_choice("reduction", reduction, allowed)


def check_kd_reduction(reduction: str) -> None:
    """Validate a KD reduction; ``"mean"`` gets an error explaining ``"batchmean"``."""
    if reduction == "mean":
        raise ValueError(
            "reduction='mean' is not offered for KD: an elementwise mean divides the KL by "
            "the number of classes. Use 'batchmean' (sum over classes, mean over rows), "
            "'sum' or 'none'"
        )
    check_reduction(reduction, ("none", "batchmean", "sum"))


# -- tensors -----------------------------------------------------------------------


def check_fused_linear_options(
    temperature: object,
    beta: object,
    alpha: object,
    reduction: str,
    t2_scaling: object,
    ignore_index: object,
    chunk_size: object,
    backend: object = "auto",
) -> None:
    """The non-tensor arguments of `fused_linear_kd_loss` (and its module)."""
    check_finite_positive("temperature", temperature)
    check_in_unit_interval("beta", beta)
    check_in_unit_interval("alpha", alpha)
    check_kd_reduction(reduction)
    check_bool("t2_scaling", t2_scaling)
    check_ignore_index(ignore_index)
    check_chunk_size(chunk_size)
    check_backend(backend)


def check_fused_linear_ls_options(
    alpha: object, reduction: str, ignore_index: object, chunk_size: object, backend: object
) -> None:
    """The non-tensor arguments of `fused_linear_label_smoothing_loss` (and its module)."""
    check_in_unit_interval("alpha", alpha)
    check_reduction(reduction, ("none", "mean", "sum"))
    check_ignore_index(ignore_index)
    check_chunk_size(chunk_size)
    check_backend(backend)


LSReduction = Literal["none", "mean", "sum"]
KDReduction = Literal["none", "batchmean", "sum"]


def check_target_range(
    flat: torch.Tensor, num_classes: int, ignore_index: int, name: str
) -> tuple[torch.Tensor, bool]:
    """Range-check flat class indices; also say whether some may equal ``ignore_index``.

    On the CPU the indices are read; on an accelerator the check is a
    device-side assert (no host synchronisation); while tracing or under
    ``torch.func`` it is left to the composite formula's gather.
    """
    import torch

    if not flat.numel():
        return flat, False
    if inspectable(flat):
        lo, hi = (int(v) for v in torch.aminmax(flat))
        if lo >= 0 and hi < num_classes:
            return flat, lo <= ignore_index <= hi
    bad = ((flat < 0) | (flat >= num_classes)) & (flat != ignore_index)
    message = (
        f"{name} contains {{}}, outside [0, {num_classes - 1}] "
        f"(and not ignore_index={ignore_index})"
    )
    if inspectable(flat):
        if bool(bad.any()):
            raise ValueError(message.format(f"class index {int(flat[bad][0])}"))
    elif flat.device.type != "cpu" and not _tracing():
        torch._assert_async(~bad.any(), message.format("a class index"))  # no host sync
    return flat, True


def inspectable(t: torch.Tensor) -> bool:
    """Whether checks may read values of ``t`` (a CPU tensor outside any tracing/transform)."""
    return t.device.type == "cpu" and not _tracing()


def _tracing() -> bool:
    from lsdiffusion._kernels.autograd import tracing_or_transforming

    return tracing_or_transforming()


def check_class_weight(
    weight: object, num_classes: int, x: torch.Tensor, name: str = "weight"
) -> torch.Tensor | None:
    """Per-class weights ``(C,)`` on ``x``'s device, in its compute dtype; None stays None."""
    import torch

    from lsdiffusion._kernels.base import compute_dtype

    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(weight).__name__}")
    if weight.dim() != 1 or weight.shape[0] != num_classes:
        raise ValueError(
            f"{name} must be 1-D with one entry per class ({num_classes}), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"{name} is on {weight.device} but the logits are on {x.device}")
    if weight.requires_grad:
        raise ValueError(
            f"{name} requires grad, but the losses give no gradient to the class weights; "
            f"pass {name}.detach()"
        )
    return weight.to(dtype=compute_dtype(x))


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


def check_features(name: str, features: torch.Tensor) -> None:
    """Raise unless ``features`` is a 2-D (N, D) tensor of a real floating dtype."""
    if features.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), got {features.dim()}-D shape {tuple(features.shape)}"
        )
    if not (features.is_floating_point() or features.is_complex()):
        raise TypeError(f"{name} must have a floating dtype, got {features.dtype}")
    if features.is_complex():
        raise TypeError(f"{name} must be real, got {features.dtype}")


def check_integer_dtype(name: str, tensor: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``tensor`` has an integer dtype (not bool)."""
    import torch

    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must have an integer dtype, got {tensor.dtype}")


def check_labels(
    labels: torch.Tensor, num_rows: int, num_classes: int, *, check_range: bool
) -> None:
    """Raise unless ``labels`` is (``num_rows``,) integer, in [0, ``num_classes``) if checked."""
    import torch

    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    check_integer_dtype("labels", labels)
    if labels.shape[0] != num_rows:
        raise ValueError(
            f"labels must have one entry per row of features: features has {num_rows} rows, "
            f"labels has {labels.shape[0]}"
        )
    if check_range and labels.numel() > 0:
        bad = (labels < 0) | (labels >= num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes}), "
                f"got {short_list(torch.unique(labels[bad]).cpu().tolist())}"
            )


def check_class_indices(
    name: str, indices: npt.NDArray[np.int64], num_classes: int, *, source: str | None = None
) -> None:
    """Raise ``ValueError`` unless every entry of ``indices`` lies in [0, ``num_classes``).

    Args:
        name: what the indices are, for the message (``"targets"``).
        indices: the class indices, as a 1-D int64 numpy array.
        num_classes: the number of classes C.
        source: where C comes from, for the message (``"the centroids have 5 rows"``);
            defaults to ``num_classes=C``.
    """
    bad = (indices < 0) | (indices >= num_classes)
    if bad.any():
        where = source if source is not None else f"num_classes={num_classes}"
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}] ({where}), "
            f"got {short_list(sorted(set(indices[bad].tolist())))}"
        )


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
    import torch

    if features.dim() < 1:
        raise ValueError("features must be (..., D) with the feature dim last, got a 0-d tensor")
    if features.is_complex() or not features.is_floating_point():
        raise TypeError(f"features must have a real floating dtype, got {features.dtype}")
    check_integer_dtype("labels", labels)
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
            skip = "" if ignore_index is None else f"; ignore_index={ignore_index} is skipped"
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] (num_classes={num_classes}{skip}), "
                f"got {short_list(values)}"
            )
    return rows, labs


def count_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class counts of (M,) int64 ``labels``, with a clear error for bad labels.

    This is the check left when ``validate=False``: ``bincount`` must look at
    every label anyway, so a label outside [0, ``num_classes``) costs nothing
    extra to report, and it is reported before any state is changed.
    """
    import torch

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
