"""Faust's aiokafka transport with a consumer loop that hands a message to its streams without a task.

Faust's consumer loop (``Consumer._drain_messages``) delivers every fetched message through
``wait_first(callback(message), suspend_flow.wait())``: four tasks and an ``asyncio.wait`` per message,
so that a rebalance (``suspend_flow``) can withdraw a delivery that is blocked, for instance on a full
stream buffer. Almost no delivery blocks: the conductor's callback checks flow control and the producer
buffer, decodes the message and puts it on each subscribed channel's queue without once suspending. That
per-message machinery was most of a do-nothing agent's time (``stream-rec bench``: ``noop_faust`` against
``noop_faust_stock``).

:class:`Consumer` runs the delivery's first step inline instead. A delivery that finishes in it, without
suspending, was never interruptible by anything: no other task could run while it did. One that does
suspend is handed, from exactly where it stopped, to the same ``wait_first`` race as in stock Faust, so a
rebalance still cancels it and the message is fetched again from the committed offset. Everything else
(read offsets, gap tracking for acks, commit every ``broker_commit_every`` acks, flow control, yielding to
the event loop every 100 messages) is as in Faust's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from mode import ServiceT

#: Messages delivered between two yields to the event loop (Faust's own figure): inline deliveries never
#: yield, so without this a large fetch would starve the streams it fills and every other task.
YIELD_EVERY = 100
#: The longest a delivery waits for its partition's stream buffer to drain (:meth:`Consumer.hold`).
HOLD_MAX_S = 1.0


class Resumed:
    """A coroutine that suspended in a step run by hand, awaitable again from where it stopped.

    ``pending`` is what the coroutine yielded when it suspended (the future it waits for, or ``None`` to
    yield once to the loop). The task that awaits this object waits for ``pending``, then sends to, throws
    into (a cancellation) or closes the coroutine, as if it had run it from the start.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: B036 - a cancellation is handed on like any other
                step, arg = coro.throw, exc
            else:
                step, arg = coro.send, sent
            try:
                pending = step(arg)
            except StopIteration as done:
                return done.value


class Consumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer; a message's delivery runs inline unless it suspends (see the module)."""

    #: Partitions whose stream buffer passed its high mark, each with the event its drop below the low mark
    #: sets (Faust's conductor reports both through :meth:`on_buffer_full` and :meth:`on_buffer_drop`).
    _held: dict[TP, asyncio.Event]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held = {}
        super().__init__(*args, **kwargs)

    def on_buffer_full(self, tp: TP) -> None:
        super().on_buffer_full(tp)
        if not self.app.in_recovery:  # Faust does not pause a partition in recovery either
            self._held.setdefault(tp, asyncio.Event())

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        if (drained := self._held.pop(tp, None)) is not None:
            drained.set()

    def resume_flow(self) -> None:
        # After a rebalance the buffers were cleared: no hold may outlive it waiting for a drop.
        for drained in self._held.values():
            drained.set()
        self._held.clear()
        super().resume_flow()

    async def hold(self, tp: TP) -> None:
        """Wait, if ``tp``'s stream buffer is above its high mark, until it drops below the low mark.

        Once a buffer is full every delivery to it blocks, and each freed slot would wake one: a blocked
        delivery per message, the slowest path there is. Waiting here once for the stream to work the buffer
        down lets the next few thousand deliveries run inline again. The wait ends early if the flow is
        suspended (a rebalance) and after :data:`HOLD_MAX_S` at most, in case a drop is never reported; the
        delivery that follows is then as safe as ever (:meth:`deliver`).
        """
        drained = self._held.get(tp)
        if drained is not None and not self.suspend_flow.is_set():
            await self.wait_first(drained.wait(), self.suspend_flow.wait(), timeout=HOLD_MAX_S)

    async def deliver(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Run ``delivery`` (the conductor's callback for one message) so that a rebalance can withdraw it.

        Inline while it does not suspend; from its first suspension on, raced against ``suspend_flow`` (and
        the consumer stopping or crashing) by ``wait_first``, which cancels it if the flow is suspended first.
        """
        if not self.suspend_flow.is_set():
            try:
                pending = delivery.send(None)
            except StopIteration:
                return
            delivery = Resumed(delivery, pending)  # type: ignore[assignment]
        await self.wait_first(delivery, self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - runs in every worker
        # The Fetcher service runs this until it or the consumer stops; a rebalance cancels it and the
        # fetcher restarts it (faust.transport.consumer.Fetcher).
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set  # type: ignore[attr-defined]
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany can return at once many times in a row
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    await self._on_fetched(tp, message)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Consumer shutting down for user cancel.")
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _on_fetched(self, tp: TP, message: Message) -> None:
        """One fetched message: skip it if already read, note an offset gap, commit when due, deliver it."""
        offset, last = message.offset, self._read_offset[tp]
        if last is not None and offset < last:
            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
            return
        if last and offset - last > 1 and self.app.topics.acks_enabled_for(message.topic):
            # Offsets that never arrive (compacted, transaction markers) must not hold commits back.
            await self._add_gap(tp, last + 1, offset)
        if tp in self._held:
            await self.hold(tp)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        await self.deliver(self.callback(message))
        self._read_offset[tp] = offset


class Transport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`; producer, topics and the rest unchanged."""

    Consumer = Consumer
