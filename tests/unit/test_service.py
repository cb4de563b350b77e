"""RecService: the one learning path behind workers, replay and evaluation."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from stream_rec.events import Availability, Event, decode
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore, RocksStore
from stream_rec.synth import ShopConfig, SyntheticShop

SETTINGS = Settings(explore=0.0, top_n=10)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    shop = SyntheticShop(ShopConfig(n_users=60, n_items=150, n_categories=8, n_events=3000, seed=7))
    return [decode(_json(e), None, now_ms=10**13) for e in shop.events()]


def _json(event: dict) -> bytes:
    import json

    return json.dumps(event).encode()


def _feed(service: RecService, events: list[Event], batch: int, start: int = 0) -> None:
    for s in range(0, len(events), batch):
        chunk = events[s:s + batch]
        service.persist(service.apply([(("lane", start + s + n), e) for n, e in enumerate(chunk)]))
    service.persist_items()


def _all_lists(service: RecService, users: set[str]) -> dict[str, list[str]]:
    return {u: service.recommend(u)[0] for u in sorted(users)}


def test_one_batch_equals_one_event_at_a_time(events: list[Event]) -> None:
    batched, single = RecService(SETTINGS, MemoryStore()), RecService(SETTINGS, MemoryStore())
    _feed(batched, events, batch=500)
    _feed(single, events, batch=1)
    users = {e.user_id for e in events}
    assert _all_lists(batched, users) == _all_lists(single, users)
    assert batched.stats() == single.stats()
    for family in ("users", "items"):
        a, b = dict(batched.store.items(family)), dict(single.store.items(family))
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith(b"popular/"):  # closed-form batch decay: equal to ~1e-15, not bitwise
                assert np.allclose(np.frombuffer(a[key][:24]), np.frombuffer(b[key][:24]), rtol=1e-12, atol=0)
                assert a[key][24:] == b[key][24:]
            else:
                assert a[key] == b[key], key


def test_a_restored_service_ranks_exactly_like_the_one_that_wrote_the_state(events: list[Event], tmp_path) -> None:
    store = RocksStore(tmp_path / "state")
    original = RecService(SETTINGS, store)
    _feed(original, events, batch=250)
    store.close()
    reopened = RocksStore(tmp_path / "state")
    restored = RecService(SETTINGS, reopened)
    users = {e.user_id for e in events}
    for user in sorted(users):
        ids_a, scores_a, src_a = original.recommend(user)
        ids_b, scores_b, src_b = restored.recommend(user)
        assert (ids_a, src_a) == (ids_b, src_b), user
        assert scores_a == pytest.approx(scores_b, rel=1e-6)
    assert restored.stats() == original.stats()
    reopened.close()


def test_redelivered_positions_are_skipped_and_change_nothing(events: list[Event]) -> None:
    service = RecService(SETTINGS, MemoryStore())
    _feed(service, events[:1000], batch=200)
    before = service.stats()
    result = service.apply([(("lane", n), e) for n, e in enumerate(events[:1000])])
    assert (result.applied, result.duplicates, result.recommendations) == (0, 1000, [])
    assert service.stats() == before
    # A batch straddling the high-water mark applies only the new part.
    result = service.apply([(("lane", n), e) for n, e in enumerate(events[:1100])])
    assert (result.applied, result.duplicates) == (100, 1000)


def test_lanes_are_independent() -> None:
    service = RecService(SETTINGS, MemoryStore())
    service.apply([(("a", 5), Event("u", "i", "view", 1))])
    assert service.apply([(("b", 0), Event("u", "j", "view", 2))]).applied == 1


def test_bought_items_never_come_back(events: list[Event]) -> None:
    service = RecService(replace(SETTINGS, explore=0.3), MemoryStore())
    bought: dict[str, set[str]] = {}
    for s in range(0, len(events), 100):
        chunk = events[s:s + 100]
        result = service.apply([(("lane", s + n), e) for n, e in enumerate(chunk)])
        for e in chunk:
            if e.type == "purchase":
                bought.setdefault(e.user_id, set()).add(e.item_id)
        for rec in result.recommendations:
            assert not {i["item_id"] for i in rec["items"]} & bought.get(rec["user_id"], set())
            assert len(rec["items"]) == SETTINGS.top_n


def test_a_rebuy_window_lets_a_bought_item_come_back_after_it_and_not_before() -> None:
    day = 86_400_000
    service = RecService(replace(SETTINGS, top_n=3, rebuy_after_days=2.0), MemoryStore())
    never = RecService(replace(SETTINGS, top_n=3), MemoryStore())
    history = [Event("u", "soap", "purchase", 0), Event("v", "soap", "purchase", 1000),
               Event("w", "soap", "purchase", 2000), Event("v", "towel", "view", 3000)]
    for svc in (service, never):
        svc.apply([(("lane", n), e) for n, e in enumerate(history)])
    assert "soap" not in service.recommend("u")[0]
    # Time passes (the clock is the latest event): a day later soap is still excluded, three days later not.
    for when, expected in ((day, False), (3 * day, True)):
        later = Event("w", "towel", "view", when)
        for svc in (service, never):
            svc.apply([(("lane", when), later)])
        assert ("soap" in service.recommend("u")[0]) is expected, when
        assert "soap" not in never.recommend("u")[0]  # without a window: never again
    # The evaluation path applies the same window.
    offline = RecService(replace(SETTINGS, top_n=3, rebuy_after_days=2.0), MemoryStore())
    replay = history + [Event("w", "towel", "view", 3 * day), Event("u", "towel", "view", 3 * day + 1)]
    lists = offline.rank_then_learn([(("lane", n), e) for n, e in enumerate(replay)], np.ones(len(replay), bool), 3)
    assert offline.items.get("soap") in lists[-1].tolist()


def test_an_unavailable_item_leaves_every_list_until_it_is_available_again(events: list[Event]) -> None:
    service = RecService(replace(SETTINGS, explore=0.3), MemoryStore())
    _feed(service, events, batch=500)
    users = sorted({e.user_id for e in events})
    counts: dict[str, int] = {}
    for user in users:
        for item in service.recommend(user)[0]:
            counts[item] = counts.get(item, 0) + 1
    gone = sorted(counts, key=counts.get, reverse=True)[:3]  # the items most lists hold
    assert service.set_availability([Availability(i, False) for i in gone] + [Availability("never-seen", False)]) == 4
    assert service.unavailable == sorted(gone + ["never-seen"], key=service.items.get)
    lists = {u: service.recommend(u)[0] for u in users} | {"stranger": service.recommend("stranger")[0]}
    assert all(len(ids) == SETTINGS.top_n and not set(ids) & set(gone) for ids in lists.values())
    result = service.apply([(("lane", len(events) + n), Event(u, gone[0], "view", 10**13)) for n, u in enumerate(users[:5])])
    assert all(not {i["item_id"] for i in r["items"]} & set(gone) for r in result.recommendations)
    assert service.set_availability([Availability(gone[0], True), Availability(gone[0], True)]) == 1
    assert any(gone[0] in service.recommend(u)[0] for u in users)


def test_a_new_item_from_the_catalogue_is_explored_and_listed_by_category_before_its_first_event() -> None:
    service = RecService(replace(SETTINGS, explore=0.0, fusion_adapt=False), MemoryStore())
    shop = [Event(f"u{n}", f"shoe-{n % 8}", "view", 1_000_000 + n * 1000, category="shoes") for n in range(300)]
    shop += [Event("hat-lover", "hat-1", "view", 1_400_000, category="hats")]
    service.apply([(("lane", n), e) for n, e in enumerate(shop)])
    service.set_availability([Availability("hat-2", True, category="hats", price=20.0, new=True)])
    # Filed under its category: the hat lover's list names it, as popular in hats, before anyone touched it.
    ids, _, sources, because = service.recommend_explained("hat-lover")
    assert "hat-2" in ids and because[ids.index("hat-2")] == {"kind": "popular_in_category", "category": "hats"}
    assert "hat-2" not in service.recommend("u1")[0][:5]  # it earned nothing: every learned item ranks above it
    # Exploration reaches it too, among the young items, those of the user's categories first.
    exploring = RecService(replace(SETTINGS, explore=0.3, fusion_adapt=False), MemoryStore())
    exploring.apply([(("lane", n), e) for n, e in enumerate(shop)])
    exploring.set_availability([Availability("hat-2", True, category="hats", new=True)])
    shown = [because for ids, _, _, because in (exploring.recommend_explained(f"u{n}") for n in range(20))
             for item, because in zip(ids, because) if item == "hat-2"]
    assert shown and all(b == {"kind": "new"} for b in shown)  # shoe lovers: by exploration alone
    # Said again at every start-up (the topic is read from its start): nothing changes the second time.
    before = exploring.models["popular"].item_state(exploring.items.get("hat-2"))
    exploring.set_availability([Availability("hat-2", True, category="hats", new=True)])
    assert exploring.models["popular"].item_state(exploring.items.get("hat-2")) == before


def test_unknown_user_gets_popular_items(events: list[Event]) -> None:
    service = RecService(SETTINGS, MemoryStore())
    _feed(service, events, batch=500)
    ids, scores, sources = service.recommend("someone-new")
    assert len(ids) == SETTINGS.top_n and all(s == ("popular",) for s in sources)
    counts: dict[str, int] = {}
    for e in events[-1500:]:
        counts[e.item_id] = counts.get(e.item_id, 0) + 1
    assert ids[0] in sorted(counts, key=counts.get, reverse=True)[:5]  # the top is among the recently busiest


def test_list_message_carries_what_the_schema_promises() -> None:
    service = RecService(SETTINGS, MemoryStore())
    result = service.apply([(("l", 0), Event("u1", "i1", "view", 1000, event_id="e1")),
                            (("l", 1), Event("u1", "i2", "click", 2000, event_id="e2")),
                            (("l", 2), Event("u2", "i1", "purchase", 1500))])
    by_user = {r["user_id"]: r for r in result.recommendations}
    assert set(by_user) == {"u1", "u2"}  # one list per touched user, not per event
    assert by_user["u1"]["trigger"] == {"event_id": "e2", "type": "click", "ts": 2000}
    assert by_user["u1"]["v"] == 1 and by_user["u1"]["model_version"].startswith("0.1.0+")
    # Every list has an id of its own (impressions and events name it), across batches too.
    again = service.apply([(("l", 3), Event("u1", "i3", "view", 3000))]).recommendations[0]
    ids = [by_user["u1"]["list_id"], by_user["u2"]["list_id"], again["list_id"]]
    assert len(set(ids)) == 3 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert "i1" not in [i["item_id"] for i in by_user["u2"]["items"]]
    assert all(set(i) == {"item_id", "score", "sources", "because"} for r in by_user.values() for i in r["items"])


def test_every_item_carries_the_reason_its_sources_give(events: list[Event]) -> None:
    # Equal fixed weights, so every source puts items forward.
    service = RecService(replace(SETTINGS, explore=0.2, fusion_adapt=False), MemoryStore())
    _feed(service, events, batch=500)
    history: dict[str, set[str]] = {}
    category = {e.item_id: e.category for e in events}
    for e in events:
        history.setdefault(e.user_id, set()).add(e.item_id)
    kinds: dict[str, int] = {}
    for user in sorted(history):
        ids, _, sources, because = service.recommend_explained(user)
        assert len(because) == len(ids) == SETTINGS.top_n
        for item, src, why in zip(ids, sources, because):
            kinds[why["kind"]] = kinds.get(why["kind"], 0) + 1
            if src == ("explore",):
                assert why == {"kind": "new"}
            elif "recent" in src:  # the user's own recent item, not bought (else it would be excluded)
                assert why == {"kind": "recently_viewed"} and item in history[user]
            elif "cooc" in src:  # the anchor is an item the user interacted with, never the item itself
                assert why["kind"] == "with_item" and why["item_id"] in history[user] and why["item_id"] != item
            elif "category" in src:  # popular in the category of one of the user's recent items
                assert why == {"kind": "popular_in_category", "category": category[item]}
                assert category[item] in {category[i] for i in history[user]}
            elif "mf" in src:
                assert why == {"kind": "similar_users"}
            else:
                assert src == ("popular",) and why == {"kind": "popular"}
    assert kinds["with_item"] > 0 and kinds["new"] > 0 and kinds["popular_in_category"] > 0, kinds


def test_offline_mode_learns_the_same_without_lists_or_changes(events: list[Event]) -> None:
    online, offline = RecService(SETTINGS, MemoryStore()), RecService(SETTINGS, MemoryStore())
    _feed(online, events, batch=300)
    for s in range(0, len(events), 300):
        result = offline.apply([(("lane", s + n), e) for n, e in enumerate(events[s:s + 300])], lists=False, changes=False)
        assert result.recommendations == [] and result.changes == {}
    users = {e.user_id for e in events}
    assert _all_lists(offline, users) == _all_lists(online, users)


@pytest.mark.parametrize("alone_at", [None, 0, 700])
def test_two_learning_threads_give_the_same_lists_and_state_as_one(events: list[Event], alone_at: int | None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``threads=2`` runs matrix factorisation on a second thread: evaluate's lists, the worker's lists
    and every persisted row must be exactly those of one thread (exploration on: its draws too); also when
    the loop sends the second thread away and goes on alone, at the first event or in the middle (as it
    does when that thread keeps losing its core)."""
    import stream_rec.service as service_module
    from stream_rec.engine.handover import new_sync

    if alone_at is not None:
        monkeypatch.setattr(service_module, "new_sync", lambda threads: new_sync(threads, alone_at=alone_at))
        monkeypatch.setattr(service_module, "_ALONE_FOR_S", 0.0)  # each call tries two threads again
    one, two = (RecService(replace(SETTINGS, explore=0.2, threads=t), MemoryStore()) for t in (1, 2))
    half = len(events) // 2
    scored = np.ones(half, bool)
    scored[::7] = False  # unscored events still hand their turn to the other thread
    positions = [(("lane", n), e) for n, e in enumerate(events[:half])]
    lists_one, lists_two = one.rank_then_learn(positions, scored, 10), two.rank_then_learn(positions, scored, 10)
    assert (lists_one[scored] >= 0).any()
    np.testing.assert_array_equal(lists_one, lists_two)
    results = []
    for service in (one, two):
        batch = [(("lane", half + n), e) for n, e in enumerate(events[half:])]
        assert len(batch) >= 256  # long enough to use the second thread
        result = service.apply(batch)
        service.persist(result)
        service.persist_items()
        results.append(result)
    assert [r["items"] for r in results[0].recommendations] == [r["items"] for r in results[1].recommendations]
    for family in ("users", "items", "meta"):
        assert dict(one.store.items(family)) == dict(two.store.items(family)), family
    if alone_at is not None:
        assert (one.went_alone, two.went_alone) == (0, 2)


def test_after_going_alone_the_loop_keeps_to_one_thread_for_a_while(events: list[Event],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import stream_rec.service as service_module
    from stream_rec.engine.handover import new_sync

    monkeypatch.setattr(service_module, "new_sync", lambda threads: new_sync(threads, alone_at=100))
    monkeypatch.setattr(service_module, "_ALONE_FOR_S", 3600.0)
    started = []
    two_threads = service_module.two_threads
    monkeypatch.setattr(service_module, "two_threads", lambda *args: (started.append(1), two_threads(*args)))
    service = RecService(replace(SETTINGS, threads=2), MemoryStore())
    for s in (0, 500, 1000):
        service.apply([(("lane", s + n), e) for n, e in enumerate(events[s:s + 500])])
    assert len(started) == 1 and service.went_alone == 1


def test_a_failing_second_thread_stops_the_loop_with_its_error(events: list[Event], monkeypatch) -> None:
    import threading

    import stream_rec.engine.loop as loop_module

    def broken(*args: object) -> bool:
        raise ValueError("second thread broke")

    monkeypatch.setattr(loop_module, "mf_thread", broken)
    service = RecService(replace(SETTINGS, threads=2), MemoryStore())
    raised: list[BaseException] = []

    def run() -> None:
        try:
            service.apply([(("lane", n), e) for n, e in enumerate(events[:500])])
        except BaseException as err:
            raised.append(err)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the learning loop kept waiting for a thread that had failed"
    assert len(raised) == 1 and isinstance(raised[0], ValueError) and "second thread broke" in str(raised[0])


def test_warm_up_says_it_is_loading_the_kernels_and_where_from(monkeypatch, caplog):
    """A worker's first start on a machine is silent for a minute and a half unless it says why."""
    import stream_rec.service as service_module

    service_module.warm_up()  # compiled (or loaded) once for this process
    monkeypatch.setattr(service_module, "_warm", False)
    with caplog.at_level(logging.INFO, logger=service_module.log.name):
        seconds = service_module.warm_up()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("loading the model kernels")
    assert messages[-1].startswith("loaded the model kernels from ")  # this process compiled or loaded them
    assert f"in {seconds:.1f} s" in messages[-1]
    assert service_module.warm_up() == 0.0  # once per process
