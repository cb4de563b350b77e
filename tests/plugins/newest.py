"""A toy source without state or learning of its own, registered from outside the package: the newest items
of the popularity model's pool of young items (it reads another model's state, as ``category`` does)."""

from __future__ import annotations

from typing import NamedTuple

from stream_rec.sources import register


class Newest(NamedTuple):
    bit: int


def newest_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201 (compiled by numba)
    m = 0
    for r in range(pop.sizes[1]):  # the pool: bounded by the popularity model, not by the catalogue
        it = pop.fresh[r]
        if it >= n_items or sc.excluded[it]:
            continue
        score = pop.first[it]
        if m == fp.depth and score <= sc.ls[m - 1]:
            continue
        at = min(m, fp.depth - 1)  # insertion into the list, newest first
        while at > 0 and sc.ls[at - 1] < score:
            sc.ls[at], sc.li[at] = sc.ls[at - 1], sc.li[at - 1]
            at -= 1
        sc.ls[at], sc.li[at] = score, it
        m = min(m + 1, fp.depth)
    return m


register("newest", Newest, newest_list)
