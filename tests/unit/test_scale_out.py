"""The scale-out simulation: N workers that share item knowledge every T, against one worker."""

from __future__ import annotations

import numpy as np
import pytest

from stream_rec.events import Event
from stream_rec.evaluation.baselines import ServiceModel, Vocabulary
from stream_rec.evaluation.prequential import Prequential
from stream_rec.evaluation.scale_out import ScaleOut, build_scale_out
from stream_rec.ids import kafka_partition
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tools.evaluate import _syncs

SETTINGS = Settings(explore=0.0, threads=1)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    shop = SyntheticShop(ShopConfig(n_users=120, n_items=300, n_categories=8, n_events=5000, seed=5))
    return [Event(e["user_id"], e["item_id"], e["type"], e["ts"], category=e.get("category")) for e in shop.events()]


def _lists(models: dict, events: list[Event], vocab: Vocabulary) -> dict:
    evaluation = Prequential(models, vocab, SETTINGS, chunk=1000)
    lists = {name: [] for name in models}
    for s in range(0, len(events), 1000):
        chunk = events[s:s + 1000]
        batch, _ = evaluation._batch(chunk)
        scored = evaluation._prior_events(batch.users) > 0
        for name, model in models.items():
            lists[name].append(model.rank_then_learn(batch, scored, 10))
        evaluation._learn_bookkeeping(batch)
    return {name: np.concatenate(rows) for name, rows in lists.items()}


def test_one_simulated_worker_is_the_service_itself(events) -> None:
    vocab = Vocabulary.empty()
    models = {"fused": ServiceModel("fused", SETTINGS, vocab), "one": ScaleOut("one", SETTINGS, vocab, 1, 1000.0)}
    lists = _lists(models, events, vocab)
    np.testing.assert_array_equal(lists["one"], lists["fused"])


def test_users_are_partitioned_as_the_group_does_and_no_sharing_keeps_items_apart(events) -> None:
    vocab = Vocabulary.empty()
    group = ScaleOut("apart", SETTINGS, vocab, 2, None, partitions=4)
    _lists({"apart": group}, events, vocab)
    for w, service in enumerate(group.services):
        mine = [e for e in events if kafka_partition(e.user_id, 4) % 2 == w]
        assert {service.users.external(u) for u in service.profiles} == {e.user_id for e in mine}
        assert _popularity_counts(service) == _counts(mine)  # only its own users' events
    assert group.exchanged == 0


@pytest.mark.parametrize("clock", ["event", "replay"])
def test_workers_that_exchange_item_updates_learn_every_events_item_half_once(events, clock) -> None:
    vocab = Vocabulary.empty()
    group = ScaleOut("shared", SETTINGS, vocab, 3, 50.0, partitions=6, clock=clock, rate=500.0)
    _lists({"shared": group}, events, vocab)
    group._receive(0), group._receive(1), group._receive(2)  # what was sent after each one's last event
    for service in group.services:
        assert _popularity_counts(service) == _counts(events)
    assert sum(s.events_total for s in group.services) == len(events)
    assert group.exchanged == 2 * len(events)  # every event's item half reached the two other workers


def test_sharing_ranks_closer_to_one_worker_than_keeping_items_apart(events) -> None:
    vocab = Vocabulary.empty()
    models = {"one": ServiceModel("one", SETTINGS, vocab), **build_scale_out(SETTINGS, vocab, [4], [1.0, None])}
    lists = _lists(models, events, vocab)
    agree = {name: float(np.mean(lists[name][:, :5] == lists["one"][:, :5])) for name in models if name != "one"}
    assert agree["fused/4w/1ms"] > agree["fused/4w/none"], agree


def test_sync_intervals_parse_with_none_for_never() -> None:
    assert _syncs("100, 1000,none") == [100.0, 1000.0, None]
    with pytest.raises(ValueError, match="sync-ms"):
        _syncs("0")
    with pytest.raises(ValueError, match="sync-ms"):
        _syncs("soon")


def _popularity_counts(service) -> dict[str, int]:
    st = service.models["popular"].state
    return {service.items.external(i): int(st.count[i]) for i in np.flatnonzero(st.seen[:len(service.items)])}


def _counts(events: list[Event]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e.item_id] = out.get(e.item_id, 0) + 1
    return out
