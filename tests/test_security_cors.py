"""Issue 11, finding 7: CORS on the App and CSRF protection of publish_endpoint.

Both servers (``serve_app``): browsers see the same headers either way.
"""

from __future__ import annotations

import pytest
import trio
from servers import RunningServer

from trio_sse import (
    CORS,
    App,
    Broker,
    Config,
    Event,
    EventStream,
    Request,
    publish_endpoint,
)

ALLOWED = "https://dashboard.example"
EVIL = "https://evil.example"


def cors_app(cors: CORS | None, **publish_kw: bool) -> tuple[App, Broker]:
    broker = Broker()
    broker.declare("news")
    app = App(config=Config(heartbeat_interval=None), cors=cors)

    @app.stream("/events")
    async def events(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hi"))

    def cookie_auth(request: Request, topic: str) -> bool:
        return request.headers.get("cookie") == "session=ok"

    app.add_route(
        "/publish/{topic}", publish_endpoint(broker, authorize=cookie_auth, **publish_kw), ["POST"]
    )
    return app, broker


async def test_preflight_and_stream_headers(serve_app: object) -> None:
    cors = CORS([ALLOWED], allow_credentials=True, expose_headers=["X-Trace"])
    app, _ = cors_app(cors)
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.options(
                "/events",
                headers={
                    "origin": ALLOWED,
                    "access-control-request-method": "GET",
                    "access-control-request-headers": "last-event-id",
                },
            )
            assert r.status_code == 204, r.text
            assert r.headers["access-control-allow-origin"] == ALLOWED
            assert r.headers["access-control-allow-credentials"] == "true"
            assert "GET" in r.headers["access-control-allow-methods"]
            assert r.headers["access-control-allow-headers"] == "last-event-id"
            assert r.headers["access-control-max-age"] == "600"
            assert r.headers["vary"] == "Origin"

            r = await client.options(
                "/events", headers={"origin": EVIL, "access-control-request-method": "GET"}
            )
            assert r.status_code == 403
            assert "access-control-allow-origin" not in r.headers
            r = await client.options(
                "/events", headers={"origin": ALLOWED, "access-control-request-method": "DELETE"}
            )
            assert r.status_code == 403
            r = await client.options(
                "/events",
                headers={
                    "origin": ALLOWED,
                    "access-control-request-method": "GET",
                    "access-control-request-headers": "x-secret",
                },
            )
            assert r.status_code == 403
            assert "x-secret" in r.text

            r = await client.get("/events", headers={"origin": ALLOWED})
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == ALLOWED
            assert r.headers["access-control-allow-credentials"] == "true"
            assert r.headers["access-control-expose-headers"] == "X-Trace"
            assert r.headers["vary"] == "Origin"
            r = await client.get("/events", headers={"origin": EVIL})
            assert r.status_code == 200
            assert "access-control-allow-origin" not in r.headers
            assert r.headers["vary"] == "Origin"
            r = await client.get("/nowhere", headers={"origin": ALLOWED})
            assert r.status_code == 404
            assert r.headers["access-control-allow-origin"] == ALLOWED


async def test_wildcard_origin(serve_app: object) -> None:
    app, _ = cors_app(CORS(["*"]))
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.get("/events", headers={"origin": EVIL})
            assert r.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in r.headers


async def test_without_cors_options_is_405_and_no_headers(serve_app: object) -> None:
    app, _ = cors_app(None)
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.options(
                "/events", headers={"origin": ALLOWED, "access-control-request-method": "GET"}
            )
            assert r.status_code == 405
            r = await client.get("/events", headers={"origin": ALLOWED})
            assert "access-control-allow-origin" not in r.headers


def test_cors_validation() -> None:
    with pytest.raises(ValueError, match="allow_credentials"):
        CORS(["*"], allow_credentials=True)
    with pytest.raises(ValueError, match="not an origin"):
        CORS(["dashboard.example"])
    with pytest.raises(ValueError, match="not an origin"):
        CORS(["https://dashboard.example/path"])
    with pytest.raises(TypeError, match="list"):
        CORS(ALLOWED)


FORM = {"content-type": "application/x-www-form-urlencoded", "cookie": "session=ok"}
TEXT = {"content-type": "text/plain", "cookie": "session=ok"}
JSON = {"content-type": "application/json", "cookie": "session=ok"}


@pytest.mark.parametrize(
    ("cors", "headers", "body", "status"),
    [
        # Cross-site forgeries: a form, a text/plain fetch, a same-site subdomain.
        (None, {**FORM, "origin": EVIL}, b"data=forged", 403),
        (None, {**TEXT, "sec-fetch-site": "cross-site"}, b"forged", 403),
        (None, {**TEXT, "sec-fetch-site": "same-site", "origin": EVIL}, b"forged", 403),
        (None, {**TEXT, "origin": "null"}, b"forged", 403),
        (CORS([ALLOWED]), {**FORM, "origin": EVIL}, b"data=forged", 403),
        # An allowed origin, but a body the browser sends without asking.
        (CORS([ALLOWED]), {**FORM, "origin": ALLOWED}, b"data=x", 403),
        (CORS([ALLOWED]), {**TEXT, "origin": ALLOWED, "sec-fetch-site": "cross-site"}, b"x", 403),
        # Legitimate: same origin, the browser's own word, non-browsers, preflighted JSON.
        (None, {**FORM, "origin": "http://127.0.0.1:{port}"}, b"data=x", 200),
        (None, {**TEXT, "sec-fetch-site": "same-origin", "origin": "https://x"}, b"x", 200),
        (None, {**TEXT, "sec-fetch-site": "none"}, b"x", 200),
        (None, TEXT, b"curl", 200),
        (CORS([ALLOWED]), {**JSON, "origin": ALLOWED}, b'{"data": "x"}', 200),
    ],
)
async def test_publish_refuses_cross_site_requests(
    serve_app: object,
    cors: CORS | None,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    app, broker = cors_app(cors)
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    headers = {k: v.format(port=server.port) for k, v in headers.items()}
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.post("/publish/news", headers=headers, content=body)
    assert r.status_code == status, r.text
    if status == 403:
        assert "CSRF" in r.text
    assert broker.topic("news").stats().published == (1 if status == 200 else 0)


async def test_csrf_settings(serve_app: object) -> None:
    app, _ = cors_app(CORS([ALLOWED]), allow_simple_cross_origin=True)
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.post("/publish/news", headers={**FORM, "origin": ALLOWED}, content=b"")
            assert r.status_code == 200, r.text
            r = await client.post("/publish/news", headers={**FORM, "origin": EVIL}, content=b"")
            assert r.status_code == 403
    app, _ = cors_app(None, csrf_protection=False)
    server = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.post("/publish/news", headers={**FORM, "origin": EVIL}, content=b"")
            assert r.status_code == 200, r.text


async def test_vary_is_merged_and_handler_headers_win(serve_app: object) -> None:
    from trio_sse import Response

    app = App(cors=CORS([ALLOWED]))

    @app.get("/v")
    async def v(request: Request) -> Response:
        return Response(
            "x", headers={"Vary": "Accept-Encoding", "Access-Control-Allow-Origin": "https://own"}
        )

    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.get("/v", headers={"origin": ALLOWED})
    assert r.headers["vary"] == "Accept-Encoding, Origin"
    assert r.headers["access-control-allow-origin"] == "https://own"
