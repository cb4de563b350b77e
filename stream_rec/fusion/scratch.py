"""What the compiled fusion works on: its scratch arrays (:class:`Scratch`) and its parameters and online
state (:class:`FusionParams`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stream_rec.fusion.policy import N_SOURCES, WEIGHT_GRID
from stream_rec.models.popularity import USER_CATEGORIES
from stream_rec.types import FloatArray, IntArray


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
                   np.zeros(len(WEIGHT_GRID), np.int64), np.zeros(N_SOURCES),
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
