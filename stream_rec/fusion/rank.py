"""One user's fused list, compiled: each source's list gathered into a union (:func:`_gather`, matrix
factorisation's last), the fused scores (:func:`fused_scores`), the best and the explored items
(:func:`fuse_scored`); :func:`fuse` for one list, :func:`rank_and_measure` for the learning loop."""

from __future__ import annotations

import numpy as np
from numba import njit

from stream_rec.engine.handover import (COUNT, GO, HANDED, LISTED, MEASURE, MEASURED, SEG, SIZE, THREADS, UNION,
                                        store_release, wait_for)
from stream_rec.fusion.explore import EXPLORE_STEP, PICKED, pick_new
from stream_rec.fusion.measure import measure_gathered
from stream_rec.fusion.policy import (EXPLORE_BIT, LEARNED, MF, N_SOURCES, RRF_K, chosen_weighting, learned_score,
                                      segment, source_weight)
from stream_rec.fusion.scratch import FusionParams, Scratch
from stream_rec.models._kernels import INLINE, JIT, select_sparse
from stream_rec.models.cooc import CoocState
from stream_rec.models.mf import MFState, mf_top
from stream_rec.models.popularity import PopularityState
from stream_rec.sources import gather_each
from stream_rec.types import FloatArray, IntArray


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
    when done (:func:`clear_ranks`).

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
def clear_ranks(sc: Scratch, n_union: int) -> None:
    for s in range(N_SOURCES):
        sc.ranks[s, :n_union] = 0


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
    clear_ranks(sc, n_union)
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
    :mod:`stream_rec.engine.handover`) the other thread makes matrix factorisation's list meanwhile
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
            clear_ranks(sc, n_union)
            n_union = _union(mf, cooc, pop, sc, side, sync, fp, user, has_history, n_items, top_n)  # measured: has one
            if n_union < 0:
                return -1
        measure_gathered(seg, sc, sc, fp, item, n_union, top_n, top_explore)
    if handed:
        sync[HANDED] = n_union + 1
    else:
        clear_ranks(sc, n_union)
    return n


@njit(**INLINE)
def measured(sc: Scratch, sync: IntArray) -> bool:
    """Once the other thread has measured the union :func:`rank_and_measure` handed it (if any), clear
    it; ``False`` if that thread gave up."""
    if sync[HANDED] == 0:
        return True
    if not wait_for(sync, MEASURED, sync[GO]):
        return False
    clear_ranks(sc, sync[HANDED] - 1)
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
    n_picked = pick_new(cooc, pop, sc, fp, user, n_pool, k, n_explore)

    n_out = 0
    for r in range(n_pool):  # explore slots nobody could fill went back to exploitation
        it = sc.li[r]
        if n_out < k - n_picked and (sc.mask[it] & PICKED) == 0:
            out_i[n_out], out_s[n_out], out_m[n_out] = it, sc.ls[r], sc.mask[it] & ((1 << N_SOURCES) - 1)
            n_out += 1
    base = out_s[n_out - 1] if n_out > 0 else 0.0
    for r in range(n_picked):
        out_i[n_out], out_s[n_out], out_m[n_out] = sc.fresh[r], base - EXPLORE_STEP * (r + 1), 1 << EXPLORE_BIT
        n_out += 1

    for c in range(n_union):
        sc.mask[sc.union[c]] = 0
    for r in range(n_picked):
        sc.mask[sc.fresh[r]] = 0
    return n_out
