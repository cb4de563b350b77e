"""Workers in one consumer group: every worker gets partitions, and group changes stop the work only briefly.

The pauses and the takeover are measured from the lists the workers publish (tools/group_timing.py): a
steady paced input keeps every partition busy, so a partition without lists is a partition nobody serves.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from tests.integration.helpers import start_worker
from tools.group_timing import ASSIGNED, owned, run_scenario, wait_for_assignment

pytestmark = pytest.mark.integration

#: The system's target from a worker's death to its users being served again, state restored included.
TAKEOVER_TARGET_S = 15.0
#: A join or a leave must stop the work for less than a death does (before: 5-7 s for a join, and a leave
#: left a worker without partitions for 20 s).
PAUSE_LIMIT_S = 10.0


def test_every_worker_gets_partitions_when_there_are_at_least_as_many(settings: Settings, tmp_path: Path) -> None:
    assert settings.partitions == 4
    workers = [start_worker(settings, tmp_path, f"worker-{n}") for n in (1, 2, 3)]
    try:
        counts = wait_for_assignment(workers, settings.partitions, timeout_s=120)  # each >= 1, 4 in all
        assert sorted(counts) == [1, 1, 2]
        workers.append(start_worker(settings, tmp_path, "worker-4"))
        _wait_for_counts(workers, [1, 1, 1, 1])
        owners = [owned(w) for w in workers]
        assert sorted(p for ps in owners for p in ps or []) == [0, 1, 2, 3], f"not disjoint: {owners}"
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0, 0, 0]


def test_join_leave_and_kill_stop_the_work_briefly(settings: Settings, tmp_path: Path) -> None:
    # Two workers; a third joins, then leaves (SIGTERM); then one of the first two is killed with SIGKILL.
    figures = run_scenario(replace(settings, batch_max=200), tmp_path, rate=200.0, timeout_s=120)
    print(f"group timing: {figures}")
    assert figures["takeover_s"] is not None and figures["takeover_s"] < TAKEOVER_TARGET_S, figures
    assert figures["join_pause_s"] < PAUSE_LIMIT_S, figures
    assert figures["leave_pause_s"] < PAUSE_LIMIT_S, figures


def _wait_for_counts(workers: list, expected: list[int], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    counts: list[int] = []
    while time.monotonic() < deadline:
        counts = [int(w.metrics().get(ASSIGNED, 0)) for w in workers]
        if counts == expected:
            return
        time.sleep(0.3)
    raise TimeoutError(f"partitions per worker {counts}, expected {expected}")
