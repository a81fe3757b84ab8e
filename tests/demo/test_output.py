"""The demo's output helpers: stop signals, and the folders a run created."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from lsdiffusion.demo.output import (
    STOP_SIGNALS,
    DemoInterrupted,
    StopSignals,
    missing_folders,
    remove_empty,
    signals_held,
)


@pytest.fixture
def saved_handlers():
    """Put the process's signal handlers back after the test, whatever it installed."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    hook = sys.unraisablehook
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    sys.unraisablehook = hook


@pytest.mark.usefixtures("saved_handlers")
def test_the_first_stop_signal_raises_and_later_ones_are_ignored() -> None:
    stop = StopSignals()
    stop.install()
    with pytest.raises(DemoInterrupted) as info:
        signal.raise_signal(signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM
    assert info.value.exit_code == 143
    assert info.value.name == "SIGTERM"
    assert isinstance(info.value, KeyboardInterrupt)  # Ctrl-C handlers catch it too
    signal.raise_signal(signal.SIGINT)  # the clean-up is not cut short
    signal.raise_signal(signal.SIGHUP)
    stop.restore()  # a signal came: the handlers stay, so later ones stay ignored
    assert signal.getsignal(signal.SIGINT) == stop._handle
    signal.raise_signal(signal.SIGINT)


@pytest.mark.usefixtures("saved_handlers")
def test_a_deferred_block_runs_to_its_end_before_the_signal_is_raised() -> None:
    stop = StopSignals()
    stop.install()
    done = []

    def block() -> None:
        with stop.deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("rest of the block")

    with pytest.raises(DemoInterrupted) as info:
        block()
    assert done == ["rest of the block"]
    assert info.value.exit_code == 130


@pytest.mark.usefixtures("saved_handlers")
def test_restore_without_a_signal_puts_the_handlers_back() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    stop = StopSignals()
    stop.install()
    assert signal.getsignal(signal.SIGHUP) == stop._handle
    stop.restore()
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


@pytest.mark.usefixtures("saved_handlers")
def test_signals_held_holds_sighup_too() -> None:
    stop = StopSignals()
    stop.install()
    done = []

    def commit() -> None:
        with signals_held():
            signal.raise_signal(signal.SIGHUP)
            done.append("commit")

    with pytest.raises(DemoInterrupted) as info:
        commit()
    assert done == ["commit"]
    assert info.value.signum == signal.SIGHUP


class _SignalledWhileCollected:
    """Sends itself ``signum`` from ``__del__``: a signal that lands in a finalizer."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        signal.raise_signal(self.signum)


@pytest.mark.usefixtures("saved_handlers")
def test_a_signal_swallowed_by_a_finalizer_is_sent_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = StopSignals()
    stop.install()

    def collect() -> None:
        obj = _SignalledWhileCollected(signal.SIGTERM)
        del obj  # DemoInterrupted raised in __del__: Python would only print it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the signal, sent again, is raised here
            time.sleep(0.001)

    with pytest.raises(DemoInterrupted) as info:
        collect()
    assert info.value.signum == signal.SIGTERM
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.usefixtures("saved_handlers")
def test_finish_ignores_later_signals_and_restore_puts_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    stop = StopSignals()
    stop.install()
    stop.finish()
    signal.raise_signal(signal.SIGINT)  # the run is complete: nothing to interrupt
    stop.restore()
    assert signal.getsignal(signal.SIGINT) == before


def test_missing_folders_and_remove_empty(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    created = missing_folders(target)
    assert created == [target, target.parent, target.parent.parent]
    assert missing_folders(tmp_path) == []
    target.mkdir(parents=True)
    (target.parent / "keep.txt").write_text("x")  # b holds something: b and a stay
    remove_empty(created)
    assert not target.exists()
    assert target.parent.is_dir()
    assert (tmp_path / "a").is_dir()
    remove_empty(created)  # safe to repeat
