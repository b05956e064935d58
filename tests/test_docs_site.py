"""The docs site stays complete: every page in the nav, every public name documented.

The build itself (``python3 noxfile.py -s docs``, mkdocs ``--strict``) runs in
CI; these checks are the ones a test run can make without mkdocs installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio_sse

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_every_page_is_in_the_navigation_and_linked_from_the_index() -> None:
    in_nav = set(re.findall(r"^ +- (?:[^:\n]+: )?([\w-]+\.md)$", MKDOCS, re.M))
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert pages == in_nav
    index = (ROOT / "docs/index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    assert pages - {"index.md"} == linked


def test_the_api_reference_documents_every_public_name() -> None:
    api = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: trio_sse\.(\w+)$", api, re.M))
    assert documented - {"testing"} == set(trio_sse.__all__) - {"__version__"}


def test_the_docs_session_fails_on_warnings_and_ci_runs_it() -> None:
    assert re.search(r"^strict: true$", MKDOCS, re.M)
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert '"mkdocs", "build", "--strict"' in noxfile
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "noxfile.py -s docs" in ci.split("-s lint typecheck", 1)[1]
