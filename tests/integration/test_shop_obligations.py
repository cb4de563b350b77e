"""What a shop needs beside the lists: forgetting a user, deleting an item, a catalogue, compacted topics, the
front-end example (embedded broker, real worker)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from agents.app import STRANGER_EVERY_S
from agents.topics import all_topics, ensure_topics
from stream_rec.settings import Settings
from stream_rec.state import RocksStore
from stream_rec.state.store import FAMILIES
from tests.integration.helpers import (STATE_EVENTS, T0, bought_together, event, latest_lists, start_worker, state_of,
                                       user_event_counts)
from tools.produce import make_producer, produce_events, read_topic

pytestmark = pytest.mark.integration

GONE = "user-to-forget"
KEPT = "keep-me-around"  # sorts first among the users: RocksDB stores it whole, where a search can see it


def _latest_values(settings: Settings, topic: str) -> dict[bytes, bytes | None]:
    """The topic's latest value per key, as compaction will leave it."""
    return {message.key: message.value for message in read_topic(settings.kafka_bootstrap, topic, idle_ms=1500)}


def _held_anywhere(folder: Path, needle: bytes) -> list[str]:
    """Files of a RocksDB folder that hold ``needle`` anywhere (tables, logs, MANIFEST, LOG)."""
    return [path.name for path in folder.iterdir() if path.is_file() and needle in path.read_bytes()]


@pytest.mark.parametrize("input_keys", ["any", "user_id"])
def test_a_forgotten_user_is_erased_from_the_state_the_changelog_and_the_lists(settings: Settings, tmp_path: Path,
                                                                               input_keys: str) -> None:
    settings = replace(settings, input_keys=input_keys)
    history = bought_together(12)
    theirs = [event(GONE, "camera", "view", T0 + 9_000_000, event_id=f"{GONE}-e1"),
              event(GONE, "camera", "purchase", T0 + 9_001_000, event_id=f"{GONE}-e2")]
    history.append(event(KEPT, "tripod", "view", T0 + 8_000_000))
    worker = start_worker(settings, tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, history + theirs, settings) == len(history) + len(theirs)
        producer.flush()
        worker.wait_for(STATE_EVENTS, len(history) + len(theirs), timeout_s=90)
        before = latest_lists(settings)
        producer.send(settings.topic_forget, key=GONE.encode(), value=None)  # the value is not read
        producer.send(settings.topic_forget, key=None, value=b"{}")  # no user named: dead-lettered
        producer.flush()
        worker.wait_for("stream_rec_state_users_forgotten_total", 1, timeout_s=60)
        # One more event of somebody else after the request: the worker goes on as before.
        assert produce_events(producer, [event("shopper-1", "tripod", "view", T0 + 9_100_000)], settings) == 1
        producer.close()
        worker.wait_for("stream_rec_learn_events_applied_total", len(history) + len(theirs) + 1, timeout_s=60)
        metrics = worker.metrics()
        time.sleep(STRANGER_EVERY_S + 1)  # the list for strangers follows a burst even when no batch comes after
    finally:
        assert worker.stop() == 0

    assert "memory-card" in [i["item_id"] for i in before[GONE]["items"]]  # they had a list of their own
    lists = _latest_values(settings, settings.topic_recommendations)
    assert lists[GONE.encode()] is None  # the topic's latest value for the user is a tombstone
    assert lists[b"shopper-1"] is not None
    stranger = [i["item_id"] for i in json.loads(lists[b""])["items"]]  # the popular items, for users not seen
    # Every item anyone touched, the busiest first, the tripod too: its only event came in a later batch,
    # within the period after the first list for strangers was sent (the list is sent again after it).
    assert len(stranger) == 10 and stranger[0] in ("camera", "memory-card") and "tripod" in stranger
    assert _latest_values(settings, settings.topic_user_state)[GONE.encode()] is None  # the changelog's too
    assert metrics["stream_rec_state_users_forgotten_total"] == 1
    dead = list(read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=1500))
    assert [dict(m.headers)["stream_rec.reason"] for m in dead] == [b"missing_field"]

    # A restarted worker holds nothing of the user, and everyone else as before.
    state = state_of(settings)
    assert GONE not in user_event_counts(state) and state.stats()["users"] == 13
    assert state.stats()["events_total"] == len(history) + 1
    # The state folder: no live key or value names the user, and after a compaction no file does.
    folder = replace(settings, worker_id="worker-1").state_path
    store = RocksStore(folder)
    try:
        rows = [(key, value) for family in FAMILIES for key, value in store.items(family)]
        assert rows and not [key for key, value in rows if GONE.encode() in key or GONE.encode() in value]
        assert any(b"shopper-1" in key for key, _ in rows)
        store.compact()
    finally:
        store.close()
    RocksStore(folder).close()  # a reopen writes a fresh MANIFEST (the old one still named a table's first key)
    assert _held_anywhere(folder, GONE.encode()) == []
    assert _held_anywhere(folder, KEPT.encode())  # the search finds a user who is there


def test_a_tombstone_on_the_items_topic_deletes_the_item(settings: Settings, tmp_path: Path) -> None:
    history = bought_together()
    worker = start_worker(settings, tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, history, settings) == len(history)
        producer.send(settings.topic_items, key=b"memory-card", value=None)
        producer.send(settings.topic_items, key=b"", value=None)  # no item named: dead-lettered, nothing else
        producer.flush()
        worker.wait_for(STATE_EVENTS, len(history), timeout_s=90)
        worker.wait_for("stream_rec_ingest_availability_total", 1, timeout_s=30)
        assert produce_events(producer, [event("buyer-1", "camera", "purchase", T0 + 10_000_000)], settings) == 1
        worker.wait_for(STATE_EVENTS, len(history) + 1, timeout_s=60)
        producer.close()
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0
    items = [i["item_id"] for i in latest_lists(settings)["buyer-1"]["items"]]
    dead = list(read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=1500))
    # A worker started afterwards, from nothing but Kafka, learns of the deletion too.
    fresh = replace(settings, data_dir=str(tmp_path / "fresh"), app_id=settings.app_id + "-fresh")
    late = start_worker(fresh, tmp_path, "worker-late")
    try:
        late.wait_for("stream_rec_ingest_availability_total", 1, timeout_s=90)
        late_metrics = late.metrics()
    finally:
        assert late.stop() == 0

    assert "memory-card" not in items and len(items) == 7, items  # the best answer, but deleted
    assert metrics["stream_rec_state_unavailable_items"] == 1
    assert late_metrics["stream_rec_state_unavailable_items"] == 1
    assert [dict(m.headers)["stream_rec.reason"] for m in dead] == [b"empty"]


def test_a_new_item_is_recommended_from_its_catalogue_metadata_before_its_first_event(settings: Settings,
                                                                                     tmp_path: Path) -> None:
    shop = [event(f"u{n}", f"shoe-{n % 8}", "view", T0 + n * 1000, category="shoes") for n in range(200)]
    shop.append(event("hat-lover", "hat-1", "view", T0 + 300_000, category="hats"))
    worker = start_worker(replace(settings, fusion_adapt=False), tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, shop, settings) == len(shop)
        worker.wait_for(STATE_EVENTS, len(shop), timeout_s=90)
        producer.send(settings.topic_items, key=b"hat-2",
                      value=b'{"item_id": "hat-2", "category": "hats", "price": 24.5, "new": true}')
        producer.flush()
        worker.wait_for("stream_rec_ingest_availability_total", 1, timeout_s=30)
        later = event("hat-lover", "shoe-1", "view", T0 + 400_000, category="shoes")
        assert produce_events(producer, [later], settings) == 1
        producer.close()
        worker.wait_for(STATE_EVENTS, len(shop) + 1, timeout_s=60)
    finally:
        assert worker.stop() == 0
    rec = latest_lists(settings)["hat-lover"]
    because = {i["item_id"]: i["because"] for i in rec["items"]}
    assert because.get("hat-2") == {"kind": "popular_in_category", "category": "hats"}, rec["items"]


def test_topics_are_created_with_the_partitions_and_replication_factor_set(settings: Settings) -> None:
    # The configs sent (compaction) are checked in tests/unit/test_topics.py: Tansu 0.6 answers
    # DescribeConfigs with no entries at all, so the broker cannot be asked here.
    ensure_topics(settings, settings.kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        topics = admin.describe_topics(all_topics(settings))
    finally:
        admin.close()
    assert {t["name"] for t in topics} == set(all_topics(settings))
    assert all(len(t["partitions"]) == settings.partitions for t in topics)
    assert all(len(p["replica_nodes"]) == settings.replication_factor for t in topics for p in t["partitions"])


def test_the_front_end_example_keeps_each_users_latest_list(settings: Settings) -> None:
    ensure_topics(settings, settings.kafka_bootstrap)
    producer = make_producer(settings.kafka_bootstrap)

    def publish(user: str, items: list[str] | None) -> None:
        value = None if items is None else (
            b'{"v": 1, "user_id": "%s", "items": [%s]}' % (user.encode(), b",".join(
                b'{"item_id": "%s", "score": 1.0, "sources": ["popular"], "because": {"kind": "popular"}}' % i.encode()
                for i in items)))
        producer.send(settings.topic_recommendations, key=user.encode(), value=value)

    # Lists published before the example starts (a group at "latest" would miss these) ...
    publish("u1", ["a", "b"])
    publish("u2", ["c"])
    publish("u1", ["d", "e"])  # ... a newer list replaces the older one
    publish("", ["p1", "p2"])  # the list for a user not seen yet
    publish("u3", ["x"])
    publish("u3", None)  # u3 was forgotten
    producer.flush()
    example = subprocess.Popen(
        [sys.executable, "-m", "tools.latest_lists", "--bootstrap", settings.kafka_bootstrap, "--topic",
         settings.topic_recommendations, "--idle-exit", "4"], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2])
    try:
        publish("u2", ["f"])  # ... and one while it runs
        producer.flush()
        out, _ = example.communicate(timeout=60)
    finally:
        example.kill()
        producer.close()
    assert example.returncode == 0
    assert json.loads(out) == {"u1": ["d", "e"], "u2": ["f"], "": ["p1", "p2"]}
