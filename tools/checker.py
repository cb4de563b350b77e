"""Check a run against its input: what every user's state in Kafka says was applied, against what was sent.

The user-state changelog (its latest row per user) is the state's home, so it is what a checker reads:
each row counts its user's applied events by type and sums their fingerprints
(:func:`stream_rec.profiles.event_digest`). A user whose counts exceed what was sent for them applied
something twice; one whose counts fall short lost something; one whose counts match but whose digest
does not applied a wrong set (one lost, another doubled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream_rec.events import EVENT_TYPES
from stream_rec.profiles import event_digest
from stream_rec.state.changelog import UserRow, decode_user_row
from tools.produce import read_topic

_MASK = 2**64 - 1


@dataclass
class Expected:
    """Per user: events sent by type and the sum of their fingerprints (mod 2**64)."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    digests: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(c) for c in self.counts.values())


def expected_from(events: Iterable[Mapping[str, Any]]) -> Expected:
    """What a run must end with, from the valid events sent (dicts as :mod:`stream_rec.synth` makes them,
    ``ts`` in epoch milliseconds)."""
    out = Expected()
    code = {t: n for n, t in enumerate(EVENT_TYPES)}
    for e in events:
        user = str(e["user_id"])
        counts = out.counts.setdefault(user, [0] * len(EVENT_TYPES))
        counts[code[e["type"]]] += 1
        out.digests[user] = (out.digests.get(user, 0) + event_digest(str(e["item_id"]), e["type"], int(e["ts"]))) & _MASK
    return out


def changelog_rows(bootstrap: str, topic: str, *, idle_ms: int = 2000) -> dict[str, UserRow]:
    """The latest row of every user in the user-state changelog (tombstones remove a user)."""
    latest: dict[bytes, bytes | None] = {}
    for message in read_topic(bootstrap, topic, idle_ms=idle_ms):
        if not message.key.startswith(b"\x00"):  # marks records and fences
            latest[message.key] = message.value
    return {key.decode(): decode_user_row(key, value) for key, value in latest.items() if value is not None}


@dataclass
class Verdict:
    """How a run's state compares with its input."""

    events_in: int
    applied: int
    applied_twice: int
    lost: int
    wrong_set: int  # users whose counts match but whose applied events are not theirs
    users: int
    users_missing: int
    examples: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.applied_twice == 0 and self.lost == 0 and self.wrong_set == 0 and self.users_missing == 0

    def lines(self) -> list[str]:
        return [f"events in             {self.events_in:>10,}",
                f"applied               {self.applied:>10,}",
                f"applied twice         {self.applied_twice:>10,}",
                f"lost                  {self.lost:>10,}",
                f"users with a wrong set{self.wrong_set:>10,}",
                f"users                 {self.users:>10,}  (missing from the changelog: {self.users_missing:,})"]


def compare(expected: Expected, rows: Mapping[str, UserRow]) -> Verdict:
    twice = lost = wrong = missing = applied = 0
    examples: list[str] = []
    for user, counts in expected.counts.items():
        row = rows.get(user)
        if row is None:
            missing += 1
            lost += sum(counts)
            if len(examples) < 5:
                examples.append(f"{user}: no row in the changelog ({sum(counts)} events sent)")
            continue
        applied += sum(row.counts)
        over = sum(max(0, got - want) for got, want in zip(row.counts, counts))
        under = sum(max(0, want - got) for got, want in zip(row.counts, counts))
        twice, lost = twice + over, lost + under
        if not over and not under and row.digest != expected.digests[user]:
            wrong += 1
        if (over or under or row.digest != expected.digests[user]) and len(examples) < 5:
            examples.append(f"{user}: applied {list(row.counts)}, sent {counts}")
    extra = [user for user in rows if user not in expected.counts]
    for user in extra:
        applied += sum(rows[user].counts)
        twice += sum(rows[user].counts)
    return Verdict(expected.total, applied, twice, lost, wrong, len(expected.counts), missing, examples)
