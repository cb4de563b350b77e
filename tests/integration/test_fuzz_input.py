"""Bad input costs exactly one message: every kind of broken message, interleaved with valid events, against a
real worker in both input modes. Each bad message lands on the dead-letter topic with its reason, every valid
event is applied, and valid events sent after the bad ones are applied too.

The embedded broker (Tansu 0.6) took a 20 MB produce when this was written, so the largest message here is
10 MB; a Kafka broker with default settings would refuse the producer's request for it.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from stream_rec.events import INT64_MAX, REASONS, InvalidEvent, decode, stream_of
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from stream_rec.wire import MAX_DEAD_LETTER_BYTES, MAX_DEAD_LETTER_KEY_BYTES
from tests.integration.helpers import STATE_EVENTS, start_worker, state_of, type_counts
from tools.demo import malformed_messages
from tools.produce import read_topic
from tools.workers import WorkerProcess

pytestmark = pytest.mark.integration

SEED = 20261202
MB = 1_000_000
DEAD = "stream_rec_ingest_dead_letters_total"


@dataclass
class Message:
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    reason: str | None = None  # None: a valid message


def _js(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def _ok(**changes: Any) -> dict[str, Any]:
    return {"user_id": "u-bad", "item_id": "i-bad", "type": "view", "ts": 1_700_000_000_000, **changes}


def _raw_ok(field: str, raw_json: bytes, etype: str = "view") -> bytes:
    """A valid event whose ``field`` is written as raw JSON (escapes, literals, digits as given)."""
    body = {k: json.dumps(v).encode() for k, v in _ok(type=etype).items()}
    body[field] = raw_json
    return b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in body.items()) + b"}"


def _bad_event_messages(settings: Settings, rng: random.Random) -> list[Message]:
    browse, click, purchase = settings.topic_browse, settings.topic_click, settings.topic_purchase
    digits = b"7" * 400
    bad = [Message(topic, raw, reason=reason) for topic, raw, reason in malformed_messages(settings)]
    handmade = [Message(browse, raw, reason=reason) for raw, reason in [
        # numbers no field can hold (these crashed the agent once: OverflowError, orjson's 64-bit limit)
        (_raw_ok("ts", digits), "non_finite"),
        (_raw_ok("ts", b"9" * 5000), "non_finite"),
        (_raw_ok("ts", b"18446744073709551616"), "bad_field"),
        (_raw_ok("price", digits), "non_finite"),
        (_raw_ok("quantity", b"9223372036854775808"), "bad_field"),
        (_raw_ok("properties", b'{"n": ' + digits + b"}"), "non_finite"),
        (_raw_ok("properties", b'{"n": 18446744073709551615}'), "bad_field"),
        (_raw_ok("ts", b"1e400"), "non_finite"),
        (_raw_ok("ts", b'"0001-01-01T00:00:00Z"'), "bad_field"),
        (_raw_ok("ts", b'"9999-12-31T23:59:59-23:59"'), "future_ts"),
        # unpaired surrogates (UnicodeEncodeError on the Kafka key, TypeError when re-encoded) and bytes of one
        (_raw_ok("user_id", b'"\\ud800"'), "bad_field"),
        (_raw_ok("user_id", b'"\xed\xa0\x80"'), "bad_field"),
        (_raw_ok("item_id", b'"i\\udfff"'), "bad_field"),
        (_raw_ok("event_id", b'"\\ud800"'), "bad_field"),
        (_raw_ok("session_id", b'"\\udbff"'), "bad_field"),
        (_raw_ok("category", b'"\\ud800\\ud800"'), "bad_field"),
        (_raw_ok("properties", b'{"\\ud800": "x"}'), "bad_field"),
        (_raw_ok("properties", b'{"k": "\\udc00"}'), "bad_field"),
        # control characters in ids (keys starting with NUL are reserved for internal records)
        (_raw_ok("user_id", b'"\\u0000changelog"'), "bad_field"),
        (_raw_ok("item_id", b'"i\\n1"'), "bad_field"),
        (_raw_ok("event_id", b'"\\u007f"'), "bad_field"),
        (_raw_ok("session_id", b'"s\\u001f"'), "bad_field"),
        (_raw_ok("category", b'"\\u0001"'), "bad_field"),
        # literals JSON does not have, shapes, nesting, sizes
        (_raw_ok("price", b"NaN"), "non_finite"),
        (_raw_ok("ts", b"Infinity"), "non_finite"),
        (_raw_ok("note", b"-Infinity"), "non_finite"),
        (b"[" * 20_000 + b"]" * 20_000, "not_json"),
        (b'{"a":' * 1100 + b"1" + b"}" * 1100, "not_json"),
        (_raw_ok("properties", b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}"), "bad_field"),
        (_raw_ok("v", b"[" * 900 + b"]" * 900), "unsupported_version"),
        (_raw_ok("user_id", b"[" + b"0," * 20_000 + b"0]"), "bad_field"),
        (b'{"user_id": "u", "user_id": "\\u0000", "item_id": "i", "type": "view", "ts": 1}', "bad_field"),
        (b"null", "not_object"),
        (digits, "not_object"),
        (b'"just a string"', "not_object"),
        (b"x" * MB, "too_large"),
        (b"{" + b" " * (10 * MB - 2) + b"}", "too_large"),
    ]]
    for n, m in enumerate(handmade):  # spread over the three topics, as events of their types
        topic, etype = [(browse, b"view"), (click, b"click"), (purchase, b"purchase")][n % 3]
        if m.value and b'"type": "view"' in m.value:
            m.topic, m.value = topic, m.value.replace(b'"type": "view"', b'"type": "%s"' % etype, 1)
    bad += handmade
    bad.append(Message(click, None, key=b"u-gone", reason="empty"))  # a tombstone (a producer needs a key for one)
    for _ in range(12):  # random bytes, judged by decode itself (a random byte string is never an event)
        raw = rng.randbytes(rng.randint(1, 300))
        bad.append(Message(rng.choice([browse, click, purchase]), raw, reason=_reason(raw)))
    return bad


def _bad_availability_messages(settings: Settings) -> list[Message]:
    items = settings.topic_items
    return [Message(items, raw, reason=reason) for raw, reason in [
        (b'{"item_id": "\\ud800", "available": false}', "bad_field"),
        (b'{"item_id": "\\u0000x", "available": false}', "bad_field"),
        (b'{"item_id": ' + b"7" * 400 + b', "available": false}', "bad_field"),
        (b'{"item_id": "i1", "available": "no"}', "bad_field"),
        (b"\xff\xfe junk", "not_json"),
        (b"x" * (2 * MB), "too_large"),
    ]]


def _reason(raw: bytes) -> str:
    try:
        decode(raw, None, now_ms=int(time.time() * 1000))
    except InvalidEvent as err:
        return err.reason
    raise AssertionError(f"random bytes made a valid event: {raw!r}")


def _valid_events(n: int, seed: int) -> list[dict[str, Any]]:
    events = list(SyntheticShop(ShopConfig(n_users=120, n_items=300, n_events=n, seed=seed)).events())
    for e in events:
        e["event_id"] = f"{seed}-{e['event_id']}"
    return events


def _edge_events() -> list[bytes]:
    """Valid events at the edges of the schema: they must be applied, not dead-lettered."""
    return [
        _raw_ok("quantity", str(INT64_MAX).encode(), "purchase"),
        _raw_ok("properties", b'{"note": "two\\nlines", "n": -9223372036854775808, "big": 1e300}'),
        _raw_ok("user_id", b'"caf\\u00e9 \\ud83d\\ude00"'),  # a surrogate pair is one character
        _raw_ok("user_id", b"18446744073709551615"),  # a numeric id, 64 bits unsigned
        _raw_ok("price", b"18446744073709551616000"),  # past 64 bits: a double, as orjson reads it
        _raw_ok("ts", b'"2023-11-14T22:13:20Z"'),
        b'{"user_id": "\\u0000", "user_id": "dup", "item_id": "i", "type": "view", "ts": 1700000000000}',  # last wins
    ]


def _valid_messages(settings: Settings, events: list[dict[str, Any]], rng: random.Random) -> list[Message]:
    topics = settings.input_topics()
    messages = []
    for e in events:
        messages.append(Message(topics[stream_of(e["type"])], _js(e), key=str(e["user_id"]).encode()))
    for raw in _edge_events():
        event = decode(raw, None, now_ms=int(time.time() * 1000))
        messages.append(Message(topics[stream_of(event.type)], raw, key=event.user_id.encode()))
    for m in rng.sample(messages, len(messages) // 10):  # producers' own headers: ignored
        m.headers = _junk_headers(rng)
    if settings.input_keys == "any":  # producers may key any way, or not at all
        for m in rng.sample(messages, len(messages) // 5):
            m.key = rng.choice([None, b"", rng.randbytes(rng.randint(1, 64))])
    return messages


def _junk_headers(rng: random.Random) -> tuple[tuple[str, bytes], ...]:
    return (("", b""), ("\u00e9\u4e2d", rng.randbytes(50)), ("h" * 300, b"\xff" * 4_000), ("stream_rec.reason", b"forged"))


def _with_junk_keys(bad: list[Message], rng: random.Random) -> None:
    for m in rng.sample(bad, len(bad) // 3):
        m.key = rng.choice([rng.randbytes(rng.randint(1, 100)), b"\x00" * 16, b"\xed\xa0\x80", b""])
        m.headers = _junk_headers(rng)
    bad[rng.randrange(len(bad))].key = b"k" * (2 * MB)  # a key as large as a message: cut in the copy


def _interleave(valid: list[Message], bad: list[Message], rng: random.Random) -> list[Message]:
    out = list(valid)
    for m in bad:
        out.insert(rng.randint(0, len(out)), m)
    return out


def _produce(bootstrap: str, messages: list[Message]) -> dict[tuple[str, int, int], Message]:
    """Send in order; every message by its (topic, partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, retries=5,
                             max_request_size=16 * MB, batch_size=256 * 1024)
    try:
        futures = [(producer.send(m.topic, key=m.key, value=m.value, headers=list(m.headers)), m) for m in messages]
        producer.flush()
        placed = {}
        for future, m in futures:
            meta = future.get(timeout=30)
            placed[meta.topic, meta.partition, meta.offset] = m
        return placed
    finally:
        producer.close()


def _wait_dead_letters(worker: WorkerProcess, expected: Counter[str], timeout_s: float) -> None:
    for reason, n in expected.items():
        worker.wait_for(f"{DEAD}{{reason={reason}}}", n, timeout_s=timeout_s)


def _types_of(messages: list[Message]) -> list[dict[str, str]]:
    return [{"type": decode(m.value, None, now_ms=int(time.time() * 1000)).type} for m in messages]


@pytest.mark.parametrize("input_keys", ["any", "user_id"])
def test_bad_input_costs_exactly_one_message(settings: Settings, tmp_path: Path, input_keys: str) -> None:
    settings = replace(settings, input_keys=input_keys)
    rng = random.Random(f"{SEED}-{input_keys}")
    bad = _bad_event_messages(settings, rng) + _bad_availability_messages(settings)
    _with_junk_keys(bad, rng)
    valid = _valid_messages(settings, _valid_events(800, seed=1), rng)
    available = [Message(settings.topic_items, _js({"item_id": f"i{n}", "available": False}), key=f"i{n}".encode())
                 for n in range(3)]
    first = _produce(settings.kafka_bootstrap, _interleave(valid + available, bad, rng))

    worker = start_worker(settings, tmp_path)
    try:
        worker.wait_for(STATE_EVENTS, len(valid), timeout_s=120)
        _wait_dead_letters(worker, Counter(m.reason for m in bad), timeout_s=60)
        # Progress: the worker still applies what comes after the bad messages (a crashed agent would not).
        later_bad = [Message(settings.topic_browse, _raw_ok("ts", b"7" * 400), reason="non_finite"),
                     Message(settings.topic_click, _raw_ok("user_id", b'"\\ud800"', "click"), reason="bad_field"),
                     Message(settings.topic_purchase, b"{" + b" " * MB + b"}", reason="too_large")]
        later = _valid_messages(settings, _valid_events(150, seed=2), rng)
        second = _produce(settings.kafka_bootstrap, _interleave(later, later_bad, rng))
        worker.wait_for(STATE_EVENTS, len(valid) + len(later), timeout_s=120)
        placed = {**first, **second}
        every_bad = Counter(m.reason for m in placed.values() if m.reason)
        _wait_dead_letters(worker, every_bad, timeout_s=60)
        time.sleep(1.0)  # room for anything wrongly dead-lettered or applied twice
        metrics = worker.metrics()
        dead = list(read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=2000))
    finally:
        assert worker.stop() == 0

    # Every bad message, and nothing else, is on the dead-letter topic with its reason, where it came from.
    positions = {_source(copy): copy for copy in dead}
    expected_bad = {pos: m for pos, m in placed.items() if m.reason}
    assert sorted(positions) == sorted(expected_bad) and len(dead) == len(expected_bad)
    for pos, copy in positions.items():
        _assert_dead_letter(copy, expected_bad[pos])
    assert Counter({r: metrics[f"{DEAD}{{reason={r}}}"] for r in REASONS}) == every_bad  # zeros count as missing
    assert len(expected_bad) == len(bad) + len(later_bad)
    # Every valid event applied, exactly once; the valid availability messages too.
    assert state_of(settings).stats()["events"] == type_counts(_types_of(valid + later))
    assert metrics["stream_rec_ingest_availability_total"] == len(available)
    if input_keys == "user_id":
        assert metrics["stream_rec_ingest_miskeyed_total"] == 0


def _source(copy: Any) -> tuple[str, int, int]:
    headers = dict(copy.headers)
    return (headers["stream_rec.source_topic"].decode(), int(headers["stream_rec.source_partition"]),
            int(headers["stream_rec.source_offset"]))


def _assert_dead_letter(copy: Any, original: Message) -> None:
    headers = dict(copy.headers)
    assert headers["stream_rec.reason"].decode() == original.reason
    assert headers["stream_rec.error"]
    size = len(copy.value) + len(copy.key or b"") + sum(len(k.encode()) + len(v) for k, v in copy.headers)
    assert size <= MAX_DEAD_LETTER_BYTES
    value, key = original.value or b"", original.key
    if "stream_rec.truncated" not in headers:
        assert (copy.value, copy.key) == (value, key)  # untouched
        return
    assert int(headers["stream_rec.original_size"]) == len(value) and value.startswith(copy.value)
    if b"key" in headers["stream_rec.truncated"]:
        assert key is not None and int(headers["stream_rec.original_key_size"]) == len(key)
        assert len(copy.key) == MAX_DEAD_LETTER_KEY_BYTES and key.startswith(copy.key)
    else:
        assert copy.key == key
    assert len(value) + len(key or b"") > MAX_DEAD_LETTER_BYTES - 10_000  # only what had to be cut was cut
