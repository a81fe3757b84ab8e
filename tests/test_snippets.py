"""Every code block of README.md and docs/ runs, or is checked, as a test.

* ``python`` blocks run, each in a fresh namespace, in a temporary folder. A
  block may be preceded by a hidden setup, an HTML comment that renders as
  nothing and defines the stand-ins the prose assumes (``loader``,
  ``student_T1``, ...)::

      <!-- snippet-setup (hidden; tests/test_snippets.py runs it first)
      loader = ...
      -->

* a block preceded by ``<!-- snippet-requires: transformers accelerate -->`` (after the
  previous block) runs only when those modules import, and is skipped otherwise.
* shell (``bash``) blocks: every command is checked without side effects.
  ``pip install`` lines must install from the clone or a built wheel (the
  package is on no index yet), with extras that exist and the torch pin of the
  noxfile; ``lsdiffusion`` lines parse, ``classes`` runs, ``demo`` passes its
  argument checks; ``python examples/*.py`` lines parse with the script's own
  parser; benchmark scripts, nox sessions and the like must exist. A block
  preceded by ``<!-- snippet: run -->`` (the examples walk-through) also runs,
  command by command, in a temporary folder.
* ``text`` blocks are output and are not run. Any other language, or a shell
  command the checker does not know, fails: teach the checker, don't skip.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if not DOCS.is_dir() or not (ROOT / "README.md").is_file():  # pragma: no cover
    pytest.skip("README.md and docs/ are not in this checkout", allow_module_level=True)

PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
SETUP = re.compile(r"<!--\s*snippet-setup\b[^\n]*\n(?P<code>(?:(?!-->).)*)-->\s*\Z", re.S)
RUN = re.compile(r"<!--\s*snippet:\s*run\s*-->\s*\Z")
REQUIRES = re.compile(r"<!--\s*snippet-requires:(?P<modules>[^>]*)-->")
SHELL = {"bash", "sh", "shell", "console"}
LANGUAGES = {"python", "text", *SHELL}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
VERSION = PYPROJECT["project"]["version"]
REPO = "github.com/lsdiffusion/lsdiffusion"


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    setup: str
    run: bool
    requires: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        previous_end = 0
        for m in FENCE.finditer(text):
            before = text[: m.start()]
            setup = SETUP.search(before)
            gap = text[previous_end : m.start()]
            previous_end = m.end()
            requires = tuple(
                name for r in REQUIRES.finditer(gap) for name in r.group("modules").split()
            )
            blocks.append(
                Block(
                    page=str(path.relative_to(ROOT)),
                    line=text.count("\n", 0, m.start()) + 1,
                    lang=m.group("lang").lower(),
                    code=m.group("code"),
                    setup=setup.group("code") if setup else "",
                    run=bool(RUN.search(before)),
                    requires=requires,
                )
            )
    return blocks


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def _commands(block: Block) -> list[list[str]]:
    """The block's commands as argv lists: continuations joined, comments and ``&&`` split."""
    text = re.sub(r"\\\n\s*", " ", block.code)
    commands = []
    for line in text.splitlines():
        words = shlex.split(line.removeprefix("$ "), comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


COMMANDS = [
    pytest.param(block, argv, id=f"{block.id}:{' '.join(argv)[:60]}")
    for block in BLOCKS
    if block.lang in SHELL
    for argv in _commands(block)
]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small stand-ins: one thread is fastest, busy machine or not
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the pages


def test_pages_have_blocks_of_known_languages() -> None:
    assert len(PYTHON) >= 5
    assert len(COMMANDS) >= 10
    unknown = [f"{b.id} ({b.lang or 'no language'})" for b in BLOCKS if b.lang not in LANGUAGES]
    assert not unknown, f"label these blocks python, bash or text: {unknown}"
    assert any(b.run for b in BLOCKS), "the examples walk-through should be marked to run"


def test_readme_links_and_images_work_in_a_clone() -> None:
    """Links and images name files of the repository by relative path (a clone, a code
    host, the sdist), or are absolute https URLs; none points at a repository that does
    not exist yet."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(t.endswith(".png") for t in targets)
    for target in targets:
        assert REPO not in target, f"{target}: that repository does not exist yet"
        if target.startswith("https://"):
            continue
        assert not re.match(r"\w+:", target), f"{target}: use https or a relative path"
        assert (ROOT / target.split("#")[0]).exists(), f"{target} names no file of the clone"


CPU_TORCH = "https://download.pytorch.org/whl/cpu"
INLINE_PIP = re.compile(r"`((?:python -m )?pip install [^`]+)`")


def _installs_package(argv: list[str]) -> bool:
    words = argv[3:] if argv[:3] == ["python", "-m", "pip"] else argv[1:]
    return words[:1] == ["install"] and any(
        w == "." or w.startswith((".[", "dist/")) for w in words[1:]
    )


def _pip_commands(page: Path) -> list[tuple[str, list[str]]]:
    """Every pip command of a page in reading order: ("block"|"inline", argv)."""
    text = page.read_text(encoding="utf-8")
    found: list[tuple[int, str, list[str]]] = []
    blocks = [b for b in BLOCKS if b.page == str(page.relative_to(ROOT)) and b.lang in SHELL]
    fences = list(FENCE.finditer(text))
    shell_fences = [m for m in fences if m.group("lang").lower() in SHELL]
    for block, m in zip(blocks, shell_fences, strict=True):
        for argv in _commands(block):
            if "pip" in argv[:3]:
                found.append((m.start(), "block", argv))
    outside = FENCE.sub(lambda m: " " * len(m.group(0)), text)
    for m in INLINE_PIP.finditer(outside):
        found.append((m.start(), "inline", shlex.split(m.group(1))))
    return [(kind, argv) for _, kind, argv in sorted(found, key=lambda f: f[0])]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_install_lines_pin_torch_after_the_cpu_build(page: Path) -> None:
    """Every documented install of the package pins torch, and on a page whose commands
    install it, torch's CPU-index line comes first (PyPI's Linux torch is the CUDA build)."""
    _, torch_spec = _noxfile()
    seen_cpu = False
    for kind, argv in _pip_commands(page):
        if CPU_TORCH in argv:
            assert torch_spec in argv, f"{shlex.join(argv)}: pin {torch_spec}"
            seen_cpu = True
        if not _installs_package(argv):
            continue
        assert torch_spec in argv, f"{page.name}: {shlex.join(argv)} does not pin {torch_spec}"
        if kind == "block":
            assert seen_cpu, f"{page.name}: {shlex.join(argv)} comes before the CPU torch line"


# ----------------------------------------------------------------------------- python blocks


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
@pytest.mark.usefixtures("one_thread")
def test_python_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in block.requires:  # <!-- snippet-requires: transformers --> before the block
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if block.setup:
            exec(compile(block.setup, f"{block.id} (hidden setup)", "exec"), namespace)
        exec(compile(block.code, block.id, "exec"), namespace)


# ----------------------------------------------------------------------------- shell commands


def _noxfile() -> tuple[set[str], str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    sessions = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    }
    torch_spec = next(
        ast.literal_eval(node.value.args[1])
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", None) == "TORCH"
        and isinstance(node.value, ast.Call)
    )
    return sessions, torch_spec


def _extras(spec: str) -> set[str]:
    m = re.search(r"\[([^\]]*)\]$", spec)
    return {e.strip() for e in m.group(1).split(",")} if m else set()


def _check_pip(args: list[str]) -> None:
    _, torch_spec = _noxfile()
    command, *rest = args
    if command == "wheel":
        assert "--no-deps" in rest, "build only lsdiffusion's wheel: --no-deps"
        assert rest[-1] == ".", "pip wheel builds the clone: '.'"
        return
    assert command == "install", args
    values = iter(rest)
    for word in values:
        if word in ("--index-url", "--extra-index-url", "--find-links"):
            url = next(values)
            assert url.startswith("https://download.pytorch.org/"), url
            continue
        if word in ("-e", "--editable", "-q", "--quiet", "-U", "--upgrade"):
            continue
        assert not word.startswith("-"), f"unknown pip option {word}"
        if word.startswith("torch"):
            assert word == torch_spec, f"{word}: the tested pin is {torch_spec} (noxfile.py)"
        elif word == "." or word.startswith(".["):
            assert _extras(word) <= EXTRAS, f"{word}: extras are {sorted(EXTRAS)}"
        elif word.startswith("dist/"):
            wheel = f"dist/lsdiffusion-{VERSION}-py3-none-any.whl"
            assert word.split("[")[0] == wheel, f"{word}: the built wheel is {wheel}"
            assert _extras(word) <= EXTRAS
        else:
            assert not word.startswith("lsdiffusion"), (
                f"{word}: lsdiffusion is on no package index yet; install from the clone"
            )
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[\w,]+\])?([<>=!~]=?[\w.]+)?", word), word


def _check_lsdiffusion(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from lsdiffusion.cli import build_parser, main
    from lsdiffusion.demo.cli import _config_from_args

    if argv and argv[0] in ("--help", "-h", "--version"):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        return
    args = build_parser().parse_args(argv)
    if args.command == "classes":
        assert main(argv) == 0, capsys.readouterr().err
        assert "similar (" in capsys.readouterr().out
    elif args.command == "demo":
        _config_from_args(args)  # the checks made before training
        torch.device(args.device)  # a valid device string (cuda may be absent here)
    elif args.command == "analyze":  # the options parse; the files are the reader's
        assert len(args.students) == len(args.temperatures), argv
    else:  # pragma: no cover - a new command: teach the checker
        pytest.fail(f"no check for 'lsdiffusion {args.command}'")


def _example(script: str) -> ModuleType:
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    name = f"_snippet_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``examples/`` importable (``import common``), and the scripts' modules dropped after."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == "common" or name.startswith("_snippet_"):
            del sys.modules[name]


def _check_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    head = argv[:3]
    if head[:3] == ["python", "-m", "pip"]:
        _check_pip(argv[3:])
    elif head[:1] == ["pip"]:
        _check_pip(argv[1:])
    elif head[:1] == ["lsdiffusion"]:
        _check_lsdiffusion(argv[1:], capsys)
    elif head[:3] == ["python", "-m", "lsdiffusion"]:
        _check_lsdiffusion(argv[3:], capsys)
    elif head[:3] == ["python", "-m", "pytest"]:
        assert (ROOT / "tests").is_dir()
    elif head[:1] == ["python"] and argv[1].startswith("examples/"):
        module = _example(argv[1])
        module.parse_args(argv[2:])  # unknown or misspelled options exit here
    elif head[:1] == ["python"] and argv[1].startswith("benchmarks/"):
        source = (ROOT / argv[1]).read_text(encoding="utf-8")
        for flag in (w for w in argv[2:] if w.startswith("--")):
            assert f'"{flag}"' in source, f"{argv[1]} has no option {flag}"
    elif head[:2] == ["nox", "-s"]:
        sessions, _ = _noxfile()
        assert set(argv[2:]) <= sessions, f"noxfile.py has the sessions {sorted(sessions)}"
    elif head[:1] == ["mkdocs"]:
        assert argv[1] in ("serve", "build")
        assert (ROOT / "mkdocs.yml").is_file()
    elif head[:1] == ["bash"]:
        assert (ROOT / argv[1]).is_file(), argv[1]
    elif head[:1] in (["apt-get"], ["cd"]):
        pass
    else:
        pytest.fail(f"tests/test_snippets.py cannot check this command yet: {shlex.join(argv)}")


@pytest.mark.parametrize(("block", "argv"), COMMANDS)
@pytest.mark.usefixtures("examples_path", "one_thread")
def test_shell_command_is_valid(
    block: Block, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _check_command(argv, capsys)


# ----------------------------------------------------------------------------- walk-throughs

RUNNABLE = [b for b in BLOCKS if b.run]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
@pytest.mark.usefixtures("examples_path", "one_thread")
def test_marked_walk_through_runs(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block runs as written, command by command, in a fresh folder (in-process: fast)."""
    monkeypatch.chdir(tmp_path)
    for argv in _commands(block):
        assert argv[0] == "python", argv
        assert argv[1].startswith("examples/"), argv
        with contextlib.redirect_stdout(io.StringIO()):
            _example(argv[1]).main(argv[2:])
    outputs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    if any("analyze.py" in " ".join(a) for a in _commands(block)):
        assert "analysis/report.md" in outputs
        assert "teacher_ls.pt" in outputs


# ----------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pip", "install", "torch==2.13.0", "lsdiffusion[plot]"], "on no package index"),
        (["python", "-m", "pip", "install", ".[wordnet]"], "extras are"),
        (["python", "-m", "pip", "install", "torch==2.0.0", "."], "the tested pin"),
        (["python", "-m", "pip", "install", "dist/lsdiffusion-9.9-py3-none-any.whl"], "wheel"),
        (["nox", "-s", "no_such_session"], "sessions"),
        (["python", "benchmarks/bench_losses.py", "--no-such-flag"], "has no option"),
        (["make", "all"], "cannot check this command"),
    ],
)
@pytest.mark.usefixtures("examples_path")
def test_checker_rejects_wrong_commands(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception), match=message):
        _check_command(argv, capsys)


@pytest.mark.usefixtures("examples_path", "one_thread")
def test_checker_parses_commands_for_real(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):  # a misspelled option of an example
        _check_command(
            ["python", "examples/train_teacher.py", "--data", "d", "--epoks", "3"], capsys
        )
    with pytest.raises(ValueError, match="--seeds must be distinct"):
        _check_command(["lsdiffusion", "demo", "--seeds", "1", "1"], capsys)
    with pytest.raises(AssertionError):  # classes runs: an unknown class exits 2
        _check_command(["lsdiffusion", "classes", "no such class"], capsys)
    block = Block(
        "x.md", 1, "bash", 'A=1 pip install "torch==2.13.0" . && cd x  # note\n', "", False
    )
    assert _commands(block) == [["A=1", "pip", "install", "torch==2.13.0", "."], ["cd", "x"]]
