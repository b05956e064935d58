"""Cross-origin requests: CORS for browsers, and CSRF checks for state changes.

Theory of operation: :class:`CORS` is plain data on the :class:`~trio_sse.App`
(``App(cors=CORS(...))``); both servers ask it two things, in one place each:

* Rule 1, preflight: an ``OPTIONS`` request with ``Origin`` and
  ``Access-Control-Request-Method`` is answered by :meth:`CORS.preflight`
  (``204`` with the ``Access-Control-Allow-*`` headers, or ``403`` with the
  reason) before any route is looked up.
* Rule 2, every other response (streams, errors, 404s) gets the headers of
  :meth:`CORS.response_headers`: ``Access-Control-Allow-Origin`` (the
  request's origin, echoed only when allowed), ``Allow-Credentials``,
  ``Expose-Headers``, and always ``Vary: Origin`` so caches keep answers for
  different origins apart.

CORS only lets browsers *read* responses; it does not stop a cross-site form
or a ``text/plain`` ``fetch`` from *sending* a POST with the user's cookies.
:func:`cross_site_refusal` is the CSRF check state-changing routes make
(``publish_endpoint`` does by default): a request the browser marks as
cross-site (``Sec-Fetch-Site``) or whose ``Origin`` is not the server's own is
refused unless its origin is allowed by the App's CORS *and* its content type
is one that needed a preflight (so the browser asked first).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from ._http import Response
    from ._request import Request

__all__ = ["CORS", "SIMPLE_CONTENT_TYPES", "cross_site_refusal"]

#: Content types a browser sends cross-site without a preflight.
SIMPLE_CONTENT_TYPES: Final = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)


@final
@dataclass(frozen=True, slots=True)
class CORS:
    """Which other origins browsers may let read this App's responses.

    Args:
        allow_origins: exact origins (``"https://app.example"``), or ``"*"``
            for any (not with credentials).
        allow_credentials: allow cookies and HTTP auth
            (``new EventSource(url, {withCredentials: true})``, ``fetch`` with
            ``credentials: "include"``); the allowed origin is then echoed,
            never ``*``.
        allow_methods: methods a preflight may ask for.
        allow_headers: request headers a preflight may ask for (compared
            case-insensitively).
        expose_headers: response headers scripts may read.
        max_age: seconds browsers may cache a preflight answer.

    Raises:
        ValueError: ``"*"`` together with ``allow_credentials``, or an origin
            that is not ``scheme://host[:port]``.

    Example::

        app = App(cors=CORS(["https://dashboard.example"], allow_credentials=True))

    """

    allow_origins: Sequence[str]
    allow_credentials: bool = False
    allow_methods: Sequence[str] = ("GET", "POST")
    allow_headers: Sequence[str] = ("Content-Type", "Authorization", "Last-Event-ID")
    expose_headers: Sequence[str] = ()
    max_age: int = 600

    def __post_init__(self) -> None:
        if isinstance(self.allow_origins, str):
            raise TypeError("CORS.allow_origins must be a list of origins, not a str")
        for origin in self.allow_origins:
            if origin == "*":
                if self.allow_credentials:
                    raise ValueError(
                        "CORS: allow_origins='*' cannot be used with allow_credentials "
                        "(browsers refuse it); list the origins"
                    )
                continue
            parts = urllib.parse.urlsplit(origin)
            if not parts.scheme or not parts.netloc or parts.path or origin != origin.strip():
                raise ValueError(f"CORS: {origin!r} is not an origin (scheme://host[:port])")

    def allows(self, origin: str | None) -> bool:
        """Whether ``origin`` may read responses."""
        if origin is None or origin == "null":
            return False
        return "*" in self.allow_origins or origin.rstrip("/") in self.allow_origins

    def preflight(self, request: Request) -> Response | None:
        """The answer to a preflight request, or ``None`` if ``request`` is not one."""
        from ._http import PlainTextResponse, Response

        origin = request.headers.get("origin")
        method = request.headers.get("access-control-request-method")
        if request.method != "OPTIONS" or origin is None or method is None:
            return None
        vary = {"vary": "Origin"}
        if not self.allows(origin):
            return PlainTextResponse(f"origin {origin} is not allowed\n", 403, vary)
        if method.upper() not in {m.upper() for m in self.allow_methods}:
            return PlainTextResponse(f"method {method} is not allowed\n", 403, vary)
        asked = request.headers.get("access-control-request-headers", "")
        allowed = {h.lower() for h in self.allow_headers}
        refused = [
            h.strip() for h in asked.split(",") if h.strip() and h.strip().lower() not in allowed
        ]
        if refused:
            return PlainTextResponse(f"headers not allowed: {', '.join(refused)}\n", 403, vary)
        headers = self._origin_headers(origin)
        headers["access-control-allow-methods"] = ", ".join(self.allow_methods)
        if asked.strip():
            headers["access-control-allow-headers"] = asked
        headers["access-control-max-age"] = str(self.max_age)
        return Response(status=204, headers=headers)

    def response_headers(self, request: Request) -> dict[str, str]:
        """The CORS headers for the response to ``request`` (Rule 2)."""
        origin = request.headers.get("origin")
        if not self.allows(origin):
            return {"vary": "Origin"}
        assert origin is not None
        headers = self._origin_headers(origin)
        if self.expose_headers:
            headers["access-control-expose-headers"] = ", ".join(self.expose_headers)
        return headers

    def _origin_headers(self, origin: str) -> dict[str, str]:
        wildcard = "*" in self.allow_origins and not self.allow_credentials
        headers = {"access-control-allow-origin": "*" if wildcard else origin, "vary": "Origin"}
        if self.allow_credentials:
            headers["access-control-allow-credentials"] = "true"
        return headers


def add_cors_headers(request: Request, headers: dict[str, str]) -> None:
    """Merge the App's CORS headers into a response's ``headers`` (no-op without CORS)."""
    cors = request.app.cors
    if cors is None:
        return
    for name, value in cors.response_headers(request).items():
        existing = next((k for k in headers if k.lower() == name), None)
        if existing is None:
            headers[name] = value
        elif name == "vary" and "origin" not in headers[existing].lower():
            headers[existing] += ", Origin"


def cross_site_refusal(request: Request, *, allow_simple: bool = False) -> str | None:
    """Why a state-changing ``request`` looks like cross-site request forgery, or ``None``.

    Same-site when the browser says so (``Sec-Fetch-Site: same-origin`` or
    ``none``), or when ``Origin`` names this host; a request with neither
    header is not from a browser and passes. A cross-origin request passes
    only if the App's :class:`CORS` allows its origin and its content type is
    not one of :data:`SIMPLE_CONTENT_TYPES` (those skip the preflight, so the
    browser never asked), unless ``allow_simple``.
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site in ("same-origin", "none"):
        return None
    if origin is None:
        if site is None:
            return None  # not a browser (or a very old one)
        origin_host = None
    else:
        origin_host = urllib.parse.urlsplit(origin).netloc.lower() or None
    host = request.headers.get("host", "").lower()
    if site is None and origin_host is not None and origin_host == host:
        return None
    cors = request.app.cors
    if cors is None or not cors.allows(origin):
        return f"cross-site request from {origin or site} refused (CSRF protection)"
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in SIMPLE_CONTENT_TYPES and not allow_simple:
        return (
            f"cross-origin request with content type {content_type or 'none'!r} refused "
            "(CSRF protection): send application/json"
        )
    return None
