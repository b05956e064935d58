"""Exception hierarchy of trio-sse.

Theory of operation: every error the library raises on purpose derives from
:class:`SSEError`. Errors about the *protocol* split, as in h11, into
:class:`LocalProtocolError` (this side misused the API, e.g. tried to send an
invalid event) and :class:`RemoteProtocolError` (the peer sent bytes we cannot
accept). Each carries an ``error_status_hint``: the HTTP status a server should
answer with when the error reaches the edge.
"""

from __future__ import annotations

__all__ = [
    "BackplaneUnavailableError",
    "EventTooLargeError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SSEError",
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
