"""The built-in sources gathered on the learning loop's thread (matrix factorisation's list is made apart,
see :mod:`stream_rec.fusion`).

Their state lives in the models they read, which several of them share: ``recent`` and ``category`` read
the co-occurrence model's per-user history, ``category`` the popularity model's per-category lists. Those
models learn in their own kernels, so these sources register no ``learn`` step.
"""

from __future__ import annotations

from typing import NamedTuple

from stream_rec.models._kernels import select_sparse
from stream_rec.models.cooc import cooc_candidates, cooc_recent, cooc_release
from stream_rec.models.popularity import pop_category_top, pop_top
from stream_rec.sources import register


class Cooc(NamedTuple):
    """Items often seen with the user's recent items (:class:`~stream_rec.models.cooc.CoOccurrence`)."""

    bit: int


class Popular(NamedTuple):
    """The decayed-popularity top (:class:`~stream_rec.models.popularity.DecayedPopularity`): also the
    list of users without history."""

    bit: int


class Recent(NamedTuple):
    """The user's own recent items, newest first (the co-occurrence model's history)."""

    bit: int


class Category(NamedTuple):
    """The popular items of the categories of the user's recent items."""

    bit: int


def cooc_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201 (compiled by numba)
    if not known:
        return 0
    n_cand = cooc_candidates(cooc.hist_item, cooc.hist_len, cooc.nbr, cooc.cnt, cooc.nlen, cooc.mass, cooc.total,
                             cooc.row_ts, cooc.dampt, cooc.params, user, sc.acc, sc.mark, sc.cand)
    m = select_sparse(sc.acc, sc.cand, n_cand, cooc.seen, sc.excluded, fp.depth, sc.buf_s, sc.buf_i, sc.ls, sc.li)
    cooc_release(sc.mark, sc.acc, sc.cand, n_cand)
    return m


def popular_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201
    # Read at least k deep: it fills lists the other sources cannot fill.
    return pop_top(pop.top, pop.sizes, pop.key, pop.seen, n_items, max(fp.depth, k), sc.excluded, sc.buf_s, sc.buf_i,
                   sc.ls, sc.li)


def recent_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201
    if not known:
        return 0
    return cooc_recent(cooc.hist_item, cooc.hist_ts, cooc.hist_len, user, fp.depth, sc.excluded, sc.ls, sc.li)


def category_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201
    if not known:
        return 0
    return pop_category_top(pop.category, pop.cat_top, pop.cat_len, cooc.hist_item, cooc.hist_len, user, fp.depth,
                            sc.excluded, sc.cats, sc.ls, sc.li)


register("cooc", Cooc, cooc_list)
register("popular", Popular, popular_list)
register("recent", Recent, recent_list)
register("category", Category, category_list)
