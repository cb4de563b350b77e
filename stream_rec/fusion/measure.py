"""Measuring the policies online: every policy judged on a sampled event before it is learned, and the
learned scorer's step (see :mod:`stream_rec.fusion`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from stream_rec.fusion.policy import (FILL_WEIGHT, HITS_HALF_LIFE, LEARN_G2_DECAY, LEARN_RATE, LEARNED, N_POLICIES,
                                      N_SOURCES, RRF_K, WEIGHT_GRID, learned_score)
from stream_rec.fusion.scratch import FusionParams, Scratch
from stream_rec.models._kernels import INLINE, JIT


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

    Every weighting's fused score of every union item is a sum of one product per source, so the whole
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
            grid[s, g] = max(WEIGHT_GRID[g, s], FILL_WEIGHT) * fp.weights[s]
    for g in range(n_grid):
        mine[g], above[g] = 0.0, 0
    for s in range(N_SOURCES):
        t = terms[s, target]
        for g in range(n_grid):
            mine[g] += grid[s, g] * t
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
        for g in range(n_grid):  # innermost over the grid: vectorised, branch-free
            f = grid[0, g] * terms[0, x]
            for s in range(1, N_SOURCES):  # a constant count: unrolled
                f += grid[s, g] * terms[s, x]
            above[g] += (f > mine[g]) | ((f == mine[g]) & before)
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
