"""Item-to-item co-occurrence over each user's recent history (the ``item-to-item`` source).

On an event ``(u, i, w, t)`` every item ``j`` in ``u``'s recent history gets its pair count with ``i``
raised, in both rows ``C[i, j]`` and ``C[j, i]``. Work per event is bounded by ``history_size``.

Similarity is an asymmetric cosine: ``sim(h, j) = C[h, j] / (sqrt(n_h) * n_j ** CANDIDATE_DAMPING)``
where ``n_x`` is the summed event weight of item ``x``. Dividing by the totals stops best-sellers from
being everyone's neighbour.

Time decay (``half_life_s``) is applied lazily: a row stores raw counts and one multiplier ``mass``
valid at ``row_ts``, so decaying a whole row is one multiplication, not a pass over its entries.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import TouchLog, TracksTouched, as_index, grow, seen_mask, selection_buffers
from stream_rec.models._kernels import INLINE, JIT, select_sparse
from stream_rec.types import FloatArray, IntArray

#: Pairs seen within one session count this much more: they reflect one shopping intent.
SESSION_BOOST = 2.0
#: Weight of the r-th most recent history item when scoring (0.8 ** r): recent intent dominates
#: but the whole history still contributes.
RECENCY = 0.8
#: A candidate's score is divided by its total weight to this power (cosine would be 0.5): enough to
#: stop best-sellers being everyone's neighbour, not so much that rarities win. 0.3 beat 0.5 on
#: MovieLens-100K (HR@10 0.197 vs 0.191) and on the synthetic shop (0.338 vs 0.229); 0.15 and 0.7
#: were worse on at least one of them.
CANDIDATE_DAMPING = 0.3
#: The reference time of the scoring factors moves when their exponent passes this (2 ** 500 is far
#: from float64's limits).
_REBASE_ABOVE = 500.0
#: A row's multiplier below this is folded into its raw counts, long before float64 underflows.
_RENORMALISE_BELOW = 1e-100

#: :meth:`CoOccurrence.user_state` is an array of these records, oldest first.
HISTORY_DTYPE = np.dtype([("item", "<i8"), ("ts", "<f8"), ("weight", "<f8")])
#: :meth:`CoOccurrence.item_state` is a ``<f8`` header ``(total, row_ts)`` then these records.
NEIGHBOR_DTYPE = np.dtype([("item", "<i8"), ("count", "<f8")])
_HEADER = np.dtype("<f8")


class CoocState(NamedTuple):
    """Everything the compiled co-occurrence kernels read and write.

    Neighbour row ``i`` is ``nbr[i, :nlen[i]]`` with raw counts ``cnt[i, :nlen[i]]``; the true counts
    are the raw ones times ``mass[i]``, valid at ``row_ts[i]``.
    """

    hist_item: np.ndarray  # int32 (user capacity, history_size), oldest first
    hist_ts: FloatArray
    hist_w: np.ndarray  # float32
    hist_len: IntArray
    nbr: np.ndarray  # int32 (item capacity, max_neighbors + 1)
    cnt: FloatArray  # (item capacity, max_neighbors + 1)
    nlen: IntArray
    total: FloatArray
    mass: FloatArray
    row_ts: FloatArray
    seen: np.ndarray  # bool
    dampt: FloatArray  # per item, (total * mass) ** -CANDIDATE_DAMPING (0 for no weight) at the reference time
    params: FloatArray  # half_life_s (0 = none), session_gap_s, max_neighbors, reference time


# The per-pair helpers below take the arrays they use, never the state tuple: handing a tuple of
# thirteen arrays to a helper, even an inlined one, costs ~0.15 us a call in reference counting, and
# learning calls them a few dozen times an event.


@njit(**INLINE)
def _time_factor(params: FloatArray, ts: float) -> float:
    """``2 ** (CANDIDATE_DAMPING * (ts - ref) / half_life)`` (1 without a half-life).

    Scoring needs row ``h``'s counts (as of ``row_ts[h]``) and a candidate's damped total (as of
    ``row_ts[j]``) at one time: the factor ``2 ** (CANDIDATE_DAMPING * (ts_h - ts_j) / half_life)``
    splits into one factor per history row and one per candidate (``dampt``), so no power is taken
    per row entry. ``ref`` moves forward when the exponents grow large (:func:`_rebase`)."""
    hl = params[0]
    if hl <= 0.0:
        return 1.0
    return 2.0 ** (CANDIDATE_DAMPING * (ts - params[3]) / hl)


@njit(**INLINE)
def _refresh_damp(total: FloatArray, mass: FloatArray, row_ts: FloatArray, dampt: FloatArray, params: FloatArray,
                  i: int) -> None:
    """Recompute ``dampt[i]`` after row ``i``'s total changed (one power per change, not one per candidate
    per ranking).

    Decay alone leaves it as it is: the multiplier falls by ``2 ** (-d / half_life)`` as ``row_ts`` moves
    on by ``d``, so the damped total rises by ``2 ** (CANDIDATE_DAMPING * d / half_life)``, exactly what
    the time factor divides out. Learning decays the rows of every history item an event pairs with and
    changes only the event's item's total: one refresh per event instead of one per pair (2.4 instead of
    2.9 us per event learned on MovieLens-100K)."""
    n = total[i] * mass[i]
    dampt[i] = (n ** -CANDIDATE_DAMPING if n > 0.0 else 0.0) / _time_factor(params, row_ts[i])


@njit(**JIT)
def _rebase(st: CoocState, ref: float) -> None:
    """Move the reference time to ``ref``: every ``dampt`` is multiplied by the same time factor."""
    scale = _time_factor(st.params, ref)
    st.params[3] = ref
    for i in range(len(st.seen)):
        st.dampt[i] *= scale


@njit(**INLINE)
def _unit(params: FloatArray, row_ts: FloatArray, mass: FloatArray, cnt: FloatArray, nlen: IntArray,
          total: FloatArray, i: int, t: float) -> float:
    """Raw units of one weight unit added to row ``i`` at ``t``, after advancing the row's decay to ``t``
    (one multiplication of its multiplier, folded into the raw counts long before it could underflow)."""
    hl = params[0]
    if hl <= 0.0:
        return 1.0
    if t > row_ts[i]:
        mass[i] *= 2.0 ** (-(t - row_ts[i]) / hl)
        row_ts[i] = t
        if mass[i] < _RENORMALISE_BELOW:
            m = mass[i]
            for e in range(nlen[i]):
                cnt[i, e] *= m
            total[i] *= m
            mass[i] = 1.0
    # A late event (t < row_ts) is decayed to the row's time before it is added.
    return 2.0 ** (-(row_ts[i] - t) / hl) / mass[i]


@njit(**JIT)
def _prune(nbr: np.ndarray, cnt: FloatArray, nlen: IntArray, i: int, limit: int) -> None:
    """Keep the strongest 80 % of an overflowing row, in row order (ties at the cut: earlier entries),
    O(1) amortised per insertion."""
    n = nlen[i]
    keep = max(1, limit - limit // 5)
    cut = np.partition(cnt[i, :n], n - keep)[n - keep]  # the keep-th largest count
    above = 0
    for e in range(n):
        above += cnt[i, e] > cut
    ties = keep - above
    w = 0
    for e in range(n):
        c = cnt[i, e]
        if c > cut or (c == cut and ties > 0):
            if c == cut:
                ties -= 1
            nbr[i, w], cnt[i, w] = nbr[i, e], c
            w += 1
    nlen[i] = w


@njit(**INLINE)
def _place(nbr: np.ndarray, nlen: IntArray, i: int, j: int) -> int:
    """1 + the entry of ``j`` in row ``i``, or 0 if absent. ``j`` is in a row at most once, so a
    branch-free sum finds it in one vectorised pass (an early exit would mispredict once per pair)."""
    at = 0
    for e in range(nlen[i]):
        at += (nbr[i, e] == j) * (e + 1)
    return at


@njit(**INLINE)
def _add_pair(nbr: np.ndarray, cnt: FloatArray, nlen: IntArray, i: int, j: int, amount: float, limit: int) -> None:
    """``C[i, j] += amount`` (raw units of row ``i``), pruning the row when it overflows."""
    at = _place(nbr, nlen, i, j)
    if at > 0:
        cnt[i, at - 1] += amount
        return
    n = nlen[i]
    nbr[i, n], cnt[i, n] = j, amount
    nlen[i] = n + 1
    if n + 1 > limit:
        _prune(nbr, cnt, nlen, i, limit)


@njit(**JIT)
def _push_history(st: CoocState, u: int, i: int, w: float, t: float) -> None:
    """Append ``i`` as the newest entry, dropping an older copy of ``i`` and then the oldest."""
    n, size = st.hist_len[u], st.hist_item.shape[1]
    for e in range(n):
        if st.hist_item[u, e] == i:
            for f in range(e, n - 1):
                st.hist_item[u, f], st.hist_ts[u, f], st.hist_w[u, f] = (
                    st.hist_item[u, f + 1], st.hist_ts[u, f + 1], st.hist_w[u, f + 1])
            n -= 1
            break
    if n == size:
        for f in range(n - 1):
            st.hist_item[u, f], st.hist_ts[u, f], st.hist_w[u, f] = (
                st.hist_item[u, f + 1], st.hist_ts[u, f + 1], st.hist_w[u, f + 1])
        n -= 1
    st.hist_item[u, n], st.hist_ts[u, n], st.hist_w[u, n] = i, t, w
    st.hist_len[u] = n + 1


@njit(**INLINE)
def _learn_item(st: CoocState, i: int, w: float, t: float, log: IntArray, log_n: IntArray) -> float:
    """Add an event of weight ``w`` at ``t`` to item ``i``'s total; returns the raw units of one weight
    unit in row ``i`` at ``t`` (what its pairs are added in)."""
    params = st.params
    hl = params[0]
    if hl > 0.0 and abs(CANDIDATE_DAMPING * (t - params[3]) / hl) > _REBASE_ABOVE:
        _rebase(st, t)
    if not st.seen[i]:
        st.seen[i], st.mass[i], st.row_ts[i] = True, 1.0, t
    unit_i = _unit(params, st.row_ts, st.mass, st.cnt, st.nlen, st.total, i, t)
    st.total[i] += w * unit_i
    _refresh_damp(st.total, st.mass, st.row_ts, st.dampt, params, i)
    if log_n[0] < len(log):
        log[log_n[0]] = i
        log_n[0] += 1
    return unit_i


@njit(**INLINE)
def _learn_pair(st: CoocState, i: int, j: int, pair: float, unit_i: float, t: float, log: IntArray,
                log_n: IntArray) -> None:
    """``C[i, j]`` and ``C[j, i]`` rise by ``pair``, each in its own row's units (rows decay independently)."""
    params, nbr, cnt, nlen, limit = st.params, st.nbr, st.cnt, st.nlen, int(st.params[2])
    _add_pair(nbr, cnt, nlen, i, j, pair * unit_i, limit)
    _add_pair(nbr, cnt, nlen, j, i, pair * _unit(params, st.row_ts, st.mass, cnt, nlen, st.total, j, t), limit)
    if log_n[0] < len(log):
        log[log_n[0]] = j
        log_n[0] += 1


@njit(**JIT)
def cooc_learn_one(st: CoocState, u: int, i: int, w: float, t: float, log: IntArray, log_n: IntArray,
                   item_side: bool, pair_n: IntArray, pair_j: IntArray, pair_w: FloatArray, e: int) -> None:
    """Pair ``i`` with every item of ``u``'s history (both rows), then push ``i`` onto the history.

    Items whose rows changed are appended to ``log`` (while it has room) at ``log_n[0]``. Without
    ``item_side`` only the history learns (the items' half was learned elsewhere and applied here, see
    :func:`cooc_apply_remote`). With record arrays (``len(pair_n) > 0``) the pairs go to row ``e`` of
    them, for other workers: ``pair_j[e, :pair_n[e]]`` and their weights.
    """
    record = item_side and len(pair_n) > 0
    if item_side:
        unit_i = _learn_item(st, i, w, t, log, log_n)
        hist_item, hist_ts, hist_w = st.hist_item, st.hist_ts, st.hist_w
        gap, in_session, newer_t, n = st.params[1], True, t, 0
        for r in range(st.hist_len[u] - 1, -1, -1):
            # Walking newest to oldest, the first long silence ends the current session.
            j, tj, wj = hist_item[u, r], hist_ts[u, r], hist_w[u, r]
            in_session = in_session and newer_t - tj < gap
            newer_t = tj
            if j == i:
                continue
            pair = min(w, wj) * (SESSION_BOOST if in_session else 1.0)
            _learn_pair(st, i, j, pair, unit_i, t, log, log_n)
            if record:
                pair_j[e, n], pair_w[e, n] = j, pair
                n += 1
        if record:
            pair_n[e] = n
    _push_history(st, u, i, w, t)


@njit(**JIT)
def cooc_apply_remote(st: CoocState, i: int, w: float, t: float, js: IntArray, ws: FloatArray, log: IntArray,
                      log_n: IntArray) -> None:
    """The item half of an event another worker learned (:func:`cooc_learn_one`'s record): ``i``'s total
    and its pairs with the items ``js`` of that user's history, weighted ``ws``."""
    unit_i = _learn_item(st, i, w, t, log, log_n)
    for r in range(len(js)):
        j = js[r]
        if not st.seen[j]:
            st.seen[j], st.mass[j], st.row_ts[j] = True, 1.0, t
        _learn_pair(st, i, j, ws[r], unit_i, t, log, log_n)


@njit(**JIT)
def cooc_learn_many(st: CoocState, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray,
                    log: IntArray, log_n: IntArray) -> None:
    no_n, no_j, no_w = np.empty(0, np.int64), np.empty((0, 1), np.int64), np.empty((0, 1))
    for e in range(len(users)):
        cooc_learn_one(st, users[e], items[e], weights[e], ts[e], log, log_n, True, no_n, no_j, no_w, e)


@njit(**INLINE)
def _inv_norm(total: FloatArray, mass: FloatArray, x: int) -> float:
    n = total[x] * mass[x]
    return 1.0 / np.sqrt(n) if n > 0.0 else 0.0


@njit(**JIT)
def _history_rows(st: CoocState, u: int) -> tuple[IntArray, FloatArray]:
    """``u``'s history items, newest first, and the factor each one's row is read with: the recency
    weight ``0.8 ** rank`` times the row's multiplier, norm and time factor. Empty for an unknown user.

    :func:`cooc_candidates`, on every ranking's hot path, walks the history inline instead: these two
    small arrays cost it ~10 %."""
    n = st.hist_len[u] if 0 <= u < len(st.hist_len) else 0
    hs, cs = np.empty(n, np.int64), np.empty(n)
    coef = 1.0
    for r in range(n):
        h = hs[r] = st.hist_item[u, n - 1 - r]
        cs[r] = coef * st.mass[h] * _inv_norm(st.total, st.mass, h) * _time_factor(st.params, st.row_ts[h])
        coef *= RECENCY
    return hs, cs


@njit(**JIT)
def cooc_anchors(st: CoocState, u: int, items: IntArray, n: int, slot: IntArray, out: IntArray) -> None:
    """For each of ``items[:n]``, the item of ``u``'s history that contributes most to its score (the
    list's "with" item) into ``out[:n]``; -1 where none does. Ties go to the more recent history item.

    One pass over each history row, whatever ``n``: ``slot`` (one entry per item, all zero between
    calls) marks the wanted items. The terms are those :func:`cooc_candidates` sums (a helper taking
    the state tuple would slow these loops several times over: only scalars go in).
    """
    best = np.zeros(n)
    for c in range(n):
        out[c] = -1
        slot[items[c]] = c + 1
    nbr, cnt, nlen = st.nbr, st.cnt, st.nlen
    hs, cs = _history_rows(st, u)
    for r in range(len(hs)):
        h, c = hs[r], cs[r]
        for e in range(nlen[h]):
            j = nbr[h, e]
            p = slot[j] - 1
            if p >= 0:
                weight = cnt[h, e] * c  # the candidate's own factor is common to every h: left out
                if weight > best[p]:
                    best[p], out[p] = weight, h
    for c in range(n):
        slot[items[c]] = 0


@njit(**INLINE)
def cooc_candidates(hist_item: np.ndarray, hist_len: IntArray, nbr: np.ndarray, cnt: FloatArray, nlen: IntArray,
                    mass: FloatArray, total: FloatArray, row_ts: FloatArray, dampt: FloatArray, params: FloatArray,
                    u: int, acc: FloatArray, mark: np.ndarray, cand: IntArray) -> int:
    """Score every neighbour of ``u``'s history into ``acc`` and list it in ``cand``; returns the count.

    ``score(j) = sum_h 0.8 ** rank(h) * sim(h, j)``, history newest first, with
    ``sim`` of the module docstring; with a half-life, each row and each candidate is brought to one
    time (:func:`_time_factor`).
    ``mark[j]`` is set for every listed ``j``: the caller clears it and ``acc`` (:func:`cooc_release`).
    ``cand`` needs room for one more entry than there are items.
    """
    if u < 0 or u >= len(hist_len):
        return 0
    n_cand = 0
    coef = 1.0
    for r in range(hist_len[u] - 1, -1, -1):
        h = hist_item[u, r]
        c = coef * mass[h] * _inv_norm(total, mass, h) * _time_factor(params, row_ts[h])
        coef *= RECENCY
        for e in range(nlen[h]):
            j = nbr[h, e]
            weight = cnt[h, e] * c
            # Branch-free: ``acc`` is all zeros between calls (see cooc_release), and ``j`` is
            # listed for real only the first time (the slot is overwritten otherwise).
            acc[j] += weight
            cand[n_cand] = j
            n_cand += 1 - mark[j]
            mark[j] = True
    for c in range(n_cand):
        j = cand[c]
        acc[j] *= dampt[j]
    return n_cand


@njit(**INLINE)
def cooc_release(mark: np.ndarray, acc: FloatArray, cand: IntArray, n_cand: int) -> None:
    """Clear the marks and scores :func:`cooc_candidates` left (call after the scores were read)."""
    for c in range(n_cand):
        mark[cand[c]] = False
        acc[cand[c]] = 0.0


@njit(**INLINE)
def cooc_recent(hist_item: np.ndarray, hist_ts: FloatArray, hist_len: IntArray, u: int, k: int, excluded: np.ndarray,
                out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` most recent items of ``u``'s history that are not ``excluded``, newest first (scores:
    their time). People come back to what they just looked at: the funnel view -> cart -> purchase
    runs over the same item."""
    m = 0
    if 0 <= u < len(hist_len):
        for r in range(hist_len[u] - 1, -1, -1):
            if m == k:
                break
            i = hist_item[u, r]
            if not excluded[i]:
                out_s[m], out_i[m] = hist_ts[u, r], i
                m += 1
    return m


@njit(**JIT)
def cooc_top(st: CoocState, u: int, k: int, excluded: np.ndarray, acc: FloatArray, mark: np.ndarray,
             cand: IntArray, buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` best neighbours of ``u``'s history that are seen and not ``excluded``, best first."""
    n_cand = cooc_candidates(st.hist_item, st.hist_len, st.nbr, st.cnt, st.nlen, st.mass, st.total, st.row_ts,
                             st.dampt, st.params, u, acc, mark, cand)
    m = select_sparse(acc, cand, n_cand, st.seen, excluded, k, buf_s, buf_i, out_s, out_i)
    cooc_release(mark, acc, cand, n_cand)
    return m


class CoOccurrence(TracksTouched):
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
        history_size: int = 10,
        max_neighbors: int = 200,
        half_life_s: float | None = None,
        session_gap_s: float = 1800.0,
    ) -> None:
        self.history_size = history_size
        self.max_neighbors = max_neighbors
        self.half_life_s = half_life_s
        self.session_gap_s = session_gap_s

        # Per-user rows dominate memory at a million users: item indices and weights in 32 bits.
        self._hist_item = np.zeros((0, history_size), dtype=np.int32)
        self._hist_ts = np.zeros((0, history_size), dtype=np.float64)
        self._hist_w = np.zeros((0, history_size), dtype=np.float32)
        self._hist_len = np.zeros(0, dtype=np.int64)
        self._nbr = np.zeros((0, max_neighbors + 1), dtype=np.int32)
        self._cnt = np.zeros((0, max_neighbors + 1), dtype=np.float64)
        self._nlen = np.zeros(0, dtype=np.int64)
        self._total = np.zeros(0, dtype=np.float64)
        self._mass = np.zeros(0, dtype=np.float64)
        self._row_ts = np.zeros(0, dtype=np.float64)
        self._seen = np.zeros(0, dtype=bool)
        self._dampt = np.zeros(0, dtype=np.float64)
        self._params = np.array([half_life_s or 0.0, session_gap_s, max_neighbors, 0.0], dtype=np.float64)
        self._scratch = (np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
        self._touched = TouchLog()

    @property
    def state(self) -> CoocState:
        """The arrays the compiled kernels work on (valid until the next growth)."""
        return CoocState(self._hist_item, self._hist_ts, self._hist_w, self._hist_len, self._nbr, self._cnt,
                         self._nlen, self._total, self._mass, self._row_ts, self._seen, self._dampt, self._params)

    # ------------------------------------------------------------------ learning

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Learn from a micro-batch, one compiled step per event in order."""
        users, items = as_index(users), as_index(items)
        if len(users) == 0:
            return
        self.reserve(int(users.max()) + 1, int(items.max()) + 1)
        log = np.empty(len(items) * (1 + self.history_size), dtype=np.int64)
        log_n = np.zeros(1, dtype=np.int64)
        cooc_learn_many(self.state, users, items, np.asarray(weights, dtype=np.float64).reshape(-1),
                        np.asarray(ts, dtype=np.float64).reshape(-1), log, log_n)
        self._touched.add(users=users, items=log[: log_n[0]])

    def reserve(self, n_users: int, n_items: int) -> None:
        """Make room for user indices below ``n_users`` and item indices below ``n_items``."""
        self._hist_item = grow(self._hist_item, n_users, -1)
        self._hist_ts = grow(self._hist_ts, n_users)
        self._hist_w = grow(self._hist_w, n_users)
        self._hist_len = grow(self._hist_len, n_users)
        self._nbr = grow(self._nbr, n_items)
        self._cnt = grow(self._cnt, n_items)
        self._nlen = grow(self._nlen, n_items)
        self._total = grow(self._total, n_items)
        self._mass = grow(self._mass, n_items, 1.0)
        self._row_ts = grow(self._row_ts, n_items)
        self._seen = grow(self._seen, n_items, False)
        self._dampt = grow(self._dampt, n_items)

    # ------------------------------------------------------------------ serving

    def _scratch_for(self, n_items: int) -> tuple[FloatArray, np.ndarray, IntArray]:
        if len(self._scratch[0]) < n_items:
            self._scratch = (np.zeros(n_items), np.zeros(n_items, dtype=bool), np.zeros(n_items + 1, dtype=np.int64))
        return self._scratch

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Sum over the user's history ``h`` (newest first, weight ``0.8 ** rank``) of ``sim(h, item)``."""
        items = as_index(items)
        out = np.zeros(len(items), dtype=np.float64)
        acc, mark, cand = self._scratch_for(len(self._seen))
        st = self.state
        n_cand = cooc_candidates(st.hist_item, st.hist_len, st.nbr, st.cnt, st.nlen, st.mass, st.total, st.row_ts,
                                 st.dampt, st.params, user, acc, mark, cand)
        ok = seen_mask(items, self._seen)
        ok[ok] = mark[items[ok]]
        out[ok] = acc[items[ok]]
        cooc_release(mark, acc, cand, n_cand)
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """Top-``k`` neighbours of the user's history; empty for a user without history."""
        n = len(self._seen)
        k, excluded, buf_s, buf_i, out_s, out_i = selection_buffers(n, k, exclude)
        acc, mark, cand = self._scratch_for(n)
        m = cooc_top(self.state, user, k, excluded, acc, mark, cand, buf_s, buf_i, out_s, out_i)
        return out_i[:m].copy(), out_s[:m].copy()

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
        self.reserve(user + 1, int(rec["item"].max(initial=-1)) + 1)
        n = len(rec)
        self._hist_item[user, :n], self._hist_ts[user, :n] = rec["item"], rec["ts"]
        self._hist_w[user, :n] = rec["weight"]
        self._hist_len[user] = n

    def item_state(self, item: int) -> bytes | None:
        """Header ``<f8 (total, row_ts)`` then :data:`NEIGHBOR_DTYPE` records, all as of ``row_ts``."""
        if not (0 <= item < len(self._seen) and self._seen[item]):
            return None
        m = float(self._mass[item])
        n = int(self._nlen[item])
        rec = np.empty(n, dtype=NEIGHBOR_DTYPE)
        rec["item"], rec["count"] = self._nbr[item, :n], self._cnt[item, :n] * m
        header = np.array([self._total[item] * m, self._row_ts[item]], dtype=_HEADER)
        return header.tobytes() + rec.tobytes()

    def set_item_state(self, item: int, data: bytes) -> None:
        header = np.frombuffer(data[: 2 * _HEADER.itemsize], dtype=_HEADER)
        rec = np.frombuffer(data[2 * _HEADER.itemsize :], dtype=NEIGHBOR_DTYPE)
        if len(rec) > self.max_neighbors:  # written with a larger max_neighbors: keep the strongest
            rec = rec[np.argsort(-rec["count"], kind="stable")[: self.max_neighbors]]
        self.reserve(0, max(item, int(rec["item"].max(initial=-1))) + 1)
        n = len(rec)
        self._total[item], self._row_ts[item] = header
        self._mass[item] = 1.0
        if self.half_life_s and self._params[3] == 0.0:
            self._params[3] = self._row_ts[item]  # a restored model's reference time
        _refresh_damp(self._total, self._mass, self._row_ts, self._dampt, self._params, item)
        self._seen[item] = True
        self._nbr[item, :n], self._cnt[item, :n] = rec["item"], rec["count"]
        self._nlen[item] = n

    def load_user_rows(self, users: IntArray, rows: list[bytes]) -> None:
        """:meth:`set_user_state` for many users at once (a restart)."""
        if len(users) == 0:
            return
        rec = np.frombuffer(b"".join(rows), dtype=HISTORY_DTYPE)
        lengths = np.array([len(r) for r in rows]) // HISTORY_DTYPE.itemsize
        kept = np.minimum(lengths, self.history_size)
        # Entry e of a user's record: its place counted from the newest; only the newest H stay.
        starts = np.cumsum(lengths) - lengths
        place = np.arange(len(rec)) - np.repeat(starts, lengths) - np.repeat(lengths - kept, lengths)
        keep = place >= 0
        row = np.repeat(users, lengths)[keep]
        self.reserve(int(users.max()) + 1, int(rec["item"].max(initial=-1)) + 1)
        self._hist_item[row, place[keep]] = rec["item"][keep]
        self._hist_ts[row, place[keep]] = rec["ts"][keep]
        self._hist_w[row, place[keep]] = rec["weight"][keep]
        self._hist_len[users] = kept

    def set_histories(self, users: IntArray, items: IntArray, ts: FloatArray, weights: FloatArray,
                      lengths: IntArray) -> None:
        """Put users' histories in place (a user's state moved here): row ``r`` of ``items``/``ts``/``weights``
        holds user ``users[r]``'s recent items, oldest first, ``lengths[r]`` of them (at most the history size)."""
        if len(users) == 0:
            return
        self.reserve(int(users.max()) + 1, int(items.max(initial=-1)) + 1)
        size = self.history_size
        self._hist_item[users] = items[:, :size]
        self._hist_ts[users] = ts[:, :size]
        self._hist_w[users] = weights[:, :size]
        self._hist_len[users] = np.minimum(lengths, size)

    def load_item_rows(self, items: IntArray, rows: list[bytes]) -> None:
        """:meth:`set_item_state` for many items at once (a restart): one growth, then the rows."""
        if len(items) == 0:
            return
        head = 2 * _HEADER.itemsize
        neighbor_max = max((int(np.frombuffer(r[head:], dtype=NEIGHBOR_DTYPE)["item"].max(initial=-1)) for r in rows),
                           default=-1)
        self.reserve(0, max(int(items.max()), neighbor_max) + 1)
        for item, data in zip(items.tolist(), rows):
            self.set_item_state(item, data)

