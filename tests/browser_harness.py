"""A real browser and servers in threads, for tests/test_browser*.py.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, installed by
``.ci/system-deps``), driven by the ``playwright`` package's sync API and
launched headless with a fresh profile; never a downloaded browser. Browser
tests are plain (sync) pytest functions; each server runs its own trio run in
a thread (:class:`ServerThread`), so a test can stop one and start another on
the same port, and call into the server's trio run with :meth:`ServerThread.call`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import BrowserContext, sync_playwright
from servers import hypercorn_config, start_hypercorn, start_raw

import trio_sse

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium(extra_args: list[str] | None = None) -> Iterator[BrowserContext]:
    """A headless Debian Chromium with a fresh profile directory."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/system-deps` (Debian package chromium)")
    with (
        tempfile.TemporaryDirectory(prefix="trio-sse-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS + (extra_args or []),
            timeout=20_000,
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


ServeFn = Callable[..., Awaitable[None]]


class ServerThread:
    """Runs ``serve_fn(task_status=...)`` in a trio run of its own thread.

    ``serve_fn`` reports the port through ``task_status.started(port)``.
    """

    def __init__(self, serve_fn: ServeFn) -> None:
        self._serve_fn = serve_fn
        self._ready: queue.Queue[int | BaseException] = queue.Queue()
        self._scope = trio.CancelScope()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.port = 0

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:  # reported to the test thread
            self._ready.put(exc)

    async def _run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with self._scope:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(self._serve_fn)
                self._ready.put(port)

    def start(self) -> ServerThread:
        self._thread.start()
        result = self._ready.get(timeout=15)
        if isinstance(result, BaseException):
            raise result
        self.port = result
        return self

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous ``fn(*args)`` inside the server's trio run."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        """Cancel the server (a graceful shutdown) and wait for its thread."""
        if self._thread.is_alive() and self._token is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(15)
        assert not self._thread.is_alive(), "the server thread did not stop"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raw_server(
    app: trio_sse.App,
    port: int = 0,
    config: trio_sse.Config | None = None,
    prepare: Callable[[], None] | None = None,
) -> ServerThread:
    """The App on trio-sse's own server (HTTP/1.1); ``prepare()`` runs in its trio run first."""

    async def serve(*, task_status: trio.TaskStatus[int]) -> None:
        if prepare is not None:
            prepare()
        async with trio.open_nursery() as nursery:
            server = await start_raw(nursery, app, config, port)
            task_status.started(server.port)

    return ServerThread(serve)


def hypercorn_server(app: Any, tls: LoopbackCertificate | None = None) -> ServerThread:
    """The App under hypercorn: HTTP/2 over TLS with ``tls``, else plain HTTP/1.1."""
    config = hypercorn_config()
    if tls is not None:
        config.certfile = str(tls.pem)
        config.keyfile = str(tls.pem)

    async def serve(*, task_status: trio.TaskStatus[int]) -> None:
        async with trio.open_nursery() as nursery:
            server = await start_hypercorn(nursery, app, config)
            task_status.started(server.port)

    return ServerThread(serve)


class Cutter:
    """A loopback TCP forwarder to ``upstream`` whose connections :meth:`cut` aborts.

    Serve it with ``ServerThread(cutter.serve)``; call ``thread.call(cutter.cut)``
    to drop every connection at once, as a crashed proxy or a lost network
    would: the browser sees its stream end mid-response (a network error).
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._scopes: set[trio.CancelScope] = set()
        self.cuts = 0

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.serve_listeners(self._forward, listeners, handler_nursery=nursery)

    async def _forward(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, server)
                    nursery.start_soon(_pump, server, client)
            finally:
                self._scopes.discard(scope)

    def cut(self) -> int:
        """Abort every open connection; return how many."""
        scopes = list(self._scopes)
        for scope in scopes:
            scope.cancel()
        self.cuts += len(scopes)
        return len(scopes)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        await sink.send_eof()


class LoopbackCertificate:
    """A ``trustme`` certificate for 127.0.0.1, and the Chromium flag that trusts it alone."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.pem = directory / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.pem))
        leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        #: Trusts exactly this key (Chromium honours it with a --user-data-dir).
        self.chromium_flag = f"--ignore-certificate-errors-spki-list={digest}"


def post_json(url: str, body: object, token: str | None = None) -> Any:
    """POST a JSON body from the test (not the browser) and return the JSON answer."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def contiguous(received: list[str], topic: str) -> list[int]:
    """The sequence numbers the page received for ``topic``; asserts no gap or duplicate."""
    numbers = [int(item.partition(":")[2]) for item in received if item.startswith(topic + ":")]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True, (
        topic,
        numbers,
    )
    return numbers
