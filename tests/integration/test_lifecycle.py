"""A worker that cannot make progress exits non-zero for its supervisor to restart it, and a stop never hangs.

Each case makes the failure for real: an exception raised inside the worker's service, a state write that
fails in RocksDB (the worker's files are capped with RLIMIT_FSIZE, as a full disk would stop them), a
broker that is stopped or paused (SIGSTOP: it accepts connections and never answers).
"""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agents.broker_watch import ANSWER_WITHIN_S, CHECK_EVERY_S
from agents.lifecycle import EXIT_BROKER_UNREACHABLE, EXIT_CRASHED, EXIT_STATE_WRITE, EXIT_STOP_TIMEOUT
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tests.integration.crashing_worker import MESSAGE
from tests.integration.helpers import STATE_EVENTS, start_worker, state_of, type_counts, user_event_counts
from tools.broker import EmbeddedBroker
from tools.produce import make_producer, produce_events
from tools.workers import WorkerProcess

pytestmark = pytest.mark.integration
ASSIGNED = "stream_rec_worker_assigned_partitions"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker for this test alone, which it may stop or pause."""
    with EmbeddedBroker(log_path=str(tmp_path / "broker.log")) as running:
        yield running
        if running._proc is not None:
            running._proc.send_signal(signal.SIGCONT)  # a paused broker must be able to stop


def _shop_events(n: int) -> list[dict]:
    events = list(SyntheticShop(ShopConfig(n_users=300, n_items=500, n_events=n, seed=11)).events())
    for e in events:
        del e["event_id"]  # idempotency from the stored offsets alone
    return events


def _produce(settings: Settings, events: list[dict]) -> None:
    producer = make_producer(settings.kafka_bootstrap)
    assert produce_events(producer, events, settings, key_by_user=False) == len(events)
    producer.close()


def _wait_exit(worker: WorkerProcess, timeout_s: float) -> tuple[int, float]:
    """The worker's exit code and how long it took to exit; fails if it is still running after ``timeout_s``."""
    assert worker.proc is not None
    started = time.monotonic()
    code = worker.proc.wait(timeout=timeout_s)
    return code, time.monotonic() - started


def test_an_exception_escaping_an_agent_ends_the_worker(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "crashing.log"
    worker = WorkerProcess(replace(settings, worker_id="crashing"), log_path=log,
                           module=("tests.integration.crashing_worker",)).start()
    try:
        worker.wait_for(ASSIGNED, 4, timeout_s=120)
        _produce(settings, _shop_events(50))
        code, _ = _wait_exit(worker, 60)
    finally:
        worker.stop(signal.SIGKILL)
    assert code == EXIT_CRASHED
    text = log.read_text()
    assert f"crashed: RuntimeError: {MESSAGE}" in text and "Traceback" in text


def test_a_failed_state_write_ends_the_worker_and_a_restart_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    settings = replace(settings, batch_max=200)  # many small writes: the failure lands mid-stream
    events = _shop_events(8_000)
    first = start_worker(settings, tmp_path)
    try:
        _produce(settings, events)
        first.wait_for(STATE_EVENTS, 1_000, timeout_s=120)
        # From here on no file of the worker may grow past its size plus 128 KiB: its RocksDB log will.
        assert first.proc is not None and first.log_path is not None
        sizes = [f.stat().st_size for f in settings.worker_dir.rglob("*") if f.is_file()]
        cap = max(sizes + [first.log_path.stat().st_size]) + 128 * 1024
        resource.prlimit(first.proc.pid, resource.RLIMIT_FSIZE, (cap, cap))
        code, _ = _wait_exit(first, 120)
    finally:
        first.stop(signal.SIGKILL)
    assert code == EXIT_STATE_WRITE
    assert "writing the state failed" in first.log_path.read_text()
    applied_before = state_of(settings).stats()["events_total"]
    assert 1_000 <= applied_before < len(events), "the failure must land mid-stream for this test to mean anything"

    second = start_worker(settings, tmp_path)
    try:
        second.wait_for(STATE_EVENTS, len(events), timeout_s=180)
        time.sleep(2.0)  # room for a redelivered batch to be (wrongly) applied twice before we look
    finally:
        assert second.stop() == 0
    state = state_of(settings)
    assert state.stats()["events"] == type_counts(events)  # none lost, none twice
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user_id"]] = expected.get(e["user_id"], 0) + 1
    assert user_event_counts(state) == expected


def test_a_worker_that_reaches_no_broker_exits(settings: Settings, tmp_path: Path, own_broker: EmbeddedBroker) -> None:
    settings = replace(settings, kafka_bootstrap=own_broker.bootstrap, broker_unreachable_s=5.0)
    worker = start_worker(settings, tmp_path)
    try:
        worker.wait_for(ASSIGNED, 4, timeout_s=120)
        own_broker.stop()
        code, waited = _wait_exit(worker, 60)
    finally:
        worker.stop(signal.SIGKILL)
    assert code == EXIT_BROKER_UNREACHABLE
    # Silence counts from the last answer, up to one look before the stop; one look may wait its full time.
    assert settings.broker_unreachable_s - CHECK_EVERY_S <= waited
    assert waited < settings.broker_unreachable_s + CHECK_EVERY_S + ANSWER_WITHIN_S + 2.0
    assert "no broker answered" in worker.log_path.read_text()  # type: ignore[union-attr]


@pytest.mark.parametrize("trouble", ["stopped", "paused"])
def test_sigterm_ends_the_worker_within_10_s_without_a_broker(settings: Settings, tmp_path: Path,
                                                              own_broker: EmbeddedBroker, trouble: str) -> None:
    settings = replace(settings, kafka_bootstrap=own_broker.bootstrap)
    worker = start_worker(settings, tmp_path)
    try:
        worker.wait_for(ASSIGNED, 4, timeout_s=120)
        _produce(settings, _shop_events(500))
        worker.wait_for(STATE_EVENTS, 500, timeout_s=60)
        if trouble == "stopped":
            own_broker.stop()
        else:
            assert own_broker._proc is not None
            own_broker._proc.send_signal(signal.SIGSTOP)
        time.sleep(2.0)  # the worker's clients notice
        assert worker.proc is not None
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code, waited = _wait_exit(worker, 30)
    finally:
        worker.stop(signal.SIGKILL)
    assert waited < 10.0, f"SIGTERM took {waited:.1f} s"
    assert code in (0, EXIT_STOP_TIMEOUT)
    print(f"SIGTERM with the broker {trouble}: exit {code} after {time.monotonic() - started:.1f} s")
