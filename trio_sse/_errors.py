"""Exception hierarchy of trio-sse.

Theory of operation: every error the library raises on purpose derives from
:class:`SSEError`. Errors about the *protocol* split, as in h11, into
:class:`LocalProtocolError` (this side misused the API, e.g. tried to send an
invalid event) and :class:`RemoteProtocolError` (the peer sent bytes we cannot
accept). Each carries an ``error_status_hint``: the HTTP status a server should
answer with when the error reaches the edge.

:class:`InvalidEventError` and :class:`EventFieldTypeError` (raised by
:class:`~trio_sse.Event`) are local protocol errors that are *also*
:class:`ValueError` / :class:`TypeError`, so code written against the builtin
errors keeps working.

Exception groups stop here too: a nursery wraps each error it propagates, once
per level, so a public function or context manager that runs tasks leaves
through :func:`unwrap_groups`, which raises the one error of a group as itself
(trio-websocket's ``open_websocket`` does the same).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BackplaneUnavailableError",
    "EventFieldTypeError",
    "EventSourceConnectionError",
    "EventSourceError",
    "EventSourceResponseError",
    "EventTooLargeError",
    "InvalidEventError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SSEError",
    "single_error",
    "unwrap_groups",
]


class SSEError(Exception):
    """Root of every exception trio-sse raises on purpose."""


class ProtocolError(SSEError):
    """A violation of the HTTP or event-stream protocol.

    Not raised directly: see :class:`LocalProtocolError` and
    :class:`RemoteProtocolError`.

    Attributes:
        error_status_hint: the HTTP status code that best answers this error
            when it reaches a server's edge (400 unless a subclass says
            otherwise).
    """

    def __init__(self, msg: str, error_status_hint: int = 400) -> None:
        if type(self) is ProtocolError:
            raise TypeError("tried to directly instantiate ProtocolError")
        super().__init__(msg)
        self.error_status_hint = error_status_hint


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class InvalidEventError(LocalProtocolError, ValueError):
    """An :class:`~trio_sse.Event` field has a value the event stream cannot carry.

    For example a line break in ``event`` or ``id`` (it would inject fields),
    NUL in ``id``, or a negative ``retry``. The message names the field. Also a
    :class:`ValueError`, as it was before this class existed.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg, error_status_hint=500)


class EventFieldTypeError(LocalProtocolError, TypeError):
    """An :class:`~trio_sse.Event` field has the wrong type (e.g. ``data=3``).

    Also a :class:`TypeError`, as it was before this class existed.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg, error_status_hint=500)


class EventTooLargeError(RemoteProtocolError):
    """An incoming line or event grew past the configured maximum size.

    Raised by :class:`trio_sse.Decoder` instead of buffering without bound.
    Raise the decoder's ``max_event_size`` if your events are legitimately
    this large; otherwise close the stream, the decoder cannot continue.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"event-stream event or line of at least {size} bytes exceeds "
            f"max_event_size={limit}; raise max_event_size if this is expected",
            error_status_hint=413,
        )
        self.size = size
        self.limit = limit


class BackplaneUnavailableError(SSEError):
    """The broker's backplane cannot take an event now (e.g. Redis is down).

    Nothing was published: the event is not in any stream and no subscriber
    will see it. Retry later; :func:`~trio_sse.publish_endpoint` answers
    ``503`` with ``Retry-After``. A publish that was already on its way when
    the connection broke also raises this error, and may then have reached
    the stream (Redis does not say): retrying it can duplicate the event.

    Attributes:
        error_status_hint: 503, the HTTP status that answers this error.
    """

    error_status_hint = 503


class EventSourceError(SSEError):
    """The event-source client cannot go on with a stream.

    Raised out of :func:`trio_sse.open_event_source` (or its iteration) when
    reconnecting would not help, or is not allowed. See the subclasses.
    """


class EventSourceResponseError(EventSourceError):
    """The server answered with something other than an event stream.

    As in a browser, this is fatal: a status other than ``200`` (``204``
    instead ends the stream quietly) or a ``Content-Type`` other than
    ``text/event-stream``. Fix the URL, the credentials or the server.

    Attributes:
        status: the HTTP status code of the (final, after redirects) response.
        content_type: its ``Content-Type`` header (``""`` if absent).
        body: up to the first 1024 bytes of its body, for the error message.
        url: the URL that answered (after redirects).
    """

    def __init__(self, status: int, content_type: str, body: bytes, url: str) -> None:
        excerpt = body.decode("utf-8", "replace").strip()
        what = (
            f"status {status}"
            if status != 200
            else f"Content-Type {content_type or '(none)'!r}, not text/event-stream"
        )
        super().__init__(
            f"{url} did not answer with an event stream ({what})"
            + (f": {excerpt[:200]!r}" if excerpt else "")
        )
        self.status = status
        self.content_type = content_type
        self.body = body
        self.url = url


class EventSourceConnectionError(EventSourceError):
    """The connection failed or ended and the client may not, or no longer, reconnect.

    Raised when ``max_reconnects`` consecutive attempts failed, or when a
    request that is not idempotent (``POST``) broke after it was sent and
    ``reconnect=True`` was not given. The underlying error is ``__cause__``.
    """


# Shown as trio_sse.InvalidEventError in tracebacks, where users import them.
InvalidEventError.__module__ = "trio_sse"
EventFieldTypeError.__module__ = "trio_sse"


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf error of a (nested) exception group, or ``None`` if several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending and len(leaves) < 2:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 and not pending else None


@contextmanager
def unwrap_groups() -> Iterator[None]:
    """Raise the one error of an exception group leaving the block as itself.

    A group of several errors (say, the block and a task both failed) is
    re-raised whole: dropping one would hide it. The leaf keeps its own
    ``__cause__``; the group is not shown as its context.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single_error(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__
