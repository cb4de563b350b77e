"""The four sources gathered on the loop's own thread (matrix factorisation's list comes separately)."""

from __future__ import annotations

from typing import NamedTuple



from stream_rec.models._kernels import select_sparse
from stream_rec.models.cooc import cooc_candidates, cooc_recent, cooc_release
from stream_rec.models.popularity import pop_category_top, pop_top
from stream_rec.sources import register


class Cooc(NamedTuple):
    bit: int


class Popular(NamedTuple):
    bit: int


class Recent(NamedTuple):
    bit: int


class Category(NamedTuple):
    bit: int



def cooc_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201
    if not known:
        return 0
    n_cand = cooc_candidates(cooc.hist_item, cooc.hist_len, cooc.nbr, cooc.cnt, cooc.nlen, cooc.mass, cooc.total,
                             cooc.row_ts, cooc.dampt, cooc.params, user, sc.acc, sc.mark, sc.cand)
    m = select_sparse(sc.acc, sc.cand, n_cand, cooc.seen, sc.excluded, fp.depth, sc.buf_s, sc.buf_i, sc.ls, sc.li)
    cooc_release(sc.mark, sc.acc, sc.cand, n_cand)
    return m



def popular_list(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201
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


register(Cooc, cooc_list)
register(Popular, popular_list)
register(Recent, recent_list)
register(Category, category_list)
