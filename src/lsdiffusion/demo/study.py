"""The studies: one teacher and its students per (seed, alpha), run in worker processes."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsdiffusion.demo.config import DemoConfig, check_device
from lsdiffusion.demo.geometry import GeometryRow, measure_geometry
from lsdiffusion.demo.output import STOP_SIGNALS, prepare_out, save_demo, signals_blocked
from lsdiffusion.demo.result import DemoResult
from lsdiffusion.demo.task import make_hierarchical_task, mlp, train

__all__ = ["StudyOutput", "run_demo", "run_study"]


@dataclass
class StudyOutput:
    """What one (seed, teacher alpha) study sends back to the parent process."""

    seed: int
    alpha: float
    teacher_accuracy: float
    entropy: dict[float, float]
    student_accuracy: dict[float, float]
    diffusion: dict[float, tuple[float, float]]
    students: dict[float, dict[str, Any]]  # state dicts, first seed only (for the figure)
    tables: dict[float, Any] = field(default_factory=dict)  # per-class DiffusionIndexTable
    teacher_geometry: GeometryRow | None = None
    student_geometry: dict[float, GeometryRow] = field(default_factory=dict)


def run_study(cfg: DemoConfig, seed: int, alpha: float, keep_students: bool) -> StudyOutput:
    """Train one teacher and its students at every temperature; measure them."""
    import torch

    from lsdiffusion.centroids import class_centroids
    from lsdiffusion.diffusion import diffusion_indices
    from lsdiffusion.entropy import TargetEntropy
    from lsdiffusion.losses import LabelSmoothingLoss

    device = torch.device(cfg.device)
    temps = cfg.temperatures
    task = make_hierarchical_task(cfg, seed)
    classes = list(range(cfg.num_classes))
    similar, dissimilar = task.similar_sets(), task.dissimilar_sets()
    sets = (cfg.num_classes, similar, dissimilar)
    test_x, test_y = task.test_x.to(device), task.test_y.to(device)
    train_y = task.train_y.to(device)

    criterion = LabelSmoothingLoss(alpha)

    def ls_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = criterion(logits, train_y[idx])
        return loss

    teacher = train(
        mlp(cfg.input_dim, cfg.teacher_width, cfg.teacher_features, cfg.num_classes, seed),
        task.train_x,
        ls_loss,
        cfg,
        seed,
    )
    with torch.no_grad():
        teacher_logits = teacher(task.train_x.to(device))
        teacher_acc = (teacher(test_x).argmax(1) == test_y).float().mean().item() * 100
        teacher_features = teacher[:-1](test_x)
    teacher_geometry = measure_geometry(teacher_features, test_y, *sets)
    student_geometry: dict[float, GeometryRow] = {}
    meter = TargetEntropy(temperatures=temps)
    meter.update(teacher_logits)
    report = meter.compute()

    accuracy: dict[float, float] = {}
    centroids = {}
    students: dict[float, dict[str, Any]] = {}
    for t in temps:
        student = _distil(cfg, task.train_x, teacher_logits, t, seed)
        with torch.no_grad():
            features = student[:-1](test_x)  # penultimate: the input of the final Linear
            logits = student[-1](features)
            accuracy[t] = (logits.argmax(1) == test_y).float().mean().item() * 100
        centroids[t] = class_centroids(features, test_y, cfg.num_classes)
        student_geometry[t] = measure_geometry(features, test_y, *sets)
        if keep_students:
            students[t] = {k: v.cpu() for k, v in student.state_dict().items()}
    diffusion = {}
    tables = {}
    for t in temps[1:]:
        table = diffusion_indices(centroids[temps[0]], centroids[t], classes, similar, dissimilar)
        diffusion[t] = (table.mean_similar, table.mean_dissimilar)
        tables[t] = table
    return StudyOutput(
        seed,
        alpha,
        teacher_acc,
        {t: float(report[t]) for t in temps},
        accuracy,
        diffusion,
        students,
        tables,
        teacher_geometry,
        student_geometry,
    )


def _distil(cfg: DemoConfig, train_x: Any, teacher_logits: Any, t: float, seed: int) -> Any:
    """A student distilled from ``teacher_logits`` at temperature ``t`` (beta = 1)."""
    import torch

    from lsdiffusion.losses import KDLoss

    kd = KDLoss(t)

    def kd_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = kd(logits, teacher_logits[idx])
        return loss

    return train(
        # the same initialisation for every teacher and temperature of a seed
        mlp(cfg.input_dim, cfg.student_width, cfg.student_features, cfg.num_classes, seed + 1000),
        train_x,
        kd_loss,
        cfg,
        seed,
    )


# Signals a worker never acts on: the parent stops its workers itself (SIGTERM). SIGTERM
# stays deliverable, for that and for a ``kill`` of the whole process group.
_PARENTS_SIGNALS = tuple(s for s in STOP_SIGNALS if s != signal.SIGTERM)


def _ignore_parents_signals() -> None:
    """Worker initializer: Ctrl-C and SIGHUP are the parent's to handle (no worker tracebacks)."""
    for s in _PARENTS_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _study_in_worker(args: tuple[DemoConfig, int, float, bool]) -> StudyOutput:
    import torch

    torch.set_num_threads(1)  # one core per worker: tiny networks gain nothing from more
    return run_study(*args)


def _run_jobs(
    jobs: list[tuple[DemoConfig, int, float, bool]], workers: int, bar: Any
) -> list[StudyOutput]:
    """Run the studies in job order, in this process (``workers == 1``) or in a pool."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    outputs: list[StudyOutput] = []
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the workers: identical numbers either way
        try:
            for job in jobs:
                outputs.append(run_study(*job))
                bar.update()
        finally:
            torch.set_num_threads(threads)
        return outputs
    # The pool's queues start multiprocessing's resource tracker and map() submits every
    # job, which starts the workers: all inherit the blocked signals, so a Ctrl-C or SIGHUP
    # sent to the process group reaches only this process, even before a worker's
    # initializer runs; this process then stops them (SIGTERM).
    with signals_blocked(_PARENTS_SIGNALS):
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_ignore_parents_signals
        )
    try:
        with signals_blocked(_PARENTS_SIGNALS):
            results = pool.map(_study_in_worker, jobs)
        for output in results:
            outputs.append(output)
            bar.update()
    except BaseException:  # Ctrl-C included: stop the workers now, not after their study
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return outputs


def run_demo(
    config: DemoConfig | None = None,
    *,
    progress: bool = False,
    out: str | Path | None = None,
    workers: int | None = None,
) -> DemoResult:
    """Run the study; optionally write its outputs into ``out``.

    The outputs are written by [`save_demo`][lsdiffusion.demo.save_demo].

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

    from lsdiffusion._progress import Progress

    cfg = config or DemoConfig()
    check_device(cfg.device, flag="config.device")
    if out is not None:
        prepare_out(out)
    jobs = [(cfg, seed, alpha, seed == cfg.seeds[0]) for seed in cfg.seeds for alpha in cfg.alphas]
    if workers is None:
        workers = 1 if cfg.device != "cpu" else min(len(jobs), os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    result = DemoResult(cfg)
    start = time.perf_counter()
    with Progress(len(jobs), "teacher + students", "studies", enabled=progress) as bar:
        outputs = _run_jobs(jobs, workers, bar)

    students = result.students
    for o in outputs:  # in job order: deterministic whatever the scheduling
        result.teacher_accuracy.setdefault(o.alpha, []).append(o.teacher_accuracy)
        if o.teacher_geometry is not None:
            result.teacher_geometry.setdefault(o.alpha, []).append(o.teacher_geometry)
        for t in cfg.temperatures:
            result.student_accuracy.setdefault((o.alpha, t), []).append(o.student_accuracy[t])
            result.entropy.setdefault((o.alpha, t), []).append(o.entropy[t])
            if t in o.diffusion:
                result.diffusion.setdefault((o.alpha, t), []).append(o.diffusion[t])
                result.diffusion_tables.setdefault((o.alpha, t), []).append(o.tables[t])
            if t in o.students:
                students[(o.alpha, t)] = o.students[t]
            if t in o.student_geometry:
                result.student_geometry.setdefault((o.alpha, t), []).append(o.student_geometry[t])
    result.seconds = time.perf_counter() - start

    if out is not None:
        save_demo(result, out)
    return result
