"""The fusion's policies: the sources' bits, the weightings of reciprocal-rank fusion (:data:`WEIGHT_GRID`),
the learned scorer (:data:`LEARNED`) and the choice between them (:func:`chosen_weighting`)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
from numba import njit

from stream_rec.models._kernels import INLINE
from stream_rec.sources import seal
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
FILL_WEIGHT = 1e-6


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
    return w * max(WEIGHT_GRID[row, s], FILL_WEIGHT)


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


@functools.cache
def label(mask: int) -> tuple[str, ...]:
    """The sources named by a list entry's mask: ``("mf", "cooc")``, ``("explore",)``, ..."""
    if mask >> EXPLORE_BIT & 1:
        return (EXPLORE,)
    return tuple(name for b, name in enumerate(SOURCES) if mask >> b & 1)
