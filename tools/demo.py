"""``stream-rec demo``: a synthetic shop's events through broker and worker, end to end, with a summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from stream_rec.service import warm_up
from stream_rec.settings import TOPIC_FIELDS, Settings
from stream_rec.synth import ShopConfig, SyntheticShop, default_categories
from stream_rec.wire import STRANGER_KEY
from tools.broker import EmbeddedBroker
from tools.produce import make_producer, produce_events, read_topic
from tools.workers import WorkerProcess

log = logging.getLogger(__name__)
APPLIED = "stream_rec_learn_events_applied_total"
DEAD = "stream_rec_ingest_dead_letters_total"
ASSIGNED = "stream_rec_worker_assigned_partitions"


def malformed_messages(settings: Settings) -> list[tuple[str, bytes, str]]:
    """One message of every kind a worker must dead-letter: ``(topic, raw bytes, expected reason)``."""
    ok = {"user_id": "u-bad", "item_id": "i-bad", "type": "view", "ts": 1_700_000_000_000}
    browse, purchase = settings.topic_browse, settings.topic_purchase

    def js(**changes: Any) -> bytes:
        return json.dumps({k: v for k, v in {**ok, **changes}.items() if v is not None}).encode()

    return [
        (browse, b"", "empty"),
        (browse, b"this is not json", "not_json"),
        (browse, b"[" * 20_000 + b"]" * 20_000, "not_json"),
        (browse, b"[1, 2, 3]", "not_object"),
        (browse, js(v=2), "unsupported_version"),
        (browse, js(user_id=None), "missing_field"),
        (browse, js(item_id=3.5), "bad_field"),
        (browse, js(type="wishlist"), "unknown_type"),
        (purchase, js(type="view"), "wrong_stream"),
        (browse, js(properties={"blob": "x" * 1000}, note="y" * (settings.max_message_bytes + 10)), "too_large"),
        (browse, js().replace(b"1700000000000", b"NaN"), "non_finite"),
        (browse, js(ts=4_000_000_000_000), "future_ts"),
    ]


def run_demo(settings: Settings, *, n_events: int, n_users: int, n_items: int, seed: int) -> int:
    """Broker (unless ``STREAM_REC_KAFKA_BOOTSTRAP`` is set), a worker, the events, then a summary."""
    run_id = f"demo-{int(time.time())}"
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-rec-demo-"))
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=os.path.join(workdir, "broker.log"))).bootstrap
        settings = _demo_settings(settings, run_id, bootstrap, workdir)
        print(f"broker {bootstrap}; worker state and logs in {workdir}", flush=True)
        shop = SyntheticShop(ShopConfig(n_users=n_users, n_items=n_items, n_categories=default_categories(n_items),
                                        n_events=n_events, seed=seed))
        events = list(shop.events())
        bad = malformed_messages(settings)
        warm_up()  # logs that it loads (or, the first time on a machine, compiles) the kernels, and how long
        launched = time.monotonic()
        worker = WorkerProcess(settings, log_path=os.path.join(workdir, "worker.log")).start()
        stack.callback(worker.stop)
        worker.wait_for(ASSIGNED, 1, timeout_s=120)
        print(f"worker ready in {time.monotonic() - launched:.1f} s (state loaded, consumer group joined)", flush=True)
        started = time.monotonic()
        producer = make_producer(bootstrap, settings)
        sent = produce_events(producer, events, settings)
        for topic, raw, _ in bad:
            producer.send(topic, value=raw)
        producer.flush()
        producer.close()
        produced_s = time.monotonic() - started
        print(f"produced {sent} events and {len(bad)} malformed messages in {produced_s:.1f} s", flush=True)
        with tqdm(total=sent, desc="events applied", unit="ev", disable=not sys.stderr.isatty()) as bar:
            worker.wait_for(APPLIED, sent, timeout_s=120 + n_events / 500, on_value=lambda v: bar.update(int(v) - bar.n))
        elapsed = time.monotonic() - started
        metrics = worker.metrics()
        lists = _latest_lists(settings)
        _print_examples(events, lists)
        dead = sum(v for k, v in metrics.items() if k.startswith(DEAD + "{"))
        print("\nsummary")
        print(f"  events in          {sent}")
        print(f"  dead-lettered      {int(dead)} (of {len(bad)} malformed)")
        print(f"  recommendations    {int(metrics.get('stream_rec_output_recommendations_total', 0))} lists for {len(lists)} users")
        print(f"  elapsed            {elapsed:.1f} s (produce to last event applied)")
        print(f"  throughput         {sent / elapsed:,.0f} events/s")
        _print_variants(metrics, lists)
    return 0


def _print_variants(metrics: dict[str, float], lists: dict[str, dict[str, Any]]) -> None:
    """Per A/B variant (STREAM_REC_VARIANTS): its users and how its lists did on the events that followed."""
    prefix = "stream_rec_variant_events_measured_total{variant="
    for key in sorted(k for k in metrics if k.startswith(prefix)):
        name = key[len(prefix):-1]
        measured, hits = metrics[key], metrics.get(f"stream_rec_variant_hits_total{{variant={name}}}", 0.0)
        users = sum(1 for rec in lists.values() if rec.get("variant") == name)
        print(f"  variant {name:<10} {users} users; HR@10 of the lists sent, judged by each user's next event: "
              f"{hits / measured:.3f} ({int(measured)} events)" if measured else f"  variant {name:<10} {users} users")


def _demo_settings(settings: Settings, run_id: str, bootstrap: str, workdir: str) -> Settings:
    # Fresh topics and group per run, so a demo against a real cluster never mixes with an earlier one.
    topics = {name: f"{run_id}.{getattr(settings, name)}" for name in TOPIC_FIELDS}
    return replace(settings, kafka_bootstrap=bootstrap, app_id=run_id, data_dir=workdir, metrics_port=0, **topics)


def _latest_lists(settings: Settings) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for message in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=1500, security=settings):
        if message.key == STRANGER_KEY:  # the list for strangers, not a user's
            continue
        payload = json.loads(message.value)
        latest[payload["user_id"]] = payload
    return latest


def _print_examples(events: list[dict[str, Any]], lists: dict[str, dict[str, Any]], n_users: int = 3) -> None:
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[event["user_id"]].append(event)
    buyers = [u for u in lists if any(e["type"] == "purchase" for e in by_user[u])][:n_users]
    for user in buyers:
        recent = ", ".join(f"{e['type']} {e['item_id']}" for e in by_user[user][-4:])
        top = ", ".join(f"{i['item_id']} ({_reason(i)})" for i in lists[user]["items"][:8])
        print(f"\n{user}: last events: {recent}\n  recommended: {top}")


def _reason(item: dict[str, Any]) -> str:
    """A list entry's ``because`` as a shop would word it."""
    why = item.get("because", {})
    kind = why.get("kind")
    if kind == "with_item":
        return f"goes with {why['item_id']}"
    names = {"recently_viewed": "you looked at it", "similar_users": "people like you", "popular": "popular now",
             "new": "new in"}
    return names.get(kind, "+".join(item["sources"]))
