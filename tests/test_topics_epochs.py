"""Ids carry the run's epoch (another run's id gets the reset event); ids are bounded."""

from __future__ import annotations

import re

import pytest
import trio

from trio_sse import Broker, Event, LocalBackplane, TopicOptions


async def test_default_ids_start_with_an_epoch_new_for_every_backplane() -> None:
    first, second = Broker(), Broker()
    a = first.publish_nowait("t", Event("x"))
    b = second.publish_nowait("t", Event("x"))
    assert a.id is not None
    assert b.id is not None
    assert re.fullmatch(r"[0-9a-f]{8}-1", a.id)
    assert re.fullmatch(r"[0-9a-f]{8}-1", b.id)
    assert a.id != b.id
    backplane = first.backplane
    assert isinstance(backplane, LocalBackplane)
    assert a.id == backplane.id_prefix + "1"


async def test_an_id_from_a_previous_run_is_reset_not_replayed() -> None:
    """The restarted ticker: Last-Event-ID 3 of the old run must not resume."""
    old_run = Broker()
    old_ids = [old_run.publish_nowait("prices", Event(f"old{i}")).id for i in range(3)]
    new_run = Broker()
    for i in range(6):
        new_run.publish_nowait("prices", Event(f"new{i}"))
    for stale in (old_ids[-1], "3"):
        async with new_run.subscribe("prices", stale) as sub:
            with trio.fail_after(1):
                reset = await sub.receive()
            assert sub.reset
            assert reset.event == "reset"
            assert reset.id == new_run.topic("prices").last_event_id
            assert sub.replayed == 0


async def test_an_explicit_empty_prefix_gives_bare_numbers() -> None:
    broker = Broker(backplane=LocalBackplane(id_prefix=""))
    assert broker.publish_nowait("t", Event("x")).id == "1"


async def test_publishing_bounds_ids_and_retry() -> None:
    """A 20 KB id would come back as a 20 KB Last-Event-ID header: refused at publish."""
    broker = Broker(TopicOptions(max_id_length=8, max_retry=1000))
    topic = broker.topic("t")
    assert topic.publish_nowait(Event("x", id="12345678", retry=1000)).id == "12345678"
    for bad, message in (
        (Event("x", id="123456789"), "max_id_length"),
        (Event("x", id="\u00e9" * 5), "max_id_length"),  # 10 bytes in UTF-8
        (Event("x", retry=1001), "max_retry"),
    ):
        with pytest.raises(ValueError, match=message):
            topic.publish_nowait(bad)
        with pytest.raises(ValueError, match=message):
            await topic.publish(bad)
    assert topic.last_event_id == "12345678"  # nothing else was published
    default = Broker().topic("t")
    with pytest.raises(ValueError, match="256"):
        default.publish_nowait(Event("x", id="i" * 20_000))
    for field in ("max_id_length", "max_retry"):
        with pytest.raises(ValueError, match=field):
            TopicOptions(**{field: -1})
