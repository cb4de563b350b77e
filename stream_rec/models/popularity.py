"""Time-decayed item popularity: the ``popular`` source and the cold-start fallback.

Each item keeps ``value`` as of ``last_ts``; an event of weight ``w`` at ``t`` does
``value <- value * 2 ** (-(t - last_ts) / half_life_s) + w``. Reading the value at ``now`` applies
the same decay, so an item's score halves every ``half_life_s`` without any background job.
"""

from __future__ import annotations

import numpy as np

from stream_rec.models._arrays import TouchLog, as_index, grow
from stream_rec.types import FloatArray, IntArray

#: Layout of :meth:`DecayedPopularity.item_state` (32 bytes, little-endian).
ITEM_STATE_DTYPE = np.dtype([("value", "<f8"), ("last_ts", "<f8"), ("first_seen", "<f8"), ("n_events", "<i8")])


class DecayedPopularity:
    """Exponentially time-decayed popularity per item.

    Parameters
    ----------
    half_life_s
        Seconds after which an event's contribution counts half. Three days by default: long enough to
        smooth daily cycles, short enough to follow a trend within a week.

    Attributes
    ----------
    now
        Latest event time seen (seconds); scores are decayed to this instant. ``-inf`` before any event.

    Examples
    --------
    >>> import numpy as np
    >>> pop = DecayedPopularity(half_life_s=10.0)
    >>> items = np.array([4, 4, 4, 2])  # three events on item 4 at t=0, one on item 2 at t=10
    >>> pop.learn_many(np.zeros(4), items, np.ones(4), np.array([0.0, 0.0, 0.0, 10.0]))
    >>> ranked, scores = pop.recommend(-1, k=2)
    >>> ranked.tolist(), scores.tolist()  # item 4 has decayed by one half-life
    ([4, 2], [1.5, 1.0])
    >>> pop.new_items(now=10.0, max_age_s=5.0, max_events=1).tolist()
    [2]
    """

    name = "popular"

    def __init__(self, half_life_s: float = 86400.0 * 3) -> None:
        self.half_life_s = half_life_s
        self.now = float("-inf")
        self._value = np.zeros(0, dtype=np.float64)
        self._last = np.zeros(0, dtype=np.float64)
        self._first = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._touched = TouchLog()
        # Every seen item ranked at ``now`` (best first), and the last ``new_items`` answer: both are
        # the same for every user, so they are computed once per change of state, not once per list.
        self._ranking: tuple[IntArray, FloatArray] | None = None
        self._fresh: tuple[tuple[float, float, int], IntArray] | None = None

    def _changed(self) -> None:
        self._ranking, self._fresh = None, None

    def _decay(self, dt: FloatArray) -> FloatArray:
        return np.exp2(-np.asarray(dt, dtype=np.float64) / self.half_life_s)

    def _reserve(self, n_items: int) -> None:
        self._value = grow(self._value, n_items)
        self._last = grow(self._last, n_items)
        self._first = grow(self._first, n_items)
        self._count = grow(self._count, n_items)
        self._seen = grow(self._seen, n_items, False)

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Add each event's weight to its item, decayed to that item's newest event time.

        Closed form per item: ``v(T) = v0 * d(T - last0) + sum_e w_e * d(T - t_e)`` with
        ``T = max(last0, t_e)``. It equals the one-event recursion up to float rounding (~1e-15
        relative) and also handles late (out-of-order) events, which are simply decayed more.
        """
        items = as_index(items)
        if len(items) == 0:
            return
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        self._reserve(int(items.max()) + 1)
        uniq, inv = np.unique(items, return_inverse=True)

        newest = np.full(len(uniq), -np.inf)
        np.maximum.at(newest, inv, ts)
        seen = self._seen[uniq]
        last0 = np.where(seen, self._last[uniq], newest)
        t_end = np.maximum(last0, newest)
        value = np.where(seen, self._value[uniq], 0.0) * self._decay(t_end - last0)
        np.add.at(value, inv, weights * self._decay(t_end[inv] - ts))

        first = np.where(seen, self._first[uniq], np.inf)
        np.minimum.at(first, inv, ts)
        self._value[uniq], self._last[uniq], self._first[uniq] = value, t_end, first
        self._count[uniq] += np.bincount(inv, minlength=len(uniq))
        self._seen[uniq] = True
        self.now = max(self.now, float(ts.max()))
        self._touched.add(items=uniq)
        self._changed()

    def _values_now(self, items: IntArray) -> FloatArray:
        return self._value[items] * self._decay(self.now - self._last[items])

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Decayed popularity of ``items`` at :attr:`now` (the user is ignored); 0 for unseen items."""
        items = as_index(items)
        out = np.zeros(len(items), dtype=np.float64)
        ok = (items >= 0) & (items < len(self._seen))
        ok[ok] = self._seen[items[ok]]
        out[ok] = self._values_now(items[ok])
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """The ``k`` most popular seen items at :attr:`now`, minus ``exclude`` (ties: lower index first)."""
        ranked, values = self._ranked()
        if k <= 0:
            return ranked[:0], values[:0]
        if exclude is None or len(exclude) == 0:
            return ranked[:k].copy(), values[:k].copy()
        ex = as_index(exclude)
        # At most len(exclude) of the leading items are excluded, so this prefix always holds k others.
        head = ranked[: k + len(ex)]
        drop = np.zeros(len(self._seen), dtype=bool)
        drop[ex[(ex >= 0) & (ex < len(drop))]] = True
        keep = np.flatnonzero(~drop[head])[:k]
        return head[keep], values[keep]

    def _ranked(self) -> tuple[IntArray, FloatArray]:
        """All seen items by decayed value at :attr:`now`, descending, ties by lower index (cached)."""
        if self._ranking is None:
            items = np.flatnonzero(self._seen).astype(np.int64)
            values = self._values_now(items)
            order = np.lexsort((items, -values))
            self._ranking = items[order], values[order]
        return self._ranking

    def new_items(self, now: float, max_age_s: float, max_events: int) -> IntArray:
        """Items first seen within ``max_age_s`` before ``now`` with at most ``max_events`` events.

        These are the exploration candidates: too young or too rarely seen for any learned source.
        """
        key = (now, max_age_s, max_events)
        if self._fresh is None or self._fresh[0] != key:
            n = len(self._seen)
            mask = self._seen & (self._first[:n] >= now - max_age_s) & (self._count[:n] <= max_events)
            self._fresh = key, np.flatnonzero(mask).astype(np.int64)
        return self._fresh[1].copy()

    def user_state(self, user: int) -> bytes | None:
        """Always ``None``: popularity keeps no per-user state."""
        return None

    def set_user_state(self, user: int, data: bytes) -> None:
        """No-op: popularity keeps no per-user state."""

    def item_state(self, item: int) -> bytes | None:
        """One :data:`ITEM_STATE_DTYPE` record (value as of ``last_ts``); ``None`` if never seen."""
        if not (0 <= item < len(self._seen) and self._seen[item]):
            return None
        rec = np.array(
            [(self._value[item], self._last[item], self._first[item], self._count[item])], dtype=ITEM_STATE_DTYPE
        )
        return rec.tobytes()

    def set_item_state(self, item: int, data: bytes) -> None:
        rec = np.frombuffer(data, dtype=ITEM_STATE_DTYPE)[0]
        self._reserve(item + 1)
        self._value[item], self._last[item] = rec["value"], rec["last_ts"]
        self._first[item], self._count[item] = rec["first_seen"], rec["n_events"]
        self._seen[item] = True
        self._changed()
        # Scores decay to the newest event time; a restored model recovers it from its rows.
        self.now = max(self.now, float(rec["last_ts"]))

    def pop_touched(self) -> tuple[IntArray, IntArray]:
        """``(users, items)`` touched since the last call; users is always empty (no user state)."""
        return self._touched.pop()
