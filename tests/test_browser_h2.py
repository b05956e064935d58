"""Chromium and the raw server's own HTTP/2: more than six EventSources per origin.

Browsers open at most six HTTP/1.1 connections per origin, so a seventh
``EventSource`` never connects; over HTTP/2 (TLS, ALPN ``h2``) every stream
shares one connection. The same demo page, served by :func:`trio_sse.serve`
with ``Config.certfile``, opens eight streams (its own and seven more):
over HTTP/2 all eight receive events; over plain HTTP/1.1 two stay silent.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from browser_harness import LoopbackCertificate, chromium, raw_server
from playwright.sync_api import Page

from trio_sse import Config
from trio_sse.demo import DemoOptions, make_app

FAST = DemoOptions(tick_interval=0.1, retry_ms=200)
CONFIG = Config(
    stream_end_retry=200, stream_end_retry_jitter=0, shutdown_grace_period=0.5, close_linger=0.1
)
EXTRA_SOURCES = """(n) => {
  window.extra = Array(n).fill(0);
  window.sources = [];
  for (let i = 0; i < n; i++) {
    const source = new EventSource("events");
    source.addEventListener("clock", () => { window.extra[i] += 1; });
    window.sources.push(source);
  }
}"""


pytestmark = pytest.mark.usefixtures("time_bound")


def open_eight_sources(page: Page, url: str) -> str:
    page.goto(url)
    page.wait_for_function("window.demo.count >= 2", timeout=10_000)
    page.evaluate(EXTRA_SOURCES, 7)  # with the page's own: eight streams, one origin
    protocol: str = page.evaluate("window.demo.protocol")
    return protocol


def test_raw_server_http2_serves_more_than_six_streams(tmp_path: Path) -> None:
    cert = LoopbackCertificate(tmp_path)
    config = replace(CONFIG, certfile=str(cert.pem))
    app = make_app(FAST, config=config)
    with raw_server(app, config=config) as server, chromium([cert.chromium_flag]) as browser:
        page = browser.new_page()
        assert open_eight_sources(page, f"https://127.0.0.1:{server.port}/") == "h2"
        page.wait_for_function("window.extra.every((n) => n >= 3)", timeout=10_000)
        assert page.inner_text("#protocol").startswith("HTTP/2")
        clock = app.state.broker.topic("clock")
        assert server.call(lambda: clock.stats().subscribers) == 8
        # Closing them resets their streams (RST_STREAM): their handlers end,
        # the page's own stream and the connection go on.
        page.evaluate("window.sources.forEach((s) => s.close())")
        deadline = time.monotonic() + 10
        while server.call(lambda: clock.stats().subscribers) != 1:
            assert time.monotonic() < deadline, "closed EventSources still subscribed"
            time.sleep(0.05)
        count = page.evaluate("window.demo.count")
        page.wait_for_function(f"window.demo.count > {count + 3}", timeout=10_000)


def test_raw_server_http1_stalls_the_seventh_stream() -> None:
    app = make_app(FAST, config=CONFIG)
    with raw_server(app, config=CONFIG) as server, chromium() as browser:
        page = browser.new_page()
        assert open_eight_sources(page, f"http://127.0.0.1:{server.port}/") == "http/1.1"
        page.wait_for_function("window.extra.filter((n) => n >= 3).length >= 5", timeout=10_000)
        time.sleep(1.0)  # ten more ticks: the last two never get a connection
        extra = page.evaluate("window.extra")
        assert sorted(n > 0 for n in extra) == [False, False, True, True, True, True, True]
