"""One contract suite run against every online model (see :mod:`stream_rec.models.base`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from stream_rec.models.base import OnlineModel
from stream_rec.models.cooc import CoOccurrence
from stream_rec.models.mf import ImplicitMF
from stream_rec.models.popularity import DecayedPopularity

N_USERS, N_ITEMS, N_EVENTS = 120, 90, 500  # both well beyond the initial capacity (16 rows)

FACTORIES: dict[str, Callable[[], OnlineModel]] = {
    "mf": lambda: ImplicitMF(n_factors=8, seed=7),
    # Small rows and short sessions so pruning, session boosts and decay are all exercised.
    "cooc": lambda: CoOccurrence(history_size=6, max_neighbors=10, half_life_s=50.0, session_gap_s=5.0),
    "popular": lambda: DecayedPopularity(half_life_s=50.0),
}

Stream = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[], OnlineModel]:
    return FACTORIES[request.param]


@pytest.fixture(scope="module")
def stream() -> Stream:
    rng = np.random.default_rng(2024)
    users = rng.integers(0, N_USERS, N_EVENTS)
    items = np.minimum(rng.zipf(1.5, N_EVENTS) - 1, N_ITEMS - 1)  # skewed, like real traffic
    weights = rng.choice([1.0, 2.0, 3.0, 5.0], N_EVENTS)
    ts = np.cumsum(rng.exponential(3.0, N_EVENTS))
    return users, items, weights, ts


def _learn(model: OnlineModel, s: Stream, chunk: int | None = None) -> OnlineModel:
    users, items, weights, ts = s
    step = chunk or len(users)
    for a in range(0, len(users), step):
        model.learn_many(users[a : a + step], items[a : a + step], weights[a : a + step], ts[a : a + step])
    return model


def _same_state(a: bytes | None, b: bytes | None) -> bool:
    """Bytes equal, or equal as float64 words up to closed-form vs recursive rounding (~1e-15)."""
    if a == b:
        return True
    if a is None or b is None or len(a) != len(b) or len(a) % 8:
        return False
    return np.allclose(np.frombuffer(a, "<f8"), np.frombuffer(b, "<f8"), rtol=1e-12, atol=0.0)


def _assert_same_model(a: OnlineModel, b: OnlineModel) -> None:
    all_items = np.arange(N_ITEMS + 5)
    for u in range(-1, N_USERS + 2):
        np.testing.assert_allclose(a.score(u, all_items), b.score(u, all_items), rtol=1e-9, atol=1e-12)
        ia, sa = a.recommend(u, 10)
        ib, sb = b.recommend(u, 10)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, rtol=1e-9, atol=1e-12)


def test_models_follow_the_protocol(factory: Callable[[], OnlineModel]) -> None:
    assert isinstance(factory(), OnlineModel)


def test_batch_equals_one_event_at_a_time(factory: Callable[[], OnlineModel], stream: Stream) -> None:
    whole = _learn(factory(), stream)
    single = _learn(factory(), stream, chunk=1)
    chunked = _learn(factory(), stream, chunk=37)
    for other in (single, chunked):
        for u in range(N_USERS):
            assert _same_state(whole.user_state(u), other.user_state(u)), f"user {u}"
        for i in range(N_ITEMS):
            assert _same_state(whole.item_state(i), other.item_state(i)), f"item {i}"
        _assert_same_model(whole, other)


@pytest.mark.parametrize("k", [1, 5, 50, 500])
def test_recommend_respects_exclude_k_and_order(factory: Callable[[], OnlineModel], stream: Stream, k: int) -> None:
    model = _learn(factory(), stream)
    seen_items = set(stream[1].tolist())
    rng = np.random.default_rng(k)
    for u in [-1, *range(0, N_USERS, 7), N_USERS + 50]:
        exclude = rng.choice(N_ITEMS, 20, replace=False)
        items, scores = model.recommend(u, k, exclude)
        assert items.dtype == np.int64 and len(items) == len(scores) <= k
        assert len(set(items.tolist())) == len(items)
        assert not set(items.tolist()) & set(exclude.tolist())
        assert set(items.tolist()) <= seen_items
        assert np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(model.score(u, items), scores, rtol=1e-6, atol=1e-9)


def test_pop_touched_reports_every_changed_row_then_empties(factory: Callable[[], OnlineModel], stream: Stream) -> None:
    model = _learn(factory(), stream)
    model.pop_touched()
    before_u = {u: model.user_state(u) for u in range(N_USERS)}
    before_i = {i: model.item_state(i) for i in range(N_ITEMS)}

    # One event with ids far beyond the current capacity: arrays must grow, old rows survive.
    big_user, big_item = 5000, 7000
    model.learn_many(np.array([big_user, 3]), np.array([big_item, 2]), np.array([1.0, 2.0]), np.array([1e4, 1e4 + 1]))
    users, items = model.pop_touched()
    assert big_item in items.tolist() and model.item_state(big_item) is not None
    assert model.score(big_user, np.array([big_item])).shape == (1,)
    changed_u = {u for u in range(N_USERS) if model.user_state(u) != before_u[u]}
    changed_i = {i for i in range(N_ITEMS) if model.item_state(i) != before_i[i]}
    assert changed_u <= set(users.tolist())
    assert changed_i <= set(items.tolist())
    if model.user_state(big_user) is not None:
        assert big_user in users.tolist()

    empty_u, empty_i = model.pop_touched()
    assert len(empty_u) == 0 and len(empty_i) == 0 and empty_u.dtype == np.int64


def test_state_round_trip_scores_identically(factory: Callable[[], OnlineModel], stream: Stream) -> None:
    source = _learn(factory(), stream)
    users, items = source.pop_touched()
    # Every row holding state was reported as touched, so persisting touched rows loses nothing.
    assert {u for u in range(N_USERS) if source.user_state(u) is not None} == set(users.tolist())
    assert {i for i in range(N_ITEMS) if source.item_state(i) is not None} == set(items.tolist())

    restored = factory()
    for u in users.tolist():
        data = source.user_state(u)
        if data is not None:
            restored.set_user_state(u, data)
    for i in items.tolist():
        restored.set_item_state(i, source.item_state(i))
    for i in items.tolist():
        assert _same_state(source.item_state(i), restored.item_state(i))
    _assert_same_model(source, restored)


def test_bulk_load_equals_row_by_row(factory: Callable[[], OnlineModel], stream: Stream) -> None:
    """A restarting worker loads rows in bulk: the same model as set_*_state row by row."""
    source = _learn(factory(), stream)
    users, items = source.pop_touched()
    user_rows = [(u, source.user_state(u)) for u in users.tolist()]
    user_rows = [(u, data) for u, data in user_rows if data is not None]
    item_rows = [(i, source.item_state(i)) for i in items.tolist()]
    bulk = factory()
    bulk.load_user_rows(np.array([u for u, _ in user_rows], dtype=np.int64), [d for _, d in user_rows])
    bulk.load_item_rows(np.array([i for i, _ in item_rows], dtype=np.int64), [d for _, d in item_rows])
    for u, data in user_rows:
        assert bulk.user_state(u) == data
    for i, data in item_rows:
        assert _same_state(bulk.item_state(i), data)
    _assert_same_model(source, bulk)
