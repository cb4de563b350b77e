"""Item clusters that let matrix factorisation list a user's best items without scanning the catalogue.

An inverted-file index (the IVF layout of approximate nearest-neighbour search), kept current as item
rows learn:

* the seen items are split into about ``sqrt(n)`` clusters (:func:`clusters_for`) by a few k-means
  rounds when the index is built (:func:`index_build`);
* each cluster keeps its members' rows as int8 codes (one scale per row) in pages of :data:`PAGE`
  items, so scanning a cluster reads contiguous memory, a quarter of the float32 rows' bytes;
* a cluster's centroid is the mean of its members' codes, kept exact as rows change
  (:func:`index_row_changed`: ``O(n_factors)`` per changed row);
* an item is moved to its nearest centroid when it learns as an event's item, and one more item every
  :data:`SWEEP_EVERY` events is checked in a sweep over the catalogue (:func:`index_reassign`, ``O(clusters x n_factors)``),
  so memberships follow the rows as they drift;
* the index is built again once the catalogue has doubled since the last build, so clusters stay about
  ``sqrt(n)`` items (an amortised ``O(sqrt(n) x n_factors)`` per new item).

A list (:func:`index_top`) scores the centroids, scans the members of the best clusters by their codes
until it has seen :data:`SCAN_BUDGET` ``x sqrt(n)`` items, and scores the best :data:`RESCORE` ``x k`` of those exactly. Its cost grows
with ``sqrt(n)``, where an exact scan grows with ``n``; how much of the exact top list it finds is
measured by ``stream-rec bench`` and the tests.

Learning writes the index; ranking only reads it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import grow
from stream_rec.models._kernels import INLINE, JIT, insert_best
from stream_rec.types import FloatArray, Float32Array, IntArray

#: Items per page of a cluster's member list.
PAGE = 64
#: Candidates per wanted item that the int8 scan keeps for exact scoring. On the 100k-item shop the
#: recall of the exact top 30 was the same (0.628 at the default budget) keeping 1, 2 or 8 per item:
#: what the scan reaches limits it, not the codes' rounding.
RESCORE = 2
#: The index is built again once this many times as many items are seen as when it was last built.
REBUILD_GROWTH = 2.0
#: k-means rounds of a build, each on a sample of at most this many items per cluster.
KMEANS_ROUNDS, KMEANS_SAMPLE = 3, 32
#: A list scans clusters, best centroid first, until it has scanned this many times ``sqrt(n)`` items
#: (or :data:`MAX_PROBES` clusters). Clusters differ a lot in size: items the model has barely learned
#: sit in large clusters near the origin, the ones with long rows in small ones far out, and the best
#: centroids are mostly the small far ones; so the budget counts items, not clusters.
SCAN_BUDGET, MAX_PROBES = 16, 64
#: The sweep checks one item every this many events learned: items move mostly through their own
#: events, which check them anyway; the sweep catches rows moved as negatives or by other workers.
SWEEP_EVERY = 4


@njit(**JIT)
def clusters_for(n_items: int) -> int:
    """Clusters of an index over ``n_items`` items: about ``sqrt(n)``, so scoring the centroids costs as
    much as scanning one cluster.

    >>> clusters_for(10_000), clusters_for(1_000_000)
    (100, 1000)
    """
    return max(1, int(np.sqrt(max(n_items, 1.0))))


class ItemIndex(NamedTuple):
    """The index's arrays (see the module docstring); counters are one-element arrays, so in place."""

    centroids: Float32Array  # (cluster capacity, n_factors)
    half_norm: Float32Array  # (cluster capacity,): |centroid|^2 / 2, for the nearest-centroid test
    sums: FloatArray  # (cluster capacity, n_factors): sum of the members' decoded rows
    sizes: IntArray  # (cluster capacity,): members
    head: IntArray  # (cluster capacity,): the cluster's first page (-1: none)
    tail: IntArray  # (cluster capacity,): its last page, the one that is filled (-1: none)
    members: IntArray  # (page capacity, PAGE): item indices
    codes: np.ndarray  # int8 (page capacity, PAGE, n_factors): row ~ scale * code
    scale: Float32Array  # (page capacity, PAGE)
    fill: IntArray  # (page capacity,): members on the page
    next_page: IntArray  # (page capacity,): -1 at a cluster's last page
    prev_page: IntArray  # (page capacity,): -1 at its first
    free: IntArray  # (page capacity,): a stack of free pages, ``n_free[0]`` of them
    slot: IntArray  # per item: page * PAGE + place on the page; -1: not in the index
    cluster: IntArray  # per item: its cluster (meaningful where ``slot >= 0``)
    n_clusters: IntArray  # (1,)
    n_free: IntArray  # (1,)
    n_indexed: IntArray  # (1,): items in the index
    built_for: IntArray  # (1,): items seen when it was last built (0: not built, the exact scan is used)
    sweep: IntArray  # (2,): the next item the sweep checks, calls since it last checked one


def new_index(n_items: int, n_factors: int) -> ItemIndex:
    """An empty, unbuilt index with room for ``n_items`` items."""
    empty = ItemIndex(np.zeros((0, n_factors), np.float32), np.zeros(0, np.float32), np.zeros((0, n_factors)),
                      np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros((0, PAGE), np.int64), np.zeros((0, PAGE, n_factors), np.int8),
                      np.zeros((0, PAGE), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                      np.zeros(2, np.int64))
    return reserve_index(empty, n_items)


def reserve_index(ix: ItemIndex, n_items: int) -> ItemIndex:
    """``ix`` with room for ``n_items`` items (the same tuple if it has it): every cluster a build over
    that many items makes, and pages for all of them plus one partly filled page per cluster."""
    n_clusters = clusters_for(n_items) + 1
    n_pages = -(-n_items // PAGE) + n_clusters
    if len(ix.slot) >= n_items and len(ix.sizes) >= n_clusters and len(ix.fill) >= n_pages:
        return ix
    had = len(ix.fill)
    pages = max(n_pages, had)
    free = grow(ix.free, pages)
    n_free = ix.n_free.copy()
    added = np.arange(had, len(free), dtype=np.int64)  # new pages go on the free stack
    free[n_free[0] : n_free[0] + len(added)] = added
    n_free[0] += len(added)
    c = ix
    return ItemIndex(grow(c.centroids, n_clusters), grow(c.half_norm, n_clusters), grow(c.sums, n_clusters),
                     grow(c.sizes, n_clusters), grow(c.head, n_clusters, -1), grow(c.tail, n_clusters, -1),
                     grow(c.members, len(free)), grow(c.codes, len(free)), grow(c.scale, len(free)),
                     grow(c.fill, len(free)), grow(c.next_page, len(free), -1), grow(c.prev_page, len(free), -1),
                     free, grow(c.slot, n_items, -1), grow(c.cluster, n_items), c.n_clusters, n_free, c.n_indexed,
                     c.built_for, c.sweep)


# ---------------------------------------------------------------------------------------------- members


@njit(**INLINE)
def _code_scale(Q: Float32Array, j: int) -> tuple[np.float32, np.float32]:
    """Row ``j``'s code scale ``s = max |q| / 127`` and its inverse (0 for a zero row): code = round(q / s)."""
    top = np.float32(0.0)
    for f in range(Q.shape[1]):
        top = max(top, abs(Q[j, f]))
    s = top / np.float32(127.0)
    return s, np.float32(1.0) / s if s > 0 else np.float32(0.0)


@njit(**INLINE)
def _encode(Q: Float32Array, j: int, codes: np.ndarray, scale: Float32Array, page: int, at: int) -> None:
    """Row ``j`` as int8 codes (:func:`_code_scale`) into ``codes[page, at]``."""
    s, inv = _code_scale(Q, j)
    scale[page, at] = s
    for f in range(Q.shape[1]):
        codes[page, at, f] = np.int8(np.rint(Q[j, f] * inv))


@njit(**INLINE)
def _set_centroid(sums: FloatArray, centroids: Float32Array, half_norm: Float32Array, c: int, n: int) -> None:
    """Cluster ``c``'s centroid (and half its squared norm) from the sum of its ``n > 0`` members' rows."""
    sq = 0.0
    for f in range(sums.shape[1]):
        v = np.float32(sums[c, f] / n)
        centroids[c, f] = v
        sq += float(v) * float(v)
    half_norm[c] = np.float32(0.5 * sq)


@njit(**INLINE)
def _add_code(ix: ItemIndex, c: int, page: int, at: int, sign: float) -> None:
    """Add (``sign`` 1) or take away (-1) the decoded row at ``(page, at)`` from cluster ``c``'s mean."""
    s = float(ix.scale[page, at]) * sign
    d = ix.sums.shape[1]
    for f in range(d):
        ix.sums[c, f] += s * ix.codes[page, at, f]
    if ix.sizes[c] > 0:
        _set_centroid(ix.sums, ix.centroids, ix.half_norm, c, ix.sizes[c])


@njit(**JIT)
def _insert(ix: ItemIndex, Q: Float32Array, j: int, c: int) -> None:
    """Append item ``j`` to cluster ``c``."""
    page = ix.tail[c]
    if page < 0 or ix.fill[page] == PAGE:
        ix.n_free[0] -= 1
        new = ix.free[ix.n_free[0]]
        ix.fill[new], ix.next_page[new], ix.prev_page[new] = 0, -1, page
        if page < 0:
            ix.head[c] = new
        else:
            ix.next_page[page] = new
        ix.tail[c] = page = new
    at = ix.fill[page]
    ix.fill[page] += 1
    ix.members[page, at] = j
    _encode(Q, j, ix.codes, ix.scale, page, at)
    ix.slot[j], ix.cluster[j] = page * PAGE + at, c
    ix.sizes[c] += 1
    ix.n_indexed[0] += 1
    _add_code(ix, c, page, at, 1.0)


@njit(**JIT)
def _remove(ix: ItemIndex, j: int) -> None:
    """Take item ``j`` out of its cluster: the cluster's last member takes its place."""
    c, where = ix.cluster[j], ix.slot[j]
    page, at = where // PAGE, where % PAGE
    ix.sizes[c] -= 1
    _add_code(ix, c, page, at, -1.0)
    last = ix.tail[c]
    end = ix.fill[last] - 1
    moved = ix.members[last, end]
    if moved != j:
        ix.members[page, at] = moved
        ix.codes[page, at, :] = ix.codes[last, end, :]
        ix.scale[page, at] = ix.scale[last, end]
        ix.slot[moved] = where
    ix.fill[last] = end
    if end == 0:  # the last page emptied: back on the free stack
        before = ix.prev_page[last]
        ix.tail[c] = before
        if before < 0:
            ix.head[c] = -1
        else:
            ix.next_page[before] = -1
        ix.free[ix.n_free[0]] = last
        ix.n_free[0] += 1
    ix.slot[j] = -1
    ix.n_indexed[0] -= 1


@njit(fastmath={"reassoc", "contract"}, **JIT)
def _nearest_of(centroids: Float32Array, half_norm: Float32Array, n_clusters: int, Q: Float32Array, j: int) -> int:
    """The cluster whose centroid is nearest row ``j`` (largest ``q . c - |c|^2 / 2``; ties: the lower).

    Each dot product is summed in any order (``fastmath``: vectorised, ~5x faster than summed in order
    at 32 factors); it is the same compiled code wherever it runs, so the choice is deterministic."""
    best, best_v = 0, -np.inf
    d = Q.shape[1]
    for c in range(n_clusters):
        v = np.float32(0.0)
        for f in range(d):
            v += Q[j, f] * centroids[c, f]
        v -= half_norm[c]
        if v > best_v:
            best, best_v = c, v
    return best


@njit(**INLINE)
def _nearest(ix: ItemIndex, Q: Float32Array, j: int) -> int:
    return _nearest_of(ix.centroids, ix.half_norm, ix.n_clusters[0], Q, j)


# ---------------------------------------------------------------------------------------------- learning


@njit(**INLINE)
def index_row_changed(ix: ItemIndex, Q: Float32Array, j: int) -> None:
    """Row ``j`` of ``Q`` changed (or was first seen): its code, and its cluster's mean, follow. A new item
    goes to its nearest cluster. Does nothing while the index is not built."""
    if ix.built_for[0] == 0:
        return
    where = ix.slot[j]
    if where < 0:
        _insert(ix, Q, j, _nearest(ix, Q, j))
        return
    _recode(ix.sums, ix.centroids, ix.half_norm, ix.sizes, ix.codes, ix.scale, Q, j, ix.cluster[j], where // PAGE,
            where % PAGE)


@njit(fastmath={"reassoc", "contract"}, **JIT)
def _recode(sums: FloatArray, centroids: Float32Array, half_norm: Float32Array, sizes: IntArray, codes: np.ndarray,
            scale: Float32Array, Q: Float32Array, j: int, c: int, page: int, at: int) -> None:
    """Row ``j`` (in cluster ``c``, at ``(page, at)``) encoded again (as :func:`_encode` does) and its
    cluster's sums and mean moved by the change, in one pass. Called for every row learning changes,
    so it takes only the arrays it needs (handing the index tuple over costs ~0.2 us a call)."""
    s, inv = _code_scale(Q, j)
    old_s = float(scale[page, at])
    scale[page, at] = s
    for f in range(Q.shape[1]):
        code = np.int8(np.rint(Q[j, f] * inv))
        sums[c, f] += float(s) * code - old_s * codes[page, at, f]
        codes[page, at, f] = code
    if sizes[c] > 0:
        _set_centroid(sums, centroids, half_norm, c, sizes[c])


@njit(**JIT)
def index_reassign(ix: ItemIndex, Q: Float32Array, j: int) -> None:
    """Move indexed item ``j`` to the cluster nearest its row now, if that is another one."""
    if ix.built_for[0] == 0 or ix.slot[j] < 0:
        return
    c = _nearest(ix, Q, j)
    if c != ix.cluster[j]:
        _remove(ix, j)
        _insert(ix, Q, j, c)


@njit(**JIT)
def index_sweep(ix: ItemIndex, Q: Float32Array, span: int) -> None:
    """Every :data:`SWEEP_EVERY` calls, check the next item of a sweep over ``range(span)``
    (:func:`index_reassign`)."""
    if ix.built_for[0] == 0 or span <= 0:
        return
    ix.sweep[1] += 1
    if ix.sweep[1] < SWEEP_EVERY:
        return
    ix.sweep[1] = 0
    j = ix.sweep[0] % span
    ix.sweep[0] = j + 1
    index_reassign(ix, Q, j)


@njit(**JIT)
def index_build(ix: ItemIndex, Q: Float32Array, item_seen: np.ndarray, span: int) -> None:
    """(Re)build the index over the seen items below ``span``: :func:`clusters_for` clusters, started
    from evenly spread seen items, then :data:`KMEANS_ROUNDS` rounds of k-means on a strided sample of
    the items, then every item put in its nearest cluster. Deterministic: a function of the rows."""
    seen = np.empty(span, np.int64)
    n = 0
    for j in range(span):
        if item_seen[j]:
            seen[n] = j
            n += 1
    if n == 0:
        return
    n_clusters = min(clusters_for(n), len(ix.sizes))
    d = Q.shape[1]
    # Reset: every page free, no member.
    for p in range(len(ix.fill)):
        ix.free[p] = len(ix.fill) - 1 - p
        ix.fill[p] = 0
    ix.n_free[0] = len(ix.fill)
    ix.slot[:] = -1
    ix.n_indexed[0] = 0
    ix.n_clusters[0] = n_clusters
    for c in range(n_clusters):
        j = seen[c * n // n_clusters]
        sq = 0.0
        for f in range(d):
            ix.centroids[c, f] = Q[j, f]
            sq += float(Q[j, f]) * float(Q[j, f])
        ix.half_norm[c] = np.float32(0.5 * sq)
    stride = max(1, n // (KMEANS_SAMPLE * n_clusters))
    for _ in range(KMEANS_ROUNDS):
        ix.sums[:n_clusters, :] = 0.0
        ix.sizes[:n_clusters] = 0
        for e in range(0, n, stride):
            j = seen[e]
            c = _nearest(ix, Q, j)
            ix.sizes[c] += 1
            for f in range(d):
                ix.sums[c, f] += Q[j, f]
        for c in range(n_clusters):
            if ix.sizes[c] > 0:  # an empty cluster keeps its centroid
                _set_centroid(ix.sums, ix.centroids, ix.half_norm, c, ix.sizes[c])
    ix.sums[:n_clusters, :] = 0.0
    ix.sizes[:n_clusters] = 0
    ix.head[:n_clusters] = -1
    ix.tail[:n_clusters] = -1
    ix.built_for[0] = n
    nearest = np.empty(n, np.int64)  # all assigned to the k-means centroids before any mean moves
    for e in range(n):
        nearest[e] = _nearest(ix, Q, seen[e])
    for e in range(n):
        _insert(ix, Q, seen[e], nearest[e])


@njit(**INLINE)
def index_due(ix: ItemIndex, n_seen: int, build_above: float) -> bool:
    """Should the index be built (again) now that ``n_seen`` items are seen?"""
    if n_seen < build_above:
        return False
    return ix.built_for[0] == 0 or n_seen >= REBUILD_GROWTH * ix.built_for[0]


# ---------------------------------------------------------------------------------------------- ranking


@njit(fastmath={"reassoc", "contract"}, **JIT)
def index_top(ix: ItemIndex, P: Float32Array, Q: Float32Array, u: int, k: int, excluded: np.ndarray,
              out_s: FloatArray, out_i: IntArray) -> int:
    """The about-best ``k`` items for user ``u`` that are not ``excluded``, best first, into ``out_*``
    (exact scores); returns the count.

    The scan keeps its best :data:`RESCORE` ``x k`` items by approximate score as it goes (clusters come
    best centroid first, so after the first few most items are turned away by one comparison); those are
    then scored exactly. Reads the index and the rows, writes neither."""
    n_clusters, d = ix.n_clusters[0], P.shape[1]
    probes = min(n_clusters, MAX_PROBES)
    budget = SCAN_BUDGET * np.sqrt(ix.n_indexed[0])
    best_s, best_c = np.empty(probes), np.empty(probes, np.int64)
    m = 0
    for c in range(n_clusters):
        if ix.sizes[c] == 0:
            continue
        v = np.float32(0.0)
        for f in range(d):
            v += P[u, f] * ix.centroids[c, f]
        m = insert_best(best_s, best_c, m, probes, v, c)
    pu = np.empty(d, np.float32)
    for f in range(d):
        pu[f] = P[u, f]
    want = RESCORE * k
    cand_s, cand_i = np.empty(want), np.empty(want, np.int64)
    n_best, n_scanned = 0, 0
    for r in range(m):
        if n_scanned >= budget:
            break
        page = ix.head[best_c[r]]
        while page >= 0:
            for at in range(ix.fill[page]):
                j = ix.members[page, at]
                if excluded[j]:
                    continue
                v = np.float32(0.0)
                for f in range(d):
                    v += pu[f] * np.float32(ix.codes[page, at, f])
                n_best = insert_best(cand_s, cand_i, n_best, want, v * ix.scale[page, at], j)
                n_scanned += 1
            page = ix.next_page[page]
    n = 0
    for r in range(n_best):
        j = cand_i[r]
        v = np.float32(0.0)
        for f in range(d):
            v += pu[f] * Q[j, f]
        n = insert_best(out_s, out_i, n, k, v, j)
    return n
