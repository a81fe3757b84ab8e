"""The backend selector: which implementation (``eager/`` or ``triton/``) runs a bound loss."""

from __future__ import annotations

from torch import Tensor

from lsdiffusion._kernels.base import BackendName

__all__ = ["resolve"]


def resolve(backend: str, x: Tensor) -> BackendName:
    """The implementation for logits ``x`` under the user's ``backend`` option.

    ``"auto"``: Triton for CUDA tensors when it is importable, else eager.
    ``"triton"``: Triton, or a ``RuntimeError`` saying why it cannot serve ``x``.
    ``backend`` is already validated (``"auto"``, ``"eager"`` or ``"triton"``).
    """
    if backend == "eager":
        return "eager"
    from lsdiffusion._kernels import triton as triton_backend

    if backend == "auto":
        return "triton" if x.device.type == "cuda" and triton_backend.available(x) else "eager"
    reason = triton_backend.reason_unavailable(x)
    if reason is not None:
        raise RuntimeError(f"backend='triton' is unavailable: {reason}; use backend='auto'")
    return "triton"
