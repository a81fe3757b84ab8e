"""Convert the reStructuredText-isms of the package's docstrings to the Markdown the docs render.

The API pages are rendered by mkdocstrings (Google style, griffe) with
pymdownx.arithmatex and MathJax, so the docstrings are written as:

* Google sections ``Args:``, ``Returns:``, ``Raises:``, ``Examples:`` (plural: griffe reads
  only ``Examples`` as the examples section; a singular ``Example:`` is an admonition whose
  ``>>>`` lines Markdown renders as nested blockquotes), ``>>>`` lines being doctests;
* math inline as ``$...$`` and display math as its own paragraph between ``$$`` lines;
* cross-references as ``[`kd_loss`][lsdiffusion.kd_loss]`` (autorefs; a target that does not
  exist fails ``mkdocs build --strict``); names outside the package become code literals.

What it converts, deterministically and idempotently (a second run changes nothing):

* ``:math:`x``` -> ``$x$``; ``.. math::`` blocks -> ``$$`` paragraphs (one per equation group);
* ``:func:``, ``:class:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``, ``:obj:``, ``:exc:``
  (``~`` prefixes: the last name is shown) -> autorefs links to the object's anchor on the
  API pages, or a code literal when the target is outside the package;
* ``Example:`` -> ``Examples:``; ``Examples::`` and ``text::`` literal blocks -> a fenced block;
* ``.. note::`` / ``.. warning::`` -> Google admonitions ``Note:`` / ``Warning:``;
* ```text <url>`_`` -> ``[text](url)``.

Which anchors exist is read from a (non-strict) build of the site, so the links it writes are
exactly those autorefs can resolve. What it cannot convert (an unknown directive or role, a
target in the package with no API anchor, ``>>>`` lines outside an Examples section) is
listed on stderr, and the exit status is 1 when that list is not empty.

Usage (from the repository root, in the docs environment)::

    python scripts/convert_docstrings.py            # rewrite src/ in place
    python scripts/convert_docstrings.py --check    # exit 1 if anything would change
"""

from __future__ import annotations

import argparse
import ast
import builtins
import io
import os
import re
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lsdiffusion"

ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<body>[^`]+)`")
LINK_ROLES = {"func", "class", "meth", "attr", "mod", "data", "obj", "exc", "const", "type"}
AUTOREF = re.compile(rf"\[(?P<text>[^\]\n]*)\]\[(?P<ident>{PACKAGE}(?:\.\w+)+)\]")
RST_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[a-z]+://[^>]+)>`__?")
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<name>[a-z-]+)::\s*(?P<arg>.*)$")
EXAMPLE_HEADER = re.compile(r"^(?P<indent>\s*)Examples?::?\s*$")
ADMONITIONS = {"note": "Note", "warning": "Warning", "seealso": "See Also", "tip": "Tip"}
EXTERNAL_ROOTS = {
    "torch",
    "numpy",
    "np",
    "scipy",
    "matplotlib",
    "plt",
    "nltk",
    "pathlib",
    "typing",
    "collections",
    "os",
    "sys",
    "json",
    "warnings",
    "dataclasses",
    "argparse",
    "triton",
    "nn",
    "F",
}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # exit status 1
    unlinked: list[str] = field(default_factory=list)  # public-looking names without an anchor
    external: list[str] = field(default_factory=list)  # outside the package, or private

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


# ----------------------------------------------------------------------------- anchors


def collect_anchors(root: Path) -> set[str]:
    """The object anchors of the built API pages (a non-strict build in a temporary folder)."""
    with tempfile.TemporaryDirectory() as site:
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--no-strict", "-q", "-d", site],
            cwd=root,
            check=True,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        anchors: set[str] = set()
        for page in Path(site).rglob("*.html"):
            text = page.read_text(encoding="utf-8")
            anchors.update(re.findall(rf'id="({PACKAGE}(?:\.\w+)+)"', text))
    return anchors


def top_level_exports(root: Path) -> dict[str, str]:
    """``_EXPORTS`` of the package's ``__init__``: public name -> defining module."""
    tree = ast.parse((root / "src" / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return {str(k): str(v) for k, v in value.items()}
    return {}


def module_imports(tree: ast.Module, module: str) -> dict[str, str]:
    """Local name -> dotted origin for every import of a module (TYPE_CHECKING ones included)."""
    names: dict[str, str] = {}
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


@dataclass
class Resolver:
    anchors: set[str]
    exports: dict[str, str]

    def canonical(self, path: str) -> str | None:
        """``path`` if it is an anchor, or the anchor a package-level alias points to."""
        if path in self.anchors:
            return path
        parts = path.split(".")
        if len(parts) >= 2 and parts[0] == PACKAGE and parts[1] in self.exports:
            real = f"{self.exports[parts[1]]}.{'.'.join(parts[1:])}"
            if real in self.anchors:
                return real
        return None

    def anchors_of(self, ident: str) -> str | None:
        """The anchor a top-level alias ``lsdiffusion.Name`` resolves to (autorefs does that)."""
        parts = ident.split(".")
        if len(parts) == 2 and parts[1] in self.exports:
            return self.canonical(ident)
        return None

    def public(self, anchor: str) -> str:
        """The shortest identifier autorefs resolves: ``lsdiffusion.Name`` for top-level names."""
        name = anchor.rsplit(".", 1)[-1]
        if self.exports.get(name) and f"{self.exports[name]}.{name}" == anchor:
            return f"{PACKAGE}.{name}"
        return anchor

    def resolve(
        self, target: str, module: str, scope: list[str], imports: dict[str, str]
    ) -> str | None:
        head, _, rest = target.partition(".")
        candidates = []
        for i in range(len(scope), 0, -1):
            candidates.append(".".join([module, *scope[:i], target]))
        candidates.append(f"{module}.{target}")
        if head in imports:
            candidates.append(imports[head] + (f".{rest}" if rest else ""))
        candidates += [target, f"{PACKAGE}.{target}"]
        for candidate in candidates:
            anchor = self.canonical(candidate)
            if anchor is not None:
                return self.public(anchor)
        suffix = [a for a in self.anchors if a.endswith(f".{target}")]
        real = {self.canonical(a) for a in suffix}
        if len(real) == 1 and None not in real:
            return self.public(real.pop())  # type: ignore[arg-type]
        return None


# ----------------------------------------------------------------------------- text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block of lines indented deeper than ``indent`` that starts at ``start``."""
    end = start
    last = start
    while end < len(lines):
        if lines[end].strip() and _indent(lines[end]) <= indent:
            break
        if lines[end].strip():
            last = end + 1
        end += 1
    return last


def _groups(lines: list[str]) -> list[list[str]]:
    """Non-empty lines split at blank lines, dedented together."""
    content = [line for line in lines if line.strip()]
    if not content:
        return []
    cut = min(_indent(line) for line in content)
    groups: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            groups[-1].append(line[cut:].rstrip())
        elif groups[-1]:
            groups.append([])
    return [g for g in groups if g]


def convert_blocks(lines: list[str], where: str, report: Report) -> list[str]:
    """``.. math::`` / admonition directives, ``Example:`` headers and ``::`` literal blocks."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = DIRECTIVE.match(line)
        header = EXAMPLE_HEADER.match(line)
        if m and m.group("name") == "math":
            pad = m.group("indent")
            end = _block_end(lines, i + 1, len(pad))
            body = lines[i + 1 : end]
            options = [b for b in body if re.match(r"^\s*:\w+:", b)]
            if options:
                report.problem(where, f"dropped math options {[o.strip() for o in options]}")
            body = [b for b in body if b not in options]
            groups = _groups(body)
            if m.group("arg").strip():
                groups.insert(0, [m.group("arg").strip()])
            if out and out[-1].strip():
                out.append("")
            for k, group in enumerate(groups):
                if k:
                    out.append("")
                out += [f"{pad}$$", *(f"{pad}{g}" for g in group), f"{pad}$$"]
            i = end
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        if m and m.group("name") in ADMONITIONS:
            pad = m.group("indent")
            out.append(f"{pad}{ADMONITIONS[m.group('name')]}:")
            if m.group("arg").strip():
                out.append(f"{pad}    {m.group('arg').strip()}")
            i += 1
            continue
        if m:
            report.problem(where, f"unknown directive '.. {m.group('name')}::' left as is")
            out.append(line)
            i += 1
            continue
        if header:
            pad = header.group("indent")
            literal = line.rstrip().endswith("::")
            out.append(f"{pad}Examples:")
            i += 1
            if literal:
                end = _block_end(lines, i, len(pad))
                out += _fence(lines[i:end], pad + "    ")
                i = end
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
            nxt = i + 1
            while nxt < len(lines) and not lines[nxt].strip():
                nxt += 1
            if nxt < len(lines) and _indent(lines[nxt]) > _indent(line):
                text = line.rstrip()[:-2].rstrip()
                out.append(f"{text}:" if text.strip() else "")
                end = _block_end(lines, i + 1, _indent(line))
                out.append("")
                out += _fence(lines[i + 1 : end], " " * _indent(line))
                i = end
                continue
        out.append(line)
        i += 1
    return out


def _fence(block: list[str], pad: str) -> list[str]:
    groups = _groups(block)
    flat = [g for group in groups for g in (*group, "")][:-1]
    shell = flat and all(
        re.match(r"(lsdiffusion|python|pip|nox|mkdocs|bash)\b", g) or not g for g in flat
    )
    lang = "bash" if shell else "text"
    return [f"{pad}```{lang}", *(f"{pad}{g}" if g else "" for g in flat), f"{pad}```"]


def convert_roles(
    text: str,
    where: str,
    report: Report,
    resolver: Resolver,
    module: str,
    scope: list[str],
    imports: dict[str, str],
) -> str:
    def link(m: re.Match[str]) -> str:
        role, body = m.group("role"), m.group("body")
        if role == "math":
            return f"${body.strip()}$"
        if role not in LINK_ROLES:
            report.problem(where, f"unknown role :{role}:`{body}` left as is")
            return m.group(0)
        title = None
        explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
        if explicit:
            title, body = explicit.group("title"), explicit.group("target")
        target = body.lstrip("~").lstrip(".").removesuffix("()")
        shown = title or (target.rsplit(".", 1)[-1] if body.startswith("~") else target)
        ident = resolver.resolve(target, module, scope, imports)
        if ident is not None:
            return f"[`{shown}`][{ident}]" if not title else f"[{shown}][{ident}]"
        head = target.split(".")[0]
        origin = imports.get(head, head)
        private = any(part.startswith("_") for part in [*module.split("."), *target.split(".")])
        outside = origin.split(".")[0] != PACKAGE and (
            head in EXTERNAL_ROOTS
            or origin.split(".")[0] in EXTERNAL_ROOTS
            or hasattr(builtins, head)
        )
        if outside or private:
            report.external.append(f"{where}: {target}")
        else:
            report.unlinked.append(f"{where}: {target} (:{role}:)")
        return f"`{shown}`"

    def relink(m: re.Match[str]) -> str:
        """An existing autorefs link whose target is no anchor: point it at the anchor."""
        ident = m.group("ident")
        if ident in resolver.anchors or resolver.anchors_of(ident) is not None:
            return m.group(0)
        anchor = resolver.canonical(ident)
        if anchor is None and any(part.startswith("_") for part in ident.split(".")):
            report.external.append(f"{where}: {ident} (private: no API page)")
            return m.group("text")
        if anchor is None:
            report.problem(where, f"cross-reference [{m.group('text')}][{ident}] has no target")
            return m.group(0)
        return f"[{m.group('text')}][{resolver.public(anchor)}]"

    text = RST_LINK.sub(lambda m: f"[{m.group('text')}]({m.group('url')})", text)
    text = AUTOREF.sub(relink, text)
    return ROLE.sub(link, text)


def check_examples(lines: list[str], where: str, report: Report) -> None:
    """Report ``>>>`` lines outside an ``Examples:`` section (they render as blockquotes)."""
    section: tuple[int, str] | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = _indent(line)
        if section and indent <= section[0]:
            section = None
        header = re.fullmatch(r"\s*([A-Z][\w ]*):\s*", line)
        if header:
            section = (indent, header.group(1))
        elif line.strip().startswith(">>>") and (section is None or section[1] != "Examples"):
            report.problem(where, "'>>>' outside an Examples: section")
            return


# ----------------------------------------------------------------------------- reflow

PROTECTED = re.compile(r"\[`[^`]*`\]\[[^\]]*\]|\[[^\]]*\]\([^)]*\)|\$[^$]*\$|``[^`]*``|`[^`]*`")
LIST_ITEM = re.compile(r"^(\s*)([*-]|\d+\.) ")
HEADER = re.compile(r"^\s*[A-Z][\w ]*:\s*$")
ITEM_SECTIONS = {"Args", "Arguments", "Attributes", "Raises", "Parameters", "Keyword Args"}


def _break_at(line: str, width: int) -> int | None:
    """The last space outside math, code and links at which ``line`` fits in ``width``."""
    shielded = [False] * len(line)
    for m in PROTECTED.finditer(line):
        for k in range(m.start(), m.end()):
            shielded[k] = True
    start = _indent(line)
    spaces = [k for k in range(start + 1, len(line)) if line[k] == " " and not shielded[k]]
    fitting = [k for k in spaces if k <= width]
    return (fitting or spaces or [None])[-1 if fitting else 0]


def _section(lines: list[str], i: int) -> str | None:
    indent = _indent(lines[i])
    for k in range(i - 1, -1, -1):
        if lines[k].strip() and _indent(lines[k]) < indent:
            m = re.fullmatch(r"\s*([A-Z][\w ]*):\s*", lines[k])
            return m.group(1) if m else None
    return None


def _fit_summary(text: str, width: int, where: str, report: Report) -> str:
    """Keep the summary on one line: links in it that make it too long become code."""
    summary, newline, rest = text.partition("\n")
    if not newline:  # a one-line docstring: the closing quotes share the line
        width -= 3
    while len(summary) > width and (m := LINK.search(summary)):
        report.unlinked.append(f"{where}: {m.group(2)} (summary line too long for a link)")
        summary = summary[: m.start()] + f"`{m.group(1)}`" + summary[m.end() :]
    return summary + newline + rest


LINK = re.compile(r"\[`([^`]*)`\]\[([\w.]+)\]")


def reflow(lines: list[str], limit: int, first: int, where: str, report: Report) -> list[str]:
    """Break the lines the conversion made longer than ``limit`` (ruff's line length).

    The overflow moves to the start of the next line when that line continues the same
    paragraph, else onto a new line with the paragraph's continuation indent. Lines of
    ``>>>`` examples, ``$$`` math and fenced blocks are never broken.
    """
    out = list(lines)
    fence = math = False
    i = 0
    while i < len(out):
        line, stripped = out[i], out[i].strip()
        offset = first if i == 0 else 0
        if i == 0:  # the summary line: _fit_summary's job
            i += 1
            continue
        if stripped.startswith("```"):
            fence = not fence
        elif stripped == "$$":
            math = not math
        verbatim = fence or math or stripped.startswith((">>>", "...", "```", "$$"))
        too_long = len(line) + offset > limit
        if verbatim or not too_long or re.search(r"\S+://\S+$", line):
            i += 1
            continue
        cut = _break_at(line, limit - offset)
        if cut is None:  # one long word (a link): ruff's E501 lets it be
            i += 1
            continue
        head, tail = line[:cut].rstrip(), line[cut:].strip()
        indent = _indent(line)
        nxt = out[i + 1] if i + 1 < len(out) else ""
        item = LIST_ITEM.match(line)
        if nxt.strip() and _indent(nxt) > indent and not LIST_ITEM.match(nxt):
            cont = _indent(nxt)
        elif item:
            cont = len(item.group(0))
        elif _section(out, i) in ITEM_SECTIONS and not HEADER.match(line):
            cont = indent + 4
        else:
            cont = indent
        joinable = (
            nxt.strip()
            and _indent(nxt) == cont
            and not LIST_ITEM.match(nxt)
            and not HEADER.match(nxt)
            and not nxt.strip().startswith((">>>", "$$", "```"))
            and not (cont == indent and _section(out, i) in ITEM_SECTIONS)
        )
        out[i] = head
        if joinable:
            out[i + 1] = f"{' ' * cont}{tail} {nxt.strip()}"
        else:
            out.insert(i + 1, f"{' ' * cont}{tail}")
        i += 1
    return out


# ----------------------------------------------------------------------------- files


@dataclass
class Docstring:
    start: int  # offsets into the source
    end: int
    scope: list[str]
    name: str


def _docstrings(tree: ast.Module, source: str) -> list[Docstring]:
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))

    def span(node: ast.expr) -> tuple[int, int]:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        start = offsets[node.lineno - 1] + len(
            source.splitlines(keepends=True)[node.lineno - 1].encode()[: node.col_offset].decode()
        )
        end_line = source.splitlines(keepends=True)[node.end_lineno - 1]
        end = offsets[node.end_lineno - 1] + len(end_line.encode()[: node.end_col_offset].decode())
        return start, end

    found: list[Docstring] = []

    def visit(body: list[ast.stmt], scope: list[str], owner: str) -> None:
        for k, stmt in enumerate(body):
            is_string = (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            )
            after_assign = k > 0 and isinstance(body[k - 1], (ast.Assign, ast.AnnAssign))
            if is_string and (k == 0 or after_assign):
                assert isinstance(stmt, ast.Expr)
                found.append(Docstring(*span(stmt.value), list(scope), owner))
            if isinstance(stmt, ast.ClassDef):
                visit(stmt.body, [*scope, stmt.name], ".".join([*scope, stmt.name]))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(stmt.body, list(scope), ".".join([*scope, stmt.name]))
            elif isinstance(stmt, ast.If):
                visit(stmt.body, scope, owner)

    visit(tree.body, [], "")
    return found


def _string_parts(literal: str) -> tuple[str, str, str]:
    """Split a string literal into its prefix+opening quote, its body and its closing quote."""
    m = re.match(r"(?P<open>[rRuUbB]*(\"\"\"|'''|\"|'))", literal)
    assert m is not None, literal
    quote = m.group(2)
    return m.group("open"), literal[len(m.group("open")) : -len(quote)], quote


def convert_source(
    source: str, path: Path, module: str, resolver: Resolver, report: Report, limit: int = 100
) -> str:
    tree = ast.parse(source)
    imports = module_imports(tree, module)
    pieces: list[str] = []
    done = 0
    for doc in _docstrings(tree, source):
        literal = source[doc.start : doc.end]
        if not re.match(r"[rRuU]?(\"\"\"|''')", literal):
            continue  # implicit concatenation or single-quoted: not touched
        opening, body, closing = _string_parts(literal)
        line = source.count("\n", 0, doc.start) + 1
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
        lines = body.split("\n")
        lines = convert_blocks(lines, where, report)
        check_examples(lines, where, report)
        new = "\n".join(lines)
        new = convert_roles(new, where, report, resolver, module, doc.scope, imports)
        if new != body:
            column = doc.start - (source.rfind("\n", 0, doc.start) + 1)
            new = _fit_summary(new, limit - column - len(opening), where, report)
            new = "\n".join(reflow(new.split("\n"), limit, column + len(opening), where, report))
        if new != body:
            if "\\" in new and "r" not in opening.lower():
                report.problem(where, "backslashes in a docstring that is not raw: left as is")
                continue
            pieces += [source[done : doc.start], opening, new, closing]
            done = doc.end
    pieces.append(source[done:])
    result = "".join(pieces)
    # the rewrite must tokenize as it did (no string quoting broken)
    list(tokenize.generate_tokens(io.StringIO(result).readline))
    return result


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files to convert (default: src/)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on a change")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (mkdocs.yml)")
    parser.add_argument("--verbose", action="store_true", help="also list the external names")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    src = root / "src"
    files = sorted(
        p.resolve()
        for target in (args.paths or [src / PACKAGE])
        for p in ([target] if target.is_file() else target.rglob("*.py"))
    )
    resolver = Resolver(collect_anchors(root), top_level_exports(root))
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    limit = int(pyproject.get("tool", {}).get("ruff", {}).get("line-length", 88))
    report = Report()
    changed = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        new = convert_source(source, path, module_name(path, src), resolver, report, limit)
        if new != source:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "would change" if args.check else "changed"
    print(
        f"{verb} {len(changed)} file(s)", *(f"  {p.relative_to(root)}" for p in changed), sep="\n"
    )
    if args.verbose:
        print("left as code (outside the package or private):", *report.external, sep="\n  ")
    if report.unlinked:
        print("left as code (no anchor on the API pages):", *report.unlinked, sep="\n  ")
    if report.problems:
        print("could not convert:", *report.problems, sep="\n  ", file=sys.stderr)
    return 1 if report.problems or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
