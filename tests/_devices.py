"""Where the tests put their tensors, per backend (shared by conftest.py and the tests)."""

from __future__ import annotations

import importlib.util

import torch

# where the Triton kernels run in the tests: CUDA, or the CPU through the interpreter
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HAS_TRITON = importlib.util.find_spec("triton") is not None
# the device a backend's tests put their tensors on
BACKEND_DEVICE = {"eager": "cpu", "triton": TRITON_DEVICE}
