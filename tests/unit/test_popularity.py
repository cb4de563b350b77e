"""Known-answer tests for :class:`stream_rec.models.popularity.DecayedPopularity`."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.models.popularity import ITEM_STATE_DTYPE, DecayedPopularity


def _learn(model: DecayedPopularity, items: list[int], ts: list[float], weights: list[float] | None = None) -> None:
    w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=float)
    model.learn_many(np.zeros(len(items), dtype=np.int64), np.asarray(items), w, np.asarray(ts, dtype=float))


def test_one_event_halves_after_one_half_life() -> None:
    pop = DecayedPopularity(half_life_s=10.0)
    _learn(pop, [0, 1], [0.0, 10.0])  # item 1 only moves the clock to t=10
    assert pop.now == 10.0
    assert pop.score(-1, np.array([0]))[0] == pytest.approx(0.5)


def test_events_accumulate_with_decay() -> None:
    pop = DecayedPopularity(half_life_s=10.0)
    _learn(pop, [0, 0], [0.0, 10.0], weights=[2.0, 1.0])
    assert pop.score(7, np.array([0]))[0] == pytest.approx(2.0)  # 2 * 0.5 + 1
    _learn(pop, [1], [20.0])
    assert pop.score(7, np.array([0]))[0] == pytest.approx(1.0)


def test_late_event_counts_like_an_in_order_one() -> None:
    in_order, late = DecayedPopularity(half_life_s=10.0), DecayedPopularity(half_life_s=10.0)
    _learn(in_order, [0, 0], [0.0, 10.0])
    _learn(late, [0], [10.0])
    _learn(late, [0], [0.0])
    assert late.score(-1, np.array([0]))[0] == pytest.approx(1.5)
    assert in_order.item_state(0) == late.item_state(0)


def test_recommend_ranks_by_decayed_value_ignores_user_and_excludes() -> None:
    pop = DecayedPopularity(half_life_s=10.0)
    # item 3: 4 events long ago (4 * 2**-3 = 0.5 now); item 1: 2 recent events; item 2: 1 recent.
    _learn(pop, [3, 3, 3, 3, 1, 1, 2], [0.0, 0.0, 0.0, 0.0, 30.0, 30.0, 30.0])
    items, scores = pop.recommend(5, 3)
    assert items.tolist() == [1, 2, 3]
    np.testing.assert_allclose(scores, [2.0, 1.0, 0.5])
    assert pop.recommend(-1, 3, exclude=np.array([1]))[0].tolist() == [2, 3]
    np.testing.assert_array_equal(pop.score(-1, np.array([9, -1])), [0.0, 0.0])  # unseen items


def test_new_items_filters_by_age_and_event_count() -> None:
    pop = DecayedPopularity()
    _learn(pop, [0, 1, 2, 2, 2], [0.0, 90.0, 95.0, 96.0, 97.0])
    assert pop.new_items(now=100.0, max_age_s=50.0, max_events=5).tolist() == [1, 2]
    assert pop.new_items(now=100.0, max_age_s=50.0, max_events=2).tolist() == [1]
    assert pop.new_items(now=100.0, max_age_s=200.0, max_events=1).tolist() == [0, 1]


def test_item_state_layout_and_no_user_state() -> None:
    pop = DecayedPopularity(half_life_s=10.0)
    _learn(pop, [4, 4], [5.0, 15.0])
    rec = np.frombuffer(pop.item_state(4), dtype=ITEM_STATE_DTYPE)[0]
    assert (rec["value"], rec["last_ts"], rec["first_seen"], rec["n_events"]) == (1.5, 15.0, 5.0, 2)
    assert pop.user_state(0) is None and pop.item_state(3) is None
    users, items = pop.pop_touched()
    assert users.tolist() == [] and items.tolist() == [4]


def test_ties_at_the_cut_go_to_the_lower_index() -> None:
    pop = DecayedPopularity()
    items = np.array([9, 3, 7, 5, 1])  # all equally popular
    pop.learn_many(np.zeros(5), items, np.ones(5), np.zeros(5))
    assert pop.recommend(-1, 2)[0].tolist() == [1, 3]
    assert pop.recommend(-1, 2, exclude=np.array([1, 42]))[0].tolist() == [3, 5]


def test_each_category_keeps_its_own_ranking_and_an_item_follows_its_latest_category() -> None:
    pop = DecayedPopularity(half_life_s=1e9)
    items = np.array([1, 1, 1, 2, 2, 3, 4, 4, 4, 4, 5])
    cats = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    pop.learn_many(np.zeros(len(items)), items, np.ones(len(items)), np.arange(len(items), dtype=float), categories=cats)
    assert pop.category_top([2], k=5)[0].tolist() == [1, 2, 5]  # category 0, most popular first
    assert pop.category_top([3], k=5)[0].tolist() == [4, 3]
    # Item 5 moves to category 1; a history in both categories leads with its newest one's best.
    pop.learn_many(np.zeros(1), np.array([5]), np.ones(1), np.array([20.0]), categories=np.array([1]))
    assert pop.category_top([2], k=5)[0].tolist() == [1, 2]
    ranked, scores = pop.category_top([1, 4], k=4)  # newest history item 4: category 1 first
    assert ranked.tolist()[:2] == [4, 1] and np.all(np.diff(scores) <= 0)
    assert pop.category_of(5) == 1 and pop.category_of(99) == -1


def test_categories_survive_a_restart_and_rows_written_before_categories_still_load() -> None:
    pop = DecayedPopularity(half_life_s=100.0)
    pop.learn_many(np.zeros(4), np.array([7, 7, 8, 9]), np.ones(4), np.arange(4.0), categories=np.array([2, 2, 2, -1]))
    rows = {i: pop.item_state(i) for i in (7, 8, 9)}
    restored = DecayedPopularity(half_life_s=100.0)
    restored.load_item_rows(np.array([7, 8, 9]), [rows[i] for i in (7, 8, 9)])
    assert restored.category_top([8], k=3)[0].tolist() == pop.category_top([8], k=3)[0].tolist() == [7, 8]
    old = DecayedPopularity(half_life_s=100.0)  # a 32-byte row of the previous layout: no category
    old.set_item_state(7, rows[7][:32])
    assert old.category_of(7) == -1 and old.recommend(-1, 1)[0].tolist() == [7]
