"""Every competitor of an evaluation behind one small interface.

A competitor works in the evaluation's index space (a shared :class:`Vocabulary` hands out dense ints
for user and item ids in order of first sight) and has two verbs:

``learn_many(batch)``
    Learn from a micro-batch of events (a :class:`Batch`: the events plus their index arrays).
``recommend_many(users, k, exclude)``
    One top-``k`` list per user as a ``(len(users), k)`` int64 array of item indices, best first,
    padded with ``-1`` when the model knows fewer than ``k`` items to propose. ``exclude[r]`` holds
    the items user ``r`` bought (never to be recommended back).

A *sequential* competitor (``sequential = True``: our service) instead has one verb that ranks and
learns event by event:

``rank_then_learn(batch, scored, k)``
    For each event in order, the top ``k`` of its user if ``scored[e]`` (a ``(len(batch), k)`` array
    padded with ``-1``), then learn the event. It excludes bought items itself.

The competitors:

==========================  =========================================================================
``fused``                   our service as the worker runs it (:class:`RecService`, default sources)
``mf``, ``cooc``, ...       the same service ranking with one source (``sources=("mf",)`` etc.), in that
                            source's own order: also ``recent`` and ``category``
``fused-exact``, ``mf-exact`` ``fused`` and ``mf`` with matrix factorisation scoring every item on every list
                            (``mf_index_above=0``): the reference the item clusters are measured against
``popularity``              all-time event counts
``decayed-popularity``      the ``popular`` source alone (time-decayed, the settings' half-life)
``river-biasedmf``          River ``reco.BiasedMF`` on implicit targets (see :class:`RiverMF`)
``river-funkmf``            River ``reco.FunkMF`` on implicit targets
``batch-knn``               item-kNN cosine, refitted on everything so far every N events
==========================  =========================================================================
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from stream_rec.events import Event
from stream_rec.extras import require
from stream_rec.ids import IdIndex
from stream_rec.models._arrays import grow
from stream_rec.models.popularity import DecayedPopularity
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.types import FloatArray, IntArray
from stream_rec.variants import Variant

#: Dense score blocks are at most this many cells: users of a batch are ranked in chunks beyond it.
MAX_BLOCK_CELLS = 4_000_000


@dataclass
class Vocabulary:
    """External ids -> dense ints, shared by the evaluation and every competitor."""

    users: IdIndex
    items: IdIndex

    @classmethod
    def empty(cls) -> Vocabulary:
        return cls(IdIndex(), IdIndex())


@dataclass(frozen=True)
class Batch:
    """A micro-batch: the events in stream order and their index arrays (``ts`` in seconds)."""

    events: Sequence[Event]
    users: IntArray
    items: IntArray
    weights: FloatArray
    ts: FloatArray
    purchase: npt.NDArray[np.bool_]

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(self.events[start:stop], self.users[start:stop], self.items[start:stop],
                     self.weights[start:stop], self.ts[start:stop], self.purchase[start:stop])


class Competitor:
    """Base of every competitor (see the module docstring for the contract)."""

    name: str = "competitor"
    #: Ranks and learns event by event through :meth:`rank_then_learn` instead of the two batch verbs.
    sequential: bool = False

    def learn_many(self, batch: Batch) -> None:
        raise NotImplementedError

    def rank_then_learn(self, batch: Batch, scored: npt.NDArray[np.bool_], k: int) -> IntArray:
        raise NotImplementedError

    def recommend_many(self, users: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- helpers


def top_k_rows(scores: FloatArray, k: int, exclude: Sequence[IntArray] | None = None) -> IntArray:
    """Per row of a dense ``(users, items)`` score block, the ``k`` best item indices, best first.

    ``-inf`` marks an item that may not be proposed; ``exclude[r]`` is set to ``-inf`` in row ``r``
    first (``scores`` is modified). Rows with fewer than ``k`` finite scores are padded with ``-1``.
    Ties go to the lower index.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.1, 0.9, 0.5, -np.inf], [1.0, 1.0, 2.0, 0.0]])
    >>> top_k_rows(s, 3, [np.array([2]), np.array([], dtype=np.int64)]).tolist()
    [[1, 0, -1], [2, 0, 1]]
    """
    n_rows, n_items = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    if n_rows == 0 or n_items == 0 or k <= 0:
        return out
    if exclude is not None:
        lengths = [len(e) for e in exclude]
        if sum(lengths):
            rows = np.repeat(np.arange(n_rows), lengths)
            cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
            ok = (cols >= 0) & (cols < n_items)
            scores[rows[ok], cols[ok]] = -np.inf
    kk = min(k, n_items)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n_items else np.tile(np.arange(n_items), (n_rows, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    part, vals = np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)
    out[:, :kk] = np.where(np.isfinite(vals), part, -1)
    return out


def _rank_in_chunks(users: IntArray, k: int, exclude: Sequence[IntArray], n_items: int,
                    block: Callable[[IntArray], FloatArray]) -> IntArray:
    """``top_k_rows`` over ``block(rows)`` for chunks of rows, so a block stays under MAX_BLOCK_CELLS."""
    out = np.full((len(users), k), -1, dtype=np.int64)
    step = max(1, MAX_BLOCK_CELLS // max(n_items, 1))
    for a in range(0, len(users), step):
        rows = np.arange(a, min(a + step, len(users)))
        out[rows] = top_k_rows(block(rows), k, [exclude[r] for r in rows.tolist()])
    return out


def _filter_ranking(ranking: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
    """The same global ``ranking`` for every user, minus each user's ``exclude``, cut at ``k``."""
    out = np.full((len(exclude), k), -1, dtype=np.int64)
    for r, ex in enumerate(exclude):
        head = ranking[: k + len(ex)]
        if len(ex):
            head = head[~np.isin(head, ex)]
        head = head[:k]
        out[r, : len(head)] = head
    return out


# ------------------------------------------------------------------------------- our service


class ServiceModel(Competitor):
    """Our service, ranking with the worker's compiled ranking and learning with its compiled steps.

    ``sources=None`` ranks with the fused sources (the worker's lists); ``("mf",)`` or ``("cooc",)``
    rank with one source while all still learn, in that source's own order (the adaptive fusion is
    off: its learned scorer could re-rank even a single list). The service excludes what each user
    bought itself.
    Each chunk goes through :meth:`RecService.rank_then_learn`: strictly one event at a time.
    """

    sequential = True

    def __init__(self, name: str, settings: Settings, vocab: Vocabulary, sources: Sequence[str] | None = None,
                 variant: Variant | None = None) -> None:
        self.name = name
        self.vocab = vocab
        if sources is not None:
            settings = dataclasses.replace(settings, fusion_adapt=False)
        # A variant replayed as a whole model: every user's lists ranked by it (not a share of them).
        self.service = RecService(settings, MemoryStore(), sources=sources, variant=variant)
        self._offset = 0
        self._to_vocab = np.zeros(0, dtype=np.int64)  # service item index -> vocabulary item index

    def rank_then_learn(self, batch: Batch, scored: npt.NDArray[np.bool_], k: int) -> IntArray:
        offsets = range(self._offset, self._offset + len(batch.events))
        positions = list(zip(zip(itertools.repeat("evaluate"), offsets), batch.events))
        self._offset += len(positions)
        lists = self.service.rank_then_learn(positions, scored, k)
        items = self.service.items
        known = len(self._to_vocab)
        if len(items) > known:
            new = [self.vocab.items.get(items.external(i)) for i in range(known, len(items))]
            self._to_vocab = np.concatenate([self._to_vocab, np.array(new, dtype=np.int64)])
        return np.where(lists >= 0, self._to_vocab[np.maximum(lists, 0)], -1)


# ------------------------------------------------------------------------------- popularity


class Popularity(Competitor):
    """All-time event counts (every event counts one, whatever its type)."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)
        self._ranking: IntArray | None = None

    def learn_many(self, batch: Batch) -> None:
        self.counts = grow(self.counts, int(batch.items.max()) + 1)
        np.add.at(self.counts, batch.items, 1)
        self._ranking = None

    def recommend_many(self, users: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
        if self._ranking is None:
            seen = np.flatnonzero(self.counts)
            self._ranking = seen[np.lexsort((seen, -self.counts[seen]))]
        return _filter_ranking(self._ranking, k, exclude)


class DecayedPopularityModel(Competitor):
    """The ``popular`` source of the service alone: weighted, time-decayed popularity."""

    name = "decayed-popularity"

    def __init__(self, settings: Settings) -> None:
        self.model = DecayedPopularity(half_life_s=settings.popularity_half_life_h * 3600.0)

    def learn_many(self, batch: Batch) -> None:
        self.model.learn_many(batch.users, batch.items, batch.weights, batch.ts)

    def recommend_many(self, users: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
        depth = k + max((len(e) for e in exclude), default=0)
        ranking, _ = self.model.recommend(-1, depth)
        return _filter_ranking(ranking, k, exclude)


# ------------------------------------------------------------------------------- River


class RiverMF(Competitor):
    """A River recommender (``reco.BiasedMF`` or ``reco.FunkMF``) fed implicit feedback.

    Each event is ``learn_one(user, item, y=1.0)`` followed by ``n_negatives`` calls with ``y=0.0`` on
    items drawn from all past events (so popularity-proportional: popular items are the ones a user
    most likely saw and skipped). Event types are not weighted.

    Ranking is over the **full catalogue**, exactly as ``predict_one`` would score it, without calling
    it per item: River keeps its factors as numpy vectors in dicts, so the item factors (and item
    biases) are mirrored into a dense matrix, refreshing only the rows learning touched since the last
    ranking; a user's score vector is then one matrix product. Nothing is lost to a candidate set. A
    user River has never learned gets an empty list (River has no cold-start answer).
    """

    def __init__(self, name: str, model: Any, n_negatives: int = 2, seed: int = 0) -> None:
        self.name = name
        self.model = model
        self.n_negatives = n_negatives
        self._rng = np.random.default_rng(seed)
        self._history = np.zeros(0, dtype=np.int64)  # every past event's item, for negatives
        self._n_history = 0
        self._biased = hasattr(model, "i_biases")
        n_factors = model.n_factors
        self._Q = np.zeros((0, n_factors), dtype=np.float64)
        self._bias = np.zeros(0, dtype=np.float64)
        self._known = np.zeros(0, dtype=bool)
        self._stale: set[int] = set()

    def learn_many(self, batch: Batch) -> None:
        learn, stale = self.model.learn_one, self._stale
        for u, i in zip(batch.users.tolist(), batch.items.tolist()):
            learn(u, i, 1.0)
            stale.add(i)
            if self._n_history:
                for j in self._history[self._rng.integers(0, self._n_history, self.n_negatives)].tolist():
                    if j != i:
                        learn(u, j, 0.0)
                        stale.add(j)
            self._history = grow(self._history, self._n_history + 1)
            self._history[self._n_history] = i
            self._n_history += 1

    def _sync(self) -> None:
        """Copy the factors (and biases) of items changed since the last ranking into dense arrays."""
        if not self._stale:
            return
        rows = np.fromiter(self._stale, dtype=np.int64, count=len(self._stale))
        self._stale = set()
        n = int(rows.max()) + 1
        self._Q, self._bias, self._known = grow(self._Q, n), grow(self._bias, n), grow(self._known, n, False)
        latents = self.model.i_latents
        self._Q[rows] = np.stack([latents[i] for i in rows.tolist()])
        if self._biased:
            self._bias[rows] = [self.model.i_biases[i] for i in rows.tolist()]
        self._known[rows] = True

    def recommend_many(self, users: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
        self._sync()
        n_items = len(self._known)
        latents = self.model.u_latents
        known_user = np.array([u in latents for u in users.tolist()], dtype=bool)
        P = np.zeros((len(users), self._Q.shape[1]))
        if known_user.any():
            P[known_user] = np.stack([latents[u] for u in users[known_user].tolist()])
        unknown_items = ~self._known

        def block(rows: IntArray) -> FloatArray:
            scores = P[rows] @ self._Q[:n_items].T + self._bias[:n_items]
            scores[:, unknown_items] = -np.inf
            scores[~known_user[rows]] = -np.inf
            return scores

        return _rank_in_chunks(users, k, exclude, n_items, block)


def river_biased_mf(seed: int, n_factors: int = 16) -> Any:
    require("river", "the river-biasedmf baseline")
    from river import optim, reco

    return reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                         latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
                         l2_bias=0.0, l2_latent=0.0, seed=seed)


def river_funk_mf(seed: int, n_factors: int = 16) -> Any:
    require("river", "the river-funkmf baseline")
    from river import optim, reco

    return reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(0.05), l2=0.0,
                       initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed), seed=seed)


# ------------------------------------------------------------------------------- batch item-kNN


class BatchItemKNN(Competitor):
    """Item-kNN cosine retrained from scratch every ``refit_every`` events, the nightly-batch way.

    At each refit the binary user-item matrix of everything so far (``scipy.sparse``) gives the item
    cosine ``S = Xn^T Xn`` (columns of ``X`` scaled to unit norm), pruned to the ``neighbors`` largest
    entries per row. Between refits the similarity is frozen while user histories stay current: a
    user's score for ``j`` is ``sum_h S[h, j]`` over the items ``h`` the user interacted with. Items
    first seen after the last refit cannot be recommended (no similarity yet), and before the first
    refit every list is empty: that is the staleness a periodic batch job lives with.
    """

    name = "batch-knn"

    def __init__(self, refit_every: int = 10_000, neighbors: int = 100) -> None:
        self.refit_every = refit_every
        self.neighbors = neighbors
        self._rows: list[IntArray] = []
        self._cols: list[IntArray] = []
        self._history: dict[int, set[int]] = {}
        self._since_fit = 0
        self._S: sp.csr_matrix | None = None
        self.n_fits = 0

    def learn_many(self, batch: Batch) -> None:
        self._rows.append(batch.users)
        self._cols.append(batch.items)
        for u, i in zip(batch.users.tolist(), batch.items.tolist()):
            self._history.setdefault(u, set()).add(i)
        self._since_fit += len(batch.users)
        if self._since_fit >= self.refit_every:
            self.fit()

    def fit(self) -> None:
        """Recompute the pruned item cosine from every interaction so far."""
        users, items = np.concatenate(self._rows), np.concatenate(self._cols)
        self._rows, self._cols = [users], [items]
        shape = (int(users.max()) + 1, int(items.max()) + 1)
        X = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=shape)
        X.data[:] = 1.0  # binary: duplicates were summed
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        Xn = X @ sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
        S = (Xn.T @ Xn).tocsr()
        S.setdiag(0.0)
        S.eliminate_zeros()
        self._S = _prune_rows(S, self.neighbors)
        self._since_fit = 0
        self.n_fits += 1

    def recommend_many(self, users: IntArray, k: int, exclude: Sequence[IntArray]) -> IntArray:
        if self._S is None:
            return np.full((len(users), k), -1, dtype=np.int64)
        S = self._S
        n_items = S.shape[0]
        hist = [[h for h in self._history.get(u, ()) if h < n_items] for u in users.tolist()]

        def block(rows: IntArray) -> FloatArray:
            parts = [hist[r] for r in rows.tolist()]
            indptr = np.cumsum([0] + [len(p) for p in parts])
            H = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
                               if indptr[-1] else np.empty(0, np.int64), indptr), shape=(len(rows), n_items))
            scores = (H @ S).toarray()
            scores[scores <= 0.0] = -np.inf  # not a neighbour of anything the user touched
            return scores

        return _rank_in_chunks(users, k, exclude, n_items, block)


def _prune_rows(S: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the ``keep`` largest entries of each row of a CSR matrix."""
    lengths = np.diff(S.indptr)
    if lengths.max(initial=0) <= keep:
        return S
    mask = np.ones(S.nnz, dtype=bool)
    for r in np.flatnonzero(lengths > keep).tolist():
        a, b = S.indptr[r], S.indptr[r + 1]
        drop = np.argpartition(-S.data[a:b], keep)[keep:]
        mask[a + drop] = False
    S.data[~mask] = 0.0
    S.eliminate_zeros()
    return S


# ------------------------------------------------------------------------------- registry

#: The competitors ``stream-rec evaluate`` runs by default, in the order tables and plots list them.
MODEL_NAMES = ("fused", "mf", "cooc", "recent", "category", "popularity", "decayed-popularity", "river-biasedmf",
               "river-funkmf", "batch-knn")
#: References run on request: the same models with matrix factorisation scoring every item.
REFERENCE_NAMES = ("fused-exact", "mf-exact")


def build_variants(variants: Sequence[Variant], vocab: Vocabulary, settings: Settings) -> dict[str, Competitor]:
    """The fused model once per A/B variant, named ``fused:<variant>``, each replaying the whole log."""
    alone = dataclasses.replace(settings, variants="")
    return {f"fused:{v.name}": ServiceModel(f"fused:{v.name}", alone, vocab, variant=v) for v in variants}


def build(names: Sequence[str], vocab: Vocabulary, settings: Settings, *, refit_every: int = 10_000) -> dict[str, Competitor]:
    """The named competitors, configured from ``settings`` (seeded by ``settings.seed``)."""
    unknown = [n for n in names if n not in MODEL_NAMES + REFERENCE_NAMES]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} (expected some of: {', '.join(MODEL_NAMES + REFERENCE_NAMES)})")
    exact = dataclasses.replace(settings, mf_index_above=0)
    factories: dict[str, Callable[[], Competitor]] = {
        "fused": lambda: ServiceModel("fused", settings, vocab),
        "fused-exact": lambda: ServiceModel("fused-exact", exact, vocab),
        "mf": lambda: ServiceModel("mf", settings, vocab, sources=("mf",)),
        "mf-exact": lambda: ServiceModel("mf-exact", exact, vocab, sources=("mf",)),
        "cooc": lambda: ServiceModel("cooc", settings, vocab, sources=("cooc",)),
        "recent": lambda: ServiceModel("recent", settings, vocab, sources=("recent",)),
        "category": lambda: ServiceModel("category", settings, vocab, sources=("category",)),
        "popularity": Popularity,
        "decayed-popularity": lambda: DecayedPopularityModel(settings),
        "river-biasedmf": lambda: RiverMF("river-biasedmf", river_biased_mf(settings.seed), seed=settings.seed),
        "river-funkmf": lambda: RiverMF("river-funkmf", river_funk_mf(settings.seed), seed=settings.seed),
        "batch-knn": lambda: BatchItemKNN(refit_every=refit_every),
    }
    return {name: factories[name]() for name in names}
