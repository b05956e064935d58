"""``trio-sse doctor URL``: what stands between an event stream and a browser.

Strategy: connect as a browser's ``EventSource`` does (``Accept:
text/event-stream``, ``Cache-Control: no-cache``, the ``Accept-Encoding`` a
browser sends), time every chunk that arrives, and compare what arrived with
what the server says it sent. The server side is :func:`diagnostics_stream`,
a stream route that sends ``count`` probes ``interval`` seconds apart, each
carrying its send time, the server's heartbeat interval and the
``Last-Event-ID`` the request arrived with, then stays idle (heartbeats
only). From those, each check below either finds nothing or makes a
:class:`Finding` with a fix:

- headers: content type, ``Cache-Control``, compression (``Content-Encoding``);
- buffering: probes delayed beyond their spacing, or none at all, by a proxy;
- idle cut-off: the stream closed without the server's final ``retry:``;
- heartbeats: an idle stream silent for longer than the announced interval;
- ``Last-Event-ID`` lost on the way (checked with a second request);
- HTTP/1.1: browsers open at most six connections per origin.

Against a stream that is not a diagnostics stream, only the header, cut-off
and HTTP version checks apply (the report says so). Probe latencies are
compared with the smallest one, so clocks need not agree across hosts.

The pieces: ``_doctor_read.py`` reads a stream as a browser does and times
it; this module turns what was read into findings; ``_doctor_cli.py`` is the
``trio-sse doctor`` subcommand.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Literal, final

import trio

from ._doctor_read import Read, negotiated_h2, read_stream
from ._event import Event
from ._http import EventStream, StreamHandler
from ._request import Request

__all__ = ["PROBE_EVENT", "Finding", "Report", "diagnose", "diagnostics_stream"]

#: The event type of :func:`diagnostics_stream`'s probes.
PROBE_EVENT = "trio-sse-probe"
#: The ``Last-Event-ID`` the doctor's second request sends.
RESUME_ID = "trio-sse-doctor-resume"


def diagnostics_stream(count: int = 8, interval: float = 0.2) -> StreamHandler:
    """A stream handler for the doctor: ``app.stream("/doctor")(diagnostics_stream())``.

    Args:
        count: probes sent at the start of each stream (then heartbeats only).
        interval: seconds between probes.

    Returns:
        An ``async def handler(request, stream)`` for :meth:`App.stream`.
    """
    if count < 1 or not interval > 0:
        raise ValueError(f"need count >= 1 and interval > 0, got {count}, {interval}")

    async def probes(request: Request, stream: EventStream) -> None:
        heartbeat = request.config.heartbeat_interval if request.config else None
        for seq in range(count):
            data = {
                "seq": seq,
                "count": count,
                "interval": interval,
                "sent": time.time(),
                "heartbeat_interval": heartbeat,
                "last_event_id": request.last_event_id,
            }
            await stream.send(Event(json.dumps(data), event=PROBE_EVENT, id=f"probe-{seq}"))
            await trio.sleep(interval)
        await trio.sleep_forever()

    return probes


@final
@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the doctor found, and how to fix it."""

    code: str
    severity: Literal["problem", "note"]
    summary: str
    fix: str


@final
@dataclass(slots=True)
class Report:
    """What :func:`diagnose` measured, and its findings."""

    url: str
    status: int = 0
    http_version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    time_to_headers: float | None = None
    time_to_first_event: float | None = None
    probes: list[float] = field(default_factory=list)  # latency of each probe
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        """The findings of severity ``"problem"``."""
        return [f for f in self.findings if f.severity == "problem"]

    def codes(self) -> set[str]:
        """The codes of all findings."""
        return {f.code for f in self.findings}


async def diagnose(
    url: str, *, duration: float = 20.0, ssl_context: ssl.SSLContext | None = None
) -> Report:
    """Connect to ``url`` as a browser would for ``duration`` seconds and report.

    The stream is read over HTTP/1.1 (h11); for an ``https`` URL a separate
    TLS handshake offers ``h2`` to learn whether browsers get HTTP/2.

    Args:
        url: the stream's ``http://`` or ``https://`` URL.
        duration: seconds to watch the stream.
        ssl_context: for ``https`` (default: the system's certificate authorities).

    Raises:
        OSError: the server cannot be reached.
        ValueError: ``url`` is not an http(s) URL.
    """
    report = Report(url)
    read = await read_stream(url, duration, None, context=ssl_context)
    report.status, report.http_version, report.headers = (
        read.status,
        read.http_version,
        read.headers,
    )
    report.time_to_headers = read.head_at
    if read.events:
        report.time_to_first_event = read.events[0][0] - (read.head_at or 0.0)
    add = report.findings.append
    if read.head_at is None:
        add(
            Finding(
                "buffered",
                "problem",
                f"no response head in {duration:g} s: a proxy holds the whole response back "
                "(or the server does not answer)",
                _BUFFER_FIX,
            )
        )
        return report
    if read.status != 200:
        add(
            Finding(
                "status",
                "problem",
                f"the response is {read.status}, not 200",
                "check the URL and what the server logs for it",
            )
        )
        return report
    ctype = read.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        add(
            Finding(
                "content-type",
                "problem",
                f"Content-Type is {ctype!r}",
                "answer with Content-Type: text/event-stream (a trio-sse stream route does)",
            )
        )
    cache = read.headers.get("cache-control", "")
    if "no-cache" not in cache and "no-store" not in cache:
        add(
            Finding(
                "cache-control",
                "problem",
                f"Cache-Control is {cache!r}",
                "send Cache-Control: no-cache, and keep proxies and CDNs from overriding it",
            )
        )
    encoding = read.headers.get("content-encoding")
    if encoding:
        add(
            Finding(
                "compressed",
                "problem",
                f"the stream is compressed ({encoding})",
                "turn compression off for text/event-stream (nginx: remove it from "
                "gzip_types): events are small, and many compressors and CDNs hold them "
                "back until a buffer fills",
            )
        )
    probes = [(at, json.loads(data)) for at, kind, data in read.events if kind == PROBE_EVENT]
    if not probes and (not encoding or encoding in ("gzip", "x-gzip", "deflate")):
        note = "no probes (not a diagnostics_stream route): buffering and heartbeats unchecked"
        if read.chunks or read.ended:
            add(
                Finding(
                    "no-probes",
                    "note",
                    note,
                    "point the doctor at a diagnostics_stream() route for the full check",
                )
            )
        else:
            add(
                Finding(
                    "buffered",
                    "problem",
                    f"headers arrived but no byte of the body in {duration:g} s",
                    _BUFFER_FIX,
                )
            )
    if probes:
        _check_probes(report, probes, read, duration)
        resumed = await read_stream(
            url, min(duration, 5.0), RESUME_ID, first_event=True, context=ssl_context
        )
        first = [json.loads(d) for _, kind, d in resumed.events if kind == PROBE_EVENT][:1]
        if first and first[0]["last_event_id"] != RESUME_ID:
            add(
                Finding(
                    "last-event-id",
                    "problem",
                    "the Last-Event-ID request header did not reach the server",
                    "pass the header through the proxy (nginx does by default: look for "
                    "proxy_set_header Last-Event-ID or a header allow-list)",
                )
            )
    if read.ended and not read.retry_seen and ctype.startswith("text/event-stream"):
        idle = (read.head_at or 0.0) if not read.chunks else read.chunks[-1]
        ended_after = max(read.chunks[-1] if read.chunks else 0.0, idle)
        add(
            Finding(
                "cut",
                "problem",
                f"the stream was closed without the server's final retry: "
                f"(after {ended_after:.1f} s, idle since then)",
                "an idle timeout cut it: make the proxy's read timeout (nginx "
                "proxy_read_timeout) longer than Config.heartbeat_interval",
            )
        )
    if read.http_version == "1.1" and not (
        url.startswith("https:") and await negotiated_h2(url, ssl_context)
    ):
        add(
            Finding(
                "http1",
                "note",
                "HTTP/1.1: a browser opens at most six connections per "
                "origin, shared by all its tabs; a seventh stream waits",
                "serve over HTTP/2: Config.certfile on trio-sse's own server "
                "(docs/tls-http2.md), or TLS at a proxy",
            )
        )
    return report


_BUFFER_FIX = (
    "a proxy buffers the response: nginx proxy_buffering off for the stream's location, or "
    "let it honour the X-Accel-Buffering: no header the server sends (no "
    "proxy_ignore_headers X-Accel-Buffering); CDNs need streaming enabled"
)


def _check_probes(
    report: Report, probes: list[tuple[float, dict[str, object]]], read: Read, duration: float
) -> None:
    add = report.findings.append
    first = probes[0][1]
    interval = float(first["interval"])  # type: ignore[arg-type]
    count = int(first["count"])  # type: ignore[call-overload]
    offset = read.head_at or 0.0
    # Arrival on the doctor's clock, minus send time on the server's: only differences matter.
    base_sent = float(first["sent"])  # type: ignore[arg-type]
    lags = [at - offset - (float(p["sent"]) - base_sent) for at, p in probes]  # type: ignore[arg-type]
    report.probes = [lag - min(lags) for lag in lags]
    late = max(report.probes)
    if len(probes) < count or late > max(0.5, 2 * interval):
        add(
            Finding(
                "buffered",
                "problem",
                f"{len(probes)} of {count} probes arrived, up to {late:.2f} s later than "
                f"sent {interval:g} s apart: they came in bursts",
                _BUFFER_FIX,
            )
        )
    heartbeat = first.get("heartbeat_interval")
    if heartbeat is None:
        add(
            Finding(
                "heartbeat",
                "problem",
                "the server sends no heartbeats (Config.heartbeat_interval is None)",
                "set Config.heartbeat_interval below every idle timeout on the way "
                "(proxies, load balancers: often 60 s)",
            )
        )
        return
    if read.ended:
        return
    idle_from = probes[-1][0]
    gaps = [
        b - a
        for a, b in zip(
            [idle_from, *[c for c in read.chunks if c > idle_from]],
            [c for c in read.chunks if c > idle_from],
            strict=False,
        )
    ]
    silent_end = duration - max([idle_from, *read.chunks])
    worst = max([*gaps, silent_end])
    if worst > 1.5 * float(heartbeat) + 0.5:  # type: ignore[arg-type]
        add(
            Finding(
                "heartbeat",
                "problem",
                f"the idle stream was silent for {worst:.1f} s; the server's heartbeat "
                f"interval is {heartbeat} s",
                "a proxy holds small writes back (see buffering), or heartbeats are off: "
                "set Config.heartbeat_interval below every idle timeout on the way",
            )
        )
