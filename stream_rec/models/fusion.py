"""Blend the sources into one ranked list, with a few exploration slots.

Scores of different sources live on unrelated scales (dot products, cosine sums, decayed counts), so
fusion works on ranks. Two kinds of policy turn the sources' ranks into one order:

* **weighted reciprocal-rank fusion**: an item ranked ``r`` (1-based) by source ``s`` earns
  ``weight_s / (RRF_K + r)``, summed over sources, so an item several sources agree on rises above
  one a single source ranks first; :data:`WEIGHT_GRID` holds 211 weightings (each source at 0, 1/4
  or 1 of its base weight);
* **the learned scorer** (:data:`LEARNED`): ``bonus_s - slope_s * log(r)`` summed over the sources that
  list the item, its parameters learned online by a softmax (top-1) likelihood step on every measured
  event (:func:`_learn_scorer`). It can say what no weighting can, e.g. "the user's own recent item
  first, whatever its rank elsewhere".

**The choice adapts online.** Every ``sample_every``-th event of a user with history is used, before
it is learned, to score every policy: each source ranks its own list once, and a policy scores
``1 / log2(rank + 2)`` when the order it would produce lists the event's item at ``rank``
(:func:`measure_gathered`). This is full-information online learning, every policy judged on every
measured event, so none needs to be tried out on users. Hits decay with a half-life of
:data:`HITS_HALF_LIFE` measured events and are kept apart for new and for returning users; lists use
the policy with the most hits once it beats equal weights by a clear margin (:func:`chosen_weighting`).
A source weighted 0 still fills lists the others cannot fill.

The whole ranking of one user is one compiled function, :func:`fuse`: each source's top list, the
fusion, the exploration draw. The worker calls it once per touched user and ``stream-rec evaluate``
once per scored event, so both rank with the very same code.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import as_index, grow
from stream_rec.models._kernels import INLINE, JIT, select_sparse, stream_key, uniform
from stream_rec.models._sync import (COUNT, GO, HANDED, LISTED, MEASURE, MEASURED, SEG, SIZE, THREADS, UNION,
                                     store_release, wait_for)
from stream_rec.models.cooc import CoOccurrence, CoocState, cooc_candidates, cooc_recent, cooc_release
from stream_rec.models.mf import ImplicitMF, MFState, mf_top
from stream_rec.models.popularity import (USER_CATEGORIES, DecayedPopularity, PopularityState, pop_category_top,
                                         pop_is_new, pop_top, user_categories)
from stream_rec.sources import gather_each, seal
from stream_rec.types import FloatArray, IntArray

#: RRF constant. The customary 60 (Cormack et al. 2009) suits long document lists; our lists are 30 deep
#: and their top ranks matter: 10 was better than 30 and 60 on MovieLens-100K and the synthetic shop.
RRF_K = 10.0
#: The sources :func:`_gather` lists (see :mod:`stream_rec.sources`), in this order; matrix
#: factorisation's list is added after theirs.
GATHERED = seal()
#: The sources, in the order of their bit in a list's source mask (and of names in its labels).
SOURCES = ("mf", *(source.name for source in GATHERED))
MF = 0
COOC, POPULAR_BIT, RECENT, CATEGORY = (SOURCES.index(name) for name in ("cooc", "popular", "recent", "category"))
N_SOURCES = len(SOURCES)
#: Name of the source used for users without history, for filling short lists and for exploration.
POPULAR = "popular"
EXPLORE = "explore"
#: Bit of the source mask marking an exploration slot.
EXPLORE_BIT = N_SOURCES
#: Measured hits halve over this many measured events of a user segment, so weights follow drift.
HITS_HALF_LIFE = 2000.0
#: Users with fewer recent items than this form the "new" segment of the hit statistics.
NEW_USER_HISTORY = 5
#: The learned scorer (the last policy, :data:`LEARNED`) gives an item that source ``s`` lists at rank
#: ``r`` (1-based) ``bonus_s - slope_s * log(r)``, summed over sources; it starts from these values.
LEARNED_SLOPE, LEARNED_BONUS = 1.0, 4.0
#: Its step size (RMSProp: each step moves a parameter by about this much) and the decay of the
#: squared-gradient average, so it keeps following drift.
LEARN_RATE = 0.01
LEARN_G2_DECAY = 0.999
#: A source weighted 0 by the chosen weighting still ranks, this far behind, to fill short lists.
_FILL_WEIGHT = 1e-6


def _weight_grid() -> FloatArray:
    """Equal weights first (the choice until another weighting clearly has more hits), then every
    other combination of 0, 1/4 and 1 per source with at least one source at 1."""
    levels = (0.0, 0.25, 1.0)
    rest = [w for w in itertools.product(levels, repeat=len(SOURCES)) if max(w) == 1.0 and min(w) < 1.0]
    return np.array([(1.0,) * len(SOURCES), *rest])


#: The weightings scored online, as multipliers of each source's base weight (211 of them).
WEIGHT_GRID = _weight_grid()
#: The policy after the grid's rows: the learned scorer. Hits are kept for every policy.
LEARNED = len(WEIGHT_GRID)
N_POLICIES = LEARNED + 1
#: An exploration candidate must earn an event per this many exploration slots it was shown in: an
#: item shown and ignored that often stops being explored.
SHOWS_PER_EVENT = 20
#: Entries of the pool of young items one list's exploration reads at most (see :func:`fuse_scored`).
EXPLORE_SCAN = 256
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
    ranks: IntArray  # (sources, sources x depth): see :func:`_gather`
    terms: FloatArray  # (sources, sources x depth): :func:`measure_gathered`'s RRF terms
    grid: FloatArray  # (sources, len(WEIGHT_GRID)): every weighting's source weights
    grid_mine: FloatArray  # (len(WEIGHT_GRID),): the measured item's fused score under each weighting
    grid_above: IntArray  # (len(WEIGHT_GRID),): union items ranked above it under each weighting
    grid_fx: FloatArray  # (len(WEIGHT_GRID),): one union item's fused score under each weighting
    w: FloatArray  # (sources,): the chosen weighting's source weights
    learned: FloatArray  # (sources x depth,): the learned scorer's score of each union item
    grad: FloatArray  # (2 x sources,): its gradient on one event
    cats: IntArray  # (USER_CATEGORIES,): the user's recent categories (the category source's)


def new_scratch(n_items: int, depth: int) -> Scratch:
    n, d = max(n_items, 1), max(depth, 1)
    return Scratch(np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n),
                   np.zeros(n, bool), np.zeros(n + 1, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64),
                   np.zeros(n), np.zeros(n, np.int64), np.zeros(d), np.zeros(d, np.int64),
                   np.zeros((N_SOURCES, N_SOURCES * d), np.int64), np.zeros((N_SOURCES, N_SOURCES * d)),
                   np.zeros((N_SOURCES, len(WEIGHT_GRID))), np.zeros(len(WEIGHT_GRID)),
                   np.zeros(len(WEIGHT_GRID), np.int64), np.zeros(len(WEIGHT_GRID)), np.zeros(N_SOURCES),
                   np.zeros(N_SOURCES * d), np.zeros(2 * N_SOURCES), np.full(USER_CATEGORIES, -1, np.int64))


class FusionParams(NamedTuple):
    weights: FloatArray  # per source, in SOURCES order; 0 disables a source
    depth: int  # candidates read from each source (popular: at least k)
    rng_key: np.uint64
    rng_counter: IntArray  # (1,): exploration draws so far
    hits: FloatArray  # (2, N_POLICIES): decayed hits per user segment (new, returning) and policy
    adapt: bool  # choose the policy with the most hits (else the base weights, fixed)
    events: IntArray  # (1,): events of known users seen by the learning loop (for the sampling)
    rebuy_after_s: float  # a bought item may come back this long after the purchase (0: never)
    blocked: IntArray  # items no list may hold (marked unavailable)
    shown: IntArray  # per item: exploration slots it was shown in
    sample_every: int  # one event in this many (of users with history) is measured before it is learned
    theta: FloatArray  # (2, 2 x sources): the learned scorer per segment, (slope, bonus) per source
    theta_g2: FloatArray  # (2, 2 x sources): running mean of its squared gradients (RMSProp)
    gathered: tuple  # the markers of the registered sources, with their own state (see :mod:`stream_rec.sources`)


@njit(**INLINE)
def segment(hist_len: IntArray, user: int) -> int:
    """0 for a user with fewer than :data:`NEW_USER_HISTORY` recent items (the co-occurrence model's
    ``hist_len``), else 1."""
    return 0 if user < 0 or user >= len(hist_len) or hist_len[user] < NEW_USER_HISTORY else 1


@njit(**INLINE)
def learned_score(theta: FloatArray, weights: FloatArray, ranks: IntArray, seg: int, x: int) -> float:
    """The learned scorer's score of union item ``x``: ``bonus_s - slope_s * log(rank)`` over the sources
    in use that list it.

    Helpers called per item take arrays, never a state tuple: handing a tuple over costs reference
    counting per array per call (~0.15 us for a tuple of fifteen; a per-item helper taking one made
    exploration's scan of 183 young items 31 us instead of 0.3)."""
    v = 0.0
    for s in range(N_SOURCES):
        r = ranks[s, x]
        if r > 0 and weights[s] > 0.0:
            v += theta[seg, 2 * s + 1] - theta[seg, 2 * s] * np.log(r)
    return v


@njit(**INLINE)
def source_weight(weights: FloatArray, adapt: bool, s: int, row: int) -> float:
    """Source ``s``'s fusion weight under row ``row`` of :data:`WEIGHT_GRID` (see
    :func:`chosen_weighting`): its base weight times the row's multiplier (0 for a source not in use)."""
    w = weights[s]
    if w <= 0.0 or not adapt or row >= len(WEIGHT_GRID):
        return w
    return w * max(WEIGHT_GRID[row, s], _FILL_WEIGHT)


@njit(**INLINE)
def chosen_weighting(hits: FloatArray, seg: int) -> int:
    """The policy lists use for segment ``seg`` (a row of :data:`WEIGHT_GRID`, or :data:`LEARNED`): the
    one with the most hits, if it beats equal weights (row 0) by more than one standard deviation of a
    count; else equal weights.

    Of 212 noisy estimates the largest is biased upwards: the margin keeps equal weights unless the
    evidence for another policy is clear."""
    best = 0
    for c in range(1, N_POLICIES):
        if hits[seg, c] > hits[seg, best]:
            best = c
    return best if hits[seg, best] > hits[seg, 0] + np.sqrt(hits[seg, 0]) else 0


@njit(**INLINE)
def _merge(li: IntArray, m: int, s: int, ranks: IntArray, union: IntArray, mask: IntArray, n_union: int) -> int:
    """Add source ``s``'s list ``li[:m]`` to the union: ``ranks[s, x]`` gets ``1 +`` its rank of union
    item ``x``, new items are appended (``mask[it]``: the item's place in the union, plus one). Returns
    the union's new size."""
    for r in range(m):
        it = li[r]
        if mask[it] == 0:
            union[n_union] = it
            n_union += 1
            mask[it] = n_union
        ranks[s, mask[it] - 1] = r + 1
    return n_union


@njit(**INLINE)
def _gather(cooc: CoocState, pop: PopularityState, sc: Scratch, fp: FusionParams, user: int, has_history: bool,
            n_items: int, k: int) -> int:
    """Each source in use but matrix factorisation ranks its own list for ``user``; their union goes to
    ``sc.union`` (returns its size) and ``sc.ranks[s, x]`` gets ``1 +`` the rank source ``s`` gave
    union item ``x`` (0: not listed). :func:`_close_union` then adds matrix factorisation's list,
    made here or on another thread meanwhile (:func:`mf_list`), and clears ``sc.mask``.

    What :func:`fuse` and :func:`rank_and_measure` start from; they clear ``sc.ranks[:, :size]``
    when done (:func:`_clear_ranks`).

    Each source is called in its own block with only the arrays it reads, and takes arrays, never a
    state tuple (see :func:`learned_score`). Written as one loop over the sources dispatching on ``s``,
    each call paid for taking every source's arrays out of the tuples (reference counting): in the
    evaluate loop on MovieLens-100K the user's recent items, all bought, took 0.54 us to list nothing
    (cycle counter around each source), 0.05 us called with their own arrays.
    """
    known = user >= 0 and has_history
    return gather_each(fp.gathered, cooc, pop, sc, fp, user, known, n_items, k, _merge, sc.ranks, sc.union, sc.mask)


@njit(**INLINE)
def mf_list(mf: MFState, fp: FusionParams, user: int, has_history: bool, n_items: int, excluded: np.ndarray,
            into: Scratch) -> int:
    """Matrix factorisation's list for ``user`` (none for a user it has not learned) into ``into.ls`` /
    ``into.li``, with ``into``'s selection buffers; returns its length. It reads only the model's
    state and ``excluded``, so it can run on another thread while :func:`_gather` ranks the rest."""
    if fp.weights[MF] > 0.0 and user >= 0 and has_history and user < len(mf.user_seen) and mf.user_seen[user]:
        return mf_top(mf.P, mf.Q, mf.index, mf.params, mf.item_seen, user, n_items, fp.depth, excluded,
                      into.mf_scores, into.buf_s, into.buf_i, into.ls, into.li)
    return 0


@njit(**INLINE)
def _close_union(sc: Scratch, mf_li: IntArray, m: int, n_union: int) -> int:
    """Add matrix factorisation's list ``mf_li[:m]`` to :func:`_gather`'s union (last, so the union's
    order does not depend on which thread made it) and clear ``sc.mask``; returns the union's size."""
    n_union = _merge(mf_li, m, MF, sc.ranks, sc.union, sc.mask, n_union)
    for c in range(n_union):
        sc.mask[sc.union[c]] = 0
    return n_union


@njit(**JIT)
def _union(mf: MFState, cooc: CoocState, pop: PopularityState, sc: Scratch, side: Scratch, sync: IntArray,
           fp: FusionParams, user: int, has_history: bool, n_items: int, k: int) -> int:
    """:func:`_gather` then :func:`_close_union` with matrix factorisation's list for the event in hand,
    in ``side.li``: made here (one thread; ``side`` is ``sc``) or taken from the other thread once it
    is there. Returns the union's size, -1 if the other thread gave up."""
    n_union = _gather(cooc, pop, sc, fp, user, has_history, n_items, k)
    if sync[THREADS] > 1:
        if not wait_for(sync, LISTED, sync[GO]):
            return -1
        m = sync[COUNT]
    else:
        m = mf_list(mf, fp, user, has_history, n_items, sc.excluded, side)
    return _close_union(sc, side.li, m, n_union)


@njit(**INLINE)
def _clear_ranks(sc: Scratch, n_union: int) -> None:
    for s in range(N_SOURCES):
        sc.ranks[s, :n_union] = 0


@njit(**JIT)
def measure_gathered(seg: int, sc: Scratch, work: Scratch, fp: FusionParams, item: int, n_union: int, k: int,
                     n_explore: int) -> None:
    """Score every weighting of :data:`WEIGHT_GRID` on the event ``(user, item)``: ``1 / log2(rank + 2)``
    when the fusion it produces would list ``item`` at ``rank`` among the ``k - n_explore`` exploited
    slots; then one learning step of the learned scorer on the event.

    Called before the event is learned, for a user with history (in segment ``seg``), on the lists
    :func:`_gather` left (``sc.union``, ``sc.ranks``, only read), with ``sc.excluded`` holding the user's
    exclusions, exactly as ranking sees them. Its own work arrays are ``work``'s (``sc`` itself, or the
    other thread's scratch when that thread measures while this one fuses: see :func:`rank_and_measure`).

    Every weighting's fused score of every union item is a sum of at most five products, so the whole
    grid costs ``len(WEIGHT_GRID) * n_union`` multiply-adds: no matrix library call, no allocation.
    """
    if not fp.adapt:
        return
    decay = 0.5 ** (1.0 / HITS_HALF_LIFE)
    target = -1
    for x in range(n_union):
        if sc.union[x] == item:
            target = x
    if target < 0:  # no policy can list it
        for g in range(N_POLICIES):
            fp.hits[seg, g] *= decay
        return
    terms = work.terms  # (sources, union): 1 / (RRF_K + rank + 1), 0 where a source did not list the item
    for s in range(N_SOURCES):
        for x in range(n_union):
            r = sc.ranks[s, x]
            terms[s, x] = 1.0 / (RRF_K + r) if r > 0 else 0.0
    grid, mine, above = work.grid, work.grid_mine, work.grid_above
    n_grid = len(WEIGHT_GRID)
    for g in range(n_grid):
        for s in range(N_SOURCES):
            grid[s, g] = max(WEIGHT_GRID[g, s], _FILL_WEIGHT) * fp.weights[s]
    for g in range(n_grid):
        mine[g], above[g] = 0.0, 0
    for s in range(N_SOURCES):
        t = terms[s, target]
        for g in range(n_grid):
            mine[g] += grid[s, g] * t
    fx = work.grid_fx
    learned = work.learned
    for x in range(n_union):
        learned[x] = learned_score(fp.theta, fp.weights, sc.ranks, seg, x)
    above_learned, above_all = 0, 0
    for x in range(n_union):
        before = sc.union[x] < item  # wins a tie
        above_learned += (learned[x] > learned[target]) | ((learned[x] == learned[target]) & before)
        # Weights are never negative: an item no source ranks better than the target's is above it
        # under no weighting, one no source ranks worse under every one (ties aside); only the others
        # need the grid.
        better, worse = False, False
        for s in range(N_SOURCES):
            better = better or terms[s, x] > terms[s, target]
            worse = worse or terms[s, x] < terms[s, target]
        if not (better and worse):
            if better or (not worse and before):
                above_all += 1
            continue
        t = terms[0, x]
        for g in range(n_grid):  # innermost over the grid: vectorised, branch-free
            fx[g] = grid[0, g] * t
        for s in range(1, N_SOURCES):
            t = terms[s, x]
            for g in range(n_grid):
                fx[g] += grid[s, g] * t
        for g in range(n_grid):
            above[g] += (fx[g] > mine[g]) | ((fx[g] == mine[g]) & before)
    for g in range(n_grid):
        above[g] += above_all
    slots = k - n_explore
    for g in range(n_grid):
        hit = 1.0 / np.log2(above[g] + 2.0) if above[g] < slots else 0.0
        fp.hits[seg, g] = fp.hits[seg, g] * decay + hit
    hit = 1.0 / np.log2(above_learned + 2.0) if above_learned < slots else 0.0
    fp.hits[seg, LEARNED] = fp.hits[seg, LEARNED] * decay + hit
    _learn_scorer(sc, work, fp, seg, n_union, target)


@njit(**INLINE)
def _learn_scorer(sc: Scratch, work: Scratch, fp: FusionParams, seg: int, n_union: int, target: int) -> None:
    """One RMSProp step of the learned scorer on an event whose item is union item ``target``: raise the
    log-likelihood of the softmax over the union's scores (``work.learned``) picking ``target``."""
    top = -np.inf
    for x in range(n_union):
        top = max(top, work.learned[x])
    z = 0.0
    for x in range(n_union):
        z += np.exp(work.learned[x] - top)
    grad = work.grad
    grad[:] = 0.0
    for x in range(n_union):
        # d log p(target) / d score_x = [x is target] - p(x)
        d = (1.0 if x == target else 0.0) - np.exp(work.learned[x] - top) / z
        for s in range(N_SOURCES):
            r = sc.ranks[s, x]
            if r > 0:
                grad[2 * s] -= np.log(r) * d
                grad[2 * s + 1] += d
    for c in range(2 * N_SOURCES):
        if fp.weights[c // 2] <= 0.0:
            continue
        g = grad[c]
        fp.theta_g2[seg, c] = LEARN_G2_DECAY * fp.theta_g2[seg, c] + (1.0 - LEARN_G2_DECAY) * g * g
        fp.theta[seg, c] += LEARN_RATE * g / (np.sqrt(fp.theta_g2[seg, c]) + 1e-12)


@njit(**JIT)
def fuse(mf: MFState, cooc: CoocState, pop: PopularityState, sc: Scratch, fp: FusionParams, user: int,
         has_history: bool, n_items: int, k: int, n_explore: int, out_i: IntArray, out_s: FloatArray,
         out_m: IntArray) -> int:
    """The fused top-``k`` of ``user`` into ``out_*`` (items, scores, source masks); returns the count.

    ``sc.excluded`` must hold the user's excluded items. Exploitation comes first, by fused score
    (ties: lower index); then up to ``n_explore`` new items drawn at random, scored just below.
    """
    n_union = _union(mf, cooc, pop, sc, sc, np.zeros(SIZE, np.int64), fp, user, has_history, n_items, k)
    fused_scores(sc, fp, segment(cooc.hist_len, user), n_union)
    n = fuse_scored(cooc, pop, sc, fp, user, n_union, k, n_explore, out_i, out_s, out_m)
    _clear_ranks(sc, n_union)
    return n


@njit(**INLINE)
def rank_and_measure(mf: MFState, cooc: CoocState, pop: PopularityState, sc: Scratch, side: Scratch, sync: IntArray,
                     fp: FusionParams, user: int, item: int, has_history: bool, n_items: int, k: int, n_explore: int,
                     rank: bool, measure: bool, top_n: int, top_explore: int, out_i: IntArray, out_s: FloatArray,
                     out_m: IntArray) -> int:
    """What the learning loop does for an event before it learns it: the user's fused top ``k`` into
    ``out_*`` if ``rank`` (returns the count, else 0), and every policy measured on the event if
    ``measure`` (a user with history; lists of the published ``top_n``, ``top_explore`` of them explored).

    With one thread (``side`` is ``sc``) everything happens here. With two (``sync``, see
    :mod:`stream_rec.models._sync`) the other thread makes matrix factorisation's list meanwhile
    (:func:`_union`) and, when the lists measured are the ranked ones (``k == top_n``), measures
    them while this one finishes the list: the fused scores are taken first (:func:`fused_scores`, all
    that reads what measuring updates), and the union is left for :func:`measured` to clear. Returns
    -1 if the other thread gave up. Inlined into its one caller: a compiled call taking the five state
    tuples costs ~1 us of reference counting, as much as a source's list."""
    measure = measure and fp.adapt
    if not (rank or measure):
        return 0
    n = 0
    n_union = _union(mf, cooc, pop, sc, side, sync, fp, user, has_history, n_items, k)
    if n_union < 0:
        return -1
    seg = segment(cooc.hist_len, user)
    if rank:
        fused_scores(sc, fp, seg, n_union)
    handed = measure and k == top_n and sync[THREADS] > 1
    if handed:
        sync[SEG], sync[UNION] = seg, n_union
        store_release(sync, MEASURE, sync[GO])
    if rank:
        n = fuse_scored(cooc, pop, sc, fp, user, n_union, k, n_explore, out_i, out_s, out_m)
    if measure and not handed:
        if k != top_n:  # the popular source reads max(depth, k) items: other lists
            _clear_ranks(sc, n_union)
            n_union = _union(mf, cooc, pop, sc, side, sync, fp, user, has_history, n_items, top_n)  # measured: has one
            if n_union < 0:
                return -1
        measure_gathered(seg, sc, sc, fp, item, n_union, top_n, top_explore)
    if handed:
        sync[HANDED] = n_union + 1
    else:
        _clear_ranks(sc, n_union)
    return n


@njit(**INLINE)
def measured(sc: Scratch, sync: IntArray) -> bool:
    """Once the other thread has measured the union :func:`rank_and_measure` handed it (if any), clear
    it; ``False`` if that thread gave up."""
    if sync[HANDED] == 0:
        return True
    if not wait_for(sync, MEASURED, sync[GO]):
        return False
    _clear_ranks(sc, sync[HANDED] - 1)
    sync[HANDED] = 0
    return True


@njit(**INLINE)
def fused_scores(sc: Scratch, fp: FusionParams, seg: int, n_union: int) -> None:
    """The fusion's first step on a gathered union: each union item's fused score and source mask into
    ``sc.fused`` / ``sc.mask``, under the policy segment ``seg`` uses now. The only step of the fusion
    that reads the measured hits and the learned scorer, which :func:`measure_gathered` then updates."""
    ranks = sc.ranks
    row = chosen_weighting(fp.hits, seg) if fp.adapt else 0
    w = sc.w  # RRF weights (unused by the learned policy)
    for s in range(N_SOURCES):
        w[s] = source_weight(fp.weights, fp.adapt, s, row)
    for x in range(n_union):
        it, fused, mask = sc.union[x], 0.0, 0
        for s in range(N_SOURCES):
            if ranks[s, x] > 0:
                fused += w[s] / (RRF_K + ranks[s, x])
                mask |= 1 << s
        if row == LEARNED:
            fused = learned_score(fp.theta, fp.weights, ranks, seg, x)
        sc.fused[it], sc.mask[it] = fused, mask


@njit(**JIT)
def fuse_scored(cooc: CoocState, pop: PopularityState, sc: Scratch, fp: FusionParams, user: int, n_union: int,
                k: int, n_explore: int, out_i: IntArray, out_s: FloatArray, out_m: IntArray) -> int:
    """The fusion's steps after :func:`fused_scores`, on the union left as it is: the ``k`` best,
    exploration, the list into ``out_*`` (returns its length)."""
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
        # The candidates come from the popularity model's pool of young items (learning sweeps out
        # those no longer new; some may still be there, so each is checked): all of it while it is
        # small, else EXPLORE_SCAN entries in a row from a random place, so a list costs the same
        # whatever the catalogue. New items of the user's own recent categories come first: an item
        # nobody has paired with anything yet reaches the people browsing its aisle.
        n_cats = user_categories(pop.category, cooc.hist_item, cooc.hist_len, user, sc.cats)
        n_fresh, n_match = 0, 0
        since = pop.clock[0] - pop.clock[2]  # the popularity model keeps the rule (see keep_new)
        seen, first, count, category, fresh, shown = pop.seen, pop.first, pop.count, pop.category, pop.fresh, fp.shown
        pool = pop.sizes[1]
        start = 0
        if pool > EXPLORE_SCAN:
            start = int(uniform(fp.rng_key, fp.rng_counter[0]) * pool)
            fp.rng_counter[0] += 1
        for r in range(min(pool, EXPLORE_SCAN)):
            i = fresh[(start + r) % pool]
            if pop_is_new(seen, first, count, i, since, pop.clock[3]):
                ignored = shown[i] >= SHOWS_PER_EVENT * count[i]
                if not sc.excluded[i] and (sc.mask[i] & _TAKEN) == 0 and not ignored:
                    sc.fresh[n_fresh] = i
                    match = False
                    for q in range(n_cats):
                        match = match or category[i] == sc.cats[q]
                    if match:  # keep the matching ones in front
                        sc.fresh[n_fresh], sc.fresh[n_match] = sc.fresh[n_match], sc.fresh[n_fresh]
                        n_match += 1
                    n_fresh += 1
        n_picked = min(n_explore, n_fresh)
        for r in range(n_picked):  # a partial Fisher-Yates shuffle, seeded and counter-based, matches first
            end = n_match if r < n_match else n_fresh
            j = r + int(uniform(fp.rng_key, fp.rng_counter[0]) * (end - r))
            fp.rng_counter[0] += 1
            sc.fresh[r], sc.fresh[j] = sc.fresh[j], sc.fresh[r]
            sc.mask[sc.fresh[r]] |= _PICKED
            fp.shown[sc.fresh[r]] += 1

    n_out = 0
    for r in range(n_pool):  # explore slots nobody could fill went back to exploitation
        it = sc.li[r]
        if n_out < k - n_picked and (sc.mask[it] & _PICKED) == 0:
            out_i[n_out], out_s[n_out], out_m[n_out] = it, sc.ls[r], sc.mask[it] & ((1 << N_SOURCES) - 1)
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
        Named models among ``"mf"`` (:class:`ImplicitMF`), ``"cooc"`` (:class:`CoOccurrence`),
        ``"popular"`` (:class:`DecayedPopularity`), ``"recent"`` (a :class:`CoOccurrence`, whose
        per-user history it ranks newest first) and ``"category"`` (a :class:`DecayedPopularity`, whose
        per-category lists it reads for the categories of the user's recent items, taken from the
        co-occurrence model's history). ``"popular"`` serves users without history, fills short lists
        and supplies exploration candidates; a source left out takes no part.
    weights
        Per-source weight in the fusion (default 1.0 each; 0 disables a source, whose model still
        serves the others: give ``"cooc"`` at weight 0 for ``"category"`` alone).
    candidates_per_source
        Depth read from each source (``"popular"`` is read at least ``k`` deep so lists fill up).
    explore
        Fraction of the ``k`` slots (``round(explore * k)``) given to new, rarely seen items. An item
        shown in exploration slots :data:`SHOWS_PER_EVENT` times per event it earned stops being
        explored (shown and ignored); one that earns events goes on.
    explore_max_age_s
        An item counts as new for this long after its first event.
    seed
        Seeds the exploration draws; with ``explore=0`` the output is fully deterministic.
    explore_max_events
        An item stops being an exploration candidate after this many events.
    adapt
        Choose the weighting online (see the module docstring); ``False`` keeps ``weights`` fixed.
    sample_every
        One event in this many, of users with history, is measured (every policy judged, the learned
        scorer trained) before it is learned: 1 learns fastest; each measurement costs the worker one
        more ranking, over the sources' candidates only, whatever the catalogue's size.
    rebuy_after_s
        The service excludes a user's purchases from their lists for this long (0: for ever); the
        fusion carries the setting to the compiled ranking.

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
        adapt: bool = True,
        rebuy_after_s: float = 0.0,
        sample_every: int = 2,
    ) -> None:
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown source {sorted(unknown)[0]!r} (expected some of {', '.join(SOURCES)})")
        # A source left out is an empty stand-in with weight 0, so the compiled code has one shape.
        self.mf: ImplicitMF = sources.get("mf") or ImplicitMF(n_factors=1)  # type: ignore[assignment]
        # "recent" reads the co-occurrence model's per-user history.
        self.cooc: CoOccurrence = (sources.get("cooc") or sources.get("recent")  # type: ignore[assignment]
                                   or CoOccurrence(history_size=1, max_neighbors=1))
        self.popular: DecayedPopularity = (sources.get("popular") or sources.get("category")  # type: ignore[assignment]
                                           or DecayedPopularity())
        chosen = {name: 1.0 for name in sources} | dict(weights or {})
        self.weights = np.array([chosen.get(name, 0.0) if name in sources else 0.0 for name in SOURCES])
        #: Each registered source's marker, holding its own state if it has one (see :mod:`stream_rec.sources`).
        self.gathered = tuple(source.make(bit) for bit, source in enumerate(GATHERED, 1))
        self.candidates_per_source = candidates_per_source
        self.explore = explore
        self.popular.keep_new(explore_max_age_s, explore_max_events)
        self.seed = seed
        self._rng_key = stream_key(seed, _TAG_EXPLORE)
        self._rng_counter = np.zeros(1, dtype=np.int64)
        self.adapt = adapt
        self.rebuy_after_s = rebuy_after_s
        self.sample_every = sample_every
        #: Items no list may hold (marked unavailable), sorted.
        self.blocked = np.zeros(0, dtype=np.int64)
        #: Exploration slots each item was shown in (kept in memory: a restart forgets them).
        self.shown = np.zeros(0, dtype=np.int64)
        #: Decayed hits per user segment (new, returning) and policy (:data:`WEIGHT_GRID`, :data:`LEARNED`).
        self.hits = np.zeros((2, N_POLICIES))
        self._events = np.zeros(1, dtype=np.int64)
        #: The learned scorer per segment: (slope, bonus) per source, and its squared-gradient averages.
        self.theta = np.tile(np.array([LEARNED_SLOPE, LEARNED_BONUS] * N_SOURCES), (2, 1))
        self.theta_g2 = np.zeros((2, 2 * N_SOURCES))
        self._scratch = new_scratch(0, 0)
        self._reserved = 0  # every source has room for this many items

    @property
    def explore_max_age_s(self) -> float:
        """An item is new this long after its first event (kept by the popularity model, whose pool of
        young items learning sweeps by the same rule)."""
        return self.popular.new_rule[0]

    @property
    def explore_max_events(self) -> int:
        """An item is new while it has at most this many events."""
        return self.popular.new_rule[1]

    def n_explore(self, k: int) -> int:
        """Exploration slots in a list of ``k``."""
        return max(0, round(self.explore * k))

    def params(self) -> FusionParams:
        return FusionParams(self.weights, self.candidates_per_source, self._rng_key, self._rng_counter, self.hits,
                            bool(self.adapt), self._events, float(self.rebuy_after_s), self.blocked, self.shown,
                            int(self.sample_every),
                            self.theta, self.theta_g2, self.gathered)

    def hits_state(self) -> bytes:
        """The adaptive fusion's state, to persist: hits, the learned scorer, then the sampling counter."""
        arrays = (self.hits, self.theta, self.theta_g2)
        return b"".join(a.astype("<f8").tobytes() for a in arrays) + int(self._events[0]).to_bytes(8, "big")

    def set_hits_state(self, data: bytes) -> bool:
        """Restore :meth:`hits_state`; ``False`` (and equal weights again) if it was written for another
        set of policies, by another version: the statistics are rebuilt from live events."""
        arrays = (self.hits, self.theta, self.theta_g2)
        if len(data) != sum(a.size for a in arrays) * 8 + 8:
            return False
        at = 0
        for a in arrays:
            a[:] = np.frombuffer(data[at : at + a.size * 8], dtype="<f8").reshape(a.shape)
            at += a.size * 8
        self._events[0] = int.from_bytes(data[at:], "big")
        return True

    def source_weights(self) -> dict[str, dict[str, object]]:
        """The policy lists use now, for new and for returning users: ``{"policy": "rrf", "weights":
        {source: weight}}`` or ``{"policy": "learned", "slope": {...}, "bonus": {...}}``."""
        out: dict[str, dict[str, object]] = {}
        for seg, seg_name in enumerate(("new", "returning")):
            row = chosen_weighting(self.hits, seg) if self.adapt else 0
            used = [(s, name) for s, name in enumerate(SOURCES) if self.weights[s] > 0]
            if row == LEARNED:
                out[seg_name] = {"policy": "learned",
                                 "slope": {name: round(float(self.theta[seg, 2 * s]), 4) for s, name in used},
                                 "bonus": {name: round(float(self.theta[seg, 2 * s + 1]), 4) for s, name in used}}
            else:
                out[seg_name] = {"policy": "rrf",
                                 "weights": {name: round(float(source_weight(self.weights, self.adapt, s, row)), 4)
                                             for s, name in used}}
        return out

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
            self.shown = grow(self.shown, n_items)
            self._reserved = n_items
        depth = max(self.candidates_per_source, k)
        if len(self._scratch.excluded) < n_items or len(self._scratch.ls) < depth:
            self._scratch = new_scratch(max(n_items, 2 * len(self._scratch.excluded)), max(depth, len(self._scratch.ls)))
        return n_items, self._scratch

    def reset_scratch(self, k: int, n_items: int) -> Scratch:
        """A new, all-clear scratch (after a ranking was interrupted half way)."""
        self._scratch = new_scratch(max(n_items, 1), max(self.candidates_per_source, k))
        return self.prepare(k, n_items)[1]

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
