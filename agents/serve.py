"""``stream-rec serve``: the read API. A shop's front end asks for a user's latest list over HTTP.

A serve process is a *replica* of the recommendations topic, not a worker: it reads every partition of the
topic outside any consumer group, copies each user's latest list into its own RocksDB folder, and answers
from there. Any number of replicas can run, none of them owns a user, and a worker's crash or a rebalance
never blocks a read: a replica answers with the last list it copied while the workers sort themselves out.
Routing each request to the worker that owns the user would save the copy, but would tie every read to the
group's assignment, which moves at every join, leave and crash (docs/serving.md says more).

``GET /users/{user_id}/recommendations[?n=K]``
    the user's latest list (:func:`answer`); for a user without one, the list for strangers.
``GET /healthz``
    200 while the process runs, with what it has copied so far.
``GET /readyz``
    200 once the copy has caught up with the end of the topic as it was at start; 503 before.

The copy: one RocksDB WriteBatch per fetched batch holds its lists (key: the message key, value: the
message bytes untouched; a tombstone deletes the key) and the next offset of each partition, so a crash
never leaves lists and offsets apart and a restart resumes where the copy ends.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.security import aiokafka_options, kafka_python_options
from agents.topics import ensure_topics
from agents.worker import DEFAULT_BOOTSTRAP
from stream_rec.heap import settle
from stream_rec.settings import Settings
from stream_rec.state import RocksStore, StateCorruptError, StateFormatError, Store, StoreLockedError, quarantine
from stream_rec.wire import STRANGER_KEY

log = logging.getLogger(__name__)

#: The store's per-user family holds each user's latest list, the bytes of its message as published.
LISTS = "users"
#: Meta keys: the topic the copy was made from (name and Kafka's id), and (``+ partition``) the next offset
#: to read there.
_TOPIC_KEY = b"serve.topic"
_OFFSET_KEY = b"serve.next_offset:"
#: Longest time the broker may hold a fetch when nothing is waiting: a broker that always holds it this long
#: (Tansu does) adds it to every list's way to the API.
FETCH_MAX_WAIT_MS = 10
_FETCH_TIMEOUT_MS = 200
_MAX_RECORDS = 10_000
_JSON = "application/json"


class ServeError(RuntimeError):
    """``stream-rec serve`` cannot start (its port is taken, its folder is in use): one line says why."""


class Record(Protocol):
    """What the copy needs of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Counts:
    """What the copy did with the records it read."""

    lists: int = 0  # lists stored
    deleted: int = 0  # tombstones applied
    no_key: int = 0  # records without a key: no user to store them under
    invalid: int = 0  # values that are not a list message: skipped, the user's previous list stays

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Status:
    """Where the copy stands, for ``/readyz`` and ``/healthz``."""

    ready: bool = False
    #: Records still to read, per partition, to reach the ends seen at start (while not ready).
    behind: dict[int, int] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)


# -- the copy -------------------------------------------------------------------------------------

class Materialiser:
    """Copies records of the recommendations topic into ``store``, with the offsets they end at."""

    def __init__(self, store: Store, counts: Counts | None = None) -> None:
        self.store = store
        self.counts = Counts() if counts is None else counts

    def next_offsets(self) -> dict[int, int]:
        """The next offset to read in each partition, as stored by the last :meth:`apply`; {} for a new copy."""
        return {int(key[len(_OFFSET_KEY):]): int(value) for key, value in self.store.items("meta")
                if key.startswith(_OFFSET_KEY)}

    def apply(self, records: Sequence[Record]) -> Counts:
        """Store ``records`` (in topic order within each partition) and their partitions' next offsets in
        one atomic write; returns what was done with them. A value that is not a list message is skipped
        and counted, and costs only itself: the rest of the batch is stored."""
        batch = Counts()
        rows: dict[bytes, bytes | None] = {}
        offsets: dict[bytes, bytes | None] = {}
        bad: list[Record] = []
        for record in records:
            offsets[_OFFSET_KEY + b"%d" % record.partition] = b"%d" % (record.offset + 1)
            if record.key is None:
                batch.no_key += 1
            elif record.value is None:
                rows[record.key] = None
                batch.deleted += 1
            elif is_list(record.value):
                rows[record.key] = record.value
                batch.lists += 1
            else:
                bad.append(record)
        self.store.write({LISTS: rows, "meta": offsets})
        batch.invalid = len(bad)
        if bad:
            log.warning("skipped %d value(s) that are not a recommendation list (first: partition %d offset %d)",
                        len(bad), bad[0].partition, bad[0].offset)
        self.counts.add(batch)
        return batch


def is_list(value: bytes) -> bool:
    """Whether ``value`` is a list message as the API needs it: a JSON object with ``items`` and ``generated_at``.

    >>> is_list(b'{"user_id": "u1", "items": [], "generated_at": 1}'), is_list(b'{"items": [}'), is_list(b'[]')
    (True, False, False)
    """
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return (isinstance(payload, dict) and isinstance(payload.get("items"), list)
            and isinstance(payload.get("generated_at"), int))


def open_copy(settings: Settings, topic: bytes) -> RocksStore:
    """The replica's folder (``settings.serve_path``), started anew when it was copied from another topic
    than ``topic`` (:func:`describe_topic`: a topic deleted and made again has a new id), is damaged or of
    another format: it is only a copy of the topic, read again from the start."""
    path = settings.serve_path
    try:
        store = RocksStore(path)
    except StoreLockedError:
        raise ServeError(f"{path} is in use by another process: is another `stream-rec serve` running on port "
                         f"{settings.serve_port}?") from None
    except (StateCorruptError, StateFormatError) as err:
        moved = quarantine(path)
        log.error("the copy in %s cannot be used (%s); moved it to %s, copying the topic anew", path, err, moved)
        store = RocksStore(path)
    found = store.get("meta", _TOPIC_KEY)
    if found is not None and found != topic:
        log.warning("the copy in %s was made from topic %s, not %s: copying the topic anew", path, found.decode(),
                    topic.decode())
        store = _start_anew(store)
    store.write({"meta": {_TOPIC_KEY: topic}})
    return store


def _start_anew(store: RocksStore) -> RocksStore:
    store.close()
    shutil.rmtree(store.path)
    return RocksStore(store.path)


# -- following the topic --------------------------------------------------------------------------

async def follow(settings: Settings, bootstrap: str, partitions: Sequence[int], materialiser: Materialiser,
                 status: Status) -> None:
    """Copy the recommendations topic into the store for ever, from the stored offsets (else from the
    beginning); set ``status.ready`` once the copy reaches the ends the partitions had when this started."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                client_id="stream-rec-serve", **aiokafka_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_recommendations, p) for p in partitions]
        consumer.assign(tps)
        stored = materialiser.next_offsets()
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        started = time.monotonic()
        while True:
            if not status.ready:
                await _check_caught_up(consumer, ends, status, started)
            fetched = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=_MAX_RECORDS)
            records = [record for batch in fetched.values() for record in batch]
            if records:
                materialiser.apply(records)
    finally:
        await consumer.stop()


async def _check_caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], status: Status,
                           started: float) -> None:
    status.behind = {tp.partition: max(0, end - await consumer.position(tp)) for tp, end in ends.items()}
    if not any(status.behind.values()):
        status.ready = True
        log.info("caught up with the topic in %.1f s: %s", time.monotonic() - started, status.counts)


def describe_topic(settings: Settings, bootstrap: str, topic: str) -> tuple[bytes, list[int]]:
    """``(what names the topic, its partition numbers)``: its name and the id Kafka gave it."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="stream-rec-serve-admin",
                             **kafka_python_options(settings))
    try:
        described = admin.describe_topics([topic])[0]
    finally:
        admin.close()
    if described.get("error_code"):
        raise ServeError(f"cannot describe topic {topic} (Kafka error code {described['error_code']})")
    identity = orjson.dumps({"topic": topic, "id": str(described.get("topic_id") or "")})
    return identity, sorted(int(p["partition_index"]) for p in described["partitions"])


# -- HTTP -----------------------------------------------------------------------------------------

def answer(stored: bytes | None, user_id: str, known: bool, n: int | None, now_ms: int) -> bytes:
    """The JSON body for ``user_id`` from the ``stored`` list (the user's own when ``known``, else the list
    for strangers; None when there is none yet either: no items, ``generated_at`` and ``age_ms`` null).

    >>> stored = b'{"user_id": "", "items": [{"item_id": "a"}, {"item_id": "b"}], "generated_at": 1000}'
    >>> body = orjson.loads(answer(stored, "u9", False, 1, 1250))
    >>> body["user_id"], body["items"], body["list_id"], body["age_ms"], body["known"]
    ('u9', [{'item_id': 'a'}], None, 250, False)
    """
    payload: dict[str, Any] = orjson.loads(stored) if stored is not None else {"items": []}
    items = payload["items"] if n is None else payload["items"][:n]
    generated = payload.get("generated_at")
    return orjson.dumps({"user_id": user_id, "items": items, "list_id": payload.get("list_id"),
                         "variant": payload.get("variant"), "generated_at": generated,
                         "age_ms": None if generated is None else now_ms - generated, "known": known})


def _limit(raw: str | None) -> int | None:
    """``?n=K``: a positive whole number, else a 400 that says so."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit() and int(raw) > 0:
        return int(raw)
    raise web.HTTPBadRequest(text=orjson.dumps({"error": f"n must be a positive integer, not {raw!r}"}).decode(),
                             content_type=_JSON)


def web_app(store: Store, status: Status) -> web.Application:
    """The HTTP side: answers from ``store`` (reads only), readiness from ``status``."""

    async def recommendations(request: web.Request) -> web.Response:
        """A user's latest list; the list for strangers (``known: false``) for a user without one; with no
        list for strangers yet either, no items and ``known: false``."""
        user_id = request.match_info["user_id"]
        n = _limit(request.query.get("n"))
        stored = store.get(LISTS, user_id.encode("utf-8", "surrogatepass"))
        known = stored is not None
        if not known:
            stored = store.get(LISTS, STRANGER_KEY)
        return web.Response(body=answer(stored, user_id, known, n, time.time_ns() // 1_000_000), content_type=_JSON)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "ready": status.ready, **vars(status.counts)},
                                 dumps=lambda o: orjson.dumps(o).decode())

    async def readyz(request: web.Request) -> web.Response:
        body = {"ready": status.ready, "behind": sum(status.behind.values()) if not status.ready else 0}
        return web.json_response(body, status=200 if status.ready else 503)

    app = web.Application()
    app.router.add_get("/users/{user_id}/recommendations", recommendations)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


# -- the process ----------------------------------------------------------------------------------

def run_serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean stop, 1 when the copy stops following the topic.

    Raises :class:`~agents.topics.BrokerUnreachable` when no broker answers at start and
    :class:`ServeError` when the port or the folder is taken.
    """
    bootstrap = settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    ensure_topics(settings, bootstrap)  # raises BrokerUnreachable in seconds, before anything is opened
    identity, partitions = describe_topic(settings, bootstrap, settings.topic_recommendations)
    store = open_copy(settings, identity)
    try:
        return asyncio.run(_serve(settings, bootstrap, partitions, store))
    finally:
        store.close()


async def _serve(settings: Settings, bootstrap: str, partitions: list[int], store: Store) -> int:
    status = Status()
    materialiser = Materialiser(store, status.counts)
    runner = web.AppRunner(web_app(store, status), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await _listen(runner, settings.serve_host, settings.serve_port)
        log.debug("%d start-up objects exempted from garbage collection", settle())  # as a worker does
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        log.info("serving on http://%s:%d from %s, a copy of %s", settings.serve_host, settings.serve_port,
                 settings.serve_path, settings.topic_recommendations)
        copying = asyncio.create_task(follow(settings, bootstrap, partitions, materialiser, status))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([copying, stopping], return_when=asyncio.FIRST_COMPLETED)
        if copying.done():
            log.error("stopped copying the topic: %r", copying.exception())
            return 1
        copying.cancel()
        await asyncio.gather(copying, return_exceptions=True)
        log.info("stopped: %s", status.counts)
        return 0
    finally:
        await runner.cleanup()


async def _listen(runner: web.AppRunner, host: str, port: int) -> None:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}; free the port or set "
                         "STREAM_REC_SERVE_PORT (--port)") from None
