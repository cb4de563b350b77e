"""The JSON Schemas shipped in stream_rec/schemas say what the code accepts and publishes.

Inputs: for objects drawn around each schema's edges, the schema and the code's decoder
(:mod:`stream_rec.events`) agree on every one, except where a schema cannot say what the decoder checks
(each such gap is named in the schema's description and in :func:`_gaps`, and must stay rare). Outputs:
every list the service publishes, for a known user and for strangers, validates; so does every event the
synthetic shop (the generator behind ``stream-rec generate``, replay and the demo) writes.
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from stream_rec import schemas
from stream_rec.events import (INT64_MAX, INT64_MIN, InvalidEvent, Limits, decode, decode_availability,
                               decode_impression)
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.synth import ShopConfig, SyntheticShop
from stream_rec.wire import encode_recommendation

ROOT = Path(__file__).parents[2]
UINT64_MAX = 2**64 - 1
#: No size or future limit here: the schemas cannot say either (their descriptions name them).
NO_LIMITS = Limits(max_bytes=10**9, max_future_ms=INT64_MAX)

_REGISTRY = Registry().with_resources(
    (schemas.load(name)["$id"], Resource.from_contents(schemas.load(name))) for name in schemas.NAMES)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.load(name), registry=_REGISTRY)


@pytest.mark.parametrize("name", schemas.NAMES)
def test_each_schema_is_a_valid_draft_2020_12_schema_with_an_id(name: str) -> None:
    schema = schemas.load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{name}.schema.json") and schema["description"]


def test_the_schemas_ship_in_the_package() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.json" in package_data["stream_rec"]
    assert sorted(p.name for p in (ROOT / "stream_rec" / "schemas").glob("*.json")) == sorted(
        f"{name}.schema.json" for name in schemas.NAMES)
    with pytest.raises(ValueError, match="no schema named 'events'"):
        schemas.load("events")


# -- inputs: the schema and the decoder agree -----------------------------------------------------------

_ID_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["", "u1", "a\x00b", "tab\there", "del\x7f", "x" * 256, "x" * 257, "é🛒", "\u200b"])
_ID = _ID_TEXT | st.integers(INT64_MIN - 5, UINT64_MAX + 5) | st.sampled_from([None, True, 1.5, 2.0, [], {}])
_NUMBER = (st.integers(INT64_MIN - 5, UINT64_MAX + 5) | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([-1, 0, 1, 1.5, -0.5, 1e300, float(INT64_MAX), None, True, "7", [], "2024-05-01T10:00:00Z"]))
_TS = _NUMBER | st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00+02:00", "2024-05-01", "", "yesterday",
                                 "1700000000000"])
_PROPERTY = st.text(max_size=3) | st.integers(INT64_MIN - 5, INT64_MAX + 5) | st.floats(allow_nan=False,
                                                                                       allow_infinity=False) \
    | st.booleans() | st.sampled_from([None, [], {}, "x" * 257])
_PROPERTIES = st.dictionaries(st.text(max_size=3) | st.just("k" * 257), _PROPERTY, max_size=34) | st.sampled_from(
    [None, [], "x", {f"k{i}": i for i in range(33)}])


def _maybe(fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with each field present or not (required ones mostly present), plus an unknown field now and then."""
    optional = {name: strategy for name, strategy in fields.items() if name not in required}
    return st.fixed_dictionaries(
        {name: fields[name] for name in required}, optional=optional | {"extra": st.text(max_size=2)}
    ).flatmap(lambda obj: st.sets(st.sampled_from(required), max_size=1).map(
        lambda drop: {k: v for k, v in obj.items() if k not in drop}))


_GOOD_ID = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=8) \
    | st.integers(0, UINT64_MAX)
_GOOD_TS = st.integers(0, 2 * 10**12) | st.floats(0, 2e12) | st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01"])
_GOOD_PROPERTIES = st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(-10, 10) | st.booleans(),
                                   max_size=3)


def _edges(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]],
           anything: st.SearchStrategy[dict[str, Any]], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Valid objects, valid objects with one field set to something odd (or removed), and anything at all."""
    good = st.fixed_dictionaries(required, optional=optional)

    def spoil(obj: dict[str, Any], name: str, value: Any, remove: bool) -> dict[str, Any]:
        spoiled = {k: v for k, v in obj.items() if k != name}
        return spoiled if remove else spoiled | {name: value}

    one_field = st.builds(spoil, good, st.sampled_from(sorted(required | optional)), junk, st.booleans())
    return good | one_field | anything


_JUNK = _ID | _NUMBER | _PROPERTIES
EVENTS = _edges(
    {"user_id": _GOOD_ID, "item_id": _GOOD_ID, "type": st.sampled_from(["view", "click", "add_to_cart", "purchase"]),
     "ts": _GOOD_TS},
    {"v": st.just(1), "event_id": _GOOD_ID, "session_id": _GOOD_ID, "category": _GOOD_ID, "list_id": _GOOD_ID,
     "price": st.floats(-1e6, 1e6) | st.integers(0, 10**6), "quantity": st.integers(1, 100),
     "properties": _GOOD_PROPERTIES},
    _maybe({"user_id": _ID, "item_id": _ID, "type": st.sampled_from(["view", "click", "add_to_cart", "purchase",
                                                                       "buy", "", 1, None, True]),
            "ts": _TS, "v": st.sampled_from([1, 1.0, 2, 0, None, True, "1"]), "event_id": _ID, "session_id": _ID,
            "category": _ID, "list_id": _ID, "price": _NUMBER, "quantity": _NUMBER, "properties": _PROPERTIES},
           required=("user_id", "item_id", "type", "ts")),
    _JUNK)
ITEMS = _edges(
    {"item_id": _GOOD_ID, "available": st.booleans()},
    {"category": _GOOD_ID, "price": st.floats(0, 1e6), "new": st.booleans(), "ts": _GOOD_TS},
    _maybe({"item_id": _ID, "available": st.sampled_from([True, False, None, 0, 1, "false"]), "category": _ID,
            "price": _NUMBER, "new": st.sampled_from([True, False, None, 1, "yes"]), "ts": _TS}, required=("item_id",)),
    _JUNK)
IMPRESSIONS = _edges(
    {"list_id": _GOOD_ID, "user_id": _GOOD_ID, "items": st.lists(_GOOD_ID, max_size=4)}, {},
    _maybe({"list_id": _ID, "user_id": _ID, "items": st.lists(_ID, max_size=4) | st.sampled_from(
        [None, "i1", ["i"] * 1000, ["i"] * 1001, {}])}, required=("list_id", "user_id", "items")),
    _JUNK)


def _gaps(obj: dict[str, Any], integer_fields: tuple[str, ...]) -> list[str]:
    """What the decoder checks and a JSON Schema cannot: a string ``ts`` that is not ISO-8601, and a number
    written with a fraction or exponent (a float here) where an integer is required, which JSON Schema
    counts as an integer when its value is whole (``"quantity": 2.0``)."""
    gaps = []
    if isinstance(obj.get("ts"), str):
        gaps.append("string ts")
    values = [obj.get(name) for name in integer_fields]
    values += list(obj["properties"].values()) if isinstance(obj.get("properties"), dict) else []
    values += obj["items"] if isinstance(obj.get("items"), list) else []
    if any(isinstance(v, float) and math.isfinite(v) and v.is_integer() for v in values):
        gaps.append("whole float")
    return gaps


_EVENT_INTEGERS = ("user_id", "item_id", "event_id", "session_id", "category", "list_id", "quantity")


def _agree(name: str, obj: dict[str, Any], decoder: Any, integer_fields: tuple[str, ...], seen: Counter[str]) -> None:
    raw = json.dumps(obj).encode()
    try:
        decoder(raw)
        accepted, why = True, ""
    except InvalidEvent as err:
        accepted, why = False, f"{err.reason}: {err}"
    assert why[:8] != "internal", why
    valid = validator(name).is_valid(obj)
    if valid == accepted:
        seen["agree"] += 1
        return
    gaps = _gaps(obj, integer_fields)
    assert valid and not accepted and gaps, (
        f"the {name} schema says {'valid' if valid else 'invalid'}, the decoder {'accepts' if accepted else why}: {raw!r}")
    seen[gaps[0]] += 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_the_event_schema_accepts_what_decode_accepts(obj: dict[str, Any]) -> None:
    _agree("event", obj, lambda raw: decode(raw, None, now_ms=0, limits=NO_LIMITS), _EVENT_INTEGERS, Counter())


@settings(max_examples=200, deadline=None)
@given(ITEMS)
def test_the_item_schema_accepts_what_decode_availability_accepts(obj: dict[str, Any]) -> None:
    _agree("item", obj, lambda raw: decode_availability(raw, limits=NO_LIMITS), ("item_id", "category"), Counter())


@settings(max_examples=150, deadline=None)
@given(IMPRESSIONS)
def test_the_impression_schema_accepts_what_decode_impression_accepts(obj: dict[str, Any]) -> None:
    _agree("impression", obj, lambda raw: decode_impression(raw, limits=NO_LIMITS), ("list_id", "user_id"), Counter())


@pytest.mark.parametrize("name, obj, accepted", [
    ("event", {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1000}, True),
    ("event", {"user_id": 42, "item_id": "i1", "type": "purchase", "ts": 1.5, "quantity": 2, "price": 9,
               "properties": {"size": "M", "n": -3, "w": 0.5, "gift": False}, "v": 1, "event_id": ""}, True),
    ("event", {"user_id": "u1", "item_id": "i1", "type": "view", "ts": -0.5}, False),  # before 1970
    ("event", {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1000, "v": True}, False),
    ("event", {"user_id": "u1", "item_id": "i1", "type": "view"}, False),
    ("event", {"user_id": "a\x01", "item_id": "i1", "type": "view", "ts": 1}, False),
    ("event", {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1, "quantity": 0}, False),
    ("item", {"item_id": "sku-1", "available": False}, True),
    ("item", {"item_id": "sku-9", "category": "shoes", "price": 59.9, "new": True, "ts": 1700000000000}, True),
    ("item", {"item_id": "sku-1"}, False),
    ("item", {"item_id": "sku-1", "category": None, "price": None}, False),
    ("item", {"item_id": "sku-1", "available": None, "category": "c"}, False),
    ("impression", {"list_id": "9f1c", "user_id": "u42", "items": ["sku-7", 3]}, True),
    ("impression", {"list_id": "9f1c", "user_id": "u42"}, False),
])
def test_examples_at_the_edges(name: str, obj: dict[str, Any], accepted: bool) -> None:
    decoders = {"event": lambda raw: decode(raw, None, now_ms=0, limits=NO_LIMITS),
                "item": lambda raw: decode_availability(raw, limits=NO_LIMITS),
                "impression": lambda raw: decode_impression(raw, limits=NO_LIMITS)}
    assert validator(name).is_valid(obj) is accepted
    try:
        decoders[name](json.dumps(obj).encode())
        assert accepted
    except InvalidEvent as err:
        assert not accepted, err


def test_a_broad_sample_agrees_with_few_gaps_and_holds_both_kinds() -> None:
    """The gaps the property tests allow stay a small share, and the sample holds valid events as well as
    invalid ones: a schema that said 'anything', or a sample of nothing but junk, would not pass."""
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None, database=None)
    @given(EVENTS)
    def sample(obj: dict[str, Any]) -> None:
        seen["valid" if validator("event").is_valid(obj) else "invalid"] += 1
        _agree("event", obj, lambda raw: decode(raw, None, now_ms=0, limits=NO_LIMITS), _EVENT_INTEGERS, seen)

    sample()
    total = seen["valid"] + seen["invalid"]
    assert seen["agree"] >= 0.9 * total and seen["valid"] >= 0.1 * total and seen["invalid"] >= 0.3 * total, seen


# -- outputs: what the code writes validates --------------------------------------------------------------

def test_every_event_the_synthetic_shop_writes_is_valid() -> None:
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=120, n_categories=6, n_events=2000, seed=3))
    check = validator("event")
    for event in shop.events():
        check.validate(json.loads(json.dumps(event)))


def test_every_published_list_is_valid_for_known_users_and_strangers() -> None:
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=120, n_categories=6, n_events=2000, seed=3))
    events = [decode(json.dumps(e).encode(), None, now_ms=10**13) for e in shop.events()]
    service = RecService(Settings(top_n=10, explore=0.2, variants="a:;b:explore=0.5,mf=0"), MemoryStore())
    check, published = validator("recommendation"), []
    for start in range(0, len(events), 250):
        result = service.apply([(("lane", start + n), e) for n, e in enumerate(events[start:start + 250])])
        published += result.recommendations
        service.persist(result)
    published.append(service.stranger_list())
    for rec in published:
        check.validate(json.loads(encode_recommendation(rec)))
    kinds = {i["because"]["kind"] for rec in published for i in rec["items"]}
    assert {rec["variant"] for rec in published[:-1]} == {"a", "b"} and len(kinds) >= 4, kinds
    assert published[-1]["user_id"] == "" and published[-1]["trigger"] is None and published[-1]["items"]
