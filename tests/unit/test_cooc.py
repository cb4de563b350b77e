"""Known-answer tests for :class:`stream_rec.models.cooc.CoOccurrence`."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.models.cooc import HISTORY_DTYPE, NEIGHBOR_DTYPE, CoOccurrence

A, B = 0, 1


def _learn(model: CoOccurrence, events: list[tuple[int, int, float, float]]) -> None:
    users, items, weights, ts = (np.array(col) for col in zip(*events))
    model.learn_many(users, items, weights.astype(float), ts.astype(float))


def _neighbors(model: CoOccurrence, item: int) -> tuple[float, float, dict[int, float]]:
    data = model.item_state(item)
    total, row_ts = np.frombuffer(data[:16], "<f8")
    rec = np.frombuffer(data[16:], NEIGHBOR_DTYPE)
    return float(total), float(row_ts), dict(zip(rec["item"].tolist(), rec["count"].tolist()))


@pytest.fixture
def bought_together() -> CoOccurrence:
    """20 users buy A then B; 10 of them also browse a random item; user 100 has only seen A."""
    rng = np.random.default_rng(0)
    events = []
    for u in range(20):
        events += [(u, A, 5.0, 100.0 * u), (u, B, 5.0, 100.0 * u + 1)]
        if u % 2:
            events.append((u, int(rng.integers(2, 30)), 1.0, 100.0 * u + 2))
    events.append((100, A, 1.0, 5000.0))
    model = CoOccurrence()
    _learn(model, events)
    return model


def test_item_bought_together_comes_first(bought_together: CoOccurrence) -> None:
    items, scores = bought_together.recommend(100, 5)
    assert items[0] == B
    assert scores[0] > 2 * scores[1]
    assert bought_together.score(100, np.array([B]))[0] == scores[0]


def test_excluded_item_never_returned(bought_together: CoOccurrence) -> None:
    items, _ = bought_together.recommend(100, 5, exclude=np.array([B]))
    assert B not in items.tolist() and len(items) > 0


def test_user_without_history_gets_nothing(bought_together: CoOccurrence) -> None:
    assert len(bought_together.recommend(-1, 5)[0]) == 0
    assert len(bought_together.recommend(555, 5)[0]) == 0
    np.testing.assert_array_equal(bought_together.score(-1, np.array([A, B])), [0.0, 0.0])


def test_same_session_pairs_count_double_with_the_smaller_weight() -> None:
    model = CoOccurrence(session_gap_s=1800.0)
    _learn(model, [(0, 10, 5.0, 0.0), (0, 11, 1.0, 10.0), (1, 20, 1.0, 0.0), (1, 21, 1.0, 5000.0)])
    assert _neighbors(model, 11)[2] == {10: 2.0}
    assert _neighbors(model, 10)[2] == {11: 2.0}
    assert _neighbors(model, 21)[2] == {20: 1.0}  # a 5000 s silence ends the session


def test_neighbor_rows_stay_bounded_and_keep_the_strongest() -> None:
    model = CoOccurrence(max_neighbors=10)
    events = [(u, 0, 1.0, 10.0 * u) for u in range(5)] + [(u, 99, 1.0, 10.0 * u + 1) for u in range(5)]
    events += [(100 + j, 0, 1.0, 1000.0 + j) for j in range(50)]
    events += [(100 + j, 1 + j, 1.0, 1000.5 + j) for j in range(50)]
    _learn(model, sorted(events, key=lambda e: e[3]))
    row = _neighbors(model, 0)[2]
    assert len(row) <= 10
    assert 99 in row and row[99] == max(row.values())


def test_history_is_bounded_distinct_and_newest_last() -> None:
    model = CoOccurrence(history_size=3)
    _learn(model, [(7, item, 1.0, float(t)) for t, item in enumerate([1, 2, 3, 2, 4])])
    hist = np.frombuffer(model.user_state(7), HISTORY_DTYPE)
    assert hist["item"].tolist() == [3, 2, 4]
    assert hist["ts"].tolist() == [2.0, 3.0, 4.0]


def test_half_life_decays_totals_and_favours_recent_pairs() -> None:
    events = [(0, A, 1.0, 0.0), (0, 1, 1.0, 1.0), (1, A, 1.0, 100.0), (1, 2, 1.0, 101.0), (2, A, 1.0, 102.0)]
    forever, decayed = CoOccurrence(), CoOccurrence(half_life_s=10.0)
    _learn(forever, events)
    _learn(decayed, events)
    assert forever.recommend(2, 2)[0].tolist() == [1, 2]  # equal evidence: tie broken by index
    assert decayed.recommend(2, 2)[0].tolist() == [2, 1]  # the recent pair wins

    model = CoOccurrence(half_life_s=10.0)
    _learn(model, [(0, 5, 1.0, 0.0), (1, 5, 1.0, 10.0)])
    total, row_ts, _ = _neighbors(model, 5)
    assert (total, row_ts) == (pytest.approx(1.5), 10.0)


def test_ties_at_the_cut_go_to_the_lower_index() -> None:
    model = CoOccurrence()
    # Users 1-4 each see 50 then one other item: 40, 30, 20 and 10 are equally close to 50.
    events = []
    for u, item in enumerate([40, 30, 20, 10], 1):
        events += [(u, 50, 1.0, 10.0 * u), (u, item, 1.0, 10.0 * u + 1)]
    _learn(model, events + [(9, 50, 1.0, 100.0)])
    items, scores = model.recommend(9, 2)
    assert items.tolist() == [10, 20]
    assert scores[0] == scores[1] > 0


def test_scores_keep_their_definition_through_decay_and_a_new_reference_time() -> None:
    """With a half-life, a score is ``sum_h 0.8 ** rank(h) * C[h, j] / (sqrt(n_h) * n_j ** 0.3)`` with
    every count and total decayed to one time. Rows only decayed since their total last changed, and a
    move of the model's internal reference time midway (a one-second half-life over 200 s moves it once,
    at ~1667 s), must leave the scores what that formula gives. Item 29 has no event after 1660 s: its
    row is only decayed, by later pairs, after the move."""
    half_life, late = 1.0, 29
    rng = np.random.default_rng(7)
    ts = np.sort(rng.uniform(1600.0, 1800.0, 300))
    items = rng.integers(0, 30, len(ts))
    items[(items == late) & (ts > 1660.0)] = 0
    events = [(int(rng.integers(0, 10)), int(i), float(rng.choice([1.0, 4.0])), float(t)) for i, t in zip(items, ts)]
    model = CoOccurrence(history_size=5, half_life_s=half_life)
    _learn(model, events)
    user, now = events[-1][0], events[-1][3]

    def at_now(value: float, row_ts: float) -> float:
        return value * 2.0 ** (-(now - row_ts) / half_life)

    rows = {item: _neighbors(model, item) for item in range(30)}
    history = np.frombuffer(model.user_state(user), HISTORY_DTYPE)["item"][::-1]  # newest first
    expected = np.zeros(30)
    for rank, h in enumerate(history.tolist()):
        total_h, ts_h, counts = rows[h]
        for j, count in counts.items():
            total_j, ts_j, _ = rows[j]
            expected[j] += 0.8**rank * at_now(count, ts_h) / (np.sqrt(at_now(total_h, ts_h))
                                                             * at_now(total_j, ts_j) ** 0.3)
    got = model.score(user, np.arange(30))
    assert (expected > 0).sum() >= 10 and expected[late] > 0
    np.testing.assert_allclose(got / got.max(), expected / expected.max(), rtol=1e-9)
