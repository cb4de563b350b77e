"""Known-answer tests for :class:`stream_rec.models.mf.ImplicitMF`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stream_rec.models.mf import NEGATIVE_POOL, ImplicitMF


@lru_cache(maxsize=None)  # trained once per seed; tests only read the model
def _checkerboard(seed: int) -> ImplicitMF:
    """Users 0-9 interact with items 0-9 and users 10-19 with items 10-19, 30 shuffled epochs."""
    users = np.repeat(np.arange(20), 10)
    items = (users // 10) * 10 + np.tile(np.arange(10), 20)
    model = ImplicitMF(n_factors=8, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        p = rng.permutation(len(users))
        model.learn_many(users[p], items[p], np.ones(len(users)), np.zeros(len(users)))
    return model


def test_checkerboard_top5_stays_in_the_users_block() -> None:
    model = _checkerboard(seed=1)
    for user in range(20):
        block = set(range((user // 10) * 10, (user // 10) * 10 + 10))
        top, _ = model.recommend(user, 5)
        assert set(top.tolist()) <= block, (user, top)


def test_in_block_items_outscore_out_of_block_items() -> None:
    model = _checkerboard(seed=5)
    scores = model.score(3, np.arange(20))
    assert scores[:10].min() > scores[10:].max()


def test_same_seed_same_factors_other_seed_differs() -> None:
    a, c = _checkerboard(5), _checkerboard(6)
    b = _checkerboard.__wrapped__(5)  # retrained from scratch
    assert a.user_state(4) == b.user_state(4)
    assert a.user_state(4) != c.user_state(4)


def test_unknown_user_scores_zero_and_gets_nothing() -> None:
    model = _checkerboard(seed=1)
    np.testing.assert_array_equal(model.score(-1, np.arange(5)), np.zeros(5))
    np.testing.assert_array_equal(model.score(999, np.arange(5)), np.zeros(5))
    assert len(model.recommend(-1, 5)[0]) == 0
    assert model.user_state(999) is None and model.item_state(999) is None


def test_first_event_has_no_negatives_and_later_ones_reuse_seen_items() -> None:
    model = ImplicitMF(n_factors=4, n_negatives=3)
    model.learn_many(np.array([0]), np.array([5]), np.ones(1), np.zeros(1))
    assert model.pop_touched()[1].tolist() == [5]  # nothing seen before, so no negatives
    model.learn_many(np.array([1, 1]), np.array([6, 7]), np.ones(2), np.zeros(2))
    assert set(model.pop_touched()[1].tolist()) <= {5, 6, 7}  # negatives only among seen items


def test_max_norm_bounds_rows_even_with_heavy_weights() -> None:
    model = ImplicitMF(n_factors=8, learning_rate=0.5, max_norm=1.0)
    rng = np.random.default_rng(0)
    model.learn_many(rng.integers(0, 5, 300), rng.integers(0, 5, 300), np.full(300, 20.0), np.zeros(300))
    assert np.all(np.linalg.norm(model.P[:5], axis=1) <= 1.0 + 1e-5)
    assert np.all(np.linalg.norm(model.Q[:5], axis=1) <= 1.0 + 1e-5)


def test_state_is_little_endian_float32_rows() -> None:
    model = _checkerboard(seed=1)
    np.testing.assert_array_equal(np.frombuffer(model.user_state(3), "<f4"), model.P[3])
    np.testing.assert_array_equal(np.frombuffer(model.item_state(12), "<f4"), model.Q[12])


def test_batch_equivalence_holds_across_the_negative_pool_wraparound() -> None:
    rng = np.random.default_rng(3)
    n = NEGATIVE_POOL + 500
    users, items = rng.integers(0, 300, n), rng.integers(0, 200, n)
    whole, chunked = ImplicitMF(n_factors=4), ImplicitMF(n_factors=4)
    whole.learn_many(users, items, np.ones(n), np.zeros(n))
    for a in range(0, n, 1000):
        chunked.learn_many(users[a : a + 1000], items[a : a + 1000], np.ones(1000)[: n - a], np.zeros(1000)[: n - a])
    np.testing.assert_array_equal(whole.P[:300], chunked.P[:300])
    np.testing.assert_array_equal(whole.Q[:200], chunked.Q[:200])
