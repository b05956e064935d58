"""The error hierarchy is used: what each public error is, and where groups and I/O errors stop.

Each test pins one promise of ``trio_sse/_errors.py``: :class:`Event` raises
local protocol errors that stay ``ValueError`` / ``TypeError``;
:class:`HTTPException` is an :class:`SSEError`; the raw server maps I/O errors
once (``map_io_errors``); and no ``ExceptionGroup`` leaves ``serve``,
``App.run_lifespan`` or ``open_test_client`` when only one error happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from trio_sse import (
    App,
    Config,
    Event,
    EventFieldTypeError,
    HTTPException,
    InvalidEventError,
    LocalProtocolError,
    SSEError,
    serve,
    serve_listeners,
)
from trio_sse._errors import single_error, unwrap_groups
from trio_sse._sockets import map_io_errors
from trio_sse._transport import PeerGone
from trio_sse.testing import open_test_client


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"id": "1\r"}, {"id": "x\0"}, {"retry": -1}],
)
def test_invalid_event_is_a_local_protocol_error_and_a_value_error(
    kwargs: dict[str, object],
) -> None:
    with pytest.raises(InvalidEventError) as info:
        Event("x", **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, LocalProtocolError)
    assert isinstance(info.value, SSEError)
    assert info.value.error_status_hint == 500


@pytest.mark.parametrize(
    "kwargs", [{"data": 3}, {"event": b"x"}, {"id": 1}, {"retry": 1.5}, {"comment": 0}]
)
def test_wrong_field_type_is_a_local_protocol_error_and_a_type_error(
    kwargs: dict[str, object],
) -> None:
    with pytest.raises(EventFieldTypeError) as info:
        Event(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, LocalProtocolError)


def test_http_exception_is_an_sse_error() -> None:
    exc = HTTPException(404)
    assert isinstance(exc, SSEError)
    assert (exc.status, exc.detail) == (404, "Not Found")


def test_unwrap_groups_raises_the_one_leaf_and_keeps_its_cause() -> None:
    cause = KeyError("k")
    leaf = Boom("x")
    leaf.__cause__ = cause
    with pytest.raises(Boom) as info, unwrap_groups():
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [leaf])])
    assert info.value is leaf
    assert info.value.__cause__ is cause
    assert info.value.__suppress_context__


def test_unwrap_groups_keeps_a_group_of_several() -> None:
    with pytest.raises(ExceptionGroup), unwrap_groups():
        raise ExceptionGroup("two", [Boom("a"), ExceptionGroup("g", [Boom("b")])])
    assert single_error(ExceptionGroup("g", [ExceptionGroup("h", [Boom()])])) is not None
    assert single_error(ExceptionGroup("g", [Boom(), Boom()])) is None


async def test_map_io_errors_turns_a_broken_stream_into_peer_gone() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await receive.aclose()
    with pytest.raises(PeerGone) as info, map_io_errors:
        await send.send_all(b"x")
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)
    await send.aclose()
    with pytest.raises(PeerGone), map_io_errors:
        await send.send_all(b"x")  # ClosedResourceError: closed on this side


def test_map_io_errors_lets_blocking_io_error_and_others_through() -> None:
    with pytest.raises(BlockingIOError), map_io_errors:
        raise BlockingIOError
    with pytest.raises(KeyError), map_io_errors:
        raise KeyError("not I/O")
    with pytest.raises(PeerGone), map_io_errors:
        raise ConnectionResetError


def _failing_lifespan_app() -> App:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise Boom("lifespan failed")
        yield  # pragma: no cover

    return App(lifespan=lifespan)


async def test_serve_raises_a_lifespan_error_as_itself() -> None:
    with trio.fail_after(10), pytest.raises(Boom, match="lifespan failed"):
        await serve(_failing_lifespan_app(), "127.0.0.1", 0, config=Config())


async def test_serve_listeners_raises_a_lifespan_error_as_itself_and_closes_listeners() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_listeners, _failing_lifespan_app(), listeners))

    # Our own nursery wraps it once; serve_listeners itself adds no level.
    with trio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        await run()
    assert len(info.value.exceptions) == 1
    assert isinstance(info.value.exceptions[0], Boom)
    assert all(listener.socket.fileno() == -1 for listener in listeners)


async def test_run_lifespan_raises_a_background_error_as_itself() -> None:
    app = App()

    @app.background
    async def fails() -> None:
        raise Boom("background failed")

    async def run() -> None:
        async with app.run_lifespan():
            await trio.sleep_forever()

    with trio.fail_after(10), pytest.raises(Boom):
        await run()


async def test_open_test_client_raises_the_blocks_error_as_itself() -> None:
    async def run() -> None:
        async with open_test_client(App()):
            raise Boom("in the block")

    with trio.fail_after(10), pytest.raises(Boom):
        await run()
