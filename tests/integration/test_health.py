"""A real worker's health endpoint: /readyz answers 503 until the worker does its job, then 200; and what
a worker writes to a file (its stdout and stderr) is log records only, no terminal escapes."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.health import CONDITIONS
from stream_rec.settings import Settings
from tests.integration.helpers import start_worker
from tools.workers import WorkerProcess

pytestmark = pytest.mark.integration
ASSIGNED = "stream_rec_worker_assigned_partitions"


def _watch_readiness(worker: WorkerProcess, timeout_s: float) -> list[tuple[float, int, list[str]]]:
    """``(seconds since start, status, waiting_for)`` at each change of /readyz's answer, until it is 200."""
    started = time.monotonic()
    changes: list[tuple[float, int, list[str]]] = []
    while time.monotonic() - started < timeout_s:
        worker._check_alive()
        try:
            status, body = worker.get("/readyz")
        except OSError:  # not listening yet
            time.sleep(0.05)
            continue
        if not changes or (status, body["waiting_for"]) != changes[-1][1:]:
            changes.append((round(time.monotonic() - started, 2), status, body["waiting_for"]))
        if status == 200:
            return changes
        time.sleep(0.05)
    raise TimeoutError(f"not ready within {timeout_s} s: {changes} (log: {worker.log_path})")


def test_readyz_turns_200_once_the_worker_owns_its_restored_partitions(settings: Settings, tmp_path: Path) -> None:
    worker = start_worker(settings, tmp_path)
    try:
        changes = _watch_readiness(worker, timeout_s=120)
        print("\n/readyz of a starting worker (s since start, status, waiting for):", *changes, sep="\n  ")
        statuses, waits = [status for _, status, _ in changes], [set(waiting) for _, _, waiting in changes]
        assert statuses == [503] * (len(changes) - 1) + [200] and waits[-1] == set()
        assert waits[0] <= set(CONDITIONS) and all(later < earlier for earlier, later in zip(waits, waits[1:]))
        assert any("partitions" in waiting for waiting in waits)  # it did wait for the group
        assert worker.metrics()[ASSIGNED] == settings.partitions  # ready means it owns its partitions
        assert worker.get("/healthz") == (200, {"status": "ok"})
        assert worker.get("/nowhere")[0] == 404
    finally:
        assert worker.stop() == 0


def test_a_worker_with_no_partition_is_a_ready_standby(settings: Settings, tmp_path: Path) -> None:
    one = replace(settings, partitions=1)
    first = start_worker(one, tmp_path, "worker-1")
    second = start_worker(one, tmp_path, "worker-2")
    try:
        first.wait_ready(timeout_s=120)
        second.wait_ready(timeout_s=120)
        deadline = time.monotonic() + 60  # both in one generation of the group: one partition between them
        while sorted(w.metrics().get(ASSIGNED, -1) for w in (first, second)) != [0, 1]:
            assert time.monotonic() < deadline, "the group never settled on one owner"
            time.sleep(0.2)
        assert all(w.get("/readyz")[0] == 200 for w in (first, second))
    finally:
        assert second.stop() == 0 and first.stop() == 0


def test_a_json_log_file_holds_one_object_per_line_and_no_terminal_escape(settings: Settings, tmp_path: Path) -> None:
    worker = start_worker(replace(settings, log_format="json"), tmp_path)
    try:
        worker.wait_ready(timeout_s=120)
    finally:
        assert worker.stop() == 0
    raw = (tmp_path / "worker-1.log").read_bytes()
    assert b"\x1b" not in raw  # Faust's spinner hid and showed the cursor in files too
    records = [json.loads(line) for line in raw.decode().splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"].startswith("ready:") and r["logger"] == "agents.health" for r in records)
