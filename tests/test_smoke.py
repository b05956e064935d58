import trio

import trio_sse


async def test_trio_mode_runs() -> None:
    await trio.sleep(0)
    assert trio_sse.Event("x").encode() == b"data: x\n\n"
