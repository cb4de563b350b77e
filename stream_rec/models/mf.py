"""Incremental matrix factorisation for implicit feedback (ISGD, Vinagre et al. 2014, with an
all-items negative term in the manner of eALS, He et al. 2016).

Every event ``(u, i, w)`` is one SGD pass over a tiny least-squares problem:

1. push ``p_u . q_i`` towards 1 with confidence ``w``;
2. push ``p_u . q_j`` towards 0 for every item ``j`` at once, with the small weight ``all_items``: the
   gradient of ``all_items * sum_j (p_u . q_j) ** 2`` is ``2 * all_items * G p_u`` with the Gram
   matrix ``G = sum_j q_j q_j^T``, kept current as item rows change, so the step costs
   ``n_factors ** 2`` whatever the catalogue size;
3. push ``p_u . q_j`` towards 0 for a few items ``j`` drawn uniformly from the catalogue, so that item
   rows too feel what users do not choose.

Step 2 is what makes implicit MF work online here: with sampled negatives alone, ISGD loses to plain
popularity in prequential recall (FACTS.md); measured on MovieLens-100K, HR@10 of this model alone went
from 0.075 (three popularity-sampled negatives) to 0.165.

The per-event step is a compiled function (:func:`mf_learn_one`) applied in stream order, so a batch
is *by construction* the same as one event at a time. Random numbers are a pure function of
``(seed, global event position, draw number)`` (a counter based hash), and a new row's initial value
a pure function of ``(seed, index)``, so the result does not depend on where batches are cut.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import TouchLog, TracksTouched, as_index, grow, seen_mask, selection_buffers
from stream_rec.models._kernels import INLINE, JIT, select_dense, stream_key, uniform
from stream_rec.models.mf_index import (ItemIndex, index_build, index_due, index_reassign, index_row_changed,
                                        index_sweep, index_top, new_index, reserve_index)
from stream_rec.types import FloatArray, Float32Array, IntArray

# Stream tags so user init, item init and negative draws never reuse a hash counter.
_TAG_USER, _TAG_ITEM, _TAG_NEG = 1, 2, 3
#: Learning-rate schedule: a user's n-th positive step is ``1 + NEW_USER_BOOST / (1 + n / NEW_USER_EVENTS)``
#: times the base step, so a newcomer's vector moves fast and a regular's settles. On the synthetic
#: shop, MF alone went from HR@10 0.371 to 0.415; MovieLens did not change.
NEW_USER_BOOST = 2.0
NEW_USER_EVENTS = 16.0
#: A positive step (learning rate x event weight x schedule) never exceeds this: beyond it, SGD on
#: unit-scale factors overshoots (a learning rate of 0.1 with purchase weight 8 collapsed HR@10 on
#: MovieLens to 0.001). It is the default learning rate times the default purchase weight.
MAX_STEP = 0.4
# Layout of MFState.params.
_LR, _L2, _INIT, _MAX_NORM, _N_NEG, _ALL_ITEMS, _BOUND, _BOUND_AGE, _INDEX_ABOVE = range(9)
#: The all-items step times the bound of the Gram matrix's largest eigenvalue stays below this (2 is
#: where the step starts to diverge); :data:`BOUND_EVERY` events between refreshes of the bound.
STABLE_STEP = 1.9
#: A pair's step times ``|p_u|^2 + |q_j|^2`` stays at most this (see :func:`_sgd_step`): 1 is the step
#: that lands a pair's score on its target (normalised LMS), 2 where it starts to overshoot. MovieLens-100K,
#: MF alone, seeds 0/1: 0.179/0.175 HR@10 with 1, 0.180/0.177 with 1.9, 0.174/0.175 with 0.5.
STABLE_PAIR = 1.0
BOUND_EVERY = 16.0
#: From this many seen items on, lists come from the item clusters of :mod:`stream_rec.models.mf_index`
#: (built then, and again each time the catalogue doubles) instead of a scan of every item's score.
INDEX_ABOVE = 20_000


class MFState(NamedTuple):
    """Everything :func:`mf_learn_one` and :func:`mf_scores` read and write (arrays, so in place)."""

    P: Float32Array  # (user capacity, n_factors)
    Q: Float32Array  # (item capacity, n_factors)
    user_seen: np.ndarray  # bool
    user_n: IntArray  # per user: events learned (the learning-rate schedule's clock)
    item_seen: np.ndarray  # bool
    gram: FloatArray  # (n_factors, n_factors): sum of q q^T over the seen items
    counters: IntArray  # (3,): events learned (the global position of the next one), 1 + largest item seen, items seen
    keys: np.ndarray  # uint64 (3,): random stream keys for user init, item init, negatives
    params: FloatArray  # learning_rate, l2, init_scale, max_norm (0 = none), n_negatives, all_items, ...
    index: ItemIndex  # the item clusters lists come from on a large catalogue, kept current by learning
    user_key: np.ndarray  # uint64 per user: seeds the row's initial value (0: the index does)
    item_key: np.ndarray  # uint64 per item: the same for item rows, so every worker starts an item alike


@njit(**INLINE)
def _init_row(mat: np.ndarray, idx: int, key: np.uint64, row_key: np.uint64, scale: float) -> None:
    """A new row's initial value: a pure function of the seed and ``row_key`` (a hash of the external id,
    so that every worker starts an item's row alike), or of the index where no ``row_key`` is set."""
    d = mat.shape[1]
    if row_key == 0:
        for f in range(d):
            mat[idx, f] = np.float32((2.0 * uniform(key, idx * d + f) - 1.0) * scale)
    else:
        for f in range(d):
            mat[idx, f] = np.float32((2.0 * uniform(key ^ row_key, f) - 1.0) * scale)


@njit(**INLINE)
def _clip_row(mat: np.ndarray, idx: int, max_norm: float) -> None:
    sq = 0.0
    for f in range(mat.shape[1]):
        sq += float(mat[idx, f]) * float(mat[idx, f])
    norm = np.sqrt(sq)
    if norm > max_norm:
        scale = np.float32(max_norm / norm)
        for f in range(mat.shape[1]):
            mat[idx, f] *= scale


# The per-step helpers take arrays, not the state tuple: handing a tuple over costs reference counting
# per array per call, and an event makes a handful of these calls.


@njit(**INLINE)
def _gram_add(G: FloatArray, Q: Float32Array, j: int, sign: float) -> None:
    """``G += sign * q_j q_j^T``: called with -1 before row ``j`` changes and +1 after."""
    d = Q.shape[1]
    for a in range(d):
        qa = sign * float(Q[j, a])
        for b in range(d):
            G[a, b] += qa * Q[j, b]


@njit(**INLINE)
def _eigen_bound(G: FloatArray) -> float:
    """An upper bound of ``G``'s largest eigenvalue: the smaller of its trace (``G`` is positive
    semi-definite) and its largest absolute row sum (Gershgorin)."""
    d = G.shape[0]
    trace, rows = 0.0, 0.0
    for a in range(d):
        trace += G[a, a]
        row = 0.0
        for b in range(d):
            row += abs(G[a, b])
        rows = max(rows, row)
    return min(trace, rows)


@njit(**INLINE)
def _all_items_step(G: FloatArray, P: Float32Array, u: int, step: float, params: FloatArray) -> None:
    """``p_u -= step * G p_u``: one step pushing every item's score for ``u`` towards 0 at once.

    ``G`` grows with the catalogue, and this step diverges once ``step`` passes ``2 / lambda_max(G)``:
    at 100k-1M items every factor went to NaN within a few thousand events. So the step is capped at
    :data:`STABLE_STEP` over a bound of ``lambda_max`` (:func:`_eigen_bound`, refreshed every
    :data:`BOUND_EVERY` events, as ``G`` moves little in between); below the cap it is unchanged."""
    if params[_BOUND_AGE] <= 0.0:
        params[_BOUND] = _eigen_bound(G)
        params[_BOUND_AGE] = BOUND_EVERY
    params[_BOUND_AGE] -= 1.0
    if step * params[_BOUND] > STABLE_STEP:
        step = STABLE_STEP / params[_BOUND]
    d = P.shape[1]
    pu = np.empty(d)
    for a in range(d):
        pu[a] = P[u, a]
    for a in range(d):
        acc = 0.0
        for b in range(d):
            acc += G[a, b] * pu[b]
        P[u, a] = np.float32(pu[a] - step * acc)


@njit(**INLINE)
def _row_dot(P: Float32Array, Q: Float32Array, u: int, j: int) -> np.float32:
    """``p_u . q_j`` summed in float32: how learning, the exact scan's last rows and the int8 path's
    exact rescoring score one pair."""
    dot = np.float32(0.0)
    for f in range(P.shape[1]):
        dot += P[u, f] * Q[j, f]
    return dot


@njit(**INLINE)
def _sgd_step(P: Float32Array, Q: Float32Array, G: FloatArray, max_norm: float, u: int, j: int, target: float,
              step: float, shrink: float) -> None:
    """Push ``p_u . q_j`` towards ``target``: ``x <- shrink * x + step * err * y`` for both rows.

    The step is capped at :data:`STABLE_PAIR` over ``|p_u|^2 + |q_j|^2``: past ``2 / (|p_u|^2 + |q_j|^2)``
    the pair's own step overshoots and grows both rows, and once rows are long one such step sends them
    to infinity (MovieLens-100K, seed 0, item rows seeded by their ids: every factor was NaN after 78,500
    events, rows of norm 3 and 7 taking a step of 0.4)."""
    dot, sq = np.float32(0.0), np.float32(0.0)
    for f in range(P.shape[1]):
        pf, qf = P[u, f], Q[j, f]
        dot += pf * qf
        sq += pf * pf + qf * qf
    if step * sq > STABLE_PAIR:
        step = STABLE_PAIR / sq
    err = np.float32((target - dot) * step)
    keep = np.float32(shrink)
    _gram_add(G, Q, j, -1.0)
    for f in range(P.shape[1]):
        pu, qj = P[u, f], Q[j, f]
        P[u, f] = pu * keep + err * qj
        Q[j, f] = qj * keep + err * pu
    if max_norm > 0.0:
        _clip_row(P, u, max_norm)
        _clip_row(Q, j, max_norm)
    _gram_add(G, Q, j, 1.0)


@njit(**INLINE)
def _log_row(log: IntArray, log_n: IntArray, j: int) -> None:
    if log_n[0] < len(log):
        log[log_n[0]] = j
        log_n[0] += 1


@njit(**INLINE)
def _user_step(P: Float32Array, Q: Float32Array, max_norm: float, u: int, j: int, target: float, step: float,
               shrink: float) -> None:
    """The user's half of :func:`_sgd_step`: ``p_u`` moves as that step moves it, ``q_j`` stays (its half
    of the event was learned already, on the worker whose item update was applied here)."""
    err = np.float32((target - _row_dot(P, Q, u, j)) * step)
    keep = np.float32(shrink)
    for f in range(P.shape[1]):
        P[u, f] = P[u, f] * keep + err * Q[j, f]
    if max_norm > 0.0:
        _clip_row(P, u, max_norm)


@njit(**INLINE)
def _seen_item(st: MFState, i: int) -> None:
    if not st.item_seen[i]:
        _init_row(st.Q, i, st.keys[1], st.item_key[i], st.params[_INIT])
        st.item_seen[i] = True
        _gram_add(st.gram, st.Q, i, 1.0)
        st.counters[1] = max(st.counters[1], i + 1)
        st.counters[2] += 1
        index_row_changed(st.index, st.Q, i)


@njit(**INLINE)
def _keep_index(st: MFState, i: int) -> None:
    """After an event's item rows learned: move its item to its nearest cluster, check one more item of
    the sweep, and build the index when the catalogue has grown enough (see :mod:`~stream_rec.models.mf_index`)."""
    if index_due(st.index, st.counters[2], st.params[_INDEX_ABOVE]):
        index_build(st.index, st.Q, st.item_seen, st.counters[1])
    if st.index.built_for[0] > 0:  # with the index off, no call (each hands ~20 arrays over)
        index_reassign(st.index, st.Q, i)
        index_sweep(st.index, st.Q, st.counters[1])


@njit(**JIT)
def mf_learn_one(st: MFState, u: int, i: int, w: float, log: IntArray, log_n: IntArray, item_side: bool,
                 rec_pu: Float32Array, rec_step: FloatArray, rec_neg: IntArray, e: int) -> None:
    """Learn one event: the all-items step, a positive step on ``(u, i)``, then one step towards 0 per
    sampled negative.

    The items whose rows changed are appended to ``log`` (while it has room) at ``log_n[0]``. Without
    ``item_side`` only the user's row learns (the items' half of this event was learned elsewhere and
    applied here: see :func:`mf_apply_remote`). With record arrays (``len(rec_step) > 0``) the item
    half is written to row ``e`` of them for other workers: the user's factors before the positive step,
    that step's size and the negatives stepped (-1: none).
    """
    lr, l2, scale = st.params[_LR], st.params[_L2], st.params[_INIT]
    if not st.user_seen[u]:
        _init_row(st.P, u, st.keys[0], st.user_key[u], scale)
        st.user_seen[u] = True
    _seen_item(st, i)
    pos = st.counters[0]
    shrink = 1.0 - lr * l2
    # 1. every item towards 0, then 2. the event's item towards 1
    boost = 1.0 + NEW_USER_BOOST / (1.0 + st.user_n[u] / NEW_USER_EVENTS)
    st.user_n[u] += 1
    P, Q, G, max_norm = st.P, st.Q, st.gram, st.params[_MAX_NORM]
    _all_items_step(G, P, u, lr * st.params[_ALL_ITEMS], st.params)
    step = min(lr * w * boost, MAX_STEP)
    record = item_side and len(rec_step) > 0
    if record:
        for f in range(P.shape[1]):
            rec_pu[e, f] = P[u, f]
        rec_step[e] = step
    if item_side:
        _sgd_step(P, Q, G, max_norm, u, i, 1.0, step, shrink)
        _log_row(log, log_n, i)
        index_row_changed(st.index, Q, i)
    else:
        _user_step(P, Q, max_norm, u, i, 1.0, step, shrink)
    # 3. a few items drawn uniformly (a draw that lands on an index never seen is skipped)
    n_neg, span = int(st.params[_N_NEG]), st.counters[1]
    for m in range(n_neg):
        if record:
            rec_neg[e, m] = -1
        j = int(uniform(st.keys[2], pos * n_neg + m) * span)
        if j == i or not st.item_seen[j]:
            continue
        if not item_side:
            _user_step(P, Q, max_norm, u, j, 0.0, lr, shrink)
            continue
        _sgd_step(P, Q, G, max_norm, u, j, 0.0, lr, shrink)
        _log_row(log, log_n, j)
        index_row_changed(st.index, Q, j)
        if record:
            rec_neg[e, m] = j
    st.counters[0] = pos + 1
    if item_side:
        _keep_index(st, i)


@njit(**JIT)
def mf_apply_remote(st: MFState, tmp: Float32Array, pu: Float32Array, i: int, step: float, negs: IntArray,
                    log: IntArray, log_n: IntArray) -> None:
    """The item half of an event another worker learned (:func:`mf_learn_one`'s record): the same steps
    on ``q_i`` and the negatives' rows, with that worker's user factors ``pu`` in the one-row ``tmp``."""
    lr, l2 = st.params[_LR], st.params[_L2]
    shrink = 1.0 - lr * l2
    Q, G, max_norm = st.Q, st.gram, st.params[_MAX_NORM]
    st.params[_BOUND_AGE] = 0.0  # G moves: the all-items step's bound is taken afresh at the next event
    for f in range(tmp.shape[1]):
        tmp[0, f] = pu[f]
    _seen_item(st, i)
    _sgd_step(tmp, Q, G, max_norm, 0, i, 1.0, step, shrink)
    _log_row(log, log_n, i)
    index_row_changed(st.index, Q, i)
    for m in range(len(negs)):
        j = negs[m]
        if j < 0:
            continue
        _seen_item(st, j)
        _sgd_step(tmp, Q, G, max_norm, 0, j, 0.0, lr, shrink)
        _log_row(log, log_n, j)
        index_row_changed(st.index, Q, j)
    _keep_index(st, i)


@njit(**JIT)
def mf_learn_many(st: MFState, users: IntArray, items: IntArray, weights: FloatArray, log: IntArray,
                  log_n: IntArray) -> None:
    no_pu, no_step, no_neg = np.empty((0, st.P.shape[1]), np.float32), np.empty(0), np.empty((0, 1), np.int64)
    for e in range(len(users)):
        mf_learn_one(st, users[e], items[e], weights[e], log, log_n, True, no_pu, no_step, no_neg, e)


#: From this many items on, scores come from BLAS (sgemv, ~2.5x the compiled loop at 100k items); below,
#: the loop wins by skipping the call overhead.
_BLAS_ABOVE = 16_384


@njit(fastmath={"reassoc", "contract"}, **JIT)
def mf_scores(P: Float32Array, Q: Float32Array, u: int, n_items: int, out: np.ndarray) -> None:
    """``out[i] = p_u . q_i`` for the first ``n_items`` items (float32, summed in any order)."""
    if n_items >= _BLAS_ABOVE:
        np.dot(Q[:n_items], P[u], out[:n_items])
        return
    d, i = P.shape[1], 0
    while i + 4 <= n_items:  # four rows at a time share each load of p_u: ~1.4x one row at a time
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for f in range(d):
            pf = P[u, f]
            s0 += pf * Q[i, f]
            s1 += pf * Q[i + 1, f]
            s2 += pf * Q[i + 2, f]
            s3 += pf * Q[i + 3, f]
        out[i], out[i + 1], out[i + 2], out[i + 3] = s0, s1, s2, s3
        i += 4
    for j in range(i, n_items):
        out[j] = _row_dot(P, Q, u, j)


@njit(**INLINE)
def mf_top(P: Float32Array, Q: Float32Array, index: ItemIndex, params: FloatArray, item_seen: np.ndarray, u: int,
           n_items: int, k: int, excluded: np.ndarray, scores: np.ndarray, buf_s: FloatArray, buf_i: IntArray,
           out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` best seen, not ``excluded`` items for user ``u`` into ``out_*``, best first; returns the count.

    Below ``params[_INDEX_ABOVE]`` seen items (and until the index is built) every item is scored, exactly.
    From there on the item clusters of :mod:`~stream_rec.models.mf_index` give the list
    (:func:`~stream_rec.models.mf_index.index_top`): approximate, at a cost that grows with the square
    root of the catalogue; how much of the exact list it finds, ``stream-rec bench`` measures.
    ``scores`` and ``buf_*`` are scratch for every item (the exact scan's).

    Like every helper on the ranking's hot path it takes arrays, not the state tuple (handing a tuple
    over costs reference counting per array per call)."""
    if index.built_for[0] == 0 or n_items < params[_INDEX_ABOVE]:
        mf_scores(P, Q, u, n_items, scores)
        return select_dense(scores, item_seen, excluded, n_items, k, buf_s, buf_i, out_s, out_i)
    return index_top(index, P, Q, u, k, excluded, out_s, out_i)


class ImplicitMF(TracksTouched):
    """Incremental SGD matrix factorisation for implicit feedback (ISGD).

    Parameters
    ----------
    n_factors
        Rank of the factorisation.
    learning_rate
        SGD step size.
    l2
        L2 penalty applied to both rows at every step.
    n_negatives
        Negatives per positive event, drawn uniformly from the catalogue.
    all_items
        Weight of the push of every item's score towards 0 on each event (see the module docstring);
        0 leaves only the sampled negatives.
    init_scale
        New rows start uniform in ``[-init_scale, init_scale)``, a pure function of the seed and index.
    max_norm
        If set, every updated row is rescaled to at most this L2 norm (guards against large weights).
    seed
        Seeds row initialisation and negative sampling.

    Attributes
    ----------
    P, Q
        User and item factors, float32, ``(capacity, n_factors)``; only rows marked seen are meaningful.

    Examples
    --------
    >>> import numpy as np
    >>> mf = ImplicitMF(n_factors=4, seed=42)
    >>> users = np.array([0, 0, 1, 1] * 50)
    >>> items = np.array([0, 1, 2, 3] * 50)
    >>> mf.learn_many(users, items, np.ones(200), np.arange(200.0))
    >>> ranked, scores = mf.recommend(0, k=2)
    >>> sorted(ranked.tolist())
    [0, 1]
    >>> len(mf.user_state(0))  # four little-endian float32 factors and the event count
    20
    """

    name = "mf"

    def __init__(
        self,
        n_factors: int = 32,
        learning_rate: float = 0.05,
        l2: float = 0.01,
        n_negatives: int = 1,
        all_items: float = 0.1,
        init_scale: float = 0.1,
        max_norm: float | None = None,
        seed: int = 0,
        index_above: float = INDEX_ABOVE,
    ) -> None:
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.n_negatives = n_negatives
        self.all_items = all_items
        self.init_scale = init_scale
        self.max_norm = max_norm
        self.seed = seed

        self.P: Float32Array = np.zeros((0, n_factors), dtype=np.float32)
        self.Q: Float32Array = np.zeros((0, n_factors), dtype=np.float32)
        self._user_seen = np.zeros(0, dtype=bool)
        self._user_n = np.zeros(0, dtype=np.int64)
        self._item_seen = np.zeros(0, dtype=bool)
        self._gram = np.zeros((n_factors, n_factors))
        self._counters = np.zeros(3, dtype=np.int64)
        self._keys = np.array([stream_key(seed, tag) for tag in (_TAG_USER, _TAG_ITEM, _TAG_NEG)], dtype=np.uint64)
        self._params = np.array([learning_rate, l2, init_scale, max_norm or 0.0, n_negatives, all_items, 0.0, 0.0,
                                 index_above], dtype=np.float64)
        self._index = new_index(0, n_factors)
        self._user_key = np.zeros(0, dtype=np.uint64)
        self._item_key = np.zeros(0, dtype=np.uint64)
        self._scores = np.zeros(0, dtype=np.float32)
        self._touched = TouchLog()

    @property
    def state(self) -> MFState:
        """The arrays the compiled kernels work on (valid until the next growth)."""
        return MFState(self.P, self.Q, self._user_seen, self._user_n, self._item_seen, self._gram, self._counters, self._keys,
                       self._params, self._index, self._user_key, self._item_key)

    @property
    def index_above(self) -> float:
        """From this many seen items on, lists come from the item clusters (:func:`mf_top`); ``inf``: every
        list scans every item (the exact reference)."""
        return float(self._params[_INDEX_ABOVE])

    @index_above.setter
    def index_above(self, n_items: float) -> None:
        self._params[_INDEX_ABOVE] = n_items  # a built index stays current, so the way back is free

    @property
    def index(self) -> ItemIndex:
        return self._index

    # ------------------------------------------------------------------ learning

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Learn from a micro-batch of events, in order (``ts`` is unused: ISGD is order-only)."""
        users, items = as_index(users), as_index(items)
        if len(users) == 0:
            return
        self.reserve(int(users.max()) + 1, int(items.max()) + 1)
        log = np.empty(len(items) * (1 + self.n_negatives), dtype=np.int64)
        log_n = np.zeros(1, dtype=np.int64)
        mf_learn_many(self.state, users, items, np.asarray(weights, dtype=np.float64).reshape(-1), log, log_n)
        self._touched.add(users=users, items=log[: log_n[0]])

    def reserve(self, n_users: int, n_items: int) -> None:
        """Make room for user indices below ``n_users`` and item indices below ``n_items``."""
        self.P = grow(self.P, n_users)
        self._user_seen = grow(self._user_seen, n_users, False)
        self._user_n = grow(self._user_n, n_users)
        self.Q = grow(self.Q, n_items)
        self._index = reserve_index(self._index, n_items)
        self._user_key = grow(self._user_key, n_users)
        self._item_key = grow(self._item_key, n_items)
        self._item_seen = grow(self._item_seen, n_items, False)

    def set_row_keys(self, users: IntArray, user_keys: np.ndarray, items: IntArray, item_keys: np.ndarray) -> None:
        """Seed new rows by a hash of their external ids (:func:`stream_rec.ids.row_keys`) instead of their
        indices, so that workers which index one item differently still start its row alike."""
        self.reserve(int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1)
        self._user_key[users] = user_keys
        self._item_key[items] = item_keys

    def _known_user(self, user: int) -> bool:
        return 0 <= user < len(self._user_seen) and bool(self._user_seen[user])

    # ------------------------------------------------------------------ serving

    def _score_buffer(self) -> Float32Array:
        n = len(self._item_seen)
        if len(self._scores) < n:
            self._scores = np.zeros(max(n, 2 * len(self._scores)), dtype=np.float32)
        return self._scores

    def _all_scores(self, user: int) -> Float32Array:
        n = len(self._item_seen)
        mf_scores(self.P, self.Q, user, n, self._score_buffer())
        return self._scores[:n]

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Dot products ``p_user . q_item``; zeros for an unknown user or unseen items."""
        items = as_index(items)
        out = np.zeros(len(items), dtype=np.float64)
        if not self._known_user(user):
            return out
        ok = seen_mask(items, self._item_seen)
        out[ok] = self._all_scores(user)[items[ok]]
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """Top-``k`` seen items by dot product; empty for an unknown user."""
        if not self._known_user(user):
            return np.empty(0, np.int64), np.empty(0, np.float64)
        n = len(self._item_seen)
        k, excluded, buf_s, buf_i, out_s, out_i = selection_buffers(n, k, exclude)
        m = mf_top(self.P, self.Q, self._index, self._params, self._item_seen, user, n, k, excluded,
                   self._score_buffer(), buf_s, buf_i, out_s, out_i)
        return out_i[:m].copy(), out_s[:m].copy()

    # ------------------------------------------------------------------ state

    def user_state(self, user: int) -> bytes | None:
        """User row as ``n_factors`` little-endian float32, then the user's event count as one more
        float32 (the schedule's clock); ``None`` if never seen."""
        if not self._known_user(user):
            return None
        return np.append(self.P[user], np.float32(self._user_n[user])).astype("<f4").tobytes()

    def set_user_state(self, user: int, data: bytes) -> None:
        self.load_user_rows(np.array([user]), [data])

    def item_state(self, item: int) -> bytes | None:
        """Item row as ``n_factors`` little-endian float32; ``None`` if never seen."""
        seen = 0 <= item < len(self._item_seen) and bool(self._item_seen[item])
        return self.Q[item].astype("<f4").tobytes() if seen else None

    def set_item_state(self, item: int, data: bytes) -> None:
        self.reserve(0, item + 1)
        if self._item_seen[item]:
            self._gram -= np.outer(self.Q[item], self.Q[item])
        self.Q[item] = np.frombuffer(data, dtype="<f4")
        self._gram += np.outer(self.Q[item], self.Q[item])
        self._index.built_for[0] = 0  # built again by the next event learned
        self._counters[2] += not self._item_seen[item]
        self._item_seen[item] = True
        self._counters[1] = max(int(self._counters[1]), item + 1)

    def load_user_rows(self, users: IntArray, rows: list[bytes]) -> None:
        """:meth:`set_user_state` for many users at once (a restart). Rows written before the schedule
        (``n_factors`` floats, no count) load as users past it."""
        if len(users):
            self.reserve(int(users.max()) + 1, 0)
            d = self.n_factors
            rows = [r if len(r) == 4 * (d + 1) else r + np.float32(1e6).astype("<f4").tobytes() for r in rows]
            flat = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(users), d + 1)
            self.P[users] = flat[:, :d]
            self._user_n[users] = flat[:, d].astype(np.int64)
            self._user_seen[users] = True

    def set_user_rows(self, users: IntArray, learned: np.ndarray, factors: Float32Array, counts: IntArray) -> None:
        """Put users' rows in place (a user's state moved here): ``factors`` (one row per ``learned`` user,
        in order) and the events each learned from; a user not ``learned`` is marked unseen."""
        if len(users) == 0:
            return
        self.reserve(int(users.max()) + 1, 0)
        self.P[users[learned]] = factors
        self.P[users[~learned]] = 0.0  # nothing of a forgotten user's factors stays (an unseen row starts anew)
        self._user_n[users] = np.where(learned, counts, 0)
        self._user_seen[users] = learned

    def load_item_rows(self, items: IntArray, rows: list[bytes]) -> None:
        """:meth:`set_item_state` for many items at once (a restart)."""
        if len(items):
            self.reserve(0, int(items.max()) + 1)
            self.Q[items] = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(items), self.n_factors)
            self._item_seen[items] = True
            seen = self.Q[self._item_seen].astype(np.float64)
            self._gram[:] = seen.T @ seen
            self._counters[1] = int(np.flatnonzero(self._item_seen).max()) + 1
            self._counters[2] = int(self._item_seen.sum())
            self._index.built_for[0] = 0  # built again by the next event learned

