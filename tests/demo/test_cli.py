"""``lsdiffusion demo`` as a command: argument checks before training, output order,
atomic writes that survive interrupts, the ``[plot]`` hint, ``--help`` defaults."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import lsdiffusion.demo.cli as demo_cli
import lsdiffusion.demo.study as demo_study
from lsdiffusion.cli import build_parser, main
from lsdiffusion.demo import DemoConfig, DemoResult, run_demo, save_demo
from lsdiffusion.demo.output import DemoInterrupted

FAST = ["--seeds", "0", "--epochs", "1", "--temperatures", "1", "3", "--workers", "1"]


def _read_only_folder(path: Path) -> Path:
    path.mkdir()
    if os.geteuid() == 0:  # root ignores permissions; an immutable folder stops it
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
            pytest.skip("running as root without chattr: cannot make a read-only folder")
    else:
        path.chmod(0o555)
    return path


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o755)


BAD = [
    (["--seeds", "99999999999999999999999"], "--seeds must be integers in [0, 4294967295]"),
    (["--seeds", "-1"], "--seeds must be integers in [0, 4294967295] (32-bit), got [-1]"),
    (["--seeds", "0", "0"], "--seeds must be distinct (each runs one study), got [0, 0]"),
    (["--temperatures", "1", "1e-300"], "--temperatures must be finite and in [0.01, 1000]"),
    (["--temperatures", "1", "inf"], "--temperatures must be finite and in [0.01, 1000]"),
    (["--temperatures", "1", "nan"], "got [1.0, nan]"),
    (["--temperatures", "3", "1"], "after the first (T0 = 3) must be > T0"),
    (["--temperatures", "1", "2", "2"], "--temperatures must be distinct"),
    (["--temperatures", "1"], "--temperatures must hold T0 and at least one T1"),
    (["--alphas", "0", "0.1", "0.1"], "--alphas must be distinct"),
    (["--alphas", "0", "1"], "--alphas must be in [0, 1)"),
    (["--alphas", "0.1"], "at least one alpha > 0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--temperatures", "1", "2", "--diffusion-t1", "5"], "--diffusion-t1 5.0 must be one of"),
    (["--device", "gpu"], "--device must be a torch device such as cpu, cuda or cuda:1, got 'gpu'"),
    (["--device", "meta"], "--device meta holds no data"),
    (["--out", ""], "--out must name a folder, got an empty path"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
@pytest.mark.usefixtures("no_training")
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("lsdiffusion demo: error: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1


@pytest.mark.usefixtures("no_training")
def test_bad_out_paths_exit_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    cases = {
        a_file: f"--out {a_file} exists and is not a folder",
        dangling: f"--out {dangling} is a symbolic link to {tmp_path / 'missing'}, which does not",
        a_file / "sub": f"--out {a_file / 'sub'}: cannot create the folder: Not a directory",
    }
    for out, message in cases.items():
        assert main(["demo", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1
    assert not (tmp_path / "missing").exists()

    locked = _read_only_folder(tmp_path / "locked")
    try:
        assert main(["demo", "--out", str(locked)]) == 2
        err = capsys.readouterr().err
        assert f"--out {locked}: cannot write into the folder: " in err
        assert main(["demo", "--out", str(locked / "sub")]) == 2
        assert "cannot create the folder" in capsys.readouterr().err
    finally:
        _writable_again(locked)
    assert list(locked.iterdir()) == []  # the write probe left nothing behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_cpu_torch_is_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lsdiffusion", "demo", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("lsdiffusion demo: error: --device cuda is not available here")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_library_checks_out_and_device_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fields: dict[str, object]
) -> None:
    def trained(*args: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(demo_study, "run_study", trained)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    cfg = DemoConfig(**tiny_fields, seeds=(0,), temperatures=(1.0, 3.0), epochs=1)
    with pytest.raises(ValueError, match=r"^out .* exists and is not a folder$"):
        run_demo(cfg, out=a_file, workers=1)
    with pytest.raises(ValueError, match=r"^config\.device must be a torch device"):
        run_demo(DemoConfig(**tiny_fields, device="gpu"), workers=1)


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = DemoConfig()
    for shown in (
        f"(default: {d.device})",
        "(default: " + " ".join(f"{s:g}" for s in d.seeds) + ")",
        "(default: " + " ".join(f"{t:g}" for t in d.temperatures) + ")",
        "(default: " + " ".join(f"{a:g}" for a in d.alphas) + ")",
        f"(default: {d.epochs})",
        "(default: lsdiffusion-demo)",
        "(default: shown)",
        "(default: 3 if among the temperatures",
        "(default: one per core",
    ):
        assert shown in text, shown
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["demo"]  # type: ignore[attr-defined]
    for action in sub._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest


@pytest.mark.usefixtures("tiny_cli")
def test_tables_are_printed_before_any_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[pytest.CaptureResult[str]] = []
    real = demo_cli.save_demo

    def save(result: DemoResult, out: Path) -> list[Path]:
        seen.append(capsys.readouterr())  # what was printed before the first write
        assert not (tmp_path / "run" / "results.json").exists()
        return real(result, out)

    monkeypatch.setattr(demo_cli, "save_demo", save)
    assert main(["demo", *FAST, "--out", str(tmp_path / "run")]) == 0
    assert "Table 2" in seen[0].out
    assert "Table 3" in seen[0].out
    assert "teacher + students: 2/2 studies" in seen[0].err  # progress is on in the command line
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert f"wrote {run / 'diffusion.png'}, {run / 'figure.png'}, {run / 'results.json'}" in out


@pytest.mark.usefixtures("tiny_cli")
def test_called_from_python_the_signal_handlers_come_back(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    hook = sys.unraisablehook
    assert main(["demo", *FAST, "--no-progress", "--out", str(tmp_path)]) == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert sys.unraisablehook is hook
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # nothing left blocked


@pytest.mark.usefixtures("tiny_cli")
def test_a_failed_write_still_shows_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(result: DemoResult, out: Path) -> list[Path]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo_cli, "save_demo", full)
    assert main(["demo", *FAST, "--no-progress", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "Table 2" in captured.out
    assert captured.err == (
        f"lsdiffusion demo: error: writing {tmp_path} failed: [Errno 28] No space left on device\n"
    )


@pytest.mark.usefixtures("tiny_cli")
def test_without_matplotlib_the_plot_extra_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an older run left figures; the new set has none, so they go with the old set
    (tmp_path / "figure.png").write_bytes(b"old")
    (tmp_path / "diffusion.png").write_bytes(b"old")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["demo", *FAST, "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == f"wrote {tmp_path / 'results.json'}"
    assert out[-2] == (
        "figures skipped: matplotlib is not installed; install the [plot] extra "
        '(pip install "lsdiffusion[plot]", or ".[plot]" from a clone)'
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["figure"] is None
    assert data["figures"] == []


@pytest.mark.usefixtures("tiny_cli")
def test_ctrl_c_during_training_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_cli, "run_demo", interrupted)
    assert main(["demo", *FAST, "--out", str(tmp_path / "run")]) == 130
    captured = capsys.readouterr()
    assert captured.err == "lsdiffusion demo: interrupted; nothing was written\n"
    assert not (tmp_path / "run").exists()  # the folder this run created goes with it
    assert tmp_path.exists()


@pytest.mark.usefixtures("tiny_cli")
def test_an_interrupted_run_keeps_a_folder_it_did_not_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise DemoInterrupted(signal.SIGTERM)

    monkeypatch.setattr(demo_cli, "run_demo", interrupted)
    assert main(["demo", *FAST, "--out", str(tmp_path)]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "lsdiffusion demo: interrupted by SIGTERM; nothing was written\n"
    )
    assert tmp_path.is_dir()


@pytest.mark.usefixtures("tiny_cli")
def test_an_interrupt_after_the_commit_says_the_outputs_are_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    real = demo_cli.save_demo

    def save_then_interrupted(result: DemoResult, where: Path) -> list[Path]:
        real(result, where)
        raise DemoInterrupted(signal.SIGINT)  # as signals_held() re-raises a held Ctrl-C

    monkeypatch.setattr(demo_cli, "save_demo", save_then_interrupted)
    assert main(["demo", *FAST, "--no-progress", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "Table 2" in captured.out
    assert (
        captured.err == f"lsdiffusion demo: interrupted; {out} holds this run's complete outputs\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["diffusion.png", "figure.png", "results.json"]


@pytest.mark.usefixtures("tiny_cli")
def test_a_failed_write_removes_the_folder_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(result: DemoResult, out: Path) -> list[Path]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo_cli, "save_demo", full)
    assert main(["demo", *FAST, "--no-progress", "--out", str(tmp_path / "a" / "b")]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic outputs


@pytest.fixture(scope="module")
def result_file(
    tmp_path_factory: pytest.TempPathFactory, tiny_run: tuple[DemoResult, object, Path]
) -> Path:
    """A tiny finished run, pickled for the subprocesses that write it."""
    result, _, _ = tiny_run
    path = tmp_path_factory.mktemp("result") / "result.pkl"
    path.write_bytes(pickle.dumps(result))
    return path


# Writes the pickled result into OUT, interrupted at a chosen point.
WRITER = textwrap.dedent(
    """
    import os, pickle, signal, sys
    import lsdiffusion.demo.figures as figures
    import lsdiffusion.demo.output as output

    result_file, out, when, how = sys.argv[1:]
    result = pickle.loads(open(result_file, "rb").read())
    result.seconds = 12345.0  # tells this run's results.json from the old one
    sig = {"kill": signal.SIGKILL, "int": signal.SIGINT}[how]
    if when == "staged":  # after the figures are written, before results.json
        real = figures.draw_figures
        def figure(*args):
            path = real(*args)
            os.kill(os.getpid(), sig)
            return path
        figures.draw_figures = figure
    elif when == "commit":  # between the renames that put the new files in place
        real = os.replace
        calls = []
        def replace(src, dst):
            calls.append(dst)
            real(src, dst)
            if len(calls) == 1:
                os.kill(os.getpid(), sig)
        os.replace = replace
    try:
        output.save_demo(result, out)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def _write(result_file: Path, out: Path, when: str, how: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(result_file), str(out), when, how],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.parametrize("how", ["kill", "int"])
def test_interrupt_between_files_leaves_the_old_set(
    result_file: Path, tmp_path: Path, how: str
) -> None:
    out = tmp_path / "run"
    written = save_demo(pickle.loads(result_file.read_bytes()), out)
    assert [p.name for p in written] == ["diffusion.png", "figure.png", "results.json"]
    old = _snapshot(out)
    assert old["figure.png"][:8] == b"\x89PNG\r\n\x1a\n"

    rc = _write(result_file, out, "staged", how)
    assert rc == (-signal.SIGKILL if how == "kill" else 130)
    assert _snapshot(out) == old  # the complete old set, byte for byte
    staging = [p for p in out.iterdir() if p.is_dir()]
    assert len(staging) == (1 if how == "kill" else 0)  # a killed run cannot clean up

    # the next run removes the dead run's staging folder and writes a complete new set
    save_demo(pickle.loads(result_file.read_bytes()), out)
    assert sorted(p.name for p in out.iterdir()) == ["diffusion.png", "figure.png", "results.json"]


def test_ctrl_c_during_the_renames_completes_the_new_set(result_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    save_demo(pickle.loads(result_file.read_bytes()), out)
    assert _write(result_file, out, "commit", "int") == 130  # the interrupt came after the commit
    data = json.loads((out / "results.json").read_text())
    assert data["seconds"] == 12345.0
    assert data["figure"] == str(out / "figure.png")
    assert data["figures"] == [str(out / "diffusion.png"), str(out / "figure.png")]  # both
    assert sorted(p.name for p in out.iterdir()) == ["diffusion.png", "figure.png", "results.json"]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status  # a zombie has ended


def _demo(out: Path, *extra: str, **kwargs: object) -> subprocess.Popen[str]:
    argv = ["demo", "--seeds", "0", "--workers", "2", "--out", str(out), *extra]
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "lsdiffusion", *argv],
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs},
    )


def _wait_for(condition: object, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# (signal, message, to the whole process group as a terminal sends Ctrl-C and SIGHUP)
STOPS = [
    (signal.SIGINT, "", False),
    (signal.SIGTERM, " by SIGTERM", False),
    (signal.SIGHUP, " by SIGHUP", False),
    (signal.SIGINT, "", True),
    (signal.SIGHUP, " by SIGHUP", True),
]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("signum", "by", "group"),
    STOPS,
    ids=[f"{s.name}{' to the group' if g else ''}" for s, _, g in STOPS],
)
def test_a_stop_signal_ends_the_workers_and_the_resource_tracker(
    tmp_path: Path, signum: signal.Signals, by: str, group: bool
) -> None:
    out = tmp_path / "run"
    proc = _demo(out, "--no-progress", start_new_session=True)
    try:
        # the folder exists once every argument has been checked; then two workers and
        # multiprocessing's resource tracker start, and the studies take far longer
        _wait_for(lambda: out.is_dir() and len(_children(proc.pid)) >= 3, proc, "workers")
        children = _children(proc.pid)
        if group:  # the workers get it too, maybe while they still import torch
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)  # workers terminated, not awaited
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    assert stdout == ""
    assert stderr == f"lsdiffusion demo: interrupted{by}; nothing was written\n"
    assert not out.exists()  # an interrupted first run leaves no empty folder
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _running(pid)]


# When the signal comes: seconds after the start (the imports, the checks, the workers'
# start) or once the tables are printed (the significance tests and the figures).
MOMENTS = ["0.3 s", "1 s", "2 s", "4 s", "tables", "tables + 0.5 s", "tables + 1 s"]
OUTPUT_FILES_SORTED = ["diffusion.png", "figure.png", "results.json"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_at_any_moment_is_one_line_and_130(tmp_path: Path, moment: str) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the tables' lines arrive as printed
    proc = _demo(out, "--no-progress", env=env)
    try:
        if moment.startswith("tables"):
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Expected qualitative outcome"):
                    break
            time.sleep(float(moment.split("+")[1].split()[0]) if "+" in moment else 0)
        else:
            time.sleep(float(moment.split()[0]))
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode == 0:  # the run was complete: a late signal is ignored
        assert moment.startswith("tables"), stderr
        assert stderr == ""
        assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES_SORTED
        return
    assert proc.returncode == 130, stderr
    assert stderr in (
        "lsdiffusion: interrupted\n",  # still importing the commands
        "lsdiffusion demo: interrupted; nothing was written\n",
        f"lsdiffusion demo: interrupted; {out} holds this run's complete outputs\n",
    )
    if out.exists():
        assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES_SORTED


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_ctrl_c_on_a_terminal_prints_the_message_on_its_own_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main_fd, terminal = os.openpty()
    proc = _demo(out, stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        while b"studies" not in seen:  # the progress line is on the terminal
            assert proc.poll() is None, seen
            seen += os.read(main_fd, 4096)
        time.sleep(1)  # the workers are starting: the line stays open on the terminal
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        with contextlib.suppress(OSError):  # EIO once every writer has closed the terminal
            while chunk := os.read(main_fd, 4096):
                seen += chunk
    finally:
        proc.kill()
        os.close(main_fd)
    assert proc.returncode == 130
    text = seen.decode().replace("\r\n", "\n")
    assert text.endswith("\nlsdiffusion demo: interrupted; nothing was written\n"), text
    assert "\rteacher + students: 0/2 studies" in text  # drawn in place before


def test_a_log_shows_the_progress_line_before_the_first_study_ends(
    capsys: pytest.CaptureFixture[str], tiny_fields: dict[str, object]
) -> None:
    cfg = DemoConfig(**tiny_fields, seeds=(0,), temperatures=(1.0, 3.0), epochs=1)
    run_demo(cfg, progress=True, workers=1)
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one line per step
    assert lines[0].startswith("teacher + students: 0/2 studies (")
    assert lines[-1].startswith("teacher + students: 2/2 studies (")


def test_an_unavailable_backend_is_one_short_line():
    """Issue 20.9: --device mps on a machine without it: the gist, not the dispatcher's text."""
    import torch

    from lsdiffusion.demo.config import check_device

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="--device mps is not available here") as info:
        check_device("mps", flag="--device")
    assert len(str(info.value)) < 200
    assert "\n" not in str(info.value)
