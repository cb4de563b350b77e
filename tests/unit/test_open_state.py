"""A worker's state folder is a cache: one that cannot be used is moved aside and the worker starts anew."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agents.worker import open_state
from stream_rec.settings import Settings
from stream_rec.state import RocksStore


def _sessions(path: Path, n: int, *, meta: bool) -> None:
    """``n`` stores opened, written and closed in turn: ``n`` table files of items on level 0 (and of meta,
    as a worker writes, with ``meta``)."""
    for s in range(n):
        store = RocksStore(path)
        rng = random.Random(s)
        store.write({"items": {b"i%03d-%03d" % (s, i): rng.randbytes(100) for i in range(200)},
                     **({"meta": {b"v": b"%d" % s}} if meta else {})})
        store.close()


def _loading(settings: Settings, store: RocksStore) -> str:
    """A stand-in for the service, which reads every row as it loads."""
    sum(1 for _ in store.items("items"))
    return "service"


@pytest.mark.parametrize("meta", [True, False], ids=["close-fails-too", "close-succeeds"])
def test_a_folder_found_damaged_while_loading_is_moved_aside(tmp_path: Path, meta: bool) -> None:
    """Found by ``stream-rec chaos``: random bytes in a table file of a worker killed with -9. Opening the
    folder starts a compaction (four table files on level 0) that reads the damaged block, and the load
    fails on it. Then either the close failed as well (the compaction's error), or it went through but the
    failed scan's snapshot, held by the error's traceback, kept RocksDB's lock on the path, so the fresh
    folder could not be opened. Either way the worker exited 1 at every restart, its folder never moved
    aside."""
    settings = Settings(data_dir=str(tmp_path), worker_id="w1")
    _sessions(settings.state_path, 4, meta=meta)
    items = min(settings.state_path.glob("*.sst"))  # the first session's items
    with open(items, "r+b") as f:
        f.write(random.Random(1).randbytes(64))

    store, service = open_state(settings, _loading)
    try:
        assert service == "service" and store.fresh
    finally:
        store.close()
    assert [p.name.startswith("state.corrupt-") for p in settings.worker_dir.iterdir()].count(True) == 1
