"""Exploration: a few slots of a list go to new items, drawn at random from the popularity model's pool of
young items, the user's own categories first (see :func:`pick_new`)."""

from __future__ import annotations

from numba import njit

from stream_rec.fusion.scratch import FusionParams, Scratch
from stream_rec.models._kernels import INLINE, uniform
from stream_rec.models.cooc import CoocState
from stream_rec.models.popularity import PopularityState, pop_is_new, user_categories

#: An exploration candidate must earn an event per this many exploration slots it was shown in: an
#: item shown and ignored that often stops being explored.
SHOWS_PER_EVENT = 20
#: Entries of the pool of young items one list's exploration reads at most (see :func:`pick_new`).
EXPLORE_SCAN = 256
#: Exploration items score this far below each other and below the last exploited item.
EXPLORE_STEP = 1e-9
# Transient marks in the mask array while one list is assembled (cleared before returning).
TAKEN = 1 << 8
PICKED = 1 << 9
TAG_EXPLORE = 4


@njit(**INLINE)
def pick_new(cooc: CoocState, pop: PopularityState, sc: Scratch, fp: FusionParams, user: int, n_pool: int, k: int,
             n_explore: int) -> int:
    """Up to ``n_explore`` new items for ``user``'s list into ``sc.fresh`` (marked ``PICKED`` in
    ``sc.mask``, counted as shown), outside the user's exclusions and the first ``k - n_explore`` of the
    ``n_pool`` exploited items in ``sc.li``; returns how many."""
    if n_explore <= 0:
        return 0
    for r in range(min(n_pool, k - n_explore)):
        sc.mask[sc.li[r]] |= TAKEN
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
            if not sc.excluded[i] and (sc.mask[i] & TAKEN) == 0 and not ignored:
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
        sc.mask[sc.fresh[r]] |= PICKED
        fp.shown[sc.fresh[r]] += 1
    return n_picked
