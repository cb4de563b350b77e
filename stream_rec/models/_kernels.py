"""Compiled building blocks shared by the models: counter-based random numbers and top-k selection.

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
from numba.cpython.unsafe.numbers import trailing_zeros

#: Options of every compiled function: cached on disk, and free of the GIL while it runs.
JIT = {"cache": True, "nogil": True}
#: For small helpers called per pair or per item that take a model's state tuple: inlined, a call
#: would count references to every array in the tuple (~0.2 us a call). Numba inlines these into its
#: IR at every call site, copying the callee's whole inlined tree, so the steps a list or an event calls
#: once or twice (a union, the fused list, the measuring) are plain compiled functions: inlined, they
#: tripled the compile time (cold compile 132 s against 85 s) for no measurable speed.
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
def insert_best(out_s: FloatArray, out_i: IntArray, m: int, k: int, s: float, i: int) -> int:
    """Insert ``(s, i)`` into the best-first list ``out_*[:m]`` of at most ``k`` entries; returns its new
    length. An entry not better than the last of a full list is dropped after one comparison."""
    if m == k:
        if k == 0 or not _worse(out_s[k - 1], out_i[k - 1], s, i):
            return m
        p = k - 1
    else:
        p = m
        m += 1
    while p > 0 and _worse(out_s[p - 1], out_i[p - 1], s, i):
        out_s[p], out_i[p] = out_s[p - 1], out_i[p - 1]
        p -= 1
    out_s[p], out_i[p] = s, i
    return m


#: Above this many candidates per wanted item, a strided sample first estimates the selection threshold.
_SAMPLE_ABOVE = 3
#: Sample size: about 4 n / k values (so its q-th best passes ~1.5 k items), within these bounds. A
#: sample as large as the candidates themselves is not drawn (see :func:`_threshold`).
_SAMPLE_MIN, _SAMPLE_MAX = 64, 4096
#: The threshold is at least the sample's 8th best: on a capped sample of a large catalogue the
#: formula asks for its 2nd or 3rd best, whose count passing varies so much that ~11% of top-30
#: selections from 100k items (and of top-240 from 1M) fell short and scanned everything a second time
#: (simulated on normal scores, 300 draws each; none did with the 8th best).
_SAMPLE_MIN_RANK = 8


@njit(**JIT)
def _ok(seen: np.ndarray, excluded: np.ndarray, i: int) -> bool:
    return seen[i] and not excluded[i]


@njit(**JIT)
def _threshold(vals: np.ndarray, cand: IntArray, n: int, dense: bool, seen: np.ndarray, excluded: np.ndarray,
               k: int, attempt: int, best_s: FloatArray, best_i: IntArray) -> float:
    """A score that about ``1.5 k * 4 ** attempt`` of the ``n`` candidates reach, estimated from a strided
    sample of about ``4 n / k`` of them; ``-inf`` (everyone) when the sample is too small to tell or
    would be every candidate (sorting them all is then cheaper than sorting the sample and then the
    survivors). ``best_*`` (room for ``n``) hold the sample's best while it runs: scratch, not an
    allocation."""
    size = min(max(_SAMPLE_MIN, 4 * n // k), _SAMPLE_MAX)
    stride = n // size
    if stride <= 1:
        return -np.inf
    sampled = (n + stride - 1) // stride
    q = max(int(1.5 * k * sampled / n) + 2, _SAMPLE_MIN_RANK) * 4**attempt
    if q > sampled:
        return -np.inf
    m = 0  # the sample's q best, best first, in best_*
    for e in range(0, n, stride):
        i = e if dense else cand[e]
        if _ok(seen, excluded, i):
            m = insert_best(best_s, best_i, m, q, vals[i], 0)
    return best_s[q - 1] if m == q else -np.inf


@njit(**JIT)
def _survivors_dense(vals: np.ndarray, n: int, seen: np.ndarray, excluded: np.ndarray, thr: float,
                     flags: np.ndarray, out_i: IntArray) -> int:
    """The items ``i < n`` that may be listed and score at least ``thr``, in order, into ``out_i``;
    returns how many.

    Two passes: one byte per item says whether it passes (a loop the compiler vectorises, ~0.1 ns an
    item), then the bytes are read eight at a time and only the nonzero words are looked into. One
    pass writing every item and advancing its count on a survivor costs ~0.9 ns an item, as its
    stores wait on the count (on MovieLens-100K's 1,682 items: 2.6 us a selection instead of 3.4).
    ``flags`` is scratch of at least ``n + 7`` bytes.
    """
    n_words = (n + 7) // 8
    for i in range(n):
        flags[i] = (vals[i] >= thr) & seen[i] & (not excluded[i])
    for i in range(n, n_words * 8):
        flags[i] = 0
    words = flags[: n_words * 8].view(np.uint64)
    c = 0
    for w in range(n_words):
        bits = words[w]
        while bits != 0:
            out_i[c] = w * 8 + (trailing_zeros(bits) >> 3)  # each flag is 0 or 1: bit 8b is byte b
            c += 1
            bits &= bits - _U64(1)
    return c


@njit(**JIT)
def _select(vals: np.ndarray, cand: IntArray, n: int, dense: bool, seen: np.ndarray, excluded: np.ndarray, k: int,
            buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The selection behind :func:`select_dense` (items ``range(n)``) and :func:`select_sparse` (items
    ``cand[:n]``, any order): a sampled threshold, the survivors, then the survivors inserted best first.

    Neither survivor pass branches on a score, so their cost does not depend on how well the branch
    predictor guesses the scores: the dense one flags items in a vectorised loop
    (:func:`_survivors_dense`, its flags in ``buf_s``'s bytes); the sparse one, whose reads go through
    ``cand`` and do not vectorise, writes every candidate and advances the count only for a survivor.
    """
    if k <= 0:
        return 0
    attempt = 0
    while True:
        thr = (_threshold(vals, cand, n, dense, seen, excluded, k, attempt, buf_s, buf_i)
               if n > _SAMPLE_ABOVE * k else -np.inf)
        if dense:
            c = _survivors_dense(vals, n, seen, excluded, thr, buf_s.view(np.uint8), buf_i)
        else:
            c = 0
            for e in range(n):
                i = cand[e]
                v = vals[i]
                buf_s[c], buf_i[c] = v, i
                c += (v >= thr) & seen[i] & (not excluded[i])
        if c >= k or thr == -np.inf:
            break
        attempt += 1  # an unlucky sample: fewer than k passed
    m = 0
    for r in range(c):
        i = buf_i[r]
        m = insert_best(out_s, out_i, m, k, vals[i] if dense else buf_s[r], i)
    return m


@njit(**JIT)
def select_dense(vals: np.ndarray, seen: np.ndarray, excluded: np.ndarray, n: int, k: int, buf_s: FloatArray,
                 buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """The ``k`` best items ``i < n`` with ``seen[i]`` and not ``excluded[i]`` by ``vals[i]``, best first
    (ties: lower index) into ``out_*``; returns how many. ``buf_*`` need room for ``n`` entries.

    On a large catalogue a strided sample first sets a threshold that about 1.5 k items pass, so only
    those are sorted; if fewer than ``k`` pass (an unlucky sample), a 4x lower one is tried, and so on.
    """
    return _select(vals, buf_i[:0], n, True, seen, excluded, k, buf_s, buf_i, out_s, out_i)


@njit(**JIT)
def select_sparse(vals: np.ndarray, cand: IntArray, n_cand: int, seen: np.ndarray, excluded: np.ndarray, k: int,
                  buf_s: FloatArray, buf_i: IntArray, out_s: FloatArray, out_i: IntArray) -> int:
    """:func:`select_dense` over the items ``cand[:n_cand]`` (in any order) instead of ``range(n)``."""
    return _select(vals, cand, n_cand, False, seen, excluded, k, buf_s, buf_i, out_s, out_i)
