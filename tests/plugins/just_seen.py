"""A toy sixth source, registered from outside the package (``STREAM_REC_SOURCE_MODULES=tests.plugins.just_seen``):
the items anyone in the shop interacted with last, newest first. It keeps a state of its own (a ring of
the latest events' items) and learns it event by event, through the registry's ``learn`` step.

Nothing in :mod:`stream_rec` names it: this module and its :func:`register` line are all it takes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stream_rec.sources import register
from stream_rec.types import IntArray

#: Events remembered.
RING = 64


class JustSeen(NamedTuple):
    bit: int
    ring: IntArray  # (RING,): the items of the latest events, -1 where none yet
    n: IntArray  # (1,): events learned


def make(bit: int) -> JustSeen:
    return JustSeen(bit, np.full(RING, -1, np.int64), np.zeros(1, np.int64))


def just_seen_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201 (compiled by numba)
    ring, n, m = marker.ring, marker.n[0], 0
    for back in range(min(n, len(ring))):
        it = ring[(n - 1 - back) % len(ring)]
        if m < fp.depth and 0 <= it < n_items and not sc.excluded[it] and not sc.mark[it]:
            sc.mark[it] = True  # once each
            sc.li[m], sc.ls[m] = it, -float(back)
            m += 1
    for r in range(m):
        sc.mark[sc.li[r]] = False  # borrowed scratch goes back clear
    return m


def just_seen_learn(marker, user, item, weight, t, category):  # noqa: ANN001, ANN201
    marker.ring[marker.n[0] % len(marker.ring)] = item
    marker.n[0] += 1


register("just_seen", JustSeen, just_seen_list, just_seen_learn, make)
