"""Ranking metrics for prequential evaluation, computed from the rank of the one relevant item.

Every scored event has exactly one relevant item: the item of the event itself. So a recommendation
list reduces to one integer per event, the 0-based **rank** of that item in the list, or :data:`MISS`
when it is absent. Every metric is then a vectorised function of the rank array:

* ``HR@K`` (hit rate, equal to recall@K with one relevant item): ``rank < K``
* ``NDCG@K``: ``1 / log2(rank + 2)`` if ``rank < K`` else 0 (the ideal DCG of one item is 1)
* ``MRR@K``: ``1 / (rank + 1)`` if ``rank < K`` else 0

:class:`Accumulator` collects ranks batch by batch, together with what is needed to split them (event
type, new or returning user), the items shown (catalogue coverage) and their popularity at
recommendation time (novelty), and summarises everything at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_rec.events import EVENT_TYPES
from stream_rec.models._arrays import grow
from stream_rec.types import FloatArray, IntArray

#: Rank of an item that is not in the list (larger than any K used).
MISS = np.iinfo(np.int32).max
#: Cut-offs reported for every metric; the longest list any model is asked for is ``max(KS)``.
KS = (5, 10, 20)
#: The cut-off of coverage, novelty, the splits and the curve.
MAIN_K = 10


def ranks_of(lists: IntArray, targets: IntArray) -> IntArray:
    """0-based position of each ``targets[r]`` in ``lists[r]`` (``-1`` pads a short list), else MISS.

    Examples
    --------
    >>> import numpy as np
    >>> ranks_of(np.array([[4, 7, 9], [1, 2, -1], [3, 3, 3]]), np.array([9, 5, 3])).tolist()
    [2, 2147483647, 0]
    """
    lists = np.asarray(lists, dtype=np.int64)
    hit = lists == np.asarray(targets, dtype=np.int64)[:, None]
    if lists.shape[1] == 0:
        return np.full(len(lists), MISS, dtype=np.int64)
    return np.where(hit.any(axis=1), hit.argmax(axis=1), MISS).astype(np.int64)


def hit_rate(ranks: IntArray, k: int) -> float:
    """Share of events whose item is in the top ``k`` (recall@k with one relevant item).

    >>> import numpy as np
    >>> hit_rate(np.array([0, 4, 9, MISS]), 5)
    0.5
    """
    return float(np.mean(np.asarray(ranks) < k)) if len(ranks) else 0.0


def ndcg(ranks: IntArray, k: int) -> float:
    """Mean NDCG@k with one relevant item: ``1 / log2(rank + 2)`` inside the top ``k``, else 0.

    >>> import numpy as np
    >>> round(ndcg(np.array([0, 1, MISS, 3]), 10), 4)  # (1 + 1/log2(3) + 0 + 1/log2(5)) / 4
    0.5154
    """
    return _mean_gain(ranks, k, lambda inside: 1.0 / np.log2(inside + 2.0))


def mrr(ranks: IntArray, k: int) -> float:
    """Mean reciprocal rank cut at ``k``: ``1 / (rank + 1)`` inside the top ``k``, else 0.

    >>> import numpy as np
    >>> mrr(np.array([0, 1, 3, MISS]), 10)  # (1 + 1/2 + 1/4 + 0) / 4
    0.4375
    """
    return _mean_gain(ranks, k, lambda inside: 1.0 / (inside + 1.0))


def _mean_gain(ranks: IntArray, k: int, gain: Callable[[IntArray], FloatArray]) -> float:
    """Mean over events of ``gain(rank)`` for ranks inside the top ``k``, 0 for the others."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return 0.0
    inside = ranks < k
    gains = np.zeros(len(ranks), dtype=np.float64)
    gains[inside] = gain(ranks[inside])
    return float(gains.mean())


def novelty(lists: IntArray, counts: npt.ArrayLike, total: int) -> FloatArray:
    """Per list, the mean of ``-log2`` of each shown item's popularity share at recommendation time.

    The share is add-one smoothed, ``(count + 1) / (total + n_items)``, so an item never seen before
    (count 0) has a finite, high novelty. Padding (``-1``) is ignored; an empty list scores NaN.

    >>> import numpy as np
    >>> novelty(np.array([[0, 1], [1, -1]]), np.array([3, 1]), 4).tolist()  # shares 4/6 and 2/6
    [1.0849625007211563, 1.5849625007211563]
    """
    lists = np.asarray(lists, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    valid = lists >= 0
    share = (counts[np.where(valid, lists, 0)] + 1.0) / (total + len(counts)) if len(counts) else np.ones(lists.shape)
    info = np.where(valid, -np.log2(share), 0.0)
    shown = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shown > 0, info.sum(axis=1) / shown, np.nan)


def windowed_hit_rate(ranks: IntArray, window: int, k: int = MAIN_K) -> FloatArray:
    """HR@k over consecutive windows of ``window`` scored events (the last one may be shorter).

    >>> import numpy as np
    >>> windowed_hit_rate(np.array([0, MISS, 3, 3, MISS]), window=2, k=5).tolist()
    [0.5, 1.0, 0.0]
    """
    ranks = np.asarray(ranks)
    if len(ranks) == 0 or window <= 0:
        return np.empty(0, dtype=np.float64)
    hits = (ranks < k).astype(np.float64)
    starts = np.arange(0, len(hits), window)
    return np.add.reduceat(hits, starts) / np.diff(np.append(starts, len(hits)))


class Accumulator:
    """Ranks and their context, gathered batch by batch; :meth:`summary` turns them into figures.

    Parameters
    ----------
    window
        Scored events per point of the HR@10 curve over time.

    Examples
    --------
    >>> import numpy as np
    >>> acc = Accumulator(window=2)
    >>> acc.add(ranks=np.array([0, MISS, 12]), types=np.array([3, 0, 3]), new_user=np.array([True, False, False]),
    ...         lists=np.array([[1, 2], [2, 3], [4, 1]]), novelty=np.array([1.0, 2.0, 3.0]))
    >>> s = acc.summary(n_items=5)
    >>> s["hr@10"], s["hr@20"], s["purchase_hr@10"], s["new_user_hr@10"], s["coverage@10"], s["novelty@10"]
    (0.3333333333333333, 0.6666666666666666, 0.5, 1.0, 0.8, 2.0)
    >>> s["curve"]["hr@10"]
    [0.5, 0.0]
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._ranks: list[IntArray] = []
        self._types: list[IntArray] = []
        self._new: list[npt.NDArray[np.bool_]] = []
        self._novelty: list[FloatArray] = []
        self._shown = np.zeros(0, dtype=bool)

    def add(self, ranks: IntArray, types: IntArray, new_user: npt.NDArray[np.bool_], lists: IntArray,
            novelty: FloatArray) -> None:
        """Record one batch: ranks, type codes (index in ``EVENT_TYPES``), new-user flags, the top-10
        lists shown (``-1`` padded) and each list's novelty."""
        self._ranks.append(np.asarray(ranks, dtype=np.int64))
        self._types.append(np.asarray(types, dtype=np.int64))
        self._new.append(np.asarray(new_user, dtype=bool))
        self._novelty.append(np.asarray(novelty, dtype=np.float64))
        shown = np.asarray(lists, dtype=np.int64)[:, :MAIN_K]
        shown = shown[shown >= 0]
        if len(shown):
            self._shown = grow(self._shown, int(shown.max()) + 1, False)
            self._shown[shown] = True

    @property
    def ranks(self) -> IntArray:
        return _cat(self._ranks, np.int64)

    def summary(self, n_items: int) -> dict[str, Any]:
        """Every figure: ``hr@K``, ``ndcg@K``, ``mrr@K`` for K in :data:`KS`, ``<type>_hr@10``,
        ``new_user_hr@10``, ``returning_hr@10``, ``coverage@10`` (share of the ``n_items`` catalogue
        ever shown in a top 10), ``novelty@10``, counts, and the windowed ``curve``."""
        ranks, types, new = self.ranks, _cat(self._types, np.int64), _cat(self._new, bool)
        out: dict[str, Any] = {"scored": int(len(ranks))}
        for k in KS:
            out[f"hr@{k}"], out[f"ndcg@{k}"], out[f"mrr@{k}"] = hit_rate(ranks, k), ndcg(ranks, k), mrr(ranks, k)
        for code, name in enumerate(EVENT_TYPES):
            part = ranks[types == code]
            out[f"{name}_hr@{MAIN_K}"] = hit_rate(part, MAIN_K) if len(part) else None
            out[f"{name}_scored"] = int(len(part))
        for label, mask in (("new_user", new), ("returning", ~new)):
            out[f"{label}_hr@{MAIN_K}"] = hit_rate(ranks[mask], MAIN_K) if mask.any() else None
            out[f"{label}_scored"] = int(mask.sum())
        out[f"coverage@{MAIN_K}"] = float(self._shown.sum() / n_items) if n_items else 0.0
        nov = _cat(self._novelty, np.float64)
        nov = nov[~np.isnan(nov)]
        out[f"novelty@{MAIN_K}"] = float(nov.mean()) if len(nov) else None
        out["curve"] = {"window": self.window, f"hr@{MAIN_K}": windowed_hit_rate(ranks, self.window).tolist()}
        return out


def _cat(parts: Sequence[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype=dtype)
