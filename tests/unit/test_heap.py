"""stream_rec.heap: the collector stays out of a batch, and start-up objects leave its scans."""

from __future__ import annotations

import gc

from stream_rec.heap import collections_paused, settle


def test_no_collection_runs_inside_a_paused_block_and_collection_resumes_after() -> None:
    runs: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with collections_paused():
            assert not gc.isenabled()
            junk = [[{"n": [i]} for i in range(50)] for _ in range(2_000)]  # far past gen-0's threshold
            assert runs == []
            del junk
        assert gc.isenabled()
        _ = [[[]] for _ in range(10_000)]
        assert runs, "the collector should run again after the block"
    finally:
        gc.callbacks.remove(seen)


def test_a_disabled_collector_stays_disabled_after_a_paused_block() -> None:
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_settle_freezes_what_is_alive() -> None:
    try:
        frozen = settle()
        assert frozen == gc.get_freeze_count() > 1_000  # at least pytest's own modules and objects
    finally:
        gc.unfreeze()
