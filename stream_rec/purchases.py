"""What each user bought, and when: the items never to recommend back to them.

Kept as arrays (one linked list of ``(item, time)`` records per user) so the compiled ranking can mark
a user's purchases as excluded without leaving compiled code; a repeat purchase of an item updates
its time in place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from stream_rec.models._arrays import grow
from stream_rec.models._kernels import JIT
from stream_rec.types import IntArray


class PurchasesState(NamedTuple):
    head: IntArray  # per user: the newest record, -1 if none
    next: IntArray  # per record: the user's previous record, -1 at the end
    item: IntArray
    ts_ms: IntArray
    n: IntArray  # (1,): records in use


@njit(**JIT)
def purchases_add(st: PurchasesState, u: int, i: int, ts_ms: int) -> None:
    r = st.head[u]
    while r >= 0:
        if st.item[r] == i:
            st.ts_ms[r] = max(st.ts_ms[r], ts_ms)
            return
        r = st.next[r]
    r = st.n[0]
    st.item[r], st.ts_ms[r], st.next[r] = i, ts_ms, st.head[u]
    st.head[u] = r
    st.n[0] = r + 1


@njit(**JIT)
def purchases_mark(head: IntArray, nxt: IntArray, item: IntArray, ts_ms: IntArray, u: int, marks: np.ndarray,
                   value: bool, since_ms: int) -> None:
    """Set ``marks[item] = value`` for every item ``u`` bought at or after ``since_ms`` (takes the state's
    arrays: it runs on every ranking, where handing the tuple over would cost more than the walk)."""
    if u < 0 or u >= len(head):
        return
    r = head[u]
    while r >= 0:
        if ts_ms[r] >= since_ms:
            marks[item[r]] = value
        r = nxt[r]


@njit(**JIT)
def _add_many(st: PurchasesState, users: IntArray, items: IntArray, ts_ms: IntArray) -> None:
    for e in range(len(users)):
        purchases_add(st, users[e], items[e], ts_ms[e])


@njit(**JIT)
def _items_of(st: PurchasesState, u: int) -> IntArray:
    n, r = 0, st.head[u] if 0 <= u < len(st.head) else -1
    while r >= 0:
        n += 1
        r = st.next[r]
    out = np.empty(n, dtype=np.int64)
    n, r = 0, st.head[u] if 0 <= u < len(st.head) else -1
    while r >= 0:
        out[n] = st.item[r]
        n += 1
        r = st.next[r]
    return out


class Purchases:
    """Per-user purchases as compiled code reads them.

    Examples
    --------
    >>> import numpy as np
    >>> bought = Purchases()
    >>> bought.add_many(np.array([0, 0, 1, 0]), np.array([7, 8, 7, 7]), np.array([10, 20, 30, 40]))
    >>> bought.of(0)
    [(8, 20), (7, 40)]
    >>> bought.items_of(1).tolist(), bought.items_of(5).tolist()
    ([7], [])
    """

    def __init__(self) -> None:
        self._head = np.full(0, -1, dtype=np.int64)
        self._next = np.zeros(0, dtype=np.int64)
        self._item = np.zeros(0, dtype=np.int64)
        self._ts = np.zeros(0, dtype=np.int64)
        self._n = np.zeros(1, dtype=np.int64)

    @property
    def state(self) -> PurchasesState:
        return PurchasesState(self._head, self._next, self._item, self._ts, self._n)

    def reserve(self, n_users: int, new_records: int) -> None:
        """Make room for user indices below ``n_users`` and ``new_records`` more records."""
        self._head = grow(self._head, n_users, -1)
        need = int(self._n[0]) + new_records
        self._next, self._item, self._ts = (grow(a, need) for a in (self._next, self._item, self._ts))

    def add_many(self, users: IntArray, items: IntArray, ts_ms: IntArray) -> None:
        if len(users) == 0:
            return
        self.reserve(int(users.max()) + 1, len(users))
        _add_many(self.state, users, items, ts_ms)

    def clear(self, users: IntArray) -> None:
        """Forget users' purchases (their records stay allocated, unreachable: a moved user's state is
        about to be put in place)."""
        if len(users):
            self.reserve(int(users.max()) + 1, 0)
            self._head[users] = -1

    def of(self, u: int) -> list[tuple[int, int]]:
        """``(item, last purchase ms)`` records of user ``u``, most recently first-bought item first."""
        out = []
        r = int(self._head[u]) if 0 <= u < len(self._head) else -1
        while r >= 0:
            out.append((int(self._item[r]), int(self._ts[r])))
            r = int(self._next[r])
        return out

    def items_of(self, u: int) -> IntArray:
        """The items user ``u`` bought, most recently first-bought first (compiled: evaluation asks for
        them on every event)."""
        return _items_of(self.state, u)

    def restore_many(self, records: dict[int, list[tuple[int, int]]]) -> None:
        """Load users' records (as :meth:`of` returned them) into users without any (a restart)."""
        users, items, ts = [], [], []
        for u, recs in records.items():
            for item, t in reversed(recs):
                users.append(u)
                items.append(item)
                ts.append(t)
        self.add_many(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64), np.array(ts, dtype=np.int64))
