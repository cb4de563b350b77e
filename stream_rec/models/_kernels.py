"""Compiled building blocks shared by the models: counter-based random numbers and a bounded top-k heap.

Every model's per-event step is a numba function over plain numpy arrays, so the worker's
micro-batches, ``stream-rec evaluate`` and the tests all run the same compiled code, one event at a
time, at a few microseconds per event. Compiled functions are cached on disk (``cache=True``): a
process pays the compilation once per machine, not once per start.

Selection (:func:`select_dense`, :func:`select_sparse`) returns the ``k`` best ``(score, item)``
pairs, best first; "better" means a higher score, ties going to the lower item index, the order every
ranking in the project uses.
"""

from __future__ import annotations

import numpy as np

from stream_rec.types import FloatArray, IntArray
from numba import njit

#: Options of every compiled function: cached on disk, and free of the GIL while it runs.
JIT = {"cache": True, "nogil": True}
#: For small helpers called per pair or per item that take a model's state tuple: inlined, a call
#: would count references to every array in the tuple (~0.2 us a call).
INLINE = {**JIT, "inline": "always"}

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(**JIT)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a fast, well-mixed hash of a uint64 counter."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


@njit(**JIT)
def uniform(key: np.uint64, counter: int) -> float:
    """A uniform float in [0, 1), a pure function of ``(key, counter)`` (53 random bits)."""
    bits = splitmix64(_U64(counter) ^ key)
    return float(bits >> _U64(11)) * _INV_2_53


def stream_key(seed: int, tag: int) -> np.uint64:
    """The key of one random stream: distinct ``tag`` values never share counters."""
    return _U64(splitmix64(_U64(seed * 8 + tag)))


@njit(**JIT)
def _worse(s1: float, i1: int, s2: float, i2: int) -> bool:
    """Is ``(s1, i1)`` ranked below ``(s2, i2)``? (Higher score first, then lower index.)"""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit(**JIT)
def _sift_down(hs: np.ndarray, hi: np.ndarray, size: int, s: float, i: int) -> None:
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if _worse(hs[c], hi[c], s, i):
            hs[pos], hi[pos] = hs[c], hi[c]
            pos = c
        else:
            break
    hs[pos], hi[pos] = s, i


@njit(**JIT)
def heap_offer(hs: np.ndarray, hi: np.ndarray, size: int, cap: int, s: float, i: int) -> int:
    """Offer ``(s, i)`` to a heap holding ``size`` of at most ``cap`` entries; returns the new size."""
    if size < cap:
        pos = size
        while pos > 0:
            parent = (pos - 1) >> 1
            if _worse(s, i, hs[parent], hi[parent]):
                hs[pos], hi[pos] = hs[parent], hi[parent]
                pos = parent
            else:
                break
        hs[pos], hi[pos] = s, i
        return size + 1
    if cap > 0 and _worse(hs[0], hi[0], s, i):
        _sift_down(hs, hi, size, s, i)
    return size


#: Above this many candidates per wanted item, a strided sample first estimates the selection threshold.
_SAMPLE_ABOVE = 3
#: Sample size: about 4 n / k values (so its q-th best passes ~1.5 k items), within these bounds.
_SAMPLE_MIN, _SAMPLE_MAX = 256, 4096


@njit(**JIT)
def _ok(seen: np.ndarray, excluded: np.ndarray, i: int) -> bool:
    return seen[i] and not excluded[i]


@njit(**JIT)
def _qth_best(vals: FloatArray, m: int, q: int, work: IntArray) -> float:
    """The ``q``-th largest of ``vals[:m]`` (``q <= m``), with a size-``q`` min-heap: most values are
    rejected by one comparison with its root. ``vals`` is left as it was; ``work`` is scratch."""
    hs = np.empty(q)
    size = 0
    for r in range(m):
        size = heap_offer(hs, work, size, q, vals[r], r)
    return hs[0]


@njit(**JIT)
def _order_survivors(buf_s: FloatArray, buf_i: IntArray, c: int, k: int, out_s: FloatArray, out_i: IntArray) -> int:
    """Sort the ``c`` survivors (collected in item order) best first, ties to the lower index; keep ``k``."""
    order = np.argsort(-buf_s[:c], kind="mergesort")  # stable: equal scores stay in item order
    m = min(k, c)
    for r in range(m):
        out_s[r], out_i[r] = buf_s[order[r]], buf_i[order[r]]
    return m


@njit(**JIT)
def _threshold(sample: FloatArray, m: int, sampled: int, n: int, k: int, attempt: int, work: IntArray) -> float:
    """A score that about ``1.5 k * 4 ** attempt`` of ``n`` candidates reach, estimated from the
    ``m`` eligible values of a sample of ``sampled``; ``-inf`` (everyone) once the sample runs out."""
    q = (int(1.5 * k * sampled / n) + 2) * 4**attempt
    return _qth_best(sample, m, q, work) if q <= m else -np.inf


@njit(**JIT)
def _select(vals: np.ndarray, cand: IntArray, n: int, dense: bool, seen: np.ndarray, excluded: np.ndarray, k: int,
            buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The selection behind :func:`select_dense` (items ``range(n)``) and :func:`select_sparse` (items
    ``cand[:n]``, any order): sampled threshold, survivors, then the survivors sorted."""
    m, sampled = 0, 0
    sample = np.empty(0)
    if k > 0 and n > _SAMPLE_ABOVE * k:
        stride = max(1, n // min(max(_SAMPLE_MIN, 4 * n // k), _SAMPLE_MAX))
        sample = np.empty(n // stride + 1)
        for e in range(0, n, stride):
            sampled += 1
            i = e if dense else cand[e]
            if _ok(seen, excluded, i):
                sample[m] = vals[i]
                m += 1
    attempt = 0
    while True:
        thr = _threshold(sample, m, sampled, n, k, attempt, buf_i) if m > 0 else -np.inf
        c = 0
        for e in range(n):
            i = e if dense else cand[e]
            if vals[i] >= thr and _ok(seen, excluded, i):
                buf_s[c], buf_i[c] = vals[i], i
                c += 1
        if c >= k or thr == -np.inf:
            break
        attempt += 1
    if not dense:  # survivors arrive in candidate order: by item first, so ties go to the lower index
        by_item = np.argsort(buf_i[:c])
        tmp_s, tmp_i = buf_s[:c][by_item], buf_i[:c][by_item]
        buf_s[:c], buf_i[:c] = tmp_s, tmp_i
    return _order_survivors(buf_s, buf_i, c, k, out_s, out_i)


@njit(**JIT)
def select_dense(vals: np.ndarray, seen: np.ndarray, excluded: np.ndarray, n: int, k: int, buf_s: FloatArray,
                 buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` best items ``i < n`` with ``seen[i]`` and not ``excluded[i]`` by ``vals[i]``, best first
    (ties: lower index) into ``out_*``; returns how many. ``buf_*`` need room for ``n`` entries.

    On a large catalogue a strided sample first sets a threshold that about 1.5 k items pass, so only
    those are sorted; if fewer than ``k`` pass (an unlucky sample), a 4x lower one is tried, and so on.
    """
    return _select(vals, np.empty(0, np.int64), n, True, seen, excluded, k, buf_s, buf_i, out_s, out_i)


@njit(**JIT)
def select_sparse(vals: np.ndarray, cand: IntArray, n_cand: int, seen: np.ndarray, excluded: np.ndarray, k: int,
                  buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """:func:`select_dense` over the items ``cand[:n_cand]`` (in any order) instead of ``range(n)``."""
    return _select(vals, cand, n_cand, False, seen, excluded, k, buf_s, buf_i, out_s, out_i)
