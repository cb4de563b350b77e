"""Two workers in one consumer group: each owns its partitions, together they apply every event once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.helpers import start_worker, state_of, type_counts, user_event_counts
from tools.produce import make_producer, produce_events

pytestmark = pytest.mark.integration


def test_two_workers_share_the_partitions_and_apply_every_event_once(settings: Settings, tmp_path: Path) -> None:
    events = list(SyntheticShop(ShopConfig(n_users=400, n_items=500, n_events=8_000, seed=5)).events())
    workers = [start_worker(settings, tmp_path, f"worker-{n}") for n in (1, 2)]
    try:
        _wait_until_partitions_are_shared(workers, settings.partitions)
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, events, settings, key_by_user=False) == len(events)
        producer.close()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = sum(w.metrics().get("stream_rec_state_events", 0) for w in workers)
            if done >= len(events):
                break
            time.sleep(0.5)
        time.sleep(2.0)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]

    states = [state_of(settings, f"worker-{n}") for n in (1, 2)]
    totals = [s.stats()["events_total"] for s in states]
    assert all(t > 0 for t in totals), f"a worker got no partitions: {totals}"
    combined = {t: sum(s.stats()["events"][t] for s in states) for t in type_counts(events)}
    assert combined == type_counts(events)
    users = [set(user_event_counts(s)) for s in states]
    assert not users[0] & users[1], "a user's events were split across workers"
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user_id"]] = expected.get(e["user_id"], 0) + 1
    assert {**user_event_counts(states[0]), **user_event_counts(states[1])} == expected


def _wait_until_partitions_are_shared(workers: list, partitions: int, timeout_s: float = 90) -> None:
    """Both members hold partitions and together all of them: the group has settled."""
    deadline = time.monotonic() + timeout_s
    owned: list[float] = []
    while time.monotonic() < deadline:
        owned = [w.metrics().get("stream_rec_worker_assigned_partitions", 0) for w in workers]
        if all(n > 0 for n in owned) and sum(owned) == partitions:
            return
        time.sleep(0.3)
    raise TimeoutError(f"partitions never shared between the workers: {owned}")
