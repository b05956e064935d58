"""The README's first hour, pasted in order: every command and file it shows works.

Blocks are taken from README.md itself, so editing the README edits the test.
Two substitutions only: port 8000 becomes a free port (a developer's demo may
hold 8000), and the install command is checked rather than run (it would
rebuild the package the tests already run from).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

from servers import serving_process

from trio_sse._cli import _parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of README section ``section`` (a ``##``/``###`` title)."""
    text = README.split(section + "\n", 1)[1]
    text = re.split(r"\n##+ ", text, maxsplit=1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_the_quick_start_is_exactly_two_commands_that_set_themselves_up() -> None:
    [quick] = blocks("## Quick start", "console")
    commands = [line.split("#")[0].strip() for line in quick.splitlines()]
    assert commands == ["python3 noxfile.py -s demo", "python3 noxfile.py -s tests"]
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    # Each session installs what it runs (the package; for the tests, system packages too).
    assert 'session.install("-e", ".[test]")' in noxfile
    assert ".ci/system-deps" in noxfile


def test_the_install_command_names_extras_that_exist() -> None:
    [install] = blocks("### Install from the checkout", "console")
    lines = install.strip().splitlines()
    assert lines[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    [pip, install, editable, target] = shlex.split(lines[2])
    assert [pip, install, editable] == ["pip", "install", "-e"]
    extras = set(re.fullmatch(r"\.\[(.*)\]", target).group(1).split(","))  # type: ignore[union-attr]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert extras <= set(project["optional-dependencies"]), extras
    assert project["scripts"]["trio-sse"]  # the command the README then uses


def _curl(command: str, port: int) -> str:
    """Run the README's curl command against ``port`` (urllib if there is no curl)."""
    argv = shlex.split(command.replace(":8000", f":{port}"))
    if shutil.which("curl"):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert done.returncode in (0, 28), done  # 28: the -m time limit, as intended
        return done.stdout
    url = argv[-1]
    with urllib.request.urlopen(url, timeout=10) as response:  # pragma: no cover - no curl
        return "".join(response.readline().decode() for _ in range(4))


def test_the_smallest_app_runs_as_shown(tmp_path: Path) -> None:
    section = "### The smallest app"
    [hello] = blocks(section, "python")
    assert hello == (ROOT / "examples/hello.py").read_text(encoding="utf-8")
    [run_it, curl] = blocks(section, "console")
    [shown] = blocks(section, "text")
    (tmp_path / "hello.py").write_text(hello.replace("port=8000", "port=0"))
    assert run_it.strip() == "python3 hello.py"
    with serving_process([sys.executable, "hello.py"], cwd=tmp_path) as server:
        output = _curl(curl.strip(), server.port)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10) as page:
            html = page.read().decode()
        stderr = server.stop()
    assert "SIGINT: shutting down" in stderr
    pattern = r"data: \d\d:\d\d:\d\d\n\n"
    assert re.fullmatch(f"({pattern})+", shown + "\n"), shown
    assert re.match(f"({pattern}){{2}}", output), output
    assert "new EventSource('/clock')" in html
    # The prose's command line serves the same file.
    assert "`trio-sse serve hello:app\n--port 8000`" in README
    command = [sys.executable, "-m", "trio_sse", "serve", "hello:app", "--port", "0"]
    with serving_process(command, cwd=tmp_path) as server:
        assert re.match(pattern, _curl(curl.strip(), server.port))
        server.stop()


def test_the_topics_example_runs_as_shown(tmp_path: Path) -> None:
    [prices] = blocks("### Topics: one publisher, many subscribers", "python")
    assert prices == (ROOT / "examples/prices.py").read_text(encoding="utf-8")
    assert "with `python3 examples/prices.py`" in README
    script = tmp_path / "prices.py"
    script.write_text(prices.replace("port=8000", "port=0"))
    with serving_process([sys.executable, str(script)], cwd=ROOT) as server:
        output = _curl("curl -N -m 2 http://127.0.0.1:8000/events/prices", server.port)
        server.stop()
    # An id-only event first (the topic's position), then prices.
    assert re.search(r"\n\nevent: price\nid: \S+\ndata: \{\"AAPL\": [\d.]+\}\n\n", output), output


def test_the_demo_options_are_accepted_and_reach_the_demo() -> None:
    [command] = blocks("### The demo's options", "console")
    argv = shlex.split(command)
    assert argv[:5] == ["python3", "noxfile.py", "-s", "demo", "--"]
    args = _parser().parse_args(["demo", *argv[5:]])
    assert (args.port, args.host) == (8001, "0.0.0.0")
    assert '"trio-sse", "demo", *session.posargs' in (ROOT / "noxfile.py").read_text()


def test_the_tutorial_page_shows_the_same_commands_and_file() -> None:
    tutorial = (ROOT / "docs/tutorial.md").read_text(encoding="utf-8")
    shown = re.findall(r"```(?:console|python)\n(.*?)```", tutorial, re.S)
    assert shown == [
        *blocks("### Install from the checkout", "console"),
        *blocks("### The smallest app", "python"),
        *blocks("### The smallest app", "console"),
    ]
