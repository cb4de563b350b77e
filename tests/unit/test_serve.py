"""The read API without a broker: the copy of the recommendations topic, and the answers over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.serve import LISTS, Counts, Materialiser, ServeError, Status, _listen, open_copy, web_app
from stream_rec.events import decode
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore, RocksStore, Store
from stream_rec.synth import ShopConfig, SyntheticShop
from stream_rec.wire import STRANGER_KEY


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def listing(user: str, items: list[str], generated_at: int = 1_000, **extra: Any) -> bytes:
    return orjson.dumps({"v": 1, "user_id": user, "items": [{"item_id": i, "score": 1.0, "sources": ["popular"],
                                                               "because": {"kind": "popular"}} for i in items],
                         "model_version": "t", "trigger": None, "generated_at": generated_at, **extra})


class RecordingStore(MemoryStore):
    """A memory store that keeps every write it was given, to see what went together."""

    def __init__(self) -> None:
        self.writes: list[dict[str, dict[bytes, bytes | None]]] = []
        super().__init__()

    def write(self, changes: Any) -> None:
        self.writes.append({family: dict(rows) for family, rows in changes.items()})
        super().write(changes)


# -- the copy -------------------------------------------------------------------------------------

def test_a_batch_stores_lists_and_its_offsets_in_one_write() -> None:
    store = RecordingStore()
    copy = Materialiser(store)
    store.writes.clear()  # the store's own version stamp
    done = copy.apply([Record(0, 7, b"u1", listing("u1", ["a"])), Record(2, 3, b"u2", listing("u2", ["b"])),
                       Record(0, 8, b"u3", listing("u3", ["c"]))])
    assert done == Counts(lists=3)
    [write] = store.writes
    assert set(write[LISTS]) == {b"u1", b"u2", b"u3"} and len(write["meta"]) == 2  # rows and offsets together
    assert copy.next_offsets() == {0: 9, 2: 4}  # the next offset to read, not the last one read
    assert store.get(LISTS, b"u2") == listing("u2", ["b"])  # the message's bytes, untouched


def test_a_tombstone_deletes_the_users_list_and_a_later_list_brings_it_back() -> None:
    store = MemoryStore()
    copy = Materialiser(store)
    copy.apply([Record(0, 0, b"u1", listing("u1", ["a"])), Record(0, 1, b"u2", listing("u2", ["b"]))])
    assert copy.apply([Record(0, 2, b"u1", None)]) == Counts(deleted=1)
    assert store.get(LISTS, b"u1") is None and store.get(LISTS, b"u2") is not None
    copy.apply([Record(0, 3, b"u1", listing("u1", ["x"])), Record(0, 4, b"u2", None),
                Record(0, 5, b"u2", listing("u2", ["y"]))])  # in one batch, the topic's order holds
    assert orjson.loads(store.get(LISTS, b"u1") or b"")["items"][0]["item_id"] == "x"
    assert orjson.loads(store.get(LISTS, b"u2") or b"")["items"][0]["item_id"] == "y"


def test_bad_values_and_keyless_records_cost_only_themselves(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    copy = Materialiser(store)
    copy.apply([Record(1, 0, b"u1", listing("u1", ["old"]))])
    batch = [Record(1, 1, b"u1", b'{"items": [tru'), Record(1, 2, b"u2", b"[1, 2]"),
             Record(1, 3, None, listing("x", [])), Record(1, 4, b"u3", listing("u3", ["c"])),
             Record(1, 5, b"u4", b'{"items": "a", "generated_at": 1}')]
    with caplog.at_level("WARNING", logger="agents.serve"):
        assert copy.apply(batch) == Counts(lists=1, no_key=1, invalid=3)
    assert orjson.loads(store.get(LISTS, b"u1") or b"")["items"][0]["item_id"] == "old"  # the last good list stays
    assert store.get(LISTS, b"u2") is None and store.get(LISTS, b"u4") is None
    assert store.get(LISTS, b"u3") is not None
    assert copy.next_offsets() == {1: 6}  # past the bad ones: they are not read again
    assert copy.counts == Counts(lists=2, no_key=1, invalid=3)
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]  # one line for the batch
    assert "skipped 3 value(s)" in warning.getMessage() and "offset 1" in warning.getMessage()


def test_a_reopened_copy_resumes_from_its_stored_offsets(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), serve_port=8123)
    store = open_copy(settings, b"topic-a")
    Materialiser(store).apply([Record(0, 41, b"u1", listing("u1", ["a"])),
                               Record(3, 9, STRANGER_KEY, listing("", ["p"]))])
    store.close()
    assert settings.serve_path == tmp_path / "serve-8123" / "lists"

    store = open_copy(settings, b"topic-a")
    try:
        assert Materialiser(store).next_offsets() == {0: 42, 3: 10}
        assert store.get(LISTS, b"u1") == listing("u1", ["a"]) and store.get(LISTS, STRANGER_KEY) is not None
    finally:
        store.close()


def test_a_copy_of_another_topic_is_started_anew(tmp_path: Path) -> None:
    """A topic deleted and made again (a new id), or another topic name: the old lists and offsets mean nothing."""
    settings = Settings(data_dir=str(tmp_path))
    store = open_copy(settings, b'{"topic":"recs","id":"1"}')
    Materialiser(store).apply([Record(0, 5, b"u1", listing("u1", ["a"]))])
    store.close()
    store = open_copy(settings, b'{"topic":"recs","id":"2"}')
    try:
        assert Materialiser(store).next_offsets() == {} and store.get(LISTS, b"u1") is None
    finally:
        store.close()


def test_a_damaged_copy_is_moved_aside_and_made_anew(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    settings.serve_path.mkdir(parents=True)
    (settings.serve_path / "000007.sst").write_bytes(b"half a table")  # data files without a CURRENT
    store = open_copy(settings, b"t")
    try:
        assert Materialiser(store).next_offsets() == {} and list(store.items(LISTS)) == []
    finally:
        store.close()
    [moved] = settings.serve_path.parent.glob("lists.corrupt-*")
    assert (moved / "000007.sst").read_bytes() == b"half a table"  # kept as evidence


def test_a_copy_in_use_names_the_port(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), serve_port=8124)
    holder = RocksStore(settings.serve_path)
    try:
        with pytest.raises(ServeError, match="another `stream-rec serve` running on port 8124"):
            open_copy(settings, b"t")
    finally:
        holder.close()


# -- HTTP -----------------------------------------------------------------------------------------

def call(store: Store, status: Status, steps: Callable[[TestClient], Awaitable[None]]) -> None:
    """Run ``steps`` against the API answering from ``store``, on a real socket."""
    async def main() -> None:
        async with TestClient(TestServer(web_app(store, status))) as client:
            await steps(client)

    asyncio.run(main())


def shop() -> MemoryStore:
    store = MemoryStore()
    Materialiser(store).apply([
        Record(0, 0, b"u1", listing("u1", ["a", "b", "c"], generated_at=int(time.time() * 1000) - 50,
                                    list_id="L-1", variant="B")),
        Record(1, 0, STRANGER_KEY, listing("", ["p1", "p2"], generated_at=2_000)),
        Record(2, 0, "zoë/ü".encode(), listing("zoë/ü", ["z"])),
    ])
    return store


def test_a_known_user_gets_their_latest_list() -> None:
    async def steps(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations")
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
        assert [i["item_id"] for i in body["items"]] == ["a", "b", "c"]
        assert body["items"][0] == {"item_id": "a", "score": 1.0, "sources": ["popular"],
                                    "because": {"kind": "popular"}}
        assert (body["user_id"], body["known"], body["list_id"], body["variant"]) == ("u1", True, "L-1", "B")
        assert 50 <= body["age_ms"] < 60_000  # published 50 ms before the test started
        assert body["age_ms"] == pytest.approx(time.time() * 1000 - body["generated_at"], abs=5_000)
        cut = await (await client.get("/users/u1/recommendations", params={"n": "2"})).json()
        assert [i["item_id"] for i in cut["items"]] == ["a", "b"]
        more = await (await client.get("/users/u1/recommendations?n=50")).json()
        assert len(more["items"]) == 3
        odd = await (await client.get("/users/zo%C3%AB%2F%C3%BC/recommendations")).json()  # percent-encoded id
        assert (odd["user_id"], odd["known"], odd["items"][0]["item_id"]) == ("zoë/ü", True, "z")

    call(shop(), Status(ready=True), steps)


def test_a_user_without_a_list_gets_the_list_for_strangers() -> None:
    async def steps(client: TestClient) -> None:
        body = await (await client.get("/users/never-seen/recommendations?n=1")).json()
        assert body["user_id"] == "never-seen" and body["known"] is False
        assert [i["item_id"] for i in body["items"]] == ["p1"] and body["generated_at"] == 2_000
        assert body["list_id"] is None and body["variant"] is None

    call(shop(), Status(ready=True), steps)


def test_with_no_list_for_strangers_yet_the_answer_is_empty_not_an_error() -> None:
    async def steps(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations")
        assert resp.status == 200
        assert await resp.json() == {"user_id": "u1", "items": [], "list_id": None, "variant": None,
                                     "generated_at": None, "age_ms": None, "known": False}

    call(MemoryStore(), Status(), steps)


@pytest.mark.parametrize("n", ["0", "-1", "two", "1.5", "", "٣"])
def test_a_bad_n_is_a_400_that_says_why(n: str) -> None:
    async def steps(client: TestClient) -> None:
        resp = await client.get("/users/u1/recommendations", params={"n": n})
        assert resp.status == 400 and resp.content_type == "application/json"
        assert "n must be a positive integer" in (await resp.json())["error"]

    call(shop(), Status(ready=True), steps)


def test_ready_only_once_caught_up_healthy_always_and_404_elsewhere() -> None:
    status = Status(behind={0: 12, 1: 0})

    async def steps(client: TestClient) -> None:
        not_yet = await client.get("/readyz")
        assert not_yet.status == 503 and (await not_yet.json()) == {"ready": False, "behind": 12}
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["ready"] is False
        status.ready = True
        assert (await client.get("/readyz")).status == 200
        assert (await (await client.get("/healthz")).json())["lists"] == 0
        for path in ("/", "/users/u1", "/users//recommendations", "/users/u1/recommendations/x"):
            assert (await client.get(path)).status == 404, path
        assert (await client.post("/users/u1/recommendations")).status == 405

    call(MemoryStore(), status, steps)


def test_a_taken_port_is_one_clear_error() -> None:
    async def main() -> None:
        runner = web.AppRunner(web_app(MemoryStore(), Status()))
        await runner.setup()
        try:
            await _listen(runner, "127.0.0.1", port)
        finally:
            await runner.cleanup()

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}: .*STREAM_REC_SERVE_PORT"):
            asyncio.run(main())


# -- the list for strangers, as a worker builds it ------------------------------------------------

def test_the_list_for_strangers_is_popular_and_publishing_it_changes_no_users_list() -> None:
    """Exploration draws would count new items as shown and move the random stream: a worker that publishes
    the list for strangers every few seconds must rank its users exactly as one that never does."""
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=120, n_categories=6, n_events=1500, seed=5))
    events = [decode(json.dumps(e).encode(), None, now_ms=10**13) for e in shop.events()]
    settings = replace(Settings(), explore=0.3, top_n=10)
    quiet, publishing = RecService(settings, MemoryStore()), RecService(settings, MemoryStore())
    never_explores = RecService(replace(settings, explore=0.0), MemoryStore())
    strangers = []
    for start in range(0, len(events), 250):
        batch = [(("lane", start + n), e) for n, e in enumerate(events[start:start + 250])]
        published, told = quiet.apply(batch).recommendations, publishing.apply(batch).recommendations
        assert [r["items"] for r in published] == [r["items"] for r in told]
        never_explores.apply(batch)
        strangers.append(publishing.stranger_list())
    users = sorted({e.user_id for e in events})
    assert [quiet.recommend(u) for u in users] == [publishing.recommend(u) for u in users]

    last = strangers[-1]
    assert (last["user_id"], last["trigger"], last["v"]) == ("", None, 1)
    assert len(last["items"]) == 10 and all(i["because"] == {"kind": "popular"} for i in last["items"])
    assert [i["item_id"] for i in last["items"]] == never_explores.recommend("never-seen")[0]
