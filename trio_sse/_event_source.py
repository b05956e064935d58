"""The EventSource client's machinery: one stream, read, decoded and reconnected.

Theory of operation: one task, no background tasks. :class:`EventSource` is
an async iterator that *pulls*: each ``__anext__`` returns a decoded event
already received, or reads the next chunk of the response (under the
read-stall deadline) and feeds it to a :class:`~trio_sse.Decoder`, or, when
the connection is gone, waits the reconnection delay and connects again. With
no nursery inside, nothing runs while the user is not iterating, cancellation
is the caller's (any enclosing cancel scope), and no ``ExceptionGroup`` can
leave :func:`open_event_source`.

Rule 1, browser semantics (WHATWG HTML "Server-sent events"): a stream that
ends or breaks is reconnected after the reconnection time (the server's
``retry`` field, or ``retry=`` here), sending ``Last-Event-ID``; "a client can
be told to stop reconnecting using the HTTP 204 No Content response code";
any other status than 200, or a ``Content-Type`` other than
``text/event-stream``, "fail[s] the connection" (here:
:class:`~trio_sse.EventSourceResponseError`, with the status and an excerpt
of the body). Redirects are followed.

Rule 2, beyond the browser: consecutive failures back off exponentially
(jittered, capped by ``max_backoff``) and the count resets once a connection
delivered an event or stayed up for ``stable_after`` seconds; ``stall_timeout`` reconnects a
connection that delivered no byte at all (heartbeats included) for that long.

Rule 3, cancellation: a read cancelled by the caller (``move_on_after``
around ``anext``) leaves the response closed (httpcore closes a connection
whose read was cancelled), so the next step reconnects at once with
``Last-Event-ID``, without the reconnection delay: nothing is lost.

Rule 4, RFC 9110 section 9.2.2: a request that is not idempotent (``POST``,
``PATCH``) is not sent again once it may have reached the server, unless the
caller says ``reconnect=True``; a connection that could not even be opened
is always retried.

One connection's HTTP (the request headers, the checks of the response, an
error's excerpt of the body, and closing a response mid-body) is in
``_event_source_http.py``.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, final

import httpx
import trio

from ._codec import Decoder, MessageEvent
from ._errors import EventSourceConnectionError, EventSourceResponseError, EventTooLargeError
from ._event_source_http import close_response, excerpt, is_event_stream, request_headers

__all__ = ["IDEMPOTENT_METHODS", "EventSource", "OnOpen", "OnReconnect", "ReadyState"]

#: Methods RFC 9110 section 9.2.2 calls idempotent: safe to send again.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

#: The least first step of the backoff, in seconds: a server's ``retry: 0``
#: would otherwise make every step 0.
_MIN_BACKOFF: Final = 0.001

_INF: Final = float("inf")
_NO_SCOPE: Final = contextlib.nullcontext()


class ReadyState(enum.IntEnum):
    """:attr:`EventSource.ready_state`, numbered like the browser's ``readyState``."""

    CONNECTING = 0
    OPEN = 1
    CLOSED = 2


OnOpen = Callable[[httpx.Response], None]
OnReconnect = Callable[[Exception | None, float], None]


@final
class EventSource:
    """An open event stream: ``async for event in source`` yields :class:`~trio_sse.MessageEvent`.

    Made by :func:`open_event_source`, which documents the settings.

    Attributes:
        url: the URL the stream is (re)opened from.
        ready_state: :class:`ReadyState` of the stream.
        retry: the current reconnection time, in seconds (the server's last
            ``retry`` field, or the ``retry`` setting).
        response: the current response while connected, else ``None``.
        connections: how many times a stream was opened (1 + reconnections).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str] | None,
        json: Any,
        content: bytes | None,
        last_event_id: str,
        reconnect: bool | None,
        retry: float,
        max_backoff: float,
        stable_after: float,
        stall_timeout: float | None,
        max_reconnects: int | None,
        max_event_size: int,
        sentinel: str | None,
        on_open: OnOpen | None,
        on_reconnect: OnReconnect | None,
    ) -> None:
        for name, value in (("retry", retry), ("max_backoff", max_backoff)):
            if value < 0:
                raise ValueError(f"{name} must be at least 0, got {value}")
        if stall_timeout is not None and stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be positive or None, got {stall_timeout}")
        for field, text in (("last_event_id", last_event_id), *(headers or {}).items()):
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"{field} cannot contain CR, LF or NUL: {text!r}")
        for name, hook in (("on_open", on_open), ("on_reconnect", on_reconnect)):
            if inspect.iscoroutinefunction(hook):
                raise TypeError(
                    f"{name} must be a plain function, not async: it is called from the "
                    "iterating task; send to a memory channel to hand work to another task"
                )
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError(f"max_reconnects must be at least 0 or None, got {max_reconnects}")
        self.url = url
        self.method = method.upper()
        self.ready_state = ReadyState.CONNECTING
        self.retry = retry
        self.response: httpx.Response | None = None
        self.connections = 0
        self._client = client
        self._headers = {
            name.lower().encode("latin-1"): value.encode()
            for name, value in (headers or {}).items()
        }
        self._json = json
        self._content = content
        self._reconnect = self.method in IDEMPOTENT_METHODS if reconnect is None else reconnect
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._stall = stall_timeout if stall_timeout is not None else float("inf")
        self._max_reconnects = max_reconnects
        self._max_event_size = max_event_size
        self._sentinel = sentinel
        self._on_open = on_open
        self._on_reconnect = on_reconnect
        self._decoder = Decoder(last_event_id, max_event_size=max_event_size)
        self._pending: deque[MessageEvent] = deque()
        self._yielded_id = last_event_id
        self._chunks: AsyncIterator[bytes] | None = None
        self._opened_at = 0.0
        self._delivered = False
        self._failures = 0
        self._interrupted = False

    @property
    def last_event_id(self) -> str:
        """The id a resume should start after: that of the last event iterated.

        Pass it as ``last_event_id=`` to a later :func:`open_event_source` to
        resume. (Reconnections use the id of the last event *received*, which
        differs only while received events wait to be iterated.)
        """
        return self._yielded_id if self._pending else self._decoder.last_event_id

    def close(self) -> None:
        """Stop: the iteration ends at its next step (usable inside ``async for``)."""
        self.ready_state = ReadyState.CLOSED
        self._pending.clear()

    async def aclose(self) -> None:
        """Stop and close the current response."""
        self.close()
        await self._drop()

    def __aiter__(self) -> EventSource:
        return self

    async def __anext__(self) -> MessageEvent:
        while True:
            if self._pending:
                event = self._pending.popleft()
                self._yielded_id = event.last_event_id
                return event
            if self.ready_state is ReadyState.CLOSED:
                await self._drop()
                raise StopAsyncIteration
            if self._interrupted:
                # A read was cancelled: httpx closed the connection under it.
                # Reconnect at once (this is no failure of the server's), if
                # the request may be sent again.
                self._interrupted = False
                await self._drop()
                if not self._reconnect:
                    self.close()
                    raise EventSourceConnectionError(
                        f"a read of {self.method} {self.url} was cancelled, which closed the "
                        "connection, and the request is not idempotent: pass reconnect=True "
                        "to send it again"
                    )
            if self._chunks is None:
                await self._connect()
                continue
            chunk = b""
            error: Exception | None = None
            # (No cancel scope without a stall deadline: one per chunk shows.)
            with trio.move_on_after(self._stall) if self._stall < _INF else _NO_SCOPE as stall:
                try:
                    chunk = await anext(self._chunks, b"")
                except httpx.TransportError as exc:
                    error = exc
                except trio.Cancelled:
                    self._interrupted = True
                    raise
            if stall is not None and stall.cancelled_caught:
                self._interrupted = False
                error = trio.TooSlowError(f"no data from {self.url} for {self._stall} s")
            if error is not None or not chunk:
                await self._lost(error, sent=True)
                continue
            self._receive(chunk)

    def _receive(self, chunk: bytes) -> None:
        decoder = self._decoder
        try:
            events = decoder.feed(chunk)
        except EventTooLargeError:
            self.close()
            raise
        if decoder.retry is not None:
            self.retry = decoder.retry / 1000
        sentinel = self._sentinel
        if sentinel is not None:
            for index, event in enumerate(events):
                if event.data == sentinel:
                    self.close()
                    self._pending.extend(events[:index])
                    return
        if events:
            self._delivered = True
        self._pending.extend(events)

    async def _connect(self) -> None:
        # One attempt; on return, the stream is open, closed, or (after a
        # failure) waited out and ready for the next attempt.
        self.ready_state = ReadyState.CONNECTING
        try:
            request = self._client.build_request(
                self.method,
                self.url,
                headers=request_headers(self._headers, self._decoder.last_event_id),
                json=self._json,
                content=self._content,
            )
        except httpx.InvalidURL as exc:
            self.close()
            raise EventSourceConnectionError(f"invalid URL {self.url!r}: {exc}") from exc
        response: httpx.Response | None = None
        error: Exception | None = None
        with trio.move_on_after(self._stall) as stall:
            try:
                response = await self._client.send(request, stream=True, follow_redirects=True)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                # Our request is at fault (a scheme httpx lacks, a header
                # value with a line break, ...): sending it again cannot help.
                self.close()
                raise EventSourceConnectionError(f"{self.url}: {exc}") from exc
            except httpx.TransportError as exc:
                error = exc
            except httpx.TooManyRedirects as exc:
                self.close()
                raise EventSourceConnectionError(f"{self.url}: {exc}") from exc
        if stall.cancelled_caught:
            error = trio.TooSlowError(f"no response from {self.url} within {self._stall} s")
        if response is None:
            assert error is not None
            # Errors before the request could be sent: always safe to retry.
            unsent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
            await self._lost(error, sent=not isinstance(error, unsent))
            return
        if response.status_code == 204:
            await response.aclose()
            self.close()
            return
        if not is_event_stream(response):
            body = await excerpt(response, self._stall)
            self.close()
            raise EventSourceResponseError(
                response.status_code,
                response.headers.get("content-type", ""),
                body,
                str(response.url),
            )
        self.response = response
        self._chunks = response.aiter_bytes()
        self._decoder = Decoder(self._decoder.last_event_id, max_event_size=self._max_event_size)
        self._opened_at = trio.current_time()
        self._delivered = False
        self.connections += 1
        self.ready_state = ReadyState.OPEN
        if self._on_open is not None:
            self._on_open(response)

    async def _lost(self, error: Exception | None, *, sent: bool) -> None:
        # The connection ended (error None: cleanly) or could not be opened.
        was_open = self._chunks is not None
        await self._drop()
        if self.ready_state is ReadyState.CLOSED:
            return
        if sent and not self._reconnect:
            self.close()
            if error is None:
                return  # e.g. the end of a POST response: the stream is over
            raise EventSourceConnectionError(
                f"{self.method} {self.url} failed after it was sent ({error!r}); "
                "not retried because the method is not idempotent: pass reconnect=True to retry"
            ) from error
        if was_open and (
            self._delivered or trio.current_time() - self._opened_at >= self._stable_after
        ):
            self._failures = 0
        self._failures += 1
        if self._max_reconnects is not None and self._failures > self._max_reconnects:
            self.close()
            raise EventSourceConnectionError(
                f"{self.url}: gave up after {self._max_reconnects} consecutive reconnections "
                f"({error!r}); raise max_reconnects to keep trying"
            ) from error
        delay = self._delay()
        self.ready_state = ReadyState.CONNECTING
        if self._on_reconnect is not None:
            self._on_reconnect(error, delay)
            if self.ready_state is ReadyState.CLOSED:  # the hook called close()
                return
        await trio.sleep(delay)

    def _delay(self) -> float:
        # The first reconnection waits the reconnection time, as a browser
        # does; each further consecutive one doubles it, up to the cap, with
        # "equal jitter" (between half and all of it) so that clients that
        # lost the same server do not come back in step.
        if self._failures <= 1:
            return self.retry
        cap = max(self._max_backoff, self.retry)
        base = min(cap, max(self.retry, _MIN_BACKOFF) * 2.0 ** min(self._failures - 1, 64))
        return max(self.retry, random.uniform(base / 2, base))

    async def _drop(self) -> None:
        chunks, response = self._chunks, self.response
        self._chunks = self.response = None
        if response is not None:
            await close_response(response, chunks)
