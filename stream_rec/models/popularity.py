"""Time-decayed item popularity: the ``popular`` source and the cold-start fallback.

Each item keeps ``value`` as of ``last_ts``; an event of weight ``w`` at ``t`` does
``value <- value * 2 ** (-(t - last_ts) / half_life_s) + w``. Reading the value at ``now`` applies
the same decay, so an item's score halves every ``half_life_s`` without any background job.

Ranking needs no decay at all: ``value * 2 ** (-(now - last_ts) / h)`` orders items exactly as the
*rank key* ``log2(value) + last_ts / h`` does, whatever ``now`` is, so each event updates one key and
ranking is cheap: keys only ever rise (an event adds weight), so the :data:`TOP_SIZE` best items are
kept sorted as events arrive, each event moving one item up a few places, and a list is read off
that prefix (skipping the user's exclusions). Items in their first days are kept in a list of their
own, the exploration candidates.

**Per category** (the ``category`` source): an item takes the category its events carry, and each
category keeps its own :data:`TOP_PER_CATEGORY` best items by the same rank key, maintained the same
way. A user is offered the popular items of the categories of their recent items
(:func:`pop_category_top`): "popular in shoes", and a way for items nobody has paired with anything
yet to reach the people who browse their aisle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import TouchLog, TracksTouched, as_index, grow, seen_mask, selection_buffers
from stream_rec.models._kernels import INLINE, JIT, insert_best, select_dense
from stream_rec.types import FloatArray, IntArray

#: Layout of :meth:`DecayedPopularity.item_state` (40 bytes, little-endian; rows written before
#: categories existed are the first 32 bytes, and load as uncategorised).
ITEM_STATE_DTYPE = np.dtype([("value", "<f8"), ("last_ts", "<f8"), ("first_seen", "<f8"), ("n_events", "<i8"),
                             ("category", "<i8")])
_OLD_ITEM_STATE_SIZE = 32
#: Best items kept ranked as events arrive; a list needing more (after exclusions) scans every key.
TOP_SIZE = 512
#: Best items kept ranked per category.
TOP_PER_CATEGORY = 64
#: Entries of the exploration pool each learned event checks (see :func:`_sweep_fresh`).
SWEEP_STEPS = 2
#: A user's recent items give at most this many categories to :func:`pop_category_top`, the newest
#: first; the r-th (0-based) weighs ``CATEGORY_DECAY ** r``.
USER_CATEGORIES = 3
CATEGORY_DECAY = 0.5


class PopularityState(NamedTuple):
    """Everything the compiled popularity kernels read and write."""

    value: FloatArray  # as of last
    last: FloatArray
    first: FloatArray
    count: IntArray
    seen: np.ndarray  # bool
    key: FloatArray  # rank key log2(value) + last / half_life
    clock: FloatArray  # (4,): now (latest event time), half_life_s, then what keeps an item in ``fresh``:
    # at most this many seconds since its first event and at most this many events (:func:`pop_is_new`)
    top: IntArray  # (TOP_SIZE,): the best items by key, best first (ties: lower index)
    top_pos: IntArray  # per item: its place in ``top``, -1 if not there
    fresh: IntArray  # young items, the exploration pool; those no longer new leave as learning sweeps it
    sizes: IntArray  # (3,): entries used in ``top`` and in ``fresh``, and the sweep's place in ``fresh``
    category: IntArray  # per item: its category, -1 if none is known
    cat_top: IntArray  # (category capacity, TOP_PER_CATEGORY): each category's best items, best first
    cat_len: IntArray  # per category: entries used in its row of ``cat_top``
    cat_pos: IntArray  # per item: its place in its category's row, -1 if not there


# The helpers below take the arrays they use, never the state tuple: handing a tuple of fifteen arrays
# to a helper, even an inlined one, costs ~0.15 us a call in reference counting (a per-item helper
# taking it made exploration's scan of 183 young items cost 31 us instead of 0.3 us).


@njit(**INLINE)
def _better(key: FloatArray, a: int, b: int) -> bool:
    return key[a] > key[b] or (key[a] == key[b] and a < b)


@njit(**INLINE)
def _rank_up_in(key: FloatArray, top: IntArray, pos: IntArray, size: IntArray, slot: int, i: int) -> None:
    """Item ``i``'s key rose: move it up the best-first list ``top`` (its used length in ``size[slot]``,
    places in ``pos``), or into it, pushing out the last."""
    p = pos[i]
    if p < 0:
        n = size[slot]
        if n < len(top):
            size[slot] = n + 1
            p = n
        else:
            last = top[n - 1]
            if not _better(key, i, last):
                return
            pos[last] = -1
            p = n - 1
    # Binary search for i's new place among top[:p] (sorted best first), then shift the rest down.
    lo, hi = 0, p
    while lo < hi:
        mid = (lo + hi) >> 1
        if _better(key, i, top[mid]):
            hi = mid
        else:
            lo = mid + 1
    for r in range(p, lo, -1):
        moved = top[r - 1]
        top[r] = moved
        pos[moved] = r
    top[lo], pos[i] = i, lo


@njit(**JIT)
def _rank_up(st: PopularityState, i: int) -> None:
    """Item ``i``'s key rose: move it up the global ``top``, and up its category's."""
    _rank_up_in(st.key, st.top, st.top_pos, st.sizes, 0, i)
    c = st.category[i]
    if c >= 0:
        _rank_up_in(st.key, st.cat_top[c], st.cat_pos, st.cat_len, c, i)


@njit(**JIT)
def _set_category(st: PopularityState, i: int, c: int) -> None:
    """Item ``i`` belongs to category ``c`` from now on: out of its old category's list, into the new one's."""
    old = st.category[i]
    if old == c:
        return
    if old >= 0 and st.cat_pos[i] >= 0:
        row, n = st.cat_top[old], st.cat_len[old]
        for r in range(st.cat_pos[i], n - 1):
            row[r] = row[r + 1]
            st.cat_pos[row[r]] = r
        st.cat_len[old] = n - 1
        st.cat_pos[i] = -1
    st.category[i] = c


@njit(**JIT)
def pop_learn_one(st: PopularityState, i: int, w: float, t: float, c: int) -> None:
    """Add one event of weight ``w`` at ``t`` to item ``i`` (a late event is decayed to the item's time);
    ``c >= 0``: the event says the item is in category ``c``."""
    h = st.clock[1]
    if c >= 0:
        _set_category(st, i, c)
    if not st.seen[i]:
        st.seen[i] = True
        st.value[i], st.last[i], st.first[i], st.count[i] = w, t, t, 1
        _sweep_fresh(st.fresh, st.sizes, st.seen, st.first, st.count, st.clock, SWEEP_STEPS)
        st.fresh[st.sizes[1]] = i
        st.sizes[1] += 1
    else:
        if t >= st.last[i]:
            st.value[i] = st.value[i] * 2.0 ** (-(t - st.last[i]) / h) + w
            st.last[i] = t
        else:
            st.value[i] += w * 2.0 ** (-(st.last[i] - t) / h)
        st.first[i] = min(st.first[i], t)
        st.count[i] += 1
    st.key[i] = np.log2(st.value[i]) + st.last[i] / h
    _rank_up(st, i)
    if t > st.clock[0]:
        st.clock[0] = t
    _sweep_fresh(st.fresh, st.sizes, st.seen, st.first, st.count, st.clock, SWEEP_STEPS)


@njit(**INLINE)
def _sweep_fresh(fresh: IntArray, sizes: IntArray, seen: np.ndarray, first: FloatArray, count: IntArray,
                 clock: FloatArray, steps: int) -> None:
    """Check the next ``steps`` items of a sweep over the exploration pool ``fresh[:sizes[1]]`` and drop
    those no longer new (the last entry takes their place). Called twice per event learned, once before
    a new item joins, the pool is swept faster than it grows: it holds the new items and at most about
    as many that stopped being new since the sweep last passed, at a constant cost per event."""
    since = clock[0] - clock[2]
    for _ in range(steps):
        n = sizes[1]
        if n == 0:
            return
        r = sizes[2] if sizes[2] < n else 0
        if pop_is_new(seen, first, count, fresh[r], since, clock[3]):
            sizes[2] = r + 1
        else:
            fresh[r] = fresh[n - 1]
            sizes[1] = n - 1
            sizes[2] = r


@njit(**JIT)
def pop_learn_many(st: PopularityState, items: IntArray, weights: FloatArray, ts: FloatArray,
                   categories: IntArray) -> None:
    for e in range(len(items)):
        pop_learn_one(st, items[e], weights[e], ts[e], categories[e])


@njit(**INLINE)
def pop_top(top: IntArray, sizes: IntArray, key: FloatArray, seen: np.ndarray, n_items: int, k: int,
            excluded: np.ndarray, buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` best seen items not ``excluded`` by rank key into ``out_*``, best first; returns the count.

    ``out_s`` receives the rank keys; :func:`pop_value_now` turns them into values.
    """
    c = 0
    for r in range(sizes[0]):
        i = top[r]
        if not excluded[i]:
            if c == k:
                return c
            out_s[c], out_i[c] = key[i], i
            c += 1
    if sizes[0] < len(top) or c == k:
        return c  # ``top`` holds every seen item
    return select_dense(key, seen, excluded, n_items, k, buf_s, buf_i, out_s, out_i)


@njit(**INLINE)
def user_categories(category: IntArray, hist_item: np.ndarray, hist_len: IntArray, u: int, cats: IntArray) -> int:
    """The distinct categories of ``u``'s history (``hist_item[u, :hist_len[u]]``, oldest first), newest
    first, into ``cats`` (at most its length; ``-1`` after the last); returns how many."""
    for r in range(len(cats)):
        cats[r] = -1
    if u < 0 or u >= len(hist_len):
        return 0
    n_cats = 0
    for r in range(hist_len[u] - 1, -1, -1):
        c = category[hist_item[u, r]]
        if c < 0:
            continue
        known = False
        for q in range(n_cats):
            known = known or cats[q] == c
        if not known:
            cats[n_cats] = c
            n_cats += 1
            if n_cats == len(cats):
                break
    return n_cats


@njit(**INLINE)
def pop_category_top(category: IntArray, cat_top: IntArray, cat_len: IntArray, hist_item: np.ndarray,
                     hist_len: IntArray, u: int, k: int, excluded: np.ndarray, cats: IntArray, out_s: FloatArray,
                     out_i: IntArray) -> int:
    """The ``k`` best items of ``u``'s recent categories, best first; returns the count.

    ``u``'s history (``hist_item[u, :hist_len[u]]``, oldest first) gives up to :data:`USER_CATEGORIES`
    distinct categories, newest first, into ``cats`` (``-1`` after the last). An item at place ``p`` of
    the ``r``-th category's list scores ``CATEGORY_DECAY ** r / (p + 1)``: the newest aisle leads, the
    best of the others come in early. Excluded items are skipped.
    """
    n_cats = user_categories(category, hist_item, hist_len, u, cats)
    m = 0
    weight = 1.0
    for q in range(n_cats):
        row, n = cat_top[cats[q]], cat_len[cats[q]]
        place = 0
        for p in range(n):
            i = row[p]
            if excluded[i]:
                continue
            m = insert_best(out_s, out_i, m, k, weight / (place + 1.0), i)
            place += 1
            if place >= k:
                break
        weight *= CATEGORY_DECAY
    return m


@njit(**JIT)
def pop_value_now(st: PopularityState, i: int) -> float:
    return st.value[i] * 2.0 ** (-(st.clock[0] - st.last[i]) / st.clock[1])


@njit(**INLINE)
def pop_is_new(seen: np.ndarray, first: FloatArray, count: IntArray, i: int, since: float, max_events: float) -> bool:
    """First seen at or after ``since`` (now minus the maximum age), with at most ``max_events`` events:
    an exploration candidate."""
    return seen[i] and first[i] >= since and count[i] <= max_events


class DecayedPopularity(TracksTouched):
    """Exponentially time-decayed popularity per item.

    Parameters
    ----------
    half_life_s
        Seconds after which an event's contribution counts half. Three days by default: long enough to
        smooth daily cycles, short enough to follow a trend within a week.
    new_for_s, new_events
        An item is new (an exploration candidate, kept in the pool the fusion draws from) this long
        after its first event and while it has at most this many events; see :meth:`keep_new`.

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
    >>> pop.learn_many(np.zeros(2), np.array([2, 7]), np.ones(2), np.array([11.0, 12.0]), categories=np.array([0, 0]))
    >>> pop.category_top([2], k=3)[0].tolist()  # items 2 and 7 are in category 0, item 4 in none
    [2, 7]
    """

    name = "popular"

    def __init__(self, half_life_s: float = 86400.0 * 3, new_for_s: float = 86400.0, new_events: int = 50) -> None:
        self.half_life_s = half_life_s
        self._value = np.zeros(0, dtype=np.float64)
        self._last = np.zeros(0, dtype=np.float64)
        self._first = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._key = np.zeros(0, dtype=np.float64)
        self._clock = np.array([-np.inf, half_life_s, new_for_s, new_events], dtype=np.float64)
        self._top = np.zeros(TOP_SIZE, dtype=np.int64)
        self._top_pos = np.zeros(0, dtype=np.int64)
        self._fresh = np.zeros(0, dtype=np.int64)
        self._sizes = np.zeros(3, dtype=np.int64)
        self._category = np.zeros(0, dtype=np.int64)
        self._cat_top = np.zeros((0, TOP_PER_CATEGORY), dtype=np.int64)
        self._cat_len = np.zeros(0, dtype=np.int64)
        self._cat_pos = np.zeros(0, dtype=np.int64)
        self._rerank = False  # rows were restored: ``top`` is rebuilt before it is next read
        self._touched = TouchLog()

    def keep_new(self, new_for_s: float, new_events: int) -> None:
        """Keep items in the exploration pool (:attr:`PopularityState.fresh`) for ``new_for_s`` seconds
        after their first event and while they have at most ``new_events`` events."""
        self._clock[2], self._clock[3] = new_for_s, new_events

    @property
    def new_rule(self) -> tuple[float, int]:
        """``(new_for_s, new_events)`` of :meth:`keep_new`."""
        return float(self._clock[2]), int(self._clock[3])

    @property
    def now(self) -> float:
        """Latest event time seen (seconds); ``-inf`` before any event."""
        return float(self._clock[0])

    @property
    def state(self) -> PopularityState:
        """The arrays the compiled kernels work on (valid until the next growth)."""
        if self._rerank:
            self._rebuild_top()
        return PopularityState(self._value, self._last, self._first, self._count, self._seen, self._key, self._clock,
                               self._top, self._top_pos, self._fresh, self._sizes, self._category, self._cat_top,
                               self._cat_len, self._cat_pos)

    def _rebuild_top(self) -> None:
        items = np.flatnonzero(self._seen)
        ranked = items[np.lexsort((items, -self._key[items]))]
        best = ranked[:TOP_SIZE]
        self._top_pos[:] = -1
        self._top[: len(best)] = best
        self._top_pos[best] = np.arange(len(best))
        self._sizes[0] = len(best)
        # Each category's best, in the same order: a stable sort of the ranking by category.
        self._cat_pos[:] = -1
        self._cat_len[:] = 0
        cats = self._category[ranked]
        ranked, cats = ranked[cats >= 0], cats[cats >= 0]
        order = np.argsort(cats, kind="stable")
        ranked, cats = ranked[order], cats[order]
        starts = np.searchsorted(cats, cats, side="left")
        place = np.arange(len(cats)) - starts
        keep = place < TOP_PER_CATEGORY
        self._cat_top[cats[keep], place[keep]] = ranked[keep]
        self._cat_pos[ranked[keep]] = place[keep]
        np.add.at(self._cat_len, cats[keep], 1)
        self._rerank = False

    def reserve(self, n_items: int) -> None:
        """Make room for item indices below ``n_items``."""
        self._value = grow(self._value, n_items)
        self._last = grow(self._last, n_items)
        self._first = grow(self._first, n_items)
        self._count = grow(self._count, n_items)
        self._seen = grow(self._seen, n_items, False)
        self._key = grow(self._key, n_items, -np.inf)
        self._top_pos = grow(self._top_pos, n_items, -1)
        self._fresh = grow(self._fresh, n_items)
        self._category = grow(self._category, n_items, -1)
        self._cat_pos = grow(self._cat_pos, n_items, -1)

    def reserve_categories(self, n_categories: int) -> None:
        """Make room for category indices below ``n_categories``."""
        self._cat_top = grow(self._cat_top, n_categories, -1)
        self._cat_len = grow(self._cat_len, n_categories)

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray,
                   categories: IntArray | None = None) -> None:
        """Add each event's weight to its item, in order (one compiled step per event); ``categories``
        (index per event, -1 for none) files the items under their categories."""
        items = as_index(items)
        if len(items) == 0:
            return
        cats = np.full(len(items), -1, dtype=np.int64) if categories is None else as_index(categories)
        self.reserve(int(items.max()) + 1)
        self.reserve_categories(int(cats.max()) + 1)
        pop_learn_many(self.state, items, np.asarray(weights, dtype=np.float64).reshape(-1),
                       np.asarray(ts, dtype=np.float64).reshape(-1), cats)
        self._touched.add(items=items)

    def catalogue(self, item: int, category: int, arrived: float | None) -> None:
        """What the catalogue (the items topic) says of ``item`` before or beside its events: its
        ``category`` (index, -1: not said) and, when it is new, the time it ``arrived`` (seconds).

        A new item nothing was learned of yet enters the exploration pool as of ``arrived``, with the
        credit of one event (exploration stops showing an item that earns no event in
        ``SHOWS_PER_EVENT`` showings), and the global and category lists where they have room (an item
        of a new category is that category's list); its value stays 0, so any learned item ranks above
        it. Idempotent: every worker reads the whole items topic at each start-up, and an item seen
        before keeps what its events taught (its category alone is updated)."""
        self.reserve(item + 1)
        if category >= 0:
            self.reserve_categories(category + 1)
            _set_category(self.state, item, category)
        if arrived is None or self._seen[item]:
            if category >= 0 and self._seen[item]:
                _rank_up(self.state, item)  # into its (new) category's list where it ranks
            return
        self._seen[item] = True
        self._value[item], self._last[item], self._first[item], self._count[item] = 0.0, arrived, arrived, 1
        self._key[item] = -np.inf
        self._fresh[self._sizes[1]] = item
        self._sizes[1] += 1
        _rank_up(self.state, item)

    def category_of(self, item: int) -> int:
        """The category index of ``item``, -1 if none is known."""
        return int(self._category[item]) if 0 <= item < len(self._category) else -1

    def category_top(self, history: list[int], k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """The ``k`` best items of the categories of ``history`` (item indices, oldest first), as
        :func:`pop_category_top` ranks them for a user with that history."""
        n = len(self._seen)
        k, excluded, _, _, out_s, out_i = selection_buffers(n, k, exclude)
        hist = np.array([history], dtype=np.int64).reshape(1, -1)
        cats = np.empty(USER_CATEGORIES, dtype=np.int64)
        st = self.state
        m = pop_category_top(st.category, st.cat_top, st.cat_len, hist, np.array([hist.shape[1]]), 0, k, excluded, cats,
                             out_s, out_i)
        return out_i[:m].copy(), out_s[:m].copy()

    def _values_now(self, items: IntArray) -> FloatArray:
        return self._value[items] * np.exp2(-(self.now - self._last[items]) / self.half_life_s)

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Decayed popularity of ``items`` at :attr:`now` (the user is ignored); 0 for unseen items."""
        items = as_index(items)
        out = np.zeros(len(items), dtype=np.float64)
        ok = seen_mask(items, self._seen)
        out[ok] = self._values_now(items[ok])
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """The ``k`` most popular seen items at :attr:`now`, minus ``exclude`` (ties: lower index first)."""
        n = len(self._seen)
        k, excluded, buf_s, buf_i, out_s, out_i = selection_buffers(n, k, exclude)
        st = self.state
        m = pop_top(st.top, st.sizes, st.key, st.seen, n, k, excluded, buf_s, buf_i, out_s, out_i)
        return out_i[:m].copy(), self._values_now(out_i[:m])

    def new_items(self, now: float, max_age_s: float, max_events: int) -> IntArray:
        """Items first seen within ``max_age_s`` before ``now`` with at most ``max_events`` events.

        These are the exploration candidates: too young or too rarely seen for any learned source.
        """
        n = len(self._seen)
        mask = self._seen & (self._first[:n] >= now - max_age_s) & (self._count[:n] <= max_events)
        return np.flatnonzero(mask).astype(np.int64)

    def user_state(self, user: int) -> bytes | None:
        """Always ``None``: popularity keeps no per-user state."""
        return None

    def set_user_state(self, user: int, data: bytes) -> None:
        """No-op: popularity keeps no per-user state."""

    def item_state(self, item: int) -> bytes | None:
        """One :data:`ITEM_STATE_DTYPE` record (value as of ``last_ts``); ``None`` if never seen."""
        if not (0 <= item < len(self._seen) and self._seen[item]):
            return None
        rec = np.array([(self._value[item], self._last[item], self._first[item], self._count[item],
                         self._category[item])], dtype=ITEM_STATE_DTYPE)
        return rec.tobytes()

    def set_item_state(self, item: int, data: bytes) -> None:
        rec = _records([data])[0]
        self.reserve(item + 1)
        self.reserve_categories(int(rec["category"]) + 1)
        self._value[item], self._last[item] = rec["value"], rec["last_ts"]
        self._first[item], self._count[item] = rec["first_seen"], rec["n_events"]
        self._category[item] = rec["category"]
        if not self._seen[item]:
            self._fresh[self._sizes[1]] = item
            self._sizes[1] += 1
        self._seen[item] = True
        self._key[item] = np.log2(self._value[item]) + self._last[item] / self.half_life_s
        self._rerank = True
        # Scores decay to the newest event time; a restored model recovers it from its rows.
        self._clock[0] = max(self.now, float(rec["last_ts"]))

    def load_user_rows(self, users: IntArray, rows: list[bytes]) -> None:
        """No-op: popularity keeps no per-user state."""

    def load_item_rows(self, items: IntArray, rows: list[bytes]) -> None:
        """:meth:`set_item_state` for many items at once (a restart)."""
        if len(items) == 0:
            return
        rec = _records(rows)
        self.reserve(int(items.max()) + 1)
        self.reserve_categories(int(rec["category"].max()) + 1)
        self._category[items] = rec["category"]
        self._value[items], self._last[items] = rec["value"], rec["last_ts"]
        self._first[items], self._count[items] = rec["first_seen"], rec["n_events"]
        self._seen[items] = True
        with np.errstate(divide="ignore"):
            self._key[items] = np.log2(rec["value"]) + rec["last_ts"] / self.half_life_s
        self._rerank = True
        self._clock[0] = max(self.now, float(rec["last_ts"].max()))
        # The exploration pool again: the items new as of the restored clock (learning keeps it from here).
        pool = self.new_items(self.now, self._clock[2], int(self._clock[3]))
        self._fresh[: len(pool)] = pool
        self._sizes[1], self._sizes[2] = len(pool), 0



def _records(rows: list[bytes]) -> np.ndarray:
    """Item rows as :data:`ITEM_STATE_DTYPE` records; rows from before categories get category -1."""
    if all(len(r) == ITEM_STATE_DTYPE.itemsize for r in rows):
        return np.frombuffer(b"".join(rows), dtype=ITEM_STATE_DTYPE)
    rec = np.empty(len(rows), dtype=ITEM_STATE_DTYPE)
    for n, r in enumerate(rows):
        if len(r) == _OLD_ITEM_STATE_SIZE:
            r = r + np.int64(-1).astype("<i8").tobytes()
        rec[n] = np.frombuffer(r, dtype=ITEM_STATE_DTYPE)[0]
    return rec
