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
    with FeatureCapture(net, layer) as cap:
        logits = net(x)
    assert cap.layer_name == "fc"
    assert cap.features is not None
    torch.testing.assert_close(cap.features, net.penultimate(x))
    assert not cap.features.requires_grad
    torch.testing.assert_close(logits, net.fc(cap.features))
    assert hooks(net) == 0  # removed on exit


def test_capture_mobilenet_and_no_grad():
    torch.manual_seed(0)
    net = TinyMobileNet().eval()
    x = torch.randn(3, 3, 9, 9)
    with torch.no_grad(), FeatureCapture(net, "classifier.1") as cap:
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
    with torch.autocast("cpu", dtype=torch.bfloat16), FeatureCapture(net) as cap:
        logits = net(x)
    assert cap.features is not None
    assert cap.features.shape == (2, 8)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(
        cap.features.float(), net.penultimate(x).float(), rtol=5e-2, atol=5e-2
    )


def test_hooks_removed_on_exception_and_reentry():
    net = TinyResNet()
    cap = FeatureCapture(net)
    seen = []

    def fail():
        with cap:
            seen.append(hooks(net))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert seen == [3]  # the layer's hook and the first-forward check (every Linear, root)
    assert hooks(net) == 0
    with cap:  # reusable after exit
        with pytest.raises(RuntimeError, match="already active"), cap:
            pass
        net(torch.randn(1, 3, 4, 4))
    assert hooks(net) == 0
    cap.remove()  # idempotent


def test_capture_keeps_graph_when_detach_false():
    net = TinyResNet()
    with FeatureCapture(net, detach=False) as cap:
        net(torch.randn(2, 3, 4, 4))
    assert cap.features is not None
    assert cap.features.requires_grad


def hooks(model: nn.Module) -> int:
    """Forward hooks and pre-hooks attached anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


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
    assert hooks(net) == 0
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


def test_iter_features_restores_model_between_batches():
    """Issue 16.7: the model is untouched while the generator is suspended or abandoned."""
    net = TinyResNet()
    loader, x, _ = _loader()
    gen = iter_features(net, loader, progress=False)
    next(gen)  # partial consumption, generator still alive
    assert hooks(net) == 0
    assert net.training
    assert all(m.training for m in net.modules())
    for _ in iter_features(net, loader):
        break  # the generator object is not collected yet (held by nothing, but no gc)
    assert hooks(net) == 0
    assert net.training
    # BatchNorm statistics update in a later training forward.
    before = net.bn1.running_mean.clone()
    net(x[:8])
    assert not torch.equal(before, net.bn1.running_mean)
    gen.close()
    assert net.training


def test_iter_features_checks_max_batches():
    net = TinyResNet()
    loader, _, _ = _loader()
    with pytest.raises(ValueError, match=r"max_batches must be >= 1.*got -1"):
        iter_features(net, loader, max_batches=-1)
    with pytest.raises(ValueError, match=r"max_batches must be >= 1.*got 0"):
        iter_features(net, loader, max_batches=0)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="max_batches must be an int"):
            iter_features(net, loader, max_batches=bad)  # type: ignore[arg-type]
    assert len(list(iter_features(net, loader, max_batches=2))) == 2
    with pytest.raises(ValueError, match="pool must be None or 'prediction'"):
        iter_features(net, loader, pool="mean")  # type: ignore[arg-type]


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


# ----------------------------------------------------------------------------- batch forms


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.fc(h if scale is None else h * scale)


def test_batch_forms_tuple_list_and_mapping():
    """Issue 17.2: a mapping of inputs is called as model(**inputs), a tuple as model(*inputs)."""
    torch.manual_seed(0)
    net = TwoInputs()
    x, s, y = torch.randn(5, 4), torch.rand(5, 1), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ref = torch.relu(net.body(x)) * s
    for batch in (
        ({"x": x, "scale": s}, y),
        ((x, s), y),
        ([x, s], y, "extra items are ignored"),
        {"x": x, "scale": s, "labels": y},  # a Hugging Face collator's batch
        {"x": x, "scale": s, "label": y},
    ):
        out = collect_features(net, [batch])
        torch.testing.assert_close(out.features, ref)
        assert torch.equal(out.labels, y)
    with pytest.raises(TypeError, match=r"under 'labels' or 'label', got keys \['scale', 'x'\]"):
        collect_features(net, [{"x": x, "scale": s}])


# ----------------------------------------------------------------------------- two heads


class DistilledLike(nn.Module):
    """timm's deit_*_distilled: class-token `head` and distillation-token `head_dist`."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(6, 8), nn.GELU())
        self.head = nn.Linear(8, 5)
        self.head_dist = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.blocks(x)  # (B, 2, 8): class token, distillation token
        return (self.head(tokens[:, 0]) + self.head_dist(tokens[:, 1])) / 2


class HeadFirst(nn.Module):
    """Registers its classifier before its trunk: the last registered Linear is in the trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(7, 3)
        self.trunk = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


def test_two_candidate_heads_raise_listing_them():
    """Issue 17.3: never pick one of several possible classifiers silently."""
    x2 = torch.randn(3, 2, 6)
    net = DistilledLike()
    with pytest.raises(ValueError, match=r"'head' \(8 -> 5\), 'head_dist' \(8 -> 5\); pass layer="):
        collect_features(net, [(x2, torch.tensor([0, 1, 2]))])
    assert hooks(net) == 0
    with pytest.raises(ValueError, match="head_dist"), FeatureCapture(net), torch.no_grad():
        net(x2)
    out = collect_features(net, [(x2, torch.tensor([0, 1, 2]))], layer="head")
    torch.testing.assert_close(out.features, net.blocks(x2)[:, 0])

    first = HeadFirst()
    x = torch.randn(4, 4)
    assert find_final_linear(first)[0] == "trunk.2"  # the static rule alone would be wrong
    with pytest.raises(ValueError, match=r"last registered one is 'trunk.2'.*are 'fc' \(7 -> 3\)"):
        collect_features(first, [(x, torch.tensor([0, 1, 2, 0]))])
    out = collect_features(first, [(x, torch.tensor([0, 1, 2, 0]))], layer="fc")
    torch.testing.assert_close(out.features, first.trunk(x))


def test_single_head_with_same_width_layers_is_accepted():
    """A Linear whose output is the model output wins over same-width hidden layers."""
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    out = collect_features(net, [(torch.randn(2, 3), torch.tensor([0, 2]))])
    assert out.features.shape == (2, 3)


# ----------------------------------------------------------------------------- compiled models


@pytest.mark.parametrize("order", ["compiled-ran-first", "capture-first"])
@pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
def test_capture_on_compiled_model(order, how):
    """Issue 16.12: hooks on a compiled model that already ran still fire."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        ref = torch.relu(net[0](x))
    if how == "torch.compile":
        model: nn.Module = torch.compile(net, backend="eager")  # type: ignore[assignment]
    else:
        model = net
        model.compile(backend="eager")
    if order == "compiled-ran-first":
        with torch.no_grad():
            model(x)
    out = collect_features(model, [(x, y)])
    torch.testing.assert_close(out.features, ref)
    with FeatureCapture(model) as cap, torch.no_grad():
        model(x)
    assert cap.features is not None
    torch.testing.assert_close(cap.features, ref)
    assert hooks(model) == 0
    with torch.no_grad():  # compiled again after the capture
        torch.testing.assert_close(model(x), net(x))


# ----------------------------------------------------------------------------- token features


class TokenLM(nn.Module):
    """(B, L) token ids -> (B, L, V) logits through an embedding and a head."""

    def __init__(self, vocab: int = 7, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_token_features_pass_through_with_ignore_index():
    torch.manual_seed(0)
    net = TokenLM()
    ids = torch.randint(0, 7, (3, 5))
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    out = collect_features(net, [(ids, labels)], ignore_index=-100)
    assert out.features.shape == (3, 5, 4)
    assert torch.equal(out.labels, labels)
    assert out.logits.shape == (3, 5, 7)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\].*got \[-100\]"):
        collect_features(net, [(ids, labels)])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\].*got \[9\]"):
        collect_features(net, [(ids, labels.clamp(min=9))], ignore_index=-100)
    with pytest.raises(ValueError, match="disagree"):
        collect_features(net, [(ids, labels[:, :4])], ignore_index=-100)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        iter_features(net, [(ids, labels)], ignore_index=1.5)  # type: ignore[arg-type]


def test_uint8_labels_are_not_wrapped():
    net = nn.Sequential(nn.Linear(3, 300))
    out = collect_features(net, [(torch.randn(1, 3), torch.tensor([50], dtype=torch.uint8))])
    assert out.labels.tolist() == [50]


@pytest.fixture
def transformers():
    """Hugging Face transformers (optional: `pip install transformers`); models from configs."""
    return pytest.importorskip("transformers", reason="optional: Hugging Face models")


def _gpt2_config(transformers, **kw):
    return transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, **kw
    )


def _padded_ids():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (4, 7), generator=g)
    ids[0, 5:] = 0  # right padding with pad_token_id = 0
    ids[1, 3:] = 0
    return ids, (ids != 0).long()


def test_gpt2_sequence_classifier_needs_pool_and_takes_last_real_token(transformers):
    """Issue 17.1: GPT2ForSequenceClassification's head sees every token; pool='prediction'."""
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(
        _gpt2_config(transformers, num_labels=3, pad_token_id=0)
    ).eval()
    ids, mask = _padded_ids()
    y = torch.tensor([0, 1, 2, 1])
    batch = ({"input_ids": ids, "attention_mask": mask}, y)
    with pytest.raises(ValueError, match=r"\(4, 7, 16\) \(one per token\).*pool='prediction'"):
        collect_features(model, [batch])
    out = collect_features(model, [batch], pool="prediction")
    with torch.no_grad():
        hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(dim=1) - 1  # the last non-padding token
    assert torch.equal(out.features, hidden[torch.arange(4), last])
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(model.score(out.features), logits)


def test_gpt2_lm_token_features_batch_encoding_and_centroids(transformers):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(_gpt2_config(transformers))
    ids, mask = _padded_ids()
    labels = ids.masked_fill(mask == 0, -100)
    batch = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask, "labels": labels})
    out = collect_features(model, [batch], ignore_index=-100)
    assert model.training  # restored
    with torch.no_grad():
        model.eval()
        hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out.features, hidden)
    assert out.logits.shape == (4, 7, 50)
    keep = labels != -100
    acc = ClassCentroids(50, on_empty="ignore")
    acc.update(out.features[keep], out.labels[keep])
    ref = class_centroids(hidden[keep], labels[keep], 50, on_empty="ignore")
    torch.testing.assert_close(acc.compute(), ref, equal_nan=True)


def test_bert_dict_batches(transformers):
    """Issue 17.2: iter_features(bert, [({"input_ids": x, "attention_mask": m}, y)])."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    ids, mask = _padded_ids()
    y = torch.tensor([0, 1, 2, 1])
    out = collect_features(model, [({"input_ids": ids, "attention_mask": mask}, y)])
    with torch.no_grad():
        pooled = model.bert(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(out.features, pooled)
    encoded = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask})
    again = collect_features(model, [(encoded, y)])
    torch.testing.assert_close(again.features, pooled)


# ----------------------------------------------------------------------------- tied heads, tuples

V_TIED, D_TIED = 11, 6


class TiedFunctional(nn.Module):
    """Tied embeddings as a weight reuse: `F.linear(h, embedding.weight)`, no head Linear."""

    def __init__(self, d: int = D_TIED) -> None:
        super().__init__()
        self.emb = nn.Embedding(V_TIED, d)
        self.mlp = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        h = h + self.mlp(h)
        return nn.functional.linear(h, self.emb.weight)


class TiedHeadLinear(nn.Module):
    """Tied embeddings as an nn.Linear head sharing the embedding's weight."""

    def __init__(self, head_first: bool) -> None:
        super().__init__()
        if head_first:
            self.head = nn.Linear(D_TIED, V_TIED, bias=False)
        self.emb = nn.Embedding(V_TIED, D_TIED)
        self.mlp = nn.Sequential(nn.Linear(D_TIED, 8), nn.ReLU(), nn.Linear(8, D_TIED))
        if not head_first:
            self.head = nn.Linear(D_TIED, V_TIED, bias=False)
        self.head.weight = self.emb.weight
        self.softcap = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        logits = self.head(h + self.mlp(h))
        return 30.0 * torch.tanh(logits / 30.0) if self.softcap else logits


def _tokens() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, V_TIED, (2, 4), generator=g),) * 2]


def test_tied_embedding_head_without_a_linear_says_so():
    """`F.linear(h, emb.weight)`: the message names the tied embedding, not 'candidates: none'."""
    net = TiedFunctional()
    with pytest.raises(ValueError, match="cannot tell which layer") as info:
        collect_features(net, _tokens())
    msg = str(info.value)
    assert "none" not in msg
    assert "made by no nn.Linear" in msg
    assert "embedding 'emb' has 11 rows" in msg
    assert "head.weight = embedding.weight" in msg
    assert hooks(net) == 0


def test_tied_embedding_with_a_hidden_layer_of_the_logits_width_is_not_taken():
    """D == V: the MLP's last Linear has the logits' width but is not the head (no silent pick)."""
    net = TiedFunctional(d=V_TIED)
    with pytest.raises(ValueError, match=r"made by no nn.Linear.*'mlp.2' \(8 -> 11\)"):
        collect_features(net, _tokens())
    out = collect_features(net, _tokens(), layer="mlp.2")  # chosen explicitly: taken
    assert out.features.shape == (2, 4, 8)


@pytest.mark.parametrize("head_first", [False, True])
def test_tied_linear_head(head_first):
    """An nn.Linear head sharing the embedding's weight: found (named when registered first)."""
    net = TiedHeadLinear(head_first)
    if head_first:
        with pytest.raises(
            ValueError, match=r"last registered one is 'mlp.2'.*are 'head' \(6 -> 11\)"
        ):
            collect_features(net, _tokens())
        layer = "head"
    else:
        layer = None
    out = collect_features(net, _tokens(), layer=layer)
    assert out.features.shape == (2, 4, D_TIED)
    net.softcap = True  # post-processed logits: the tied head is still recognised
    assert collect_features(net, _tokens(), layer=layer).features.shape == (2, 4, D_TIED)


class TupleOut(nn.Module):
    def __init__(self, aux: bool) -> None:
        super().__init__()
        self.body = nn.Linear(5, 8)
        self.fc = nn.Linear(8, 3)
        self.aux = nn.Linear(8, 3) if aux else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x).relu()
        return self.fc(h), (self.aux(h) if self.aux is not None else h)


def test_tuple_output_message_describes_it_and_says_what_to_do():
    data = [(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(TypeError) as info:
        collect_features(TupleOut(aux=False), data)
    msg = str(info.value)
    assert "the model returned a tuple of 2: (Tensor (4, 3), Tensor (4, 8))" in msg
    assert "model(x)[0]" in msg


def test_capture_on_tuple_output_checks_the_heads():
    """Two heads in a returned tuple: FeatureCapture does not silently take the last registered."""
    x = torch.randn(4, 5)
    net = TupleOut(aux=True)
    with (
        pytest.raises(ValueError, match=r"'fc' \(8 -> 3\), 'aux' \(8 -> 3\)"),
        FeatureCapture(net),
        torch.no_grad(),
    ):
        net(x)
    assert hooks(net) == 0
    single = TupleOut(aux=False)
    with FeatureCapture(single) as cap, torch.no_grad():
        single(x)
    assert cap.layer_name == "fc"
    with FeatureCapture(net, "fc") as cap, torch.no_grad():
        net(x)
    torch.testing.assert_close(cap.features, net.body(x).relu())


class TakesAnyKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, **unused: object) -> torch.Tensor:
        return self.fc(x)


def test_mapping_batch_with_both_label_keys_is_refused():
    """{'labels', 'label'}: neither is passed to the model silently nor dropped."""
    x, y = torch.randn(2, 4), torch.tensor([0, 1])
    batch = {"x": x, "labels": y, "label": torch.tensor([2, 2])}
    with pytest.raises(ValueError, match="holds both 'labels' and 'label'"):
        collect_features(TakesAnyKeyword(), [batch])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"fine": torch.tensor([0, 1])}, r"batch 0: the labels are a dict with keys \['fine'\]"),
        ("ab", "batch 0: labels must be a tensor .* got str"),
        (None, "batch 0: labels must be a tensor .* got NoneType"),
    ],
)
def test_labels_that_are_not_a_tensor_get_a_clear_error(labels, message):
    for batch in ((torch.randn(2, 4), labels), {"x": torch.randn(2, 4), "labels": labels}):
        with pytest.raises(TypeError, match=message):
            collect_features(TakesAnyKeyword(), [batch])
