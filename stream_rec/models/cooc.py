"""Item-to-item co-occurrence over each user's recent history (the ``item-to-item`` source).

On an event ``(u, i, w, t)`` every item ``j`` in ``u``'s recent history gets its pair count with ``i``
raised, in both rows ``C[i, j]`` and ``C[j, i]``. Work per event is bounded by ``history_size``.

Similarity is cosine-like: ``sim(h, j) = C[h, j] / sqrt(n_h * n_j)`` where ``n_x`` is the summed
event weight of item ``x``. Dividing by the totals stops best-sellers from being everyone's neighbour.

Time decay (``half_life_s``) is applied lazily: a row stores raw counts and one multiplier ``mass``
valid at ``row_ts``, so decaying a whole row is one multiplication, not a pass over its entries.
"""

from __future__ import annotations

import heapq
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from stream_rec.models._arrays import TouchLog, as_index, grow, top_k
from stream_rec.types import FloatArray, IntArray

#: Pairs seen within one session count this much more: they reflect one shopping intent.
SESSION_BOOST = 2.0
#: Weight of the r-th most recent history item when scoring (0.8 ** r): recent intent dominates
#: but the whole history still contributes.
RECENCY = 0.8
#: A row's multiplier below this is folded into its raw counts, long before float64 underflows.
_RENORMALISE_BELOW = 1e-100

#: :meth:`CoOccurrence.user_state` is an array of these records, oldest first.
HISTORY_DTYPE = np.dtype([("item", "<i8"), ("ts", "<f8"), ("weight", "<f8")])
#: :meth:`CoOccurrence.item_state` is a ``<f8`` header ``(total, row_ts)`` then these records.
NEIGHBOR_DTYPE = np.dtype([("item", "<i8"), ("count", "<f8")])
_HEADER = np.dtype("<f8")

#: One user's history while a batch is learned: ``(items, ts, weights)`` lists, oldest first.
_History = tuple[list[int], list[float], list[float]]


class CoOccurrence:
    """Bounded item-to-item co-occurrence with optional time decay.

    Parameters
    ----------
    history_size
        Distinct recent items remembered per user (a re-visited item moves to the front).
    max_neighbors
        A neighbour row never holds more entries than this; when it overflows it is pruned to its
        strongest 80 %, so pruning costs O(1) amortised per insertion.
    half_life_s
        If set, counts and totals halve every ``half_life_s`` seconds; ``None`` keeps them forever.
    session_gap_s
        A silence at least this long between a user's events starts a new session.

    Examples
    --------
    >>> import numpy as np
    >>> cooc = CoOccurrence(history_size=5)
    >>> users = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    >>> items = np.array([10, 11, 10, 11, 10, 12, 13, 10])  # 11 is bought with 10 twice
    >>> cooc.learn_many(users, items, np.ones(8), np.arange(8.0))
    >>> ranked, scores = cooc.recommend(3, k=2)
    >>> ranked.tolist()
    [11, 12]
    """

    name = "cooc"

    def __init__(
        self,
        history_size: int = 20,
        max_neighbors: int = 200,
        half_life_s: float | None = None,
        session_gap_s: float = 1800.0,
    ) -> None:
        self.history_size = history_size
        self.max_neighbors = max_neighbors
        self.half_life_s = half_life_s
        self.session_gap_s = session_gap_s

        self._hist_item = np.zeros((0, history_size), dtype=np.int64)
        self._hist_ts = np.zeros((0, history_size), dtype=np.float64)
        self._hist_w = np.zeros((0, history_size), dtype=np.float64)
        self._hist_len = np.zeros(0, dtype=np.int64)
        # Neighbour rows are small dicts: a pair update is a hash lookup, and rows are bounded.
        self._rows: dict[int, dict[int, float]] = {}
        # The same rows as arrays for ranking, rebuilt lazily after a row changes.
        self._arrays: dict[int, tuple[IntArray, FloatArray]] = {}
        self._inv_norm: FloatArray | None = None
        self._total = np.zeros(0, dtype=np.float64)
        self._mass = np.zeros(0, dtype=np.float64)
        self._row_ts = np.zeros(0, dtype=np.float64)
        self._seen = np.zeros(0, dtype=bool)
        self._touched = TouchLog()

    # ------------------------------------------------------------------ learning

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Learn from a micro-batch; events are applied one by one since each extends a history.

        The batch's histories are read into Python lists once and written back once, so the
        per-event work is plain list and dict operations.
        """
        users, items = as_index(users), as_index(items)
        if len(users) == 0:
            return
        self._reserve(int(users.max()) + 1, int(items.max()) + 1)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        histories = {u: self._read_history(u) for u in np.unique(users).tolist()}
        touched: list[int] = []
        for u, i, w, t in zip(users.tolist(), items.tolist(), weights.tolist(), ts.tolist()):
            self._learn_one(histories[u], i, w, t, touched)
        for u, hist in histories.items():
            self._write_history(u, hist)
        changed = np.unique(np.array(touched, dtype=np.int64))
        for i in changed.tolist():
            self._arrays.pop(i, None)
        self._touched.add(users=users, items=changed)
        self._inv_norm = None

    def _learn_one(self, hist: _History, i: int, w: float, t: float, touched: list[int]) -> None:
        """Apply one event to ``hist`` (the user's history) and the pair counts; log changed rows."""
        hist_item, hist_ts, hist_w = hist
        if not self._seen[i]:
            self._seen[i], self._mass[i], self._row_ts[i] = True, 1.0, t
        decays = self.half_life_s is not None
        unit_i = self._unit(i, t) if decays else 1.0
        self._total[i] += w * unit_i

        touched.append(i)
        row_i = self._row(i)
        gap, limit = self.session_gap_s, self.max_neighbors
        in_session, newer_t = True, t
        for j, tj, wj in zip(reversed(hist_item), reversed(hist_ts), reversed(hist_w)):
            # Walking newest to oldest, the first long silence ends the current session.
            in_session = in_session and newer_t - tj < gap
            newer_t = tj
            if j == i:
                continue
            pair = min(w, wj) * (SESSION_BOOST if in_session else 1.0)
            # C[i, j] and C[j, i], each in its own row's units (rows decay independently).
            row_i[j] = row_i.get(j, 0.0) + pair * unit_i
            if len(row_i) > limit:
                row_i = self._prune(i)
            amount_j = pair * (self._unit(j, t) if decays else 1.0)  # may renormalise row j first
            row_j = self._row(j)
            row_j[i] = row_j.get(i, 0.0) + amount_j
            if len(row_j) > limit:
                self._prune(j)
            touched.append(j)
        _push_history(hist, i, w, t, self.history_size)

    def _row(self, i: int) -> dict[int, float]:
        row = self._rows.get(i)
        if row is None:
            row = self._rows[i] = {}
        return row

    def _prune(self, i: int) -> dict[int, float]:
        """Keep the strongest 80 % of an overflowing row (O(1) amortised per insertion)."""
        keep = max(1, self.max_neighbors - self.max_neighbors // 5)
        row = self._rows[i] = dict(heapq.nlargest(keep, self._rows[i].items(), key=itemgetter(1)))
        return row

    def _read_history(self, u: int) -> _History:
        n = int(self._hist_len[u])
        return self._hist_item[u, :n].tolist(), self._hist_ts[u, :n].tolist(), self._hist_w[u, :n].tolist()

    def _write_history(self, u: int, hist: _History) -> None:
        n = len(hist[0])
        self._hist_item[u, :n], self._hist_ts[u, :n], self._hist_w[u, :n] = hist
        self._hist_len[u] = n

    def _unit(self, i: int, t: float) -> float:
        """Raw units of one weight unit added to row ``i`` at time ``t`` (advances the row's decay)."""
        if self.half_life_s is None:
            return 1.0
        row_ts = float(self._row_ts[i])
        if t > row_ts:
            self._mass[i] *= 2.0 ** (-(t - row_ts) / self.half_life_s)
            self._row_ts[i] = row_ts = t
            if self._mass[i] < _RENORMALISE_BELOW:
                self._renormalise(i)
        # A late event (t < row_ts) is decayed to the row's time before it is added.
        return 2.0 ** (-(row_ts - t) / self.half_life_s) / float(self._mass[i])

    def _renormalise(self, i: int) -> None:
        m = float(self._mass[i])
        row = self._rows.get(i, {})
        for j in row:
            row[j] *= m
        self._total[i] *= m
        self._mass[i] = 1.0

    def _reserve(self, n_users: int, n_items: int) -> None:
        self._hist_item = grow(self._hist_item, n_users, -1)
        self._hist_ts = grow(self._hist_ts, n_users)
        self._hist_w = grow(self._hist_w, n_users)
        self._hist_len = grow(self._hist_len, n_users)
        self._total = grow(self._total, n_items)
        self._mass = grow(self._mass, n_items, 1.0)
        self._row_ts = grow(self._row_ts, n_items)
        self._seen = grow(self._seen, n_items, False)

    # ------------------------------------------------------------------ serving

    def _history(self, user: int) -> IntArray:
        if not 0 <= user < len(self._hist_len):
            return np.empty(0, np.int64)
        return self._hist_item[user, : self._hist_len[user]]

    def _row_arrays(self, i: int) -> tuple[IntArray, FloatArray]:
        """Row ``i`` as ``(neighbours, raw counts)`` arrays, in the row's order (cached until it changes)."""
        cached = self._arrays.get(i)
        if cached is None:
            row = self._rows.get(i, {})
            cached = self._arrays[i] = (
                np.fromiter(row.keys(), dtype=np.int64, count=len(row)),
                np.fromiter(row.values(), dtype=np.float64, count=len(row)),
            )
        return cached

    def _inverse_norms(self) -> FloatArray:
        """``1 / sqrt(n_x)`` for every item (0 where ``n_x`` is 0), ``n_x`` its summed weight as of
        ``row_ts[x]``; computed once per change of state and shared by every list until the next."""
        if self._inv_norm is None:
            n = self._total * self._mass
            self._inv_norm = np.divide(1.0, np.sqrt(n), out=np.zeros_like(n), where=n > 0)
        return self._inv_norm

    def _candidate_scores(self, user: int) -> tuple[npt.NDArray[np.bool_], FloatArray]:
        """Dense ``(proposed, score)`` over the catalogue: which seen items neighbour the user's
        history, and ``sum_h 0.8 ** rank(h) * sim(h, j)`` for each of them.

        ``sim(h, j) = C[h, j] / sqrt(n_h * n_j)`` with ``C[h, j]`` scaled by the row's ``mass``; the
        factors of ``h`` are folded into one coefficient per history item and ``1 / sqrt(n_j)`` is
        applied once per candidate, so the whole history is a handful of numpy calls. With a
        half-life, row ``h`` (as of ``row_ts[h]``) and item ``j``'s total (as of ``row_ts[j]``) are
        brought to one common time by the factor ``2 ** ((ts_h - ts_j) / (2 * half_life))``.
        """
        n_items = len(self._seen)
        proposed = np.zeros(n_items, dtype=bool)
        hist = self._history(user).tolist()
        parts = [(rank, h, self._row_arrays(h)) for rank, h in enumerate(reversed(hist))]
        parts = [p for p in parts if len(p[2][0])]
        if not parts:
            return proposed, np.zeros(n_items, dtype=np.float64)
        inv_norm = self._inverse_norms()
        lengths = [len(p[2][0]) for p in parts]
        h = np.array([p[1] for p in parts], dtype=np.int64)
        coef = np.array([RECENCY ** p[0] for p in parts]) * self._mass[h] * inv_norm[h]
        neighbors = np.concatenate([p[2][0] for p in parts])
        weights = np.concatenate([p[2][1] for p in parts]) * np.repeat(coef, lengths)
        if self.half_life_s is not None:
            shift = (np.repeat(self._row_ts[h], lengths) - self._row_ts[neighbors]) / (2.0 * self.half_life_s)
            weights *= np.exp2(np.clip(shift, -1000.0, 1000.0))
        scores = np.bincount(neighbors, weights=weights, minlength=n_items)
        scores *= inv_norm[: len(scores)]
        proposed[neighbors] = True
        return proposed & self._seen, scores

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Sum over the user's history ``h`` (newest first, weight ``0.8 ** rank``) of ``sim(h, item)``."""
        items = as_index(items)
        proposed, scores = self._candidate_scores(user)
        out = np.zeros(len(items), dtype=np.float64)
        ok = (items >= 0) & (items < len(proposed))
        ok[ok] = proposed[items[ok]]
        out[ok] = scores[items[ok]]
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """Top-``k`` neighbours of the user's history; empty for a user without history."""
        proposed, scores = self._candidate_scores(user)
        if exclude is not None and len(exclude):
            ex = as_index(exclude)
            proposed[ex[(ex >= 0) & (ex < len(proposed))]] = False
        cand = np.flatnonzero(proposed)
        return top_k(cand, scores[cand], k)

    # ------------------------------------------------------------------ state

    def user_state(self, user: int) -> bytes | None:
        """The history as :data:`HISTORY_DTYPE` records, oldest first; ``None`` if empty."""
        n = int(self._hist_len[user]) if 0 <= user < len(self._hist_len) else 0
        if n == 0:
            return None
        rec = np.empty(n, dtype=HISTORY_DTYPE)
        rec["item"], rec["ts"] = self._hist_item[user, :n], self._hist_ts[user, :n]
        rec["weight"] = self._hist_w[user, :n]
        return rec.tobytes()

    def set_user_state(self, user: int, data: bytes) -> None:
        rec = np.frombuffer(data, dtype=HISTORY_DTYPE)[-self.history_size :]
        self._reserve(user + 1, int(rec["item"].max(initial=-1)) + 1)
        n = len(rec)
        self._hist_item[user, :n], self._hist_ts[user, :n] = rec["item"], rec["ts"]
        self._hist_w[user, :n] = rec["weight"]
        self._hist_len[user] = n

    def item_state(self, item: int) -> bytes | None:
        """Header ``<f8 (total, row_ts)`` then :data:`NEIGHBOR_DTYPE` records, all as of ``row_ts``."""
        if not (0 <= item < len(self._seen) and self._seen[item]):
            return None
        m = float(self._mass[item])
        neighbors, raw = self._row_arrays(item)
        rec = np.empty(len(neighbors), dtype=NEIGHBOR_DTYPE)
        rec["item"], rec["count"] = neighbors, raw * m
        header = np.array([self._total[item] * m, self._row_ts[item]], dtype=_HEADER)
        return header.tobytes() + rec.tobytes()

    def set_item_state(self, item: int, data: bytes) -> None:
        header = np.frombuffer(data[: 2 * _HEADER.itemsize], dtype=_HEADER)
        rec = np.frombuffer(data[2 * _HEADER.itemsize :], dtype=NEIGHBOR_DTYPE)
        self._reserve(0, max(item, int(rec["item"].max(initial=-1))) + 1)
        self._total[item], self._row_ts[item] = header
        self._mass[item] = 1.0
        self._seen[item] = True
        self._rows[item] = dict(zip(rec["item"].tolist(), rec["count"].tolist()))
        self._arrays.pop(item, None)
        self._inv_norm = None

    def pop_touched(self) -> tuple[IntArray, IntArray]:
        return self._touched.pop()


def _push_history(hist: _History, i: int, w: float, t: float, size: int) -> None:
    """Append ``i`` as the newest entry, dropping an older copy of ``i`` and then the oldest."""
    items, times, weights = hist
    if i in items:
        k = items.index(i)
        del items[k], times[k], weights[k]
    items.append(i), times.append(t), weights.append(w)
    if len(items) > size:
        del items[:-size], times[:-size], weights[:-size]
