"""Stand-ins the benchmark runs in worker processes, to split Faust's cost from the models' cost.

``python -m agents.probes noop``
    a do-nothing agent on the input topics, with the worker's Faust settings: it takes micro-batches
    exactly as the worker does and only counts them. Faust's own ceiling.
``python -m agents.probes stub``
    the real worker (ingest, dead letters, sends, flushes) with :class:`StubService` instead of
    :class:`~stream_rec.service.RecService`: the Faust side at full cost, the learning at none.

Both read their settings from ``STREAM_REC_*`` like ``stream-rec worker`` and export the worker's
metrics (events counted in ``stream_rec_learn_events_applied_total`` and ``stream_rec_state_events``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import faust

from agents import health, lifecycle
from agents.app import RAW, faust_app
from agents.topics import ensure_topics
from agents.worker import DEFAULT_BOOTSTRAP, run_worker
from stream_rec.events import Event
from stream_rec.logsetup import setup_logging
from stream_rec.metrics import Metrics
from stream_rec.outcomes import Outcomes
from stream_rec.recommendations import stranger_message
from stream_rec.service import BatchResult, Position, lane_partition
from stream_rec.settings import Settings
from stream_rec.state.store import Store


class StubService:
    """``RecService``'s public surface at almost no cost: counts events, returns one tiny list per user,
    keeps no state (so nothing to restore, publish or follow)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.events_total = 0
        self.outcomes = Outcomes(["default"])  # counts nothing: no list is remembered
        self.hwm: dict[str, int] = {}
        self.checkpoints: dict[int, int] = {}
        self.item_log: dict[int, int] = {}

    def partition_of(self, lane: str) -> int:
        return lane_partition(lane)

    def restore(self, partition: int, records: Any, next_offset: int | None = None) -> BatchResult:
        return BatchResult()

    def marks_of(self, partition: int) -> dict[str, int]:
        return {}

    def forget_positions(self, lanes: Sequence[str]) -> list[str]:
        return []

    reseed = False

    def adopt_topic_ids(self, ids: Any, **_: Any) -> list[str]:
        return []

    def users_of(self, partition: int, partitions: int) -> list[int]:
        return []

    def apply_item_updates(self, messages: Any) -> BatchResult:
        return BatchResult()

    def apply(self, batch: Sequence[tuple[Position, Event]]) -> BatchResult:
        last: dict[str, Event] = {}
        for _, event in batch:
            last[event.user_id] = event
        self.events_total += len(batch)
        now_ms = int(time.time() * 1000)
        lists: list[dict[str, Any]] = [
            {"v": 1, "user_id": user, "items": [], "model_version": "stub",
             "trigger": {"event_id": e.event_id, "type": e.type, "ts": e.ts_ms}, "generated_at": now_ms}
            for user, e in last.items()]
        return BatchResult(applied=len(batch), recommendations=lists)

    def stranger_list(self) -> dict[str, Any]:
        return stranger_message([], [], [], [], "stub")

    def persist(self, result: BatchResult, checkpoints: Any = None) -> None:
        pass

    def persist_items(self) -> None:
        pass

    def note_item_log(self, offsets: Any) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"events_total": self.events_total}


def run_noop(settings: Settings) -> int:
    """The do-nothing agent: same app settings, same ``take_events`` batching, no work per batch."""
    bootstrap = settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    ensure_topics(settings, bootstrap)
    settings.worker_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level of its datadir
    metrics = Metrics()
    readiness = health.Readiness(("partitions",))  # no kernels, no state: ready once in the group
    health.serve(settings.metrics_host, settings.metrics_port, metrics.registry, readiness)
    app = faust_app(settings, bootstrap)
    inputs = app.topic(*settings.input_topics().values(), **RAW)
    within = settings.batch_wait_ms / 1000.0

    @app.agent(inputs)
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max, within):
            metrics.applied.inc(len(batch))
            metrics.state_events.inc(len(batch))

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(sender: faust.App, assigned: set, **_: object) -> None:
        metrics.assigned_partitions.set(len(assigned))
        readiness.mark("partitions")

    return lifecycle.run(lifecycle.Worker(app, stop_timeout_s=settings.stop_timeout_s,
                                          loglevel=settings.log_level.upper(), override_logging=False))


def main(argv: Sequence[str]) -> int:
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    if argv == ["noop"]:
        return run_noop(settings)
    if argv == ["stub"]:
        return run_worker(settings, service_factory=StubService, kernels=lambda: None)  # type: ignore[arg-type]
    print("usage: python -m agents.probes noop|stub", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
