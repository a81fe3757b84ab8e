"""The nn.Module wrappers equal the functions and behave as modules should."""

from __future__ import annotations

import pytest
import torch

from lsdiffusion import KDLoss, LabelSmoothingLoss, kd_loss, kd_loss_terms, label_smoothing_loss


def test_label_smoothing_module_equals_function():
    x = torch.randn(6, 4, 3)
    target = torch.randint(0, 4, (6, 3))
    weight = torch.rand(4)
    module = LabelSmoothingLoss(0.2, weight=weight, reduction="sum")
    torch.testing.assert_close(
        module(x, target), label_smoothing_loss(x, target, 0.2, weight=weight, reduction="sum")
    )


def test_kd_module_equals_function_and_terms():
    s, t = torch.randn(5, 7, 6), torch.randn(5, 7, 6)
    target = torch.randint(0, 6, (5, 7))
    target[0] = -100
    module = KDLoss(2.0, beta=0.5, dim=-1)
    torch.testing.assert_close(
        module(s, t, target), kd_loss(s, t, 2.0, target=target, beta=0.5, dim=-1)
    )
    terms = module.terms(s, t, target)
    ref = kd_loss_terms(s, t, 2.0, target=target, beta=0.5, dim=-1)
    for a, b in zip(terms, ref, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(terms.loss, 0.5 * terms.hard + 0.5 * terms.soft)


def test_weight_is_a_persistent_buffer_like_cross_entropy_loss():
    weight = torch.tensor([1.0, 2.0, 3.0])
    module = LabelSmoothingLoss(weight=weight)
    assert "weight" in dict(module.named_buffers())
    torch.testing.assert_close(module.state_dict()["weight"], weight)
    assert set(module.state_dict()) == set(torch.nn.CrossEntropyLoss(weight=weight).state_dict())
    # a checkpoint restores the weight into a fresh module
    fresh = LabelSmoothingLoss(weight=torch.ones(3))
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh.weight, weight)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(fresh(x, y), module(x, y))
    moved = module.to(torch.float64)
    assert moved.weight is not None
    assert moved.weight.dtype == torch.float64


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: LabelSmoothingLoss(alpha=2.0), "alpha must be in"),
        (lambda: LabelSmoothingLoss(reduction="batchmean"), "reduction must be one of"),
        (lambda: LabelSmoothingLoss(weight=torch.ones(2, 2)), "weight must be a 1-D"),
        (lambda: KDLoss(0.0), "temperature must be finite and > 0"),
        (lambda: KDLoss(2.0, beta=-1.0), "beta must be in"),
        (lambda: KDLoss(2.0, reduction="mean"), "batchmean"),
        (lambda: KDLoss(2.0, ignore_index=2**70), "ignore_index must fit in int64"),
        (
            lambda: LabelSmoothingLoss(weight=torch.ones(3, requires_grad=True)),
            "weight requires grad",
        ),
    ],
)
def test_modules_validate_in_init(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: KDLoss(2.0, t2_scaling="no"), "t2_scaling must be a bool"),
        (lambda: KDLoss(2.0, ignore_index=None), "ignore_index must be an int"),
        (lambda: KDLoss(2.0, dim=1.0), "dim must be an int"),
        (lambda: LabelSmoothingLoss(dim=True), "dim must be an int"),
        (lambda: LabelSmoothingLoss(ignore_index=1.5), "ignore_index must be an int"),
    ],
)
def test_modules_type_check_in_init(factory, match):
    with pytest.raises(TypeError, match=match):
        factory()


def test_repr_mentions_configuration():
    assert "alpha=0.1" in repr(LabelSmoothingLoss())
    text = repr(KDLoss(4.0, dim=-1, ignore_index=0))
    for part in ("temperature=4.0", "dim=-1", "ignore_index=0", "t2_scaling=True"):
        assert part in text


@pytest.mark.parametrize("module", [LabelSmoothingLoss(), KDLoss(2.0)])
def test_torchscript_is_refused_with_a_pointer(module):
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script.*torch\.compile"):
        torch.jit.script(module)


def test_module_rejects_non_tensor_weight():
    with pytest.raises(TypeError, match=r"weight must be a torch\.Tensor or None, got list"):
        LabelSmoothingLoss(weight=[1.0, 2.0])


def test_fused_linear_kd_module_refuses_torchscript_clearly():
    """Issue 16 item 16: the library's message, not a raw NotSupportedError."""
    from lsdiffusion import FusedLinearKDLoss

    with pytest.raises(RuntimeError, match=r"cannot be compiled with torch\.jit\.script"):
        torch.jit.script(FusedLinearKDLoss(2.0))
