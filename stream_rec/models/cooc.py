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
        self._total = np.zeros(0, dtype=np.float64)
        self._mass = np.zeros(0, dtype=np.float64)
        self._row_ts = np.zeros(0, dtype=np.float64)
        self._seen = np.zeros(0, dtype=bool)
        self._touched = TouchLog()

    # ------------------------------------------------------------------ learning

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Learn from a micro-batch; events are applied one by one since each extends a history."""
        users, items = as_index(users), as_index(items)
        if len(users) == 0:
            return
        self._reserve(int(users.max()) + 1, int(items.max()) + 1)
        touched: list[int] = []
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        for u, i, w, t in zip(users.tolist(), items.tolist(), weights.tolist(), ts.tolist()):
            touched.extend(self._learn_one(u, i, w, t))
        self._touched.add(users=users, items=np.array(touched, dtype=np.int64))

    def _learn_one(self, u: int, i: int, w: float, t: float) -> list[int]:
        """Apply one event; return the items whose rows changed."""
        n = int(self._hist_len[u])
        hist = self._hist_item[u, :n].tolist()
        hist_ts = self._hist_ts[u, :n].tolist()
        hist_w = self._hist_w[u, :n].tolist()

        if not self._seen[i]:
            self._seen[i], self._mass[i], self._row_ts[i] = True, 1.0, t
        unit_i = self._unit(i, t)
        self._total[i] += w * unit_i

        touched = [i]
        in_session, newer_t = True, t
        for j, tj, wj in zip(reversed(hist), reversed(hist_ts), reversed(hist_w)):
            # Walking newest to oldest, the first long silence ends the current session.
            in_session = in_session and newer_t - tj < self.session_gap_s
            newer_t = tj
            if j == i:
                continue
            pair = min(w, wj) * (SESSION_BOOST if in_session else 1.0)
            self._add(i, j, pair * unit_i)
            self._add(j, i, pair * self._unit(j, t))
            touched.append(j)
        self._push_history(u, i, w, t, hist, hist_ts, hist_w)
        return touched

    def _push_history(
        self, u: int, i: int, w: float, t: float, hist: list[int], hist_ts: list[float], hist_w: list[float]
    ) -> None:
        """Append ``i`` as the newest entry, dropping an older copy of ``i`` and then the oldest."""
        if i in hist:
            k = hist.index(i)
            del hist[k], hist_ts[k], hist_w[k]
        hist.append(i), hist_ts.append(t), hist_w.append(w)
        hist, hist_ts, hist_w = hist[-self.history_size :], hist_ts[-self.history_size :], hist_w[-self.history_size :]
        n = len(hist)
        self._hist_item[u, :n], self._hist_ts[u, :n], self._hist_w[u, :n] = hist, hist_ts, hist_w
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

    def _add(self, i: int, j: int, amount: float) -> None:
        row = self._rows.setdefault(i, {})
        row[j] = row.get(j, 0.0) + amount
        if len(row) > self.max_neighbors:
            keep = max(1, self.max_neighbors - self.max_neighbors // 5)
            self._rows[i] = dict(heapq.nlargest(keep, row.items(), key=itemgetter(1)))

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

    def _similarity(self, h: int, neighbors: IntArray, raw: FloatArray) -> FloatArray:
        """``C[h, j] / sqrt(n_h * n_j)`` with every quantity taken at one common time.

        Row ``h`` is stored as of ``row_ts[h]`` and item ``j``'s total as of ``row_ts[j]``; bringing
        both to a common time multiplies the ratio by ``2 ** ((ts_h - ts_j) / (2 * half_life))``.
        """
        m_h = self._mass[h]
        n_h = self._total[h] * m_h
        n_j = self._total[neighbors] * self._mass[neighbors]
        denom = np.sqrt(n_h * n_j)
        sim = np.divide(raw * m_h, denom, out=np.zeros_like(raw), where=denom > 0)
        if self.half_life_s is not None:
            shift = (self._row_ts[h] - self._row_ts[neighbors]) / (2.0 * self.half_life_s)
            sim *= np.exp2(np.clip(shift, -1000.0, 1000.0))
        return sim

    def _candidate_scores(self, user: int) -> tuple[IntArray, FloatArray]:
        """Sorted neighbour items of the user's history and their recency-weighted similarity sums."""
        hist = self._history(user).tolist()
        parts_items, parts_scores = [], []
        for rank, h in enumerate(reversed(hist)):
            row = self._rows.get(h)
            if not row:
                continue
            neighbors = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            raw = np.fromiter(row.values(), dtype=np.float64, count=len(row))
            parts_items.append(neighbors)
            parts_scores.append(RECENCY**rank * self._similarity(h, neighbors, raw))
        if not parts_items:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        cand, inv = np.unique(np.concatenate(parts_items), return_inverse=True)
        scores = np.bincount(inv, weights=np.concatenate(parts_scores), minlength=len(cand))
        seen = cand < len(self._seen)
        seen[seen] = self._seen[cand[seen]]
        return cand[seen], scores[seen]

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Sum over the user's history ``h`` (newest first, weight ``0.8 ** rank``) of ``sim(h, item)``."""
        items = as_index(items)
        cand, scores = self._candidate_scores(user)
        out = np.zeros(len(items), dtype=np.float64)
        if len(cand):
            pos = np.minimum(np.searchsorted(cand, items), len(cand) - 1)
            hit = cand[pos] == items
            out[hit] = scores[pos[hit]]
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """Top-``k`` neighbours of the user's history; empty for a user without history."""
        cand, scores = self._candidate_scores(user)
        if exclude is not None and len(exclude):
            keep = ~np.isin(cand, as_index(exclude))
            cand, scores = cand[keep], scores[keep]
        return top_k(cand, scores, k)

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
        self._reserve(user + 1, 0)
        n = len(rec)
        self._hist_item[user, :n], self._hist_ts[user, :n] = rec["item"], rec["ts"]
        self._hist_w[user, :n] = rec["weight"]
        self._hist_len[user] = n

    def item_state(self, item: int) -> bytes | None:
        """Header ``<f8 (total, row_ts)`` then :data:`NEIGHBOR_DTYPE` records, all as of ``row_ts``."""
        if not (0 <= item < len(self._seen) and self._seen[item]):
            return None
        m = float(self._mass[item])
        row = self._rows.get(item, {})
        rec = np.empty(len(row), dtype=NEIGHBOR_DTYPE)
        rec["item"] = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
        rec["count"] = np.fromiter(row.values(), dtype=np.float64, count=len(row)) * m
        header = np.array([self._total[item] * m, self._row_ts[item]], dtype=_HEADER)
        return header.tobytes() + rec.tobytes()

    def set_item_state(self, item: int, data: bytes) -> None:
        header = np.frombuffer(data[: 2 * _HEADER.itemsize], dtype=_HEADER)
        rec = np.frombuffer(data[2 * _HEADER.itemsize :], dtype=NEIGHBOR_DTYPE)
        self._reserve(0, item + 1)
        self._total[item], self._row_ts[item] = header
        self._mass[item] = 1.0
        self._seen[item] = True
        self._rows[item] = dict(zip(rec["item"].tolist(), rec["count"].tolist()))

    def pop_touched(self) -> tuple[IntArray, IntArray]:
        return self._touched.pop()
