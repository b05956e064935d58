"""The complete example of docs/testing.md runs, and its tests pass (under a MockClock)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def example() -> dict[str, object]:
    text = DOC.read_text(encoding="utf-8")
    before, _, rest = text.partition("## A complete example")
    intro, _, rest = rest.partition("```python\n")
    code = rest.split("```", 1)[0]
    # Pad with blank lines so that tracebacks show the page's own line numbers.
    code = "\n" * (before + "## A complete example" + intro).count("\n") + "\n" + code
    namespace: dict[str, object] = {"__name__": "test_counter"}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


TESTS = sorted(name for name in example() if name.startswith("test_"))


def test_the_example_has_its_tests() -> None:
    assert len(TESTS) == 4


@pytest.mark.parametrize("name", TESTS)
def test_docs_testing_example(name: str) -> None:
    # A fresh module (and App) per test, as pytest would import it.
    test = example()[name]
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(test, clock, clock=clock)  # type: ignore[arg-type]
