"""Item updates: what one worker learned about items, in a form every other worker can apply.

Each event teaches the user side (its user's row, kept by the worker that owns the user) and the item
side (item factors, co-occurrence, popularity), which every worker needs. A worker learns both sides
of its own users' events at once, and records, per event, what the item side needs from the user
side: the user's factors before the step and its size, the sampled negatives, and the items of the
user's history the event was paired with. Every other worker replays those records on its own item
model (:meth:`stream_rec.service.RecService.apply_item_updates`) with the very steps the learning
worker took, so N workers' item models follow one stream.

Each record carries its event's position ``(lane, offset)``; a worker applies the item side of each
position once (a high-water mark per lane), whether it learned the event itself or got the record
from another worker, so a batch re-applied after a crash or a move is not counted twice.

One message holds the records of one micro-batch of one user partition, in event order: ids as
tables (item indices are private to each worker), numbers as little-endian arrays.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson

from stream_rec.types import FloatArray, Float32Array, IntArray

MAGIC = b"I"
VERSION = 1
_HEAD = struct.Struct("<cBI")  # magic, version, length of the JSON part


class ItemLog(NamedTuple):
    """Per event of a batch, filled by the compiled learning loop (record arrays are empty when nothing
    is recorded, e.g. in offline evaluation with one worker)."""

    item_side: np.ndarray  # bool (n,): learn the item half here (False: it was applied already)
    pu: Float32Array  # (n, factors): the user's factors before the positive step
    step: FloatArray  # (n,): that step's size
    neg: IntArray  # (n, negatives): negatives stepped, -1 for none
    pair_n: IntArray  # (n,): pairs of the event
    pair_j: IntArray  # (n, history): the history items paired with the event's item
    pair_w: FloatArray  # (n, history): each pair's weight


def new_item_log(item_side: np.ndarray, factors: int, negatives: int, history: int, record: bool) -> ItemLog:
    n = len(item_side) if record else 0
    return ItemLog(item_side, np.zeros((n, factors), np.float32), np.zeros(n), np.full((n, max(negatives, 1)), -1),
                   np.zeros(n, np.int64), np.zeros((n, max(history, 1)), np.int64), np.zeros((n, max(history, 1))))


class ItemUpdateError(ValueError):
    """Bytes that are not an item-update message of a version this code reads."""


@dataclass
class ItemUpdates:
    """The records of one message, decoded. ``item``, ``neg`` and ``pair_j`` index ``ids``; ``category``
    indexes ``categories`` (-1: none); ``lane`` indexes ``lanes``; the pairs of record ``r`` are
    ``pair_j[pair_start[r]:pair_start[r + 1]]``."""

    lanes: list[str]
    ids: list[str]
    categories: list[str]
    lane: IntArray
    offset: IntArray
    item: IntArray
    category: IntArray
    weight: FloatArray
    ts: FloatArray
    step: FloatArray
    pu: Float32Array
    neg: IntArray
    pair_start: IntArray
    pair_j: IntArray
    pair_w: FloatArray

    def __len__(self) -> int:
        return len(self.offset)

    def last_offsets(self) -> dict[str, int]:
        """The highest offset of each lane in the message."""
        out: dict[str, int] = {}
        for lane, offset in zip(self.lane.tolist(), self.offset.tolist()):
            name = self.lanes[lane]
            if offset > out.get(name, -1):
                out[name] = offset
        return out


# Column order and dtypes of a message's arrays after the JSON part (n records, f factors, g negatives).
_COLUMNS = (("lane", "<u2"), ("offset", "<i8"), ("item", "<u4"), ("category", "<i4"), ("weight", "<f8"),
            ("ts", "<f8"), ("step", "<f8"), ("pu", "<f4"), ("neg", "<i4"), ("pair_n", "<u2"))


def encode(updates: ItemUpdates) -> bytes:
    """One message's bytes.

    >>> u = ItemUpdates(["0>b:0"], ["a", "b"], ["shoes"], np.array([0]), np.array([7]), np.array([1]), np.array([0]),
    ...                 np.array([8.0]), np.array([1.5]), np.array([0.2]), np.ones((1, 2), np.float32),
    ...                 np.array([[0]]), np.array([0, 1]), np.array([0]), np.array([4.0]))
    >>> back = decode(encode(u))
    >>> back.ids, back.offset.tolist(), back.pair_j.tolist(), back.pu.tolist(), back.last_offsets()
    (['a', 'b'], [7], [0], [[1.0, 1.0]], {'0>b:0': 7})
    """
    n, f = updates.pu.shape if updates.pu.ndim == 2 else (len(updates.offset), 0)
    g = updates.neg.shape[1] if updates.neg.ndim == 2 else 0
    head = orjson.dumps({"lanes": updates.lanes, "ids": updates.ids, "categories": updates.categories,
                         "n": len(updates.offset), "f": int(f), "g": int(g), "pairs": len(updates.pair_j)})
    pair_n = np.diff(updates.pair_start)
    parts = [_HEAD.pack(MAGIC, VERSION, len(head)), head]
    for name, dtype in _COLUMNS:
        value = pair_n if name == "pair_n" else getattr(updates, name)
        parts.append(np.ascontiguousarray(value, dtype=dtype).tobytes())
    parts.append(np.ascontiguousarray(updates.pair_j, dtype="<u4").tobytes())
    parts.append(np.ascontiguousarray(updates.pair_w, dtype="<f8").tobytes())
    return b"".join(parts)


def decode(data: bytes) -> ItemUpdates:
    """The inverse of :func:`encode`; :class:`ItemUpdateError` for anything else."""
    try:
        magic, version, size = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise ItemUpdateError(f"item update format {magic!r} v{version}, this code reads {MAGIC!r} v{VERSION}")
        head = orjson.loads(data[_HEAD.size:_HEAD.size + size])
        n, f, g, pairs = int(head["n"]), int(head["f"]), int(head["g"]), int(head["pairs"])
        at = _HEAD.size + size
        cols: dict[str, np.ndarray] = {}
        for name, dtype in (*_COLUMNS, ("pair_j", "<u4"), ("pair_w", "<f8")):
            count = {"pu": n * f, "neg": n * g, "pair_j": pairs, "pair_w": pairs}.get(name, n)
            width = np.dtype(dtype).itemsize
            cols[name] = np.frombuffer(data, dtype=dtype, count=count, offset=at)
            at += count * width
        if at != len(data):
            raise ItemUpdateError(f"item update of {len(data)} bytes holds {at} bytes of records")
        pair_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(cols["pair_n"], out=pair_start[1:])
        return ItemUpdates(
            [str(x) for x in head["lanes"]], [str(x) for x in head["ids"]], [str(x) for x in head["categories"]],
            cols["lane"].astype(np.int64), cols["offset"].astype(np.int64), cols["item"].astype(np.int64),
            cols["category"].astype(np.int64), cols["weight"].astype(np.float64), cols["ts"].astype(np.float64),
            cols["step"].astype(np.float64), cols["pu"].astype(np.float32).reshape(n, f),
            cols["neg"].astype(np.int64).reshape(n, g), pair_start, cols["pair_j"].astype(np.int64),
            cols["pair_w"].astype(np.float64))
    except ItemUpdateError:
        raise
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ItemUpdateError(f"item update is damaged: {err}") from None
