"""The local cache's key layout (RocksDB, or memory in tests): what :class:`~stream_rec.service.RecService`
writes besides the models' rows, in the ``users`` and ``items`` column families."""

from __future__ import annotations

# Users: the user id, valued as in the changelog (:mod:`stream_rec.state.changelog`).
MARKS = b"marks/"  # + partition: that partition's marks record, as in the changelog
CHECKPOINT = b"changelog/"  # + partition: the changelog offset the cached users of that partition reflect
ITEM_HWM = b"item-hwm"  # lane -> the last offset whose item half is in the item model
ITEM_LOG = b"item-log/"  # + partition of the item-updates topic: the next offset to apply
TOPIC_IDS = b"topic-ids"  # topic -> the id of the topic the state was built from (a recreated one has another)
ID = b"id/"  # + item id: the item's index
FUSION = b"fusion/hits"  # the adaptive fusion's state (Fusion.hits_state)
CATEGORY = b"category/"  # + category name: the category's index
OUTCOMES = b"outcomes"  # what became of the published lists, per variant and source (Outcomes.state)
SHOWN = b"fusion/shown"  # exploration slots each item was shown in: int64 item indices, then int64 counts


def int_bytes(value: int) -> bytes:
    # Big-endian so RocksDB's byte order is index order.
    return value.to_bytes(4, "big")


def from_int_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")
