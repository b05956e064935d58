"""TLS certificates, a TLS raw server, and a raw HTTP/2 client, for tests/test_h2*.py.

:class:`Certs` issues a ``trustme`` CA, a server certificate for 127.0.0.1
and a client certificate, as PEM files. :func:`start_tls_server` runs the raw
server with TLS on a free port and returns the running
:class:`trio_sse._server.Server` (to look at its connections). :class:`H2Peer`
is an HTTP/2 client built on the ``h2`` library over a real TLS connection,
which can do what polite clients do not: never grant window, never read,
flood frames, reset streams.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import trio
import trustme
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame

import trio_sse
from trio_sse import App, Broker, Event, EventStream, Request, TopicOptions, topic_stream
from trio_sse._server import Server


@dataclass
class Certs:
    """PEM files: the CA, the server's key and chain, a client's key and chain."""

    ca: Path
    server: Path
    client: Path

    @classmethod
    def make(cls, directory: Path) -> Certs:
        ca = trustme.CA()
        paths = cls(directory / "ca.pem", directory / "server.pem", directory / "client.pem")
        ca.cert_pem.write_to_path(str(paths.ca))
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(paths.server)
        )
        ca.issue_cert("client@example.test").private_key_and_cert_chain_pem.write_to_path(
            str(paths.client)
        )
        return paths

    def client_context(self, alpn: Iterable[str] = ("h2",), cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.set_alpn_protocols(list(alpn))
        if cert:
            context.load_cert_chain(str(self.client))
        return context


@dataclass
class TLSServer:
    server: Server
    port: int
    stop: trio.CancelScope
    done: trio.Event

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def shutdown(self) -> None:
        self.stop.cancel()
        await self.done.wait()


async def start_tls_server(
    nursery: trio.Nursery, app: trio_sse.App, certs: Certs, **config: Any
) -> TLSServer:
    """The raw server with TLS (``Config(certfile=..., **config)``) on 127.0.0.1."""
    cfg = trio_sse.Config(certfile=str(certs.server), **config)
    server = Server(app, cfg)
    stop = trio.CancelScope()
    done = trio.Event()

    async def run(*, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        try:
            with stop:
                async with trio.open_nursery() as inner:
                    await inner.start(server.run, listeners)
                    task_status.started(listeners[0].socket.getsockname()[1])
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            done.set()

    port = await nursery.start(run)
    return TLSServer(server, port, stop, done)


class H2Peer:
    """A raw HTTP/2 client connection over TLS (``h2``), for tests that misbehave on purpose."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], window: int | None) -> None:
        self.stream = stream
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window},
            )
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        #: The streams that had ended when the GOAWAY arrived.
        self.ended_before_goaway: set[int] = set()
        self.closed = False
        self._buffer = bytearray()
        #: Streams whose received data is acknowledged at once (window given back).
        self.auto_grant: set[int] = set()

    @classmethod
    async def connect(cls, port: int, certs: Certs, window: int | None = None) -> H2Peer:
        """Connect and say hello (``window``: our SETTINGS_INITIAL_WINDOW_SIZE)."""
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, certs.client_context(), server_hostname="127.0.0.1")
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2"
        peer = cls(tls, window)
        await peer.flush()
        return peer

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def request(
        self,
        path: str,
        *,
        end: bool = True,
        method: str = "GET",
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            *extra,
        ]
        self.conn.send_headers(sid, headers, end_stream=end)
        return sid

    async def receive(self) -> list[h2.events.Event]:
        """One read from the socket; the events it caused (``closed`` at EOF)."""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            return []
        self._buffer += data
        events: list[h2.events.Event] = []
        # Frame by frame: after GOAWAY h2's client refuses every frame, but a
        # server still ends the streams up to the GOAWAY's last stream id.
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            frame = bytes(self._buffer[: 9 + length])
            del self._buffer[: 9 + length]
            if self.goaway is None:
                events.extend(self.conn.receive_data(frame))
                self.goaway = next(
                    (e for e in events if isinstance(e, h2.events.ConnectionTerminated)), None
                )
                if self.goaway is not None:
                    self.ended_before_goaway = self.ended | {
                        e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)
                    }
            else:
                self._after_goaway(frame)
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data or b"")
                if event.stream_id in self.auto_grant and event.flow_controlled_length:
                    self.grant(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
                self.resets[event.stream_id] = int(event.error_code or 0)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self.events.extend(events)
        if self.goaway is None:
            await self.flush()
        return events

    def _after_goaway(self, frame: bytes) -> None:
        parsed, _ = Frame.parse_frame_header(memoryview(frame[:9]))
        parsed.parse_body(memoryview(frame[9:]))
        sid = parsed.stream_id
        if isinstance(parsed, DataFrame):
            self.data.setdefault(sid, bytearray()).extend(parsed.data)
        elif isinstance(parsed, RstStreamFrame):
            self.resets[sid] = parsed.error_code
        if isinstance(parsed, DataFrame | HeadersFrame) and "END_STREAM" in parsed.flags:
            self.ended.add(sid)

    async def receive_until(self, condition: Any) -> None:
        """Read until ``condition()`` is true (or the connection closes)."""
        while not condition() and not self.closed:
            await self.receive()

    def grant(self, sid: int, amount: int) -> None:
        """Acknowledge ``amount`` bytes on ``sid``: window back (and the connection's)."""
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # ended: no stream window
            self.conn.increment_flow_control_window(amount, stream_id=sid)
        self.conn.increment_flow_control_window(amount)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def sample_app() -> tuple[App, Broker, dict[str, int]]:
    """An App with a page, an echo, a topic stream and a stream that counts its runs."""
    app = App()
    broker = Broker(TopicOptions(buffer_size=8))
    broker.topic("t")
    counts = {"started": 0, "cancelled": 0}
    app.add_route("/events/{topic}", topic_stream(broker))

    @app.get("/")
    async def index(request: object) -> str:
        return "hello\n"

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.stream("/slow")
    async def slow(request: object, stream: EventStream) -> None:
        counts["started"] += 1
        try:
            await stream.send(Event("first"))
            await trio.sleep_forever()
        finally:
            counts["cancelled"] += 1

    return app, broker, counts


def https_client(certs: Certs, http2: bool = True) -> httpx.AsyncClient:
    """An httpx client trusting the test CA (HTTP/2 unless told otherwise).

    httpx's 5 s timeouts are raised: the tests bound themselves with fail_after.
    """
    return httpx.AsyncClient(
        http2=http2, verify=ssl.create_default_context(cafile=certs.ca), timeout=30.0
    )
