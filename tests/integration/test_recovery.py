"""Stop a worker mid-stream (SIGTERM, and kill -9), restart it: nothing lost, nothing applied twice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.helpers import STATE_EVENTS, start_worker, state_of, type_counts, user_event_counts
from tools.produce import make_producer, produce_events, read_topic

pytestmark = pytest.mark.integration


def _shop_events(n: int) -> list[dict]:
    events = list(SyntheticShop(ShopConfig(n_users=300, n_items=500, n_events=n, seed=3)).events())
    for e in events:
        del e["event_id"]  # no ids: idempotency must come from the offsets stored with the state
    return events


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_after_stop_loses_nothing_and_applies_nothing_twice(settings: Settings, tmp_path: Path, sig: int) -> None:
    settings = Settings.from_env({}, **{**vars(settings), "batch_max": 200})  # many batches: a stop lands mid-stream
    events = _shop_events(12_000)
    producer = make_producer(settings.kafka_bootstrap)
    assert produce_events(producer, events, settings, key_by_user=False) == len(events)
    producer.close()

    first = start_worker(settings, tmp_path)
    try:
        first.wait_for(STATE_EVENTS, len(events) // 5, timeout_s=90)
    finally:
        first.stop(sig)
    applied_before = state_of(settings).stats()["events_total"]
    assert 0 < applied_before < len(events), "the stop must land mid-stream for this test to mean anything"

    restarted_at = time.time() * 1000
    second = start_worker(settings, tmp_path)
    try:
        second.wait_for(STATE_EVENTS, len(events), timeout_s=180)
        time.sleep(2.0)  # room for any redelivered batch to be (wrongly) applied again before we look
        metrics = second.metrics()
    finally:
        assert second.stop() == 0

    state = state_of(settings)
    assert state.stats()["events"] == type_counts(events)  # none lost, none twice
    expected_per_user: dict[str, int] = {}
    for e in events:
        expected_per_user[e["user_id"]] = expected_per_user.get(e["user_id"], 0) + 1
    assert user_event_counts(state) == expected_per_user
    assert metrics[STATE_EVENTS] == len(events)
    resumed = [json.loads(m.value) for m in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=1500)]
    assert any(r["generated_at"] > restarted_at for r in resumed), "recommendations did not resume after the restart"
