"""Checks at the edge: request heads and bodies that must be refused, not parsed.

Sans-IO (no trio): each function looks at bytes or parsed headers and returns
or raises; both servers (raw and ASGI) call the same ones.

* Rule 1, no smuggling: a request with both ``Content-Length`` and
  ``Transfer-Encoding`` is rejected with ``400`` and the connection closed
  (RFC 9112 section 6.1: a proxy in front may have framed it by the other
  header, so whatever follows on the connection is not to be trusted). That
  covers an obs-folded ``Transfer-Encoding`` too: h11 unfolds it.
* Rule 2, one value for what decides security: ``Authorization``, ``Cookie``,
  ``Host``, ``Content-Length`` and ``Transfer-Encoding`` must not be
  repeated. Proxies and applications disagree on which of two values wins
  (first or last), so two of them are refused with ``400``. (HTTP/2 splits
  cookies into several fields by design; those are allowed there.)
* Rule 3, bounded JSON: the nesting depth of a JSON body is checked before
  :func:`json.loads` sees it, so a deep body is a ``400``, not a
  ``RecursionError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["UNIQUE_HEADERS", "json_depth_exceeds", "request_head_error"]

#: Request headers that may appear at most once (Rule 2).
UNIQUE_HEADERS: Final = frozenset(
    {b"authorization", b"cookie", b"host", b"content-length", b"transfer-encoding"}
)

_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET: Final = re.compile(rb"[\[\]{}]")


def request_head_error(
    headers: Iterable[tuple[bytes, bytes]], *, http2: bool = False
) -> str | None:
    """Why a request head must be refused with ``400`` (Rules 1 and 2), or ``None``.

    Args:
        headers: ``(name, value)`` pairs; names in any case.
        http2: the request came over HTTP/2 (several ``cookie`` fields are
            then allowed, as RFC 9113 section 8.2.3 splits them).
    """
    seen: set[bytes] = set()
    for raw_name, _ in headers:
        name = raw_name.lower()
        if name in UNIQUE_HEADERS:
            if name in seen and not (http2 and name == b"cookie"):
                return f"repeated {name.decode('ascii').title()} header"
            seen.add(name)
    if b"content-length" in seen and b"transfer-encoding" in seen:
        return "both Content-Length and Transfer-Encoding (RFC 9112 6.1)"
    return None


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``max_depth``.

    Strings are skipped (brackets inside them do not count); the text need
    not be valid JSON (the parser reports that afterwards).
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # fast path: not enough brackets to be too deep
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b"", body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth = max(0, depth - 1)
    return False
