"""Watch the broker from a worker: give up when none answers for too long, repair what a restarted one lost.

Faust's consumer and producer retry a missing broker forever, so a worker cut off from Kafka would stay up
applying nothing. :class:`BrokerWatch`, one task per worker, asks the broker for its topics every
:data:`CHECK_EVERY_S` seconds on its own connection, outside the consumer group:

- no answer for ``STREAM_REC_BROKER_UNREACHABLE_S`` (refused, or held: a paused broker accepts connections
  and never replies): the worker exits with :data:`agents.lifecycle.EXIT_BROKER_UNREACHABLE`;
- some of stream_rec's topics missing (a broker that kept its data in memory, or lost its disk, came back
  empty): they are created again (:func:`agents.topics.ensure_topics`), or the consumer never gets their
  partitions and commits to them fail for ever;
- after a broker came back, and on every assignment: applied-offset marks beyond the end of their source
  partition are dropped (:meth:`stream_rec.service.RecService.forget_positions`). A recreated topic numbers
  its messages from 0 again, so its new events would otherwise be skipped as already applied. A healthy
  partition's end is always past every mark taken from it, so the check never drops a valid mark; it
  cannot see a recreated topic that has already grown past the old mark before the worker looks.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.lifecycle import EXIT_BROKER_UNREACHABLE, fatal
from agents.topics import all_topics, ensure_topics
from stream_rec.service import RecService
from stream_rec.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two looks at the broker: one metadata request, negligible next to the consumer's own.
CHECK_EVERY_S = 2.0
#: Longest wait for one answer; a broker that takes longer counts as unreachable for that look.
ANSWER_WITHIN_S = 5.0


def lane_source(lane: str) -> TopicPartition:
    """The source partition of an applied-offset lane (``agents.app``: ``topic:partition`` read straight from
    the input, ``internal-partition>topic:partition`` when re-keyed through the internal topic)."""
    topic, _, partition = lane.rpartition(">")[2].rpartition(":")
    return TopicPartition(topic, int(partition))


class BrokerWatch:
    """The worker's view of its broker (see the module); :meth:`run` is the task."""

    def __init__(self, settings: Settings, bootstrap: str, service: RecService) -> None:
        self.settings, self.bootstrap, self.service = settings, bootstrap, service
        self._client: AIOKafkaConsumer | None = None
        self._last_answer = time.monotonic()
        self._lost = False  # the last look got no answer

    async def run(self) -> None:
        try:
            while True:
                await self.look()
                await asyncio.sleep(CHECK_EVERY_S)
        finally:
            if self._client is not None:
                await self._client.stop()

    async def look(self) -> None:
        """Ask for the topics once; exit if the broker has been silent too long, repair if it came back."""
        try:
            topics = await asyncio.wait_for(self._topics(), ANSWER_WITHIN_S)
        except (KafkaError, OSError, asyncio.TimeoutError) as err:
            self._no_answer(err)
            return
        came_back, self._lost, self._last_answer = self._lost, False, time.monotonic()
        missing = [topic for topic in all_topics(self.settings) if topic not in topics]
        if missing:
            log.warning("topics %s are missing (a broker that lost its data?); creating them again", ", ".join(missing))
            await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings, self.bootstrap)
        if came_back or missing:
            log.info("the broker answers again at %s", self.bootstrap)
            await self.forget_stale_marks()

    def _no_answer(self, err: BaseException) -> None:
        silent = time.monotonic() - self._last_answer
        if not self._lost:
            log.warning("the broker at %s does not answer (%s)", self.bootstrap, type(err).__name__)
            self._lost = True
        if silent > self.settings.broker_unreachable_s:
            fatal(EXIT_BROKER_UNREACHABLE, f"no broker answered at {self.bootstrap} for {silent:.0f} s "
                  f"(STREAM_REC_BROKER_UNREACHABLE_S={self.settings.broker_unreachable_s:g})")

    async def _topics(self) -> set[str]:
        if self._client is None:
            client = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                      request_timeout_ms=int(ANSWER_WITHIN_S * 1000))
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            self._client = client
        return set(await self._client.topics())

    async def forget_stale_marks(self) -> list[str]:
        """Drop the marks that lie at or past the end of their source partition; returns their lanes."""
        marks = dict(self.service.hwm)
        if not marks or self._client is None:
            return []
        sources = {lane: lane_source(lane) for lane in marks}
        try:
            ends = await asyncio.wait_for(self._client.end_offsets(sorted(set(sources.values()))), ANSWER_WITHIN_S)
        except (KafkaError, OSError, asyncio.TimeoutError) as err:
            log.warning("could not read the input partitions' end offsets (%s); marks not checked", type(err).__name__)
            return []
        stale = [lane for lane, tp in sources.items() if tp in ends and ends[tp] <= marks[lane]]
        if stale:
            log.warning("%d applied-offset marks lie past the end of their partitions (recreated topics?); dropping "
                        "them so new events there are applied: %s", len(stale), ", ".join(sorted(stale)))
            self.service.forget_positions(stale)
        return stale
