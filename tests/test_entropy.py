"""Target entropy against scipy.stats.entropy, and the streaming accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from lsdiffusion.entropy import EntropyReport, TargetEntropy, target_entropy


def scipy_entropy(logits: np.ndarray, temperature: float, axis: int = 1) -> np.ndarray:
    p = scipy.special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=axis)
    return scipy.stats.entropy(p, axis=axis)


@pytest.mark.parametrize("k", [1, 2, 10, 200, 1000])
def test_uniform_logits_give_ln_k(device, dtype, k):
    for value in (0.0, 37.0, -1e4):
        z = torch.full((3, k), value, dtype=dtype, device=device)
        for t in (0.5, 1.0, 64.0):
            h = target_entropy(z, temperature=t)
            assert h.dtype == dtype
            assert h.item() == pytest.approx(math.log(k), abs=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.0, 64.0])
def test_matches_scipy(device, dtype, tol, temperature):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=4.0, size=(64, 30))
    zt = torch.from_numpy(z).to(dtype).to(device)
    want = scipy_entropy(z, temperature)
    got = target_entropy(zt, temperature=temperature, reduction="none")
    assert got.shape == (64,)
    np.testing.assert_allclose(
        got.cpu().numpy(), want, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10
    )
    mean = target_entropy(zt, temperature=temperature)
    assert mean.shape == ()
    assert mean.item() == pytest.approx(want.mean(), rel=tol["rtol"] * 10, abs=tol["atol"] * 10)
    total = target_entropy(zt, temperature=temperature, reduction="sum")
    assert total.item() == pytest.approx(want.sum(), rel=tol["rtol"] * 10, abs=1e-4)


def test_other_dims_and_shapes():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 7, 5))  # (N, K, L): classes on dim 1
    got = target_entropy(torch.from_numpy(z), temperature=2.0, reduction="none")
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got.numpy(), scipy_entropy(z, 2.0, axis=1), rtol=1e-12)
    got_last = target_entropy(torch.from_numpy(z), temperature=2.0, dim=-1, reduction="none")
    assert got_last.shape == (4, 7)
    np.testing.assert_allclose(got_last.numpy(), scipy_entropy(z, 2.0, axis=-1), rtol=1e-12)
    mean = target_entropy(torch.from_numpy(z), dim=2)
    assert mean.item() == pytest.approx(scipy_entropy(z, 1.0, axis=2).mean(), rel=1e-12)


def test_extreme_and_masked_logits():
    z = torch.tensor([[100.0, -100.0, 0.0], [1e4, 0.0, -1e4]], dtype=torch.float32)
    h = target_entropy(z, reduction="none")
    assert torch.isfinite(h).all()
    np.testing.assert_allclose(h.numpy(), scipy_entropy(z.double().numpy(), 1.0), atol=1e-6)
    # -inf (masked) classes contribute 0: same as dropping them
    masked = torch.tensor([[1.0, -math.inf, 2.0, 0.5]])
    want = scipy_entropy(np.array([[1.0, 2.0, 0.5]]), 3.0)
    assert target_entropy(masked, temperature=3.0).item() == pytest.approx(want[0], rel=1e-6)
    assert target_entropy(masked, temperature=1e-3).item() == pytest.approx(0.0, abs=1e-6)


def test_half_precision_inputs():
    z = torch.randn(8, 50) * 3
    want = target_entropy(z, temperature=2.0)
    for dt in (torch.float16, torch.bfloat16):
        got = target_entropy(z.to(dt), temperature=2.0)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(want.item(), rel=2e-2)


def test_errors():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        target_entropy(z, temperature=0.0)
    with pytest.raises(TypeError, match="temperature must be a positive float"):
        target_entropy(z, temperature="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        target_entropy(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"logits must be a torch\.Tensor"):
        target_entropy(np.zeros((3, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        target_entropy(z, dim=2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        target_entropy(z, reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        target_entropy(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="all -inf"):
        target_entropy(torch.full((1, 3), -math.inf))
    with pytest.raises(ValueError, match="no rows"):
        target_entropy(torch.zeros(0, 3))
    assert target_entropy(torch.zeros(0, 3), reduction="none").shape == (0,)


def test_streaming_matches_one_shot(device, dtype):
    rng = np.random.default_rng(2)
    z = torch.from_numpy(rng.normal(scale=3, size=(301, 20))).to(dtype).to(device)
    acc = TargetEntropy()
    assert acc.temperatures == (1.0, 2.0, 3.0, 64.0)
    for start in range(0, 301, 64):
        acc.update(z[start : start + 64])
    report = acc.compute()
    assert isinstance(report, EntropyReport)
    assert report.num_samples == 301
    assert report.num_classes == 20
    assert report.max_entropy == pytest.approx(math.log(20))
    for t, h in report.as_dict().items():
        want = scipy_entropy(z.double().cpu().numpy(), t).mean()
        assert h == pytest.approx(want, rel=1e-5)
        assert report[t] == h
    assert all(0 < r <= 1 for r in report.normalized)
    assert report.entropy == tuple(sorted(report.entropy))  # smoother with T
    text = str(report)
    assert "ln K" in text
    assert "64" in text
    with pytest.raises(KeyError, match="not tracked"):
        report[5.0]
    assert acc.compute() == report  # repeatable


def test_streaming_merge_reset_and_errors():
    z = torch.randn(40, 6)
    a = TargetEntropy((1, 2))
    b = TargetEntropy((1, 2))
    a.update(z[:10])
    b.update(z[10:])
    a.merge(b, TargetEntropy((1, 2)))
    whole = TargetEntropy((1, 2))
    whole.update(z)
    assert a.compute().entropy == pytest.approx(whole.compute().entropy, rel=1e-12)
    with pytest.raises(ValueError, match="cannot merge temperatures"):
        a.merge(TargetEntropy((1, 3)))
    other = TargetEntropy((1, 2))
    other.update(torch.randn(2, 7))
    with pytest.raises(ValueError, match="K=7"):
        a.merge(other)
    with pytest.raises(TypeError, match="can only merge"):
        a.merge(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"6 classes along dim=1.*got shape \(2, 7\)"):
        a.update(torch.randn(2, 7))
    a.reset()
    with pytest.raises(RuntimeError, match="seen no logits"):
        a.compute()
    assert "samples=0" in repr(a)
    with pytest.raises(ValueError, match="must be distinct"):
        TargetEntropy((1, 1))
    with pytest.raises(ValueError, match="must not be empty"):
        TargetEntropy(())
    with pytest.raises(ValueError, match="finite and > 0"):
        TargetEntropy((1, -2))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        TargetEntropy(num_classes=0)
    single = TargetEntropy((1,), num_classes=1)
    single.update(torch.zeros(2, 1))
    assert single.compute().normalized == (pytest.approx(math.nan, nan_ok=True),)


# issue 16 item 16: arguments taken without a check or with an unhelpful message


@pytest.mark.parametrize("dim", [1.5, "1", True])
def test_target_entropy_accumulator_rejects_a_non_int_dim(dim):
    with pytest.raises(TypeError, match="dim must be an int"):
        TargetEntropy([1.0], dim=dim)


def test_one_temperature_without_a_sequence_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"pass \(2\.0,\)"):
        TargetEntropy(2.0)  # type: ignore[arg-type]


def test_tiny_temperatures_give_the_one_hot_limit_or_a_clear_error():
    z = torch.tensor([[0.0, 1.0, 3.0], [2.0, -1.0, 0.5]])
    # 1/T overflows float32 but the limit T -> 0 is the one-hot distribution: entropy 0
    assert target_entropy(z, 1e-39).item() == 0.0
    with pytest.raises(ValueError, match="so that 1/T is finite"):
        target_entropy(z, 1e-320)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        (torch.tensor(2.0), r"pass \(2\.0,\)"),  # not "(tensor(2.),)", itself refused
        (3, r"pass \(3\.0,\)"),
    ],
)
def test_one_bare_temperature_suggests_a_tuple_that_works(given, hint):
    with pytest.raises(TypeError, match=hint) as info:
        TargetEntropy(given)  # type: ignore[arg-type]
    suggested = str(info.value).rsplit("pass ", 1)[1]
    TargetEntropy(eval(suggested))  # the suggestion is accepted


def test_a_string_of_temperatures_is_not_told_to_become_a_tuple_of_strings():
    with pytest.raises(TypeError, match="got str '12'") as info:
        TargetEntropy("12")  # type: ignore[arg-type]
    assert "('12',)" not in str(info.value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (torch.tensor([1.0, 2.0]), r"temperatures\[0\] must be a number, got Tensor tensor\(1\.\)"),
        ([1.0, "2"], r"temperatures\[1\] must be a number, got str '2'"),
        ([1.0, None], r"temperatures\[1\] must be a number, got NoneType None"),
    ],
)
def test_a_bad_temperature_in_the_list_is_named_by_position(given, message):
    with pytest.raises(TypeError, match=message):
        TargetEntropy(given)


def test_too_small_temperatures_are_refused_when_constructed():
    """1/T beyond float64: refused at construction (naming `temperatures`), not at update()."""
    with pytest.raises(ValueError, match=r"temperatures must be at least .*got 1e-320"):
        TargetEntropy([1.0, 1e-320])
    assert TargetEntropy([1e-39]).temperatures == (1e-39,)  # float64 handles it
