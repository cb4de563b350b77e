"""Shared steps of the integration tests: events with a known answer, reading topics, inspecting state."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import RocksStore
from stream_rec.wire import STRANGER_KEY
from tools.produce import read_topic
from tools.workers import WorkerProcess

STATE_EVENTS = "stream_rec_state_events"
T0 = 1_700_000_000_000


def event(user: str, item: str, etype: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "type": etype, "ts": ts, **extra}


def bought_together(n_users: int = 40) -> list[dict[str, Any]]:
    """Many shoppers buy a camera, then its memory card; the rest of the catalogue is noise."""
    events = []
    for n in range(n_users):
        ts = T0 + n * 60_000
        user = f"shopper-{n}"
        events += [
            event(user, f"noise-{n % 7}", "view", ts),
            event(user, "camera", "view", ts + 1000),
            event(user, "camera", "click", ts + 2000),
            event(user, "camera", "add_to_cart", ts + 3000),
            event(user, "camera", "purchase", ts + 4000),
            event(user, "memory-card", "view", ts + 5000),
            event(user, "memory-card", "purchase", ts + 6000),
        ]
    return events


def start_worker(settings: Settings, tmp_path: Path, worker_id: str = "worker-1") -> WorkerProcess:
    worker_settings = replace(settings, worker_id=worker_id)
    log = tmp_path / f"{worker_id}.log"
    return WorkerProcess(worker_settings, log_path=log).start()


def latest_lists(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest list of each user on the recommendations topic (not the one for strangers, key b"")."""
    latest: dict[str, dict[str, Any]] = {}
    for message in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=1500):
        if message.key == STRANGER_KEY:
            continue
        if message.value is None:  # a forgotten user's tombstone
            latest.pop(message.key.decode(), None)
            continue
        payload = json.loads(message.value)
        assert message.key == payload["user_id"].encode()  # keyed by user id
        latest[payload["user_id"]] = payload
    return latest


def state_of(settings: Settings, worker_id: str = "worker-1") -> RecService:
    """The persisted state of a stopped worker, loaded exactly as a restarted worker would."""
    store = RocksStore(replace(settings, worker_id=worker_id).state_path)
    service = RecService(settings, store)
    store.close()
    return service


def type_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(e["type"] for e in events)
    return {t: counts.get(t, 0) for t in ("view", "click", "add_to_cart", "purchase")}


def user_event_counts(service: RecService) -> dict[str, int]:
    return {service.users.external(u): p.n_events for u, p in service.profiles.items()}
