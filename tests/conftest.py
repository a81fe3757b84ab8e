"""Shared fixtures: devices, dtypes and a per-dtype tolerance table."""

from __future__ import annotations

import os

import pytest
import torch

from _devices import HAS_TRITON

# Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter.
# It is chosen when a kernel is decorated, so this must precede their import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (rtol, atol) per dtype for comparisons against float64 / PyTorch references.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype: torch.dtype) -> dict[str, float]:
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


@pytest.fixture(
    params=[
        "eager",
        pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton")),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """A chunk backend of the fused losses: the eager engine, or Triton (the CUDA path).

    Tests put their tensors on ``BACKEND_DEVICE[backend]``.
    """
    return str(request.param)
