"""Known-answer tests for :class:`stream_rec.models.mf.ImplicitMF`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stream_rec.models.mf import MAX_STEP, NEW_USER_BOOST, NEW_USER_EVENTS, ImplicitMF
from stream_rec.models.mf_index import PAGE, clusters_for


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
    row = np.frombuffer(model.user_state(3), "<f4")
    np.testing.assert_array_equal(row[:-1], model.P[3])
    assert row[-1] == model.state.user_n[3] > 0  # the learning-rate schedule's clock
    np.testing.assert_array_equal(np.frombuffer(model.item_state(12), "<f4"), model.Q[12])


def test_batch_equivalence_holds_whatever_the_chunking() -> None:
    rng = np.random.default_rng(3)
    n = 9000
    users, items = rng.integers(0, 300, n), rng.integers(0, 200, n)
    whole, chunked = ImplicitMF(n_factors=4), ImplicitMF(n_factors=4)
    whole.learn_many(users, items, np.ones(n), np.zeros(n))
    for a in range(0, n, 1000):
        chunked.learn_many(users[a : a + 1000], items[a : a + 1000], np.ones(1000)[: n - a], np.zeros(1000)[: n - a])
    np.testing.assert_array_equal(whole.P[:300], chunked.P[:300])
    np.testing.assert_array_equal(whole.Q[:200], chunked.Q[:200])


def test_the_all_items_term_keeps_its_gram_matrix_exact() -> None:
    """``G = sum q q^T`` is updated in place as rows change; it must equal the sum recomputed from Q,
    after learning and after a restart from the persisted rows."""
    rng = np.random.default_rng(5)
    model = ImplicitMF(n_factors=6, n_negatives=3)
    model.learn_many(rng.integers(0, 50, 4000), rng.integers(0, 80, 4000), rng.choice([1.0, 8.0], 4000), np.zeros(4000))
    seen = model.Q[model.state.item_seen].astype(np.float64)
    np.testing.assert_allclose(model.state.gram, seen.T @ seen, rtol=1e-9, atol=1e-9)
    restored = ImplicitMF(n_factors=6, n_negatives=3)
    items = np.flatnonzero(model.state.item_seen)
    restored.load_item_rows(items, [model.item_state(int(i)) for i in items])
    np.testing.assert_allclose(restored.state.gram, model.state.gram, rtol=1e-6, atol=1e-6)


def test_one_event_is_the_all_items_step_then_the_positive_step() -> None:
    """The event's update in closed form: ``p <- p - lr * all_items * G p`` (every item's score towards
    0 at once), then the pointwise step towards 1 on the event's item, its size set by the user's
    learning-rate schedule, computed here with numpy."""
    rng = np.random.default_rng(11)
    model = ImplicitMF(n_factors=5, n_negatives=0, all_items=0.3, learning_rate=0.05, l2=0.01, seed=2)
    model.learn_many(rng.integers(0, 30, 500), rng.integers(0, 40, 500), np.ones(500), np.zeros(500))
    u, i, w = 7, 12, 4.0
    p, q = model.P[u].astype(np.float64), model.Q[i].astype(np.float64)
    seen = model.Q[model.state.item_seen].astype(np.float64)
    p = p - 0.05 * 0.3 * (seen.T @ seen) @ p
    boost = 1.0 + NEW_USER_BOOST / (1.0 + model.state.user_n[u] / NEW_USER_EVENTS)  # the schedule
    err = (1.0 - p @ q) * min(0.05 * w * boost, MAX_STEP)
    shrink = 1.0 - 0.05 * 0.01
    expected_p, expected_q = shrink * p + err * q, shrink * q + err * p
    model.learn_many(np.array([u]), np.array([i]), np.array([w]), np.zeros(1))
    np.testing.assert_allclose(model.P[u], expected_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.Q[i], expected_q, rtol=1e-4, atol=1e-6)


def test_a_newcomer_takes_bigger_steps_than_a_regular_and_no_step_exceeds_the_cap() -> None:
    model = ImplicitMF(n_factors=4, n_negatives=0, all_items=0.0, learning_rate=0.01, l2=0.0, seed=1)
    rng = np.random.default_rng(2)
    model.learn_many(np.zeros(200, np.int64), rng.integers(0, 20, 200), np.ones(200), np.zeros(200))  # a regular
    model.learn_many(np.array([1]), np.array([3]), np.ones(1), np.zeros(1))  # a newcomer's first event
    moves = {}
    for u in (0, 1):
        before = model.P[u].copy()
        model.learn_many(np.array([u]), np.array([5]), np.ones(1), np.zeros(1))
        moves[u] = np.linalg.norm(model.P[u] - before) / np.linalg.norm(model.Q[5])
    assert moves[1] > 1.5 * moves[0]
    huge = ImplicitMF(n_factors=4, learning_rate=1.0, seed=1)  # 1.0 x weight 8 x schedule: capped at MAX_STEP
    huge.learn_many(np.zeros(500, np.int64), rng.integers(0, 10, 500), np.full(500, 8.0), np.zeros(500))
    assert np.isfinite(huge.P[:1]).all() and np.abs(huge.P[0]).max() < 10


def test_a_large_catalogue_stays_finite_and_the_all_items_step_never_overshoots() -> None:
    """The Gram matrix grows with the catalogue; an uncapped all-items step diverged (every factor NaN)
    once ``lr * all_items * lambda_max(G)`` passed 2 (the bench's 100k- and 1M-item catalogues). Capped,
    the step shrinks ``p_u`` along every eigenvector: ``|1 - step * lambda| < 1``."""
    rng = np.random.default_rng(5)
    n = 200_000
    model = ImplicitMF(n_factors=8, seed=1)
    users, items = rng.integers(0, 2_000, 2 * n), np.concatenate([np.arange(n), rng.integers(0, n, n)])
    model.learn_many(users, items, np.full(2 * n, 8.0), np.zeros(2 * n))
    assert np.isfinite(model.P).all() and np.isfinite(model.Q).all()
    lam = np.linalg.eigvalsh(model.state.gram).max()
    assert 0.05 * 0.1 * lam > 2.0, "the catalogue is too small to need the cap"
    assert np.abs(model.P).max() < 10 and np.abs(model.Q).max() < 10


def _random_stream(n_users: int, n_items: int, n_events: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    items = (users * (n_items // n_users) + rng.integers(0, 40, n_events)) % n_items  # a neighbourhood each
    return users, items, np.ones(n_events), np.zeros(n_events)


def _index_members(model: ImplicitMF) -> dict[int, tuple[int, int]]:
    """Every item in the index, walked page by page: item -> (cluster, slot)."""
    ix, out = model.index, {}
    for c in range(int(ix.n_clusters[0])):
        page, n = int(ix.head[c]), 0
        while page >= 0:
            for at in range(int(ix.fill[page])):
                item = int(ix.members[page, at])
                assert item not in out, "an item is in the index twice"
                out[item] = (c, page * PAGE + at)
                n += 1
            page = int(ix.next_page[page])
        assert n == ix.sizes[c]
    return out


def test_a_large_catalogue_lists_from_item_clusters_kept_current_by_learning() -> None:
    users, items, weights, ts = _random_stream(200, 3_000, 20_000, seed=3)
    exact, fast = ImplicitMF(n_factors=16, seed=2, index_above=np.inf), ImplicitMF(n_factors=16, seed=2, index_above=1_000)
    for model in (exact, fast):
        model.learn_many(users, items, weights, ts)
    np.testing.assert_array_equal(exact.Q, fast.Q)  # the index never feeds back into learning
    ix, seen = fast.index, np.flatnonzero(fast.state.item_seen)
    assert exact.index.built_for[0] == 0 and ix.built_for[0] >= 1_000
    # Every seen item is in the index once, where its slot says, in the cluster it names.
    members = _index_members(fast)
    assert sorted(members) == seen.tolist() and ix.n_indexed[0] == len(seen)
    for item, (c, where) in members.items():
        assert ix.slot[item] == where and ix.cluster[item] == c
    # Codes follow the rows: within half a step of each row's scale; a centroid is its members' mean code.
    pages, at = ix.slot[seen] // PAGE, ix.slot[seen] % PAGE
    scale = ix.scale[pages, at]
    err = np.abs(ix.codes[pages, at] * scale[:, None] - fast.Q[seen]).max(axis=1)
    assert np.all(err <= 0.5 * scale + 1e-7)
    decoded = ix.codes[pages, at].astype(np.float64) * scale[:, None]
    for c in range(int(ix.n_clusters[0])):
        mine = ix.cluster[seen] == c
        if mine.any():
            np.testing.assert_allclose(ix.centroids[c], decoded[mine].mean(axis=0), rtol=1e-4, atol=1e-6)
    # Pages in use plus free pages are every page.
    assert sum(-(-int(n) // PAGE) for n in ix.sizes[: ix.n_clusters[0]]) + ix.n_free[0] == len(ix.fill)
    found = wanted = 0
    for user in range(0, 200, 7):
        want, _ = exact.recommend(user, 30, exclude=np.array([user % 50]))
        got, got_scores = fast.recommend(user, 30, exclude=np.array([user % 50]))
        assert user % 50 not in got.tolist() and len(got) == 30
        np.testing.assert_allclose(got_scores, exact.score(user, got), rtol=1e-5, atol=1e-6)  # exact rescoring
        assert np.all(np.diff(got_scores) <= 0)
        found, wanted = found + len(np.intersect1d(want, got)), wanted + len(want)
    assert found / wanted >= 0.8


def test_the_index_is_built_again_as_the_catalogue_doubles() -> None:
    users, items, weights, ts = _random_stream(100, 4_000, 30_000, seed=5)
    model = ImplicitMF(n_factors=8, seed=1, index_above=500)
    built = []
    for a in range(0, len(users), 1_000):
        model.learn_many(users[a : a + 1_000], items[a : a + 1_000], weights[a : a + 1_000], ts[a : a + 1_000])
        built.append(int(model.index.built_for[0]))
    sizes = sorted(set(built) - {0})
    assert sizes[0] >= 500 and len(sizes) >= 3
    assert all(b >= 2 * a for a, b in zip(sizes, sizes[1:]))  # only when the catalogue doubled
    assert model.index.n_clusters[0] == clusters_for(sizes[-1])


def test_restored_rows_rank_exactly_until_the_index_is_built_again() -> None:
    users, items, weights, ts = _random_stream(50, 2_000, 5_000, seed=4)
    model = ImplicitMF(n_factors=8, seed=1, index_above=1_000)
    model.learn_many(users, items, weights, ts)
    assert model.index.built_for[0] > 0
    seen = np.flatnonzero(model.state.item_seen)
    restored = ImplicitMF(n_factors=8, seed=1, index_above=1_000)
    restored.load_user_rows(np.arange(50), [model.user_state(u) for u in range(50)])
    restored.load_item_rows(seen, [model.item_state(i) for i in seen])
    reference = ImplicitMF(n_factors=8, seed=1, index_above=np.inf)
    reference.load_user_rows(np.arange(50), [model.user_state(u) for u in range(50)])
    reference.load_item_rows(seen, [model.item_state(i) for i in seen])
    assert restored.index.built_for[0] == 0  # not built from rows loaded in bulk...
    for user in range(50):  # ...so every list is exact
        np.testing.assert_array_equal(restored.recommend(user, 20)[0], reference.recommend(user, 20)[0])
    # A row replaced on its own is never ranked from a stale code: the user's worst item, its row turned
    # round and grown 100-fold, comes first.
    restored.learn_many(users[:1], items[:1], weights[:1], ts[:1])
    assert restored.index.built_for[0] > 0
    item = int(seen[np.argmin(restored.score(0, seen))])
    restored.set_item_state(item, (restored.Q[item] * -100).astype("<f4").tobytes())
    assert restored.recommend(0, 20)[0][0] == item
    restored.learn_many(users[1:2], items[1:2], weights[1:2], ts[1:2])  # built again, with the new row
    assert restored.index.built_for[0] > 0
    assert restored.recommend(0, 20)[0][0] == item
