"""``release_memory()`` gives freed pages back: RSS falls, where freeing alone left it up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import trio_sse
from trio_sse import _memory

# Run under PYTHONMALLOC=malloc, the allocator the recipe in docs/deploying.md
# asks for. 400,000 objects of about 250 bytes (~100 MB), one in 64 kept: the
# kept ones pin the heap's top and a page here and there, so glibc's free()
# alone returns almost nothing.
_CHILD = """
import json, sys
import trio_sse

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

start = rss_mb()
keep, junk = [], []
for i in range(400_000):
    (keep if i % 64 == 63 else junk).append(bytes(200) + str(i).encode())
loaded = rss_mb()
junk.clear()
freed = rss_mb()
released = trio_sse.release_memory() if sys.argv[1] == "release" else None
json.dump({"start": start, "loaded": loaded, "freed": freed, "after": rss_mb(),
           "released": released, "kept": len(keep)}, sys.stdout)
"""


def _run(mode: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


@pytest.mark.skipif(_memory._MALLOC_TRIM is None, reason="the C library has no malloc_trim")
def test_release_memory_returns_what_freeing_kept() -> None:
    kept = _run("keep")
    released = _run("release")
    grown = kept["loaded"] - kept["start"]
    assert grown > 60, kept  # the objects really took memory
    # Freeing alone: the pages stay with the process.
    assert kept["after"] - kept["start"] > 0.8 * grown, kept
    # release_memory(): most of them go back to the system.
    assert released["released"] is True
    assert released["after"] - released["start"] < 0.4 * grown, released


def test_release_memory_without_malloc_trim_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "_MALLOC_TRIM", None)
    assert trio_sse.release_memory() is False


@pytest.mark.skipif(_memory._MALLOC_TRIM is None, reason="the C library has no malloc_trim")
def test_release_memory_is_safe_with_the_default_allocator() -> None:
    data = [bytes(1000) for _ in range(10_000)]
    del data
    assert isinstance(trio_sse.release_memory(), bool)
