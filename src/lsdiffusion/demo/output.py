"""The demo's outputs, written atomically, and the signals held while they are committed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lsdiffusion.demo.result import DemoResult

__all__ = [
    "OUTPUT_FILES",
    "STAGING_PREFIX",
    "STOP_SIGNALS",
    "DemoInterrupted",
    "StopSignals",
    "missing_folders",
    "prepare_out",
    "remove_empty",
    "save_demo",
    "signals_blocked",
    "signals_held",
]

OUTPUT_FILES = ("figure.png", "diffusion.png", "results.json")
"""The files the demo writes into its folder; ``results.json`` is committed last."""
STAGING_PREFIX = ".lsdiffusion-demo-"
"""Name prefix of the staging folders (and write probes) inside the output folder."""


STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM) + (
    (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
)
"""The signals that stop the demo cleanly: Ctrl-C, ``kill <pid>``, a closed terminal."""


def missing_folders(out: str | Path) -> list[Path]:
    """The folders that creating ``out`` would create, deepest first.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     [p.name for p in missing_folders(Path(tmp) / "a" / "b")]
        ['b', 'a']
    """
    missing = []
    path = Path(out).absolute()
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty; one that is not stops it.

    ``folders`` comes from `missing_folders`:
    what a run created, which it removes again when it wrote nothing.
    """
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): leave it and everything above
            return


def prepare_out(out: str | Path, flag: str = "out") -> Path:
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
        with signals_held():  # the probe never outlives the check
            fd, probe = tempfile.mkstemp(prefix=STAGING_PREFIX + "probe-", dir=path)
            os.close(fd)
            os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write into the folder: {_reason(exc)}") from None
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class DemoInterrupted(KeyboardInterrupt):
    """A stop signal (one of `STOP_SIGNALS`) ended the demo.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles the others too.

    Attributes:
        signum: the signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention, 128 + the signal number: 130 (SIGINT), 143 (SIGTERM), 129."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        """The signal's name, such as ``"SIGTERM"``."""
        return signal.Signals(self.signum).name


class StopSignals:
    """Turn the first of SIGINT, SIGTERM and SIGHUP into one `DemoInterrupted`.

    While installed (main thread only; elsewhere a no-op), the first stop
    signal raises `DemoInterrupted` in the main thread, or, inside
    `deferred`, at the end of
    that block (imports that must not be cut: a ``KeyboardInterrupt`` inside
    torch's extension init aborts the interpreter). Every later signal is
    ignored, so the clean-up after the first runs to its end and prints no
    traceback; that is why `restore`
    leaves the handlers in place once a signal has come.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._finished = False
        self._deferring = 0
        self._saved: dict[int, Any] = {}
        self._saved_hook = sys.unraisablehook

    def install(self) -> None:
        """Install the handlers (a no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in STOP_SIGNALS:
            self._saved[s] = signal.signal(s, self._handle)
        self._saved_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def restore(self) -> None:
        """Put back the previous handlers, unless a signal came (then later ones stay ignored)."""
        if self.received is None and self._saved:
            for s, handler in self._saved.items():
                signal.signal(s, handler)
            sys.unraisablehook = self._saved_hook
        self._saved = {}

    def _unraisable(self, unraisable: Any) -> None:
        """Send again a signal that a finalizer swallowed (with a traceback).

        A signal that lands in a ``__del__`` or a weakref callback raises there,
        and Python only reports it; sent again, it is raised where it stops the run.
        """
        exc = unraisable.exc_value
        if isinstance(exc, DemoInterrupted) and self.received == exc.signum:
            self.received = None
            # from another thread, a moment later: raised here it would land in this hook
            resend = threading.Timer(0.005, os.kill, (os.getpid(), exc.signum))
            resend.daemon = True
            resend.start()
        else:
            self._saved_hook(unraisable)

    def finish(self, *, until_exit: bool = False) -> None:
        """The work is done: ignore every later signal (nothing is left to interrupt).

        Args:
            until_exit: the process ends next: also block the signals in this thread, so
                one that comes while Python shuts down (when it has put back the default
                actions) stays pending and is dropped at the exit.
        """
        self._finished = True
        if until_exit and hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None or self._finished:
            return
        self.received = signum
        if not self._deferring:
            raise DemoInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Let the block run to its end; a stop signal received meanwhile is raised after it."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self.received is not None:
                raise DemoInterrupted(self.received)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop signals until the block ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    saved = {s: signal.signal(s, hold) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for signum in received:
            signal.raise_signal(signum)


@contextlib.contextmanager
def signals_blocked(signals: tuple[int, ...]) -> Iterator[None]:
    """Block ``signals`` in this thread for the block: processes started in it inherit the mask.

    The demo starts its workers inside it with SIGINT and SIGHUP blocked, so a
    Ctrl-C or a closed terminal (sent to the whole process group) reaches only
    the main process, which stops the workers itself (SIGTERM), even while a
    worker is still importing torch. A signal that arrives meanwhile is
    delivered when the block ends. A no-op where ``pthread_sigmask`` is missing.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
    from lsdiffusion.demo import figures
    from lsdiffusion.demo.task import make_hierarchical_task

    out_dir = prepare_out(out)
    _remove_stale_staging(out_dir)
    staging: Path | None = None
    try:
        with signals_held():  # made and named in one step, so the clean-up always sees it
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
        cfg = result.config
        figure = None
        if result.students:
            figure = figures.draw_figures(
                result, result.students, make_hierarchical_task(cfg, cfg.seeds[0]), staging
            )
        drawn = sorted(p.name for p in staging.iterdir() if p.is_file())
        result.figure = str(out_dir / Path(figure).name) if figure is not None else None
        result.figures = [str(out_dir / name) for name in drawn]
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
        if staging is not None:
            with signals_held():  # removed whole, even when a signal comes meanwhile
                shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in [*drawn, "results.json"]]
