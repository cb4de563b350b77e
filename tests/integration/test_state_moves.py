"""State whose home is Kafka: partitions that change owner, and a worker that lost its local state.

The verdict comes from the user-state changelog (tools.checker): every user's latest row must count
exactly the events sent for that user, whatever moved or died on the way.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.helpers import STATE_EVENTS, start_worker, state_of
from tools.checker import changelog_rows, compare, expected_from
from tools.produce import make_producer, produce_events

pytestmark = pytest.mark.integration
APPLIED = "stream_rec_learn_events_applied_total"


def _events(n: int, seed: int) -> list[dict]:
    events = list(SyntheticShop(ShopConfig(n_users=300, n_items=400, n_events=n, seed=seed)).events())
    for e in events:
        del e["event_id"]  # no ids: exactly-once must come from the offsets alone
    return events


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def test_a_killed_workers_users_move_to_the_survivor_with_their_history_and_nothing_twice(
        settings: Settings, tmp_path: Path) -> None:
    settings = Settings.from_env({}, **{**vars(settings), "batch_max": 200})  # many batches: kills land mid-stream
    events = _events(12_000, seed=21)
    workers = [start_worker(settings, tmp_path, f"worker-{n}") for n in (1, 2)]
    try:
        _wait_until(lambda: sum(w.metrics().get("stream_rec_worker_assigned_partitions", 0) for w in workers)
                    == settings.partitions and all(w.metrics().get("stream_rec_worker_assigned_partitions", 0)
                                                   for w in workers), 120, "the two workers never shared the partitions")
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, events, settings, key_by_user=False) == len(events)
        producer.close()
        _wait_until(lambda: workers[1].metrics().get(APPLIED, 0) > 1000, 120, "worker-2 never got going")
        killed_at = time.monotonic()
        workers[1].stop(signal.SIGKILL)
        _wait_until(lambda: workers[0].metrics().get("stream_rec_worker_assigned_partitions", 0) == settings.partitions,
                    60, "the survivor never took the dead worker's partitions")
        takeover_s = time.monotonic() - killed_at
        # the gained partitions are restored right after the assignment, in the background (restore_soon)
        _wait_until(lambda: workers[0].metrics().get("stream_rec_state_restored_users_total", 0) > 0, 30,
                    "the survivor restored no users from the changelog")
        _wait_until(lambda: _applied_per_changelog(settings, events) == len(events), 180,
                    "the changelog never reflected every event")
        time.sleep(2.0)  # room for a redelivered batch to be (wrongly) applied again
    finally:
        codes = [w.stop() for w in workers]
    assert codes[0] == 0
    verdict = compare(expected_from(events), changelog_rows(settings.kafka_bootstrap, settings.topic_user_state))
    assert verdict.exact, "\n".join(verdict.lines() + verdict.examples)
    assert takeover_s < 60, takeover_s


def _applied_per_changelog(settings: Settings, events: list[dict]) -> int:
    rows = changelog_rows(settings.kafka_bootstrap, settings.topic_user_state, idle_ms=800)
    return sum(sum(row.counts) for row in rows.values())


def test_a_deleted_state_folder_is_rebuilt_from_kafka_with_identical_counts(settings: Settings, tmp_path: Path) -> None:
    everything = _events(7_000, seed=22)
    events, later = everything[:6_000], everything[6_000:]
    producer = make_producer(settings.kafka_bootstrap)
    assert produce_events(producer, events, settings, key_by_user=False) == len(events)
    first = start_worker(settings, tmp_path)
    try:
        first.wait_for(STATE_EVENTS, len(events), timeout_s=180)
        time.sleep(1.0)
    finally:
        assert first.stop() == 0
    before = state_of(settings).stats()
    shutil.rmtree(settings.state_path)

    second = start_worker(settings, tmp_path)
    try:
        second.wait_for(STATE_EVENTS, len(events), timeout_s=180)
        time.sleep(2.0)
        metrics = second.metrics()
    finally:
        assert second.stop() == 0
    assert state_of(settings).stats() == before  # users, items, events by type
    assert metrics.get(APPLIED, 0) == 0, "events were applied again after the rebuild"
    assert metrics["stream_rec_state_restored_users_total"] == before["users"]
    assert "no local state" in (tmp_path / "worker-1.log").read_text()

    third = start_worker(settings, tmp_path)  # and it goes on from there
    try:
        assert produce_events(producer, later, settings, key_by_user=False) == len(later)
        third.wait_for(STATE_EVENTS, len(everything), timeout_s=120)
        time.sleep(1.0)
    finally:
        producer.close()
        assert third.stop() == 0
    verdict = compare(expected_from(everything), changelog_rows(settings.kafka_bootstrap, settings.topic_user_state))
    assert verdict.exact, "\n".join(verdict.lines() + verdict.examples)
