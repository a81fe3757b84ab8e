"""Triton kernels for the losses (lazy: nothing here imports ``triton`` at import time).

``available(x)`` says whether the Triton backend can serve a tensor: CUDA
tensors when ``triton`` is importable, CPU tensors only under Triton's
interpreter (``TRITON_INTERPRET=1``), which the test suite uses.
"""

from __future__ import annotations

import importlib.util
import os

from torch import Tensor

__all__ = ["available", "interpreting", "reason_unavailable"]


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def reason_unavailable(x: Tensor) -> str | None:
    """``None`` when the Triton backend can run on ``x``'s device, else why not."""
    if not _importable():
        return "triton is not installed (CUDA builds of torch ship it; or pip install triton)"
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu":
        if interpreting():
            return None
        return (
            "the Triton backend runs on CUDA tensors; CPU tensors need Triton's interpreter "
            "(set TRITON_INTERPRET=1 before the first call)"
        )
    return f"the Triton backend runs on CUDA tensors, got a tensor on {x.device}"


def available(x: Tensor) -> bool:
    """Whether the Triton backend can run on ``x``."""
    return reason_unavailable(x) is None
