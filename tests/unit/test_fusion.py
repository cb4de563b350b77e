"""Known-answer tests for :class:`stream_rec.fusion.Fusion`."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.models.cooc import CoOccurrence
from stream_rec.fusion import EXPLORE_SCAN, SHOWS_PER_EVENT, WEIGHT_GRID, Fusion
from stream_rec.models.mf import ImplicitMF
from stream_rec.models.popularity import DecayedPopularity
from stream_rec.settings import settings_table

N_ITEMS = 40
NEW_ITEMS = [37, 38, 39]  # appear once, at the very end of the stream
DAY = 86400.0


@pytest.fixture(scope="module")
def sources() -> dict:
    """Ten days of traffic over items 0-36, then one event each on items 37-39."""
    rng = np.random.default_rng(11)
    n = 2000
    users = rng.integers(0, 50, n)
    items = np.minimum(rng.zipf(1.3, n) - 1, 36)
    ts = np.sort(rng.uniform(0.0, 10 * DAY, n))
    users = np.concatenate([users, [0, 1, 2]])
    items = np.concatenate([items, NEW_ITEMS])
    ts = np.concatenate([ts, [10 * DAY + 1, 10 * DAY + 2, 10 * DAY + 3]])
    models = {
        "mf": ImplicitMF(n_factors=8, seed=1),
        "cooc": CoOccurrence(history_size=10),
        "popular": DecayedPopularity(half_life_s=DAY),
    }
    for m in models.values():
        m.learn_many(users, items, np.ones(len(users)), ts)
    return models


def _check_list(items: np.ndarray, scores: np.ndarray, labels: list, exclude: np.ndarray) -> None:
    assert len(items) == len(scores) == len(labels)
    assert len(set(items.tolist())) == len(items)
    assert not set(items.tolist()) & set(exclude.tolist())
    assert np.all(np.diff(scores) <= 0)


def test_returns_exactly_k_when_catalogue_allows(sources: dict) -> None:
    fusion = Fusion(sources, candidates_per_source=5, explore=0.2)
    exclude = np.arange(10)
    for user in [3, 4, -1]:
        items, scores, labels = fusion.recommend(user, 25, exclude)
        assert len(items) == 25
        _check_list(items, scores, labels, exclude)
    # Only 30 items are not excluded: asking for more returns all of them.
    items, scores, labels = fusion.recommend(3, 35, exclude)
    assert sorted(items.tolist()) == list(range(10, N_ITEMS))


def test_deterministic_without_exploration(sources: dict) -> None:
    a, b = Fusion(sources, explore=0.0, seed=1), Fusion(sources, explore=0.0, seed=2)
    first = a.recommend(5, 10)
    for again in (a.recommend(5, 10), b.recommend(5, 10)):
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
        assert first[2] == again[2]
    assert ("explore",) not in first[2]


def test_exploration_slots_hold_new_items_at_the_end(sources: dict) -> None:
    fusion = Fusion(sources, explore=0.5, explore_max_age_s=DAY, explore_max_events=1, seed=3)
    exclude = np.array([NEW_ITEMS[0]])
    items, scores, labels = fusion.recommend(5, 4, exclude)
    _check_list(items, scores, labels, exclude)
    assert labels[-2:] == [("explore",), ("explore",)] and ("explore",) not in labels[:2]
    assert set(items[-2:].tolist()) == set(NEW_ITEMS[1:])
    # Same seed, same exploration draws.
    again = Fusion(sources, explore=0.5, explore_max_age_s=DAY, explore_max_events=1, seed=3)
    np.testing.assert_array_equal(again.recommend(5, 4, exclude)[0], items)


def test_unfilled_exploration_slots_go_back_to_exploitation(sources: dict) -> None:
    fusion = Fusion(sources, explore=1.0, explore_max_age_s=DAY, explore_max_events=1)
    items, _, labels = fusion.recommend(5, 10)
    assert len(items) == 10
    assert labels.count(("explore",)) == len(NEW_ITEMS)


def test_labels_name_the_sources_that_proposed_each_item(sources: dict) -> None:
    fusion = Fusion(sources, candidates_per_source=8, explore=0.0)
    exclude = np.array([0, 1])
    items, _, labels = fusion.recommend(7, 15, exclude)
    depth = {"mf": 8, "cooc": 8, "popular": 15}  # popular is read at least k deep
    proposed = {name: set(m.recommend(7, depth[name], exclude)[0].tolist()) for name, m in sources.items()}
    for item, label in zip(items.tolist(), labels):
        assert label == tuple(name for name in sources if item in proposed[name])
    assert any(len(label) > 1 for label in labels)  # sources agree on something


def test_new_user_gets_popular_items(sources: dict) -> None:
    fusion = Fusion(sources, explore=0.0)
    top, _ = sources["popular"].recommend(-1, 10)
    for user, has_history in [(-1, True), (3, False)]:
        items, _, labels = fusion.recommend(user, 10, has_history=has_history)
        np.testing.assert_array_equal(items, top)
        assert set(labels) == {("popular",)}


def test_weights_favour_a_source(sources: dict) -> None:
    fusion = Fusion(sources, weights={"mf": 0.0, "cooc": 0.0, "popular": 1.0}, explore=0.0)
    items, _, _ = fusion.recommend(4, 10)
    np.testing.assert_array_equal(items, sources["popular"].recommend(4, 10)[0])


def test_an_explored_item_shown_and_ignored_stops_being_explored_one_with_events_goes_on() -> None:
    pop = DecayedPopularity(half_life_s=DAY)
    pop.learn_many(np.zeros(60), np.arange(60) % 10, np.ones(60), np.linspace(0.0, DAY, 60))  # old items 0-9
    pop.learn_many(np.zeros(2), np.array([20, 21]), np.ones(2), np.array([DAY + 1, DAY + 2]))  # two new ones
    fusion = Fusion({"popular": pop}, explore=0.5, explore_max_age_s=DAY / 2, explore_max_events=10, seed=1)
    shown = {20: 0, 21: 0}
    for _ in range(SHOWS_PER_EVENT + 5):
        items, _, labels = fusion.recommend(-1, 4)
        for item, label in zip(items.tolist(), labels):
            if label == ("explore",):
                shown[item] += 1
    assert shown == {20: SHOWS_PER_EVENT, 21: SHOWS_PER_EVENT}  # both explored until ignored too often
    assert ("explore",) not in fusion.recommend(-1, 4)[2]
    pop.learn_many(np.zeros(1), np.array([21]), np.ones(1), np.array([DAY + 3]))  # someone clicked item 21
    items, _, labels = fusion.recommend(-1, 4)
    assert [i for i, label in zip(items.tolist(), labels) if label == ("explore",)] == [21]


def test_new_items_of_the_users_own_categories_are_explored_first() -> None:
    """Ten new items, one of them in the category the user browses: with one exploration slot, it is
    always that one; a user browsing elsewhere gets the others, drawn at random."""
    pop = DecayedPopularity(half_life_s=DAY)
    cooc = CoOccurrence(history_size=5)
    old = np.arange(60) % 10  # items 0-9: categories 0 and 1, a day old
    pop.learn_many(np.zeros(60), old, np.ones(60), np.linspace(0.0, DAY, 60), categories=old % 2)
    new = np.arange(20, 30)  # items 20-29: new, item 25 in category 0, the rest in category 7
    pop.learn_many(np.zeros(10), new, np.ones(10), DAY + np.arange(10.0), categories=np.where(new == 25, 0, 7))
    users = np.array([0, 0, 1, 1])
    cooc.learn_many(users, np.array([2, 4, 3, 5]), np.ones(4), np.full(4, DAY))  # user 0: category 0; user 1: 1
    fusion = Fusion({"popular": pop, "recent": cooc}, explore=0.25, explore_max_age_s=DAY / 2, seed=4)
    picks = {0: set(), 1: set()}
    for _ in range(SHOWS_PER_EVENT // 2):  # fewer shows than would mark item 25 ignored
        for user in (0, 1):
            items, _, labels = fusion.recommend(user, 4)
            picks[user] |= {i for i, label in zip(items.tolist(), labels) if label == ("explore",)}
    assert picks[0] == {25}
    assert 25 not in picks[1] and len(picks[1]) > 2


def test_the_settings_help_counts_the_weightings_the_fusion_scores() -> None:
    help_text = dict((name, meaning) for name, _, meaning in settings_table())["STREAM_REC_FUSION_ADAPT"]
    assert f"({len(WEIGHT_GRID)} weightings" in help_text


def test_exploration_draws_from_a_large_pool_without_reading_or_writing_all_of_it() -> None:
    """A pool of young items far larger than one list reads (EXPLORE_SCAN): lists still explore items
    from all over it, at random, and ranking leaves the popularity model as it was; learning, not
    ranking, drops the items that stopped being new."""
    pop = DecayedPopularity(half_life_s=DAY)
    n_new = 20 * EXPLORE_SCAN
    pop.learn_many(np.zeros(n_new), np.arange(n_new), np.ones(n_new), np.linspace(0.0, 60.0, n_new))
    fusion = Fusion({"popular": pop}, explore=0.5, explore_max_age_s=DAY / 2, explore_max_events=5, seed=2)
    before = [a.copy() for a in pop.state]
    explored = []
    for _ in range(100):
        items, _, labels = fusion.recommend(-1, 4)
        explored += [i for i, label in zip(items.tolist(), labels) if label == ("explore",)]
    for a, b in zip(before, pop.state):
        np.testing.assert_array_equal(a, b)
    assert len(explored) == 200 and len(set(explored)) > 150  # 200 slots, spread over 5,120 items
    assert max(explored) - min(explored) > n_new // 2
    assert pop.state.sizes[1] == n_new  # all still new
    # A day later every one of them is old: the sweep learning does drops them, a few per event.
    later = np.full(n_new // 2 + 10, DAY)
    pop.learn_many(np.zeros(len(later)), np.full(len(later), n_new), np.ones(len(later)), later)
    assert pop.state.sizes[1] <= 1  # at most the item the day-old events were on
    assert ("explore",) not in fusion.recommend(-1, 4)[2]
