"""Feature capture (forward pre-hooks) and DataLoader feature collection."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lsdiffusion.centroids import ClassCentroids, class_centroids
from lsdiffusion.features import (
    FeatureBatch,
    FeatureCapture,
    capture_features,
    collect_features,
    find_final_linear,
    iter_features,
)


class TinyResNet(nn.Module):
    """Shaped like torchvision's ResNet: ... -> avgpool -> flatten -> fc."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(torch.relu(self.bn1(self.conv1(x)))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


class TinyMobileNet(nn.Module):
    """Shaped like torchvision's MobileNetV2: features -> pool -> classifier(Dropout, Linear)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class Wrapper(nn.Module):
    """Like DataParallel / DDP: the real model lives under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_find_final_linear():
    assert find_final_linear(TinyResNet())[0] == "fc"
    assert find_final_linear(TinyMobileNet())[0] == "classifier.1"
    assert find_final_linear(TinyMobileNet(), "classifier.1")[0] == "classifier.1"
    wrapped = Wrapper(TinyResNet())
    assert find_final_linear(wrapped)[0] == "module.fc"
    assert find_final_linear(wrapped, "fc")[0] == "module.fc"  # wrapper prefix tried
    net = TinyResNet()
    assert find_final_linear(net, net.fc) == ("fc", net.fc)
    with pytest.raises(ValueError, match=r"layer 'head' is not a submodule.*\['fc'\]"):
        find_final_linear(net, "head")
    with pytest.raises(ValueError, match=r"has no nn\.Linear"):
        find_final_linear(nn.Sequential(nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="not a submodule"):
        find_final_linear(net, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="layer must be"):
        find_final_linear(net, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        find_final_linear("resnet")  # type: ignore[arg-type]


@pytest.mark.parametrize("layer", [None, "fc"])
def test_capture_matches_manual_penultimate(device, layer):
    torch.manual_seed(0)
    net = TinyResNet().to(device).eval()
    x = torch.randn(6, 3, 8, 8, device=device)
    with capture_features(net, layer) as cap:
        logits = net(x)
    assert cap.layer_name == "fc"
    assert cap.features is not None
    torch.testing.assert_close(cap.features, net.penultimate(x))
    assert not cap.features.requires_grad
    torch.testing.assert_close(logits, net.fc(cap.features))
    assert len(net.fc._forward_pre_hooks) == 0  # removed on exit


def test_capture_mobilenet_and_no_grad():
    torch.manual_seed(0)
    net = TinyMobileNet().eval()
    x = torch.randn(3, 3, 9, 9)
    with torch.no_grad(), capture_features(net, "classifier.1") as cap:
        net(x)
        first = cap.pop()
        net(x[:2])
    assert first.shape == (3, 6)
    assert cap.features is not None
    assert cap.features.shape == (2, 6)  # the latest forward pass
    with pytest.raises(RuntimeError, match="was not called"):
        FeatureCapture(net).pop()


def test_capture_under_autocast():
    torch.manual_seed(0)
    net = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), capture_features(net) as cap:
        logits = net(x)
    assert cap.features is not None
    assert cap.features.shape == (2, 8)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(
        cap.features.float(), net.penultimate(x).float(), rtol=5e-2, atol=5e-2
    )


def test_hooks_removed_on_exception_and_reentry():
    net = TinyResNet()
    cap = capture_features(net)
    seen = []

    def fail():
        with cap:
            seen.append(len(net.fc._forward_pre_hooks))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert seen == [1]
    assert len(net.fc._forward_pre_hooks) == 0
    with cap:  # reusable after exit
        with pytest.raises(RuntimeError, match="already active"), cap:
            pass
        net(torch.randn(1, 3, 4, 4))
    assert len(net.fc._forward_pre_hooks) == 0
    cap.remove()  # idempotent


def test_capture_keeps_graph_when_detach_false():
    net = TinyResNet()
    with capture_features(net, detach=False) as cap:
        net(torch.randn(2, 3, 4, 4))
    assert cap.features is not None
    assert cap.features.requires_grad


def _loader(n=37, num_classes=5, batch_size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 6, 6, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False), x, y


def test_collect_features_shapes_and_values():
    torch.manual_seed(0)
    net = TinyResNet()
    net.train()
    net.bn1.eval()  # a mixed train/eval state must be restored exactly
    loader, x, y = _loader()
    out = collect_features(net, loader, progress=False)
    assert isinstance(out, FeatureBatch)
    assert out.features.shape == (37, 8)
    assert out.logits.shape == (37, 5)
    assert torch.equal(out.labels, y)
    assert out.labels.dtype == torch.int64
    assert net.training
    assert not net.bn1.training
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(out.features, net.penultimate(x))
        torch.testing.assert_close(out.logits, net(x))
    assert len(net.fc._forward_pre_hooks) == 0
    part = collect_features(net, loader, progress=False, max_batches=2)
    assert part.features.shape == (16, 8)


def test_iter_features_streams_into_centroids(capsys):
    net = TinyResNet()
    loader, _, _ = _loader(num_classes=5)
    acc = ClassCentroids(5)
    for batch in iter_features(net, loader, progress=True, desc="test"):
        assert torch.is_grad_enabled()  # no_grad only wraps the forward pass
        acc.update(batch.features, batch.labels)
    full = collect_features(net, loader, progress=False)
    torch.testing.assert_close(acc.compute(), class_centroids(full.features, full.labels, 5))


def test_iter_features_early_stop_removes_hook():
    net = TinyResNet()
    loader, _, _ = _loader()
    gen = iter_features(net, loader, progress=False)
    next(gen)
    assert len(net.fc._forward_pre_hooks) == 1
    assert not net.training
    gen.close()
    assert len(net.fc._forward_pre_hooks) == 0
    assert net.training


def test_collect_features_model_outputs_and_errors():
    class HFLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            class Out:
                logits = self.head(x)

            return Out()

    data = [(torch.randn(2, 4), torch.tensor([0, 2])), (torch.randn(3, 4), [1, 1, 0])]
    out = collect_features(HFLike(), data, progress=False)
    assert out.logits.shape == (5, 3)
    assert out.labels.tolist() == [0, 2, 1, 1, 0]

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return {"out": self.fc(x)}

    with pytest.raises(TypeError, match="expected a logits tensor"):
        collect_features(Bad(), data, progress=False)
    with pytest.raises(TypeError, match=r"\(inputs, labels, \.\.\.\) tuple"):
        collect_features(HFLike(), [torch.randn(2, 4)], progress=False)
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        collect_features(HFLike(), [(torch.randn(2, 4), torch.tensor([0]))], progress=False)
    with pytest.raises(ValueError, match="yielded no batch"):
        collect_features(HFLike(), [], progress=False)


def test_labels_are_checked_like_class_centroids():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(4, 4)
    cases = [
        (torch.tensor([0.0, 1.7, 2.0, 0.0]), TypeError, "labels must have an integer dtype"),
        ([0.0, 1.7, 2.0, 0.0], TypeError, "labels must have an integer dtype"),  # never truncated
        (torch.tensor([True, False, True, True]), TypeError, "integer dtype, got torch.bool"),
        (torch.tensor([0, 1, 3, 0]), ValueError, r"labels must be in \[0, 2\] \(num_classes=3\)"),
        (torch.tensor([0, -1, 2, 0]), ValueError, r"labels must be in \[0, 2\]"),
        (torch.zeros(4, 1, dtype=torch.long), ValueError, r"labels must be \(N,\)"),
    ]
    for labels, error, match in cases:
        with pytest.raises(error, match=match):
            collect_features(net, [(x, labels)])
        # ClassCentroids rejects the same labels
        features = torch.randn(4, 6)
        with pytest.raises((TypeError, ValueError)):
            ClassCentroids(3).update(features, torch.as_tensor(labels))


def test_progress_is_off_unless_asked(capsys):
    net = TinyResNet()
    loader, _, _ = _loader()
    collect_features(net, loader)
    assert capsys.readouterr().err == ""
    collect_features(net, loader, progress=True)
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"features: {len(loader)}/{len(loader)} batches")
