"""Decoding at the boundary: valid events pass normalised, every kind of bad input is named."""

from __future__ import annotations

import json

import pytest

from stream_rec.events import REASONS, Availability, Event, InvalidEvent, Limits, decode, decode_availability, stream_of
from stream_rec.settings import Settings
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
    assert {reason for _, _, reason in malformed_messages(Settings())} == set(REASONS)


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
    assert decode_availability(b'{"item_id": "sku-1", "available": true, "ts": 5}') == Availability("sku-1", True)
