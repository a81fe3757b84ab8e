"""The progress line of the command line and of ``iter_features(progress=True)``."""

from __future__ import annotations

import io

from lsdiffusion._progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_output_is_one_line_at_the_start_and_per_tenth() -> None:
    out = io.StringIO()
    with Progress(100, "work", "items", stream=out) as bar:
        # a log shows the start at once, not only after the first tenth of the work
        assert out.getvalue() == "work: 0/100 items (0 s)\n"
        for _ in range(100):
            bar.update()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"work: {n}/100 items" for n in range(0, 101, 10)
    ]


def test_terminal_output_is_redrawn_in_place_and_ends_the_line() -> None:
    out = FakeTerminal()
    bar = Progress(3, "studies", "jobs", stream=out)
    for _ in range(3):
        bar.update()
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert text.startswith("\rstudies: 0/3 jobs (")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert text.rsplit("\r", 1)[1].startswith("studies: 3/3 jobs (")


def test_disabled_and_unknown_total() -> None:
    out = io.StringIO()
    with Progress(5, "x", "y", enabled=False, stream=out) as bar:
        bar.update(5)
    assert out.getvalue() == ""
    assert bar.count == 5
    with Progress(None, "batches", "seen", stream=out) as bar:
        bar.update(7)
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "batches: 0 seen",
        "batches: 7 seen",
    ]


def test_an_exception_ends_the_terminal_line_without_a_final_count() -> None:
    out = FakeTerminal()
    try:
        with Progress(3, "studies", "jobs", stream=out) as bar:
            bar.update()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    text = out.getvalue()
    assert text.endswith("\n")  # what is printed next starts on its own line
    assert text.count("\n") == 1
    assert "3/3" not in text
    bar.close()  # a later close draws nothing more
    assert out.getvalue() == text


def test_an_exception_in_a_log_adds_nothing() -> None:
    out = io.StringIO()
    try:
        with Progress(3, "studies", "jobs", stream=out):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert out.getvalue() == "studies: 0/3 jobs (0 s)\n"
