"""The one contract every online model follows.

Models live in *index space*: users and items are dense ints (0, 1, 2, ...) handed out by
:class:`stream_rec.ids.IdIndex`; the service maps external string ids to those ints. A model grows its
arrays geometrically when it meets an index beyond its capacity, so callers never size it up front.

Verbs
-----
``learn_many(users, items, weights, ts)``
    Learn from a micro-batch, in order. ``users`` and ``items`` are int64 arrays of indices, ``weights``
    the per-event confidence (purchase > cart > click > view, set by the service), ``ts`` event time in
    **seconds** (float64). Calling it once with a batch leaves exactly the same state as calling it
    once per event in the same order; a test proves it for every model.
``score(user, items)``
    Scores of the given items for the user (higher is better). ``user`` may be ``-1`` for a user the
    service has never seen.
``recommend(user, k, exclude)``
    The top-``k`` items as ``(item_indices, scores)`` numpy arrays, scores sorted descending, never an
    item of ``exclude`` and never an index the model has not seen. May return fewer than ``k``.
``user_state(u) / set_user_state(u, data)`` and ``item_state(i) / set_item_state(i, data)``
    Bytes for one user's or one item's row, and the inverse. The service persists exactly the rows a
    batch touched (see ``pop_touched``) in one RocksDB WriteBatch, user rows and item rows in separate
    column families, so user-keyed and item-keyed state stay separable. ``None`` means "no row".
``load_user_rows(users, rows) / load_item_rows(items, rows)``
    ``set_user_state`` / ``set_item_state`` for many rows at once: what a restarting worker calls.
``pop_touched()``
    ``(users, items)`` index arrays touched since the previous call, then forgets them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from stream_rec.types import FloatArray, IntArray


@runtime_checkable
class OnlineModel(Protocol):
    """Structural type of every online model (see the module docstring for the contract)."""

    name: str

    def learn_many(self, users: IntArray, items: IntArray, weights: FloatArray, ts: FloatArray) -> None: ...

    def score(self, user: int, items: IntArray) -> FloatArray: ...

    def recommend(self, user: int, k: int, exclude: IntArray | None = None) -> tuple[IntArray, FloatArray]: ...

    def user_state(self, user: int) -> bytes | None: ...

    def set_user_state(self, user: int, data: bytes) -> None: ...

    def item_state(self, item: int) -> bytes | None: ...

    def set_item_state(self, item: int, data: bytes) -> None: ...

    def load_user_rows(self, users: IntArray, rows: list[bytes]) -> None: ...

    def load_item_rows(self, items: IntArray, rows: list[bytes]) -> None: ...

    def pop_touched(self) -> tuple[IntArray, IntArray]: ...
