"""The event schema (version 1) and its checks at the boundary.

A shop sends one JSON object per Kafka message::

    {"user_id": "u42", "item_id": "sku-1", "type": "purchase", "ts": 1700000000000,
     "event_id": "e-9", "session_id": "s-1", "category": "shoes", "price": 59.9, "quantity": 1,
     "list_id": "9f1c0a7d3b2e4c55"}

``user_id``, ``item_id``, ``type`` and ``ts`` are required; everything else is optional. ``ts`` is epoch
milliseconds (an int or float) or an ISO-8601 string. ``v`` may name the schema version (only 1 exists).
Each type belongs to one stream: views to *browse*, clicks and add-to-carts to *click*, purchases to
*purchase*.

:func:`decode` turns raw bytes into an :class:`Event` or raises :class:`InvalidEvent` whose ``reason`` is
one of :data:`REASONS` and whose message names the field; the runtime sends the untouched bytes to the
dead-letter topic with that reason. It raises nothing else, whatever the bytes: ``internal`` marks a
failure the checks did not foresee (a bug), with the exception in the message.
"""

from __future__ import annotations

import json
import math
import re
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
    "internal",
)
#: Reasons the worker gives beyond decoding: an event whose learning raised (set aside, the batch goes on).
RUNTIME_REASONS: Final = ("learn_failed",)
MAX_ID_CHARS: Final = 256
MAX_PROPERTIES: Final = 32
#: The longest property key or string value.
MAX_PROPERTY_CHARS: Final = 256
#: Timestamps, quantities and integer property values must fit the signed 64 bits that numpy and RocksDB rows
#: hold; an integer id (it becomes a string) or price (a double) may be unsigned.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_FLOAT_MAX: Final = 1.7976931348623157e308
#: Characters no id may contain: ids become Kafka and RocksDB keys, and keys starting with NUL are reserved.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


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
    #: The list (``list_id`` of a published list) the user acted from, when the shop says so.
    list_id: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`decode` accepts: message size and how far in the future a timestamp may lie."""

    max_bytes: int = 64 * 1024
    max_future_ms: int = 24 * 3600 * 1000


def decode(raw: bytes | None, stream: str | None = None, *, now_ms: int, limits: Limits = Limits()) -> Event:
    """Decode and validate one message: an :class:`Event`, or :class:`InvalidEvent` and nothing else.

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
    >>> try:
    ...     decode(b'{"user_id": "u1\\\\u0000", "item_id": "i1", "type": "view", "ts": 1000}', now_ms=2000)
    ... except InvalidEvent as err:
    ...     print(err.reason, "-", err)
    bad_field - field 'user_id' contains the control character U+0000
    """
    try:
        obj = _parse(raw, limits.max_bytes)
        version = obj.get("v", SCHEMA_VERSION)
        if version != SCHEMA_VERSION or version is True:  # True == 1 in Python, not in JSON
            raise InvalidEvent("unsupported_version", f"field 'v': schema version {_show(version)} is not supported (expected 1)")
        etype = _event_type(obj.get("type"), stream)
        ts_ms = _timestamp(obj.get("ts"), now_ms + limits.max_future_ms)
        return Event(
            user_id=_required_id(obj, "user_id"),
            item_id=_required_id(obj, "item_id"),
            type=etype,
            ts_ms=ts_ms,
            event_id=_optional_id(obj, "event_id"),
            session_id=_optional_id(obj, "session_id"),
            category=_optional_id(obj, "category"),
            price=_price(obj.get("price")),
            quantity=_quantity(obj.get("quantity")),
            properties=_properties(obj.get("properties")),
            list_id=_optional_id(obj, "list_id"),
        )
    except InvalidEvent:
        raise
    except Exception as exc:  # a case the checks missed: still this message's fault alone
        raise internal_error(exc) from exc


@dataclass(frozen=True, slots=True)
class Availability:
    """A message of the items topic (the catalogue), keyed by item id::

        {"item_id": "sku-1", "available": false}
        {"item_id": "sku-9", "category": "shoes", "price": 59.9, "new": true, "ts": 1700000000000}

    ``available`` (default true when the message carries metadata), ``category``, ``price`` and ``new``
    (the item has just arrived: it may be explored before its first event, from ``ts``, epoch ms or
    ISO-8601, else from when it is read) are each optional, but a message gives at least one of them.
    A tombstone (a null value keyed by the item id) deletes the item: ``deleted`` and not available."""

    item_id: str
    available: bool
    deleted: bool = False
    category: str | None = None
    price: float | None = None
    new: bool = False
    ts_ms: int | None = None


_CATALOGUE_FIELDS = ("available", "category", "price", "new")


def decode_availability(raw: bytes | None, *, key: bytes | None = None, limits: Limits = Limits()) -> Availability:
    """A message of the items topic, or :class:`InvalidEvent` naming the field (same reasons as events).
    A null value (``raw`` None: Kafka's tombstone) deletes the item its ``key`` names.

    >>> decode_availability(b'{"item_id": "sku-1", "available": false}')
    Availability(item_id='sku-1', available=False, deleted=False, category=None, price=None, new=False, ts_ms=None)
    >>> decode_availability(None, key=b"sku-1").deleted
    True
    >>> item = decode_availability(b'{"item_id": "sku-9", "category": "shoes", "price": 59.9, "new": true}')
    >>> item.available, item.category, item.price, item.new
    (True, 'shoes', 59.9, True)
    """
    try:
        if raw is None:
            item_id = _id_of_key(key, "item_id", "empty", "a tombstone (null value) deletes the item its key names")
            return Availability(item_id, False, deleted=True)
        obj = _parse(raw, limits.max_bytes)
        item_id = _required_id(obj, "item_id")
        if all(obj.get(name) is None for name in _CATALOGUE_FIELDS):
            raise InvalidEvent("missing_field", "field 'available' is required (or item metadata: 'category', "
                                                "'price', 'new')")
        available = obj.get("available", True)
        if not isinstance(available, bool):
            raise InvalidEvent("bad_field", f"field 'available' must be true or false, got {_kind(available)}")
        new = obj.get("new", False)
        if not isinstance(new, bool):
            raise InvalidEvent("bad_field", f"field 'new' must be true or false, got {_kind(new)}")
        ts = obj.get("ts")
        ts_ms = None if ts is None else _timestamp(ts, INT64_MAX)  # an arrival may be announced ahead of time
        return Availability(item_id, available, category=_optional_id(obj, "category"), price=_price(obj.get("price")),
                            new=new, ts_ms=ts_ms)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise internal_error(exc) from exc


@dataclass(frozen=True, slots=True)
class Forget:
    """A request to erase everything held about a user: a message on the forget topic keyed by the user id
    (its value is not read)."""

    user_id: str


def decode_forget(key: bytes | None) -> Forget:
    """The request a forget-topic message's key makes, or :class:`InvalidEvent` (reasons as for events).

    >>> decode_forget(b"u42")
    Forget(user_id='u42')
    >>> decode_forget(None)
    Traceback (most recent call last):
    ...
    stream_rec.events.InvalidEvent: a forget request is keyed by the user id to forget, and it has no key
    """
    try:
        return Forget(_id_of_key(key, "user_id", "missing_field", "a forget request is keyed by the user id to forget"))
    except InvalidEvent:
        raise
    except Exception as exc:
        raise internal_error(exc) from exc


def _id_of_key(key: bytes | None, name: str, missing: str, what: str) -> str:
    """The id a message's key names (a tombstone's, a forget request's), checked like the field ``name``;
    no key is the reason ``missing``, ``what`` says why one was needed."""
    if not key:
        raise InvalidEvent(missing, f"{what}, and it has no key")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("bad_field", f"the key ({name.replace('_', ' ')}) is not UTF-8 text") from None
    return _required_id({name: text}, name)


#: Most items one impression may name (a page shows a few dozen).
MAX_IMPRESSION_ITEMS: Final = 1000


@dataclass(frozen=True, slots=True)
class Impression:
    """What a front end showed a user from one list: ``{"list_id": ..., "user_id": ..., "items": [...]}``
    on the impressions topic (keyed by the user id, like events)."""

    user_id: str
    list_id: str
    items: tuple[str, ...]


def decode_impression(raw: bytes | None, *, limits: Limits = Limits()) -> Impression:
    """An impressions-topic message, or :class:`InvalidEvent` naming the field (same reasons as events).

    >>> decode_impression(b'{"list_id": "9f1c", "user_id": "u42", "items": ["sku-7", "sku-3"]}')
    Impression(user_id='u42', list_id='9f1c', items=('sku-7', 'sku-3'))
    """
    try:
        obj = _parse(raw, limits.max_bytes)
        items = obj.get("items")
        if items is None:
            raise InvalidEvent("missing_field", "field 'items' is required")
        if not isinstance(items, list) or len(items) > MAX_IMPRESSION_ITEMS:
            raise InvalidEvent("bad_field", f"field 'items' must be a list of at most {MAX_IMPRESSION_ITEMS} item ids")
        shown = tuple(_required_id({"items": item}, "items") for item in items)
        return Impression(_required_id(obj, "user_id"), _required_id(obj, "list_id"), shown)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise internal_error(exc) from exc


def internal_error(exc: BaseException) -> InvalidEvent:
    """The :class:`InvalidEvent` (reason ``internal``) standing for an unforeseen failure on one message.

    >>> str(internal_error(KeyError("x")))
    "stream_rec failed on this message: KeyError: 'x'"
    """
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose text cannot be built still names its type
        text = type(exc).__name__
    return InvalidEvent("internal", f"stream_rec failed on this message: {text[:900]}")


def _parse_int(text: str) -> int | float:
    # Integers as orjson reads them, so that a message means the same whichever parser read it: those of
    # 64 bits (signed, or unsigned) as ints, longer ones as the nearest double (infinite past ~1e308), which
    # also spares converting a huge literal (quadratic in its digits; Python refuses past 4,300).
    if len(text) <= 20:
        value = int(text)
        if INT64_MIN <= value <= _UINT64_MAX:
            return value
    return float(text)


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
    if obj.__class__ is not dict:
        raise InvalidEvent("not_object", f"the message is {_kind(obj)}, not a JSON object")
    return obj


def _loads_slowly(raw: bytes) -> Any:
    """What orjson refused, through json: it names the fault, and reads what orjson will not (NaN, numbers
    past a double's range, unpaired surrogates), which the field checks then judge."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_int=_parse_int)
    except InvalidEvent:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidEvent("not_json", f"the message is not JSON: {str(exc)[:200]}") from None
    except RecursionError:  # "[[[[...": valid JSON nested deeper than the parser's stack
        raise InvalidEvent("not_json", "the message is JSON nested too deeply to be an event") from None


_JSON_KINDS: Final = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
                      bool: "a boolean", type(None): "null"}


def _kind(value: Any) -> str:
    """A value's JSON type for a message, without printing the value."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A short, printable rendering of a value from a message (never a deep or huge repr)."""
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)  # ints have at most 64 bits here (orjson, _parse_int)
    return f"({_kind(value)})"


def _field_name(key: str) -> str:
    """A property's field name for a message: its key, escaped when it is not plain text."""
    shown = key if key.isprintable() else repr(key)[1:-1]
    return "properties." + (shown if len(shown) <= 60 else shown[:60] + "...")


def _event_type(value: Any, stream: str | None) -> str:
    if value not in EVENT_TYPES:  # a tuple: compares, so unhashable values do not raise
        _reject_type(value)
    if stream is not None and value not in STREAM_TYPES[stream]:
        allowed = ", ".join(sorted(STREAM_TYPES[stream]))
        raise InvalidEvent("wrong_stream", f"type {value!r} does not belong on the {stream} stream (expected one of: {allowed})")
    return value  # type: ignore[no-any-return]


def _reject_type(value: Any) -> None:
    if value is None:
        raise InvalidEvent("missing_field", "field 'type' is required")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent("bad_field", f"field 'type' must be a string, got {_kind(value)}")
    if value == "":
        raise InvalidEvent("bad_field", "field 'type' must not be empty")
    raise InvalidEvent("unknown_type", f"field 'type': unknown event type {_show(str(value))} (expected one of: {', '.join(EVENT_TYPES)})")


def _required_id(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value.__class__ is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
        return value
    if value is None:
        raise InvalidEvent("missing_field", f"field {name!r} is required")
    text = _id_slowly(name, value)
    if not text:
        raise InvalidEvent("bad_field", f"field {name!r} must not be empty")
    return text


def _optional_id(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or (value.__class__ is str and len(value) <= MAX_ID_CHARS and value.isprintable()):
        return value
    return _id_slowly(name, value)


def _id_slowly(name: str, value: Any) -> str:
    """An id that is not short printable text: an integer, or text to look at closely, or a fault."""
    # Numeric ids are common in shop logs; accept ints and normalise them to strings, nothing else.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidEvent("bad_field", f"field {name!r} must be a string, got {_kind(value)}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("bad_field", f"field {name!r} is longer than {MAX_ID_CHARS} characters")
    _check_text(name, value)
    if found := _CONTROL.search(value):
        raise InvalidEvent("bad_field", f"field {name!r} contains the control character U+{ord(found.group()):04X}")
    return value


def _check_text(name: str, text: str) -> None:
    # The only Python strings that UTF-8 cannot encode are those with surrogates (from "\ud800" escapes, or
    # encoded surrogates that the fallback parser lets through).
    if _SURROGATE.search(text):
        raise InvalidEvent("bad_field", f"field '{name}' is not valid Unicode (it contains an unpaired surrogate)")


def _timestamp(value: Any, latest_ms: int) -> int:
    if value.__class__ is int and 0 <= value <= latest_ms:
        return value
    if value is None:
        raise InvalidEvent("missing_field", "field 'ts' is required")
    ts_ms = _iso_to_ms(value) if isinstance(value, str) else _integer("ts", value)
    if ts_ms < 0 or (value.__class__ is float and value < 0):  # -0.5 is before 1970 too, though int() makes it 0
        raise InvalidEvent("bad_field", "field 'ts' must not be before 1970")
    if ts_ms > latest_ms:
        raise InvalidEvent("future_ts", f"field 'ts': {ts_ms} ms lies too far in the future")
    return ts_ms


def _integer(name: str, value: Any) -> int:
    """A number as a 64-bit integer (a float loses its fraction), or a fault naming the field."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent("non_finite", f"field {name!r} is not a finite number (or is too large for a double)")
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("bad_field", f"field {name!r} must be a number, got {_kind(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidEvent("bad_field", f"field {name!r} is out of the 64-bit integer range")
    return value


def _iso_to_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)  # a shop log without an offset is taken as UTC
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):  # years are 1-9999, so within 64 bits: absurd ones are judged by range
        raise InvalidEvent("bad_field", f"field 'ts': {_show(text)} is neither epoch milliseconds nor ISO-8601") from None


def _price(value: Any) -> float | None:
    if value.__class__ is float and -_FLOAT_MAX <= value <= _FLOAT_MAX:  # finite: NaN fails both
        return value
    if value is None:
        return None
    if isinstance(value, float):
        raise InvalidEvent("non_finite", "field 'price' is not a finite number (or is too large for a double)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("bad_field", f"field 'price' must be a number, got {_kind(value)}")
    return float(value)  # at most 64 bits (orjson, _parse_int): always finite


def _quantity(value: Any) -> int | None:
    if value is None or (value.__class__ is int and 1 <= value <= INT64_MAX):
        return value
    raise InvalidEvent("bad_field", "field 'quantity' must be a positive integer of at most 64 bits")


def _properties(props: Any) -> dict[str, Any] | None:
    if props is None:
        return None
    if not isinstance(props, dict):
        raise InvalidEvent("bad_field", "field 'properties' must be an object")
    if len(props) > MAX_PROPERTIES:
        raise InvalidEvent("bad_field", f"field 'properties' has more than {MAX_PROPERTIES} entries")
    for key, value in props.items():
        if not (len(key) <= MAX_PROPERTY_CHARS and key.isprintable()):
            _check_property_key(key)
        if value.__class__ is str:
            if len(value) > MAX_PROPERTY_CHARS or not value.isprintable():
                _check_property_text(key, value)
        elif value.__class__ is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise InvalidEvent("bad_field", f"field '{_field_name(key)}' is out of the 64-bit integer range")
        elif value.__class__ is float:
            if not -_FLOAT_MAX <= value <= _FLOAT_MAX:
                raise InvalidEvent("non_finite", f"field '{_field_name(key)}' is not a finite number (or is too large for a double)")
        elif value.__class__ is not bool:
            raise InvalidEvent("bad_field", f"field '{_field_name(key)}' must be a short string, number or boolean, got {_kind(value)}")
    return props


def _check_property_key(key: str) -> None:
    if len(key) > MAX_PROPERTY_CHARS:
        raise InvalidEvent("bad_field", f"field '{_field_name(key)}': the key is longer than {MAX_PROPERTY_CHARS} characters")
    _check_text(_field_name(key), key)


def _check_property_text(key: str, value: str) -> None:
    if len(value) > MAX_PROPERTY_CHARS:
        raise InvalidEvent("bad_field", f"field '{_field_name(key)}' is longer than {MAX_PROPERTY_CHARS} characters")
    _check_text(_field_name(key), value)  # control characters are fine in free text; surrogates are not


def stream_of(event_type: str) -> str:
    """The input stream an event type belongs on.

    >>> stream_of("add_to_cart")
    'click'
    """
    for stream, types in STREAM_TYPES.items():
        if event_type in types:
            return stream
    raise ValueError(f"unknown event type {event_type!r}")
