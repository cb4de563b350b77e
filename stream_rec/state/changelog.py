"""The user-state changelog format: one record per user, keyed by user id, plus a marks record per partition.

Everything a worker knows about one user (event counts, recent event ids, purchases, the matrix
factorisation row, the recent-items history) is one *user row*, written to a compacted Kafka topic
co-partitioned with the events the user is keyed by, after every micro-batch that touched the user.
The same bytes are the user's row in a worker's local RocksDB cache, so restoring from the cache and
restoring from Kafka are one code path.

Items are named by their external ids: item indices are private to a worker.

Exactly-once bookkeeping travels with the rows:

* the **marks record** (key :data:`MARKS_KEY`) of a partition holds, for each source lane of that
  partition, the offset of the last event applied; it is written after the rows of each batch, so
  every row before it reflects every event of its user up to those marks;
* each **row** also holds, for the lanes its user had events in during the batch that wrote it, the
  offset of the user's last event applied. A batch cut short by a crash can leave rows after the last
  marks record; those rows say exactly which of their user's events they already reflect.

Keys starting with ``\\x00`` are reserved: event ids may not contain control characters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

#: Key of a partition's marks record (no user id starts with a control character).
MARKS_KEY = b"\x00marks"
#: Key of a fence: a record a worker writes to learn where a partition ends (readers skip it).
FENCE_KEY = b"\x00fence"
ROW_MAGIC = b"U"
ROW_VERSION = 1
_HEAD = struct.Struct("<cBI")  # magic, version, length of the JSON part


class ChangelogFormatError(ValueError):
    """A changelog or cache record that is not a user row or a marks record of a version this code reads."""


@dataclass(slots=True)
class UserRow:
    """One user's state, as a worker hands it to another.

    ``counts`` are the user's applied events by type (view, click, add_to_cart, purchase); ``digest`` is
    the sum modulo 2**64 of :func:`stream_rec.profiles.event_digest` over them (a checker compares it
    with the input); ``purchases`` are ``(item_id, last purchase ms)``, most recently first-bought
    first; ``history`` the recent items ``(item_id, ts seconds, weight)``, oldest first; ``mf`` the
    user's factors (``None``: never learned) and ``mf_events`` the events they learned from; ``marks``
    the offset of the user's last applied event in each lane it had events in during the writing batch.
    """

    user_id: str
    n_events: int = 0
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    digest: int = 0
    event_ids: list[str] = field(default_factory=list)
    purchases: list[tuple[str, int]] = field(default_factory=list)
    history: list[tuple[str, float, float]] = field(default_factory=list)
    mf: np.ndarray | None = field(default=None, compare=False)
    mf_events: int = 0
    marks: dict[str, int] = field(default_factory=dict)


def encode_user_row(row: UserRow) -> bytes:
    """The value of a user's changelog record: a small header, JSON, then the factors as float32.

    >>> row = UserRow("u1", 2, (1, 0, 0, 1), 99, ["e1"], [("sku-1", 1000)], [("sku-1", 1.0, 8.0)],
    ...               np.array([0.5, -0.25], np.float32), 2, {"0>shop.browse:0": 41})
    >>> back = decode_user_row(b"u1", encode_user_row(row))
    >>> back == row, back.mf.tolist()
    (True, [0.5, -0.25])
    """
    body = {"n": row.n_events, "c": list(row.counts), "d": row.digest, "e": row.event_ids,
            "b": [[item, ts] for item, ts in row.purchases], "h": [[item, ts, w] for item, ts, w in row.history],
            "k": row.mf_events, "m": row.marks}
    text = orjson.dumps(body)
    factors = b"" if row.mf is None else np.asarray(row.mf, dtype="<f4").tobytes()
    return _HEAD.pack(ROW_MAGIC, ROW_VERSION, len(text)) + text + factors


def decode_user_row(key: bytes, data: bytes) -> UserRow:
    """The inverse of :func:`encode_user_row` (``key`` is the record's key, the user id)."""
    try:
        magic, version, size = _HEAD.unpack_from(data)
    except struct.error:
        raise ChangelogFormatError(f"user row of {key[:64]!r}: {len(data)} bytes, too short") from None
    if magic != ROW_MAGIC or version != ROW_VERSION:
        raise ChangelogFormatError(f"user row of {key[:64]!r}: format {magic!r} v{version}, this code reads "
                                   f"{ROW_MAGIC!r} v{ROW_VERSION}")
    start = _HEAD.size
    try:
        body = orjson.loads(data[start:start + size])
        factors = data[start + size:]
        mf = np.frombuffer(factors, dtype="<f4").astype(np.float32) if factors else None
        return UserRow(key.decode("utf-8", "surrogatepass"), int(body["n"]), tuple(body["c"]), int(body["d"]),
                       list(body["e"]), [(str(i), int(t)) for i, t in body["b"]],
                       [(str(i), float(t), float(w)) for i, t, w in body["h"]], mf, int(body["k"]),
                       {str(lane): int(o) for lane, o in body["m"].items()})
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ChangelogFormatError(f"user row of {key[:64]!r} is damaged: {err}") from None


def encode_marks(marks: dict[str, int]) -> bytes:
    """The value of a partition's marks record: lane -> offset of the last applied event.

    >>> decode_marks(encode_marks({"3>shop.click:1": 17}))
    {'3>shop.click:1': 17}
    """
    return orjson.dumps(marks)


def decode_marks(data: bytes) -> dict[str, int]:
    try:
        return {str(lane): int(offset) for lane, offset in orjson.loads(data).items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        raise ChangelogFormatError(f"marks record is damaged: {err}") from None
