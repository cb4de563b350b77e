"""Inline delivery (agents/transport.py): a message's delivery runs in the consumer loop unless it suspends,
and one that suspends is resumed, or withdrawn by a rebalance, exactly as Faust's own loop would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.transport import HOLD_MAX_S, Consumer, Resumed


class FakeConsumer:
    """What :meth:`Consumer.deliver` uses of a consumer: ``suspend_flow`` and mode's ``wait_first`` race."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self.raced = 0

    async def wait_first(self, *awaitables: Any) -> None:
        self.raced += 1
        tasks = [asyncio.ensure_future(a if not isinstance(a, asyncio.Event) else a.wait()) for a in awaitables]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()


def deliver(consumer: FakeConsumer, coro: Any) -> Any:
    return Consumer.deliver(consumer, coro)  # type: ignore[arg-type]


def test_a_delivery_that_never_suspends_runs_inline_without_a_race() -> None:
    seen: list[int] = []

    async def delivery() -> None:
        seen.append(1)

    async def main() -> None:
        consumer = FakeConsumer()
        await deliver(consumer, delivery())
        assert seen == [1] and consumer.raced == 0

    asyncio.run(main())


def test_a_delivery_that_suspends_is_resumed_where_it_stopped() -> None:
    steps: list[str] = []

    async def delivery(gate: asyncio.Future[int]) -> None:
        steps.append("before")
        steps.append(f"got {await gate}")
        await asyncio.sleep(0)  # a bare yield to the loop, after a future
        steps.append("after")

    async def main() -> None:
        consumer = FakeConsumer()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(deliver(consumer, delivery(gate)))
        await asyncio.sleep(0)
        assert steps == ["before"] and not task.done()
        gate.set_result(7)
        await task
        assert steps == ["before", "got 7", "after"] and consumer.raced == 1

    asyncio.run(main())


def test_a_suspended_delivery_is_cancelled_by_a_rebalance() -> None:
    cleaned: list[str] = []

    async def delivery() -> None:
        try:
            await asyncio.Event().wait()  # a full stream buffer that never drains
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    async def main() -> None:
        consumer = FakeConsumer()
        task = asyncio.ensure_future(deliver(consumer, delivery()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # Faust sets it when partitions are revoked
        await asyncio.wait_for(task, 1.0)
        assert cleaned == ["cancelled"]

    asyncio.run(main())


def test_an_error_in_a_delivery_reaches_the_consumer_loop() -> None:
    async def inline() -> None:
        raise ValueError("bad message")

    async def later() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad later")

    async def main() -> None:
        consumer = FakeConsumer()
        with pytest.raises(ValueError, match="bad message"):
            await deliver(consumer, inline())
        with pytest.raises(ValueError, match="bad later"):
            await deliver(consumer, later())

    asyncio.run(main())


def test_resumed_returns_the_coroutines_value() -> None:
    async def work(gate: asyncio.Future[int]) -> int:
        return await gate * 2

    async def main() -> None:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        coro = work(gate)
        pending = coro.send(None)
        assert pending is gate
        gate.set_result(21)
        assert await Resumed(coro, pending) == 42

    asyncio.run(main())


class FakeHolder(FakeConsumer):
    """Adds what :meth:`Consumer.hold` reads: the held partitions and mode's ``wait_first`` timeout."""

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, asyncio.Event] = {}

    async def wait_first(self, *awaitables: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        try:
            await asyncio.wait_for(super().wait_first(*awaitables), timeout)
        except asyncio.TimeoutError:
            pass


def test_hold_waits_for_a_full_buffer_to_drain_and_a_rebalance_ends_it() -> None:
    async def main() -> None:
        consumer = FakeHolder()
        await Consumer.hold(consumer, "tp-free")  # type: ignore[arg-type]  # not held: returns at once
        consumer._held["tp"] = drained = asyncio.Event()
        waiting = asyncio.ensure_future(Consumer.hold(consumer, "tp"))  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
        assert not waiting.done()
        drained.set()  # the conductor reported the buffer below its low mark
        await asyncio.wait_for(waiting, 1.0)

        consumer._held["tp"] = asyncio.Event()
        waiting = asyncio.ensure_future(Consumer.hold(consumer, "tp"))  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
        consumer.suspend_flow.set()  # a rebalance: stop holding, the delivery is withdrawn anyway
        await asyncio.wait_for(waiting, HOLD_MAX_S / 2)  # well before the hold's own time limit

    asyncio.run(main())
