"""Keeping CPython's cyclic garbage collector out of the hot path.

Nothing the service does per event makes reference cycles: every list, dict and event it builds is
freed by reference counting as soon as the batch is done with it. Yet the collector runs on allocation
counts, not on garbage: a micro-batch that builds a few thousand recommendation lists (tens of thousands
of dicts) triggers collections that promote those short-lived dicts, and every so often a full collection
that walks every container in the process, the imported libraries (Faust, aiokafka, numba) and the
loaded state included. Measured on the bench's stream (10k users, 2,000-event batches) that was about a
fifth of the worker's service time, in pauses of ~100 ms.

Two remedies, both within what the ``gc`` module is for:

- :func:`settle` once after start-up: what is alive then (modules, compiled kernels, loaded state) lives
  as long as the process, so it is moved to the permanent generation (``gc.freeze``), out of every later
  scan.
- :func:`collections_paused` around a batch's synchronous work: no collection starts inside; what the
  batch built is released before it ends, and a released object no longer counts towards the next
  collection, so the batch leaves no debt behind. Cycles made meanwhile (by anyone) are collected by the
  first collection after it, as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def settle() -> int:
    """Collect once, then exempt every object alive now from later collections; returns their number."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextmanager
def collections_paused() -> Iterator[None]:
    """No automatic collection inside the block (nesting and an already disabled collector respected)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
