"""The two learning threads' hand-over (stream_rec.engine.handover): waits that end, time off core that is counted,
and the loop's decision to go on alone. No test here depends on how fast the machine is."""

from __future__ import annotations

import threading
import time

import numpy as np

from stream_rec.engine.handover import (ABORT, ALONE, ALONE_AT, GO, LISTED, MOVED_BY_SECOND, NEED, OFF_CORE,
                                     OFF_CORE_MIN_NS, STARTED, THREADS, go_alone, new_sync, set_clock,
                                     should_go_alone, thread_clock, wait_for)


def _later(seconds: float, action) -> threading.Thread:  # type: ignore[no-untyped-def]
    """A thread that sleeps ``seconds`` (off its core all along), then does ``action``."""
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_wait_for_a_value_already_there_returns_at_once_and_counts_nothing() -> None:
    sync = new_sync(2)
    sync[LISTED] = 5
    assert wait_for(sync, LISTED, 5) and wait_for(sync, LISTED, 3)
    assert sync[OFF_CORE] == 0


def test_a_wait_on_a_thread_that_sleeps_ends_when_the_value_comes_and_counts_its_time_off_core() -> None:
    sync = new_sync(2)
    assert wait_for(sync, LISTED, 0)  # compiled before the other thread starts its clock
    other = _later(0.3, lambda: sync.__setitem__(LISTED, 1))
    set_clock(sync, MOVED_BY_SECOND, thread_clock(other.ident))
    assert wait_for(sync, LISTED, 1)
    other.join()
    assert sync[OFF_CORE] > 100_000_000  # it slept through the wait (0.3 s): off its core


def test_a_wait_stops_when_the_other_thread_gives_up() -> None:
    sync = new_sync(2)
    other = _later(0.2, lambda: sync.__setitem__(ABORT, 1))
    assert not wait_for(sync, LISTED, 1)
    other.join()


def test_the_loop_goes_alone_once_waits_off_core_are_a_share_of_the_call_or_at_the_event_it_was_given() -> None:
    sync = new_sync(2)
    assert not should_go_alone(sync, 10**9)
    sync[STARTED] -= 10**12  # a call that began 1,000 s ago: a millisecond off core is nothing in it
    sync[OFF_CORE] = 2 * OFF_CORE_MIN_NS
    assert not should_go_alone(sync, 0)
    sync[OFF_CORE] = 10**12
    assert should_go_alone(sync, 0)
    assert should_go_alone(new_sync(2, alone_at=7), 7) and not should_go_alone(new_sync(2, alone_at=7), 6)


def test_going_alone_sends_the_second_thread_away_at_that_event_and_records_where() -> None:
    sync = new_sync(2)
    go_alone(sync, 41)
    assert sync[GO] == 42 and sync[NEED] == ALONE and sync[THREADS] == 1 and sync[ALONE_AT] == 41
    assert np.all(sync[[OFF_CORE, ABORT]] == 0)
