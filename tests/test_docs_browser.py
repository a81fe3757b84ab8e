"""The built docs site, read in a real headless browser (Chromium).

The site is built with ``mkdocs build --strict`` (a broken cross-reference fails the
build), then the concepts page and API pages are opened in headless Chromium with every
network feature off, and their DOM after MathJax ran is checked: formulas are typeset
(``mjx-container`` elements, no MathJax error), cross-references are links, ``>>>``
examples are code blocks (not the nested blockquotes Markdown makes of them), no
reStructuredText role is left, and nothing is loaded from outside the site.

Skipped when mkdocs (the ``docs`` extra) or Chromium is missing; ``.ci/run`` installs
both, and ``nox -s docs`` runs this file. ``LSDIFFUSION_DOCS_SCREENSHOTS=folder`` also
saves a screenshot of each page there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "mkdocs.yml").is_file():  # pragma: no cover - an installed copy of the tests
    pytest.skip("mkdocs.yml is not in this checkout", allow_module_level=True)
pytest.importorskip("mkdocs", reason="the docs extra is not installed")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "chrome")) if p), None
)
if CHROMIUM is None:  # pragma: no cover
    pytest.skip(
        "Chromium is not installed (Debian: apt-get install chromium)", allow_module_level=True
    )

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1200,1800",
    "--virtual-time-budget=15000",  # virtual time: MathJax finishes without a wall-clock wait
]
ROLES = re.compile(r":(?:math|func|class|meth|attr|mod|data|obj|exc):`|\.\. math::")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def _open(site: Path, page: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (a fresh browser profile each time)."""
    url = (site / page / "index.html").as_uri()
    profile = tmp_path / "profile"
    run = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    shots = os.environ.get("LSDIFFUSION_DOCS_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        name = Path(shots, page.replace("/", "_") + ".png").resolve()
        subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={name}", url],
            capture_output=True,
            timeout=180,
            check=True,
        )
    return run.stdout


def _text(dom: str) -> str:
    """The page's visible text (tags, scripts and styles dropped)."""
    dom = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"<[^>]+>", " ", dom)


def _check_common(dom: str) -> None:
    assert "<mjx-container" in dom, "MathJax did not typeset anything"
    assert "data-mjx-error" not in dom, "a formula failed to typeset"
    assert "<mjx-merror" not in dom, "a formula failed to typeset"
    # every arithmatex element became a typeset formula: no raw \( ... \) is left
    raw = [m for m in re.findall(r'class="arithmatex">(.{0,60})', dom) if "<mjx-container" not in m]
    assert not raw, f"formulas left as TeX: {raw[:3]}"
    assert not ROLES.search(_text(dom)), ROLES.search(_text(dom))
    external = re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="(https?:)?//[^"]*"', dom)
    assert not external, f"the page loads from outside the site: {external}"


def test_concepts_page_typesets_its_formulas(site: Path, tmp_path: Path) -> None:
    dom = _open(site, "concepts", tmp_path)
    _check_common(dom)
    assert dom.count("<mjx-container") >= 40  # the page has ~50 formulas
    assert 'display="true"' in dom, "no display formula was typeset"


@pytest.mark.parametrize("page", ["api/diffusion", "api/losses"])
def test_api_page_has_math_links_and_code_examples(site: Path, tmp_path: Path, page: str) -> None:
    dom = _open(site, page, tmp_path)
    _check_common(dom)
    links = re.findall(r'<a class="autorefs autorefs-internal"[^>]*href="([^"]+)"', dom)
    assert len(links) >= 5, f"too few cross-reference links: {links}"
    assert all("#lsdiffusion." in href for href in links), links
    # each Examples section is a highlighted code block holding the >>> prompts
    sections = dom.split('<span class="doc-section-title">Examples:</span>')[1:]
    assert sections, "no Examples section"
    for section in sections:
        head = section[:2000]
        assert re.search(r'<div class="highlight"><pre[^>]*>', head), head[:300]
        assert '<span class="gp">&gt;&gt;&gt; </span>' in head, head[:300]
    assert not re.search(r"<blockquote>\s*<blockquote>", dom), "examples rendered as blockquotes"


def test_a_broken_cross_reference_fails_the_strict_build(tmp_path: Path) -> None:
    """autorefs reports an unknown target, and --strict turns that into a failed build."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "See [`kd_loss`][lsdiffusion.kd_loss] and [`nothing`][lsdiffusion.no_such_name].\n\n"
        "::: lsdiffusion.functional.kd_loss\n",
        encoding="utf-8",
    )
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = re.sub(r"(?ms)^nav:.*?(?=^\S)", "", config)  # one page only
    config = config.replace("paths: [src]", f"paths: [{ROOT / 'src'}]")
    config = config.replace("docs/hooks/mathjax.py", str(ROOT / "docs/hooks/mathjax.py"))
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode != 0
    assert "lsdiffusion.no_such_name" in build.stderr
    assert "lsdiffusion.kd_loss'" not in build.stderr  # the good one resolved
