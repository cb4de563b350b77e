"""What a chaos run's topics say happened, from records already read: pure functions, no broker.

The user-state changelog is the witness. Its marks records name the worker process that wrote them
(headers :data:`agents.state.WORKER_HEADER` and :data:`agents.state.PID_HEADER`), so the marks of one
partition, in offset order, say who owned it when; a change of writer is a *move*. The new owner's fence
(the record it writes before restoring the partition) is where the move happened in the log: rows before
it were written by earlier owners, rows after it by the new one. Record timestamps are produce times
(CreateTime, set by the writing client), all on one host's clock.

Every user row counts its user's applied events by type and sums their fingerprints, and names, for the
lanes its batch applied events of, the user's last offset there. A row is *exact* when its counts and
digest are those of the user's events up to those offsets (and, in lanes its batch did not touch, up to
where the user's previous row stood): a checker that reads the input can tell for every row, not only the
last, whether it reflects exactly a prefix of its user's events.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_rec.events import EVENT_TYPES
from stream_rec.profiles import event_digest

_MASK = 2**64 - 1
_CODE = {name: n for n, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class Marks:
    """A marks record: who wrote partition ``partition`` at ``offset``, when (epoch ms)."""

    partition: int
    offset: int
    ts_ms: int
    writer: str  # "<worker id>/<pid>", "" when the record names none


@dataclass(frozen=True)
class Fence:
    """A fence record: a worker about to restore ``partition`` (or to learn where it ends)."""

    partition: int
    offset: int
    ts_ms: int
    writer: str


@dataclass(frozen=True)
class Row:
    """A user row, reduced to what the checks read."""

    partition: int
    offset: int
    ts_ms: int
    user: str
    counts: tuple[int, ...]
    digest: int
    marks: Mapping[str, int]
    purchases: tuple[str, ...]


def writer_of(headers: Iterable[tuple[str, bytes]] | None, worker_header: str, pid_header: str) -> str:
    """``"<worker id>/<pid>"`` from a record's headers; "" when they name no writer.

    >>> writer_of([("stream_rec.worker", b"w1"), ("stream_rec.pid", b"42")], "stream_rec.worker", "stream_rec.pid")
    'w1/42'
    """
    found = dict(headers or ())
    worker, pid = found.get(worker_header), found.get(pid_header)
    if worker is None:
        return ""
    return f"{worker.decode(errors='replace')}/{(pid or b'?').decode(errors='replace')}"


# -- ownership ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Move:
    """Partition ``partition`` passed from writer ``old`` to ``new``; ``boundary_offset`` and
    ``boundary_ms`` are the new owner's fence before its first marks record (its restore)."""

    partition: int
    old: str
    new: str
    boundary_offset: int
    boundary_ms: int
    old_last_ms: int
    new_first_ms: int


def _by_partition(records: Iterable[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        out[record.partition].append(record)
    for part in out.values():
        part.sort(key=lambda r: r.offset)
    return out


def find_moves(marks: Iterable[Marks], fences: Iterable[Fence]) -> list[Move]:
    """Every change of writer between consecutive marks records of a partition, in time order.

    >>> m = [Marks(0, 1, 100, "a/1"), Marks(0, 5, 300, "b/2")]
    >>> find_moves(m, [Fence(0, 3, 250, "b/2")])
    [Move(partition=0, old='a/1', new='b/2', boundary_offset=3, boundary_ms=250, old_last_ms=100, new_first_ms=300)]
    """
    fences_of = _by_partition(fences)
    moves = []
    for part, seq in _by_partition(marks).items():
        for prev, cur in zip(seq, seq[1:]):
            if cur.writer == prev.writer:
                continue
            between = [f for f in fences_of.get(part, []) if prev.offset < f.offset < cur.offset and f.writer == cur.writer]
            # Without the new owner's fence (records that name no writer), the move is put after the old
            # owner's last marks record.
            fence = between[-1] if between else Fence(part, prev.offset + 1, prev.ts_ms, cur.writer)
            moves.append(Move(part, prev.writer, cur.writer, fence.offset, fence.ts_ms, prev.ts_ms, cur.ts_ms))
    return sorted(moves, key=lambda mv: mv.boundary_ms)


@dataclass(frozen=True)
class Takeover:
    """After ``writer`` was killed at ``killed_ms``: each partition it held, and the seconds until
    another process wrote its marks again (None: never)."""

    writer: str
    killed_ms: int
    partitions: dict[int, float | None]

    @property
    def seconds(self) -> float | None:
        """The slowest partition's takeover; None if one was never written again, 0.0 if it held none."""
        if any(s is None for s in self.partitions.values()):
            return None
        return max(self.partitions.values(), default=0.0)  # type: ignore[type-var]


def takeover(marks: Iterable[Marks], writer: str, killed_ms: int, assigned: Iterable[int] = ()) -> Takeover:
    """Which partitions ``writer`` held when it was killed, and how long each took to be written again by
    another process. It held those whose last marks record before the kill is its own, and ``assigned``
    (what it was last given, which it may not have written yet).

    >>> m = [Marks(0, 1, 100, "a/1"), Marks(1, 1, 110, "b/2"), Marks(0, 4, 9_100, "b/2"), Marks(2, 7, 9_300, "b/2")]
    >>> takeover(m, "a/1", 150).partitions, takeover(m, "a/1", 150, assigned=[2]).partitions
    ({0: 8.95}, {0: 8.95, 2: 9.15})
    """
    by_part = _by_partition(marks)
    held = set(assigned)
    for part, seq in by_part.items():
        before = [m for m in seq if m.ts_ms <= killed_ms]
        if before and before[-1].writer == writer:
            held.add(part)
    seconds: dict[int, float | None] = {}
    for part in sorted(held):
        after = [m.ts_ms for m in by_part.get(part, []) if m.ts_ms > killed_ms and m.writer != writer]
        seconds[part] = (min(after) - killed_ms) / 1000.0 if after else None
    return Takeover(writer, killed_ms, seconds)


def first_write(marks: Iterable[Marks], writer: str) -> int | None:
    """When ``writer`` first wrote a marks record (epoch ms), None if it never did."""
    return min((m.ts_ms for m in marks if m.writer == writer), default=None)


# -- rows against the input -----------------------------------------------------------------------

@dataclass(frozen=True)
class InputEvent:
    """One event as it sits in an input topic: its user, lane (as the workers name it) and offset."""

    user: str
    lane: str
    offset: int
    type: str
    item: str
    ts_ms: int


class InputLog:
    """Per user and lane, the events in offset order with running counts and digests, so the counts and
    digest of any prefix are one bisection away."""

    def __init__(self, events: Iterable[InputEvent]) -> None:
        grouped: dict[tuple[str, str], list[InputEvent]] = defaultdict(list)
        for e in events:
            grouped[e.user, e.lane].append(e)
        self._lanes: dict[str, dict[str, tuple[list[int], list[tuple[int, ...]], list[int]]]] = defaultdict(dict)
        for (user, lane), seq in grouped.items():
            seq.sort(key=lambda e: e.offset)
            counts, digests = [(0,) * len(EVENT_TYPES)], [0]
            for e in seq:
                c = list(counts[-1])
                c[_CODE[e.type]] += 1
                counts.append(tuple(c))
                digests.append((digests[-1] + event_digest(e.item, e.type, e.ts_ms)) & _MASK)
            self._lanes[user][lane] = ([e.offset for e in seq], counts, digests)

    def __contains__(self, user: str) -> bool:
        return user in self._lanes

    def prefix(self, user: str, frontier: Mapping[str, int]) -> tuple[tuple[int, ...], int]:
        """Counts by type and digest of ``user``'s events at or before ``frontier[lane]`` in each lane."""
        total, digest = [0] * len(EVENT_TYPES), 0
        for lane, (offsets, counts, digests) in self._lanes.get(user, {}).items():
            k = bisect.bisect_right(offsets, frontier.get(lane, -1))
            total = [a + b for a, b in zip(total, counts[k])]
            digest = (digest + digests[k]) & _MASK
        return tuple(total), digest


@dataclass
class RowCheck:
    """How many rows were checked, which were not an exact prefix of their user's events."""

    checked: int = 0
    inexact: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    examples: list[str] = field(default_factory=list)


def check_rows(rows: Iterable[Row], inputs: InputLog, *, max_examples: int = 5) -> RowCheck:
    """Check every row against the input (see the module docstring).

    >>> log = InputLog([InputEvent("u", "0>b:0", 7, "view", "i", 1), InputEvent("u", "0>b:0", 9, "view", "j", 2)])
    >>> good = Row(0, 0, 0, "u", (1, 0, 0, 0), event_digest("i", "view", 1), {"0>b:0": 7}, ())
    >>> twice = Row(0, 1, 0, "u", (2, 0, 0, 0), 2 * event_digest("i", "view", 1), {"0>b:0": 7}, ())
    >>> check = check_rows([good, twice], log)
    >>> check.checked, check.inexact
    (2, {(0, 1)})
    """
    result = RowCheck()
    by_user: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_user[row.user].append(row)
    for user, seq in by_user.items():
        seq.sort(key=lambda r: (r.partition, r.offset))
        frontier: dict[str, int] = {}
        for row in seq:
            result.checked += 1
            frontier.update(row.marks)
            counts, digest = inputs.prefix(user, frontier)
            if user in inputs and row.counts == counts and row.digest == digest:
                continue
            result.inexact.add((row.partition, row.offset))
            if len(result.examples) < max_examples:
                result.examples.append(f"{user} at changelog[{row.partition}]@{row.offset}: counts {list(row.counts)}, "
                                       f"the input up to {dict(frontier)} has {list(counts)}"
                                       f"{'' if row.digest == digest else ' (digest differs)'}")
    return result


# -- users whose partition moved ------------------------------------------------------------------

@dataclass
class MovedUsers:
    """Users active on both sides of a move: their last row before it and their first row after it."""

    pairs: int = 0  # (user, move) pairs
    users: int = 0
    survived: int = 0  # the first row after counts at least every event the last row before counted
    exact: int = 0  # ... and is exactly a prefix of the user's events
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Side:
    """One user's rows around one move."""

    user: str
    move: Move
    before: Row
    after: Row | None


def _around_moves(rows: Iterable[Row], moves: Sequence[Move]) -> list[_Side]:
    """For each move and each user of its partition with a row before it: that row, and the user's first
    row after the move if the new owner wrote one (before the partition's next move)."""
    rows_of: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for row in rows:
        rows_of[row.partition, row.user].append(row)
    users_of: dict[int, list[str]] = defaultdict(list)
    for (part, user), seq in rows_of.items():
        seq.sort(key=lambda r: r.offset)
        users_of[part].append(user)
    by_part: dict[int, list[Move]] = defaultdict(list)
    for mv in moves:
        by_part[mv.partition].append(mv)
    sides = []
    for part, part_moves in by_part.items():
        part_moves.sort(key=lambda mv: mv.boundary_offset)
        ends = [mv.boundary_offset for mv in part_moves[1:]] + [2**63]
        for mv, end in zip(part_moves, ends):
            for user in users_of[part]:
                seq = rows_of[part, user]
                offsets = [r.offset for r in seq]
                k = bisect.bisect_left(offsets, mv.boundary_offset)
                if k == 0:
                    continue
                after = seq[k] if k < len(seq) and seq[k].offset < end else None
                sides.append(_Side(user, mv, seq[k - 1], after))
    return sides


def moved_users(rows: Sequence[Row], moves: Sequence[Move], check: RowCheck, *, max_examples: int = 5) -> MovedUsers:
    """Whether the users active across each move kept their history: the new owner's first row of each
    counts at least what the old owner's last row did, and is exact."""
    result = MovedUsers()
    users = set()
    for side in _around_moves(rows, moves):
        if side.after is None:
            continue
        result.pairs += 1
        users.add(side.user)
        kept = all(a >= b for a, b in zip(side.after.counts, side.before.counts))
        exact = (side.after.partition, side.after.offset) not in check.inexact
        result.survived += kept
        result.exact += kept and exact
        if not (kept and exact) and len(result.examples) < max_examples:
            result.examples.append(f"{side.user}: {list(side.before.counts)} before the move of partition "
                                   f"{side.move.partition} ({side.move.old} -> {side.move.new}), "
                                   f"{list(side.after.counts)} after{'' if exact else ' (row not exact)'}")
    result.users = len(users)
    return result


# -- the planted-partner probe --------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeCase:
    """``user`` had bought an item whose planted partner ``partner`` they had not bought, as of their last
    row before ``since_ms``; does their first list generated at or after ``since_ms`` hold the partner?"""

    group: str  # "moved" or "unmoved"
    user: str
    partner: str
    since_ms: int


def _partners(row: Row, complements: Mapping[str, str]) -> set[str]:
    bought = set(row.purchases)
    return {complements[item] for item in row.purchases if item in complements} - bought


def probe_cases(rows: Sequence[Row], moves: Sequence[Move], complements: Mapping[str, str], *,
                quiet_s: float = 30.0) -> list[ProbeCase]:
    """Cases of the probe: for each move, the moved users (their last row before the new owner's restore),
    and, as the comparison, the users of partitions that did not move within ``quiet_s`` of it (their last
    row written before that time)."""
    cases = []
    for side in _around_moves(rows, moves):
        for partner in _partners(side.before, complements):
            cases.append(ProbeCase("moved", side.user, partner, side.move.boundary_ms))
    rows_of: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        rows_of[row.user].append(row)
    for seq in rows_of.values():
        seq.sort(key=lambda r: (r.partition, r.offset))
    quiet_ms = quiet_s * 1000
    for mv in moves:
        busy = {m.partition for m in moves if abs(m.boundary_ms - mv.boundary_ms) <= quiet_ms}
        for user, seq in rows_of.items():
            if seq[0].partition in busy:
                continue
            before = [r for r in seq if r.ts_ms < mv.boundary_ms]
            if before:
                for partner in _partners(before[-1], complements):
                    cases.append(ProbeCase("unmoved", user, partner, mv.boundary_ms))
    return cases


@dataclass(frozen=True)
class Share:
    cases: int
    hits: int

    @property
    def share(self) -> float | None:
        return self.hits / self.cases if self.cases else None


def probe_shares(cases: Iterable[ProbeCase],
                 first_list: Callable[[str, int], frozenset[str] | None]) -> dict[str, Share]:
    """Per group, the cases whose user's first list at or after ``since_ms`` holds the partner (cases with
    no such list are left out)."""
    tally: dict[str, list[int]] = {"moved": [0, 0], "unmoved": [0, 0]}
    for case in cases:
        items = first_list(case.user, case.since_ms)
        if items is None:
            continue
        tally[case.group][0] += 1
        tally[case.group][1] += case.partner in items
    return {group: Share(n, hits) for group, (n, hits) in tally.items()}
