"""App, Request, Headers, routes and responses without a server.

What a server does with them is in ``test_server*.py`` (raw server) and
``test_app_both_servers.py`` (raw and hypercorn); here are the pieces alone.
"""

from __future__ import annotations

import pytest
import trio

from trio_sse import (
    App,
    Headers,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    StreamResponse,
)
from trio_sse._app import Route
from trio_sse._http import to_response


def request(target: bytes = b"/", body: bytes = b"", **headers: str) -> Request:
    async def read() -> bytes:
        await trio.lowlevel.checkpoint()
        return body

    raw = [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return Request("POST", target, Headers(raw), app=App(), body_reader=read)


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    h = Headers([(b"Accept", b"a"), (b"X-Multi", b"1"), (b"x-multi", b"2"), (b"Latin", b"\xe9")])
    assert h["accept"] == h["ACCEPT"] == "a"
    assert h["x-multi"] == "2"  # the last value
    assert h.getall("X-MULTI") == ["1", "2"]
    assert h["latin"] == "\u00e9"
    assert list(h) == ["accept", "x-multi", "latin"]
    assert len(h) == 3
    assert "Accept" not in h.raw()[0]
    assert h.raw()[1] == ("x-multi", "1")
    assert h.get("missing") is None
    with pytest.raises(KeyError):
        h["missing"]
    assert "x-multi" in repr(h)


def test_request_path_query_and_last_event_id() -> None:
    r = request(b"/a%20b/c?x=1&x=2&empty=&lastEventId=q")
    assert r.path == "/a b/c"
    assert r.raw_path == b"/a%20b/c"
    assert r.query_string == b"x=1&x=2&empty=&lastEventId=q"
    assert r.query == {"x": ["1", "2"], "empty": [""], "lastEventId": ["q"]}
    assert r.query_param("x") == "2"
    assert r.query_param("nope", "d") == "d"
    assert r.last_event_id == "q"  # from the query when there is no header
    assert request(b"/?lastEventId=q", last_event_id="h").last_event_id == "h"
    assert request(b"/").last_event_id is None
    assert repr(r) == "<Request POST '/a%20b/c'>"


async def test_request_body_helpers() -> None:
    r = request(body='{"a": [1, "é"]}'.encode())
    assert await r.json() == {"a": [1, "é"]}
    assert await r.body() is await r.body()  # read once
    assert await request(body=b"a=1&b=2&a=3&c=").form() == {"a": "3", "b": "2", "c": ""}
    assert await request(body="h\u00e9".encode()).text() == "h\u00e9"
    with pytest.raises(HTTPException) as bad_utf8:
        await request(body=b"\xff").text()
    assert bad_utf8.value.status == 400
    with pytest.raises(HTTPException) as bad_json:
        await request(body=b"{nope").json()
    assert bad_json.value.status == 400
    assert "not valid JSON" in bad_json.value.detail


def test_routes_path_parameters_and_resolution() -> None:
    app = App()

    async def handler(request: Request) -> str:
        return ""

    app.add_route("/rooms/{room}", handler)
    app.add_route("/files/{rest:path}", handler, ("GET", "PUT"))
    app.add_route("/only-post", handler, ("post",))
    route, params, allowed = app._resolve("GET", "/rooms/kitchen")
    assert route is not None
    assert (params, allowed) == ({"room": "kitchen"}, [])
    assert app._resolve("HEAD", "/rooms/kitchen")[0] is route  # HEAD comes with GET
    assert app._resolve("GET", "/rooms/a/b") == (None, {}, [])  # {name} is one segment
    route, params, _ = app._resolve("PUT", "/files/a/b/c.txt")
    assert route is not None
    assert params == {"rest": "a/b/c.txt"}
    assert app._resolve("DELETE", "/files/x") == (None, {}, ["GET", "HEAD", "PUT"])
    assert app._resolve("GET", "/only-post") == (None, {}, ["POST"])
    assert app._resolve("GET", "/rooms/x.y")[1] == {"room": "x.y"}  # dots are not regex
    assert app._resolve("GET", "/roomsXkitchen")[0] is None
    with pytest.raises(ValueError, match="must start with '/'"):
        Route.build("rooms", ["GET"], handler)


def test_return_values_become_responses() -> None:
    async def run(stream: object) -> None:
        pass

    stream = StreamResponse(run)
    assert to_response(stream) is stream
    plain = Response(b"x")
    assert to_response(plain) is plain
    none = to_response(None)
    assert isinstance(none, Response)
    assert (none.status, none.body) == (204, b"")
    text = to_response("h\u00e9")
    assert isinstance(text, PlainTextResponse)
    assert text.body == "h\u00e9".encode()
    raw = to_response(bytearray(b"\x00"))  # type: ignore[arg-type]
    assert isinstance(raw, Response)
    assert raw.header_list() == [(b"content-type", b"application/octet-stream")]
    for value in ({"a": 1}, [1, "é"]):
        js = to_response(value)
        assert isinstance(js, JSONResponse)
    assert to_response([1, "é"]).body == '[1,"é"]'.encode()  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="handler returned int"):
        to_response(42)  # type: ignore[arg-type]


def test_response_headers() -> None:
    html = HTMLResponse("<p>", headers={"x-a": "1"})
    assert html.header_list() == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"x-a", b"1"),
    ]
    # An explicit Content-Type wins over the class default.
    custom = PlainTextResponse("x", headers={"Content-Type": "text/csv"})
    assert custom.header_list() == [(b"Content-Type", b"text/csv")]
    assert Response(media_type="image/png").header_list() == [(b"content-type", b"image/png")]
    assert Response().header_list() == []

    async def run(stream: object) -> None:
        pass

    stream = StreamResponse(run, headers={"x-b": "2"})
    assert stream.header_list() == [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-b", b"2"),
    ]


def test_http_exception_defaults() -> None:
    exc = HTTPException(404)
    assert (exc.status, exc.detail, exc.headers) == (404, "Not Found", {})
    assert str(exc) == "404 Not Found"
    assert HTTPException(599).detail == "Error"  # no standard phrase
    assert HTTPException(429, headers={"retry-after": "3"}).headers == {"retry-after": "3"}


async def test_run_lifespan_directly() -> None:
    app = App()
    ran = trio.Event()

    @app.background
    async def task() -> None:
        ran.set()
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with app.run_lifespan():
            await ran.wait()
