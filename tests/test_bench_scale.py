"""The scale-out benchmark's harness, run for real at its smallest (``--smoke``).

A private redis-server, real server processes, the C load generator: about
ten seconds. The benchmark's figures are only worth something if each part
measures what it says, so this checks the shape of what it reports: every
configuration delivered, the second process got its events through Redis,
the failover part saw events again after the restart, and nothing was
delivered twice.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


def test_smoke_run_measures_every_part(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_scale.py"),
            "--smoke",
            "--parts",
            "publish,fanout,failover",
            "--trio-sse",
            "worktree",
            "--out",
            str(tmp_path),
            "--no-docs",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [path] = tmp_path.glob("scale-*-smoke-partial.json")
    result = json.loads(path.read_text())
    runs = result["runs"]

    # 1. Publishing: both modes ran, every event acknowledged.
    assert {r["mode"] for r in runs["publish"]} == {"nowait", "tasks"}
    for r in runs["publish"]:
        assert r["status"] == "ok", r
        assert r["events_per_s"] > 0
        assert r["publish_errors"] == 0

    # 2. Fan-out: every configuration served every client, in order, nothing missed.
    fanout = {r["config"]: r for r in runs["fanout"]}
    assert set(fanout) == {"local-1", "redis-1", "redis-2"}
    for r in fanout.values():
        assert r["status"] == "ok", r
        assert r["served"] == r["clients"] == 20
        assert r["gaps"] == r["reorders"] == r["cut"] == 0
        assert r["delivered_per_s"] >= 0.8 * r["offered_per_s"]
        assert r["servers_alive"]
    # The second process has no ticker: its clients' events came through Redis.
    second = fanout["redis-2"]["processes"][1]
    assert second["connected"] == 10
    assert second["events_per_s"] >= 0.8 * 10 * fanout["redis-2"]["rate"]
    assert second["us_per_delivery"] is not None

    # 3. Failover: events flowed again after the restart, none twice.
    [round_] = runs["failover"]
    assert all(ms is not None for ms in round_["first_event_after_restart_ms"])
    assert all(s["duplicates"] == 0 and s["events"] > 0 for s in round_["subscribers"])

    goals = {g["goal"]: g for g in result["summary"]["goals"]}
    assert goals["publish into local Redis"]["met"] in (True, False)
    assert goals["fan-out, 2 processes: added p99"]["met"] in (True, False)
