"""What became of the published lists: per variant and per source, how often the user's next event was in
their list (HR@10, measured before the event is learned), what the front end showed (impressions) and
what was then clicked or bought from a list (events that name its ``list_id``).

:class:`Outcomes` remembers the last list published to each of the most recently active users (a bounded
LRU, :data:`REMEMBERED_USERS`, ~300 bytes a user) and counts into :attr:`Outcomes.figures`, which the
worker exports as Prometheus counters and persists with its state (``stream-rec state`` prints them).
A restart forgets the remembered lists (not the counts): outcomes of lists published before it are not
attributed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from stream_rec.fusion import EXPLORE_BIT, label
from stream_rec.types import IntArray

#: Users whose last lists are remembered for measuring and attribution (the most recently ranked).
REMEMBERED_USERS = 100_000
#: Lists remembered per user: an impression or a click may reach the worker after the event that made the
#: user's next list (they travel on other topics, in no set order with it).
LISTS_PER_USER = 3
#: A list "hits" when the user's next event is on its first this many items (HR@10).
HIT_DEPTH = 10
#: The count kinds of :attr:`Outcomes.figures`: ``(variant, kind, source, event type)``, unused parts "".
MEASURED, HITS, IMPRESSIONS, SHOWN, ACTED, UNMATCHED = "measured", "hits", "impressions", "shown", "acted", "unmatched"


class Remembered(NamedTuple):
    list_id: str
    variant: int
    items: bytes  # int64 item indices, best first
    masks: bytes  # int64 source masks, per item


class Outcomes:
    """The last list of each recently ranked user, and the counts of what became of lists."""

    def __init__(self, variant_names: Sequence[str], capacity: int = REMEMBERED_USERS) -> None:
        self.variant_names = list(variant_names)
        self.capacity = capacity
        self._lists: OrderedDict[int, tuple[Remembered, ...]] = OrderedDict()  # newest first
        #: ``(variant name, kind, source, event type) -> count`` since the state began.
        self.figures: Counter[tuple[str, str, str, str]] = Counter()

    @property
    def remembering(self) -> bool:
        return bool(self._lists)

    def remember(self, user: int, list_id: str, variant: int, items: IntArray, masks: IntArray) -> None:
        """``user`` was just sent this list (item indices best first, their source masks)."""
        lists = self._lists
        new = Remembered(list_id, variant, np.ascontiguousarray(items, dtype=np.int64).tobytes(),
                         np.ascontiguousarray(masks, dtype=np.int64).tobytes())
        lists[user] = (new, *lists.get(user, ())[: LISTS_PER_USER - 1])
        lists.move_to_end(user)
        if len(lists) > self.capacity:
            lists.popitem(last=False)

    def forget(self, user: int) -> None:
        self._lists.pop(user, None)

    def measure(self, users: Sequence[int], items: Sequence[int], types: Sequence[str],
                list_ids: Sequence[str | None]) -> None:
        """Events about to be learned: each user's remembered list is judged by whether it held the
        event's item in its first :data:`HIT_DEPTH` (before learning: what the user was offered), and an
        event naming the list it came from is attributed to the sources that put its item there."""
        lists, figures, names = self._lists, self.figures, self.variant_names
        for u, i, etype, list_id in zip(users, items, types, list_ids):
            remembered = lists.get(u)
            if remembered is None:
                if list_id is not None:
                    figures["", UNMATCHED, "", etype] += 1
                continue
            latest = remembered[0]  # what the user was offered last: HR@10
            shown = np.frombuffer(latest.items, dtype=np.int64)
            figures[names[latest.variant], MEASURED, "", ""] += 1
            place = np.flatnonzero(shown == i)
            if len(place) and place[0] < HIT_DEPTH:
                figures[names[latest.variant], HITS, "", ""] += 1
            if list_id is None:
                continue
            named = _find(remembered, list_id)
            place = np.flatnonzero(np.frombuffer(named.items, dtype=np.int64) == i) if named else place[:0]
            if named is None or not len(place):
                figures["", UNMATCHED, "", etype] += 1
                continue
            variant = names[named.variant]
            figures[variant, ACTED, "", etype] += 1  # once per event; then once per source that listed the item
            for source in label(int(np.frombuffer(named.masks, dtype=np.int64)[place[0]])):
                figures[variant, ACTED, source, etype] += 1

    def shown(self, user: int, list_id: str, item_ids: Sequence[int]) -> IntArray:
        """The front end showed ``user`` these items of list ``list_id``: counts them per source; returns
        the exploration items among them (for exploration's own counts)."""
        seen = _find(self._lists.get(user, ()), list_id)
        if seen is None:
            self.figures["", UNMATCHED, "", "impression"] += 1
            return np.zeros(0, dtype=np.int64)
        variant = self.variant_names[seen.variant]
        self.figures[variant, IMPRESSIONS, "", ""] += 1
        listed = np.frombuffer(seen.items, dtype=np.int64)
        masks = np.frombuffer(seen.masks, dtype=np.int64)
        explored = []
        for i in item_ids:
            place = np.flatnonzero(listed == i)
            if not len(place):
                continue  # an item the front end added itself
            mask = int(masks[place[0]])
            for source in label(mask):
                self.figures[variant, SHOWN, source, ""] += 1
            if mask >> EXPLORE_BIT & 1:
                explored.append(i)
        return np.array(explored, dtype=np.int64)

    def summary(self) -> dict[str, Any]:
        """Per variant: events measured, HR@10, impressions, items shown and events acted on per source,
        click-through (events naming a list they came from, per impression); plus what could not be
        matched (a list forgotten, or never published here)."""
        out: dict[str, Any] = {}
        # The variants configured now, and any that counted before (a variant since dropped keeps its figures).
        for name in dict.fromkeys([*self.variant_names, *(key[0] for key in self.figures if key[0])]):
            f = {key[1:]: n for key, n in self.figures.items() if key[0] == name}
            measured, hits, impressions = f.get((MEASURED, "", ""), 0), f.get((HITS, "", ""), 0), f.get((IMPRESSIONS, "", ""), 0)
            acted = {f"{source}/{etype}": n for (kind, source, etype), n in f.items() if kind == ACTED and source}
            from_lists = sum(n for (kind, source, _), n in f.items() if kind == ACTED and not source)
            out[name] = {
                "events_measured": measured, "hr_at_10": round(hits / measured, 4) if measured else None,
                "impressions": impressions,
                "shown": {source: n for (kind, source, _), n in f.items() if kind == SHOWN},
                "acted": acted,
                "click_through": round(from_lists / impressions, 4) if impressions else None,
            }
        out["unmatched"] = {etype: n for (v, kind, _, etype), n in self.figures.items() if kind == UNMATCHED}
        return out

    def state(self) -> bytes:
        return orjson.dumps([[*key, n] for key, n in self.figures.items()])

    def set_state(self, data: bytes) -> None:
        self.figures = Counter({tuple(row[:4]): int(row[4]) for row in orjson.loads(data)})


def _find(remembered: tuple[Remembered, ...], list_id: str) -> Remembered | None:
    for seen in remembered:
        if seen.list_id == list_id:
            return seen
    return None
