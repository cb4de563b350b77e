"""State that moves between workers: the user changelog and the item updates, on the service alone.

Known answers: a worker restored from another's changelog (and item updates) ranks exactly like it; a
batch cut short by a crash and delivered again is applied once; two workers that exchange item updates
count every event's item half exactly once, and rank like one worker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from stream_rec.events import Event, decode
from stream_rec.profiles import event_digest
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.state.changelog import MARKS_KEY, ChangelogFormatError, decode_user_row
from stream_rec.state.item_updates import ItemUpdateError, decode
from stream_rec.synth import ShopConfig, SyntheticShop

# Fixed fusion weights: the adaptive fusion's statistics are a worker's own measurements, not state
# that moves with a user, so two workers rank alike only with them fixed.
SETTINGS = Settings(explore=0.0, top_n=10, fusion_adapt=False)
PARTITIONS = 2


@pytest.fixture(scope="module")
def events() -> list[Event]:
    shop = SyntheticShop(ShopConfig(n_users=80, n_items=200, n_categories=8, n_events=4000, seed=11))
    return [decode_event(e) for e in shop.events()]


def decode_event(event: dict) -> Event:
    import json

    from stream_rec.events import decode as decode_bytes

    return decode_bytes(json.dumps(event).encode(), None, now_ms=10**13)


def partition_of(user_id: str, partitions: int = PARTITIONS) -> int:
    return sum(user_id.encode()) % partitions


def positioned(events: list[Event], partitions: int = PARTITIONS) -> list[tuple[tuple[str, int], Event]]:
    """Events at their positions: partition p's events in lane "p>shop:p", offsets in stream order."""
    out = []
    for n, e in enumerate(events):
        p = partition_of(e.user_id, partitions)
        out.append(((f"{p}>shop:{p}", n), e))
    return out


def run(service: RecService, batch: list, size: int = 400) -> dict[int, list[tuple[bytes, bytes]]]:
    """Apply in micro-batches; returns every changelog record written, per partition, in order."""
    log: dict[int, list[tuple[bytes, bytes]]] = {}
    for s in range(0, len(batch), size):
        result = service.apply(batch[s:s + size])
        for part, records in result.changelog.items():
            log.setdefault(part, []).extend(records)
        service.persist(result)
    return log


def lists(service: RecService, users: set[str]) -> dict[str, list[str]]:
    return {u: service.recommend(u)[0] for u in sorted(users)}


def test_a_worker_restored_from_the_changelog_and_item_updates_ranks_exactly_like_the_writer(events) -> None:
    """One partition, so the item updates hold every event in the writer's own order (records of two
    partitions are applied a partition at a time, an order SGD feels)."""
    writer = RecService(SETTINGS, MemoryStore(), record_items=True)
    updates: list[bytes] = []
    log: dict[int, list] = {}
    stream = positioned(events, partitions=1)
    for s in range(0, len(events), 400):
        result = writer.apply(stream[s:s + 400])
        updates.extend(m for ms in result.item_updates.values() for m in ms)
        for part, records in result.changelog.items():
            log.setdefault(part, []).extend(records)
    reader = RecService(SETTINGS, MemoryStore())
    reader.apply_item_updates(updates)
    for part, records in log.items():
        reader.restore(part, records, next_offset=len(records))
    users = {e.user_id for e in events}
    assert lists(reader, users) == lists(writer, users)
    assert reader.stats() == writer.stats()
    assert reader.hwm == writer.hwm
    assert reader.checkpoints == {part: len(records) for part, records in log.items()}


def test_every_row_carries_the_users_counts_and_digest(events) -> None:
    service = RecService(SETTINGS, MemoryStore())
    log = run(service, positioned(events))
    latest = {key: value for records in log.values() for key, value in records if key != MARKS_KEY}
    expected_counts: dict[str, Counter] = {}
    expected_digest: Counter = Counter()
    for e in events:
        expected_counts.setdefault(e.user_id, Counter())[e.type] += 1
        expected_digest[e.user_id] += event_digest(e.item_id, e.type, e.ts_ms)
    for key, value in latest.items():
        row = decode_user_row(key, value)
        assert dict(zip(("view", "click", "add_to_cart", "purchase"), row.counts)) == {
            t: expected_counts[row.user_id].get(t, 0) for t in ("view", "click", "add_to_cart", "purchase")}
        assert row.digest == expected_digest[row.user_id] % 2**64
        assert row.n_events == sum(row.counts)
    assert {decode_user_row(k, v).user_id for k, v in latest.items()} == {e.user_id for e in events}


def test_a_batch_cut_short_by_a_crash_is_applied_once_when_delivered_again(events) -> None:
    """The old owner wrote some rows of its last batch but not its marks record, then died; the new owner
    restores the changelog, gets the batch again (the consumer never committed it) and goes on."""
    stream = positioned(events)
    reference = RecService(SETTINGS, MemoryStore())
    run(reference, stream)

    old = RecService(SETTINGS, MemoryStore())
    log = run(old, stream[:2000])
    cut = old.apply(stream[2000:2400])
    for part, records in cut.changelog.items():
        rows = [r for r in records if r[0] != MARKS_KEY]
        log.setdefault(part, []).extend(rows[: len(rows) // 2])  # half the rows, no marks record
    new = RecService(SETTINGS, MemoryStore())
    for part, records in log.items():
        new.restore(part, records)
    assert new.ahead, "the test must leave rows written after the last marks record"
    run(new, stream[1600:])  # redelivered from an older committed offset
    assert new.counts == reference.counts and new.events_total == len(events)
    for u in {e.user_id for e in events}:
        a, b = (s.export_users([s.users.get(u)])[0] for s in (new, reference))
        assert (a.n_events, a.counts, a.digest) == (b.n_events, b.counts, b.digest), u


def test_two_workers_that_exchange_item_updates_learn_each_items_half_once(events) -> None:
    """Users split between two workers by partition; after every batch each applies the other's item
    updates. Popularity (a count) is then exactly one worker's, and so are the user counts."""
    stream = positioned(events)
    alone = RecService(SETTINGS, MemoryStore())
    run(alone, stream)
    workers = [RecService(SETTINGS, MemoryStore(), record_items=True) for _ in range(PARTITIONS)]
    for s in range(0, len(stream), 200):
        batch = stream[s:s + 200]
        out = []
        for p, worker in enumerate(workers):
            mine = [x for x in batch if x[0][0].startswith(f"{p}>")]
            out.append([m for ms in worker.apply(mine).item_updates.values() for m in ms])
        for p, worker in enumerate(workers):
            for q, messages in enumerate(out):
                if q != p:
                    worker.apply_item_updates(messages)
            # Its own updates come back (every worker reads the whole topic): nothing is learned twice.
            again = worker.apply_item_updates(out[p])
            assert again.applied == 0
    for worker in workers:
        assert _popularity_counts(worker) == _popularity_counts(alone)
        np.testing.assert_allclose(_cooc_totals(worker), _cooc_totals(alone), rtol=1e-9)
    assert sum(w.events_total for w in workers) == alone.events_total
    # Ranking: the shared item model gives one worker's lists to every user, within SGD's order effects.
    users = sorted({e.user_id for e in events})
    overlap = []
    for u in users:
        worker = workers[partition_of(u)]
        a, b = set(worker.recommend(u)[0]), set(alone.recommend(u)[0])
        overlap.append(len(a & b) / max(len(b), 1))
    assert np.mean(overlap) > 0.9, np.mean(overlap)


def _popularity_counts(service: RecService) -> dict[str, int]:
    st = service.models["popular"].state
    return {service.items.external(i): int(st.count[i]) for i in np.flatnonzero(st.seen[:len(service.items)])}


def _cooc_totals(service: RecService) -> np.ndarray:
    st = service.models["cooc"].state
    ids = sorted(service.items.externals(range(len(service.items))))
    return np.array([st.total[service.items.get(i)] * st.mass[service.items.get(i)] for i in ids])


def test_a_new_owner_that_already_has_the_item_half_learns_only_the_user_half(events) -> None:
    """After a takeover, the new owner may get the old owner's item updates of a batch before it applies
    that batch itself (the old owner died before its rows went out): the item half is not learned twice."""
    stream = positioned(events)
    reference = RecService(SETTINGS, MemoryStore())
    run(reference, stream)
    old = RecService(SETTINGS, MemoryStore(), record_items=True)
    new = RecService(SETTINGS, MemoryStore(), record_items=True)
    log, shared = {}, []
    for s in range(0, 2000, 400):
        result = old.apply(stream[s:s + 400])
        shared.extend(m for ms in result.item_updates.values() for m in ms)
        for part, records in result.changelog.items():
            log.setdefault(part, []).extend(records)
    lost = old.apply(stream[2000:2400])  # its item updates went out, its rows did not
    new.apply_item_updates([*shared, *(m for ms in lost.item_updates.values() for m in ms)])
    for part, records in log.items():
        new.restore(part, records)
    run(new, stream[2000:])
    assert _popularity_counts(new) == _popularity_counts(reference)
    assert new.stats() == reference.stats()


def test_a_damaged_record_is_refused_by_name() -> None:
    with pytest.raises(ChangelogFormatError, match="u1"):
        decode_user_row(b"u1", b"U\x01\x05\x00\x00\x00{bad")
    with pytest.raises(ChangelogFormatError):
        decode_user_row(b"u1", b"X")
    with pytest.raises(ItemUpdateError):
        decode(b"I\x01\x02\x00\x00\x00{}")


def test_an_event_whose_learning_fails_is_set_aside_and_the_rest_are_learned(events) -> None:
    service = RecService(SETTINGS, MemoryStore())
    batch = positioned(events[:50])
    bad = replace(events[20], ts_ms=-5)  # a caller that skipped the event checks
    batch[20] = (batch[20][0], bad)
    result = service.apply(batch)
    assert [n for n, _ in result.rejected] == [20]
    assert "ValueError" in result.rejected[0][1]
    assert result.applied == 49 and service.events_total == 49
    assert service.apply(batch).duplicates == 50  # set aside for good: dead-lettered, not retried
