"""Kafka -> worker -> recommendations topic, with bad input mixed in, on the embedded broker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stream_rec.events import REASONS
from stream_rec.settings import Settings
from tests.integration.helpers import (STATE_EVENTS, T0, bought_together, event, latest_lists, start_worker,
                                       state_of, type_counts)
from tools.demo import malformed_messages
from tools.produce import make_producer, produce_events, read_topic

pytestmark = pytest.mark.integration


def test_events_on_all_three_topics_lead_to_fitting_recommendations(settings: Settings, tmp_path: Path) -> None:
    history = bought_together()
    buyer = [event("new-buyer", "tripod", "view", T0 + 10_000_000),
             event("new-buyer", "camera", "click", T0 + 10_001_000),
             event("new-buyer", "camera", "purchase", T0 + 10_002_000)]
    worker = start_worker(settings, tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        # Producers may key by user or not at all: send the history unkeyed, the buyer keyed.
        assert produce_events(producer, history, settings, key_by_user=False) == len(history)
        assert produce_events(producer, buyer, settings) == len(buyer)
        producer.close()
        worker.wait_for(STATE_EVENTS, len(history) + len(buyer), timeout_s=90)
        metrics = worker.metrics()
        lists = latest_lists(settings)
    finally:
        assert worker.stop() == 0

    assert set(lists) == {e["user_id"] for e in history + buyer}
    rec = lists["new-buyer"]
    items = [i["item_id"] for i in rec["items"]]
    assert "memory-card" in items[:3], items  # bought together with the camera
    assert "camera" not in items  # just bought: never recommended back
    # The three topics have no order between them: the list names one of the buyer's events as its trigger.
    assert (rec["trigger"]["ts"], rec["trigger"]["type"]) in {(e["ts"], e["type"]) for e in buyer}
    assert rec["model_version"] and rec["generated_at"] > 0
    assert all(i["sources"] for i in rec["items"])
    assert [i["score"] for i in rec["items"]] == sorted((i["score"] for i in rec["items"]), reverse=True)
    # A burst of one user's events yields one list per micro-batch, not one per event.
    assert metrics["stream_rec_output_recommendations_total"] < len(history) + len(buyer)
    assert metrics["stream_rec_ingest_events_total{type=purchase}"] == sum(e["type"] == "purchase" for e in history + buyer)
    assert state_of(settings).stats()["events"] == type_counts(history + buyer)
    # Consumer lag per partition read: a series for the input topics and the internal one, none behind once done.
    lag = {key: value for key, value in metrics.items() if key.startswith("stream_rec_consumer_lag{")}
    topics = {key.split("topic=", 1)[1].rstrip("}") for key in lag}
    assert settings.topic_events in topics and settings.topic_purchase in topics, lag
    assert set(lag.values()) == {0.0}, lag


def test_an_item_withdrawn_on_the_items_topic_leaves_the_lists_until_it_is_back(settings: Settings, tmp_path: Path) -> None:
    history = bought_together()
    worker = start_worker(settings, tmp_path)
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, history, settings) == len(history)
        producer.send(settings.topic_items, key=b"memory-card", value=b'{"item_id": "memory-card", "available": false}')
        producer.send(settings.topic_items, key=b"x", value=b'{"item_id": "x", "available": "soon"}')  # dead-lettered
        producer.flush()
        worker.wait_for(STATE_EVENTS, len(history), timeout_s=90)
        worker.wait_for("stream_rec_ingest_availability_total", 1, timeout_s=30)
        buyer = [event("buyer-1", "camera", "purchase", T0 + 10_000_000)]
        assert produce_events(producer, buyer, settings) == 1
        worker.wait_for(STATE_EVENTS, len(history) + 1, timeout_s=60)
        producer.send(settings.topic_items, key=b"memory-card", value=b'{"item_id": "memory-card", "available": true}')
        producer.flush()
        worker.wait_for("stream_rec_ingest_availability_total", 2, timeout_s=30)
        later = [event("buyer-2", "camera", "purchase", T0 + 10_001_000)]
        assert produce_events(producer, later, settings) == 1
        worker.wait_for(STATE_EVENTS, len(history) + 2, timeout_s=60)
        producer.close()
        metrics = worker.metrics()
        lists = latest_lists(settings)
        dead = list(read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=1500))
    finally:
        assert worker.stop() == 0

    withdrawn = [i["item_id"] for i in lists["buyer-1"]["items"]]
    back = [i["item_id"] for i in lists["buyer-2"]["items"]]
    # Nine items: the camera (bought) is never shown; memory-card only once it is back.
    assert len(withdrawn) == 7 and len(back) == 8
    assert "memory-card" not in withdrawn, withdrawn  # the best answer, but withdrawn at the time
    assert "memory-card" in back[:3], back  # available again: it comes back where it belongs
    assert metrics["stream_rec_state_unavailable_items"] == 0
    assert [dict(m.headers)["stream_rec.reason"] for m in dead] == [b"bad_field"]


def test_malformed_messages_are_dead_lettered_and_valid_ones_around_them_processed(settings: Settings, tmp_path: Path) -> None:
    bad = malformed_messages(settings)
    valid = bought_together(10)
    producer = make_producer(settings.kafka_bootstrap)
    sent_valid = 0
    for n, (topic, raw, _) in enumerate(bad):  # interleave: valid, bad, valid, bad, ...
        sent_valid += produce_events(producer, valid[n * 3:(n + 1) * 3], settings)
        producer.send(topic, value=raw)
    sent_valid += produce_events(producer, valid[len(bad) * 3:], settings)
    producer.flush()
    producer.close()
    assert sent_valid == len(valid)

    worker = start_worker(settings, tmp_path)
    try:
        worker.wait_for(STATE_EVENTS, len(valid), timeout_s=90)
        metrics = worker.metrics()
        dead = list(read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=1500))
    finally:
        assert worker.stop() == 0

    assert len(dead) == len(bad)
    by_value = {m.value: dict(m.headers) for m in dead}
    for topic, raw, reason in bad:
        headers = by_value[raw]  # the original bytes, untouched
        assert headers["stream_rec.reason"].decode() == reason
        assert headers["stream_rec.source_topic"].decode() == topic
        assert int(headers["stream_rec.source_partition"]) >= 0 and int(headers["stream_rec.source_offset"]) >= 0
        assert headers["stream_rec.error"]
    assert Counter({r: metrics[f"stream_rec_ingest_dead_letters_total{{reason={r}}}"] for r in REASONS}) == Counter(r for _, _, r in bad)
    assert state_of(settings).stats()["events"] == type_counts(valid)


def test_retried_event_with_the_same_event_id_is_applied_once(settings: Settings, tmp_path: Path) -> None:
    events = [event("u1", "i1", "view", T0, event_id="e-1"), event("u1", "i1", "view", T0, event_id="e-1"),
              event("u1", "i2", "view", T0 + 1, event_id="e-2")]
    producer = make_producer(settings.kafka_bootstrap)
    produce_events(producer, events, settings)
    producer.close()
    worker = start_worker(settings, tmp_path)
    try:
        worker.wait_for("stream_rec_learn_duplicates_total", 1, timeout_s=90)
        worker.wait_for(STATE_EVENTS, 2, timeout_s=30)
    finally:
        worker.stop()
    state = state_of(settings)
    assert state.stats()["events_total"] == 2
    assert state.stats()["users"] == 1
