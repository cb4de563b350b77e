"""A short chaos run (``stream-rec chaos``): workers under a supervisor, kill -9 twice, a join and a leave, a
deleted state folder, while events stream in; the changelog must then hold every event exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from tools.broker import EmbeddedBroker
from tools.chaos import ChaosConfig, format_report, run_chaos

pytestmark = pytest.mark.integration


def test_a_short_chaos_run_applies_every_event_exactly_once(settings: Settings, broker: EmbeddedBroker,
                                                            tmp_path: Path) -> None:
    config = ChaosConfig(events=8_000, users=800, items=600, workers=2, kills=2, moves=1, broker_pauses=0,
                         delete_state=1, corrupt_state=0, fault_gap_s=15.0, catch_up_timeout_s=120.0,
                         workdir=str(tmp_path / "chaos"))
    started = time.monotonic()
    report = run_chaos(config, settings, broker)
    seconds = time.monotonic() - started
    text = format_report(report)
    print(text, f"\n(the run took {seconds:.0f} s)")

    verdict = report["verdict"]
    assert (verdict["events_in"], verdict["applied"]) == (8_000, 8_000), text
    assert (verdict["lost"], verdict["applied_twice"], verdict["wrong_set"], verdict["users_missing"]) == (0, 0, 0, 0)
    assert report["rows"]["checked"] > 1_000 and report["rows"]["inexact"] == 0, text
    assert [f["kind"] for f in report["faults"]].count("kill") == 2

    takeovers = report["takeovers"]  # the two kills and the deleted folder's
    assert len(takeovers) == 3 and any(t["partitions"] for t in takeovers), text
    assert all(t["seconds"] is not None and t["seconds"] <= config.takeover_limit_s for t in takeovers), text

    (rebuild,) = report["rebuilds"]
    assert rebuild["restart_to_first_write_s"] is not None, text  # the rebuilt worker applied events again
    assert any("no local state" in line for line in rebuild["log"]), text

    moved = report["moved_users"]
    assert report["moves"]["count"] >= 2 and moved["pairs"] > 0, text
    assert moved["survived"] == moved["exact"] == moved["pairs"], text
    assert report["exits"]["unplanned"] == [] and report["passed"], text
