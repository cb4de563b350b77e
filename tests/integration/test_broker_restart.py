"""A broker that restarts empty (the embedded one keeps everything in memory): the worker recreates its topics
and goes on applying new events, none lost and none twice."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from agents.topics import all_topics
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.helpers import STATE_EVENTS, start_worker, state_of, type_counts
from tools.broker import EmbeddedBroker, free_port
from tools.produce import make_producer, produce_events

pytestmark = pytest.mark.integration


def test_a_worker_recreates_the_topics_of_a_restarted_broker_and_goes_on(settings: Settings, tmp_path: Path) -> None:
    events = list(SyntheticShop(ShopConfig(n_users=200, n_items=300, n_events=1_000, seed=7)).events())
    for e in events:
        del e["event_id"]  # the new topics number their messages from 0 again: only the offsets tell
    before, after = events[:500], events[500:]
    port = free_port()
    broker = EmbeddedBroker(port, log_path=str(tmp_path / "broker-1.log")).start()
    settings = replace(settings, kafka_bootstrap=broker.bootstrap)
    worker = start_worker(settings, tmp_path)
    try:
        _produce(settings, before)
        worker.wait_for(STATE_EVENTS, len(before), timeout_s=120)

        broker.stop()
        broker = EmbeddedBroker(port, log_path=str(tmp_path / "broker-2.log")).start()
        _wait_for_topics(settings, timeout_s=60)  # created again by the worker, not by anyone else here
        _produce(settings, after)
        worker.wait_for(STATE_EVENTS, len(events), timeout_s=90)
        time.sleep(2.0)  # room for a redelivered batch to be (wrongly) applied twice before we look
        assert worker.stop() == 0
    finally:
        worker.stop()
        broker.stop()
    assert state_of(settings).stats()["events"] == type_counts(events)


def _produce(settings: Settings, events: list[dict]) -> None:
    producer = make_producer(settings.kafka_bootstrap)
    assert produce_events(producer, events, settings, key_by_user=False) == len(events)
    producer.close()


def _wait_for_topics(settings: Settings, timeout_s: float) -> None:
    wanted = set(all_topics(settings))
    deadline = time.monotonic() + timeout_s
    found: set[str] = set()
    while time.monotonic() < deadline:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            found = set(admin.list_topics())
        finally:
            admin.close()
        if wanted <= found:
            return
        time.sleep(0.5)
    raise TimeoutError(f"topics not recreated: {sorted(wanted - found)}")
