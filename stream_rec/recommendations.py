"""The recommendations topic's message: one user's list with each item's sources and reason (the format
is in docs/formats.md; :mod:`stream_rec.wire` turns it into bytes)."""

from __future__ import annotations

import os
import time
from typing import Any

from stream_rec.events import Event
from stream_rec.fusion import CATEGORY, EXPLORE_BIT, MF, POPULAR_BIT, RECENT, label
from stream_rec.ids import IdIndex
from stream_rec.models.popularity import DecayedPopularity

#: The message format's version (``"v"``).
VERSION = 1


def message(trigger: Event, item_ids: list[str], scores: list[float], sources: list[tuple[str, ...]],
            because: list[dict[str, str]], model_version: str, variant: str = "default") -> dict[str, Any]:
    """The list published for ``trigger``'s user after ``trigger`` was learned, ranked by ``variant``."""
    return _list(trigger.user_id, item_ids, scores, sources, because, model_version, variant,
                 {"event_id": trigger.event_id, "type": trigger.type, "ts": trigger.ts_ms})


def stranger_message(item_ids: list[str], scores: list[float], sources: list[tuple[str, ...]],
                     because: list[dict[str, str]], model_version: str, variant: str = "default") -> dict[str, Any]:
    """The list for a user never seen, in the same format with ``"user_id": ""`` and no trigger (no event
    made it); published under :data:`stream_rec.wire.STRANGER_KEY`, as no user id is empty.

    >>> rec = stranger_message(["i1"], [0.5], [("popular",)], [{"kind": "popular"}], "v")
    >>> rec["user_id"], rec["trigger"], rec["items"][0]["because"], len(rec["list_id"])
    ('', None, {'kind': 'popular'}, 16)
    """
    return _list("", item_ids, scores, sources, because, model_version, variant, None)


def _list(user_id: str, item_ids: list[str], scores: list[float], sources: list[tuple[str, ...]],
          because: list[dict[str, str]], model_version: str, variant: str, trigger: dict[str, Any] | None
          ) -> dict[str, Any]:
    return {
        "v": VERSION,
        "user_id": user_id,
        "list_id": new_list_id(),
        "variant": variant,
        "items": [
            {"item_id": item, "score": round(score, 6), "sources": list(src), "because": why}
            for item, score, src, why in zip(item_ids, scores, sources, because)
        ],
        "model_version": model_version,
        "trigger": trigger,
        "generated_at": int(time.time() * 1000),
    }


def new_list_id() -> str:
    """A list's id: 16 random hex digits (64 bits: a shop publishing a billion lists a day would see its
    first repeat after ~10 years). Impressions and events name the list they came from by it.

    >>> len(new_list_id()), new_list_id() != new_list_id()
    (16, True)
    """
    return os.urandom(8).hex()


def reason(mask: int, anchor: int, item: int, names: Names) -> dict[str, str]:
    """An item's reason, the most specific one its sources give: an exploration slot is ``new``; the
    user's own recent item is ``recently_viewed``; an item co-occurrence put forward goes ``with_item``
    (the history item it was most often seen with); one the category source put forward is
    ``popular_in_category``; else ``similar_users`` (matrix factorisation) or ``popular``."""
    if mask >> EXPLORE_BIT & 1:
        return {"kind": "new"}
    if mask >> RECENT & 1:
        return {"kind": "recently_viewed"}
    if anchor >= 0:
        return {"kind": "with_item", "item_id": names.item(anchor)}
    if mask >> CATEGORY & 1 and (category := names.category_of(item)) is not None:
        return {"kind": "popular_in_category", "category": category}
    if mask >> MF & 1:
        return {"kind": "similar_users"}
    if mask >> POPULAR_BIT & 1 or not mask:
        return {"kind": "popular"}
    return {"kind": label(mask)[0]}  # a source registered from outside the package: its name


class Names:
    """External names of item and category indices, for explanations."""

    def __init__(self, items: IdIndex, categories: IdIndex, popularity: DecayedPopularity) -> None:
        self.item = items.external
        self._categories, self._popularity = categories, popularity

    def category_of(self, item: int) -> str | None:
        c = self._popularity.category_of(item)
        return self._categories.external(c) if c >= 0 else None
