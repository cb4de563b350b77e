"""``stream-rec worker``: serve metrics and health, create topics, open the local state, run the Faust worker
until stopped."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import orjson

from agents import health, lifecycle
from agents.app import create_app
from agents.topics import ensure_topics, topic_ids
from stream_rec.heap import settle
from stream_rec.metrics import Metrics
from stream_rec.service import RecService, warm_up
from stream_rec.settings import Settings
from stream_rec.state import RocksStore, StateCorruptError, StateError, StateFormatError, quarantine
from stream_rec.state.changelog import ChangelogFormatError

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_IDENTITY = b"identity"


def worker_service(settings: Settings, store: RocksStore) -> RecService:
    """A worker's service: it records its item updates for the other workers (and for its own rebuild)."""
    return RecService(settings, store, record_items=True)


def run_worker(settings: Settings, service_factory: Callable[[Settings, RocksStore], RecService] = worker_service,
               *, kernels: Callable[[], object] = warm_up) -> int:
    """Run one worker until SIGTERM/SIGINT; the local state is loaded before the worker joins the group.

    Returns the exit code: 0 after a clean stop. A worker that cannot go on ends the process itself with
    one of the codes in :mod:`agents.lifecycle`. ``/readyz`` (:mod:`agents.health`) answers 200 once the
    kernels and the state are loaded, the item model caught up and the group's assignment restored.

    ``service_factory`` lets the benchmark put a stand-in behind the very same Faust side
    (:class:`agents.probes.StubService`), and ``kernels`` what loads the compiled kernels that one runs
    (none for the stand-in).
    """
    metrics = Metrics()
    readiness = health.Readiness()
    if settings.metrics_port:  # first: a worker that compiles kernels for minutes still answers /healthz
        health.serve(settings.metrics_host, settings.metrics_port, metrics.registry, readiness)
    bootstrap = settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    ensure_topics(settings, bootstrap)
    kernels()
    readiness.mark("kernels")
    store, service = open_state(settings, service_factory)
    readiness.mark("state")
    try:
        log.info("worker %s loaded state: %s", settings.worker_id, service.stats())
        metrics.state_events.set(service.events_total)
        app = create_app(settings, bootstrap, service, metrics, topic_ids(settings, bootstrap), readiness)
        worker = lifecycle.Worker(app, stop_timeout_s=settings.stop_timeout_s, loglevel=settings.log_level.upper(),
                                  override_logging=False)
        log.debug("%d start-up objects exempted from garbage collection", settle())
        code = lifecycle.run(worker)
        if code == 0:  # a clean stop: what changed since the follower last wrote it (agents.state); after a
            service.persist_items()  # failure, the item updates in Kafka bring it back at the next start
        return code
    finally:
        store.close()


def identity(settings: Settings) -> bytes:
    """What a state folder must have been written for: this group, its changelog and its partitions."""
    return orjson.dumps({"app_id": settings.app_id, "user_state": settings.topic_user_state,
                         "item_updates": settings.topic_item_updates, "partitions": settings.partitions})


def open_state(settings: Settings, service_factory: Callable[[Settings, RocksStore], RecService] = worker_service
               ) -> tuple[RocksStore, RecService]:
    """The local state and the service loaded from it. The folder is a cache of what Kafka holds: one that
    is damaged, of another format, or written for another group is moved aside (kept as evidence) and
    started anew, and the worker restores what it needs from Kafka; none is ever read as less than it holds.
    A folder another process holds open raises :class:`~stream_rec.state.StoreLockedError`."""
    path = settings.state_path
    for attempt in (1, 2):
        try:
            store = RocksStore(path)
        except (StateCorruptError, StateFormatError) as err:
            _set_aside(path, str(err))
            continue
        try:
            found = store.get("meta", _IDENTITY)
            if found is not None and found != identity(settings):
                raise StateFormatError(f"the state in {path} was written for another group or topics "
                                       f"({found.decode(errors='replace')})")
            service = service_factory(settings, store)
        except (StateCorruptError, StateFormatError, ChangelogFormatError) as err:
            reason = str(err)  # not the error itself: its traceback holds the failed scan (below)
        else:
            break
        # Closed once the error is gone: the failed scan's snapshot, held by the error's traceback, keeps the
        # database open, and RocksDB's lock on this path with it, so the fresh folder could not be opened
        # (measured: StoreLockedError at the second attempt, and the worker exited at every start). A
        # collection frees whatever reference cycle might still hold it.
        _close_damaged(store)
        del store
        gc.collect()
        _set_aside(path, reason)
    else:
        raise RuntimeError(f"cannot open a state in {path}")
    if store.fresh:
        log.warning("no local state in %s: this worker restores what it needs from Kafka (the user-state "
                    "changelog of each partition it gets, and every item update)", path)
    store.write({"meta": {_IDENTITY: identity(settings)}})
    return store, service


def _close_damaged(store: RocksStore) -> None:
    """Close a store that is about to be moved aside. A damaged folder can fail the close as well (opening it
    started a compaction that read the damaged block; measured by ``stream-rec chaos``): that changes nothing
    here, and must not stop the folder from being moved aside."""
    try:
        store.close()
    except StateError as err:
        log.warning("closing the damaged state failed as well: %s", err)


def _set_aside(path: object, reason: str) -> None:
    moved = quarantine(path)  # type: ignore[arg-type]
    log.error("the local state cannot be used: %s; moved it to %s, rebuilding it from Kafka", reason, moved)
