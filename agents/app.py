"""The Faust app: ``create_app(settings)`` builds it, the agents are a few lines each.

How events reach the service depends on ``STREAM_REC_INPUT_KEYS``.

``any`` (default; producers key any way or not at all): two agents, one consumer group.

``ingest``  (the three input topics)
    decode and validate a micro-batch; dead-letter the bad messages untouched; forward the valid ones to
    the internal topic keyed by user id, so each user's events meet in one partition, owned by one worker.
``learn``   (the internal user-keyed topic)
    hand a micro-batch to :class:`stream_rec.service.RecService`, publish its item updates, one refreshed
    list per touched user and its users' rows (:mod:`agents.state`), flush, then write the local cache.

``user_id`` (producers key every message by its user id): one agent, ``learn_direct``, on the three input
topics does both jobs: decode, dead-letter, apply, publish, persist. No internal topic: each event passes
through Faust once instead of twice and is never re-sent.

In both modes the task ``follow_availability`` reads the whole items topic outside the consumer group
(every worker needs every withdrawn item) and hands the messages to the service; lists computed after a
withdrawal leave the item out; and ``follow_item_updates`` applies what the other workers learned about
items. Before a batch's events of a user partition are applied, the partition is restored from the
user-state changelog if this worker has not held it since (:class:`agents.state.KafkaState`).

Every agent, task and rebalance callback is wrapped by :func:`agents.lifecycle.guarded`: an exception
escaping one ends the worker with a non-zero code (Faust would restart the agent or leave it dead). The task
:class:`agents.broker_watch.BrokerWatch` ends it when no broker answers, and repairs what a broker that lost
its data lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.types import TP, EventT

from agents.broker_watch import BrokerWatch
from agents.group import BalancedAssignor
from agents.health import Readiness
from agents.lifecycle import exit_on_crash, guarded, state_write
from agents.security import aiokafka_options, faust_credentials
from agents.state import KafkaState
from agents.transport import Transport
from stream_rec.events import (Availability, Event, Forget, Impression, InvalidEvent, Limits, decode,
                               decode_availability, decode_forget, decode_impression, internal_error)
from stream_rec.heap import collections_paused
from stream_rec.metrics import Metrics
from stream_rec.service import BatchResult, Position, RecService
from stream_rec.settings import Settings
from stream_rec.wire import (MAX_DEAD_LETTER_BYTES, STRANGER_KEY, dead_letter, dead_letter_headers, decode_keyed,
                            encode_keyed, encode_recommendation)

log = logging.getLogger(__name__)
_MISKEYED = "\0miskeyed"  # a counts label that no event type or reason can take
FORGET = "forget"  # the stream name of the forget topic (no event type is called so)
IMPRESSIONS = "impressions"  # the stream name of the impressions topic
#: Seconds between two publications of the list for strangers (:data:`~stream_rec.wire.STRANGER_KEY`) by one
#: worker, the first right after its first batch: popularity moves slowly, and each costs a ranking.
STRANGER_EVERY_S = 5.0


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def faust_app(settings: Settings, bootstrap: str, app_id: str | None = None) -> faust.App:
    """A Faust app with stream_rec's consumer, producer and stream settings, and no agents yet.

    The worker and the benchmark's do-nothing agent (:mod:`agents.probes`) share it, so the bench compares
    like with like.
    """
    app = faust.App(
        app_id or settings.app_id,
        broker=broker_urls(bootstrap),
        broker_credentials=faust_credentials(settings),
        datadir=str(settings.worker_dir / "faust"),
        store="memory://",  # stream_rec keeps its own RocksDB state; Faust tables are not used
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        # Faust's assignor, balanced: every worker gets partitions when there are enough (agents/group.py).
        table_standby_replicas=1,
        PartitionAssignor=BalancedAssignor,
        broker_commit_every=settings.batch_max,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_max, 4096),
        broker_max_poll_records=settings.batch_max,
        producer_linger_ms=5,
    )
    if settings.inline_delivery:
        # Before anything asks for the transport (app.topic does): the conductor and consumer come from it.
        app.transport = Transport(app.conf.broker_consumer, app)

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    @guarded
    async def shorten_fetch_wait(sender: faust.App, assigned: set, **_: object) -> None:
        _set_fetch_max_wait(app, settings.fetch_max_wait_ms)

    return app


def _set_fetch_max_wait(app: faust.App, wait_ms: int) -> None:
    """Faust hands aiokafka ``fetch_max_wait_ms=1500`` and has no setting for it; set the fetcher's own.

    Apache Kafka answers a fetch as soon as one byte is there, so the wait only paces idle polling. A
    broker that holds every fetch for the whole wait (Tansu 0.6 does: ~half the wait on average, measured
    by ``stream-rec bench``) adds it to every event's freshness, once per hop.
    """
    fetcher = getattr(getattr(getattr(app.consumer, "_thread", None), "_consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        log.warning("cannot set the consumer's fetch_max_wait_ms (Faust/aiokafka internals changed); it stays at Faust's")
        return
    fetcher._fetch_max_wait_ms = wait_ms


RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def create_app(settings: Settings, bootstrap: str, service: RecService, metrics: Metrics,
               topic_ids: dict[str, str] | None = None, readiness: Readiness | None = None) -> faust.App:
    """The worker app for ``settings`` against ``bootstrap``, learning into ``service``; ``topic_ids`` are
    the topics' ids now (:func:`agents.topics.topic_ids`), checked against those the state was built from.
    ``readiness`` is told when the item model has caught up and when the assignment is restored."""
    app = faust_app(settings, bootstrap)
    readiness = readiness or Readiness()
    # Forget requests and impressions are keyed by user id like events, and meet a user's events in its partition.
    topic_stream = ({topic: stream for stream, topic in settings.input_topics().items()}
                    | {settings.topic_forget: FORGET, settings.topic_impressions: IMPRESSIONS})
    inputs = app.topic(*topic_stream, **RAW)
    keyed = app.topic(settings.topic_events, internal=True, partitions=settings.partitions, **RAW)

    async def send(topic: str, key: bytes | None, value: bytes, *, headers: list | None = None,
                   timestamp: float | None = None) -> None:
        # Faust's producer directly: Topic.send adds per-message bookkeeping we do not use. The key
        # is partitioned by the same murmur2 partitioner either way.
        await app.producer.send(topic, key, value, partition=None, timestamp=timestamp, headers=headers)

    limits = Limits(max_bytes=settings.max_message_bytes, max_future_ms=settings.max_future_ms)
    within = settings.batch_wait_ms / 1000.0

    # A dead-letter copy must fit the producer's request limit and a broker's default message limit.
    dead_letter_max = min(app.conf.producer_max_request_size, MAX_DEAD_LETTER_BYTES)

    async def send_dead_letter(msg: Any, err: InvalidEvent) -> None:
        """``msg`` (Faust's message or aiokafka's record) untouched, or cut to fit and saying so, to the dead letters."""
        if err.reason == "internal":
            log.error("dead-lettering %s[%s]@%s after an unforeseen failure: %s", msg.topic, msg.partition, msg.offset, err)
        headers = dead_letter_headers(err.reason, str(err), msg.topic, msg.partition, msg.offset)
        key, value, headers = dead_letter(msg.key, msg.value, headers, max_bytes=dead_letter_max)
        try:
            await send(settings.topic_dead_letter, key, value, headers=headers)
        except Exception:  # losing this bad message's copy costs less than crashing the agent with its batch
            log.exception("could not dead-letter %s[%s]@%s (%s)", msg.topic, msg.partition, msg.offset, err.reason)

    async def check(event: EventT, now_ms: int, counts: Counter[tuple[bool, str]]) -> Event | Forget | Impression | None:
        """The message's event (forget request, impression), or None after dead-lettering it; counts (valid, type
        or reason).

        Whatever fails on one message, decoding it or encoding its user id as the key it is routed by,
        dead-letters that message alone: an exception here would restart the agent and cost its batch.
        """
        msg = event.message
        stream = topic_stream[msg.topic]
        try:
            if stream == FORGET:
                valid = decode_forget(msg.key)
            elif stream == IMPRESSIONS:
                valid = decode_impression(msg.value, limits=limits)
            else:
                valid = decode(msg.value, stream, now_ms=now_ms, limits=limits)
            valid.user_id.encode()
        except Exception as exc:  # decode raises InvalidEvent; anything else is a bug, still this message's alone
            err = exc if isinstance(exc, InvalidEvent) else internal_error(exc)
            await send_dead_letter(msg, err)
            counts[False, err.reason] += 1
            return None
        counts[True, _STREAM_OF.get(valid.__class__) or valid.type] += 1
        return valid

    state = KafkaState(app, settings, bootstrap, service, metrics)
    outcomes = OutcomeCounters(service)
    if topic_ids:
        state.adopt_topic_ids(topic_ids)

    stranger = _StrangerList()

    async def learn_batch(items: list[tuple[Position, Event | Forget]], sources: list[EventT], batch: Sequence[EventT],
                          started: float) -> None:
        """Learn ``items`` (from the messages ``sources``) and publish what they changed (agents.state).

        A forget request (rare) cuts the batch: the events before it are learned and published, then the
        user is erased, then the events after it are learned, so each sees the state it came after."""
        if not state.items_ready.is_set():
            await state.items_ready.wait()  # rank from the shared item model, not from a cold one
        async with state.lock:
            if not state.verified:  # the first batch since an assignment: were topics made anew meanwhile?
                await state.check_topics(locked=True)
            await state.restore({service.partition_of(position[0]) for position, _ in items})
            note_restored()  # for readiness, when the restore started by the assignment failed and this one did it
            for start, end in _runs(items):
                kind = items[start][1].__class__ if end > start else Event
                if kind is Forget:
                    position, request = items[start]
                    result = service.forget(position, request)  # type: ignore[arg-type]
                    metrics.forgotten.inc(len(result.forgotten))
                    await publish(result, sources[start:end], [])
                elif kind is Impression:
                    result = service.note_impressions(items[start:end])  # type: ignore[arg-type]
                    await publish(result, sources[start:end], [])
                else:
                    with collections_paused():
                        # Synchronous, and nothing built here outlives the block but the encoded lists: no
                        # collection needs to run in it, nor owes one after it (stream_rec.heap).
                        result = service.apply(items[start:end])  # type: ignore[arg-type]
                        lists = [(payload["user_id"].encode(), encode_recommendation(payload))
                                 for payload in result.recommendations]
                        result.recommendations.clear()
                    await publish(result, sources[start:end], lists)
                    _observe(metrics, result, len(lists), batch, started)
            stranger.stale = True
            if time.monotonic() >= stranger.due:
                await publish_stranger_list()
            outcomes.export(metrics)
        metrics.state_events.set(service.events_total)

    async def publish_stranger_list() -> None:
        """The list for users not seen yet, under the empty key (under ``state.lock``)."""
        stranger.due, stranger.stale = time.monotonic() + STRANGER_EVERY_S, False
        await send(settings.topic_recommendations, STRANGER_KEY, encode_recommendation(service.stranger_list()))

    @app.task
    @guarded
    async def refresh_stranger_list() -> None:
        """A burst of events leaves the list sent with its first batch behind: once the period is over, the
        list for strangers is sent again if anything was learned since, whether more batches came or not."""
        while True:
            await asyncio.sleep(STRANGER_EVERY_S / 2)
            if stranger.stale and time.monotonic() >= stranger.due:
                async with state.lock:
                    await publish_stranger_list()

    async def publish(result: BatchResult, sources: list[EventT], lists: list[tuple[bytes, bytes]]) -> None:
        """Send what one run of a batch changed, then write the local cache (under ``state.lock``)."""
        await state.publish_item_updates(result)
        for key, value in lists:
            await send(settings.topic_recommendations, key, value)
        for user_id in result.forgotten:  # the compacted topic then drops the user's lists
            await send(settings.topic_recommendations, user_id.encode(), None)  # type: ignore[arg-type]
        for n, error in result.rejected:
            await send_dead_letter(sources[n].message, InvalidEvent("learn_failed", error))
            metrics.dead_letters.labels("learn_failed").inc()
        # Lists, dead letters and rows go out before the local cache is written and the batch acked: a
        # crash in between re-applies what the changelog does not hold and re-sends the lists
        # (at-least-once output), never loses them.
        checkpoints = await state.publish_changelog(result)
        with state_write():  # a failure here ends the worker (agents.lifecycle)
            service.persist(result, checkpoints)

    if settings.input_keys == "user_id":
        # Producers key by user id, so a user's events already share one partition number on all three
        # topics, and Faust's assignor gives a worker the same partition numbers of topics that one agent
        # reads (co-partitioning): apply straight from the input, no second hop. The lanes are the source
        # topic-partitions.
        @app.agent(inputs)
        @guarded
        async def learn_direct(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_max, within):
                started = time.perf_counter()
                now_ms = int(time.time() * 1000)
                counts: Counter[tuple[bool, str]] = Counter()
                items, sources = [], []
                for event in batch:
                    valid = await check(event, now_ms, counts)
                    if valid is not None:
                        msg = event.message
                        # The lane names the user partition first (that of the changelog the user's row goes to).
                        items.append(((f"{msg.partition}>{msg.topic}:{msg.partition}", msg.offset), valid))
                        sources.append(event)
                        if msg.key != valid.user_id.encode():
                            counts[True, _MISKEYED] += 1
                await learn_batch(items, sources, batch, started)
                _count(metrics, counts)
                _note_lag(app, metrics, batch)
    else:
        @app.agent(inputs)
        @guarded
        async def ingest(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_max, within):
                now_ms = int(time.time() * 1000)
                counts: Counter[tuple[bool, str]] = Counter()
                for event in batch:
                    if (valid := await check(event, now_ms, counts)) is not None:
                        msg = event.message
                        # The shop's produce time travels with the event, so freshness is measured from it.
                        await send(settings.topic_events, valid.user_id.encode(),
                                   encode_keyed(valid, msg.topic, msg.partition, msg.offset), timestamp=msg.timestamp)
                await app.producer.flush()  # forwarded before the batch is acked
                _count(metrics, counts)
                _note_lag(app, metrics, batch)

        @app.agent(keyed)
        @guarded
        async def learn(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_max, within):
                started = time.perf_counter()
                items = []
                for event in batch:
                    valid, lane, offset = decode_keyed(event.message.value)
                    items.append(((f"{event.message.partition}>{lane}", offset), valid))
                await learn_batch(items, list(batch), batch, started)
                _note_lag(app, metrics, batch)

    @app.task
    @guarded
    async def follow_availability() -> None:
        """Every worker reads the whole items topic, outside the consumer group: any user may be shown
        any item, so every worker must know every withdrawn one. The topic is read from its start at each
        start-up (its latest message per item wins), so nothing about it needs persisting."""
        consumer = AIOKafkaConsumer(settings.topic_items, bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **aiokafka_options(settings))
        await consumer.start()
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
                updates: list[Availability] = []
                for messages in fetched.values():
                    for msg in messages:
                        try:
                            updates.append(decode_availability(msg.value, key=msg.key, limits=limits))
                        except Exception as exc:  # as in check()
                            err = exc if isinstance(exc, InvalidEvent) else internal_error(exc)
                            await send_dead_letter(msg, err)
                            metrics.dead_letters.labels(err.reason).inc()
                if updates:
                    service.set_availability(updates)
                    metrics.availability.inc(len(updates))
                    metrics.unavailable.set(len(service.unavailable))
        finally:
            await consumer.stop()

    @app.task
    @guarded
    async def follow_item_updates() -> None:
        """Every worker applies what the others learned about items (agents.state)."""
        await state.follow_item_updates()

    @app.task
    @guarded
    async def note_item_model_ready() -> None:
        await state.items_ready.wait()
        readiness.mark("item_model")

    def note_restored() -> None:
        """After an assignment: ready once every partition of it is restored (none at all for a standby)."""
        if state.owned <= state.restored:
            readiness.mark("partitions")

    watch = BrokerWatch(settings, bootstrap, state)
    app.task(guarded(watch.run))
    app.task(guarded(exit_on_crash))

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    @guarded
    async def on_revoked(sender: faust.App, revoked: set, **_: object) -> None:
        metrics.assigned_partitions.set(0)  # a rebalance revokes everything before it assigns anew
        for tp in revoked:  # another worker reports these now (removing a series never made is a no-op)
            metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        # Called once the batch in hand is done (Faust waits for the streams to drain): another worker
        # may own these next, so each is restored again from the changelog before this one applies to it.
        user_topics = set(topic_stream) if settings.input_keys == "user_id" else {settings.topic_events}
        state.revoke({tp.partition for tp in revoked if tp.topic in user_topics})

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    @guarded  # Faust would only mark the app crashed and go on without streams
    async def on_assigned(sender: faust.App, assigned: set, **_: object) -> None:
        user_topics = set(topic_stream) if settings.input_keys == "user_id" else {settings.topic_events}
        owned = sorted({tp.partition for tp in assigned if tp.topic in user_topics})
        metrics.assigned_partitions.set(len(owned))
        state.owned = set(owned)
        restoring = state.restore_soon(owned)
        if restoring is None:
            note_restored()
        else:
            restoring.add_done_callback(lambda _: note_restored())
        log.info("worker %s owns partitions %s of %s", settings.worker_id, owned, ", ".join(sorted(user_topics)))

    return app


class _StrangerList:
    """When the list for strangers is next due (time.monotonic()), and whether anything was learned since
    it was last sent."""

    due: float = 0.0
    stale: bool = False


def _runs(items: Sequence[tuple[Position, Event | Forget | Impression]]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of events, each run of impressions and each forget request alone, in
    batch order: a forget request cuts the batch so each event sees the state it came after.

    >>> e, f, i = Event("u", "i", "view", 1), Forget("u"), Impression("u", "l", ("i",))
    >>> _runs([(("l", 0), e), (("l", 1), e), (("l", 2), f), (("l", 3), i), (("l", 4), i), (("l", 5), e)])
    [(0, 2), (2, 3), (3, 5), (5, 6)]
    """
    runs: list[tuple[int, int]] = []
    start = 0
    for n in range(1, len(items) + 1):
        if n == len(items) or items[n][1].__class__ is not items[start][1].__class__ or items[start][1].__class__ is Forget:
            runs.append((start, n))
            start = n
    return runs or [(0, 0)]


#: The counts label of what is not an event.
_STREAM_OF = {Forget: FORGET, Impression: IMPRESSIONS}


class OutcomeCounters:
    """Prometheus counters of what became of the lists (:attr:`stream_rec.service.RecService.outcomes`):
    each export adds what the service counted since the last one."""

    def __init__(self, service: RecService) -> None:
        self.service = service
        self.sent: Counter[tuple[str, str, str, str]] = Counter()

    def export(self, metrics: Metrics) -> None:
        figures = self.service.outcomes.figures
        for key, n in figures.items():
            delta = n - self.sent[key]
            if delta <= 0:
                continue
            self.sent[key] = n
            variant, kind, source, etype = key
            if kind == "measured":
                metrics.variant_measured.labels(variant).inc(delta)
            elif kind == "hits":
                metrics.variant_hits.labels(variant).inc(delta)
            elif kind == "impressions":
                metrics.impressions.labels(variant).inc(delta)
            elif kind == "shown":
                metrics.shown_items.labels(variant, source).inc(delta)
            elif kind == "acted":
                metrics.acted.labels(variant, source or "any", etype).inc(delta)
            elif kind == "unmatched":
                metrics.unmatched.labels(etype).inc(delta)


def _count(metrics: Metrics, counts: Counter[tuple[bool, str]]) -> None:
    for (valid, label), n in counts.items():  # one metric update per label, not per event
        if label == _MISKEYED:
            metrics.miskeyed.inc(n)
        elif label in (FORGET, IMPRESSIONS):
            continue  # counted once applied, by the worker that owns the user
        else:
            (metrics.events_in if valid else metrics.dead_letters).labels(label).inc(n)


def _note_lag(app: faust.App, metrics: Metrics, batch: Sequence[EventT]) -> None:
    """Each partition of ``batch``: its end offset as the consumer's last fetch saw it, minus the offset after
    the batch's last message of it. One sync read per partition (aiokafka keeps the end offset of each fetch)."""
    last: dict[tuple[str, int], int] = {}
    for event in batch:
        msg = event.message
        last[msg.topic, msg.partition] = msg.offset
    for (topic, partition), offset in last.items():
        try:
            end = app.consumer.highwater(TP(topic, partition))
        except Exception:  # taken away meanwhile (aiokafka asserts it is assigned): the next owner reports it
            continue
        if end is not None:
            metrics.consumer_lag.labels(topic, str(partition)).set(max(0, end - offset - 1))


def _observe(metrics: Metrics, result: BatchResult, published: int, batch: Sequence[EventT], started: float) -> None:
    metrics.applied.inc(result.applied)
    metrics.duplicates.inc(result.duplicates)
    metrics.recommendations.inc(published)
    metrics.batch_seconds.observe(time.perf_counter() - started)
    if published and batch[0].message.timestamp:
        # The batch's oldest event: the freshness its user saw is the worst in the batch.
        metrics.freshness_seconds.observe(max(0.0, time.time() - batch[0].message.timestamp))
