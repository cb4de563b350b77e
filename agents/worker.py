"""``stream-rec worker``: load state, create topics, serve metrics, run the Faust worker until stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import start_http_server

from agents import lifecycle
from agents.app import create_app
from agents.topics import ensure_topics
from stream_rec.heap import settle
from stream_rec.metrics import Metrics
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import RocksStore

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def run_worker(settings: Settings, service_factory: Callable[[Settings, RocksStore], RecService] = RecService) -> int:
    """Run one worker until SIGTERM/SIGINT; state is loaded before the worker joins the group.

    Returns the exit code: 0 after a clean stop. A worker that cannot go on ends the process itself with
    one of the codes in :mod:`agents.lifecycle`.

    ``service_factory`` lets the benchmark put a stand-in behind the very same Faust side
    (:class:`agents.probes.StubService`).
    """
    bootstrap = settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    ensure_topics(settings, bootstrap)
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
    store = RocksStore(settings.state_path)
    try:
        service = service_factory(settings, store)
        log.info("worker %s loaded state: %s", settings.worker_id, service.stats())
        metrics.state_events.set(service.events_total)
        app = create_app(settings, bootstrap, service, metrics)
        worker = lifecycle.Worker(app, stop_timeout_s=settings.stop_timeout_s, loglevel=settings.log_level.upper(),
                                  override_logging=False)
        log.debug("%d start-up objects exempted from garbage collection", settle())
        return lifecycle.run(worker)
    finally:
        store.close()
