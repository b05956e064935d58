"""The documentation's example apps run and behave as their docs say."""

from __future__ import annotations

import json
from functools import partial

import trio

from tests.sse_client import open_request, request
from trio_sse import serve


async def test_prices_example_streams_resumes_and_guards_publishing() -> None:
    from docs.examples import prices

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(serve, prices.app, "127.0.0.1", 0))
            port = listeners[0].socket.getsockname()[1]
            async with open_request(port, "/events/prices") as client:
                assert (await client.start()).status == 200
                first, second = await client.events(2)
            assert first.type == "price"
            assert "AAPL" in json.loads(second.data)
            # Reconnecting with the last id resumes right after it.
            async with open_request(
                port, "/events/prices", headers=[("last-event-id", first.last_event_id)]
            ) as client:
                await client.start()
                (again,) = await client.events(1)
            assert again.last_event_id == second.last_event_id
            refused = await request(port, "/publish/prices", method="POST", body=b"x")
            assert refused.status == 403
            ok = await request(
                port,
                "/publish/prices",
                method="POST",
                headers=[("authorization", "Bearer admin-token")],
                body=b"manual",
            )
            assert ok.status == 200
            nursery.cancel_scope.cancel()


def test_readme_shows_the_example_and_its_codec_snippet_runs() -> None:
    from pathlib import Path

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert (root / "docs/examples/prices.py").read_text() in readme
    snippet = readme.split("The codec stands alone too (sans-IO):\n\n```python\n")[1]
    exec(compile(snippet.split("```")[0], "README.md", "exec"), {})
