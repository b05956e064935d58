"""The stall benchmark's instruments (``benchmarks/bench_gap.py``), run small.

Its figures are only as good as its counting: a collection it misses or a
subscriber that never receives must fail here, not show up as a short gap.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gap.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gap", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_watch_counts_collections_only_while_armed() -> None:
    watch = load_bench().GcWatch()
    try:
        gc.collect()
        assert watch.count == [0, 0, 0]
        watch.armed = True
        gc.collect(0)
        gc.collect()
        assert watch.count == [1, 0, 1]
        assert watch.longest[2] > 0
    finally:
        gc.callbacks.remove(watch._callback)


@pytest.mark.parametrize("peer", ["trio-sse", "trio-channels"])
@pytest.mark.parametrize("gc_mode", ["default", "tuned"])
def test_every_subscriber_receives_every_event(peer: str, gc_mode: str) -> None:
    # A run ends only once all subscribers x events deliveries were counted.
    command = [sys.executable, str(BENCH), "--one", f"{peer},{gc_mode}"]
    out = subprocess.run(
        [*command, "--subscribers", "300", "--events", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    row = json.loads(out.stdout.splitlines()[-1])
    assert (row["peer"], row["gc"], row["subscribers"], row["events"]) == (peer, gc_mode, 300, 2)
    assert row["deliver_s"] > 0
    # deliver_s is rounded to milliseconds.
    assert row["us_per_delivery"] == pytest.approx(row["deliver_s"] / 600 * 1e6, abs=1.0)
    assert 0 < row["longest_gap_ms"] < 5000
    assert len(row["collections"]) == len(row["longest_collection_ms"]) == 3
