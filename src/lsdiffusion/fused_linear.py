r"""The fused linear losses: a loss of ``h @ W.T + b`` that never holds the logits.

[`fused_linear_kd_loss`][lsdiffusion.fused_linear_kd_loss] distils through the
student's (and the teacher's, or a cached teacher's) output head, and
[`fused_linear_label_smoothing_loss`][lsdiffusion.fused_linear_label_smoothing_loss]
is the LS teacher's own loss through its head. Both validate their arguments
here and hand flat ``(N, H)`` heads to the chunked engine
(`lsdiffusion._kernels.chunked`), which processes the tokens a chunk at a time
on every device. They are re-exported by `lsdiffusion.functional` beside the
token-level losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lsdiffusion._kernels.base import BackendName, compute_dtype
from lsdiffusion._kernels.select import resolve
from lsdiffusion._validation import (
    Backend,
    KDReduction,
    LSReduction,
    check_class_weight,
    check_fused_linear_ls_options,
    check_fused_linear_options,
    check_target_range,
)
from lsdiffusion.teachers import TopKTeacher

__all__ = ["fused_linear_kd_loss", "fused_linear_label_smoothing_loss"]


def _check_hidden(name: str, hidden: object) -> Tensor:
    if not isinstance(hidden, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(hidden).__name__}")
    if not hidden.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {hidden.dtype}")
    if hidden.dim() not in (2, 3):
        raise ValueError(f"{name} must be (N, H) or (B, L, H), got shape {tuple(hidden.shape)}")
    return hidden


def _check_head(name: str, weight: object, bias: object, hidden: Tensor, bias_name: str) -> None:
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        got = (
            f"shape {tuple(weight.shape)}, dtype {weight.dtype}"
            if isinstance(weight, Tensor)
            else type(weight).__name__
        )
        raise ValueError(f"{name} must be a 2-D floating-point (V, H) tensor, got {got}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{name} must be (V, H) with H = {hidden.shape[-1]} (the hidden size), "
            f"got shape {tuple(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(
            f"{name} is on {weight.device} but the hidden states are on {hidden.device}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(
            f"{name} must have the hidden states' dtype {hidden.dtype} (the matmul runs in it), "
            f"got {weight.dtype}"
        )
    if bias is None:
        return
    if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],):
        got = f"shape {tuple(bias.shape)}" if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{bias_name} must be a ({weight.shape[0]},) tensor or None, got {got}")
    if bias.dtype != hidden.dtype:
        raise TypeError(
            f"{bias_name} must have the hidden states' dtype {hidden.dtype}, got {bias.dtype}"
        )


def _fused_target(
    target: object, token_shape: torch.Size, hidden: Tensor, vocab: int, ignore_index: int
) -> tuple[Tensor, Tensor | None]:
    """Flat class-index targets of a fused loss, and the kept tokens' mask (None: all kept).

    Ignored tokens' targets are set to class 0 (their rows are dropped or masked).
    """
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex():
        got = f"dtype {target.dtype}" if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"target must be an integer tensor of class indices, got {got}")
    if target.dtype == torch.bool:
        raise TypeError("target must be an integer tensor of class indices, got dtype torch.bool")
    if target.shape != token_shape:
        raise ValueError(
            f"target must have the token shape {tuple(token_shape)}, got {tuple(target.shape)}"
        )
    if target.device != hidden.device:
        raise ValueError(
            f"target is on {target.device} but the hidden states are on {hidden.device}"
        )
    flat, may_ignore = check_target_range(target.reshape(-1).long(), vocab, ignore_index, "target")
    if not may_ignore:
        return flat, None
    valid = flat != ignore_index
    return torch.where(valid, flat, 0), valid


def _fused_backend(backend: str, hidden: Tensor) -> tuple[BackendName, bool]:
    """The chunk kernels' implementation, and whether a Triton failure falls back."""
    return resolve(backend, hidden), backend == "auto"


def fused_linear_kd_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor | TopKTeacher,
    teacher_weight: Tensor | None,
    temperature: float,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    target: Tensor | None = None,
    beta: float = 1.0,
    alpha: float = 0.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    r"""Knowledge distillation through the output heads, without ever holding the logits.

    The value is exactly [`kd_loss`][lsdiffusion.kd_loss] of
    $s = h_s W_s^\top + b_s$ against $t = h_t W_t^\top + b_t$
    ($T^2$ convention, ``batchmean`` over the non-ignored tokens), with
    ``target`` and ``beta < 1`` mixing in a hard term that ``alpha > 0``
    label-smooths (the LS-teacher recipe):

    $$
    \mathcal{L} = (1-\beta)\,\ell_{LS(\alpha)}(y, s) + \beta\,T^2\,
    \mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big).
    $$

    The teacher may instead be a cached [`TopKTeacher`][lsdiffusion.TopKTeacher]
    (pass it as ``teacher_hidden`` with ``teacher_weight=None``): then no teacher
    head runs at all, and the soft term is the cached teacher's
    ([`kd_loss`][lsdiffusion.kd_loss] with that teacher, either tail rule).

    The tokens are processed ``chunk_size`` rows at a time: each chunk's logits
    are computed (matmul in the input dtype, softmax in float32), its loss and
    the gradients with respect to ``student_hidden``, ``student_weight`` and
    ``student_bias`` are accumulated, and the chunk's logits are dropped. With
    ``chunk_size=None`` the chunk temporaries take at most 64 MiB or 0.2 of
    one $N \times V$ logits tensor, whichever is larger, instead of the two or
    more logits tensors of the unfused loss. The same chunked loop runs on
    every device: on CUDA each chunk's loss and gradient come from the Triton
    kernels (``backend="auto"``), and a CPU tensor takes exactly that path with
    ``backend="triton"`` under ``TRITON_INTERPRET=1``. Half-precision heads
    accumulate the weight gradient in float32 when that buffer takes at most
    half of that budget, otherwise in their own dtype (one rounding per chunk,
    as Liger-Kernel does). Tokens whose target is ``ignore_index`` are dropped
    before the matmuls: with a ``target`` on an accelerator, finding them reads
    the mask on the host, the one synchronisation a call makes (none without a
    ``target``). The teacher receives no gradient.

    Every autograd mode of [`kd_loss`][lsdiffusion.kd_loss] works: ``create_graph=True``,
    ``torch.func`` transforms, forward mode and ``torch.compile`` run the
    unfused formula (correct, but with the unfused memory). Under autocast the
    matmuls run in the autocast dtype.

    Args:
        student_hidden: ``(N, H)`` or ``(B, L, H)`` inputs of the student's head.
        student_weight: the student's head weight ``(V, H)``.
        teacher_hidden: ``(N, H_t)`` or ``(B, L, H_t)`` (the teacher may be wider),
            or a `TopKTeacher` whose indices are ``(N, k)`` or ``(B, L, k)``.
        teacher_weight: ``(V, H_t)``; ``None`` with a `TopKTeacher`.
        temperature: $T > 0$.
        student_bias: optional ``(V,)``.
        teacher_bias: optional ``(V,)`` (not with a `TopKTeacher`).
        target: optional class indices ``(N,)`` or ``(B, L)``.
        beta: weight of the distillation term in ``[0, 1]``.
        alpha: label smoothing of the hard term in ``[0, 1]``.
        t2_scaling: multiply the KL term by $T^2$.
        ignore_index: target value marking tokens to skip.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"`` (one value per token).
        chunk_size: tokens per chunk; ``None`` picks the budget above.
        backend: ``"auto"`` (Triton chunk kernels for CUDA tensors when ``triton``
            is importable, else the eager engine), ``"eager"`` or ``"triton"``, as
            for [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss]. A cached
            teacher has one implementation (device-agnostic PyTorch ops, no host
            reads) and takes ``"auto"`` or ``"eager"``.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from lsdiffusion import TopKTeacher, fused_linear_kd_loss, kd_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h_s, w_s = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
        >>> h_t, w_t = torch.randn(6, 8, generator=g), torch.randn(10, 8, generator=g)
        >>> loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, 2.0, chunk_size=4)
        >>> bool(torch.isclose(loss, kd_loss(h_s @ w_s.T, h_t @ w_t.T, 2.0)))
        True
        >>> cached = TopKTeacher.from_logits(h_t @ w_t.T, k=3)  # no teacher head needed
        >>> loss = fused_linear_kd_loss(h_s, w_s, cached, None, 2.0)
        >>> bool(torch.isclose(loss, kd_loss(h_s @ w_s.T, cached, 2.0, dim=-1)))
        True
    """
    # Long on purpose: the checks of two teacher kinds (a head, a cached TopKTeacher) and the
    # chunk loss each binds, read top to bottom.
    from lsdiffusion._kernels.chunked.fused_linear import Head, fused_linear_rows
    from lsdiffusion._kernels.chunked.losses import ChunkLoss, KDChunks, TopKChunks

    check_fused_linear_options(
        temperature, beta, alpha, reduction, t2_scaling, ignore_index, chunk_size, backend
    )
    h_s = _check_hidden("student_hidden", student_hidden)
    cached = isinstance(teacher_hidden, TopKTeacher)
    if not cached:
        h_t = _check_hidden("teacher_hidden", teacher_hidden)
        if h_t.shape[:-1] != h_s.shape[:-1]:
            raise ValueError(
                "teacher_hidden must have the student's token dims "
                f"{tuple(h_s.shape[:-1])} (+ its own hidden size), got {tuple(h_t.shape)}"
            )
        if h_t.device != h_s.device:
            raise ValueError(
                f"teacher_hidden is on {h_t.device} but student_hidden is on {h_s.device}"
            )
    _check_head("student_weight", student_weight, student_bias, h_s, "student_bias")
    vocab = student_weight.shape[0]
    token_shape = h_s.shape[:-1]
    h = h_s.reshape(-1, h_s.shape[-1])

    y: Tensor | None = None
    valid: Tensor | None = None
    if target is None:
        if beta < 1.0:
            raise ValueError(
                f"beta={beta} < 1 mixes in a hard-label term, which needs target; "
                "pass target=... or use beta=1.0 for pure distillation"
            )
    else:
        y, valid = _fused_target(target, token_shape, h, vocab, ignore_index)
    loss: ChunkLoss
    if isinstance(teacher_hidden, TopKTeacher):
        from lsdiffusion._kernels.topk import flatten_cached

        if teacher_weight is not None or teacher_bias is not None:
            raise ValueError(
                "a TopKTeacher needs no teacher head: pass teacher_weight=None "
                "(and no teacher_bias)"
            )
        if backend == "triton":
            raise ValueError(
                "a cached TopKTeacher has no Triton kernel (it runs as device-agnostic "
                "PyTorch ops on every device): use backend='auto' or 'eager'"
            )
        flat_teacher = flatten_cached(
            teacher_hidden,
            (*token_shape, vocab),
            -1 % (len(token_shape) + 1),
            h.device,
            compute_dtype(h),
            described=f"the student's token dims {tuple(token_shape)} with k classes last",
            other="student_hidden",
        )
        loss = TopKChunks(
            indices=flat_teacher.indices, values=flat_teacher.values,
            bucket=flat_teacher.bucket, log_r=flat_teacher.log_r, target=y,
            temperature=float(temperature), t2=t2_scaling, beta=float(beta),
            alpha=float(alpha), backend="eager", fallback=False,
        )  # fmt: skip
    else:
        if teacher_weight is None:
            raise ValueError(
                "teacher_weight must be the teacher's (V, H_t) head weight; None is only "
                "for a cached TopKTeacher passed as teacher_hidden"
            )
        _check_head("teacher_weight", teacher_weight, teacher_bias, h_t, "teacher_bias")
        if teacher_weight.shape[0] != vocab:
            raise ValueError(
                "student_weight and teacher_weight must have the same vocabulary V, got "
                f"{vocab} and {teacher_weight.shape[0]}"
            )
        b_t = None if teacher_bias is None else teacher_bias.detach()
        teacher = Head(h_t.detach().reshape(-1, h_t.shape[-1]), teacher_weight.detach(), b_t)
        impl, fallback = _fused_backend(backend, h)
        loss = KDChunks(
            teacher=teacher, target=y, temperature=float(temperature), t2=t2_scaling,
            beta=float(beta), alpha=float(alpha), backend=impl, fallback=fallback,
        )  # fmt: skip
    out = fused_linear_rows(
        Head(h, student_weight, student_bias),
        loss,
        valid,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    return out.reshape(token_shape) if reduction == "none" else out


def fused_linear_label_smoothing_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    alpha: float = 0.1,
    *,
    bias: Tensor | None = None,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: LSReduction = "mean",
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    r"""Label smoothing through the output head, without ever holding the logits.

    Exactly [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss] of the
    logits $z = h W^\top + b$ against class indices, in value and in the
    gradients of ``hidden``, ``weight`` and ``bias``:

    $$
    \ell = -\sum_k w_k\, y^{LS}_k \log \mathrm{softmax}(z)_k, \qquad
    y^{LS} = (1-\alpha)\,\mathrm{onehot}(y) + \alpha / V,
    $$

    ``"mean"`` dividing by the number of kept tokens (by $\sum_i w_{y_i}$ with
    class weights, as ``F.cross_entropy``). This is the LS teacher's own loss at
    a large vocabulary (the paper's NMT teachers are Transformers trained with
    $\alpha = 0.1$); it plays the part of
    ``torch.nn.functional.linear_cross_entropy(..., label_smoothing=alpha)``.

    Chunking, memory, devices and backends are those of
    [`fused_linear_kd_loss`][lsdiffusion.fused_linear_kd_loss]: the chunk
    temporaries take at most 64 MiB or 0.2 of one $N \times V$ logits tensor,
    the same loop runs on every device (Triton chunk kernels on CUDA with
    ``backend="auto"``; ``backend="triton"`` under ``TRITON_INTERPRET=1`` on the
    CPU), ignored tokens are dropped before the matmuls, and
    ``create_graph=True``, ``torch.func``, forward mode and ``torch.compile``
    run the unfused formula.

    Args:
        hidden: ``(N, H)`` or ``(B, L, H)`` inputs of the head.
        weight: the head weight ``(V, H)``.
        target: class indices ``(N,)`` or ``(B, L)``.
        alpha: smoothing in ``[0, 1]``.
        bias: optional ``(V,)``.
        class_weight: optional per-class weights ``(V,)`` (``weight`` of
            [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss]).
        ignore_index: target value marking tokens to skip.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per token).
        chunk_size: tokens per chunk; ``None`` picks the budget above.
        backend: ``"auto"``, ``"eager"`` or ``"triton"``.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from lsdiffusion import fused_linear_label_smoothing_loss, label_smoothing_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h, w = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
        >>> y = torch.tensor([1, 2, 3, -100, 5, 9])
        >>> loss = fused_linear_label_smoothing_loss(h, w, y, 0.1, chunk_size=4)
        >>> bool(torch.isclose(loss, label_smoothing_loss(h @ w.T, y, 0.1)))
        True
    """
    from lsdiffusion._kernels.chunked.fused_linear import Head, fused_linear_rows
    from lsdiffusion._kernels.chunked.losses import LSChunks

    check_fused_linear_ls_options(alpha, reduction, ignore_index, chunk_size, backend)
    hs = _check_hidden("hidden", hidden)
    _check_head("weight", weight, bias, hs, "bias")
    vocab = weight.shape[0]
    token_shape = hs.shape[:-1]
    h = hs.reshape(-1, hs.shape[-1])
    y, valid = _fused_target(target, token_shape, h, vocab, ignore_index)
    w = check_class_weight(class_weight, vocab, h, name="class_weight")
    denominator: Tensor | None = None
    if w is not None:
        w_y = w[y]
        denominator = (w_y if valid is None else torch.where(valid, w_y, 0.0)).sum()
    impl, fallback = _fused_backend(backend, h)
    loss = LSChunks(target=y, alpha=float(alpha), weight=w, backend=impl, fallback=fallback)
    out = fused_linear_rows(
        Head(h, weight, bias),
        loss,
        valid,
        reduction=reduction,
        chunk_size=chunk_size,
        denominator=denominator,
    )
    return out.reshape(token_shape) if reduction == "none" else out
