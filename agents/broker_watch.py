"""Watch the broker from a worker: give up when none answers for too long, repair what a restarted one lost.

Faust's consumer and producer retry a missing broker forever, so a worker cut off from Kafka would stay up
applying nothing. :class:`BrokerWatch`, one task per worker, asks the broker for its topics every
:data:`CHECK_EVERY_S` seconds on its own connection, outside the consumer group:

- no answer for ``STREAM_REC_BROKER_UNREACHABLE_S`` (refused, or held: a paused broker accepts connections
  and never replies): the worker exits with :data:`agents.lifecycle.EXIT_BROKER_UNREACHABLE`;
- some of stream_rec's topics missing (a broker that kept its data in memory, or lost its disk, came back
  empty): they are created again (:func:`agents.topics.ensure_topics`), or the consumer never gets their
  partitions and commits to them fail for ever;
- after a broker came back or a topic was missing: the topics' ids are compared with those the state was
  built from (:meth:`agents.state.KafkaState.check_topics`). A recreated topic numbers its messages from 0
  again under a new id, so the marks taken from the old one are dropped (its new events would otherwise
  be skipped as already applied), and a recreated changelog is filled again from this worker's state.
"""

from __future__ import annotations

import asyncio
import logging
import time

from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from agents.lifecycle import EXIT_BROKER_UNREACHABLE, fatal
from agents.security import aiokafka_options
from agents.topics import all_topics, ensure_topics
from stream_rec.settings import Settings

if TYPE_CHECKING:
    from agents.state import KafkaState

log = logging.getLogger(__name__)

#: Seconds between two looks at the broker: one metadata request, negligible next to the consumer's own.
CHECK_EVERY_S = 2.0
#: Longest wait for one answer; a broker that takes longer counts as unreachable for that look.
ANSWER_WITHIN_S = 5.0


class BrokerWatch:
    """The worker's view of its broker (see the module); :meth:`run` is the task."""

    def __init__(self, settings: Settings, bootstrap: str, state: KafkaState) -> None:
        self.settings, self.bootstrap, self.state = settings, bootstrap, state
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
            await self.state.check_topics()

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
                                      request_timeout_ms=int(ANSWER_WITHIN_S * 1000), **aiokafka_options(self.settings))
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            self._client = client
        return set(await self._client.topics())
