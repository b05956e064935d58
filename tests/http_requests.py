"""One plain HTTP request with httpx, for tests that only need the answer."""

from __future__ import annotations

import httpx


async def request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> httpx.Response:
    """Send one request to ``127.0.0.1:port`` and read the whole response."""
    async with httpx.AsyncClient(timeout=None) as client:
        return await client.request(
            method, f"http://127.0.0.1:{port}{target}", headers=headers, content=body
        )
