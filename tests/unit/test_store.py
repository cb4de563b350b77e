"""One contract, run against every store implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_rec.state import FORMAT_VERSION, MemoryStore, RocksStore, StateFormatError, Store, StoreLockedError


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
    yield s
    s.close()


def test_families_are_separate(store: Store) -> None:
    store.write({"users": {b"k": b"user"}, "items": {b"k": b"item"}})
    assert store.get("users", b"k") == b"user"
    assert store.get("items", b"k") == b"item"
    assert store.get("meta", b"k") is None


def test_write_puts_and_deletes_and_items_lists(store: Store) -> None:
    store.write({"items": {b"a": b"1", b"b": b"2"}})
    store.write({"items": {b"a": None, b"c": b"3"}})
    assert sorted(store.items("items")) == [(b"b", b"2"), (b"c", b"3")]


def test_new_store_is_stamped_with_the_format_version(store: Store) -> None:
    assert store.get("meta", b"format_version") == str(FORMAT_VERSION).encode()


def test_rocks_store_survives_reopen(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    first.write({"meta": {b"hwm/x": b"7"}, "users": {b"u": b"row"}})
    first.close()
    again = RocksStore(tmp_path / "db")
    assert again.get("meta", b"hwm/x") == b"7" and again.get("users", b"u") == b"row"
    again.close()


def test_second_opener_gets_a_clear_error(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    with pytest.raises(StoreLockedError, match="STREAM_REC_WORKER_ID"):
        RocksStore(tmp_path / "db")
    first.close()


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    first.write({"meta": {b"format_version": b"999"}})
    first.close()
    with pytest.raises(StateFormatError, match="version 999"):
        RocksStore(tmp_path / "db")
