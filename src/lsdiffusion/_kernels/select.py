"""The backend selector: which implementation (``eager/`` or ``triton/``) runs a bound loss.

``resolve`` picks the implementation for a call; ``run`` runs a bound loss on
it. A Triton kernel that fails to compile or launch (an unsupported GPU, a
driver or compiler problem) must not stop a training run that asked for
``backend="auto"``: the call is redone on the eager engine, one
``RuntimeWarning`` names the error, and ``"auto"`` picks the eager engine for
the rest of the process. ``backend="triton"`` raises the error instead.
"""

from __future__ import annotations

import copy
import warnings
from importlib import import_module
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lsdiffusion._kernels.base import BackendName

if TYPE_CHECKING:
    from lsdiffusion._kernels.base import LossKernel

__all__ = ["reset_failure", "resolve", "run", "scale_grad", "triton_failure"]

# device types on which backend="auto" takes Triton (tests add "cpu", under the
# interpreter, to run exactly the path a CUDA tensor takes)
AUTO_DEVICES: tuple[str, ...] = ("cuda",)

_failure: list[str] = []  # the error that turned Triton off for backend="auto"


def triton_failure() -> str | None:
    """The Triton error that made ``backend="auto"`` fall back for good, if any."""
    return _failure[0] if _failure else None


def reset_failure() -> None:
    """Forget a recorded Triton failure (``"auto"`` tries Triton again)."""
    _failure.clear()


def resolve(backend: str, x: Tensor) -> BackendName:
    """The implementation for logits ``x`` under the user's ``backend`` option.

    ``"auto"``: Triton for CUDA tensors when it is importable and has not
    failed in this process, else eager. ``"triton"``: Triton, or a
    ``RuntimeError`` saying why it cannot serve ``x``. ``backend`` is already
    validated (``"auto"``, ``"eager"`` or ``"triton"``).
    """
    if backend == "eager":
        return "eager"
    from lsdiffusion._kernels import triton as triton_backend

    if backend == "auto":
        usable = x.device.type in AUTO_DEVICES and not _failure and triton_backend.available(x)
        return "triton" if usable else "eager"
    reason = triton_backend.reason_unavailable(x)
    if reason is not None:
        raise RuntimeError(f"backend='triton' is unavailable: {reason}; use backend='auto'")
    return "triton"


def _implementation(kernel: LossKernel, backend: BackendName) -> object:
    return import_module(f"lsdiffusion._kernels.{backend}.{kernel.impl}")


def run(kernel: LossKernel, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """``kernel``'s fast evaluation on its bound backend, falling back as the module says."""
    impl = _implementation(kernel, kernel.backend)
    if kernel.backend == "eager" or not kernel.fallback:
        return impl.run(kernel, x, need_grad)  # type: ignore[attr-defined, no-any-return]
    try:
        return impl.run(kernel, x, need_grad)  # type: ignore[attr-defined, no-any-return]
    except torch.OutOfMemoryError:
        raise  # the eager engine would not fit either
    except Exception as exc:
        _record(exc)
    eager = copy.copy(kernel)
    eager.backend = "eager"
    eager.fallback = False
    return run(eager, x, need_grad)


def scale_grad(kernel: LossKernel, grad: Tensor, upstream: Tensor) -> None:
    """``grad *= upstream`` (a scalar tensor) in place, on the kernel's backend."""
    if kernel.backend == "triton" and not (kernel.fallback and _failure):
        from lsdiffusion._kernels.triton import launch

        try:
            launch.scale_(grad, upstream)  # in the compute dtype, read on the device
            return
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if not kernel.fallback:
                raise
            _record(exc)
    if grad.device.type == "cpu" and float(upstream) == 1.0:
        return  # reading the scalar costs nothing on the CPU
    grad.mul_(upstream.to(grad.dtype))


def _record(exc: Exception) -> None:
    first = not _failure
    _failure[:] = [f"{type(exc).__name__}: {exc}"]
    if first:
        warnings.warn(
            f"the Triton kernels failed ({_failure[0]}); backend='auto' runs the eager "
            "engine from now on in this process (pass backend='triton' to raise instead)",
            RuntimeWarning,
            stacklevel=4,
        )
