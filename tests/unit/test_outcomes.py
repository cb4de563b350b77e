"""A/B variants, impressions and attribution: what became of the published lists (stream_rec.outcomes)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stream_rec.events import Event, Impression
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.synth import ShopConfig, SyntheticShop
from stream_rec.variants import parse_variants, variant_of

TWO = "control:;popular-only:mf=0,cooc=0,recent=0,category=0,adapt=false"
SETTINGS = Settings(top_n=10, explore=0.0, variants=TWO)


def _events(n: int = 3000) -> list[Event]:
    shop = SyntheticShop(ShopConfig(n_users=120, n_items=400, n_categories=8, n_events=n, seed=5))
    return [Event(e["user_id"], e["item_id"], e["type"], e["ts"], category=e.get("category")) for e in shop.events()]


def _apply(service: RecService, events: list[Event], start: int = 0) -> list[dict]:
    return service.apply([(("lane", start + n), e) for n, e in enumerate(events)]).recommendations


def test_each_user_is_ranked_by_its_variant_and_each_list_names_it() -> None:
    service = RecService(SETTINGS, MemoryStore())
    lists = _apply(service, _events())
    names = [v.name for v in parse_variants(TWO)]
    assert {rec["variant"] for rec in lists} == set(names)  # both variants serve someone
    for rec in lists:
        assert rec["variant"] == names[variant_of(rec["user_id"], 2)]
        if rec["variant"] == "popular-only":  # the variant's own weights: popularity alone ranks its lists
            assert all(item["sources"] == ["popular"] for item in rec["items"]), rec["items"]
    assert any(len(item["sources"]) > 1 for rec in lists if rec["variant"] == "control" for item in rec["items"])


def test_a_variant_naming_no_source_is_refused_with_the_sources_it_could_name() -> None:
    with pytest.raises(ValueError, match="'mff', which is not a source .*mf, cooc"):
        RecService(replace(SETTINGS, variants="a:;b:mff=2"), MemoryStore())
    with pytest.raises(ValueError, match="STREAM_REC_VARIANTS"):
        Settings(variants="a:explore=2;b:")


def test_lists_are_judged_by_the_next_events_before_those_are_learned() -> None:
    service = RecService(SETTINGS, MemoryStore())
    events = _events()
    first = _apply(service, events[:1500])
    offered = {rec["user_id"]: [i["item_id"] for i in rec["items"]] for rec in first}
    second = events[1500:1700]
    _apply(service, second, 1500)
    # What the next batch's events found on the lists sent after the first (a user's later events in the
    # same batch are judged by the same list: it is the one they were shown).
    expected: dict[str, list[int]] = {}
    for e in second:
        if e.user_id in offered:
            variant = [v.name for v in parse_variants(TWO)][variant_of(e.user_id, 2)]
            measured_hits = expected.setdefault(variant, [0, 0])
            measured_hits[0] += 1
            measured_hits[1] += e.item_id in offered[e.user_id][:10]
    figures = service.outcomes.summary()
    for variant, (measured, hits) in expected.items():
        assert figures[variant]["events_measured"] == measured > 10
        assert figures[variant]["hr_at_10"] == round(hits / measured, 4)


def test_impressions_and_events_from_a_list_are_counted_per_variant_and_source() -> None:
    service = RecService(replace(SETTINGS, explore=0.3, impressions=True), MemoryStore())
    lists = _apply(service, _events(1500))
    shown_before = service.fusion.shown.copy()
    assert not shown_before.any()  # with impressions on, a published list is not taken for a showing
    rec = next(r for r in lists if r["variant"] == "control" and any(i["sources"] == ["explore"] for i in r["items"]))
    items = [i["item_id"] for i in rec["items"]]
    explored = [i["item_id"] for i in rec["items"] if i["sources"] == ["explore"]]
    result = service.note_impressions([(("imp", 0), Impression(rec["user_id"], rec["list_id"], tuple(items[:6] + explored)))])
    assert result.applied == 1
    assert service.note_impressions([(("imp", 0), Impression(rec["user_id"], rec["list_id"], ()))]).duplicates == 1
    summary = service.outcomes.summary()["control"]
    assert summary["impressions"] == 1
    assert summary["shown"]["explore"] == len(set(explored))
    assert sum(summary["shown"].values()) >= len(set(items[:6] + explored))
    explored_idx = [service.items.get(i) for i in explored]
    assert service.fusion.shown[explored_idx].tolist() == [1] * len(explored)  # exploration counts real showings
    # The user clicks the first item, naming the list; another event names a list nobody remembers.
    clicked = rec["items"][0]
    _apply(service, [Event(rec["user_id"], clicked["item_id"], "click", 10**13, list_id=rec["list_id"]),
                     Event(rec["user_id"], items[1], "view", 10**13 + 1, list_id="0123456789abcdef")], 10_000)
    after = service.outcomes.summary()
    assert after["control"]["acted"] == {f"{source}/click": 1 for source in clicked["sources"]}
    assert after["control"]["click_through"] == 1.0
    assert after["unmatched"] == {"view": 1}


def test_what_became_of_the_lists_survives_a_restart() -> None:
    store = MemoryStore()
    service = RecService(replace(SETTINGS, explore=0.3), store)
    events = _events(1500)
    service.persist(service.apply([(("lane", n), e) for n, e in enumerate(events[:800])]))
    service.persist(service.apply([(("lane", 800 + n), e) for n, e in enumerate(events[800:])]))
    service.persist_items()
    again = RecService(replace(SETTINGS, explore=0.3), store)
    assert again.outcomes.summary() == service.outcomes.summary()
    shown, restored = service.fusion.shown, again.fusion.shown  # arrays may have grown to different lengths
    assert shown.sum() > 100 and np.array_equal(np.flatnonzero(restored), np.flatnonzero(shown))
    assert np.array_equal(restored[np.flatnonzero(shown)], shown[np.flatnonzero(shown)])
