"""The demo's outputs, written atomically, and the signals held while they are committed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from lsdiffusion.demo.result import DemoResult

__all__ = ["OUTPUT_FILES", "STAGING_PREFIX", "prepare_out", "save_demo", "signals_held"]

OUTPUT_FILES = ("figure.png", "diffusion.png", "results.json")
"""The files the demo writes into its folder; ``results.json`` is committed last."""
STAGING_PREFIX = ".lsdiffusion-demo-"
"""Name prefix of the staging folders (and write probes) inside the output folder."""


def prepare_out(out: str | Path, flag: str = "out") -> Path:
    """Create the output folder if needed and check that files can be written into it.

    Raises:
        ValueError: ``out`` is empty, is a file, a dangling symbolic link, or a
            folder that cannot be created or written into (read-only, immutable).
            The message names the path and the reason.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "a-file").write_text("x")
        ...     prepare_out(Path(tmp) / "a-file", flag="--out")
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
        fd, probe = tempfile.mkstemp(prefix=STAGING_PREFIX + "probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write into the folder: {_reason(exc)}") from None
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
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
    for entry in out.glob(STAGING_PREFIX + "*"):
        pid = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
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

    Example:
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
    from lsdiffusion.demo import figures
    from lsdiffusion.demo.task import make_hierarchical_task

    out_dir = prepare_out(out)
    _remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        cfg = result.config
        figure = None
        if result.students:
            figure = figures.draw_figures(
                result, result.students, make_hierarchical_task(cfg, cfg.seeds[0]), staging
            )
        drawn = sorted(p.name for p in staging.iterdir() if p.is_file())
        result.figure = str(out_dir / Path(figure).name) if figure is not None else None
        data = result.to_json()
        (staging / "results.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        for name in [*drawn, "results.json"]:
            _fsync(staging / name)
        with signals_held():
            for name in drawn:
                os.replace(staging / name, out_dir / name)
            for name in OUTPUT_FILES[:-1]:
                if name not in drawn:
                    (out_dir / name).unlink(missing_ok=True)
            os.replace(staging / "results.json", out_dir / "results.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in [*drawn, "results.json"]]
