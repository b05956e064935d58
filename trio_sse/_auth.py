"""Authentication helpers for browsers, whose ``EventSource`` cannot set headers.

Theory of operation: the helpers only *find and check* credentials; deciding
what a client may see stays in the ``authorize`` callables of
:func:`~trio_sse.topic_stream` and :func:`~trio_sse.publish_endpoint`, which
run on every request, resumes included, before any event is replayed. A
browser has three ways to send a credential with ``new EventSource(url)``:

1. a cookie (:func:`cookie_value`); cross-origin it needs
   ``{withCredentials: true}`` and :class:`~trio_sse.CORS` with
   ``allow_credentials``;
2. a short-lived token in the query string (:func:`query_token`); trio-sse
   never logs query strings (its log lines name the path only), but proxies'
   access logs do: strip it there;
3. a signed token, e.g. a JWT (:class:`JWTAuth`, ``pip install trio-sse[jwt]``)
   in the query string or a cookie, whose expiry ends the stream gracefully:
   the server sends the final ``retry:`` event, the browser reconnects, and
   the page supplies a fresh token (or the request is refused).

Secrets are compared with :func:`hmac.compare_digest` (:func:`secret_matches`),
so response timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any, final

from ._http import HTTPException
from ._request import Request

__all__ = ["JWTAuth", "bearer_token", "cookie_value", "query_token", "secret_matches"]


def secret_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` equals ``expected``, compared in constant time."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def cookie_value(request: Request, name: str) -> str | None:
    """The value of cookie ``name``, or ``None`` (also for a malformed ``Cookie`` header)."""
    header = request.headers.get("cookie")
    if header is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value


def query_token(request: Request, name: str = "access_token") -> str | None:
    """The last ``name`` query parameter, or ``None``.

    Keep such tokens short-lived: URLs end up in browser history and in
    proxies' access logs (trio-sse's own logs name the path only).
    """
    return request.query_param(name) or None


@final
class JWTAuth:
    """Signed-token (JWT) authorization for streams and publishing.

    Needs PyJWT (``pip install trio-sse[jwt]``). The token is looked for in
    ``Authorization: Bearer``, then the ``query_param`` query parameter, then
    the ``cookie`` cookie. It must carry an ``exp`` claim; a ``topics`` claim
    (a list of names, ``"*"`` for all) says what it may subscribe to, a
    ``publish`` claim (likewise) what it may publish to.

    Args:
        key: the verification key (the shared secret for ``HS256``).
        algorithms: accepted algorithms (never let the token choose).
        audience: the required ``aud`` claim, if any.
        issuer: the required ``iss`` claim, if any.
        leeway: seconds of clock skew tolerated on ``exp`` and ``nbf``.
        query_param: the query parameter that may carry the token.
        cookie: the cookie that may carry the token (``None``: none).

    Raises:
        ImportError: PyJWT is not installed (the message names the extra).

    Example::

        auth = JWTAuth(SECRET)
        app.add_route(
            "/events/{topic}",
            topic_stream(broker, authorize=auth.authorize_topics, expires_at=auth.expires_at),
        )

    Error handling:
        A missing, malformed, badly signed or expired token answers ``401``
        with a one-line reason (:meth:`claims` raises
        :class:`~trio_sse.HTTPException`); a valid token without the topic
        answers ``403`` (the ``authorize`` methods return ``False``).
    """

    def __init__(
        self,
        key: str | bytes,
        *,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        query_param: str = "access_token",
        cookie: str | None = None,
    ) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise ImportError(
                "JWTAuth needs PyJWT; install it with: pip install 'trio-sse[jwt]'"
            ) from exc
        self._jwt = jwt
        self.key = key
        self.algorithms = list(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.query_param = query_param
        self.cookie = cookie

    def token(self, request: Request) -> str | None:
        """The token the request carries, or ``None``."""
        token = bearer_token(request) or query_token(request, self.query_param)
        if token is None and self.cookie is not None:
            token = cookie_value(request, self.cookie)
        return token

    def claims(self, request: Request) -> Mapping[str, Any]:
        """The verified claims of the request's token.

        Raises:
            HTTPException: ``401`` with the reason when there is no valid token.
        """
        token = self.token(request)
        if token is None:
            raise HTTPException(401, "no token", {"www-authenticate": "Bearer"})
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
        except self._jwt.ExpiredSignatureError:
            raise HTTPException(401, "token expired", _CHALLENGE) from None
        except self._jwt.InvalidTokenError as exc:
            raise HTTPException(401, f"invalid token: {exc}", _CHALLENGE) from None
        return claims

    def authorize_topics(self, request: Request, names: Sequence[str]) -> bool:
        """For ``topic_stream(authorize=...)``: the ``topics`` claim covers ``names``."""
        return _covers(self.claims(request).get("topics"), names)

    def authorize_publish(self, request: Request, topic: str) -> bool:
        """For ``publish_endpoint(authorize=...)``: the ``publish`` claim covers ``topic``."""
        return _covers(self.claims(request).get("publish"), [topic])

    def expires_at(self, request: Request) -> float | None:
        """The token's ``exp`` (Unix time): pass as ``topic_stream(expires_at=...)``."""
        exp = self.claims(request).get("exp")
        return float(exp) + self.leeway if isinstance(exp, int | float) else None


_CHALLENGE = {"www-authenticate": 'Bearer error="invalid_token"'}


def _covers(granted: object, names: Iterable[str]) -> bool:
    if granted == "*":
        return True
    if not isinstance(granted, list):
        return False
    return "*" in granted or all(name in granted for name in names)
