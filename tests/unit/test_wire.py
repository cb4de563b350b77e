"""Dead-letter records: whatever a message was, its copy fits the producer and says what was cut."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from stream_rec.wire import MAX_DEAD_LETTER_BYTES, MAX_DEAD_LETTER_KEY_BYTES, dead_letter, dead_letter_headers


def _headers(error: str = "field 'user_id' is required") -> list[tuple[str, bytes]]:
    return dead_letter_headers("missing_field", error, "shop.browse", 3, 41)


def _producer_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    # What aiokafka's producer compares with max_request_size before it sends (AIOKafkaProducer._serialize).
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def test_a_copy_that_fits_is_untouched() -> None:
    key, value, headers = dead_letter(b"u1", b'{"user_id": 1', _headers())
    assert (key, value, headers) == (b"u1", b'{"user_id": 1', _headers())
    assert dead_letter(None, None, _headers())[1] == b""  # a tombstone's copy is empty, as before
    near_limit = b"v" * 999_000
    assert dead_letter(b"u1", near_limit, _headers()) == (b"u1", near_limit, _headers())


@pytest.mark.parametrize("size", [999_900, 1_000_000, 1_048_576, 10_000_000])
def test_a_large_value_is_cut_to_fit_and_says_so(size: int) -> None:
    original = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    key, value, headers = dead_letter(b"u1", original, _headers())
    fields = dict(headers)
    assert _producer_size(key, value, headers) <= MAX_DEAD_LETTER_BYTES
    assert key == b"u1" and original.startswith(value) and len(value) > MAX_DEAD_LETTER_BYTES - 2_000
    assert fields["stream_rec.truncated"] == b"value" and fields["stream_rec.original_size"] == str(size).encode()
    assert fields["stream_rec.reason"] == b"missing_field"


def test_a_huge_key_is_cut_and_the_value_kept() -> None:
    key, value, headers = dead_letter(b"k" * 2_000_000, b"{}", _headers())
    fields = dict(headers)
    assert len(key or b"") == MAX_DEAD_LETTER_KEY_BYTES and value == b"{}"
    assert fields["stream_rec.truncated"] == b"key" and fields["stream_rec.original_key_size"] == b"2000000"
    assert _producer_size(key, value, headers) <= MAX_DEAD_LETTER_BYTES


def test_huge_key_and_value_both_cut_under_a_smaller_limit() -> None:
    key, value, headers = dead_letter(b"k" * 50_000, b"v" * 50_000, _headers(), max_bytes=20_000)
    assert dict(headers)["stream_rec.truncated"] == b"key,value"
    assert _producer_size(key, value, headers) <= 20_000 and len(value) > 15_000


def test_header_text_is_bounded_and_always_encodable() -> None:
    headers = dict(_headers("field 'properties.\ud800' " + "x" * 50_000))
    assert headers["stream_rec.error"].startswith(b"field 'properties.\\ud800' xxx")
    assert len(headers["stream_rec.error"]) <= 1_000 + 5
    assert headers["stream_rec.source_topic"] == b"shop.browse" and headers["stream_rec.source_offset"] == b"41"
