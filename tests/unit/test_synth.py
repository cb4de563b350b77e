"""The synthetic shop: the schema, the timing rules and the planted structure users rely on."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream_rec.events import decode
from stream_rec.synth import SESSION_GAP_MS, ShopConfig, SyntheticShop, default_categories, write_jsonl

Event = dict[str, Any]

CONFIG = ShopConfig(n_events=100_000, seed=11)
FIELDS = {"v", "event_id", "user_id", "item_id", "type", "ts", "session_id", "category", "price"}


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return SyntheticShop(CONFIG)


@pytest.fixture(scope="module")
def events(shop: SyntheticShop) -> list[Event]:
    return list(shop.events())


@pytest.fixture(scope="module")
def sessions(events: list[Event]) -> dict[str, list[Event]]:
    by_session: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_session[e["session_id"]].append(e)
    return by_session


def _small(**overrides: Any) -> list[Event]:
    base = {"n_users": 100, "n_items": 300, "n_categories": 5, "n_events": 3_000, "seed": 5}
    return list(SyntheticShop(ShopConfig(**{**base, **overrides})).events())


@pytest.mark.parametrize("n_events", [0, 1, 7, 3_001])
def test_exact_count(n_events: int) -> None:
    assert len(_small(n_events=n_events)) == n_events


def test_count_and_time_order(events: list[Event]) -> None:
    assert len(events) == CONFIG.n_events
    assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))


def test_same_seed_same_events_other_seed_other_events() -> None:
    assert _small() == _small()
    assert _small() != _small(seed=6)


def test_events_can_be_replayed(shop: SyntheticShop, events: list[Event]) -> None:
    assert list(shop.events())[:500] == events[:500]


def test_every_event_matches_the_schema(shop: SyntheticShop, events: list[Event]) -> None:
    price_of: dict[str, float] = {}
    for e in events:
        has_quantity = e["type"] in ("add_to_cart", "purchase")
        assert set(e) == FIELDS | ({"quantity"} if has_quantity else set()), e
        assert e["v"] == 1 and type(e["ts"]) is int and type(e["price"]) is float and e["price"] > 0
        assert re.fullmatch(r"u\d+", e["user_id"]) and re.fullmatch(r"i\d+", e["item_id"])
        assert re.fullmatch(r"e\d+", e["event_id"]) and re.fullmatch(r"s\d+", e["session_id"])
        assert e["category"] == shop.item_category[e["item_id"]]
        assert price_of.setdefault(e["item_id"], e["price"]) == e["price"]
        if has_quantity:
            assert type(e["quantity"]) is int and e["quantity"] >= 1
    assert len({e["event_id"] for e in events}) == len(events)


def test_events_pass_the_boundary_decoder(events: list[Event]) -> None:
    for e in events[:2_000]:
        decoded = decode(json.dumps(e).encode(), now_ms=e["ts"])
        assert (decoded.user_id, decoded.item_id, decoded.type, decoded.ts_ms) == (
            e["user_id"], e["item_id"], e["type"], e["ts"],
        )  # fmt: skip


def test_ids_cover_the_configured_space(shop: SyntheticShop, events: list[Event]) -> None:
    assert {int(e["user_id"][1:]) for e in events} <= set(range(CONFIG.n_users))
    assert len(shop.item_category) == CONFIG.n_items
    assert set(shop.item_category.values()) == {f"c{c}" for c in range(CONFIG.n_categories)}


def test_funnel_narrows_roughly_100_30_8_3(events: list[Event]) -> None:
    n = Counter(e["type"] for e in events)
    assert n["view"] > n["click"] > n["add_to_cart"] > n["purchase"] > 0
    assert 0.2 < n["click"] / n["view"] < 0.45
    assert 0.04 < n["add_to_cart"] / n["view"] < 0.14
    assert 0.015 < n["purchase"] / n["view"] < 0.06


def test_popularity_is_heavy_tailed(events: list[Event]) -> None:
    counts = sorted(Counter(e["item_id"] for e in events).values(), reverse=True)
    top_decile = sum(counts[: CONFIG.n_items // 10])
    assert top_decile / len(events) > 0.4


def test_no_event_before_its_item_is_available(shop: SyntheticShop, events: list[Event]) -> None:
    assert all(e["ts"] >= shop.item_available_from_ms[e["item_id"]] for e in events)
    late = {i for i, t in shop.item_available_from_ms.items() if t > CONFIG.start_ms}
    assert len(late) == round(CONFIG.new_item_share * CONFIG.n_items)
    assert sum(e["item_id"] in late for e in events) > 100  # new items do show up once available


def test_sessions_are_gapped_per_user(sessions: dict[str, list[Event]]) -> None:
    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for evs in sessions.values():
        assert len({e["user_id"] for e in evs}) == 1
        assert all(0 < b["ts"] - a["ts"] <= SESSION_GAP_MS for a, b in zip(evs, evs[1:]))
        assert evs[0]["type"] == "view"
        by_user[evs[0]["user_id"]].append((evs[0]["ts"], evs[-1]["ts"]))
    for spans in by_user.values():
        spans.sort()
        assert all(nxt[0] - prev[1] > SESSION_GAP_MS for prev, nxt in zip(spans, spans[1:]))


def test_stream_spans_the_configured_days(events: list[Event]) -> None:
    span_days = (events[-1]["ts"] - events[0]["ts"]) / 86_400_000
    assert CONFIG.days * 0.9 < span_days < CONFIG.days * 1.1
    assert events[0]["ts"] >= CONFIG.start_ms


def _category_hit_rates(events: list[Event]) -> tuple[float, float]:
    """Share of users' later views in their own earlier top-3 categories, and in the global top 3."""
    views: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["type"] == "view":
            views[e["user_id"]].append(e["category"])
    overall = [c for c, _ in Counter(e["category"] for e in events).most_common(3)]
    own_hits = global_hits = total = 0
    for cats in views.values():
        if len(cats) < 20:
            continue
        past, future = cats[: len(cats) // 2], cats[len(cats) // 2 :]
        own = [c for c, _ in Counter(past).most_common(3)]
        own_hits += sum(c in own for c in future)
        global_hits += sum(c in overall for c in future)
        total += len(future)
    assert total > 5_000
    return own_hits / total, global_hits / total


def test_a_users_past_categories_predict_their_future_ones(events: list[Event]) -> None:
    """Taste is real signal: a user's own top categories beat the global top categories."""
    own, overall = _category_hit_rates(events)
    # Category sizes are uneven, so the global top 3 already cover ~30-45 % of views.
    assert own > 1.25 * overall


def _early_taste_hit_rate(events: list[Event]) -> float:
    """Share of users' views in the last 4 days that fall in their top-3 categories of the first 4."""
    early: dict[str, Counter[str]] = defaultdict(Counter)
    late: dict[str, list[str]] = defaultdict(list)
    for e in events:
        day = (e["ts"] - CONFIG.start_ms) / 86_400_000
        if e["type"] == "view" and day < 4:
            early[e["user_id"]][e["category"]] += 1
        elif e["type"] == "view" and day >= CONFIG.days - 4:
            late[e["user_id"]].append(e["category"])
    hits = total = 0
    for user, counts in early.items():
        if sum(counts.values()) >= 8:
            top = {c for c, _ in counts.most_common(3)}
            hits += sum(c in top for c in late[user])
            total += len(late[user])
    assert total > 2_000
    return hits / total


def test_drift_moves_tastes_over_the_stream() -> None:
    def rate(drift: float) -> float:
        return _early_taste_hit_rate(list(SyntheticShop(ShopConfig(n_events=50_000, drift=drift, seed=3)).events()))

    # Same seed, same world apart from the drift, so the comparison is paired.
    assert rate(0.5) < rate(0.0) - 0.08


def _complement_follow_rates(shop: SyntheticShop, sessions: dict[str, list[Event]]) -> tuple[float, float, int]:
    """After purchases of items with a complement: P(complement later in session) vs a decoy partner."""
    sources = sorted(shop.complements)
    decoy = {a: shop.complements[sources[(k + 1) % len(sources)]] for k, a in enumerate(sources)}
    hits = decoy_hits = n = 0
    for evs in sessions.values():
        for k, e in enumerate(evs):
            if e["type"] == "purchase" and e["item_id"] in shop.complements:
                later = {x["item_id"] for x in evs[k + 1 :]}
                n += 1
                hits += shop.complements[e["item_id"]] in later
                decoy_hits += decoy[e["item_id"]] in later
    return hits / n, decoy_hits / n, n


def test_complements_are_planted(shop: SyntheticShop) -> None:
    share = len(shop.complements) / CONFIG.n_items
    assert 0.1 <= share <= 0.2
    assert all(a != b for a, b in shop.complements.items())
    assert all(shop.item_available_from_ms[b] == CONFIG.start_ms for b in shop.complements.values())
    other = sum(shop.item_category[a] != shop.item_category[b] for a, b in shop.complements.items())
    assert other / len(shop.complements) > 0.5


def test_complements_follow_purchases_far_more_than_chance(
    shop: SyntheticShop, sessions: dict[str, list[Event]]
) -> None:
    rate, decoy_rate, n = _complement_follow_rates(shop, sessions)
    assert n > 100
    assert abs(rate - CONFIG.complement_share) < 0.12
    assert rate > 10 * max(decoy_rate, 1 / n)


def test_complement_share_zero_plants_nothing_in_sessions() -> None:
    shop = SyntheticShop(ShopConfig(n_events=50_000, complement_share=0.0, seed=11))
    sessions: dict[str, list[Event]] = defaultdict(list)
    for e in shop.events():
        sessions[e["session_id"]].append(e)
    rate, _, n = _complement_follow_rates(shop, sessions)
    assert n > 50 and rate < 0.05


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_write_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    events = _small(n_events=500)
    path = tmp_path / name
    assert write_jsonl(iter(events), path) == 500
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == events
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"n_users": 0}, "n_users"), ({"complement_share": 1.5}, "complement_share"), ({"days": 0}, "days"),
     ({"n_categories": 10, "n_items": 5}, "n_categories"), ({"new_item_share": 1.0}, "new_item_share"),
     ({"popularity_exponent": -0.1}, "popularity_exponent"), ({"popularity_exponent": float("nan")}, "popularity_exponent"),
     ({"popularity_exponent": float("inf")}, "popularity_exponent"), ({"drift": float("nan")}, "drift")],
)  # fmt: skip
def test_bad_config_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ShopConfig(**overrides)


def test_a_one_item_shop_is_possible() -> None:
    """10 % of one item rounds to no late item, so the one item is there from the start."""
    events = _small(n_items=1, n_categories=1, n_events=50)
    assert {e["item_id"] for e in events} == {"i0"} and len(events) == 50


def test_a_flatter_popularity_touches_more_of_a_big_catalogue() -> None:
    """What the bench's catalogue section relies on: at exponent 0.8 a 200k-item shop's 10k events reach
    far more items than at the default 1.1, which stays near the head of the catalogue."""
    touched = {x: len({e["item_id"] for e in _small(n_items=200_000, n_categories=default_categories(200_000),
                                                      n_events=10_000, popularity_exponent=x)})
               for x in (0.8, 1.1)}
    assert touched[0.8] > 1.5 * touched[1.1]


def test_default_categories_keep_the_default_shop_and_grow_with_the_square_root() -> None:
    assert default_categories(ShopConfig.n_items) == ShopConfig.n_categories == 20
    assert [default_categories(n) for n in (1, 19, 5_001, 20_000, 1_000_000)] == [1, 19, 20, 40, 283]
    assert all(default_categories(n) <= n for n in range(1, 200))
