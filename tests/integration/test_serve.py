"""`stream-rec serve` against the embedded broker, beside a real worker: what a shop's front end reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream_rec.settings import Settings
from tests.integration.helpers import STATE_EVENTS, T0, bought_together, event, start_worker
from tools.broker import free_port
from tools.produce import make_producer, produce_events, read_topic
from tools.workers import ServeProcess, settings_env

ROOT = Path(__file__).resolve().parents[2]


def latest_on_topic(settings: Settings) -> dict[bytes, Any]:
    """The latest value of every key on the recommendations topic, the list for strangers (b"") and
    tombstones (None) included."""
    return {m.key: (None if m.value is None else json.loads(m.value))
            for m in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=1500)}


def wait_for_answer(serve: ServeProcess, user: str, expect: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """The API's answer for ``user`` once its fields in ``expect`` match (the copy trails the topic a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = serve.get(f"/users/{user}/recommendations")
        assert status == 200, body
        if all(body[name] == value for name, value in expect.items()):
            return body
        if time.monotonic() >= deadline:
            raise AssertionError(f"the answer for {user} never matched {expect}: {body}")
        time.sleep(0.05)


def assert_serves(serve: ServeProcess, topic: dict[bytes, Any], forgotten: str, timeout_s: float = 30.0) -> None:
    """``serve`` answers with the ``topic``'s latest lists within ``timeout_s`` (0: at once)."""
    buyer, stranger = topic[b"new-buyer"], topic[b""]
    body = wait_for_answer(serve, "new-buyer", {"generated_at": buyer["generated_at"]}, timeout_s)
    assert body["items"] == buyer["items"] and body["known"] is True and body["user_id"] == "new-buyer"
    assert "memory-card" in [i["item_id"] for i in body["items"]][:3]  # what the worker learned
    assert 0 <= body["age_ms"] < 600_000
    assert (body["list_id"], body["variant"]) == (buyer["list_id"], "default")  # the published list's own
    unknown = wait_for_answer(serve, "walked-in-today", {"known": False}, timeout_s)
    assert unknown["items"] == stranger["items"] and unknown["generated_at"] == stranger["generated_at"]
    assert unknown["user_id"] == "walked-in-today" and unknown["items"]
    assert all(i["because"] == {"kind": "popular"} for i in unknown["items"])  # a stranger gets what is popular
    gone = wait_for_answer(serve, forgotten, {"known": False}, timeout_s)
    assert gone["items"] == stranger["items"]


def test_serve_answers_what_the_worker_published_and_resumes_after_a_restart(settings: Settings,
                                                                             tmp_path: Path) -> None:
    settings = replace(settings, serve_port=free_port(), top_n=5)
    events = bought_together(20) + [event("new-buyer", "camera", "purchase", T0 + 10_000_000)]
    worker = start_worker(settings, tmp_path)
    serve = ServeProcess(settings, log_path=tmp_path / "serve.log").start()
    restarted = fresh = None
    try:
        producer = make_producer(settings.kafka_bootstrap)
        assert produce_events(producer, events, settings) == len(events)
        worker.wait_for(STATE_EVENTS, len(events), timeout_s=90)
        # Stopped, so the topic stays as it is from here (a worker sends the list for strangers again a period
        # after a batch: comparing the API with a snapshot of the topic would race with that).
        assert worker.stop() == 0
        serve.wait_ready(timeout_s=60)
        topic = latest_on_topic(settings)
        assert topic[b""]["user_id"] == "" and topic[b""]["trigger"] is None  # the worker's list for strangers
        assert wait_for_answer(serve, "shopper-3", {"known": True})["items"] == topic[b"shopper-3"]["items"]

        producer.send(settings.topic_recommendations, key=b"shopper-3", value=None).get(timeout=10)  # a tombstone
        producer.close()
        assert_serves(serve, latest_on_topic(settings), forgotten="shopper-3")
        status, health = serve.get("/healthz")
        assert status == 200 and (health["deleted"], health["invalid"], health["no_key"]) == (1, 0, 0)
        assert health["lists"] >= 22  # 21 users and strangers, one list or more each
        assert serve.stop() == 0  # SIGTERM: a clean stop

        topic = latest_on_topic(settings)
        restarted = ServeProcess(settings, log_path=tmp_path / "serve-2.log").start()
        # A second replica with a copy of its own (another port), started on a topic that holds everything.
        fresh = ServeProcess(replace(settings, serve_port=free_port()), log_path=tmp_path / "serve-3.log").start()
        restarted.wait_ready(timeout_s=60)
        assert_serves(restarted, topic, forgotten="shopper-3", timeout_s=0)
        assert restarted.get("/healthz")[1]["lists"] == 0  # resumed from its stored offsets: nothing read again
        fresh.wait_ready(timeout_s=60)
        assert_serves(fresh, topic, forgotten="shopper-3", timeout_s=0)  # ready means caught up
        assert fresh.get("/healthz")[1]["lists"] >= 22
    finally:
        for process in (worker, serve, restarted, fresh):
            if process is not None:
                process.stop()


def test_a_taken_port_or_no_broker_is_one_clear_line(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = replace(settings, serve_port=held.getsockname()[1])
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "serve"], env=settings_env(taken) | {"PATH": ""},
                              capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"stream-rec serve: cannot listen on 127.0.0.1:{taken.serve_port}" in proc.stderr

    nobody = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "serve"], env=settings_env(nobody) | {"PATH": ""},
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("stream-rec serve: no Kafka broker answers")
