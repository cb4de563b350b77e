"""Decoding at the boundary: valid events pass normalised, every kind of bad input is named."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_rec import events
from stream_rec.events import (INT64_MAX, INT64_MIN, REASONS, Availability, Event, InvalidEvent, Limits, decode,
                               decode_availability, stream_of)
from stream_rec.settings import Settings
from stream_rec.wire import encode_keyed
from tools.demo import malformed_messages

NOW = 1_700_000_100_000


def _decode(obj: object, stream: str | None = "browse", **kw: object) -> Event:
    return decode(json.dumps(obj).encode(), stream, now_ms=NOW, **kw)  # type: ignore[arg-type]


def test_valid_event_with_every_optional_field() -> None:
    event = _decode({"v": 1, "user_id": "u1", "item_id": 77, "type": "purchase", "ts": 1_700_000_000_000,
                     "event_id": "e1", "session_id": "s1", "category": "shoes", "price": 9.5, "quantity": 2,
                     "properties": {"coupon": "X", "gift": True}}, "purchase")
    assert event == Event("u1", "77", "purchase", 1_700_000_000_000, "e1", "s1", "shoes", 9.5, 2)
    assert event.properties == {"coupon": "X", "gift": True}


def test_iso_timestamps_are_milliseconds_utc() -> None:
    assert _decode({"user_id": "u", "item_id": "i", "type": "view", "ts": "2023-11-14T22:13:20Z"}).ts_ms == 1_700_000_000_000
    assert _decode({"user_id": "u", "item_id": "i", "type": "view", "ts": "2023-11-14T22:13:20"}).ts_ms == 1_700_000_000_000


@pytest.mark.parametrize("topic, raw, reason", malformed_messages(Settings()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_malformed_kind_is_rejected_with_its_reason(topic: str, raw: bytes, reason: str) -> None:
    stream = {"stream-rec.browse": "browse", "stream-rec.purchase": "purchase"}[topic]
    with pytest.raises(InvalidEvent) as info:
        decode(raw, stream, now_ms=NOW, limits=Limits())
    assert info.value.reason == reason


def test_the_demo_covers_every_reason() -> None:
    # "internal" stands for a failure no input should cause: no demo message can show it.
    assert {reason for _, _, reason in malformed_messages(Settings())} == set(REASONS) - {"internal"}


@pytest.mark.parametrize("obj, field", [
    ({"item_id": "i", "type": "view", "ts": 1}, "user_id"),
    ({"user_id": "u", "type": "view", "ts": 1}, "item_id"),
    ({"user_id": "u", "item_id": "i", "ts": 1}, "type"),
    ({"user_id": "u", "item_id": "i", "type": "view"}, "ts"),
    ({"user_id": "u", "item_id": "i", "type": "view", "ts": "yesterday"}, "ts"),
    ({"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "price": "cheap"}, "price"),
    ({"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "quantity": 0}, "quantity"),
    ({"user_id": ["u"], "item_id": "i", "type": "view", "ts": 1}, "user_id"),
    ({"user_id": "u", "item_id": "i", "type": "view", "ts": True}, "ts"),
])
def test_error_message_names_the_field(obj: dict, field: str) -> None:
    with pytest.raises(InvalidEvent, match=f"'{field}'"):
        _decode(obj)


def test_infinite_number_from_overflow_is_rejected() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(b'{"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "price": 1e999}', "browse", now_ms=NOW)
    assert info.value.reason == "non_finite"


def test_size_limit_is_configurable() -> None:
    raw = json.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": 1}).encode()
    assert decode(raw, "browse", now_ms=NOW, limits=Limits(max_bytes=len(raw))).user_id == "u"
    with pytest.raises(InvalidEvent, match="over the limit"):
        decode(raw, "browse", now_ms=NOW, limits=Limits(max_bytes=len(raw) - 1))


def test_stream_none_accepts_any_type_and_streams_map_types() -> None:
    assert _decode({"user_id": "u", "item_id": "i", "type": "purchase", "ts": 1}, None).type == "purchase"
    assert [stream_of(t) for t in ("view", "click", "add_to_cart", "purchase")] == ["browse", "click", "click", "purchase"]


@pytest.mark.parametrize("raw, reason", [
    (b'{"item_id": "sku-1"}', "missing_field"),
    (b'{"available": false}', "missing_field"),
    (b'{"item_id": "sku-1", "available": "no"}', "bad_field"),
    (b'{"item_id": "", "available": false}', "bad_field"),
    (b'[1]', "not_object"),
    (b'', "empty"),
])
def test_availability_messages_are_checked_like_events(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_availability(raw)
    assert err.value.reason == reason


def test_availability_message_round_trip() -> None:
    assert decode_availability(b'{"item_id": "sku-1", "available": true, "ts": 5}') == Availability("sku-1", True, ts_ms=5)


def test_an_items_message_may_carry_catalogue_metadata_instead_of_availability() -> None:
    item = decode_availability(b'{"item_id": 42, "category": 7, "price": 10, "new": true, "ts": "2023-11-14T22:13:20Z"}')
    assert item == Availability("42", True, category="7", price=10.0, new=True, ts_ms=1_700_000_000_000)


@pytest.mark.parametrize("raw, reason", [
    (b'{"item_id": "sku-1"}', "missing_field"),  # neither availability nor metadata: says nothing
    (b'{"item_id": "sku-1", "new": "yes"}', "bad_field"),
    (b'{"item_id": "sku-1", "price": "cheap"}', "bad_field"),
    (b'{"item_id": "sku-1", "category": ["shoes"]}', "bad_field"),
    (b'{"item_id": "sku-1", "new": true, "ts": -5}', "bad_field"),
    (b'{"item_id": "sku-1", "new": true, "ts": "soon"}', "bad_field"),
])
def test_catalogue_metadata_is_checked_like_event_fields(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_availability(raw)
    assert err.value.reason == reason


def test_a_tombstone_on_the_items_topic_deletes_the_item_its_key_names() -> None:
    assert decode_availability(None, key=b"sku-1") == Availability("sku-1", False, deleted=True)
    assert decode_availability(None, key="été-42".encode()).item_id == "été-42"


@pytest.mark.parametrize("key, reason", [(None, "empty"), (b"", "empty"), (b"\xff\xfe", "bad_field"),
                                         (b"a\x00b", "bad_field"), (b"x" * 300, "bad_field")])
def test_a_tombstone_needs_an_item_id_as_its_key(key: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_availability(None, key=key)
    assert err.value.reason == reason


# --- Whatever the bytes: an Event that every later step can encode, or InvalidEvent naming the field. ---

BASE = b'{"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1700000000000%s}'
DIGITS_400 = b"1" * 400


def _with(extra: bytes) -> bytes:
    return BASE % extra


def _fields(**raw_values: bytes) -> bytes:
    """The base event with some fields' raw JSON replaced (bytes go in as written, escapes and all)."""
    values = {"user_id": b'"u1"', "item_id": b'"i1"', "type": b'"view"', "ts": b"1700000000000", **raw_values}
    return b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in values.items()) + b"}"


BAD = [
    # integers past 64 bits wherever they are kept: read as doubles (infinite past ~1e308), as orjson does
    ("ts_400_digits", _fields(ts=DIGITS_400), "non_finite", "ts"),
    ("ts_5000_digits", _fields(ts=b"9" * 5000), "non_finite", "ts"),
    ("ts_negative_400_digits", _fields(ts=b"-" + DIGITS_400), "non_finite", "ts"),
    ("ts_2**64", _fields(ts=b"18446744073709551616"), "bad_field", "ts"),
    ("ts_2**63", _fields(ts=b"9223372036854775808"), "bad_field", "ts"),
    ("ts_int64_max", _fields(ts=b"9223372036854775807"), "future_ts", "ts"),
    ("price_400_digits", _with(b', "price": ' + DIGITS_400), "non_finite", "price"),
    ("price_array", _with(b', "price": [1]'), "bad_field", "price"),
    ("quantity_400_digits", _with(b', "quantity": ' + DIGITS_400), "bad_field", "quantity"),
    ("quantity_2**63", _with(b', "quantity": 9223372036854775808'), "bad_field", "quantity"),
    ("property_400_digits", _with(b', "properties": {"n": ' + DIGITS_400 + b"}"), "non_finite", "properties.n"),
    ("property_2**64-1", _with(b', "properties": {"n": 18446744073709551615}'), "bad_field", "properties.n"),
    ("user_id_400_digits", _fields(user_id=DIGITS_400), "bad_field", "user_id"),
    ("user_id_2**64", _fields(user_id=b"18446744073709551616"), "bad_field", "user_id"),
    ("version_400_digits", _with(b', "v": ' + DIGITS_400), "unsupported_version", "v"),
    # floats that overflow, NaN and Infinity literals (anywhere, kept or not)
    ("price_1e999", _with(b', "price": 1e999'), "non_finite", "price"),
    ("property_-1e999", _with(b', "properties": {"x": -1e999}'), "non_finite", "properties.x"),
    ("ts_1e300", _fields(ts=b"1e300"), "bad_field", "ts"),
    ("ts_nan", _fields(ts=b"NaN"), "non_finite", ""),
    ("price_infinity", _with(b', "price": Infinity'), "non_finite", ""),
    ("unknown_field_-infinity", _with(b', "note": -Infinity'), "non_finite", ""),
    # ISO timestamps: absurd, overflowing or not ISO at all
    ("iso_year_1", _fields(ts=b'"0001-01-01T00:00:00Z"'), "bad_field", "ts"),
    ("iso_year_9999_west", _fields(ts=b'"9999-12-31T23:59:59.999999-23:59"'), "future_ts", "ts"),
    ("iso_month_13", _fields(ts=b'"2023-13-45T99:00:00"'), "bad_field", "ts"),
    ("iso_surrogate", _fields(ts=b'"2023-11-14T22:13:20\\ud800"'), "bad_field", "ts"),
    ("iso_huge", _fields(ts=b'"' + b"9" * 60_000 + b'"'), "bad_field", "ts"),
    # unpaired surrogates, as JSON escapes or as encoded bytes, in every string that is kept
    *[(f"{name}_surrogate_escape", _fields(**{name: b'"a\\ud800"'}), "bad_field", name) for name in ("user_id", "item_id")],
    *[(f"{name}_surrogate_escape", _with(b', "%s": "\\udfff"' % name.encode()), "bad_field", name)
      for name in ("event_id", "session_id", "category")],
    ("user_id_surrogate_bytes", _fields(user_id=b'"\xed\xa0\x80"'), "bad_field", "user_id"),
    ("property_key_surrogate", _with(b', "properties": {"\\ud800": 1}'), "bad_field", "properties.\\ud800"),
    ("property_value_surrogate", _with(b', "properties": {"k": "x\\udbff"}'), "bad_field", "properties.k"),
    ("item_id_high_low_reversed", _fields(item_id=b'"\\udc00\\ud800"'), "bad_field", "item_id"),
    # control characters in ids (Kafka and RocksDB keys; keys starting with NUL are reserved)
    ("user_id_nul_prefix", _fields(user_id=b'"\\u0000meta"'), "bad_field", "user_id"),
    ("item_id_newline", _fields(item_id=b'"i\\n1"'), "bad_field", "item_id"),
    ("event_id_unit_separator", _with(b', "event_id": "e\\u001f"'), "bad_field", "event_id"),
    ("session_id_del", _with(b', "session_id": "s\x7f"'), "bad_field", "session_id"),
    ("category_bell", _with(b', "category": "\\u0007"'), "bad_field", "category"),
    # nesting, shapes and sizes
    ("nested_20000_arrays", b"[" * 20_000 + b"]" * 20_000, "not_json", ""),
    ("nested_1100_objects", b'{"a":' * 1100 + b"1" + b"}" * 1100, "not_json", ""),
    ("nested_900_in_properties", _with(b', "properties": {"a": ' + b"[" * 900 + b"]" * 900 + b"}"), "bad_field", "properties.a"),
    ("nested_900_as_version", _with(b', "v": ' + b"[" * 900 + b"]" * 900), "unsupported_version", "v"),
    ("huge_array_as_user_id", _fields(user_id=b"[" + b"0," * 20_000 + b"0]"), "bad_field", "user_id"),
    ("too_many_properties", _with(b', "properties": {' + b",".join(b'"k%d": 1' % i for i in range(33)) + b"}"),
     "bad_field", "properties"),
    ("long_property_key", _with(b', "properties": {"' + b"k" * 300 + b'": 1}'), "bad_field", "properties.kkk"),
    ("long_property_value", _with(b', "properties": {"k": "' + b"v" * 300 + b'"}'), "bad_field", "properties.k"),
    ("duplicate_key_last_bad", b'{"user_id": "u2", "user_id": "\\u0000", "item_id": "i1", "type": "view", "ts": 1}',
     "bad_field", "user_id"),
    # not an object
    ("array", b"[1, 2]", "not_object", ""),
    ("string", b'"u1"', "not_object", ""),
    ("null", b"null", "not_object", ""),
    ("number_400_digits", DIGITS_400, "not_object", ""),
    ("true", b"true", "not_object", ""),
    ("invalid_utf8", b'{"user_id": "\xff"}', "not_json", ""),
    ("type_surrogate", _fields(type=b'"\\ud800"'), "unknown_type", "type"),
    ("type_array", _fields(type=b'["view"]'), "bad_field", "type"),
]


@pytest.mark.parametrize("raw, reason, field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_its_reason_naming_the_field(raw: bytes, reason: str, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw, "browse", now_ms=NOW)
    assert info.value.reason == reason
    assert f"'{field}" in str(info.value) if field else str(info.value)
    assert len(str(info.value)) < 400  # messages quote values briefly, never a whole field


@pytest.mark.parametrize("raw, expected", [
    (_with(b', "quantity": 9223372036854775807'), {"quantity": INT64_MAX}),
    (_with(b', "properties": {"n": -9223372036854775808, "f": 1e308}'), {"properties": {"n": INT64_MIN, "f": 1e308}}),
    (_with(b', "properties": {"note": "two\\nlines\\u0000"}'), {"properties": {"note": "two\nlines\x00"}}),  # free text
    (_fields(user_id=b'"a\\u00a0b \\ud83d\\ude00"'), {"user_id": "a\xa0b \U0001F600"}),  # a paired surrogate is a character
    (_fields(user_id=b"18446744073709551615"), {"user_id": "18446744073709551615"}),
    (_with(b', "price": 18446744073709551616000'), {"price": 1.8446744073709552e22}),  # a double, as orjson reads it
    (_with(b', "price": 18446744073709551615'), {"price": 1.8446744073709552e19}),
    (_fields(ts=b'"9999-12-31T23:59:59Z"'), None),  # future_ts below: ISO years stop at 9999, well within 64 bits
    (b'{"user_id": "\\u0000", "user_id": "u2", "item_id": "i1", "type": "view", "ts": 1}', {"user_id": "u2"}),
], ids=["quantity_int64_max", "property_int64_min", "property_control_chars", "nbsp_and_emoji_id", "u64_id", "price_past_64_bits", "price_u64",
        "iso_9999", "duplicate_key_last_wins"])
def test_edges_that_are_valid(raw: bytes, expected: dict[str, Any] | None) -> None:
    if expected is None:
        assert decode(raw, "browse", now_ms=INT64_MAX // 2).ts_ms == 253_402_300_799_000
        return
    event = decode(raw, "browse", now_ms=NOW)
    assert {name: getattr(event, name) for name in expected} == expected
    _assert_safe(event)


def test_a_bug_inside_decode_is_still_an_invalid_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(events, "_timestamp", broken)
    with pytest.raises(InvalidEvent) as info:
        decode(_with(b""), "browse", now_ms=NOW)
    assert info.value.reason == "internal" and "KeyError: 'surprise'" in str(info.value)
    monkeypatch.setattr(events, "_required_id", broken)
    with pytest.raises(InvalidEvent, match="KeyError"):
        decode_availability(b'{"item_id": "sku-1", "available": false}')


@pytest.mark.parametrize("raw", [b'{"item_id": "\\ud800", "available": false}', b'{"item_id": "\\u0000x", "available": true}',
                                 b'{"item_id": ' + DIGITS_400 + b', "available": true}'])
def test_availability_item_ids_are_checked_like_event_ids(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="'item_id'") as info:
        decode_availability(raw)
    assert info.value.reason == "bad_field"


def _assert_safe(event: Event) -> None:
    """What the runtime does with a valid event next must work: key it, re-encode it, store its numbers."""
    for name in ("user_id", "item_id", "event_id", "session_id", "category"):
        value = getattr(event, name)
        if value is not None:
            value.encode()
            assert not any(ord(c) < 32 or ord(c) == 127 for c in value), name
    assert INT64_MIN <= event.ts_ms <= INT64_MAX
    assert event.quantity is None or 1 <= event.quantity <= INT64_MAX
    assert event.price is None or math.isfinite(event.price)
    encode_keyed(event, "shop.browse", 0, 0)


def _outcome(raw: bytes) -> tuple[Any, ...]:
    try:
        event = decode(raw, "browse", now_ms=NOW)
    except InvalidEvent as err:
        return ("invalid", err.reason)
    return ("event", event, event.properties)


def _check_any(raw: bytes) -> None:
    for stream in ("browse", None):
        try:
            event = decode(raw, stream, now_ms=NOW)
        except InvalidEvent as err:
            assert err.reason in REASONS and err.reason != "internal", str(err)
        else:
            _assert_safe(event)
    try:
        decode_availability(raw)
    except InvalidEvent as err:
        assert err.reason != "internal", str(err)


_NASTY_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=6),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, categories=None), max_size=4),  # surrogates
    st.sampled_from(["", "view", "purchase", "u1", "\x00", "\ud800", "2023-11-14T22:13:20Z", "0001-01-01", "x" * 300]),
)
_NASTY_NUMBER = st.one_of(
    st.integers(), st.integers(min_value=-(10**400), max_value=10**400), st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
)
_NASTY_VALUE = st.recursive(st.one_of(_NASTY_TEXT, _NASTY_NUMBER),
                            lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_NASTY_TEXT, inner, max_size=4)),
                            max_leaves=12)
_FIELD_NAMES = st.sampled_from(["user_id", "item_id", "type", "ts", "v", "event_id", "session_id", "category", "price",
                                "quantity", "properties", "available", "note"])


@settings(derandomize=True, max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_an_event_or_invalid_event(raw: bytes) -> None:
    _check_any(raw)


@settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(st.dictionaries(_FIELD_NAMES, _NASTY_VALUE, max_size=6), st.booleans(), st.booleans())
def test_any_json_like_event_gives_an_event_or_invalid_event(changes: dict[str, Any], ascii_only: bool, as_text: bool) -> None:
    obj = {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1_700_000_000_000, **changes}
    text = json.dumps(obj, ensure_ascii=ascii_only)  # NaN, Infinity and huge integers written as Python does
    _check_any(text.encode("utf-8", "surrogatepass"))  # raw surrogate bytes when not escaped
    if as_text:
        _check_any(json.dumps(changes).encode("utf-8", "surrogatepass"))


class _RefusingOrjson:
    JSONDecodeError = events.orjson.JSONDecodeError

    @staticmethod
    def loads(raw: bytes) -> None:
        raise events.orjson.JSONDecodeError("refused for the test", "", 0)


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(st.dictionaries(_FIELD_NAMES, _NASTY_VALUE, max_size=6))
def test_both_parsers_give_the_same_outcome(changes: dict[str, Any]) -> None:
    """What orjson reads, the JSON fallback reads the same way: a message cannot mean two things."""
    raw = json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1_700_000_000_000, **changes}).encode()
    fast = _outcome(raw)
    saved, events.orjson = events.orjson, _RefusingOrjson  # type: ignore[assignment]
    try:
        slow = _outcome(raw)
    finally:
        events.orjson = saved
    assert fast == slow
