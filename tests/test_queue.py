"""A subscription's queue (``_queue.py``): a memory channel's semantics, and cheap waits."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable

import pytest
import trio
import trio.testing

from trio_sse import Broker, Event
from trio_sse._queue import Queue


async def test_an_item_goes_to_the_waiting_receiver_then_queues_up_to_capacity() -> None:
    queue: Queue[int] = Queue(2)
    got: list[int] = []
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            got.append(await queue.receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        queue.send_nowait(1)  # handed over, not queued
        assert len(queue) == 0
    assert got == [1]
    queue.send_nowait(2)
    queue.send_nowait(3)
    with pytest.raises(trio.WouldBlock):
        queue.send_nowait(4)
    assert [await queue.receive(), await queue.receive()] == [2, 3]
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()


async def test_receive_is_a_checkpoint_with_an_item_ready() -> None:
    queue: Queue[int] = Queue(1)
    queue.send_nowait(1)
    with trio.testing.assert_checkpoints():
        assert await queue.receive() == 1


async def test_a_cancelled_receive_takes_nothing() -> None:
    queue: Queue[int] = Queue(1)
    queue.send_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.receive()
    assert scope.cancelled_caught
    assert queue.receive_nowait() == 1


async def test_a_cancelled_receive_of_an_empty_queue_does_not_wait() -> None:
    queue: Queue[int] = Queue(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.receive()
    assert scope.cancelled_caught
    queue.send_nowait(2)  # queued: the cancelled receive left no waiter behind
    assert queue.receive_nowait() == 2


async def test_cancelling_a_wait_loses_nothing_and_frees_the_receiver() -> None:
    queue: Queue[int] = Queue(1)
    with trio.move_on_after(0.01) as scope:
        await queue.receive()
    assert scope.cancelled_caught
    queue.send_nowait(5)  # queued: nobody waits any more
    assert len(queue) == 1
    assert await queue.receive() == 5


async def test_a_second_receiver_is_refused() -> None:
    queue: Queue[int] = Queue(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await queue.receive()
        nursery.cancel_scope.cancel()


async def test_close_gives_what_is_queued_then_end_of_channel() -> None:
    queue: Queue[int] = Queue(2)
    queue.send_nowait(1)
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.send_nowait(2)
    assert await queue.receive() == 1
    with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
        await queue.receive()  # at once, not a wait
    queue.close_receiver()
    with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
        await queue.receive()


@pytest.mark.parametrize(
    ("close", "error"),
    [(Queue.close, trio.EndOfChannel), (Queue.close_receiver, trio.ClosedResourceError)],
)
async def test_closing_wakes_a_waiting_receiver(
    close: Callable[[Queue[int]], None], error: type[Exception]
) -> None:
    queue: Queue[int] = Queue(1)
    raised: list[BaseException] = []

    async def receiver() -> None:
        try:
            await queue.receive()
        except Exception as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        close(queue)
    assert [type(e) for e in raised] == [error]


async def test_a_waiting_subscriber_holds_few_new_objects() -> None:
    # Every object a waiting subscriber task allocates lives until the next
    # event; at 100,000 such tasks each one is 100,000 objects for the cyclic
    # collector per event (docs/deploying.md, Many subscriber tasks). Today:
    # the receive_batch coroutine, the abort method, and trio's four.
    topic = Broker().topic("t")
    n = 200

    async def subscriber(*, task_status: trio.TaskStatus[None]) -> None:
        async with topic.subscribe() as subscription:
            task_status.started()
            while await subscription.receive_batch():
                pass

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            await nursery.start(subscriber)
        await topic.publish(Event("warm-up"))
        await trio.testing.wait_all_tasks_blocked()
        gc.disable()
        try:
            gc.freeze()  # what exists now is not counted
            await topic.publish(Event("counted"))
            await trio.testing.wait_all_tasks_blocked()
            new = gc.get_objects(generation=0)
        finally:
            gc.unfreeze()
            gc.enable()
        per_subscriber = len(new) / n
        kinds = Counter(type(o).__name__ for o in new).most_common(8)
        assert per_subscriber <= 6.1, (per_subscriber, kinds)
        nursery.cancel_scope.cancel()
