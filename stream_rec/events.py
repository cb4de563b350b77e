"""The event schema (version 1) and its checks at the boundary.

A shop sends one JSON object per Kafka message::

    {"user_id": "u42", "item_id": "sku-1", "type": "purchase", "ts": 1700000000000,
     "event_id": "e-9", "session_id": "s-1", "category": "shoes", "price": 59.9, "quantity": 1}

``user_id``, ``item_id``, ``type`` and ``ts`` are required; everything else is optional. ``ts`` is epoch
milliseconds (an int or float) or an ISO-8601 string. ``v`` may name the schema version (only 1 exists).
Each type belongs to one stream: views to *browse*, clicks and add-to-carts to *click*, purchases to
*purchase*.

:func:`decode` turns raw bytes into an :class:`Event` or raises :class:`InvalidEvent` whose ``reason`` is
one of :data:`REASONS` and whose message names the field; the runtime sends the untouched bytes to the
dead-letter topic with that reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import orjson

SCHEMA_VERSION: Final = 1
EVENT_TYPES: Final = ("view", "click", "add_to_cart", "purchase")
#: Which event types each input stream may carry.
STREAM_TYPES: Final[dict[str, frozenset[str]]] = {
    "browse": frozenset({"view"}),
    "click": frozenset({"click", "add_to_cart"}),
    "purchase": frozenset({"purchase"}),
}
#: Every reason a message can be dead-lettered for (the label of the dead-letter metric).
REASONS: Final = (
    "empty",
    "too_large",
    "not_json",
    "not_object",
    "unsupported_version",
    "missing_field",
    "bad_field",
    "non_finite",
    "unknown_type",
    "wrong_stream",
    "future_ts",
)
#: Reasons the worker gives beyond decoding: an event whose learning raised (set aside, the batch goes on).
RUNTIME_REASONS: Final = ("learn_failed",)
MAX_ID_CHARS: Final = 256
MAX_PROPERTIES: Final = 32
MAX_PROPERTY_CHARS: Final = 256


class InvalidEvent(ValueError):
    """A message that is not a valid event; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event. ``ts_ms`` is always epoch milliseconds."""

    user_id: str
    item_id: str
    type: str
    ts_ms: int
    event_id: str | None = None
    session_id: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int | None = None
    properties: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`decode` accepts: message size and how far in the future a timestamp may lie."""

    max_bytes: int = 64 * 1024
    max_future_ms: int = 24 * 3600 * 1000


def decode(raw: bytes | None, stream: str | None = None, *, now_ms: int, limits: Limits = Limits()) -> Event:
    """Decode and validate one message.

    Parameters
    ----------
    raw
        The Kafka message value, untouched.
    stream
        ``"browse"``, ``"click"`` or ``"purchase"``: the stream it arrived on, whose types it must carry.
        ``None`` skips that check (replay of a mixed log).
    now_ms
        The current time, for rejecting timestamps absurdly far in the future.

    Examples
    --------
    >>> e = decode(b'{"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1000}', "browse", now_ms=2000)
    >>> e.user_id, e.type, e.ts_ms
    ('u1', 'view', 1000)
    >>> try:
    ...     decode(b'{"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1000}', "purchase", now_ms=2000)
    ... except InvalidEvent as err:
    ...     print(err.reason, "-", err)
    wrong_stream - type 'view' does not belong on the purchase stream (expected one of: purchase)
    """
    obj = _parse(raw, limits.max_bytes)
    version = obj.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidEvent("unsupported_version", f"field 'v': schema version {version!r} is not supported (expected 1)")
    etype = _required_str(obj, "type")
    if etype not in EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"field 'type': unknown event type {etype!r} (expected one of: {', '.join(EVENT_TYPES)})")
    if stream is not None and etype not in STREAM_TYPES[stream]:
        allowed = ", ".join(sorted(STREAM_TYPES[stream]))
        raise InvalidEvent("wrong_stream", f"type {etype!r} does not belong on the {stream} stream (expected one of: {allowed})")
    ts_ms = _timestamp(obj, now_ms + limits.max_future_ms)
    return Event(
        user_id=_required_str(obj, "user_id"),
        item_id=_required_str(obj, "item_id"),
        type=etype,
        ts_ms=ts_ms,
        event_id=_optional_str(obj, "event_id"),
        session_id=_optional_str(obj, "session_id"),
        category=_optional_str(obj, "category"),
        price=_optional_number(obj, "price"),
        quantity=_optional_quantity(obj),
        properties=_properties(obj),
    )


@dataclass(frozen=True, slots=True)
class Availability:
    """An item-availability message: ``{"item_id": "sku-1", "available": false}`` (``ts`` optional)."""

    item_id: str
    available: bool


def decode_availability(raw: bytes | None, *, limits: Limits = Limits()) -> Availability:
    """A message of the items topic, or :class:`InvalidEvent` naming the field (same reasons as events).

    >>> decode_availability(b'{"item_id": "sku-1", "available": false}')
    Availability(item_id='sku-1', available=False)
    """
    obj = _parse(raw, limits.max_bytes)
    item_id = _required_str(obj, "item_id")
    if "available" not in obj:
        raise InvalidEvent("missing_field", "field 'available' is required")
    available = obj["available"]
    if not isinstance(available, bool):
        raise InvalidEvent("bad_field", f"field 'available' must be true or false, got {type(available).__name__}")
    return Availability(item_id, available)


def _reject_constant(name: str) -> float:
    # json.loads accepts the non-standard literals NaN and Infinity unless told otherwise.
    raise InvalidEvent("non_finite", f"the message contains {name}, which is not a finite number")


def _parse(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if not raw:
        raise InvalidEvent("empty", "the message is empty")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"the message has {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        obj = orjson.loads(raw)  # ~4x json.loads on an event
    except orjson.JSONDecodeError:
        obj = _loads_slowly(raw)
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"the message is a JSON {type(obj).__name__}, not an object")
    return obj


def _loads_slowly(raw: bytes) -> Any:
    """What orjson refused, through json: it names the fault (and takes integers past 64 bits)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except InvalidEvent:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("not_json", f"the message is not JSON: {exc}") from None
    except RecursionError:  # "[[[[...": valid JSON nested deeper than the parser's stack
        raise InvalidEvent("not_json", "the message is JSON nested too deeply to be an event") from None


def _required_str(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", f"field {name!r} is required")
    value = _optional_str(obj, name)
    if not value:
        raise InvalidEvent("bad_field", f"field {name!r} must not be empty")
    return value


def _optional_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    # Numeric ids are common in shop logs; accept ints and normalise them to strings, nothing else.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidEvent("bad_field", f"field {name!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_field", f"field {name!r} is longer than {MAX_ID_CHARS} characters")
    return value


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("bad_field", f"field {name!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidEvent("non_finite", f"field {name!r} is not a finite number")
    return float(value)


def _optional_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    return None if value is None else _finite(name, value)


def _optional_quantity(obj: dict[str, Any]) -> int | None:
    value = obj.get("quantity")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidEvent("bad_field", "field 'quantity' must be a positive integer")
    return value


def _timestamp(obj: dict[str, Any], latest_ms: int) -> int:
    if "ts" not in obj or obj["ts"] is None:
        raise InvalidEvent("missing_field", "field 'ts' is required")
    value = obj["ts"]
    if isinstance(value, str):
        ts_ms = _iso_to_ms(value)
    else:
        ts_ms = int(_finite("ts", value))
    if ts_ms < 0:
        raise InvalidEvent("bad_field", "field 'ts' must not be before 1970")
    if ts_ms > latest_ms:
        raise InvalidEvent("future_ts", f"field 'ts': {ts_ms} ms lies too far in the future")
    return ts_ms


def _iso_to_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent("bad_field", f"field 'ts': {text!r} is neither epoch milliseconds nor ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # a shop log without an offset is taken as UTC
    return int(moment.timestamp() * 1000)


def _properties(obj: dict[str, Any]) -> dict[str, Any] | None:
    props = obj.get("properties")
    if props is None:
        return None
    if not isinstance(props, dict):
        raise InvalidEvent("bad_field", "field 'properties' must be an object")
    if len(props) > MAX_PROPERTIES:
        raise InvalidEvent("bad_field", f"field 'properties' has more than {MAX_PROPERTIES} entries")
    for key, value in props.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent("non_finite", f"field 'properties.{key}' is not a finite number")
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > MAX_PROPERTY_CHARS):
            raise InvalidEvent("bad_field", f"field 'properties.{key}' must be a short string, number or boolean")
    return props


def stream_of(event_type: str) -> str:
    """The input stream an event type belongs on.

    >>> stream_of("add_to_cart")
    'click'
    """
    for stream, types in STREAM_TYPES.items():
        if event_type in types:
            return stream
    raise ValueError(f"unknown event type {event_type!r}")
