"""The worker's state in Kafka: user partitions restored from the changelog, each batch's rows and item
updates published, other workers' item updates applied.

::

   learn agent, per micro-batch                         every worker, outside the group
   -----------------------------                        -------------------------------
   restore the batch's user partitions not restored     follow_item_updates: read the item-updates
     yet (changelog from the cache's checkpoint)          topic (all partitions), apply other workers'
   service.apply                                          records every STREAM_REC_ITEM_SYNC_MS
   item updates -> topic_item_updates, flush  -------->   (own records are skipped: applied already)
   lists        -> topic_recommendations
   user rows, marks -> topic_user_state, flush
   local cache write (rows, checkpoints)
   (Faust acks the batch: its offsets may be committed)

Order matters: an event's item half is in Kafka before any user row that reflects the event, and both
before the consumer may commit the event; so whatever a crash cuts, the changelog, the item updates and
the committed offsets together say exactly what is applied (see :mod:`stream_rec.state.changelog`).

The formats live in the library (:mod:`stream_rec.state.changelog`, :mod:`stream_rec.state.item_updates`);
this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.security import aiokafka_options
from agents.topics import topic_ids
from stream_rec.metrics import Metrics
from stream_rec.service import BatchResult, RecService
from stream_rec.settings import Settings
from stream_rec.state.changelog import FENCE_KEY, MARKS_KEY, encode_marks, encode_user_row

log = logging.getLogger(__name__)

#: Records per fetch while restoring or catching up.
_FETCH_RECORDS = 20_000
#: Seconds between two writes of the item side to the local cache (:meth:`RecService.persist_items`).
ITEM_PERSIST_S = 5.0
#: Headers naming the process that wrote a marks record or a fence: readers of the changelog ignore them;
#: they let a log reader (``stream-rec chaos``) tell which worker process owned a partition when.
WORKER_HEADER = "stream_rec.worker"
PID_HEADER = "stream_rec.pid"


class KafkaState:
    """Restores, publishes and follows one worker's state (see the module docstring).

    ``lock`` serialises the two writers of the service, the learn agent and :meth:`follow_item_updates`:
    a batch holds it from learning to its local write, so the cache never mixes half of one with the other.
    """

    def __init__(self, app: Any, settings: Settings, bootstrap: str, service: RecService, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.bootstrap = bootstrap
        self.service = service
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self.restored: set[int] = set()
        self.items_ready = asyncio.Event()
        self._reader: AIOKafkaConsumer | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._generation = 0  # revocations so far: a restore that spans one does not count
        self.owned: set[int] = set()  # the user partitions this worker owns now
        #: the topics' ids were checked since the last assignment: a batch checks them first otherwise,
        #: so no event of a recreated topic is taken for one applied from the old
        self.verified = False
        self._writer = [(WORKER_HEADER, settings.worker_id.encode()), (PID_HEADER, str(os.getpid()).encode())]

    # -- user partitions ---------------------------------------------------------------------------

    async def restore(self, partitions: Iterable[int]) -> None:
        """Bring every one of ``partitions`` not restored since this worker got it up to date with the
        changelog: what other workers wrote since this worker's cache last saw it."""
        for part in sorted(set(partitions) - self.restored):
            generation = self._generation
            await self._restore(part)
            if generation == self._generation:  # not taken away meanwhile
                self.restored.add(part)

    def adopt_topic_ids(self, ids: dict[str, str]) -> list[str]:
        """Tell the service the topics' ids now (see :meth:`RecService.adopt_topic_ids`); returns the topics
        made anew since the state was built, after logging what that costs."""
        recreated = self.service.adopt_topic_ids(ids, changelog=self.settings.topic_user_state,
                                                 item_updates=self.settings.topic_item_updates)
        if recreated:
            log.warning("topics %s were deleted and made again since this worker's state was saved (a broker that "
                        "lost its data?): what was applied from them is forgotten, their events count anew%s",
                        ", ".join(sorted(recreated)),
                        "; this worker writes its users back to the new changelog" if self.service.reseed else "")
            if self.settings.topic_user_state in recreated:
                self.revoke(set(self.restored))  # restore (and so re-seed) each owned partition again
                self.restore_soon(self.owned)
        return recreated

    async def check_topics(self, *, locked: bool = False) -> list[str]:
        """Fetch the topics' ids and adopt them (after an assignment, and when the broker came back or a
        topic was missing); ``locked``: the caller holds :attr:`lock` already."""
        ids = await asyncio.get_running_loop().run_in_executor(None, topic_ids, self.settings, self.bootstrap)
        self.verified = True
        if locked:
            return self.adopt_topic_ids(ids)
        async with self.lock:
            return self.adopt_topic_ids(ids)

    def restore_soon(self, partitions: Iterable[int]) -> asyncio.Future[None] | None:
        """Restore newly assigned partitions in the background, so the worker holds its users' state (and
        counts them) before their next event; a batch that comes first waits for it (``lock``). A failure
        here is logged, and the batch's own restore raises it. Returns the restore's task, None when every
        partition is restored already."""
        parts = set(partitions) - self.restored

        async def run() -> None:
            try:
                async with self.lock:
                    await self.restore(parts)
                    self.metrics.state_events.set(self.service.events_total)
            except Exception:  # the learn agent retries, and fails loudly if it must
                log.exception("restoring partitions %s failed", sorted(parts))

        if not parts:
            return None
        self._tasks.add(task := asyncio.ensure_future(run()))
        task.add_done_callback(self._tasks.discard)
        return task

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions taken away: another worker may write them before this one gets them back."""
        self._generation += 1
        self.restored.difference_update(partitions)
        self.verified = False

    async def _restore(self, part: int) -> None:
        started = time.monotonic()
        reader = await self._changelog_reader()
        tp = TopicPartition(self.settings.topic_user_state, part)
        reader.assign([tp])
        start = self.service.checkpoints.get(part, 0)
        # Where the changelog ends now: the offset of a fence record this worker writes (it owns the
        # partition, so nothing else is written meanwhile; a broker's "latest offset" is not trusted:
        # Tansu 0.6 answers the last record batch's first offset + 1).
        end = await self._fence(self.settings.topic_user_state, part)
        if start > end:
            # The changelog holds less than this worker wrote to it: it was deleted and made again (a
            # broker that keeps everything in memory was restarted). This worker's cache is then the
            # only copy of the partition's users: they stay, and the new changelog starts from here.
            log.warning("the changelog %s[%d] ends at offset %d but this worker's state reflects it up to %d: "
                        "it was recreated; keeping the users this worker holds", tp.topic, part, end, start)
            start = end
        reader.seek(tp, start)
        records: list[tuple[bytes, bytes | None]] = []
        position = start
        while position < end:
            fetched = await reader.getmany(tp, timeout_ms=1000, max_records=_FETCH_RECORDS)
            for message in fetched.get(tp, []):
                position = message.offset + 1
                if message.offset < end and not message.key.startswith(FENCE_KEY):
                    records.append((message.key, message.value))
        result = self.service.restore(part, records, next_offset=end + 1)
        self.service.persist(result)
        if self.service.reseed and not any(not key.startswith(b"\x00") for key, _ in records):
            await self._reseed(part)
        self.metrics.restored_rows.inc(result.applied)
        seconds = time.monotonic() - started
        self.metrics.restore_seconds.observe(seconds)
        if records or start == 0:
            log.info("partition %d: restored %d users from %d changelog records (offsets %d-%d) in %.2fs", part,
                     result.applied, len(records), start, end, seconds)

    async def _reseed(self, part: int) -> None:
        """Write this worker's users of ``part`` to a changelog partition that was made anew and holds none:
        its copy is then the only one."""
        users = self.service.users_of(part, self.settings.partitions)
        rows = [(row.user_id.encode("utf-8", "surrogatepass"), encode_user_row(row))
                for row in self.service.export_users(users)]
        if not rows:
            return
        offsets = await self.publish_changelog(BatchResult(changelog={
            part: [*rows, (MARKS_KEY, encode_marks(self.service.marks_of(part)))]}))
        self.service.persist(BatchResult(changes={"meta": {}}), checkpoints=offsets)
        log.warning("partition %d: wrote %d users back to the changelog made anew", part, len(rows))

    async def _fence(self, topic: str, part: int) -> int:
        """Write a fence record to ``topic[part]``: its offset is where what was written before it ends."""
        value = orjson.dumps({"worker": self.settings.worker_id, "ms": int(time.time() * 1000)})
        await self.app.maybe_start_producer()
        future = await self.app.producer.send(topic, FENCE_KEY, value, part, None, self._writer)
        await self.app.producer.flush()
        return int((await future).offset)

    async def _changelog_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                            auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                                            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
                                            **aiokafka_options(self.settings))
            await self._reader.start()
        return self._reader

    # -- publishing a batch ------------------------------------------------------------------------

    async def publish_item_updates(self, result: BatchResult) -> None:
        """Send the batch's item updates and wait until Kafka has them (before any row that reflects them)."""
        if not result.item_updates:
            return
        producer = self.app.producer
        for part, messages in result.item_updates.items():
            for message in messages:
                await producer.send(self.settings.topic_item_updates, None, message, part, None, None)
        await producer.flush()

    async def publish_changelog(self, result: BatchResult) -> dict[int, int]:
        """Send the batch's user rows and marks records, flush (with everything sent before, e.g. the
        lists); returns per user partition the changelog offset after the batch's last record. Marks
        records carry headers naming the writing worker and its process (:data:`WORKER_HEADER`)."""
        producer = self.app.producer
        last: dict[int, Awaitable[Any]] = {}
        for part, records in result.changelog.items():
            for key, value in records:
                headers = self._writer if key == MARKS_KEY else None  # rows go bare: one per user and batch
                last[part] = await producer.send(self.settings.topic_user_state, key, value, part, None, headers)
        await producer.flush()
        return {part: (await future).offset + 1 for part, future in last.items()}

    # -- other workers' item updates ---------------------------------------------------------------

    async def follow_item_updates(self) -> None:
        """Apply every other worker's item updates, from where this worker's cache left off, forever;
        ``items_ready`` is set once the topic has been read to its end as it was at start-up."""
        topic = self.settings.topic_item_updates
        # A short fetch wait: the embedded broker holds every fetch for its whole wait (aiokafka's default
        # 500 ms made each restore of a partition take half a second, and each item update as late).
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                                    fetch_max_wait_ms=self.settings.fetch_max_wait_ms, **aiokafka_options(self.settings))
        await consumer.start()
        try:
            parts = await _partitions(consumer, topic)
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            # Caught up once past fences written now (a broker's "latest offset" is not trusted, see _restore).
            ends = {tp: await self._fence(topic, tp.partition) for tp in tps}
            for tp in tps:
                start = self.service.item_log.get(tp.partition, 0)
                if start > ends[tp]:
                    log.warning("the item updates %s[%d] end at %d but this worker applied them up to %d: the topic "
                                "was recreated; reading it from its start", topic, tp.partition, ends[tp], start)
                    start = 0
                consumer.seek(tp, start)
            behind = sum(max(0, end - self.service.item_log.get(tp.partition, 0)) for tp, end in ends.items())
            if behind > len(tps):
                log.info("applying the item updates published since this worker's state was saved (%d messages)", behind)
            started = last_persist = time.monotonic()
            pause = self.settings.item_sync_ms / 1000.0
            while True:
                fetched = await consumer.getmany(timeout_ms=self.settings.item_sync_ms, max_records=_FETCH_RECORDS)
                if any(fetched.values()):
                    await self._apply(fetched)
                if time.monotonic() - last_persist >= ITEM_PERSIST_S:
                    async with self.lock:
                        self.service.persist_items()
                    last_persist = time.monotonic()
                if not self.items_ready.is_set():
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if all(positions[tp] > end for tp, end in ends.items()):
                        self.items_ready.set()
                        if behind > len(tps):
                            log.info("item model caught up in %.1fs", time.monotonic() - started)
                    continue
                await asyncio.sleep(pause)
        finally:
            await consumer.stop()

    async def _apply(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        async with self.lock:
            messages, offsets = [], {}
            for tp, batch in fetched.items():
                messages.extend(m.value for m in batch if m.value and m.key is None)  # not fences
                offsets[tp.partition] = batch[-1].offset + 1
            result = self.service.apply_item_updates(messages)
            for n, error in result.rejected:
                # Internal bytes this version cannot read: skipped rather than stop learning, loudly.
                log.error("skipped an unreadable item update (message %d fetched up to %s): %s", n, offsets, error)
            self.service.note_item_log(offsets)
            self.metrics.item_updates.labels("applied").inc(result.applied)
            self.metrics.item_updates.labels("skipped").inc(result.duplicates)
            self.metrics.item_updates.labels("unreadable").inc(len(result.rejected))

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The partitions of ``topic`` once the client's metadata knows them."""
    deadline = time.monotonic() + timeout_s
    while True:
        if topic in await consumer.topics():  # fetches the cluster's metadata
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return sorted(parts)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions after {timeout_s:.0f} s (was it created?)")
        await asyncio.sleep(0.2)
