"""The package's module graph: no import cycles, sans-IO modules free of trio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import trio_sse

PACKAGE = Path(trio_sse.__file__).parent

#: Pure modules: no trio, and no imports of the modules built on them.
SANS_IO = {
    "_cursor": {"_event"},
    "_history": {"_event"},
    "_options": {"_event"},
}
#: What the sans-IO modules may load indirectly: the event and its errors.
BELOW_EVENT = {"_errors"}
TOPIC_MODULES = [
    *SANS_IO,
    "_resume",
    "_delivery",
    "_subscription",
    "_topic",
    "_broker",
    "_backplane",
    "_metrics",
    "_redis",
    "_redis_reader",
    "_redis_gaps",
    "_redis_client",
    "_redis_writer",
    "_redis_replay",
    "_redis_watch",
]

# Import one module of the package without running trio_sse/__init__.py
# (which imports everything), then list what got imported.
ALONE = """
import importlib, importlib.util, sys, types
spec = importlib.util.find_spec("trio_sse")
package = types.ModuleType("trio_sse")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["trio_sse"] = package
importlib.import_module("trio_sse." + sys.argv[1])
print(" ".join(sorted(m for m in sys.modules if m == "trio" or m.startswith("trio_sse."))))
"""


def imports(path: Path, *, typing_too: bool, in_functions: bool = False) -> set[str]:
    """Sibling modules *path* imports (``from ._x import``).

    At module level only, unless *in_functions*: then also the imports inside
    functions, which run later but form the same cycle at run time.
    """
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                if typing_too:
                    visit(node.body)
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import _x
                    found.update(alias.name for alias in node.names)
            if isinstance(node, ast.If | ast.Try | ast.With | ast.AsyncWith | ast.For):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            if isinstance(node, ast.ClassDef) or (
                in_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            ):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


def test_the_graph_sees_imports_inside_functions() -> None:
    # The cycle test below can fail: it sees a lazy import, as it must.
    assert "_client" in imports(PACKAGE / "__init__.py", typing_too=False, in_functions=True)
    assert "_client" not in imports(PACKAGE / "__init__.py", typing_too=False)


def test_no_import_cycles_at_run_time() -> None:
    """No cycle in the whole package, counting imports inside functions."""
    graph = {p.stem: imports(p, typing_too=False, in_functions=True) for p in PACKAGE.glob("*.py")}
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail(f"import cycle: {' -> '.join([*path[path.index(module) :], module])}")
        if module in done:
            return
        for child in sorted(graph.get(module, ())):
            walk(child, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


@pytest.mark.parametrize("module", sorted(SANS_IO))
def test_sans_io_modules_import_only_what_is_below_them(module: str) -> None:
    assert imports(PACKAGE / f"{module}.py", typing_too=True) <= SANS_IO[module]


@pytest.mark.parametrize("module", TOPIC_MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ALONE, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert f"trio_sse.{module}" in loaded
    if module in SANS_IO:
        assert "trio" not in loaded
        allowed = SANS_IO[module] | BELOW_EVENT | {module}
        assert loaded <= {f"trio_sse.{m}" for m in allowed}


# Import every module of the package first, each after forgetting the others
# (trio stays loaded, for speed): no module depends on having been imported
# after another one.
EACH_FIRST = """
import importlib, importlib.util, sys, types
spec = importlib.util.find_spec("trio_sse")
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "trio_sse" or m.startswith("trio_sse.")]:
        del sys.modules[loaded]
    package = types.ModuleType("trio_sse")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["trio_sse"] = package
    importlib.import_module("trio_sse." + name)
print("ok")
"""


def test_every_module_imports_first() -> None:
    # demo.py is an application of the public package (``from . import Event``).
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "demo"})
    assert len(modules) > 40
    result = subprocess.run(
        [sys.executable, "-c", EACH_FIRST, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


#: The most lines a module of the package may have (issue 10: files small
#: enough to read in one sitting).
MAX_LINES = 400
#: Modules allowed over MAX_LINES, and why.
OVER_LIMIT = {
    "_codec": "the sans-IO codec stays whole",
}


def test_no_module_is_longer_than_max_lines() -> None:
    lengths = {p.stem: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert len(lengths) > 40
    too_long = {m: n for m, n in lengths.items() if n > MAX_LINES and m not in OVER_LIMIT}
    assert not too_long, f"split these modules (at most {MAX_LINES} lines each): {too_long}"
    stale = {m: lengths.get(m) for m in OVER_LIMIT if lengths.get(m, 0) <= MAX_LINES}
    assert not stale, f"remove these from OVER_LIMIT, they fit now: {stale}"


#: Import cycles that exist only through ``TYPE_CHECKING`` imports (annotations
#: naming a higher module), as groups of modules that reach each other. None
#: of them runs; each is to be dissolved with small Protocols in the lower
#: module. No module may join one, and no new one may form.
KNOWN_TYPE_ONLY_CYCLES = [
    # Topics: _topic <-> _broker, _topic <-> _delivery, _subscription -> _topic,
    # _resume -> _topic, _backplane -> _broker/_topic (the public Backplane
    # and RemoteHistory protocols name Topic and Broker in their signatures).
    {"_backplane", "_broker", "_delivery", "_resume", "_subscription", "_topic"},
    # The application: _http, _request, _exchange, _asgi* name App; _http
    # names WebSocket; _limits, _cors name Request; the stream runners
    # (_parked, _streamed) name the Exchange they run on; _direct is the
    # Exchange's base (its writes from other tasks), split out for size.
    {
        "_app",
        "_asgi",
        "_asgi_scope",
        "_asgi_websocket",
        "_cors",
        "_direct",
        "_exchange",
        "_http",
        "_limits",
        "_parked",
        "_request",
        "_streamed",
        "_topic_writer",
        "_transport",
        "_websocket",
    },
]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that import each other, maybe indirectly."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for child in sorted(graph.get(module, ())):
            if child not in index:
                visit(child)
                low[module] = min(low[module], low[child])
            elif child in stack:
                low[module] = min(low[module], index[child])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_strongly_connected_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]


def test_type_only_cycles_do_not_grow() -> None:
    graph = {p.stem: imports(p, typing_too=True, in_functions=True) for p in PACKAGE.glob("*.py")}
    for group in strongly_connected(graph):
        assert any(group <= known for known in KNOWN_TYPE_ONLY_CYCLES), (
            f"new import cycle through TYPE_CHECKING imports: {sorted(group)}; "
            "name the lower module's needs with a Protocol there instead"
        )
