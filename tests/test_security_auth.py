"""Issue 11, finding 8: browser authentication (cookie, query token, JWT).

A JWT's expiry ends the stream with the final ``retry:`` event; a resume is
authorized again before anything is replayed.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import jwt
import pytest
import trio
from servers import RunningServer

from trio_sse import (
    App,
    Broker,
    Config,
    Event,
    Headers,
    HTTPException,
    JWTAuth,
    Request,
    bearer_token,
    cookie_value,
    publish_endpoint,
    query_token,
    secret_matches,
    topic_stream,
)

SECRET = "test-secret-that-is-long-enough-for-hs256"
SECURITY_DOC = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()


def token(exp_in: float = 60, **claims: object) -> str:
    return jwt.encode({"exp": int(time.time() + exp_in), **claims}, SECRET, algorithm="HS256")


def make_request(target: bytes, headers: list[tuple[bytes, bytes]]) -> Request:
    return Request("GET", target, Headers(headers), app=App())


def test_credential_helpers() -> None:
    r = make_request(
        b"/e?access_token=q1&access_token=q2",
        [(b"authorization", b"Bearer  abc "), (b"cookie", b'a=1; session="s v"')],
    )
    assert bearer_token(r) == "abc"
    assert query_token(r) == "q2"
    assert query_token(r, "other") is None
    assert cookie_value(r, "session") == "s v"
    assert cookie_value(r, "missing") is None
    bad = make_request(b"/", [(b"authorization", b"Basic abc"), (b"cookie", b'x="unterminated')])
    assert bearer_token(bad) is None
    assert cookie_value(bad, "x") is None
    assert secret_matches("s3cret", "s3cret")
    assert not secret_matches("s3cre", "s3cret")
    assert not secret_matches(None, "s3cret")


def jwt_app() -> tuple[App, Broker]:
    broker = Broker(create_topics=False)
    broker.declare("news")
    broker.declare("payroll")
    auth = JWTAuth(SECRET, cookie="token")
    app = App(
        config=Config(heartbeat_interval=None, stream_end_retry=2500, stream_end_retry_jitter=0)
    )
    app.add_route(
        "/events/{topic}",
        topic_stream(broker, authorize=auth.authorize_topics, expires_at=auth.expires_at),
    )
    app.add_route(
        "/publish/{topic}", publish_endpoint(broker, authorize=auth.authorize_publish), ["POST"]
    )
    return app, broker


async def test_token_expiry_ends_the_stream_with_retry(serve_app: object) -> None:
    app, broker = jwt_app()
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    broker.topic("news").publish_nowait(Event("before"))
    with trio.fail_after(5):
        start = time.time()
        reply = await server.request(
            "GET", f"/events/news?access_token={token(2, topics=['news'])}"
        )
        assert reply.status == 200
        assert await reply.pump()
        assert b"id: " in reply.body  # subscribed: the starting position
        broker.topic("news").publish_nowait(Event("while valid"))
        body = (await reply.rest()).body
        await reply.aclose()
    assert b"data: while valid" in body
    assert body.endswith(b"retry: 2500\n\n"), body
    assert time.time() - start < 4


@pytest.mark.parametrize(
    ("credential", "status", "reason"),
    [
        (None, 401, "no token"),
        ("garbage", 401, "invalid token"),
        (jwt.encode({"exp": int(time.time()) + 60, "topics": ["news"]}, "other-key-" * 4), 401, ""),
        ("expired", 401, "token expired"),
        ("no-exp", 401, "exp"),
        ("payroll-only", 403, "not allowed"),
    ],
)
async def test_bad_or_insufficient_tokens(
    serve_app: object, credential: str | None, status: int, reason: str
) -> None:
    app, _ = jwt_app()
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    value = {
        "expired": token(-10, topics=["news"]),
        "no-exp": jwt.encode({"topics": ["news"]}, SECRET),
        "payroll-only": token(topics=["payroll"]),
    }.get(credential or "", credential)
    headers = {} if value is None else {"authorization": f"Bearer {value}"}
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.get("/events/news", headers=headers)
    assert r.status_code == status, r.text
    assert reason in r.text
    assert r.text.count("\n") == 1


async def test_resume_is_authorized_again_and_replays_nothing_forbidden(
    serve_app: object,
) -> None:
    app, broker = jwt_app()
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    news = broker.topic("news")
    first = news.publish_nowait(Event("old news"))
    news.publish_nowait(Event("secret follow-up"))
    with trio.fail_after(5):
        async with server.client() as client:
            # The right was revoked: the new token (from a cookie) lacks "news".
            r = await client.get(
                "/events/news",
                headers={"last-event-id": first.id or "", "cookie": f"token={token(topics=[])}"},
            )
            assert r.status_code == 403
            assert "secret follow-up" not in r.text
        reply = await server.request(
            "GET",
            "/events/news",
            {"last-event-id": first.id or "", "cookie": f"token={token(topics=['news'])}"},
        )
        assert reply.status == 200
        assert await reply.pump()
        assert b"secret follow-up" in reply.body
        await reply.aclose()


async def test_publish_with_a_token(serve_app: object) -> None:
    app, broker = jwt_app()
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            ok = {"authorization": f"Bearer {token(publish=['news'])}"}
            no = {"authorization": f"Bearer {token(topics=['news'])}"}
            assert (await client.post("/publish/news", headers=ok, content=b"x")).status_code == 200
            assert (await client.post("/publish/news", headers=no, content=b"x")).status_code == 403
    assert broker.topic("news").stats().published == 1


async def test_query_token_stays_out_of_the_logs(
    serve_app: object, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/boom")
    async def boom(request: Request) -> str:
        raise RuntimeError("handler failed")

    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    caplog.set_level(logging.DEBUG, logger="trio_sse")
    with trio.fail_after(5):
        async with server.client() as client:
            r = await client.get("/boom?access_token=TOPSECRET")
    assert r.status_code == 500
    trio_sse_logs = [r for r in caplog.records if r.name.startswith("trio_sse")]
    assert trio_sse_logs, "the handler error is logged"
    assert all("TOPSECRET" not in r.getMessage() for r in trio_sse_logs)
    assert "TOPSECRET" not in repr(make_request(b"/boom?access_token=TOPSECRET", []))


async def test_security_doc_snippets_run(serve_app: object) -> None:
    """docs/security.md's Python blocks, run in order as one program, then served."""
    blocks = re.findall(r"```python\n(.*?)```", SECURITY_DOC, re.S)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), "docs/security.md", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, App)
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        async with server.client() as client:
            forged = await client.post("/settings", headers={"origin": "https://evil.example"})
            assert forged.status_code == 403
            assert (await client.post("/settings")).json() == {"saved": True}
            assert (await client.get("/events/news")).status_code == 403
            assert (await client.get("/jwt/events/news")).status_code == 401


def test_jwt_audience_issuer_and_leeway() -> None:
    auth = JWTAuth(SECRET, audience="sse", issuer="login", leeway=30)

    def req(tok: str) -> Request:
        return make_request(b"/e?access_token=" + tok.encode(), [])

    good = jwt.encode(
        {"exp": int(time.time()) - 10, "aud": "sse", "iss": "login", "topics": "*"}, SECRET
    )
    assert auth.authorize_topics(req(good), ["anything"])  # within the leeway
    expires = auth.expires_at(req(good))
    assert expires is not None
    assert expires > time.time()
    for claims in ({"aud": "other", "iss": "login"}, {"aud": "sse", "iss": "evil"}):
        bad = jwt.encode({"exp": int(time.time()) + 60, "topics": "*", **claims}, SECRET)
        with pytest.raises(HTTPException) as info:
            auth.claims(req(bad))
        assert info.value.status == 401
    none_alg = jwt.encode({"exp": int(time.time()) + 60, "topics": "*"}, None, algorithm="none")
    with pytest.raises(HTTPException, match="invalid token"):
        auth.claims(req(none_alg))
