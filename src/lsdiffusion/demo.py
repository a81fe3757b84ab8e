"""The end-to-end demo: the LS x KD study on a synthetic class hierarchy.

``lsdiffusion demo`` (or ``python -m lsdiffusion demo``) reproduces the study of
Chandrasegaran et al. (ICML 2022) on data it makes itself:

1. a hierarchical classification task: Gaussian clusters arranged as
   superclasses x subclasses, so that semantically similar classes (siblings
   under one superclass) exist by construction;
2. teachers trained with label smoothing alpha in {0, 0.1}
   ([`LabelSmoothingLoss`][lsdiffusion.LabelSmoothingLoss]);
3. students distilled from each teacher at several temperatures with
   [`KDLoss`][lsdiffusion.KDLoss] (beta = 1), over several seeds;
4. the measurements: accuracies, the diffusion index of every class against
   its siblings (similar) and the other superclasses (dissimilar), and the
   teachers' target entropies.

It prints the paper-style tables, writes ``results.json`` (and a Figure-1-style
PNG when matplotlib is installed) into ``--out``. Every number comes from the
run; a given seed gives the same result every time on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsdiffusion.diffusion import DiffusionIndexTable, DiffusionSignificance

__all__ = [
    "DemoConfig",
    "DemoResult",
    "HierarchicalTask",
    "add_parser",
    "make_hierarchical_task",
    "run_demo",
    "save_demo",
]

MIN_TEMPERATURE = 0.01
"""Lowest temperature the demo accepts (float32 ``z / T`` stays far from overflow)."""
MAX_TEMPERATURE = 1000.0
"""Highest temperature the demo accepts (float32 ``T² · KL`` keeps its digits)."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit: ``0 <= seed <= MAX_SEED``."""


def _listed(values: Sequence[float]) -> str:
    """``[1.0, 2.0]``, cut after 8 values for error messages."""
    shown = ", ".join(repr(v) for v in values[:8])
    return f"[{shown}, ... ({len(values)} values)]" if len(values) > 8 else f"[{shown}]"


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (the defaults: 1-2 minutes on 2 shared CPU cores).

    Attributes:
        superclasses: number of superclasses.
        subclasses: classes per superclass (siblings).
        input_dim: dimension of the inputs.
        superclass_spread: std of the superclass centres.
        subclass_spread: std of a class mean around its superclass centre.
        noise: std of the samples around their class mean.
        train_per_class: training samples per class.
        test_per_class: test samples per class.
        teacher_width: hidden width of the teacher MLP.
        teacher_features: penultimate width of the teacher.
        student_width: hidden width of the student MLP.
        student_features: penultimate width of the student (the features measured).
        epochs: training epochs for every network.
        batch_size: minibatch size.
        lr: Adam learning rate (cosine-annealed to 0).
        alphas: label smoothing of the teachers.
        temperatures: distillation temperatures (the first is T0 of the diffusion index).
        seeds: one full study per seed.
        diffusion_t1: the T1 at which the diffusion-index check is made.
        device: torch device for training.
    """

    superclasses: int = 8
    subclasses: int = 4
    input_dim: int = 32
    superclass_spread: float = 2.0
    subclass_spread: float = 0.8
    noise: float = 1.3
    train_per_class: int = 60
    test_per_class: int = 200
    teacher_width: int = 256
    teacher_features: int = 64
    student_width: int = 64
    student_features: int = 8
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    alphas: tuple[float, ...] = (0.0, 0.1)
    temperatures: tuple[float, ...] = (1.0, 2.0, 3.0, 64.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    diffusion_t1: float = 3.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("superclasses", "input_dim", "train_per_class", "test_per_class", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.subclasses < 2:
            raise ValueError(f"subclasses must be >= 2 (siblings), got {self.subclasses}")
        if self.superclasses < 2:
            raise ValueError(
                f"superclasses must be >= 2 (dissimilar classes), got {self.superclasses}"
            )
        if len(self.temperatures) < 2:
            raise ValueError(
                f"temperatures must hold T0 and at least one T1, got {list(self.temperatures)}"
            )
        if any(not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE for t in self.temperatures):
            raise ValueError(
                f"temperatures must be finite and in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
                "(beyond, float32 logits / T or T² · KL lose their digits), "
                f"got {_listed(self.temperatures)}"
            )
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures must be distinct, got {_listed(self.temperatures)}")
        t0 = self.temperatures[0]
        if any(t <= t0 for t in self.temperatures[1:]):
            raise ValueError(
                f"temperatures after the first (T0 = {t0:g}) must be > T0, since the diffusion "
                f"index measures T0 -> T1 > T0, got {_listed(self.temperatures)}"
            )
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED
            for s in self.seeds
        ):
            raise ValueError(
                f"seeds must be integers in [0, {MAX_SEED}] (32-bit), got {_listed(self.seeds)}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(
                f"seeds must be distinct (each runs one study), got {_listed(self.seeds)}"
            )
        if any(not 0.0 <= a < 1.0 for a in self.alphas) or not self.alphas:
            raise ValueError(f"alphas must be in [0, 1), got {_listed(self.alphas)}")
        if len(set(self.alphas)) != len(self.alphas):
            raise ValueError(f"alphas must be distinct, got {_listed(self.alphas)}")
        if 0.0 not in self.alphas or max(self.alphas) <= 0.0:
            raise ValueError(
                "alphas must hold 0 (the plain teacher) and at least one alpha > 0 "
                f"(an LS teacher) for the comparison, got {list(self.alphas)}"
            )
        if self.diffusion_t1 not in self.temperatures[1:]:
            raise ValueError(
                f"diffusion_t1={self.diffusion_t1} must be one of the temperatures after T0 "
                f"({list(self.temperatures[1:])})"
            )

    @property
    def num_classes(self) -> int:
        """Total number of classes."""
        return self.superclasses * self.subclasses


@dataclass
class HierarchicalTask:
    """A synthetic hierarchical classification task (float32 tensors on the CPU).

    Class ``c`` belongs to superclass ``c // subclasses``.
    """

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    superclass_of: list[int]

    def similar_sets(self) -> list[list[int]]:
        """For every class, its siblings (same superclass)."""
        sup = self.superclass_of
        return [
            [c for c in range(len(sup)) if sup[c] == sup[p] and c != p] for p in range(len(sup))
        ]

    def dissimilar_sets(self) -> list[list[int]]:
        """For every class, the classes of the other superclasses."""
        sup = self.superclass_of
        return [[c for c in range(len(sup)) if sup[c] != sup[p]] for p in range(len(sup))]


def make_hierarchical_task(config: DemoConfig, seed: int) -> HierarchicalTask:
    r"""Draw Gaussian clusters arranged as superclasses x subclasses.

    Superclass centres $s_j \sim N(0, \sigma_s^2 I)$, class means
    $m_c = s_{j(c)} + N(0, \sigma_c^2 I)$ and samples
    $x = m_c + N(0, \sigma_n^2 I)$: siblings are close, other
    superclasses far, and the noise keeps the accuracy well below 100%.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    k, d = config.subclasses, config.input_dim
    centres = torch.randn(config.superclasses, d, generator=g) * config.superclass_spread
    means = centres.repeat_interleave(k, 0)
    means = means + torch.randn(config.num_classes, d, generator=g) * config.subclass_spread

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(config.num_classes).repeat_interleave(per_class)
        x = means[y] + torch.randn(len(y), d, generator=g) * config.noise
        return x, y

    train_x, train_y = sample(config.train_per_class)
    test_x, test_y = sample(config.test_per_class)
    return HierarchicalTask(
        train_x, train_y, test_x, test_y, [c // k for c in range(config.num_classes)]
    )


def _mlp(in_dim: int, width: int, features: int, classes: int, seed: int) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(in_dim, width),
        nn.ReLU(),
        nn.Linear(width, features),
        nn.ReLU(),
        nn.Linear(features, classes),
    )


def _train(
    model: Any,
    x: Any,
    loss_fn: Callable[[Any, Any], Any],
    config: DemoConfig,
    seed: int,
) -> Any:
    """Adam with a cosine schedule; ``loss_fn(logits, batch_indices)``."""
    import torch

    device = torch.device(config.device)
    model.to(device)
    x = x.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for lo in range(0, n, config.batch_size):
            idx = perm[lo : lo + config.batch_size]
            loss = loss_fn(model(x[idx]), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


@dataclass
class DemoResult:
    """Raw per-seed measurements and their summaries (all JSON-serialisable)."""

    config: DemoConfig
    teacher_accuracy: dict[float, list[float]] = field(default_factory=dict)
    student_accuracy: dict[tuple[float, float], list[float]] = field(default_factory=dict)
    diffusion: dict[tuple[float, float], list[tuple[float, float]]] = field(default_factory=dict)
    # per seed, the per-class diffusion indices behind ``diffusion``'s means
    diffusion_tables: dict[tuple[float, float], list[DiffusionIndexTable]] = field(
        default_factory=dict, repr=False
    )
    entropy: dict[tuple[float, float], list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    figure: str | None = None
    # The first seed's students by (alpha, T), as state dicts: what the figures show.
    students: dict[tuple[float, float], dict[str, Any]] = field(default_factory=dict, repr=False)

    # -- summaries ---------------------------------------------------------

    SIGNIFICANCE_LEVEL = 0.05
    """Level of the demo's significance check (both one-sided Wilcoxon p-values below it)."""

    def significance(self, alpha: float, t1: float) -> DiffusionSignificance:
        """Significance of the diffusion index of teacher ``alpha`` at ``t1``, seeds pooled.

        The per-class tables of every seed are pooled into one table of
        ``classes x seeds`` targets
        ([`DiffusionIndexTable.concat`][lsdiffusion.diffusion.DiffusionIndexTable.concat]) and
        tested with
        [`DiffusionIndexTable.significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance]
        (defaults: 95% intervals, 10 000 bootstrap resamples, seed 0), so the result is the same on
        every run.
        """
        from lsdiffusion.diffusion import DiffusionIndexTable

        if (alpha, t1) not in self.diffusion_tables:
            raise KeyError(
                f"no per-class diffusion indices for teacher alpha={alpha:g} at T1={t1:g}; "
                f"measured: {sorted(self.diffusion_tables)}"
            )
        tables = self.diffusion_tables[(alpha, t1)]
        # about 0.3 s per cell (BCa bootstrap): computed once per cell and number of seeds
        cache = self.__dict__.setdefault("_significance", {})
        key = (alpha, t1, len(tables))
        if key not in cache:
            cache[key] = DiffusionIndexTable.concat(tables).significance()
        sig: DiffusionSignificance = cache[key]
        return sig

    def checks(self) -> dict[str, bool]:
        """The paper's four qualitative outcomes, as observed in this run.

        The three accuracy outcomes compare means over seeds. The fourth,
        systematic diffusion, is decided by the significance tests (both
        one-sided Wilcoxon p-values below
        [`SIGNIFICANCE_LEVEL`][lsdiffusion.demo.DemoResult.SIGNIFICANCE_LEVEL], targets pooled over
        seeds), not by the signs of the means alone.
        """
        plain, ls = min(self.config.alphas), max(self.config.alphas)
        t0, t_high = self.config.temperatures[0], max(self.config.temperatures)
        t1 = self.config.diffusion_t1

        def acc(a: float, t: float) -> float:
            return statistics.fmean(self.student_accuracy[(a, t)])

        out = {
            "LS teacher beats the plain teacher": statistics.fmean(self.teacher_accuracy[ls])
            > statistics.fmean(self.teacher_accuracy[plain]),
            f"at T = {t0:g}, the LS-teacher student is at least as good": acc(ls, t0)
            >= acc(plain, t0),
            f"at T = {t_high:g}, the LS-teacher student falls behind": acc(ls, t_high)
            < acc(plain, t_high),
        }
        if (ls, t1) in self.diffusion_tables:
            sig = self.significance(ls, t1)
            name = (
                f"LS teacher, T {t0:g} -> {t1:g}: alpha_sim < 0 < alpha_dissim, "
                f"significant (one-sided Wilcoxon p < {self.SIGNIFICANCE_LEVEL:g} each, "
                f"n = {sig.n})"
            )
            out[name] = sig.systematic(self.SIGNIFICANCE_LEVEL)
        return out

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON view: config, per-seed values, mean/std tables and checks."""

        def key(*parts: float) -> str:
            return "/".join(f"{p:g}" for p in parts)

        def summary(values: Sequence[float]) -> dict[str, Any]:
            mean, std = _mean_std(values)
            return {"mean": mean, "std": std, "values": list(values)}

        return {
            "config": asdict(self.config),
            "teacher_accuracy": {key(a): summary(v) for a, v in self.teacher_accuracy.items()},
            "student_accuracy": {
                key(a, t): summary(v) for (a, t), v in self.student_accuracy.items()
            },
            "diffusion_index": {
                key(a, t): {
                    "similar": summary([s for s, _ in v]),
                    "dissimilar": summary([d for _, d in v]),
                    # one list per seed, by class index: the targets of "significance"
                    "per_class": {
                        "similar": [tab.similar.tolist() for tab in self.diffusion_tables[(a, t)]],
                        "dissimilar": [
                            tab.dissimilar.tolist() for tab in self.diffusion_tables[(a, t)]
                        ],
                    }
                    if (a, t) in self.diffusion_tables
                    else None,
                }
                for (a, t), v in self.diffusion.items()
            },
            "significance": {
                key(a, t): self.significance(a, t).to_dict() for (a, t) in self.diffusion_tables
            },
            "target_entropy": {key(a, t): summary(v) for (a, t), v in self.entropy.items()},
            "max_entropy": math.log(self.config.num_classes),
            "checks": self.checks(),
            "seconds": self.seconds,
            "figure": self.figure,
        }

    def tables(self) -> str:
        """The paper-style tables as plain text."""
        cfg = self.config
        temps = cfg.temperatures

        def cell(values: Sequence[float], digits: int = 2) -> str:
            mean, std = _mean_std(values)
            return f"{mean:.{digits}f} ± {std:.{digits}f}"

        lines = [
            f"Table 2 - test accuracy (%), mean ± std over {len(cfg.seeds)} seeds "
            f"({cfg.num_classes} classes = {cfg.superclasses} superclasses x {cfg.subclasses})",
        ]
        header = f"{'teacher':<10} {'teacher acc':>15}" + "".join(
            f" {f'student T={t:g}':>15}" for t in temps
        )
        lines += [header, "-" * len(header)]
        for a in cfg.alphas:
            row = f"{f'α = {a:g}':<10} {cell(self.teacher_accuracy[a]):>15}"
            row += "".join(f" {cell(self.student_accuracy[(a, t)]):>15}" for t in temps)
            lines.append(row)

        t0 = temps[0]
        lines += [
            "",
            f"Table 3 - diffusion index (%) from T0 = {t0:g} to T1, mean over classes, "
            "then mean ± std over seeds",
            "(similar = superclass siblings, dissimilar = other superclasses; "
            "systematic diffusion: α_sim < 0 < α_dissim)",
        ]
        header = f"{'teacher':<10} {'T1':>5} {'α_sim':>16} {'α_dissim':>16}"
        lines += [header, "-" * len(header)]
        for a in cfg.alphas:
            for t in temps[1:]:
                vals = self.diffusion[(a, t)]
                lines.append(
                    f"{f'α = {a:g}':<10} {t:>5g} {cell([s for s, _ in vals]):>16} "
                    f"{cell([d for _, d in vals]):>16}"
                )

        lines += self._significance_lines()

        lines += [
            "",
            "Appendix H - teacher target entropy (nats) of softmax(z / T) on the training set, "
            f"max ln K = {math.log(cfg.num_classes):.3f}",
        ]
        header = f"{'teacher':<10}" + "".join(f" {f'T={t:g}':>15}" for t in temps)
        lines += [header, "-" * len(header)]
        for a in cfg.alphas:
            lines.append(
                f"{f'α = {a:g}':<10}"
                + "".join(f" {cell(self.entropy[(a, t)], 3):>15}" for t in temps)
            )

        lines += ["", "Expected qualitative outcome (paper), as observed in this run:"]
        lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in self.checks().items()]
        return "\n".join(lines)

    def _significance_lines(self) -> list[str]:
        """The significance of Table 3, one row per (teacher, T1), under the table."""
        cfg = self.config
        cells = [
            (a, t, self.significance(a, t))
            for a in cfg.alphas
            for t in cfg.temperatures[1:]
            if (a, t) in self.diffusion_tables
        ]
        if not cells:
            return []
        sig0 = cells[0][2]
        pct = f"{sig0.confidence * 100:g}%"

        def mean_ci(mean: float, ci: tuple[float, float]) -> str:
            return f"{mean:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"

        lines = [
            "",
            f"Significance of Table 3 - every class of every seed is one target "
            f"(n = {cfg.num_classes} x {len(cfg.seeds)} = {sig0.n});",
            f"one-sided Wilcoxon signed-rank p-values; {pct} BCa bootstrap intervals "
            f"of the mean ({sig0.n_resamples} resamples)",
        ]
        header = (
            f"{'teacher':<10} {'T1':>5}  {'α_sim [' + pct + ' CI]':<24} {'p(α_sim<0)':>10}  "
            f"{'α_dissim [' + pct + ' CI]':<24} {'p(α_dissim>0)':>13}  {'p(α_sim<α_dissim)':>17}"
        )
        lines += [header, "-" * len(header)]
        for a, t, sig in cells:
            lines.append(
                f"{f'α = {a:g}':<10} {t:>5g}  {mean_ci(sig.mean_similar, sig.ci_similar):<24} "
                f"{sig.p_similar_negative:>10.2g}  "
                f"{mean_ci(sig.mean_dissimilar, sig.ci_dissimilar):<24} "
                f"{sig.p_dissimilar_positive:>13.2g}  {sig.p_similar_below_dissimilar:>17.2g}"
            )
        return lines


@dataclass
class _StudyOutput:
    """What one (seed, teacher alpha) study sends back to the parent process."""

    seed: int
    alpha: float
    teacher_accuracy: float
    entropy: dict[float, float]
    student_accuracy: dict[float, float]
    diffusion: dict[float, tuple[float, float]]
    students: dict[float, dict[str, Any]]  # state dicts, first seed only (for the figure)
    tables: dict[float, Any] = field(default_factory=dict)  # per-class DiffusionIndexTable


def _study(cfg: DemoConfig, seed: int, alpha: float, keep_students: bool) -> _StudyOutput:
    """Train one teacher and its students at every temperature; measure them."""
    import torch

    from lsdiffusion.centroids import class_centroids
    from lsdiffusion.diffusion import diffusion_indices
    from lsdiffusion.entropy import TargetEntropy
    from lsdiffusion.losses import KDLoss, LabelSmoothingLoss

    device = torch.device(cfg.device)
    temps = cfg.temperatures
    task = make_hierarchical_task(cfg, seed)
    classes = list(range(cfg.num_classes))
    similar, dissimilar = task.similar_sets(), task.dissimilar_sets()
    test_x, test_y = task.test_x.to(device), task.test_y.to(device)
    train_y = task.train_y.to(device)

    criterion = LabelSmoothingLoss(alpha)

    def ls_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = criterion(logits, train_y[idx])
        return loss

    teacher = _train(
        _mlp(cfg.input_dim, cfg.teacher_width, cfg.teacher_features, cfg.num_classes, seed),
        task.train_x,
        ls_loss,
        cfg,
        seed,
    )
    with torch.no_grad():
        teacher_logits = teacher(task.train_x.to(device))
        teacher_acc = (teacher(test_x).argmax(1) == test_y).float().mean().item() * 100
    meter = TargetEntropy(temperatures=temps)
    meter.update(teacher_logits)
    report = meter.compute()

    accuracy: dict[float, float] = {}
    centroids = {}
    students: dict[float, dict[str, Any]] = {}
    for t in temps:
        kd = KDLoss(t)

        def kd_loss(logits: torch.Tensor, idx: torch.Tensor, kd: KDLoss = kd) -> torch.Tensor:
            loss: torch.Tensor = kd(logits, teacher_logits[idx])
            return loss

        student = _train(
            # the same initialisation for every teacher and temperature of a seed
            _mlp(
                cfg.input_dim, cfg.student_width, cfg.student_features, cfg.num_classes, seed + 1000
            ),
            task.train_x,
            kd_loss,
            cfg,
            seed,
        )
        with torch.no_grad():
            features = student[:-1](test_x)  # penultimate: the input of the final Linear
            logits = student[-1](features)
            accuracy[t] = (logits.argmax(1) == test_y).float().mean().item() * 100
        centroids[t] = class_centroids(features, test_y, cfg.num_classes)
        if keep_students:
            students[t] = {k: v.cpu() for k, v in student.state_dict().items()}
    diffusion = {}
    tables = {}
    for t in temps[1:]:
        table = diffusion_indices(centroids[temps[0]], centroids[t], classes, similar, dissimilar)
        diffusion[t] = (table.mean_similar, table.mean_dissimilar)
        tables[t] = table
    return _StudyOutput(
        seed,
        alpha,
        teacher_acc,
        {t: float(report[t]) for t in temps},
        accuracy,
        diffusion,
        students,
        tables,
    )


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (no traceback from each worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _study_in_worker(args: tuple[DemoConfig, int, float, bool]) -> _StudyOutput:
    import torch

    torch.set_num_threads(1)  # one core per worker: tiny networks gain nothing from more
    return _study(*args)


def run_demo(
    config: DemoConfig | None = None,
    *,
    progress: bool = False,
    out: str | Path | None = None,
    workers: int | None = None,
) -> DemoResult:
    """Run the study; optionally write its outputs into ``out`` (see `save_demo`).

    Each (seed, teacher) study is independent and seeded, so on the CPU they run
    in parallel worker processes (``workers``, default: up to the number of
    cores) with identical results to a sequential run. ``progress=True`` shows
    a progress line on stderr. The device and ``out`` are checked before any
    training (``ValueError`` naming the problem).

    Examples:
        >>> from lsdiffusion.demo import DemoConfig, run_demo
        >>> cfg = DemoConfig(superclasses=2, subclasses=2, train_per_class=8,
        ...                  test_per_class=8, epochs=1, seeds=(0,), temperatures=(1.0, 3.0))
        >>> result = run_demo(cfg, progress=False, workers=1)
        >>> sorted(result.student_accuracy)
        [(0.0, 1.0), (0.0, 3.0), (0.1, 1.0), (0.1, 3.0)]
    """
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from lsdiffusion._progress import Progress

    cfg = config or DemoConfig()
    _check_device(cfg.device, flag="config.device")
    if out is not None:
        _prepare_out(out)
    jobs = [(cfg, seed, alpha, seed == cfg.seeds[0]) for seed in cfg.seeds for alpha in cfg.alphas]
    if workers is None:
        workers = 1 if cfg.device != "cpu" else min(len(jobs), os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    result = DemoResult(cfg)
    start = time.perf_counter()
    bar = Progress(len(jobs), "teacher + students", "studies", enabled=progress)
    outputs: list[_StudyOutput] = []
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the workers: identical numbers either way
        try:
            for job in jobs:
                outputs.append(_study(*job))
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_ignore_sigint
        )
        try:
            for output in pool.map(_study_in_worker, jobs):
                outputs.append(output)
                bar.update()
        except BaseException:  # Ctrl-C included: stop the workers now, not after their study
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    bar.close()

    students = result.students
    for o in outputs:  # in job order: deterministic whatever the scheduling
        result.teacher_accuracy.setdefault(o.alpha, []).append(o.teacher_accuracy)
        for t in cfg.temperatures:
            result.student_accuracy.setdefault((o.alpha, t), []).append(o.student_accuracy[t])
            result.entropy.setdefault((o.alpha, t), []).append(o.entropy[t])
            if t in o.diffusion:
                result.diffusion.setdefault((o.alpha, t), []).append(o.diffusion[t])
                result.diffusion_tables.setdefault((o.alpha, t), []).append(o.tables[t])
            if t in o.students:
                students[(o.alpha, t)] = o.students[t]
    result.seconds = time.perf_counter() - start

    if out is not None:
        save_demo(result, out)
    return result


# ---------------------------------------------------------------------------
# outputs, written atomically
# ---------------------------------------------------------------------------

OUTPUT_FILES = ("figure.png", "diffusion.png", "results.json")
"""The files the demo writes into its folder; ``results.json`` is committed last."""
_STAGING_PREFIX = ".lsdiffusion-demo-"


def _prepare_out(out: str | Path, flag: str = "out") -> Path:
    """Create the output folder if needed and check that files can be written into it.

    Raises:
        ValueError: ``out`` is empty, is a file, a dangling symbolic link, or a
            folder that cannot be created or written into (read-only, immutable).
            The message names the path and the reason.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "a-file").write_text("x")
        ...     _prepare_out(Path(tmp) / "a-file", flag="--out")
        Traceback (most recent call last):
        ...
        ValueError: --out .../a-file exists and is not a folder
    """
    if str(out) == "":
        raise ValueError(f"{flag} must name a folder, got an empty path")
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{flag} {path} is a symbolic link to {os.readlink(path)!s}, which does not exist"
        )
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot create the folder: {_reason(exc)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=_STAGING_PREFIX + "probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write into the folder: {_reason(exc)}") from None
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _check_device(device: str, flag: str = "device") -> None:
    """Check that ``device`` names a torch device that works here.

    Raises:
        ValueError: an unknown device string (``"gpu"``), a meta device, or one
            this machine lacks (``"cuda"`` on a CPU-only torch).

    Examples:
        >>> _check_device("cpu")
        >>> _check_device("gpu", flag="--device")
        Traceback (most recent call last):
        ...
        ValueError: --device must be a torch device such as cpu, cuda or cuda:1, got 'gpu'
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"{flag} must be a torch device such as cpu, cuda or cuda:1, got {device!r}"
        ) from None
    if parsed.type == "meta":
        raise ValueError(f"{flag} meta holds no data; use cpu or an accelerator such as cuda")
    try:
        torch.zeros(1, device=parsed)
    except (RuntimeError, AssertionError) as exc:  # torch not compiled with CUDA, no such GPU
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{flag} {device} is not available here: {first}") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    saved = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for signum in received:
            signal.raise_signal(signum)


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders left by demo runs that were killed (their process is gone)."""
    for entry in out.glob(_STAGING_PREFIX + "*"):
        pid = entry.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if not entry.is_dir() or not pid.isascii() or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # alive but not ours (EPERM): leave it
            pass


def save_demo(result: DemoResult, out: str | Path) -> list[Path]:
    """Write ``results.json`` and the figures (with matplotlib) into ``out``, atomically.

    Everything is first written into a staging folder inside ``out``; then the
    files are moved into place by renames, ``results.json`` last, with Ctrl-C
    held off for those few microseconds. An interrupted run therefore leaves
    the previous complete set of outputs (or none), never a truncated file or a
    mix of two runs. A figure that this run does not draw (no matplotlib) is
    removed with the old set, so ``results.json`` describes what is there.

    Returns:
        The paths written, ``results.json`` last.

    Raises:
        ValueError: ``out`` is a file, a dangling symbolic link, or a folder
            that cannot be created or written into.
        OSError: writing failed (disk full, ...); the previous set is intact.

    Examples:
        >>> import tempfile
        >>> from lsdiffusion.demo import DemoConfig, run_demo, save_demo
        >>> cfg = DemoConfig(superclasses=2, subclasses=2, train_per_class=8,
        ...                  test_per_class=8, epochs=1, seeds=(0,), temperatures=(1.0, 3.0))
        >>> result = run_demo(cfg, workers=1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     written = save_demo(result, tmp)
        ...     sorted(p.name for p in Path(tmp).iterdir()) == sorted(p.name for p in written)
        True
        >>> written[-1].name  # committed last
        'results.json'
    """
    out_dir = _prepare_out(out)
    _remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        cfg = result.config
        figure = None
        if result.students:
            figure = _figure(
                result, result.students, make_hierarchical_task(cfg, cfg.seeds[0]), staging
            )
        drawn = sorted(p.name for p in staging.iterdir() if p.is_file())
        result.figure = str(out_dir / Path(figure).name) if figure is not None else None
        data = result.to_json()
        (staging / "results.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        for name in [*drawn, "results.json"]:
            _fsync(staging / name)
        with _signals_held():
            for name in drawn:
                os.replace(staging / name, out_dir / name)
            for name in OUTPUT_FILES[:-1]:
                if name not in drawn:
                    (out_dir / name).unlink(missing_ok=True)
            os.replace(staging / "results.json", out_dir / "results.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in [*drawn, "results.json"]]


def _figure(
    result: DemoResult, students: dict[tuple[float, float], Any], task: HierarchicalTask, out: Path
) -> str | None:
    """Figure-1-style projections and the diffusion chart; ``None`` without matplotlib.

    Three classes as in the paper's Figure 1 (two poodles and a submarine): two
    siblings of superclass 0 and one class of superclass 1, for both teachers
    at T0, at the checked T1 and at the highest T. Each student's features are
    projected as in the paper's Algorithm 1: QR of its three bias-augmented
    templates, then a PCA fitted on the *training* features plus their three
    class centroids; the *test* features and test centroids (stars) are drawn
    through that fit. Every panel has the same scale. ``diffusion.png`` draws
    the mean over classes and seeds with the seed spread (one std) as error
    bars. Writes ``figure.png`` and ``diffusion.png``; returns the first.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    import torch

    from lsdiffusion.centroids import class_centroids
    from lsdiffusion.plotting import plot_diffusion_index, plot_projections
    from lsdiffusion.projection import muller_projection, templates_from_linear

    cfg = result.config
    classes = [0, 1, cfg.subclasses]
    names = {
        0: "class 0 (superclass 0)",
        1: "class 1 (superclass 0, sibling)",
        cfg.subclasses: f"class {cfg.subclasses} (superclass 1)",
    }
    shown = [cfg.temperatures[0]] + [
        t for t in (cfg.diffusion_t1, max(cfg.temperatures)) if t in cfg.temperatures[1:]
    ]
    mask = torch.isin(task.test_y, torch.tensor(classes))
    x, y = task.test_x[mask], task.test_y[mask]
    fit_mask = torch.isin(task.train_y, torch.tensor(classes))
    fit_x, fit_y = task.train_x[fit_mask], task.train_y[fit_mask]
    panels: dict[str | tuple[str, str], tuple[Any, Any]] = {}
    for alpha in cfg.alphas:
        for t in dict.fromkeys(shown):
            model = _mlp(cfg.input_dim, cfg.student_width, cfg.student_features, cfg.num_classes, 0)
            model.load_state_dict(students[(alpha, t)])
            model.eval()
            with torch.no_grad():
                features = model[:-1](x)
                fit_features = model[:-1](fit_x)
            templates = templates_from_linear(model[-1], classes)

            def centroids_of(f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return class_centroids(f, labels, cfg.num_classes, on_empty="ignore")[classes]

            fitted = muller_projection(
                fit_features,
                templates,
                method="pca",
                centroids=centroids_of(fit_features, fit_y),
            )
            shown_split = dataclasses.replace(  # the test split through the training fit
                fitted,
                points=fitted.transform(features),
                centroids=fitted.transform(centroids_of(features, y)),
            )
            panels[(f"teacher α={alpha:g}", f"student T={t:g}")] = (shown_split, y)
    figure = plot_projections(
        panels,
        out / "figure.png",
        class_names=names,
        title=(
            f"Student features, test split (seed {cfg.seeds[0]}): QR of 3 templates + PCA "
            "fitted on train (paper's Algorithm 1)\none scale per row; stars: class centroids"
        ),
        show_templates=False,
    )
    series = {  # one (similar, dissimilar) pair per seed: the error bars are the seed spread
        f"teacher α={alpha:g}": {
            t: list(result.diffusion[(alpha, t)]) for t in cfg.temperatures[1:]
        }
        for alpha in cfg.alphas
    }
    plot_diffusion_index(
        series,
        out / "diffusion.png",
        title=(
            f"Diffusion index: mean over classes and {len(cfg.seeds)} seeds\n"
            "(error bars: ±1 std over seeds)"
        ),
        t0=cfg.temperatures[0],
    )
    return str(figure)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _float_list(values: Iterable[str]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _words(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def add_parser(subparsers: Any) -> None:
    """Register ``lsdiffusion demo``."""
    defaults = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="reproduce the LS x KD finding on a synthetic class hierarchy",
        description=(
            (__doc__.splitlines()[0] if __doc__ else "")
            + " Every argument is checked before training starts; the tables are printed "
            "before any file is written, and the files are written atomically."
        ),
    )
    p.add_argument(
        "--device",
        default=defaults.device,
        help=f"torch device: cpu, cuda, cuda:1, mps, ... (default: {defaults.device})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(defaults.seeds),
        metavar="SEED",
        help=f"distinct seeds in [0, 2^32 - 1], one full study each "
        f"(default: {_words(defaults.seeds)})",
    )
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=list(defaults.temperatures),
        metavar="T",
        help=f"KD temperatures in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]; the first is T0 of "
        f"the diffusion index, the others must be higher (default: "
        f"{_words(defaults.temperatures)})",
    )
    p.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=list(defaults.alphas),
        metavar="ALPHA",
        help=f"teachers' label smoothing in [0, 1): 0 and at least one > 0 "
        f"(default: {_words(defaults.alphas)})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help=f"training epochs of every teacher and student (default: {defaults.epochs})",
    )
    p.add_argument(
        "--diffusion-t1",
        type=float,
        default=None,
        metavar="T1",
        help="T1 of the diffusion-index check (default: 3 if among the temperatures, "
        "else the second temperature)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel worker processes on the CPU (default: one per core, at most one per "
        "study; 1 on an accelerator)",
    )
    p.add_argument(
        "--out",
        default="lsdiffusion-demo",
        metavar="DIR",
        help="output folder for results.json and the figures; created if missing "
        "(default: lsdiffusion-demo)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress line on stderr (default: shown)",
    )
    p.set_defaults(func=_main)


def _config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The [`DemoConfig`][lsdiffusion.demo.DemoConfig] of parsed ``lsdiffusion demo`` arguments.

    Raises:
        ValueError: an argument is out of range; the message names its flag.
    """
    temps = _float_list(args.temperatures)
    t1 = args.diffusion_t1
    if t1 is None:
        t1 = 3.0 if 3.0 in temps[1:] else (temps[1] if len(temps) > 1 else 3.0)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    try:
        return DemoConfig(
            seeds=tuple(args.seeds),
            temperatures=temps,
            alphas=_float_list(args.alphas),
            epochs=args.epochs,
            diffusion_t1=t1,
            device=args.device,
        )
    except ValueError as exc:  # name the flag: "temperatures must ..." -> "--temperatures must ..."
        message = str(exc)
        for name in ("temperatures", "seeds", "alphas", "epochs"):
            if message.startswith(name + " "):
                message = f"--{message}"
        message = message.replace("diffusion_t1=", "--diffusion-t1 ")
        raise ValueError(message) from None


def _main(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"lsdiffusion demo: error: {message}", file=sys.stderr)
        return 2

    try:  # every check before any training
        config = _config_from_args(args)
        _check_device(config.device, flag="--device")
        out = _prepare_out(args.out, flag="--out")
    except ValueError as exc:
        return fail(str(exc))
    try:
        result = run_demo(config, progress=not args.no_progress, workers=args.workers)
    except KeyboardInterrupt:
        print("lsdiffusion demo: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(result.tables())
    print()
    try:
        written = save_demo(result, out)
    except (OSError, ValueError) as exc:
        print(f"lsdiffusion demo: error: writing {out} failed: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(path) for path in written))
    if result.figure is None:
        print(
            "figures skipped: matplotlib is not installed; install the [plot] extra "
            '(pip install "lsdiffusion[plot]", or ".[plot]" from a clone)'
        )
    print(f"total time {result.seconds:.1f} s on {config.device}")
    return 0
