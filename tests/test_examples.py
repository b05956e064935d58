"""The documentation's example apps run and behave as their docs say."""

from __future__ import annotations

import json

import httpx
import trio
from servers import start_raw

from trio_sse import open_event_source


async def test_prices_example_streams_resumes_and_guards_publishing() -> None:
    from examples import prices

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            base = (await start_raw(nursery, prices.app)).url
            async with open_event_source(f"{base}/events/prices", max_reconnects=0) as source:
                assert source.response is not None
                assert source.response.status_code == 200
                first, second = await anext(source), await anext(source)
            assert first.type == "price"
            assert "AAPL" in json.loads(second.data)
            # Reconnecting with the last id resumes right after it.
            async with open_event_source(
                f"{base}/events/prices", last_event_id=first.last_event_id, max_reconnects=0
            ) as source:
                again = await anext(source)
            assert again.last_event_id == second.last_event_id
            async with httpx.AsyncClient(base_url=base, timeout=None) as client:
                refused = await client.post("/publish/prices", content=b"x")
                assert refused.status_code == 403
                ok = await client.post(
                    "/publish/prices",
                    headers={"authorization": "Bearer admin-token"},
                    content=b"manual",
                )
                assert ok.status_code == 200
            nursery.cancel_scope.cancel()


def test_readme_shows_the_example_and_its_codec_snippet_runs() -> None:
    from pathlib import Path

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    assert (root / "examples/prices.py").read_text() in readme
    snippet = readme.split("The codec stands alone too (sans-IO):\n\n```python\n")[1]
    exec(compile(snippet.split("```")[0], "README.md", "exec"), {})
