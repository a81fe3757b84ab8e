"""MkDocs hook: ship MathJax with the site, so that pages typeset their formulas offline.

MathJax 3.2.2's single-file SVG build (``es5/tex-svg-full.js``: every TeX extension
bundled, no web fonts to load) comes from the ``docs`` extra's
``django-static-mathjax==3.2.2.1``, a PyPI wheel that vendors MathJax's npm release as
plain files (it has no dependencies: Django is not needed). Each build copies it, after a
checksum check, into ``docs/javascripts/vendor/mathjax/`` (ignored by git), so neither
``mkdocs build``, ``mkdocs serve`` nor a reader of the built site needs a network.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

PACKAGE = "django-static-mathjax==3.2.2.1"
SCRIPT = "tex-svg-full.js"
SHA256 = "214c3da890b16db3d1319684cc04f3fd4e72ea59d5eb3863f256146015fb1783"
VENDOR = Path(__file__).resolve().parents[1] / "javascripts" / "vendor" / "mathjax"


def ensure_mathjax() -> Path:
    """Copy the vendored MathJax script next to the pages; raise when it is unavailable."""
    try:
        source = importlib.resources.files("mathjax") / "static" / "mathjax"
        data = (source / "es5" / SCRIPT).read_bytes()
        licence = (source / "LICENSE").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise PluginError(
            f"MathJax is not installed ({error}): pip install '{PACKAGE}' "
            "(part of the docs extra: pip install -e '.[docs]')"
        ) from None
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise PluginError(f"es5/{SCRIPT} is not the one of {PACKAGE}: pip install '{PACKAGE}'")
    target = VENDOR / SCRIPT
    if not target.is_file() or target.read_bytes() != data:
        VENDOR.mkdir(parents=True, exist_ok=True)
        (VENDOR / "LICENSE").write_bytes(licence)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def on_config(config: Any, **kwargs: Any) -> Any:
    """Put MathJax in place before MkDocs collects the docs files."""
    ensure_mathjax()
    return config
