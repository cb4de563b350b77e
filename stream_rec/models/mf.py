"""Incremental matrix factorisation for implicit feedback (ISGD, Vinagre et al. 2014).

Every event ``(u, i, w)`` is one SGD pass over a tiny least-squares problem: push ``p_u . q_i``
towards 1 with confidence ``w``, then push ``p_u . q_j`` towards 0 for a few sampled negatives ``j``.

Why the batch path equals the one-event path
---------------------------------------------
* Random numbers are a pure function of ``(seed, global event position, draw number)`` (a counter
  based hash), so no draw depends on where a batch boundary falls.
* A new row's initial value is a pure function of ``(seed, index)``.
* The SGD *steps* of a batch (each event's positive step, then its negative steps) are scheduled into
  conflict-free *rounds*: a step goes into the first round after every earlier step that shares its
  user row or its item row. Steps of one round touch disjoint rows, so updating them together with
  numpy performs exactly the float operations the sequential loop would. Scheduling steps rather than
  whole events matters on skewed traffic: a best-seller drawn as one event's negative only delays
  that step, not the event's other steps.
"""

from __future__ import annotations

import numpy as np

from stream_rec.models._arrays import TouchLog, as_index, candidates, grow, top_k
from stream_rec.types import FloatArray, Float32Array, IntArray

#: Recent event items kept for negative sampling. Sampling uniformly from the event stream is
#: popularity-proportional for free; 8192 events is enough to cover the head and much of the torso.
NEGATIVE_POOL = 8192

# Stream tags so user init, item init and negative draws never reuse a hash counter.
_TAG_USER, _TAG_ITEM, _TAG_NEG = 1, 2, 3
_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed hash of uint64 counters (vectorised)."""
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def _uniform(key: np.uint64, counters: np.ndarray) -> FloatArray:
    """Uniform [0, 1) floats, one per counter, a pure function of ``(key, counter)``."""
    bits = _splitmix64(counters.astype(_U64) ^ key)
    return (bits >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # 53 bits / 2**53


def _stream_key(seed: int, tag: int) -> np.uint64:
    return _splitmix64(np.array([seed * 8 + tag], dtype=_U64))[0]


def _schedule(rows_a: IntArray, rows_b: IntArray) -> tuple[IntArray, list[int]]:
    """Order steps into conflict-free rounds: ``(order, bounds)``, round ``r`` being
    ``order[bounds[r]:bounds[r + 1]]`` (sequence order inside a round).

    Step ``s`` touches user row ``rows_a[s]`` and item row ``rows_b[s]``. Its round is one more than
    the latest round of any earlier step touching either row, which is exactly the dependency order of
    the sequential loop.
    """
    last_a: dict[int, int] = {}
    last_b: dict[int, int] = {}
    rounds = []
    for a, b in zip(rows_a.tolist(), rows_b.tolist()):
        ra, rb = last_a.get(a, 0), last_b.get(b, 0)
        r = ra if ra > rb else rb
        rounds.append(r)
        last_a[a] = last_b[b] = r + 1
    rounds_arr = np.asarray(rounds, dtype=np.int64)
    order = np.argsort(rounds_arr, kind="stable")
    bounds = [0, *np.cumsum(np.bincount(rounds_arr)).tolist()]
    return order, bounds


def _clip_rows(x: Float32Array, max_norm: float) -> Float32Array:
    norms = np.sqrt((x * x).sum(axis=1))
    scale = np.minimum(np.float32(1.0), np.float32(max_norm) / np.maximum(norms, np.float32(1e-12)))
    return x * scale[:, None]


class ImplicitMF:
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
        Negatives per positive event, drawn from the last :data:`NEGATIVE_POOL` event items (so
        popular items are drawn more often, as they are more often truly exposed and skipped).
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
    >>> len(mf.user_state(0))  # four little-endian float32
    16
    """

    name = "mf"

    def __init__(
        self,
        n_factors: int = 32,
        learning_rate: float = 0.05,
        l2: float = 0.01,
        n_negatives: int = 3,
        init_scale: float = 0.1,
        max_norm: float | None = None,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.n_negatives = n_negatives
        self.init_scale = init_scale
        self.max_norm = max_norm
        self.seed = seed

        self.P: Float32Array = np.zeros((0, n_factors), dtype=np.float32)
        self.Q: Float32Array = np.zeros((0, n_factors), dtype=np.float32)
        self._user_seen = np.zeros(0, dtype=bool)
        self._item_seen = np.zeros(0, dtype=bool)
        self._pool = np.zeros(NEGATIVE_POOL, dtype=np.int64)
        self._n_events = 0
        self._keys = {tag: _stream_key(seed, tag) for tag in (_TAG_USER, _TAG_ITEM, _TAG_NEG)}
        self._touched = TouchLog()

    # ------------------------------------------------------------------ learning

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None:
        """Learn from a micro-batch of events, in order (``ts`` is unused: ISGD is order-only)."""
        users, items = as_index(users), as_index(items)
        if len(users) == 0:
            return
        coef_pos = np.asarray(weights, dtype=np.float32).reshape(-1)
        self._reserve(int(users.max()) + 1, int(items.max()) + 1)
        self._init_rows(users, items)

        negatives, gate = self._draw_negatives(items)
        self._remember(items)
        cols = np.column_stack([items, negatives])
        # Per (event, step) constants, folded so each SGD step is a handful of numpy calls:
        # step = lr * confidence * gate, shrink = 1 - lr * l2 * gate (a gate of 0 makes the step an
        # exact no-op: x * 1 + 0 * y == x).
        lr, l2 = np.float32(self.learning_rate), np.float32(self.l2)
        gate = np.column_stack([np.ones(len(items), dtype=np.float32), gate])
        conf = np.column_stack([coef_pos, np.ones_like(negatives, dtype=np.float32)])
        step = lr * conf * gate
        shrink = np.float32(1.0) - lr * l2 * gate

        # One row per SGD step, in sequential order: event by event, positive step first.
        n_steps = cols.shape[1]
        target = np.zeros_like(step)
        target[:, 0] = 1.0
        step_users = np.repeat(users, n_steps)
        order, bounds = _schedule(step_users, cols.ravel())
        u_o, j_o = step_users[order], cols.ravel()[order]
        target_o, step_o, shrink_o = target.ravel()[order], step.ravel()[order], shrink.ravel()[order]
        for a, b in zip(bounds[:-1], bounds[1:]):
            self._sgd_round(u_o[a:b], j_o[a:b], target_o[a:b], step_o[a:b], shrink_o[a:b])
        self._touched.add(users=users, items=cols[gate > 0])

    def _sgd_round(
        self, u: IntArray, j: IntArray, target: Float32Array, step: Float32Array, shrink: Float32Array
    ) -> None:
        """One conflict-free round of SGD steps, each pushing ``p_u . q_j`` towards its target."""
        pu, qj = self.P[u], self.Q[j]
        err = ((target - np.einsum("ij,ij->i", pu, qj)) * step)[:, None]
        keep = shrink[:, None]
        pu, qj = pu * keep + err * qj, qj * keep + err * pu
        if self.max_norm is not None:
            pu, qj = _clip_rows(pu, self.max_norm), _clip_rows(qj, self.max_norm)
        self.P[u], self.Q[j] = pu, qj

    def _draw_negatives(self, items: IntArray) -> tuple[IntArray, Float32Array]:
        """Negatives for each event, uniform over the events before it (up to the pool size).

        Returns ``(negatives, gate)``; where the gate is 0 the slot holds the positive item and is
        skipped.
        """
        n, m = len(items), self.n_negatives
        n0 = self._n_events
        pos_global = n0 + np.arange(n, dtype=np.int64)
        avail = np.minimum(pos_global, NEGATIVE_POOL)
        counters = pos_global[:, None] * m + np.arange(m, dtype=np.int64)
        back = np.floor(_uniform(self._keys[_TAG_NEG], counters) * avail[:, None]).astype(np.int64)
        src = pos_global[:, None] - 1 - np.minimum(back, np.maximum(avail[:, None] - 1, 0))
        from_batch = src >= n0
        negatives = np.where(
            from_batch, items[np.clip(src - n0, 0, n - 1)], self._pool[src % NEGATIVE_POOL]
        )
        positive = np.broadcast_to(items[:, None], negatives.shape)
        valid = (avail[:, None] > 0) & (negatives != positive)
        return np.where(valid, negatives, positive), valid.astype(np.float32)

    def _remember(self, items: IntArray) -> None:
        """Append the batch's items to the negative-sampling ring buffer."""
        n = len(items)
        keep = min(n, NEGATIVE_POOL)
        slots = (self._n_events + np.arange(n - keep, n)) % NEGATIVE_POOL
        self._pool[slots] = items[n - keep :]
        self._n_events += n

    # ------------------------------------------------------------------ rows

    def _reserve(self, n_users: int, n_items: int) -> None:
        self.P = grow(self.P, n_users)
        self._user_seen = grow(self._user_seen, n_users, False)
        self.Q = grow(self.Q, n_items)
        self._item_seen = grow(self._item_seen, n_items, False)

    def _init_rows(self, users: IntArray, items: IntArray) -> None:
        """Give never-seen rows their deterministic random start."""
        for idx, mat, seen, tag in (
            (users, self.P, self._user_seen, _TAG_USER),
            (items, self.Q, self._item_seen, _TAG_ITEM),
        ):
            new = np.unique(idx[~seen[idx]])
            if len(new):
                counters = new[:, None] * self.n_factors + np.arange(self.n_factors)
                u = _uniform(self._keys[tag], counters)
                mat[new] = ((2.0 * u - 1.0) * self.init_scale).astype(np.float32)
                seen[new] = True

    def _known_user(self, user: int) -> bool:
        return 0 <= user < len(self._user_seen) and bool(self._user_seen[user])

    # ------------------------------------------------------------------ serving

    def score(self, user: int, items: IntArray) -> FloatArray:
        """Dot products ``p_user . q_item``; zeros for an unknown user or unseen items."""
        items = as_index(items)
        out = np.zeros(len(items), dtype=np.float64)
        if not self._known_user(user):
            return out
        ok = (items >= 0) & (items < len(self._item_seen))
        ok[ok] = self._item_seen[items[ok]]
        out[ok] = self.Q[items[ok]] @ self.P[user]
        return out

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """Top-``k`` seen items by dot product; empty for an unknown user."""
        if not self._known_user(user):
            return np.empty(0, np.int64), np.empty(0, np.float64)
        cand = candidates(self._item_seen, exclude)
        scores = (self.Q[: len(self._item_seen)] @ self.P[user])[cand]
        return top_k(cand, scores.astype(np.float64), k)

    # ------------------------------------------------------------------ state

    def user_state(self, user: int) -> bytes | None:
        """User row as ``n_factors`` little-endian float32; ``None`` if never seen."""
        return self.P[user].astype("<f4").tobytes() if self._known_user(user) else None

    def set_user_state(self, user: int, data: bytes) -> None:
        self._reserve(user + 1, 0)
        self.P[user] = np.frombuffer(data, dtype="<f4")
        self._user_seen[user] = True

    def item_state(self, item: int) -> bytes | None:
        """Item row as ``n_factors`` little-endian float32; ``None`` if never seen."""
        seen = 0 <= item < len(self._item_seen) and bool(self._item_seen[item])
        return self.Q[item].astype("<f4").tobytes() if seen else None

    def set_item_state(self, item: int, data: bytes) -> None:
        self._reserve(0, item + 1)
        self.Q[item] = np.frombuffer(data, dtype="<f4")
        self._item_seen[item] = True

    def pop_touched(self) -> tuple[IntArray, IntArray]:
        return self._touched.pop()
