"""``nn.Module`` wrappers around `lsdiffusion.functional`.

The modules validate their configuration once in ``__init__``, keep class
weights as buffers (so ``.to(device)`` moves them and ``state_dict`` holds
them, as for ``nn.CrossEntropyLoss``), and their ``forward`` is one call to
the function, whose docstring carries the math.

TorchScript (``torch.jit.script``, deprecated in torch 2.13, like
``torch.jit.trace``) cannot compile them: each module raises an error that
points to ``torch.compile`` (supported, ``fullgraph=True`` included) and
``torch.export``.
"""

from __future__ import annotations

from typing import NoReturn

from torch import Tensor, nn

from lsdiffusion._validation import (
    Backend,
    KDReduction,
    LSReduction,
    check_bool,
    check_dim_type,
    check_finite_positive,
    check_fused_linear_ls_options,
    check_fused_linear_options,
    check_ignore_index,
    check_in_unit_interval,
    check_reduction,
)
from lsdiffusion._validation import check_backend as _check_backend
from lsdiffusion._validation import check_kd_reduction as _check_kd_reduction
from lsdiffusion.functional import (
    KDTerms,
    fused_linear_kd_loss,
    fused_linear_label_smoothing_loss,
    kd_loss_terms,
    label_smoothing_loss,
)
from lsdiffusion.teachers import TopKTeacher

__all__ = ["FusedLinearKDLoss", "FusedLinearLabelSmoothingLoss", "KDLoss", "LabelSmoothingLoss"]


def _no_torchscript(name: str) -> NoReturn:
    raise RuntimeError(
        f"{name} cannot be compiled with torch.jit.script (TorchScript does not support its "
        "argument checks and autograd function). Use torch.compile (fullgraph=True works) "
        "or torch.export, or call it from eager code."
    )


class LabelSmoothingLoss(nn.Module):
    """Cross-entropy with label smoothing; see `label_smoothing_loss`.

    Args:
        alpha: smoothing in ``[0, 1]``.
        weight: optional per-class weights ``(C,)``, kept as a buffer (in ``state_dict``).
        ignore_index: index targets equal to it are skipped.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        dim: the class dimension (``-1`` for ``(B, L, V)`` sequence logits).
        backend: ``"auto"``, ``"eager"`` or ``"triton"`` (see the function).

    Examples:
        >>> import torch
        >>> from lsdiffusion import LabelSmoothingLoss
        >>> criterion = LabelSmoothingLoss(alpha=0.1)
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
        >>> loss = criterion(logits, torch.tensor([0]))
        >>> loss.backward()
        >>> round(loss.item(), 4)
        0.3365
    """

    weight: Tensor | None

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: LSReduction = "mean",
        dim: int = 1,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_in_unit_interval("alpha", alpha)
        check_reduction(reduction, ("none", "mean", "sum"))
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(f"weight must be a torch.Tensor or None, got {type(weight).__name__}")
        if weight is not None and (weight.dim() != 1 or not weight.is_floating_point()):
            raise ValueError(
                "weight must be a 1-D floating-point tensor with one entry per class, got "
                f"shape {tuple(weight.shape)} and dtype {weight.dtype}"
            )
        if weight is not None and weight.requires_grad:
            raise ValueError(
                "weight requires grad, but the loss gives no gradient to the class weights; "
                "pass weight.detach()"
            )
        check_ignore_index(ignore_index)
        check_dim_type(dim)
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.reduction: LSReduction = reduction
        self.dim = dim
        self.backend: Backend = _check_backend(backend)
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the label-smoothing loss of ``logits`` against ``target``."""
        return label_smoothing_loss(
            logits,
            target,
            self.alpha,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            dim=self.dim,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, dim={self.dim}, backend={self.backend!r}"
        )

    def __prepare_scriptable__(self) -> NoReturn:
        """Refuse TorchScript with an error that says what to use instead."""
        _no_torchscript(type(self).__name__)


class KDLoss(nn.Module):
    """Hinton distillation loss with T² scaling; see [`kd_loss`][lsdiffusion.kd_loss].

    ``forward`` returns the loss; [`terms`][lsdiffusion.losses.KDLoss.terms] returns the loss
    together with its detached hard (label cross-entropy) and soft (T²·KL) parts for logging.

    Args:
        temperature: ``T > 0``, applied to both student and teacher.
        beta: weight of the distillation term; ``beta < 1`` needs a target.
        t2_scaling: multiply the KL term by ``T²``.
        ignore_index: target value marking rows/tokens to skip.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"``.
        dim: the class dimension.
        backend: ``"auto"``, ``"eager"`` or ``"triton"`` (see the function).

    Examples:
        >>> import torch
        >>> from lsdiffusion import KDLoss
        >>> criterion = KDLoss(temperature=1.0)
        >>> student = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
        >>> teacher = torch.tensor([[2.0, 0.0, 0.0]])
        >>> loss, hard, soft = criterion.terms(student, teacher)
        >>> round(loss.item(), 4), round(soft.item(), 4)
        (0.0616, 0.0616)
    """

    def __init__(
        self,
        temperature: float,
        *,
        beta: float = 1.0,
        t2_scaling: bool = True,
        ignore_index: int = -100,
        reduction: KDReduction = "batchmean",
        dim: int = 1,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_finite_positive("temperature", temperature)
        check_in_unit_interval("beta", beta)
        _check_kd_reduction(reduction)
        check_bool("t2_scaling", t2_scaling)
        check_ignore_index(ignore_index)
        check_dim_type(dim)
        self.backend: Backend = _check_backend(backend)
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.t2_scaling = t2_scaling
        self.ignore_index = ignore_index
        self.reduction: KDReduction = reduction
        self.dim = dim

    def terms(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | TopKTeacher,
        target: Tensor | None = None,
    ) -> KDTerms:
        """Return ``KDTerms(loss, hard, soft)``; only ``loss`` carries a gradient."""
        return kd_loss_terms(
            student_logits,
            teacher_logits,
            self.temperature,
            target=target,
            beta=self.beta,
            t2_scaling=self.t2_scaling,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            dim=self.dim,
            backend=self.backend,
        )

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | TopKTeacher,
        target: Tensor | None = None,
    ) -> Tensor:
        """Return the distillation loss (see [`kd_loss`][lsdiffusion.kd_loss])."""
        return self.terms(student_logits, teacher_logits, target).loss

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"temperature={self.temperature}, beta={self.beta}, "
            f"t2_scaling={self.t2_scaling}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, dim={self.dim}, backend={self.backend!r}"
        )

    def __prepare_scriptable__(self) -> NoReturn:
        """Refuse TorchScript with an error that says what to use instead."""
        _no_torchscript(type(self).__name__)


class FusedLinearKDLoss(nn.Module):
    """KD through the output heads, never holding the logits.

    See [`fused_linear_kd_loss`][lsdiffusion.fused_linear_kd_loss] for the math and the memory
    bound.

    Args:
        temperature: ``T > 0``.
        beta: weight of the distillation term; ``beta < 1`` needs a target.
        alpha: label smoothing of the hard term (the LS-teacher recipe).
        t2_scaling: multiply the KL term by ``T²``.
        ignore_index: target value marking tokens to skip (before the matmul).
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"``.
        chunk_size: tokens per chunk; ``None`` bounds the temporaries to 64 MiB or
            0.2 of one N×V logits tensor, whichever is larger.
        backend: ``"auto"``, ``"eager"`` or ``"triton"`` (the chunk kernels).

    Examples:
        >>> import torch
        >>> from lsdiffusion import FusedLinearKDLoss
        >>> criterion = FusedLinearKDLoss(temperature=1.0, beta=0.5, alpha=0.1)
        >>> h_s = torch.randn(2, 3, 4, requires_grad=True)  # (B, L, H) student states
        >>> w_s = torch.randn(10, 4, requires_grad=True)  # student head (V, H)
        >>> h_t, w_t = torch.randn(2, 3, 8), torch.randn(10, 8)  # a wider teacher
        >>> target = torch.tensor([[1, 2, -100], [3, -100, -100]])  # padding masked
        >>> criterion(h_s, w_s, h_t, w_t, target).backward()
        >>> w_s.grad.shape
        torch.Size([10, 4])

        A cached teacher takes the teacher head's place (no teacher forward):

        >>> from lsdiffusion import TopKTeacher
        >>> cached = TopKTeacher.from_logits(h_t @ w_t.T, k=4)
        >>> criterion(h_s, w_s, cached, None, target).backward()
    """

    def __init__(
        self,
        temperature: float,
        *,
        beta: float = 1.0,
        alpha: float = 0.0,
        t2_scaling: bool = True,
        ignore_index: int = -100,
        reduction: KDReduction = "batchmean",
        chunk_size: int | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_fused_linear_options(
            temperature, beta, alpha, reduction, t2_scaling, ignore_index, chunk_size, backend
        )
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.t2_scaling = t2_scaling
        self.ignore_index = ignore_index
        self.reduction: KDReduction = reduction
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    def forward(
        self,
        student_hidden: Tensor,
        student_weight: Tensor,
        teacher_hidden: Tensor | TopKTeacher,
        teacher_weight: Tensor | None,
        target: Tensor | None = None,
        student_bias: Tensor | None = None,
        teacher_bias: Tensor | None = None,
    ) -> Tensor:
        """Return the distillation loss of the two heads (see the function)."""
        return fused_linear_kd_loss(
            student_hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            self.temperature,
            student_bias=student_bias,
            teacher_bias=teacher_bias,
            target=target,
            beta=self.beta,
            alpha=self.alpha,
            t2_scaling=self.t2_scaling,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def __prepare_scriptable__(self) -> NoReturn:
        """Refuse TorchScript with an error that says what to use instead."""
        _no_torchscript(type(self).__name__)

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"temperature={self.temperature}, beta={self.beta}, alpha={self.alpha}, "
            f"t2_scaling={self.t2_scaling}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, chunk_size={self.chunk_size}, "
            f"backend={self.backend!r}"
        )


class FusedLinearLabelSmoothingLoss(nn.Module):
    """Label smoothing through the output head, never holding the logits.

    See [`fused_linear_label_smoothing_loss`][lsdiffusion.fused_linear_label_smoothing_loss]
    for the math and the memory bound.

    Args:
        alpha: smoothing in ``[0, 1]``.
        class_weight: optional per-class weights ``(V,)``, kept as a buffer.
        ignore_index: target value marking tokens to skip (before the matmul).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        chunk_size: tokens per chunk; ``None`` bounds the temporaries to 64 MiB or
            0.2 of one N×V logits tensor, whichever is larger.
        backend: ``"auto"``, ``"eager"`` or ``"triton"`` (the chunk kernels).

    Examples:
        >>> import torch
        >>> from lsdiffusion import FusedLinearLabelSmoothingLoss
        >>> criterion = FusedLinearLabelSmoothingLoss(alpha=0.1)
        >>> hidden = torch.randn(2, 3, 4, requires_grad=True)  # (B, L, H) final states
        >>> head = torch.nn.Linear(4, 10)  # V = 10
        >>> target = torch.tensor([[1, 2, -100], [3, -100, -100]])  # padding masked
        >>> criterion(hidden, head.weight, target, head.bias).backward()
        >>> head.weight.grad.shape
        torch.Size([10, 4])
    """

    class_weight: Tensor | None

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        class_weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: LSReduction = "mean",
        chunk_size: int | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_fused_linear_ls_options(alpha, reduction, ignore_index, chunk_size, backend)
        if class_weight is not None:
            if not isinstance(class_weight, Tensor) or class_weight.dim() != 1:
                got = (
                    f"shape {tuple(class_weight.shape)}"
                    if isinstance(class_weight, Tensor)
                    else type(class_weight).__name__
                )
                raise ValueError(f"class_weight must be a 1-D (V,) tensor or None, got {got}")
            if class_weight.requires_grad:
                raise ValueError(
                    "class_weight requires grad, but the loss gives no gradient to the class "
                    "weights; pass class_weight.detach()"
                )
        self.register_buffer("class_weight", class_weight)
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.reduction: LSReduction = reduction
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    def forward(
        self, hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        """Return the label-smoothing loss of the head's logits (see the function)."""
        return fused_linear_label_smoothing_loss(
            hidden,
            weight,
            target,
            self.alpha,
            bias=bias,
            class_weight=self.class_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def __prepare_scriptable__(self) -> NoReturn:
        """Refuse TorchScript with an error that says what to use instead."""
        _no_torchscript(type(self).__name__)

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, chunk_size={self.chunk_size}, "
            f"backend={self.backend!r}"
        )
