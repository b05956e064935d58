"""Every code block of the README and docs/*.md runs, or says why not (docs/contributing-docs.md).

The convention, checked here:

- an unmarked ``python`` block is executed, and all of a page's unmarked
  ``python`` and ``pycon`` blocks run in order in one namespace, as a reader
  pasting them into one file would (so a block may use the previous blocks'
  imports and names); ``pycon`` blocks are doctests;
- a block preceded by ``<!-- run-by: tests/test_x.py -->`` is run by that
  test, which must exist and name the page;
- a block preceded by ``<!-- no-run: reason -->`` is not runnable (it needs a
  Redis server, runs forever, is a fragment...) and says why;
- any other unmarked block (``console``, ``nginx``, ...) fails this test.
"""

from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)\s*$")
MARK = re.compile(r"^<!-- (no-run|run-by): (\S.*?) -->$")
RUNNABLE = {"python", "pycon"}


@dataclass
class Block:
    page: Path
    line: int  # of the first line of code, 1-based
    language: str
    code: str
    mark: tuple[str, str] | None


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        j = i + 1
        while lines[j] != "```":
            j += 1
        previous = lines[i - 1] if i else ""
        marked = MARK.match(previous)
        found.append(
            Block(
                page,
                i + 2,
                opening.group(1),
                "\n".join(lines[i + 1 : j]) + "\n",
                (marked.group(1), marked.group(2)) if marked else None,
            )
        )
        i = j + 1
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_block_is_run_or_marked(page: Path) -> None:
    for block in blocks(page):
        where = f"{_name(page)}:{block.line}"
        if block.mark is None:
            assert block.language in RUNNABLE, (
                f"{where}: a {block.language or 'plain'} block must be marked "
                "<!-- run-by: tests/test_x.py --> or <!-- no-run: reason -->"
            )
        elif block.mark[0] == "run-by":
            test = ROOT / block.mark[1]
            assert test.is_file(), f"{where}: {block.mark[1]} does not exist"
            assert _name(page) in test.read_text(encoding="utf-8"), (
                f"{where}: {block.mark[1]} does not read {_name(page)}"
            )


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_the_runnable_blocks_of_each_page_run_in_order(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": "docs_page"}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    parser = doctest.DocTestParser()
    for block in blocks(page):
        if block.mark is not None or block.language not in RUNNABLE:
            continue
        where = f"{_name(page)}:{block.line}"
        if block.language == "python":
            # Pad so that a traceback shows the page's own line numbers.
            code = "\n" * (block.line - 1) + block.code
            exec(compile(code, str(page), "exec"), namespace)
        else:
            test = parser.get_doctest(block.code, namespace, where, str(page), block.line - 1)
            runner.run(test, clear_globs=False)
            namespace.update(test.globs)  # a DocTest runs in a copy
            assert runner.summarize(verbose=False).failed == 0, where


def test_the_convention_catches_an_unmarked_shell_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "x\n\n```console\nrm -rf /\n```\n\n<!-- no-run: a fragment -->\n```python\nx(\n```\n"
    )
    [shell, fragment] = blocks(page)
    assert (shell.language, shell.mark, shell.line) == ("console", None, 4)
    assert fragment.mark == ("no-run", "a fragment")
