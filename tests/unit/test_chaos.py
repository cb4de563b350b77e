"""The chaos suite's schedule, its reading of the changelog and its command line (the run itself is in
tests/integration/test_chaos.py)."""

from __future__ import annotations

import doctest
import random

import pytest

from stream_rec.profiles import event_digest
from tools import chaos, chaos_analysis
from tools.chaos import ChaosConfig, auto_rate, failures, schedule
from tools.chaos_analysis import (Fence, InputEvent, InputLog, Marks, Move, ProbeCase, Row, check_rows, find_moves,
                                  first_write, moved_users, probe_cases, probe_shares, takeover)
from tools.cli import build_parser

LANE = "0>shop.browse:0"


# -- the schedule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_the_schedule_has_every_fault_once_each_leave_after_a_join_in_the_middle_of_the_stream(seed: int) -> None:
    config = ChaosConfig()
    faults = schedule(config, 400.0, random.Random(seed))
    kinds = [f.kind for f in faults]
    assert {k: kinds.count(k) for k in set(kinds)} == {"kill": 10, "join": 5, "leave": 5, "pause": 1, "delete": 1,
                                                       "corrupt": 1}
    balance = 0
    for kind in kinds:  # join, leave, join, leave...: the group is --workers or one more
        balance += {"join": 1, "leave": -1}.get(kind, 0)
        assert balance in (0, 1)
    assert max(kinds.index("delete"), kinds.index("corrupt")) < len(kinds) // 2 + 2  # room to rebuild after
    times = [f.at_s for f in faults]
    assert times == sorted(times) and 0.05 * 400 <= times[0] and times[-1] <= 0.9 * 400
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.8 * 0.85 * 400 / len(faults)


def test_the_schedule_is_seeded() -> None:
    assert schedule(ChaosConfig(), 300.0, random.Random(3)) == schedule(ChaosConfig(), 300.0, random.Random(3))
    assert schedule(ChaosConfig(), 300.0, random.Random(3)) != schedule(ChaosConfig(), 300.0, random.Random(4))


def test_the_automatic_rate_spaces_the_faults_by_the_gap() -> None:
    config = ChaosConfig(events=10_000, kills=3, moves=1, broker_pauses=0, delete_state=1, corrupt_state=0,
                         fault_gap_s=17.0)
    assert 10_000 / auto_rate(config) == pytest.approx(6 * 17.0 / 0.85)
    assert ChaosConfig(workers=3).partitions_for() == 4 and ChaosConfig(workers=6).partitions_for() == 7


# -- ownership and takeovers ----------------------------------------------------------------------

MARKS = [Marks(0, 10, 1_000, "w1/11"), Marks(1, 10, 1_100, "w2/22"), Marks(0, 20, 2_000, "w1/11"),
         Marks(1, 30, 12_000, "w2/22"), Marks(0, 40, 12_500, "w2/22"), Marks(0, 50, 20_000, "w1/33")]
FENCES = [Fence(0, 25, 5_000, "w2/22"), Fence(0, 35, 11_000, "w2/22"), Fence(0, 45, 19_000, "w1/33")]


def test_a_change_of_writer_is_a_move_placed_at_the_new_owners_last_fence_before_its_first_marks() -> None:
    assert find_moves(MARKS, FENCES) == [
        Move(0, "w1/11", "w2/22", 35, 11_000, 2_000, 12_500),
        Move(0, "w2/22", "w1/33", 45, 19_000, 12_500, 20_000),
    ]


def test_a_takeover_lasts_until_every_partition_the_dead_process_held_is_written_by_another() -> None:
    t = takeover(MARKS, "w1/11", killed_ms=3_000)
    assert t.partitions == {0: 9.5} and t.seconds == 9.5
    assert takeover(MARKS, "w2/22", killed_ms=13_000).partitions == {0: 7.0, 1: None}
    assert takeover(MARKS, "w2/22", killed_ms=13_000).seconds is None  # partition 1 never written again
    assert takeover(MARKS, "w3/44", killed_ms=3_000).seconds == 0.0  # it held nothing
    assert first_write(MARKS, "w1/33") == 20_000 and first_write(MARKS, "w9/1") is None


# -- rows against the input -----------------------------------------------------------------------

def _events(user: str, *spec: tuple[str, int, str, str]) -> list[InputEvent]:
    return [InputEvent(user, lane, offset, etype, item, 1000 + offset) for lane, offset, etype, item in spec]


def _row(user: str, offset: int, events: list[InputEvent], marks: dict[str, int], purchases: tuple[str, ...] = (),
         partition: int = 0, ts_ms: int = 0) -> Row:
    """The row a worker writes after applying exactly ``events``."""
    counts = [0, 0, 0, 0]
    digest = 0
    for e in events:
        counts[("view", "click", "add_to_cart", "purchase").index(e.type)] += 1
        digest = (digest + event_digest(e.item, e.type, e.ts_ms)) & (2**64 - 1)
    return Row(partition, offset, ts_ms, user, tuple(counts), digest, marks, purchases)


CLICKS = "0>shop.click:0"
U = _events("u", (LANE, 3, "view", "a"), (CLICKS, 4, "click", "a"), (LANE, 9, "view", "b"), (CLICKS, 12, "click", "b"))


def test_rows_that_are_prefixes_of_their_users_events_are_exact_lane_by_lane() -> None:
    log = InputLog(U)
    rows = [_row("u", 1, U[:2], {LANE: 3, CLICKS: 4}),
            _row("u", 5, U[:3], {LANE: 9}),  # the click lane did not move: it stays at 4
            _row("u", 8, U, {CLICKS: 12})]
    check = check_rows(rows, log)
    assert check.checked == 3 and not check.inexact


def test_a_row_missing_an_event_or_holding_one_twice_is_not_exact() -> None:
    log = InputLog(U)
    lost = _row("u", 5, [U[0], U[2]], {LANE: 9, CLICKS: 4})  # claims the click at 4, does not count it
    twice = _row("u", 6, [U[0], U[0], U[1]], {LANE: 3, CLICKS: 4})
    stranger = _row("nobody", 7, [], {})
    check = check_rows([lost, twice, stranger], log)
    assert check.inexact == {(0, 5), (0, 6), (0, 7)} and len(check.examples) == 3


def test_a_moved_users_first_row_after_the_move_must_count_everything_before_it() -> None:
    log = InputLog(U)
    move = Move(0, "w1/1", "w2/2", 6, 5_000, 4_000, 6_000)
    kept = [_row("u", 2, U[:2], {LANE: 3, CLICKS: 4}), _row("u", 9, U[:3], {LANE: 9})]
    forgot = [_row("u", 2, U[:2], {LANE: 3, CLICKS: 4}), _row("u", 9, [U[2]], {LANE: 9})]
    for rows, survived in ((kept, 1), (forgot, 0)):
        result = moved_users(rows, [move], check_rows(rows, log))
        assert (result.pairs, result.users, result.survived, result.exact) == (1, 1, survived, survived)
    assert moved_users(kept[:1], [move], check_rows(kept[:1], log)).pairs == 0  # not active after the move


def test_the_probe_asks_for_the_partner_of_an_item_bought_before_the_move_and_not_bought_yet() -> None:
    move = Move(0, "w1/1", "w2/2", 6, 5_000, 4_000, 6_000)
    rows = [_row("u", 2, U[:2], {LANE: 3}, purchases=("a",)), _row("u", 9, U[:3], {LANE: 9}),
            _row("v", 3, U[:1], {LANE: 3}, purchases=("a", "b")),  # bought the partner already
            _row("w", 4, U[:1], {LANE: 3}, purchases=("a",), partition=1, ts_ms=4_500)]  # partition 1 did not move
    cases = probe_cases(rows, [move], {"a": "b"})
    assert sorted(cases, key=lambda c: c.user) == [ProbeCase("moved", "u", "b", 5_000),
                                                   ProbeCase("unmoved", "w", "b", 5_000)]
    lists = {"u": [(4_900, frozenset({"b"})), (5_100, frozenset({"c"}))], "w": [(5_000, frozenset({"b", "c"}))]}

    def first_list(user: str, since_ms: int) -> frozenset[str] | None:
        return next((items for at, items in lists.get(user, []) if at >= since_ms), None)

    shares = probe_shares(cases, first_list)
    assert (shares["moved"].cases, shares["moved"].hits) == (1, 0)
    assert (shares["unmoved"].cases, shares["unmoved"].hits, shares["unmoved"].share) == (1, 1, 1.0)


# -- the verdict and the command line -------------------------------------------------------------

def _report(**changes: object) -> dict:
    report = {"config": {"takeover_limit_s": 15.0},
              "verdict": {"lost": 0, "applied_twice": 0, "wrong_set": 0},
              "timing": {"caught_up_s": 3.0},
              "rebuilds": [{"worker": "w1", "fault": "delete", "restart_to_first_write_s": 12.0}],
              "exits": {"unplanned": []},
              "takeovers": [{"worker": "w2", "at_s": 30.0, "seconds": 9.0, "partitions": {0: 9.0}}]}
    report.update(changes)
    return report


def test_a_run_fails_on_loss_doubles_slow_takeovers_unbuilt_folders_and_exits_nobody_caused() -> None:
    assert failures(_report()) == []
    assert failures(_report(verdict={"lost": 2, "applied_twice": 1, "wrong_set": 0})) == [
        "2 events lost", "1 events applied twice"]
    slow = failures(_report(takeovers=[{"worker": "w2", "at_s": 30.0, "seconds": 15.5, "partitions": {0: 15.5}}]))
    assert slow == ["w2 killed at 30.0 s: takeover 15.5 s > 15 s"]
    assert "never rebuilt" in failures(_report(rebuilds=[{"worker": "w1", "fault": "corrupt",
                                                           "restart_to_first_write_s": None}]))[0]
    assert "by themselves" in failures(_report(exits={"unplanned": ["w1 (pid 7) exited 1"]}))[0]


def test_help_shows_every_option_with_its_default_and_environment_variable() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["chaos"]
    text = " ".join(sub.format_help().split())
    for flag, name, _ in chaos._OPTIONS:
        assert flag in text and f"env STREAM_REC_CHAOS_{name.upper()})" in text
    assert "(default: 100000; env STREAM_REC_CHAOS_EVENTS)" in text


def test_options_default_to_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_CHAOS_KILLS", "3")
    monkeypatch.setenv("STREAM_REC_CHAOS_PAUSE_S", "2.5")
    args = build_parser().parse_args(["chaos"])
    assert (args.kills, args.pause_s, args.workers) == (3, 2.5, 3)
    assert build_parser().parse_args(["chaos", "--kills", "7"]).kills == 7


@pytest.mark.parametrize("module", [chaos, chaos_analysis], ids=lambda m: m.__name__)
def test_the_examples_in_the_docstrings_hold(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # tools/ is not among the doctest paths of pytest's configuration
