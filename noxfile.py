"""Development tasks for trio-sse.

Run a session with ``python3 noxfile.py -s NAME`` (no set-up needed: on a fresh
machine this file first installs nox into ``.nox/_bootstrap``), or with ``nox
-s NAME`` where nox is installed. ``python3 noxfile.py -l`` lists sessions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    import nox
except ModuleNotFoundError:  # pragma: no cover - bootstrap path
    if __name__ != "__main__":
        raise
    import subprocess
    import venv

    boot = HERE / ".nox" / "_bootstrap"
    python = boot / "bin" / "python"
    if not python.exists():
        print("trio-sse: installing nox into .nox/_bootstrap (first run only)", flush=True)
        venv.create(boot, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "nox"], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest arguments after ``--``).

    First installs the system packages the tests run for real (redis-server)
    with ``.ci/system-deps``: apt-get as root, else it says what to install.
    """
    session.run("bash", str(HERE / ".ci" / "system-deps"), external=True)
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the demo dashboard on http://127.0.0.1:8000 (pass CLI options after ``--``)."""
    session.install("-e", ".[prometheus]")
    session.run("trio-sse", "demo", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "trio_sse")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site into ``site/`` with mkdocs; any warning fails the build."""
    session.install("-e", ".[docs]")
    # Material prints a notice about its future on every build; only warnings matter here.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz and flood the raw server (``-- --requests N --flood N``); see docs/security.md."""
    session.install("-e", ".")
    session.run("python", "benchmarks/fuzz_edge.py", *session.posargs)


@nox.session(name="bench-codec")
def bench_codec(session: nox.Session) -> None:
    """Codec benchmark: encode/decode side by side with sse-starlette and httpx-sse."""
    # httpx-sse leaves httpx to its user: the benchmark drives it through httpx.
    session.install("-e", ".", "sse-starlette", "httpx-sse", "httpx")
    session.run("python", "benchmarks/bench_codec.py", *session.posargs)


@nox.session(name="bench-client")
def bench_client(session: nox.Session) -> None:
    """Client benchmark: open_event_source vs httpx-sse reading the same stream over a socket."""
    session.install("-e", ".[client]", "httpx-sse", "sse-starlette")
    session.run("python", "benchmarks/bench_client.py", *session.posargs)


#: Peers of the fan-out load benchmark, installed one by one so that a peer
#: that cannot be installed is skipped (with a message) instead of failing.
BENCH_PEERS = ["sse-starlette", "uvicorn[standard]", "aiohttp", "aiohttp-sse", "hypercorn"]


@nox.session(name="bench-topics")
def bench_topics(session: nox.Session) -> None:
    """Topic fan-out cost per subscriber, in process (task wake-ups vs direct sink)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_topics.py", *session.posargs)


@nox.session(name="bench-gap")
def bench_gap(session: nox.Session) -> None:
    """Event-loop stalls while events reach 100,000 subscriber tasks in one process.

    Arguments after ``--`` go to ``benchmarks/bench_gap.py``: ``--subscribers
    N``, ``--events K``, ``--runs R``, ``--peers trio-sse,trio-channels``,
    ``--gc default,freeze,tuned``, ``--fanout-slice S``.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_gap.py", *session.posargs)


@nox.session(name="bench-memory")
def bench_memory(session: nox.Session) -> None:
    """RSS per open topic stream and after churn, against the floor.

    Arguments after ``--`` go to ``benchmarks/bench_memory.py``: ``--streams
    1000,10000`` (totals), ``--processes N`` (server processes), ``--churn-rounds
    R``, ``--churn N``, ``--peers trio-sse,floor``, ``--workers N`` (one
    ``trio-sse serve --workers N`` on a private redis-server), ``--malloc``,
    ``--release-every S``. One process holds at most ``RLIMIT_NOFILE`` streams;
    spread 100,000 over several (``--processes 6`` or ``--workers 6``).
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_memory.py", *session.posargs)


@nox.session(name="bench-workers")
def bench_workers(session: nox.Session) -> None:
    """SIGTERM to exit of ``trio-sse serve --workers 2`` with 100 open streams."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_workers_shutdown.py", *session.posargs)


@nox.session(name="bench-h2")
def bench_h2(session: nox.Session) -> None:
    """HTTP/2 fan-out CPU per delivery (raw h2, raw HTTP/1.1, hypercorn h2) and RSS under a
    client that never grants window (``-- --quick``: about a minute)."""
    session.install("-e", ".[http2]", "hypercorn", "trustme")
    invocation = " ".join(
        ["python3 noxfile.py -s bench-h2", *(["--", *session.posargs] if session.posargs else [])]
    )
    session.run(
        "python", "benchmarks/bench_h2.py", *session.posargs, env={"BENCH_INVOCATION": invocation}
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Fan-out load benchmark against the peers (``-- --quick``: under two minutes)."""
    from nox.command import CommandFailed

    try:
        session.install("-e", ".", "matplotlib", *BENCH_PEERS)
    except CommandFailed:
        session.install("-e", ".", "matplotlib")
        for peer in BENCH_PEERS:
            try:
                session.install(peer)
            except CommandFailed:
                session.warn(f"bench: could not install {peer}; its server will be skipped")
    node_dir = HERE / "benchmarks" / "node"
    try:
        session.run(
            "npm", "install", "--no-audit", "--no-fund", "--prefix", str(node_dir), external=True
        )
    except CommandFailed:
        session.warn("bench: npm install failed; the Express server will be skipped")
    _build_loadgen(session)
    invocation = " ".join(
        ["python3 noxfile.py -s bench", *(["--", *session.posargs] if session.posargs else [])]
    )
    session.run(
        "python", "benchmarks/bench_load.py", *session.posargs, env={"BENCH_INVOCATION": invocation}
    )


def _build_loadgen(session: nox.Session) -> None:
    """Compile the C load generator into benchmarks/.build/loadgen."""
    build = HERE / "benchmarks" / ".build"
    build.mkdir(parents=True, exist_ok=True)
    session.run(
        "cc",
        "-O2",
        "-Wall",
        "-o",
        str(build / "loadgen"),
        str(HERE / "benchmarks" / "loadgen.c"),
        external=True,
    )


@nox.session(name="bench-scale")
def bench_scale(session: nox.Session) -> None:
    """Scale-out benchmark: the Redis backplane against one process (``-- --quick``: < 3 min).

    Needs ``redis-server`` (``.ci/system-deps`` installs it as root, else says
    what to install) and a C compiler for the load generator.
    """
    session.run("bash", str(HERE / ".ci" / "system-deps"), external=True)
    session.install("-e", ".[redis]")
    _build_loadgen(session)
    invocation = " ".join(
        [
            "python3 noxfile.py -s bench-scale",
            *(["--", *session.posargs] if session.posargs else []),
        ]
    )
    session.run(
        "python",
        "benchmarks/bench_scale.py",
        *session.posargs,
        env={"BENCH_INVOCATION": invocation},
    )


if __name__ == "__main__":
    nox.main()
