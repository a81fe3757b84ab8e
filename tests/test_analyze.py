"""`lsdiffusion analyze`: models by name, checkpoints, data, class sets, report."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn

from lsdiffusion import ClassScatter
from lsdiffusion._loading import load_data, load_model, load_state_dict, strip_prefixes
from lsdiffusion.analyze import feature_sets
from lsdiffusion.cli import main as cli_main
from lsdiffusion.diffusion import diffusion_indices

pytest.importorskip("matplotlib")

K, D_IN = 6, 5
FACTORY = """
from torch import nn


def mlp(num_classes):
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, num_classes))


class TwoHeads(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Linear(5, 12)
        self.head = nn.Linear(6, num_classes)
        self.head_dist = nn.Linear(6, num_classes)

    def forward(self, x):
        a, b = self.body(x).relu().chunk(2, dim=-1)
        return (self.head(a) + self.head_dist(b)) / 2
"""


def test_feature_sets_from_the_measured_student_are_biased():
    """Issue 17.5: sets picked from the T0 centroids regress to the mean; a reference does not.

    No model changes between T0 and T1: both are the true centroids plus
    independent noise. Sets chosen from T0's own centroids push α_sim up by
    ~16 points and α_dissim down; sets from an independent reference give what
    the true sets give.
    """
    g = torch.Generator().manual_seed(0)
    k, d = 200, 8
    truth = torch.randn(k, d, generator=g, dtype=torch.float64)

    def noisy() -> torch.Tensor:
        return truth + 0.3 * torch.randn(k, d, generator=g, dtype=torch.float64)

    c0, c1, reference = noisy(), noisy(), noisy()
    means = {}
    for name, source in [("own", c0), ("reference", reference), ("truth", truth)]:
        sets = feature_sets(source, 0.05, 0.5, name)
        table = diffusion_indices(c0, c1, sets.targets, sets.similar, sets.dissimilar)
        means[name] = (table.mean_similar, table.mean_dissimilar)
    assert means["own"][0] - means["truth"][0] > 10
    assert means["own"][1] - means["truth"][1] < -1
    assert abs(means["reference"][0] - means["truth"][0]) < 2.5
    assert abs(means["reference"][1] - means["truth"][1]) < 0.3


def test_feature_sets_sizes_and_errors():
    sets = feature_sets(torch.randn(4, 3), 0.01, 0.9, "teacher t.pt")
    assert sets.similar.sum(axis=1).tolist() == [1] * 4
    assert sets.dissimilar.sum(axis=1).tolist() == [2] * 4
    assert "teacher t.pt's centroids: 1 closest / 2 farthest of 4 classes" in sets.source
    with pytest.raises(ValueError, match="at least 3 classes"):
        feature_sets(torch.randn(2, 3), 0.01, 0.9, "x")


def test_strip_prefixes_and_load_state_dict(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = net.state_dict()
    assert strip_prefixes({f"module._orig_mod.{k}": v for k, v in state.items()}).keys() == (
        state.keys()
    )
    assert strip_prefixes({"model.0.weight": 1, "head.bias": 2}) == {
        "model.0.weight": 1,
        "head.bias": 2,
    }  # only when every key has it
    for i, obj in enumerate(
        [
            state,
            {f"module.{k}": v for k, v in state.items()},
            {"state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}, "epoch": 3},
            {"model": {f"model.{k}": v for k, v in state.items()}},
        ]
    ):
        path = tmp_path / f"c{i}.pt"
        torch.save(obj, path)
        other = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        load_state_dict(path, other)
        assert all(
            torch.equal(a, b) for a, b in zip(other.parameters(), net.parameters(), strict=True)
        )
    torch.save({"epoch": 3}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_state_dict(tmp_path / "bad.pt", net)
    torch.save(nn.Linear(5, 5).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit --model Sequential"):
        load_state_dict(tmp_path / "other.pt", net)


def test_load_model_names(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # this folder's copy
    model = load_model("my_models:mlp", 7)
    assert model[-1].out_features == 7
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        load_model("my_models:nope", 7)
    with pytest.raises(ValueError, match="needs the Python package 'no_such_pkg'"):
        load_model("no_such_pkg.sub:make", 3)
    with pytest.raises(ValueError, match="--model must be timm:NAME"):
        load_model("resnet18", 3)
    if "timm" not in sys.modules:
        try:
            import timm  # noqa: F401
        except ImportError:
            with pytest.raises(ValueError, match=r"needs the Python package 'timm'.*pip install"):
                load_model("timm:resnet18", 3)


def test_load_data_tensor_file(tmp_path):
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    torch.save({"inputs": x, "labels": y, "classes": ["a", "b", "c"]}, tmp_path / "d.pt")
    data, names = load_data(tmp_path / "d.pt")
    assert names == ["a", "b", "c"]
    assert len(data) == 10
    torch.save((x, y), tmp_path / "t.pt")
    assert load_data(tmp_path / "t.pt")[1] == ["0", "1", "2"]
    torch.save((x, y.float()), tmp_path / "f.pt")
    with pytest.raises(ValueError, match="labels must be"):
        load_data(tmp_path / "f.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_data(tmp_path / "missing")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # this folder's copy
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(K, D_IN, generator=g)
    y = torch.arange(K * 20) % K
    x = centres[y] + torch.randn(len(y), D_IN, generator=g)
    names = [f"class{i}" for i in range(K)]
    torch.save({"inputs": x, "labels": y, "classes": names}, tmp_path / "data.pt")
    paths = {}
    torch.manual_seed(0)
    base = load_model("my_models:mlp", K)
    for i, name in enumerate(("teacher", "s1", "s3", "ref")):
        net = load_model("my_models:mlp", K)
        if name == "s3":
            net.load_state_dict(
                {k: v + 0.05 * torch.randn_like(v) for k, v in base.state_dict().items()}
            )
        elif name == "s1":
            net = base
        state = net.state_dict()
        obj = {f"module._orig_mod.{k}": v for k, v in state.items()} if i % 2 else state
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(obj, paths[name])
    return tmp_path, paths, x, y


def _argv(tmp, paths, *extra):
    return [
        "analyze", "--model", "my_models:mlp", "--data", str(tmp / "data.pt"),
        "--teacher", str(paths["teacher"]), "--students", str(paths["s1"]), str(paths["s3"]),
        "--temperatures", "1", "3", "--out", str(tmp / "out"), "--device", "cpu", *extra,
    ]  # fmt: skip


def test_cli_end_to_end(setup, capsys):
    tmp, paths, x, y = setup
    assert cli_main(_argv(tmp, paths, "--reference", str(paths["ref"]))) == 0
    stdout = capsys.readouterr().out
    out = tmp / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "diffusion_T1_to_T3.csv",
        "diffusion_T1_to_T3.md",
        "diffusion_index.png",
        "projection.png",
        "report.md",
        "target_entropy.csv",
        "target_entropy.md",
    ]  # fmt: skip  (no staging folder left)
    report = (out / "report.md").read_text()
    assert report.startswith("# Diffusion analysis: teacher teacher.pt, students at T = 1, T = 3")
    assert "reference model ref.pt's centroids" in stdout
    assert "Table 3: diffusion index (%) from T0 = 1 to T1 = 3" in stdout
    assert "p(α_sim < 0)" in stdout
    assert "R²" in stdout
    assert "NC1" in report
    # The geometry row of the teacher against a direct ClassScatter pass.
    teacher = load_model("my_models:mlp", K)
    load_state_dict(paths["teacher"], teacher)
    with torch.no_grad():
        feats = teacher[1](teacher[0](x))
    acc = ClassScatter(K)
    acc.update(feats, y)
    geometry = acc.compute()
    line = next(r for r in report.splitlines() if r.startswith("| teacher |"))
    assert f"| {geometry.class_separation:.4f} | {geometry.nc1:.4g} |" in line


def test_cli_teacher_is_the_default_reference(setup, capsys):
    tmp, paths, _, _ = setup
    assert cli_main(_argv(tmp, paths)) == 0
    assert "teacher teacher.pt's centroids" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--temperatures", "3", "1"), "--temperatures must increase"),
        (("--temperatures", "1"), "--students has 2 files but --temperatures has 1"),
        (("--data", "nonexistent"), "--data nonexistent does not exist"),
        (("--similar-frac", "2"), r"--similar-frac must be in \(0, 1\]"),
        (("--model", "no_such_pkg:make"), "needs the Python package 'no_such_pkg'"),
        (("--device", "gpu"), "--device 'gpu' is not usable"),
        (("--classes", "class0", "class0", "class1"), "3 distinct classes"),
    ],
)
def test_cli_errors_are_one_line(setup, capsys, change, message):
    tmp, paths, _, _ = setup
    argv = _argv(tmp, paths)
    flag = change[0]
    if flag in argv:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        argv[i:j] = list(change)
    else:
        argv += list(change)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp / "out" / "report.md").exists()


def test_cli_out_not_writable(setup, capsys):
    tmp, paths, _, _ = setup
    (tmp / "afile").write_text("x")
    argv = _argv(tmp, paths)
    argv[argv.index("--out") + 1] = str(tmp / "afile")
    assert cli_main(argv) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cli_two_heads_need_layer(setup, capsys):
    """Issue 17.3 through the command: the error names the candidates and --layer chooses."""
    tmp, paths, _, _ = setup
    torch.manual_seed(1)
    for name in ("teacher", "s1", "s3"):
        torch.save(load_model("my_models:TwoHeads", K).state_dict(), paths[name])
    argv = _argv(tmp, paths)
    argv[argv.index("--model") + 1] = "my_models:TwoHeads"
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'head' (6 -> 6), 'head_dist' (6 -> 6); pass layer=" in err[0]
    assert cli_main([*argv, "--layer", "head", "--relative-to", "all"]) == 0
    assert (tmp / "out" / "report.md").is_file()


def test_cifar100_sets_follow_the_dataset_class_order():
    from lsdiffusion.analyze import _cifar100_sets
    from lsdiffusion.semantics import cifar100_class_names, cifar100_class_sets

    names = list(cifar100_class_names())
    shuffled = names[::-1]  # folders in another order than the fine labels
    choice = _cifar100_sets(shuffled)
    i = shuffled.index("maple_tree")
    expected = cifar100_class_sets("maple_tree")
    similar = sorted(names.index(shuffled[j]) for j in choice.similar[i].nonzero()[0])
    dissimilar = sorted(names.index(shuffled[j]) for j in choice.dissimilar[i].nonzero()[0])
    assert similar == list(expected.similar)
    assert dissimilar == list(expected.dissimilar)
    with pytest.raises(ValueError, match="needs the 100 CIFAR-100 classes, got 3"):
        _cifar100_sets(["a", "b", "c"])
    with pytest.raises(ValueError, match="'not_a_class' is not a CIFAR-100 fine label name"):
        _cifar100_sets([*names[:99], "not_a_class"])


@pytest.mark.parametrize("flag", ["--teacher", "--students", "--data"])
@pytest.mark.parametrize("content", ["text", "empty", "pickled module", "other model"])
def test_cli_unreadable_files_are_one_line(setup, capsys, flag, content):
    """A file that is not a torch file (or holds no usable state dict): one line, path once."""
    tmp, paths, _, _ = setup
    bad = tmp / "bad.pt"
    if content == "text":
        bad.write_text("not a torch file\n")
    elif content == "empty":
        bad.write_bytes(b"")
    elif content == "pickled module":
        torch.save(nn.Linear(5, K), bad)  # a whole model: weights_only refuses it
    else:
        torch.save(nn.Linear(3, 3).state_dict(), bad)
    argv = _argv(tmp, paths)
    argv[argv.index(flag) + 1] = str(bad)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{flag} {bad}" in lines[0], err
    assert lines[0].count(str(bad)) == 1, err  # not "--teacher PATH PATH: ..."
    if content == "pickled module" and flag != "--data":
        assert "torch.nn.modules.linear.Linear" in lines[0]
        assert "state_dict()" in lines[0]
    assert not (tmp / "out" / "report.md").exists()


def test_cli_device_without_its_backend_is_one_line(setup, capsys):
    """`--device cuda:99` (no such GPU, or torch without CUDA): not a raw AssertionError."""
    tmp, paths, _, _ = setup
    argv = _argv(tmp, paths)
    argv[argv.index("--device") + 1] = "cuda:99"
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--device 'cuda:99' is not usable here" in err[0]


def _no_model_runs(monkeypatch):
    import lsdiffusion.analyze as analyze_module

    def fail(*args, **kwargs):
        raise AssertionError("a model ran before the class sets were checked")

    monkeypatch.setattr(analyze_module, "_measure", fail)


def test_cli_cifar100_sets_checked_before_any_model_runs(setup, capsys, monkeypatch):
    tmp, paths, _, _ = setup
    _no_model_runs(monkeypatch)
    assert cli_main([*_argv(tmp, paths), "--sets", "cifar100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--sets cifar100 needs the 100 CIFAR-100 classes, got 6" in err[0]


def test_cli_unusable_sets_checked_before_any_model_runs(setup, capsys, monkeypatch):
    """Sets that leave no class with both a similar and a dissimilar set fail before the models."""
    import numpy as np

    import lsdiffusion.analyze as analyze_module

    tmp, paths, _, _ = setup
    _no_model_runs(monkeypatch)
    empty = np.zeros((K, K), dtype=bool)
    monkeypatch.setattr(
        analyze_module,
        "_cifar100_sets",
        lambda classes: analyze_module.SetChoice(list(range(K)), empty, ~empty, "none similar"),
    )
    assert cli_main([*_argv(tmp, paths), "--sets", "cifar100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "no class has both a similar and a dissimilar set" in err[0]


def test_cli_wordnet_sets_on_other_folders_are_one_line(setup, capsys, monkeypatch):
    """`--sets wordnet` on classes that are not wnids: one line, before any model runs."""
    from lsdiffusion.semantics import wordnet

    tmp, paths, _, _ = setup
    _no_model_runs(monkeypatch)

    def unavailable(nltk_data=None):
        raise wordnet.WordNetUnavailableError("nltk is not installed; it is needed.\nhow to")

    monkeypatch.setattr(wordnet, "load_wordnet", unavailable)
    assert cli_main([*_argv(tmp, paths), "--sets", "wordnet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--sets wordnet" in err[0]
    assert "'class0'" in err[0]
    assert "nltk is not installed" in err[0]
    assert "--sets feature" in err[0]


def test_cli_wordnet_sets_with_unknown_names_are_one_line(setup, capsys, monkeypatch, tmp_path):
    """With WordNet at hand, class names that name no synset: one line naming a few."""
    import os

    from lsdiffusion.semantics import prepare_wordnet_corpus, wordnet

    if not os.path.isfile("/usr/share/wordnet/data.noun"):
        pytest.skip("needs Debian's wordnet-base")
    pytest.importorskip("nltk")
    corpus = prepare_wordnet_corpus(tmp_path / "nltk_data")
    real = wordnet.load_wordnet
    monkeypatch.setattr(wordnet, "load_wordnet", lambda nltk_data=None: real(corpus))
    tmp, paths, _, _ = setup
    _no_model_runs(monkeypatch)
    assert cli_main([*_argv(tmp, paths), "--sets", "wordnet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--sets wordnet: 6 of the 6 classes name no WordNet synset" in err[0], err
    assert "'class0'" in err[0]
