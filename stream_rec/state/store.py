"""Key-value state stores with atomic multi-family writes.

Three column families keep different kinds of state apart:

``meta``
    the state-format version and the applied-offset high-water marks;
``users``
    user-keyed rows (histories, user factors), which grow with the users a worker owns;
``items``
    item-keyed rows (item factors, co-occurrence, popularity), which every worker needs and which can
    later be shared across workers.

A micro-batch's changes across all three go in one :meth:`Store.write`, which is atomic, so the
offsets recorded in ``meta`` always describe exactly the state beside them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path

FAMILIES = ("meta", "users", "items")
FORMAT_VERSION = 1
_VERSION_KEY = b"format_version"

#: One atomic change: family -> key -> new value (``None`` deletes the key).
Changes = Mapping[str, Mapping[bytes, bytes | None]]


class StateFormatError(RuntimeError):
    """The store was written by an incompatible version of stream_rec."""


class StoreLockedError(RuntimeError):
    """Another process holds the store open."""


class Store(ABC):
    """The interface every store implements; see ``tests/unit/test_store.py`` for the contract."""

    @abstractmethod
    def get(self, family: str, key: bytes) -> bytes | None: ...

    @abstractmethod
    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]: ...

    @abstractmethod
    def write(self, changes: Changes) -> None:
        """Apply all changes atomically: after a crash either all of them are there or none."""

    def close(self) -> None:
        """Release the store; the default has nothing to release."""

    def check_version(self) -> None:
        """Stamp a new store with :data:`FORMAT_VERSION`; refuse one of another version."""
        found = self.get("meta", _VERSION_KEY)
        if found is None:
            self.write({"meta": {_VERSION_KEY: str(FORMAT_VERSION).encode()}})
        elif int(found) != FORMAT_VERSION:
            raise StateFormatError(
                f"state format version {int(found)} found, this stream_rec reads version {FORMAT_VERSION}; "
                "point STREAM_REC_DATA_DIR elsewhere or rebuild the state by replaying the events"
            )


class MemoryStore(Store):
    """A store in a dict, for tests and offline evaluation."""

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {name: {} for name in FAMILIES}
        self.check_version()

    def get(self, family: str, key: bytes) -> bytes | None:
        return self._data[family].get(key)

    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self._data[family].items())

    def write(self, changes: Changes) -> None:
        for family, rows in changes.items():
            table = self._data[family]
            for key, value in rows.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value


class RocksStore(Store):
    """A RocksDB store (rocksdict) with one column family per kind of state, written in WriteBatches."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from rocksdict import Options, Rdict

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        families = {name: Options(raw_mode=True) for name in FAMILIES if name != "meta"}
        try:
            self._db = Rdict(str(self.path), options, column_families=families)
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(
                    f"state folder {self.path} is in use by another process; give each worker its own "
                    "STREAM_REC_WORKER_ID or STREAM_REC_DATA_DIR"
                ) from exc
            raise
        self._families = {name: self._db if name == "meta" else self._db.get_column_family(name) for name in FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in FAMILIES if name != "meta"}
        self.check_version()

    def get(self, family: str, key: bytes) -> bytes | None:
        return self._families[family].get(key)

    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        yield from self._families[family].items()

    def write(self, changes: Changes) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for family, rows in changes.items():
            handle = self._handles.get(family)  # None: the default family, which holds meta
            for key, value in rows.items():
                if value is None:
                    batch.delete(key, handle) if handle is not None else batch.delete(key)
                elif handle is not None:
                    batch.put(key, value, handle)
                else:
                    batch.put(key, value)
        self._db.write(batch)

    def close(self) -> None:
        # rocksdict keeps the DB (and its lock) alive while any column-family object refers to it.
        self._families.clear()
        self._handles.clear()
        self._db.close()


def open_store(path: str | os.PathLike[str] | None) -> Store:
    """A :class:`RocksStore` at ``path``, or a :class:`MemoryStore` when ``path`` is None."""
    return MemoryStore() if path is None else RocksStore(path)
