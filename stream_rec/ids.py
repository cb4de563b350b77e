"""External string ids -> dense ints, growing as new ids arrive."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np


class IdIndex:
    """Maps external ids to contiguous ints 0, 1, 2, ... in order of first sight.

    Examples
    --------
    >>> index = IdIndex()
    >>> index.add_many(["sku-9", "sku-2", "sku-9"])
    [0, 1, 0]
    >>> index.get("sku-2"), index.get("nope"), index.external(0), len(index)
    (1, -1, 'sku-9', 2)
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._new: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, key: str) -> int:
        """The index of ``key``, or -1 if it was never added."""
        return self._index.get(key, -1)

    def add(self, key: str) -> int:
        """The index of ``key``, handing out the next one for a new id."""
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = len(self._ids)
            self._ids.append(key)
            self._new.append(key)
        return idx

    def add_many(self, keys: Iterable[str]) -> list[int]:
        keys = keys if isinstance(keys, list) else list(keys)
        found = list(map(self._index.get, keys))  # one C-level pass for the ids already known
        if None in found:
            for n, idx in enumerate(found):
                if idx is None:
                    found[n] = self.add(keys[n])
        return found  # type: ignore[return-value]

    def external(self, idx: int) -> str:
        return self._ids[idx]

    def externals(self, indices: Iterable[int]) -> list[str]:
        ids = self._ids
        return [ids[i] for i in indices]

    def restore(self, key: str, idx: int) -> None:
        """Put back a persisted mapping (indices may arrive in any order)."""
        if idx >= len(self._ids):
            self._ids.extend([""] * (idx + 1 - len(self._ids)))
        self._ids[idx] = key
        self._index[key] = idx

    def pop_new(self) -> list[str]:
        """Ids added since the previous call (the ones the store does not know yet)."""
        new, self._new = self._new, []
        return new


def row_keys(ids: Sequence[str]) -> np.ndarray:
    """A stable, non-zero 64-bit key per external id (the same in every process and on every worker),
    which seeds a model row's initial value so that workers indexing an id differently start it alike.

    >>> keys = row_keys(["sku-1", "sku-2"])
    >>> keys.dtype, bool(keys[0] != keys[1]), row_keys(["sku-1"])[0] == keys[0]
    (dtype('uint64'), True, np.True_)
    """
    out = np.empty(len(ids), dtype=np.uint64)
    for n, key in enumerate(ids):
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        out[n] = int.from_bytes(digest, "little") | 1
    return out


_M32 = 0xFFFFFFFF
_MURMUR_M = 0x5BD1E995  # MurmurHash2's multiplier
_KAFKA_SEED = 0x9747B28C  # the seed Kafka's default partitioner hashes keys with


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key's UTF-8 bytes, sign bit cleared,
    modulo the partitions) gives a message keyed by ``key``: where a worker's user rows and events go.

    >>> kafka_partition("u42", 4) == kafka_partition("u42", 4), 0 <= kafka_partition("u42", 4) < 4
    (True, True)
    """
    return (_murmur2(key.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF) % partitions


def _murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 (Austin Appleby's), with Kafka's seed; ``tests/unit/test_ids.py`` checks it
    against Kafka's client."""
    n = len(data)
    h = (_KAFKA_SEED ^ n) & _M32
    whole = n - n % 4
    for k in np.frombuffer(data[:whole], dtype="<u4").tolist():
        k = (k * _MURMUR_M) & _M32
        k ^= k >> 24
        k = (k * _MURMUR_M) & _M32
        h = ((h * _MURMUR_M) & _M32) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * _MURMUR_M) & _M32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _M32
    return h ^ (h >> 15)
