"""STREAM_REC_INPUT_KEYS=user_id: workers apply straight from the input topics, with the same guarantees."""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from stream_rec.events import REASONS
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.helpers import STATE_EVENTS, latest_lists, start_worker, state_of, type_counts, user_event_counts
from tools.demo import malformed_messages
from tools.produce import make_producer, produce_events, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return replace(settings, input_keys="user_id", batch_max=200)


def _shop_events(n: int, seed: int) -> list[dict]:
    events = list(SyntheticShop(ShopConfig(n_users=300, n_items=500, n_events=n, seed=seed)).events())
    for e in events:
        del e["event_id"]  # no ids: idempotency must come from the offsets stored with the state
    return events


def _per_user(events: list[dict]) -> dict[str, int]:
    return dict(Counter(e["user_id"] for e in events))


def test_every_event_applied_once_and_bad_messages_dead_lettered(keyed: Settings, tmp_path: Path) -> None:
    events = _shop_events(3_000, seed=7)
    bad = malformed_messages(keyed)
    producer = make_producer(keyed.kafka_bootstrap)
    assert produce_events(producer, events[:1500], keyed) == 1500
    for topic, raw, _ in bad:
        producer.send(topic, value=raw)
    assert produce_events(producer, events[1500:], keyed) == 1500
    producer.close()

    worker = start_worker(keyed, tmp_path)
    try:
        worker.wait_for(STATE_EVENTS, len(events), timeout_s=90)
        time.sleep(1.5)  # room for anything (wrongly) applied twice
        metrics = worker.metrics()
        dead = list(read_topic(keyed.kafka_bootstrap, keyed.topic_dead_letter, idle_ms=1500))
        lists = latest_lists(keyed)
    finally:
        assert worker.stop() == 0

    state = state_of(keyed)
    assert state.stats()["events"] == type_counts(events)
    assert user_event_counts(state) == _per_user(events)
    assert set(lists) == {e["user_id"] for e in events}
    assert metrics["stream_rec_ingest_miskeyed_total"] == 0
    assert metrics["stream_rec_worker_assigned_partitions"] == keyed.partitions
    # No second hop: nothing was written to the internal topic.
    assert list(read_topic(keyed.kafka_bootstrap, keyed.topic_events, idle_ms=500)) == []
    by_value = {m.value: dict(m.headers) for m in dead}
    assert len(dead) == len(bad)
    for topic, raw, reason in bad:
        assert by_value[raw]["stream_rec.reason"].decode() == reason
        assert by_value[raw]["stream_rec.source_topic"].decode() == topic
    assert Counter({r: metrics[f"stream_rec_ingest_dead_letters_total{{reason={r}}}"] for r in REASONS}) == Counter(r for _, _, r in bad)


def test_restart_after_kill_9_loses_nothing_and_applies_nothing_twice(keyed: Settings, tmp_path: Path) -> None:
    events = _shop_events(12_000, seed=3)
    producer = make_producer(keyed.kafka_bootstrap)
    assert produce_events(producer, events, keyed) == len(events)
    producer.close()
    first = start_worker(keyed, tmp_path)
    try:
        first.wait_for(STATE_EVENTS, len(events) // 5, timeout_s=90)
    finally:
        first.stop(signal.SIGKILL)
    applied_before = state_of(keyed).stats()["events_total"]
    assert 0 < applied_before < len(events), "the kill must land mid-stream for this test to mean anything"

    second = start_worker(keyed, tmp_path)
    try:
        second.wait_for(STATE_EVENTS, len(events), timeout_s=180)
        time.sleep(2.0)
    finally:
        assert second.stop() == 0
    state = state_of(keyed)
    assert state.stats()["events"] == type_counts(events)
    assert user_event_counts(state) == _per_user(events)


def test_two_workers_split_users_not_their_events(keyed: Settings, tmp_path: Path) -> None:
    events = _shop_events(6_000, seed=5)
    workers = [start_worker(keyed, tmp_path, f"worker-{n}") for n in (1, 2)]
    try:
        deadline = time.monotonic() + 90
        owned: list[float] = []
        while time.monotonic() < deadline:
            owned = [w.metrics().get("stream_rec_worker_assigned_partitions", 0) for w in workers]
            if all(n > 0 for n in owned) and sum(owned) == keyed.partitions:
                break
            time.sleep(0.3)
        assert sum(owned) == keyed.partitions and all(owned), owned
        producer = make_producer(keyed.kafka_bootstrap)
        assert produce_events(producer, events, keyed) == len(events)
        producer.close()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and sum(w.metrics().get(STATE_EVENTS, 0) for w in workers) < len(events):
            time.sleep(0.5)
        time.sleep(2.0)
    finally:
        assert [w.stop() for w in workers] == [0, 0]
    states = [state_of(keyed, f"worker-{n}") for n in (1, 2)]
    users = [set(user_event_counts(s)) for s in states]
    assert users[0] and users[1] and not users[0] & users[1], "a user's events were split across workers"
    assert {**user_event_counts(states[0]), **user_event_counts(states[1])} == _per_user(events)
