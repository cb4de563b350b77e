"""One contract suite run over every source the fusion ranks with (see :mod:`stream_rec.sources`).

With ``STREAM_REC_SOURCE_MODULES`` naming more source modules, it runs over those too
(``tests/unit/test_source_plugin.py`` does so with a toy sixth source).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_rec.events import Event, decode
from stream_rec.fusion import GATHERED
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.sources import Source
from stream_rec.state import MemoryStore
from stream_rec.synth import ShopConfig, SyntheticShop

SETTINGS = Settings(explore=0.0, top_n=10)
K = 10


@pytest.fixture(scope="module")
def service() -> RecService:
    shop = SyntheticShop(ShopConfig(n_users=60, n_items=150, n_categories=8, n_events=3000, seed=7))
    events: list[Event] = [decode(json.dumps(e).encode(), None, now_ms=10**13) for e in shop.events()]
    svc = RecService(SETTINGS, MemoryStore())
    for s in range(0, len(events), 500):
        svc.persist(svc.apply([(("lane", s + n), e) for n, e in enumerate(events[s:s + 500])]))
    return svc


@pytest.fixture(params=GATHERED, ids=[source.name for source in GATHERED])
def source(request: pytest.FixtureRequest) -> Source:
    return request.param


def _marker(service: RecService, source: Source) -> tuple:
    return service.fusion.gathered[GATHERED.index(source)]


def _lists(service: RecService, source: Source, users: list[int], excluded: np.ndarray
           ) -> list[tuple[list[int], list[float]]]:
    """Each user's list from ``source`` alone, as the fusion asks for it (``excluded`` marked)."""
    fusion = service.fusion
    n_items, sc = fusion.prepare(K)
    fp, marker = fusion.params(), _marker(service, source)
    sc.excluded[excluded] = True
    try:
        out = []
        for u in users:
            m = source.propose(marker, fusion.cooc.state, fusion.popular.state, sc, fp, u, u >= 0, n_items, K)
            out.append((sc.li[:m].tolist(), sc.ls[:m].tolist()))
        return out
    finally:
        sc.excluded[excluded] = False


def _users(service: RecService) -> list[int]:
    return [-1, *range(0, len(service.users), 3)]


def _arrays(value: object, into: list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        into.append(value.copy())
    elif isinstance(value, tuple):
        for v in value:
            _arrays(v, into)
    return into


def test_a_list_is_distinct_known_items_best_first_never_an_excluded_one(service: RecService, source: Source) -> None:
    excluded = np.arange(0, len(service.items), 4)
    n_items = service.fusion.prepare(K)[0]
    depth = service.fusion.params().depth
    for items, scores in _lists(service, source, _users(service), excluded):
        assert len(items) <= depth
        assert len(set(items)) == len(items)
        assert all(0 <= i < n_items for i in items)
        assert not set(items) & set(excluded.tolist())
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))


def test_a_source_that_has_learned_proposes_something(service: RecService, source: Source) -> None:
    lists = _lists(service, source, _users(service)[1:], np.zeros(0, np.int64))
    assert sum(len(items) for items, _ in lists) > 0


def test_proposing_writes_no_state_and_leaves_the_scratch_clear(service: RecService, source: Source) -> None:
    fusion = service.fusion
    state = (fusion.mf.state, fusion.cooc.state, fusion.popular.state, fusion.params(), _marker(service, source))
    before = _arrays(state, [])
    first = _lists(service, source, _users(service), np.arange(5))
    assert _lists(service, source, _users(service), np.arange(5)) == first  # deterministic
    after = _arrays(state, [])
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    sc = fusion.prepare(K)[1]
    for name in ("excluded", "mark", "acc", "mask", "ranks"):
        assert not getattr(sc, name).any(), name


def test_every_source_reaches_the_published_lists_with_its_name(service: RecService, source: Source) -> None:
    labels = set()
    for user in service.users.externals(list(range(len(service.users)))):
        labels.update(name for names in service.recommend(user)[2] for name in names)
    assert source.name in labels
