"""Small array helpers shared by the models: geometric growth, top-k and the touched-rows log.

Models keep one dense row per user or item index. These helpers keep the bookkeeping around those rows
(capacity, ranking, "which rows changed since the last flush") in one place so each model reads like
its algorithm.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream_rec.types import FloatArray, IntArray

#: Smallest capacity a grown array gets, so the first few new ids do not each trigger a copy.
MIN_CAPACITY = 16


def grow(arr: npt.NDArray, n_rows: int, fill: float | int | bool = 0) -> npt.NDArray:
    """Return ``arr`` if it has at least ``n_rows`` rows, else a copy with doubled capacity.

    Doubling keeps the amortised cost of growth O(1) per new id. New rows are set to ``fill``.

    Examples
    --------
    >>> import numpy as np
    >>> a = grow(np.zeros((0, 2), dtype=np.float32), 3)
    >>> a.shape
    (16, 2)
    >>> grow(a, 17, fill=-1).shape[0], grow(a, 17, fill=-1)[16, 0]
    (32, np.float32(-1.0))
    """
    capacity = arr.shape[0]
    if n_rows <= capacity:
        return arr
    new_capacity = max(n_rows, 2 * capacity, MIN_CAPACITY)
    out = np.full((new_capacity, *arr.shape[1:]), fill, dtype=arr.dtype)
    out[:capacity] = arr
    return out


def as_index(values: npt.ArrayLike) -> IntArray:
    """Coerce ids to a 1-d int64 array (the models' index type)."""
    return np.asarray(values, dtype=np.int64).reshape(-1)


def seen_mask(items: IntArray, seen: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Which of ``items`` are in range and marked ``seen`` (a model scores only those).

    >>> import numpy as np
    >>> seen_mask(np.array([-1, 0, 1, 5]), np.array([True, False])).tolist()
    [False, True, False, False]
    """
    ok = (items >= 0) & (items < len(seen))
    ok[ok] = seen[items[ok]]
    return ok


def selection_buffers(n: int, k: int, exclude: IntArray | None) -> tuple[int, npt.NDArray[np.bool_], FloatArray,
                                                                         IntArray, FloatArray, IntArray]:
    """What a model's ``recommend`` hands its compiled top-k over ``n`` items: ``(k, excluded, buf_s,
    buf_i, out_s, out_i)`` with ``k`` capped at ``n`` and ``exclude`` (out-of-range ids ignored) marked."""
    k = max(0, min(k, n))
    excluded = np.zeros(n, dtype=bool)
    if exclude is not None and len(exclude):
        ex = as_index(exclude)
        excluded[ex[(ex >= 0) & (ex < n)]] = True
    return (k, excluded, np.empty(max(n, 1)), np.empty(max(n, 1), dtype=np.int64), np.empty(max(k, 1)),
            np.empty(max(k, 1), dtype=np.int64))


class TouchLog:
    """Indices of the user and item rows changed since the last :meth:`pop`.

    Appending whole arrays (one per batch) and deduplicating on :meth:`pop` keeps the hot path free
    of per-id Python work.

    Examples
    --------
    >>> import numpy as np
    >>> log = TouchLog()
    >>> log.add(users=np.array([3, 1, 3]), items=np.array([7]))
    >>> log.pop()
    (array([1, 3]), array([7]))
    >>> log.pop()
    (array([], dtype=int64), array([], dtype=int64))
    """

    def __init__(self) -> None:
        self._users: list[IntArray] = []
        self._items: list[IntArray] = []

    def add(self, users: npt.ArrayLike | None = None, items: npt.ArrayLike | None = None) -> None:
        """Record touched user and/or item indices."""
        if users is not None:
            self._users.append(as_index(users))
        if items is not None:
            self._items.append(as_index(items))

    def pop(self) -> tuple[IntArray, IntArray]:
        """Return the sorted unique touched ``(users, items)`` and forget them."""
        users = _unique(self._users)
        items = _unique(self._items)
        self._users, self._items = [], []
        return users, items


def _unique(chunks: list[IntArray]) -> IntArray:
    if not chunks:
        return np.empty(0, np.int64)
    return np.unique(np.concatenate(chunks)).astype(np.int64)


class TracksTouched:
    """Mixin of the models: the rows changed since the last :meth:`pop_touched`, for persisting."""

    _touched: TouchLog

    def touch(self, users: npt.ArrayLike | None = None, items: npt.ArrayLike | None = None) -> None:
        """Record rows changed by compiled code outside :meth:`learn_many` (the service's learning loop)."""
        self._touched.add(users=users, items=items)

    def pop_touched(self) -> tuple[IntArray, IntArray]:
        """The sorted unique ``(users, items)`` changed since the last call."""
        return self._touched.pop()
