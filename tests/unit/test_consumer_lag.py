"""The consumer-lag gauge (agents/app.py ``_note_lag``): per partition of a batch, the end offset the last fetch
saw minus the offset after the batch's last message of it; a partition no longer assigned is left alone."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from agents.app import _note_lag
from stream_rec.metrics import Metrics


def _event(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


class _Consumer:
    def __init__(self, ends: dict[TP, int | None]) -> None:
        self.ends = ends

    def highwater(self, tp: TP) -> int | None:
        if tp not in self.ends:
            raise AssertionError("Partition is not assigned")  # what aiokafka does
        return self.ends[tp]


def _lag(metrics: Metrics) -> dict[tuple[str, str], float]:
    (family,) = [f for f in metrics.registry.collect() if f.name == "stream_rec_consumer_lag"]
    return {(s.labels["topic"], s.labels["partition"]): s.value for s in family.samples}


def test_lag_is_the_end_offset_minus_the_offset_after_the_last_message_processed() -> None:
    metrics = Metrics()
    app = SimpleNamespace(consumer=_Consumer({TP("a", 0): 100, TP("a", 1): 8, TP("b", 0): None}))
    batch = [_event("a", 0, 10), _event("a", 1, 7), _event("a", 0, 11), _event("b", 0, 3), _event("gone", 2, 5)]
    _note_lag(app, metrics, batch)  # type: ignore[arg-type]
    # a/0: 100 - 12; a/1: caught up; b/0: not fetched yet (no end offset): no series; gone/2 was revoked: none.
    assert _lag(metrics) == {("a", "0"): 88.0, ("a", "1"): 0.0}
    _note_lag(app, metrics, [_event("a", 0, 99)])  # type: ignore[arg-type]
    assert _lag(metrics)[("a", "0")] == 0.0
