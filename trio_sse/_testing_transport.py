"""An httpx transport onto the test kit's in-memory connections (``_memory_wire.py``).

Kept apart from ``testing.py`` so that the test kit's own helpers work
without httpx. Each request gets a new in-memory connection (no keep-alive:
the connection is closed with the response). The response body is a
class-based async iterator, not an async generator, so that closing a
response part-way leaves nothing for the garbage collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import h11
import httpx

from ._memory_wire import _Connection
from ._sockets import map_io_errors
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._memory_wire import _MemoryListener

__all__ = ["MemoryTransport"]


@final
class _Body(httpx.AsyncByteStream):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        data = await self._connection.receive()
        if not data:
            if not self._connection.complete:
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        await self._connection.aclose()


@final
class MemoryTransport(httpx.AsyncBaseTransport):
    """Sends each request on a new in-memory connection to the test server."""

    def __init__(self, listener: _MemoryListener) -> None:
        self._listener = listener

    @classmethod
    def client(cls, listener: _MemoryListener) -> httpx.AsyncClient:
        """An :class:`httpx.AsyncClient` for ``http://testserver`` on this transport."""
        # No timeouts: the transport never applies them anyway, and the test's
        # cancel scopes (fail_after) are the deadlines.
        return httpx.AsyncClient(
            transport=cls(listener), base_url="http://testserver", timeout=None
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; return the response with its body still to read."""
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        connection = _Connection(await self._listener.connect())
        try:
            with map_io_errors:
                response = await connection.request(
                    request.method, request.url.raw_path.decode("ascii"), request.headers.raw, body
                )
        except h11.RemoteProtocolError as exc:
            await connection.aclose()
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except PeerGone as exc:
            await connection.aclose()
            raise httpx.WriteError(str(exc), request=request) from exc
        except BaseException:
            await connection.aclose()
            raise
        return httpx.Response(
            response.status_code,
            headers=[(k, v) for k, v in response.headers],
            stream=_Body(connection),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )
