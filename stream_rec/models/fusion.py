"""Blend the sources into one ranked list, with a few exploration slots.

Scores of different sources live on unrelated scales (dot products, cosine sums, decayed counts), so
they are fused by **weighted reciprocal-rank fusion**: an item ranked ``r`` (0-based) by source ``s``
earns ``weight_s / (RRF_K + r + 1)``, summed over sources. Only ranks matter, and an item several
sources agree on rises above one that a single source ranks first.

The whole ranking of one user is one compiled function, :func:`fuse`: each source's top list, the
fusion, the exploration draw. The worker calls it once per touched user and ``stream-rec evaluate``
once per scored event, so both rank with the very same code.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import as_index
from stream_rec.models._kernels import JIT, select_sparse, stream_key, uniform
from stream_rec.models.cooc import CoOccurrence, CoocState, cooc_top
from stream_rec.models.mf import ImplicitMF, MFState, mf_top
from stream_rec.models.popularity import DecayedPopularity, PopularityState, pop_is_new, pop_top
from stream_rec.types import FloatArray, IntArray

#: The customary RRF constant (Cormack et al. 2009): damps the gap between the very top ranks.
RRF_K = 60.0
#: The sources, in the order of their bit in a list's source mask (and of names in its labels).
SOURCES = ("mf", "cooc", "popular")
MF, COOC, POPULAR_BIT = 0, 1, 2
#: Name of the source used for users without history, for filling short lists and for exploration.
POPULAR = "popular"
EXPLORE = "explore"
#: Bit of the source mask marking an exploration slot.
EXPLORE_BIT = 3
#: Exploration items score this far below each other and below the last exploited item.
_EXPLORE_STEP = 1e-9
# Transient marks in the mask array while one list is assembled (cleared before returning).
_TAKEN = 1 << 8
_PICKED = 1 << 9
_TAG_EXPLORE = 4


class Scratch(NamedTuple):
    """Work arrays of :func:`fuse`, sized to the catalogue (and to the list depth); kept all-clear between calls."""

    excluded: np.ndarray  # bool, per item: set by the caller for the user's excluded items
    fused: FloatArray
    mask: IntArray
    union: IntArray
    acc: FloatArray
    mark: np.ndarray  # bool
    cand: IntArray
    mf_scores: np.ndarray  # float32
    fresh: IntArray
    buf_s: FloatArray  # a selection's survivors
    buf_i: IntArray
    ls: FloatArray  # one source's list, depth-sized
    li: IntArray


def new_scratch(n_items: int, depth: int) -> Scratch:
    n, d = max(n_items, 1), max(depth, 1)
    return Scratch(np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n),
                   np.zeros(n, bool), np.zeros(n + 1, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64),
                   np.zeros(n), np.zeros(n, np.int64), np.zeros(d), np.zeros(d, np.int64))


class FusionParams(NamedTuple):
    weights: FloatArray  # per source, in SOURCES order; 0 disables a source
    depth: int  # candidates read from each source (popular: at least k)
    max_age_s: float  # exploration: an item is new this long after its first event...
    max_events: int  # ...and while it has at most this many events
    rng_key: np.uint64
    rng_counter: IntArray  # (1,): exploration draws so far


@njit(**JIT)
def fuse(mf: MFState, cooc: CoocState, pop: PopularityState, sc: Scratch, fp: FusionParams, user: int,
         has_history: bool, n_items: int, k: int, n_explore: int, out_i: IntArray, out_s: FloatArray,
         out_m: IntArray) -> int:
    """The fused top-``k`` of ``user`` into ``out_*`` (items, scores, source masks); returns the count.

    ``sc.excluded`` must hold the user's excluded items. Exploitation comes first, by fused score
    (ties: lower index); then up to ``n_explore`` new items drawn at random, scored just below.
    """
    n_union = 0
    for s in range(3):
        w = fp.weights[s]
        if w <= 0.0 or (s != POPULAR_BIT and (user < 0 or not has_history)):
            continue
        if s == MF:
            if user >= len(mf.user_seen) or not mf.user_seen[user]:
                continue
            m = mf_top(mf, user, n_items, fp.depth, sc.excluded, sc.mf_scores, sc.buf_s, sc.buf_i, sc.ls, sc.li)
        elif s == COOC:
            m = cooc_top(cooc, user, fp.depth, sc.excluded, sc.acc, sc.mark, sc.cand, sc.buf_s, sc.buf_i, sc.ls, sc.li)
        else:
            m = pop_top(pop, n_items, max(fp.depth, k), sc.excluded, sc.buf_s, sc.buf_i, sc.ls, sc.li)
        for r in range(m):
            it = sc.li[r]
            if sc.mask[it] == 0:
                sc.union[n_union] = it
                n_union += 1
                sc.fused[it] = 0.0
            sc.fused[it] += w / (RRF_K + r + 1.0)
            sc.mask[it] |= 1 << s

    # The k best of the union, best first, into ls / li.
    for c in range(n_union):
        sc.mark[sc.union[c]] = True
    n_pool = select_sparse(sc.fused, sc.union, n_union, sc.mark, sc.excluded, k, sc.buf_s, sc.buf_i, sc.ls, sc.li)
    for c in range(n_union):
        sc.mark[sc.union[c]] = False

    # Exploration: new items outside the exclusions and outside the first k - n_explore exploited.
    n_picked = 0
    if n_explore > 0:
        for r in range(min(n_pool, k - n_explore)):
            sc.mask[sc.li[r]] |= _TAKEN
        # Items stop being new as time passes and events add up, never the other way round: the
        # popularity model's list of young items is pruned here, in place and in order.
        n_fresh, kept = 0, 0
        for r in range(pop.sizes[1]):
            i = pop.fresh[r]
            if pop_is_new(pop, i, fp.max_age_s, fp.max_events):
                pop.fresh[kept] = i
                kept += 1
                if not sc.excluded[i] and (sc.mask[i] & _TAKEN) == 0:
                    sc.fresh[n_fresh] = i
                    n_fresh += 1
        pop.sizes[1] = kept
        n_picked = min(n_explore, n_fresh)
        for r in range(n_picked):  # a partial Fisher-Yates shuffle, seeded and counter-based
            j = r + int(uniform(fp.rng_key, fp.rng_counter[0]) * (n_fresh - r))
            fp.rng_counter[0] += 1
            sc.fresh[r], sc.fresh[j] = sc.fresh[j], sc.fresh[r]
            sc.mask[sc.fresh[r]] |= _PICKED

    n_out = 0
    for r in range(n_pool):  # explore slots nobody could fill went back to exploitation
        it = sc.li[r]
        if n_out < k - n_picked and (sc.mask[it] & _PICKED) == 0:
            out_i[n_out], out_s[n_out], out_m[n_out] = it, sc.ls[r], sc.mask[it] & 7
            n_out += 1
    base = out_s[n_out - 1] if n_out > 0 else 0.0
    for r in range(n_picked):
        out_i[n_out], out_s[n_out], out_m[n_out] = sc.fresh[r], base - _EXPLORE_STEP * (r + 1), 1 << EXPLORE_BIT
        n_out += 1

    for c in range(n_union):
        sc.mask[sc.union[c]] = 0
    for r in range(n_picked):
        sc.mask[sc.fresh[r]] = 0
    return n_out


class Fusion:
    """Weighted reciprocal-rank fusion of the sources, plus seeded exploration of new items.

    Parameters
    ----------
    sources
        Named models among ``"mf"`` (:class:`ImplicitMF`), ``"cooc"`` (:class:`CoOccurrence`) and
        ``"popular"`` (:class:`DecayedPopularity`). ``"popular"`` serves users without history, fills
        short lists and supplies exploration candidates; a source left out takes no part.
    weights
        Per-source weight in the fusion (default 1.0 each; 0 disables a source).
    candidates_per_source
        Depth read from each source (``"popular"`` is read at least ``k`` deep so lists fill up).
    explore
        Fraction of the ``k`` slots (``round(explore * k)``) given to new, rarely seen items.
    explore_max_age_s
        An item counts as new for this long after its first event.
    seed
        Seeds the exploration draws; with ``explore=0`` the output is fully deterministic.
    explore_max_events
        An item stops being an exploration candidate after this many events.

    Examples
    --------
    >>> import numpy as np
    >>> pop = DecayedPopularity()
    >>> pop.learn_many(np.zeros(6), np.array([1, 1, 1, 2, 2, 3]), np.ones(6), np.zeros(6))
    >>> fusion = Fusion({"popular": pop}, explore=0.0)
    >>> items, scores, labels = fusion.recommend(-1, k=2, exclude=np.array([1]))
    >>> items.tolist(), labels
    ([2, 3], [('popular',), ('popular',)])
    """

    def __init__(
        self,
        sources: Mapping[str, object],
        weights: Mapping[str, float] | None = None,
        candidates_per_source: int = 30,
        explore: float = 0.1,
        explore_max_age_s: float = 86400.0,
        seed: int = 0,
        explore_max_events: int = 50,
    ) -> None:
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown source {sorted(unknown)[0]!r} (expected some of {', '.join(SOURCES)})")
        # A source left out is an empty stand-in with weight 0, so the compiled code has one shape.
        self.mf: ImplicitMF = sources.get("mf") or ImplicitMF(n_factors=1)  # type: ignore[assignment]
        self.cooc: CoOccurrence = sources.get("cooc") or CoOccurrence(history_size=1, max_neighbors=1)  # type: ignore[assignment]
        self.popular: DecayedPopularity = sources.get("popular") or DecayedPopularity()  # type: ignore[assignment]
        chosen = {name: 1.0 for name in sources} | dict(weights or {})
        self.weights = np.array([chosen.get(name, 0.0) if name in sources else 0.0 for name in SOURCES])
        self.candidates_per_source = candidates_per_source
        self.explore = explore
        self.explore_max_age_s = explore_max_age_s
        self.explore_max_events = explore_max_events
        self.seed = seed
        self._rng_key = stream_key(seed, _TAG_EXPLORE)
        self._rng_counter = np.zeros(1, dtype=np.int64)
        self._scratch = new_scratch(0, 0)
        self._reserved = 0  # every source has room for this many items

    def n_explore(self, k: int) -> int:
        """Exploration slots in a list of ``k``."""
        return max(0, round(self.explore * k))

    def params(self) -> FusionParams:
        return FusionParams(self.weights, self.candidates_per_source, self.explore_max_age_s,
                            self.explore_max_events, self._rng_key, self._rng_counter)

    def prepare(self, k: int, n_items: int | None = None) -> tuple[int, Scratch]:
        """Size every source and the scratch to the catalogue: ``(n_items, scratch)`` for :func:`fuse`.

        ``n_items`` is the number of item indices in use (default: the largest capacity of a source).
        """
        if n_items is None:
            n_items = max(len(self.mf.state.item_seen), len(self.cooc.state.seen), len(self.popular.state.seen))
        if n_items > self._reserved:  # growth is rare: skip three models' checks on every list
            self.mf.reserve(0, n_items)
            self.cooc.reserve(0, n_items)
            self.popular.reserve(n_items)
            self._reserved = n_items
        depth = max(self.candidates_per_source, k)
        if len(self._scratch.excluded) < n_items or len(self._scratch.ls) < depth:
            self._scratch = new_scratch(max(n_items, 2 * len(self._scratch.excluded)), max(depth, len(self._scratch.ls)))
        return n_items, self._scratch

    def recommend(
        self, user: int, k: int, exclude: IntArray | None = None, has_history: bool = True,
        n_items: int | None = None,
    ) -> tuple[IntArray, FloatArray, list[tuple[str, ...]]]:
        """Top-``k`` items, their fused scores (non-increasing) and the sources that proposed each.

        Exactly ``k`` items come back whenever the sources know ``k`` items outside ``exclude``.
        Exploration items come last, labelled ``("explore",)``.
        """
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64), []
        n_items, sc = self.prepare(k, n_items)
        ex = as_index(exclude if exclude is not None else [])
        ex = ex[(ex >= 0) & (ex < n_items)]
        out_i, out_s, out_m = np.empty(k, np.int64), np.empty(k), np.empty(k, np.int64)
        sc.excluded[ex] = True
        try:
            n = fuse(self.mf.state, self.cooc.state, self.popular.state, sc, self.params(), user, has_history,
                     n_items, k, self.n_explore(k), out_i, out_s, out_m)
        finally:
            sc.excluded[ex] = False
        return out_i[:n], out_s[:n], [label(m) for m in out_m[:n].tolist()]


@functools.cache
def label(mask: int) -> tuple[str, ...]:
    """The sources named by a list entry's mask: ``("mf", "cooc")``, ``("explore",)``, ..."""
    if mask >> EXPLORE_BIT & 1:
        return (EXPLORE,)
    return tuple(name for b, name in enumerate(SOURCES) if mask >> b & 1)
