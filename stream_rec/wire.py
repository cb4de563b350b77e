"""Bytes on the topics stream_rec writes: re-keyed events, recommendation lists, dead-letter headers."""

from __future__ import annotations

from typing import Any

import orjson

from stream_rec.events import Event, Forget, Impression

_FIELDS = tuple(Event.__dataclass_fields__)


def encode_keyed(event: Event | Forget | Impression, topic: str, partition: int, offset: int) -> bytes:
    """An event (or a forget request) for the internal user-keyed topic, with the source position that
    makes it idempotent.

    >>> e = Event("u1", "i1", "view", 5)
    >>> decode_keyed(encode_keyed(e, "shop.browse", 2, 41)) == (e, "shop.browse:2", 41)
    True
    >>> decode_keyed(encode_keyed(Forget("u1"), "shop.forget", 0, 7))
    (Forget(user_id='u1'), 'shop.forget:0', 7)
    >>> decode_keyed(encode_keyed(Impression("u1", "l1", ("a", "b")), "shop.impressions", 0, 8))[0]
    Impression(user_id='u1', list_id='l1', items=('a', 'b'))
    """
    if event.__class__ is Forget:
        return orjson.dumps({"forget": event.user_id, "src": [topic, partition, offset]})
    if event.__class__ is Impression:
        return orjson.dumps({"shown": [event.user_id, event.list_id, event.items], "src": [topic, partition, offset]})
    # getattr over the slots, not dataclasses.asdict, which deep-copies and costs ~10 us an event.
    body = {name: value for name in _FIELDS if (value := getattr(event, name)) is not None}
    body["src"] = [topic, partition, offset]
    return orjson.dumps(body)


def decode_keyed(data: bytes) -> tuple[Event | Forget | Impression, str, int]:
    """``(event, forget request or impression, source lane, source offset)`` from :func:`encode_keyed` bytes."""
    body = orjson.loads(data)  # our own bytes: already validated before they were written
    topic, partition, offset = body.pop("src")
    if "forget" in body:
        return Forget(body["forget"]), f"{topic}:{partition}", offset
    if "shown" in body:
        user, list_id, items = body["shown"]
        return Impression(user, list_id, tuple(items)), f"{topic}:{partition}", offset
    return Event(**{k: body[k] for k in _FIELDS if k in body}), f"{topic}:{partition}", offset


#: The recommendations topic's key of the list for a user the shop has not seen (popular items): no user id
#: is empty (an event with an empty ``user_id`` is rejected), so the key cannot belong to a user.
STRANGER_KEY = b""


def encode_recommendation(rec: dict[str, Any]) -> bytes:
    """A list message as compact JSON (orjson: ~15x ``json.dumps`` on a 20-item list, once per list)."""
    return orjson.dumps(rec)


#: The most a dead-letter record may weigh, key, value and headers together, as the producer counts it:
#: Faust's default ``producer_max_request_size``, which is also under a broker's default limit (Kafka's
#: ``message.max.bytes``: 1,048,588 bytes, 1,000,012 on older brokers).
MAX_DEAD_LETTER_BYTES = 1_000_000
#: Longest dead-letter key kept whole: a key is routing data, and a huge one must not crowd out the value.
MAX_DEAD_LETTER_KEY_BYTES = 1024
MAX_ERROR_CHARS = 1000
# aiokafka's upper bound on a record beyond its key, value and headers (the batch header, 61 bytes, and the
# record's own varints, 21), rounded up.
_RECORD_OVERHEAD = 100


def dead_letter_headers(reason: str, message: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    r"""Headers of a dead-lettered message: why, and exactly where it came from (each a few kB at most).

    Text that UTF-8 cannot encode (an unpaired surrogate a message carried) is escaped, not fatal:

    >>> dict(dead_letter_headers("bad_field", "field 'properties.\ud800' ...", "shop.browse", 0, 7))["stream_rec.error"]
    b"field 'properties.\\ud800' ..."
    """
    return [
        ("stream_rec.reason", _text(reason)),
        ("stream_rec.error", _text(message[:MAX_ERROR_CHARS])),
        ("stream_rec.source_topic", _text(topic)),
        ("stream_rec.source_partition", str(partition).encode()),
        ("stream_rec.source_offset", str(offset).encode()),
    ]


def dead_letter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], *,
                max_bytes: int = MAX_DEAD_LETTER_BYTES) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a dead-letter record that weighs at most ``max_bytes``.

    A message is copied untouched when it fits. Otherwise its key is cut to
    :data:`MAX_DEAD_LETTER_KEY_BYTES` and then its value to what is left; the copy says so in headers:
    ``stream_rec.truncated`` (``key``, ``value`` or ``key,value``) and the original sizes in bytes,
    ``stream_rec.original_size`` (the value's) and ``stream_rec.original_key_size``.

    >>> key, value, headers = dead_letter(b"k", b"x" * 2000, [("stream_rec.reason", b"too_large")], max_bytes=1000)
    >>> key, len(value) < 1000, dict(headers)["stream_rec.truncated"], dict(headers)["stream_rec.original_size"]
    (b'k', True, b'value', b'2000')
    """
    value = value or b""
    if _record_bytes(key, value, headers) <= max_bytes:
        return key, value, headers
    cut, extra = [], []
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        cut.append("key")
        extra.append(("stream_rec.original_key_size", str(len(key)).encode()))
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    headers = headers + extra + [("stream_rec.original_size", str(len(value)).encode())]
    room = max_bytes - _record_bytes(key, b"", headers + [("stream_rec.truncated", b"key,value")])
    if len(value) > room:
        cut.append("value")
        value = value[:max(room, 0)]
    return key, value, headers + [("stream_rec.truncated", ",".join(cut).encode())]


def _text(text: str) -> bytes:
    # Whatever a message carried (an unpaired surrogate, say) must not stop its own dead-lettering.
    return text.encode("utf-8", "backslashreplace")


def _record_bytes(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound on the record's size as the producer reckons it against its request limit."""
    size = _RECORD_OVERHEAD + len(key or b"") + len(value) + 5 * (3 + 2 * len(headers))  # a varint is at most 5 bytes
    return size + sum(len(name.encode()) + len(data) for name, data in headers)
