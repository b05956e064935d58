"""The demo in a real browser: rendering, resume, eviction, restart, HTTP/2.

Debian's Chromium (headless, fresh profile) loads the demo page (docs/demo.md)
served by a server in a thread (see ``tests/browser_harness.py``). The page
records what its ``EventSource`` saw in ``window.demo``; every topic's
sequence numbers are checked here too, so "no gap, no duplicate" is verified
by the test, not only by the page's own bookkeeping.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_harness import (
    Cutter,
    LoopbackCertificate,
    ServerThread,
    chromium,
    contiguous,
    hypercorn_server,
    post_json,
    raw_server,
)
from playwright.sync_api import Page

from trio_sse import Broker, Config, Event
from trio_sse.demo import DemoOptions, make_app

pytestmark = pytest.mark.usefixtures("time_bound")


#: Fast ticks and reconnects; the server ends streams with an exact retry.
FAST = DemoOptions(tick_interval=0.1, retry_ms=200)
CONFIG = Config(
    stream_end_retry=200, stream_end_retry_jitter=0, shutdown_grace_period=0.5, close_linger=0.1
)


def demo_state(page: Page) -> dict[str, object]:
    state: dict[str, object] = page.evaluate("window.demo")
    return state


def wait_for(page: Page, condition: str, timeout: float = 10_000) -> None:
    page.wait_for_function(condition, timeout=timeout)


def test_demo_renders_and_updates() -> None:
    app = make_app(DemoOptions(tick_interval=0.2, retry_ms=200), config=CONFIG)
    token = app.state.token
    with raw_server(app) as server, chromium() as browser:
        url = f"http://127.0.0.1:{server.port}/"
        tab, other = browser.new_page(), browser.new_page()
        tab.goto(url)
        other.goto(url)
        wait_for(tab, "window.demo.count >= 6 && window.demo.metrics !== null")
        assert re.fullmatch(r"\d\d:\d\d:\d\d", tab.inner_text("#clock"))
        # The figures are the server's own: two tabs hold two streams.
        wait_for(tab, "window.demo.metrics.open_streams === 2")
        metrics = demo_state(tab)["metrics"]
        assert isinstance(metrics, dict)
        assert metrics["rss_mb"] > 5
        assert set(metrics["topics"]) == {"clock", "metrics", "notifications", "bulk"}
        assert tab.inner_text("#m-open_streams") == "2"
        assert len(tab.query_selector_all("#topics tbody tr")) == 4
        # The token is shown on the page; the form uses it; without it: 403.
        assert tab.inner_text("#token") == token
        other.fill("#notify-text", "hello from the other tab")
        other.click("#notify-form button")
        wait_for(other, "document.getElementById('notify-result').textContent.startsWith('200')")
        wait_for(tab, "window.demo.notifications.includes('hello from the other tab')")
        assert "hello from the other tab" in tab.inner_text("#feed")
        other.fill("#notify-token", "guess")
        other.fill("#notify-text", "not allowed")
        other.click("#notify-form button")
        wait_for(other, "document.getElementById('notify-result').textContent.startsWith('403')")
        # /metrics works in the demo (Prometheus text), from the page's origin.
        text = tab.evaluate("fetch('metrics').then((r) => r.text())")
        assert 'trio_sse_topic_subscribers{topic="clock"} 2.0' in text
        state = demo_state(tab)
        assert state["gaps"] == 0
        assert state["duplicates"] == 0
        assert state["opens"] == 1


@pytest.mark.parametrize("how", ["server-ends-streams", "connections-cut"])
def test_dropped_streams_resume_without_gap_or_duplicate(how: str) -> None:
    """The server ends every stream (``POST /drop``), or a proxy in between aborts them."""
    app = make_app(FAST, config=CONFIG)
    token, broker = app.state.token, app.state.broker
    with raw_server(app) as server, chromium() as browser:
        direct = f"http://127.0.0.1:{server.port}/"
        cutter = Cutter(server.port)
        with ServerThread(cutter.serve) as proxy:
            tab = browser.new_page()
            tab.goto(direct if how == "server-ends-streams" else f"http://127.0.0.1:{proxy.port}/")
            wait_for(tab, "window.demo.count >= 5")
            start = tab.evaluate("window.demo.seq.clock")
            sent = []
            for round_ in range(3):
                if how == "server-ends-streams":
                    assert post_json(direct + "drop", {}, token) == {"dropped": 1}
                else:
                    assert proxy.call(cutter.cut) >= 1
                # Published while the tab is away: only the history can bring these.
                for i in range(5):
                    text = f"while away {round_}.{i}"
                    event = Event(text, event="notification")
                    server.call(broker.publish_nowait, "notifications", event)
                    sent.append(text)
                wait_for(tab, f"window.demo.opens >= {round_ + 2}")
                wait_for(tab, f"window.demo.notifications.length >= {len(sent)}")
            wait_for(tab, f"window.demo.seq.clock >= {start + 30}")
            state = demo_state(tab)
    assert state["notifications"] == sent
    assert state["gaps"] == 0
    assert state["duplicates"] == 0
    received = state["received"]
    assert isinstance(received, list)
    assert len(contiguous(received, "clock")) >= 30
    contiguous(received, "metrics")
    assert contiguous(received, "notifications") == list(range(1, 16))
    assert state["resets"] == []
    assert state["errors"] == 3


def evictions(server: ServerThread, broker: Broker) -> int:
    """Subscribers evicted by any topic of the demo's broker.

    A tab's one stream takes its four topics through one queue; when the queue
    is full, the topic whose publish finds it so evicts the tab and counts it.
    During a burst that is usually ``bulk``, but now and then a ``clock`` tick
    falls between two bulk events and it is ``clock``: only the sum tells.
    """
    total: int = server.call(lambda: sum(s.evicted for s in broker.stats().values()))
    return total


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_frozen_tab_is_evicted_then_resumes_without_gap() -> None:
    app = make_app(FAST, config=CONFIG)
    token, broker = app.state.token, app.state.broker
    with raw_server(app) as server, chromium() as browser:
        url = f"http://127.0.0.1:{server.port}/"
        tab = browser.new_page()
        tab.goto(url)
        wait_for(tab, "window.demo.count >= 3")
        count, size = 400, 32 * 1024
        # Control: a tab that reads keeps up with the burst.
        assert post_json(url + "burst", {"count": count, "size": size}, token)["count"] == count
        wait_for(tab, f"window.demo.bulk >= {count}")
        assert evictions(server, broker) == 0
        # The page's script spins for 4 s (from the next task on: the page
        # cannot be asked while it spins, so it notes when it froze and
        # thawed): it reads nothing while the server publishes a burst of
        # 13 MB, far more than the socket buffers, Chromium's and the queue
        # (64 events) hold together (3 to 5 MB, measured with /proc/net/tcp).
        tab.evaluate(
            "setTimeout(() => { window.frozen = [Date.now()]; busy(4000);"
            " window.frozen.push(Date.now()); }, 0)"
        )
        time.sleep(0.3)
        started = time.time()
        answer = post_json(url + "burst", {"count": count, "size": size}, token)
        assert answer["count"] == count
        wait_until(lambda: evictions(server, broker) > 0, 5, "the frozen tab was not evicted")
        wait_for(tab, f"window.demo.bulk >= {2 * count}", timeout=20_000)
        frozen, thawed = tab.evaluate("window.frozen")
        assert frozen <= started * 1000 < thawed, "the page was not frozen when the burst began"
        assert evictions(server, broker) == 1
        state = demo_state(tab)
        assert state["evictions"] == 1
        assert state["opens"] == 2
        assert state["gaps"] == 0
        assert state["duplicates"] == 0
        received = state["received"]
        assert isinstance(received, list)
        assert contiguous(received, "bulk") == list(range(1, 2 * count + 1))
        contiguous(received, "clock")


def test_server_restart_gives_the_page_a_reset() -> None:
    first = make_app(FAST, config=CONFIG)
    with chromium() as browser:
        with raw_server(first) as server:
            port = server.port
            tab = browser.new_page()
            tab.goto(f"http://127.0.0.1:{port}/")
            wait_for(tab, "window.demo.count >= 5")
            old_epoch = demo_state(tab)["epoch"]
            old_seq = tab.evaluate("window.demo.seq.clock")
        # A new run on the same port, whose topics already went past the page's
        # positions: only the epoch in the ids tells the page's cursor is stale.
        second = make_app(FAST, config=CONFIG)
        broker = second.state.broker

        def publish_ahead() -> None:
            for i in range(old_seq + 20):
                broker.publish_nowait("clock", Event(f"t{i}", event="clock"))
                broker.publish_nowait("metrics", Event("{}", event="metrics"))

        with raw_server(second, port=port, prepare=publish_ahead):
            wait_for(tab, "window.demo.resets.length >= 2")
            wait_for(tab, f"window.demo.seq.clock >= {old_seq + 25}")
            state = demo_state(tab)
        assert sorted(state["resets"]) == ["clock", "metrics"]  # type: ignore[arg-type]
        assert state["epoch"] != old_epoch
        assert state["epoch"] == broker.backplane.id_prefix.rstrip("-")
        assert state["gaps"] == 0
        assert state["duplicates"] == 0


EXTRA_SOURCES = """(n) => {
  window.extra = Array(n).fill(0);
  for (let i = 0; i < n; i++) {
    new EventSource("events").addEventListener("clock", () => { window.extra[i] += 1; });
  }
}"""


def _open_eight_sources(page: Page, url: str) -> str:
    page.goto(url)
    wait_for(page, "window.demo.count >= 2")
    page.evaluate(EXTRA_SOURCES, 7)  # with the page's own: eight streams, one origin
    protocol: str = page.evaluate("window.demo.protocol")
    return protocol


def test_http2_serves_more_than_six_streams_per_origin(tmp_path: Path) -> None:
    cert = LoopbackCertificate(tmp_path)
    app = make_app(FAST, config=CONFIG)
    with hypercorn_server(app, tls=cert) as server, chromium([cert.chromium_flag]) as browser:
        page = browser.new_page()
        assert _open_eight_sources(page, f"https://127.0.0.1:{server.port}/") == "h2"
        wait_for(page, "window.extra.every((n) => n >= 3)")
        assert page.inner_text("#protocol").startswith("HTTP/2")


def test_http1_stalls_the_seventh_stream_per_origin() -> None:
    app = make_app(FAST, config=CONFIG)
    with hypercorn_server(app) as server, chromium() as browser:
        page = browser.new_page()
        assert _open_eight_sources(page, f"http://127.0.0.1:{server.port}/") == "http/1.1"
        wait_for(page, "window.extra.filter((n) => n >= 3).length >= 5")
        time.sleep(1.0)  # ten more ticks: the last two never get a connection
        extra = page.evaluate("window.extra")
        assert sorted(n > 0 for n in extra) == [False, False, True, True, True, True, True]
        assert "six streams" in page.inner_text("#protocol")
