"""The learning loop, compiled: every event of a batch ranked (if asked), measured (every
``sample_every``-th of a known user) and learned, in one call free of the GIL (:func:`rank_then_learn`);
matrix factorisation's side on a second thread when there are two (:func:`mf_thread`, meeting the loop
through :mod:`stream_rec.engine.handover`); the published lists of many users (:func:`rank_many`); other
workers' item updates applied (:func:`apply_remote`). :class:`~stream_rec.service.RecService` prepares
the arrays and calls these; nothing here names a source but matrix factorisation, co-occurrence and
popularity, whose models learn here (the registered sources learn through :func:`~stream_rec.sources.learn_each`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numba import njit

from stream_rec.engine.handover import (ABORT, ALONE, COUNT, GO, LEARNED, LIST, LISTED, MEASURE, MEASURE_THERE,
                                        MEASURED, MOVED_BY_LOOP, MOVED_BY_SECOND, NEED, SEG, THREADS, UNION, go_alone,
                                        set_clock, should_go_alone, store_release, thread_clock, wait_for)
from stream_rec.fusion import COOC, FusionParams, Scratch, fuse, measure_gathered, measured, mf_list, rank_and_measure
from stream_rec.models._kernels import INLINE, JIT
from stream_rec.models.cooc import CoocState, cooc_anchors, cooc_apply_remote, cooc_learn_one
from stream_rec.models.mf import MFState, mf_apply_remote, mf_learn_one
from stream_rec.models.popularity import PopularityState, pop_learn_one
from stream_rec.purchases import PurchasesState, purchases_add, purchases_mark
from stream_rec.sources import learn_each
from stream_rec.state.item_updates import ItemLog
from stream_rec.types import Float32Array, FloatArray, IntArray


@njit(**INLINE)
def excluded_since(rebuy_after_s: float, now_s: float) -> int:
    """Purchases at or after this time (ms) are excluded from lists: all of them without a rebuy window."""
    if rebuy_after_s <= 0.0:
        return np.iinfo(np.int64).min
    return int(np.floor((now_s - rebuy_after_s) * 1000.0)) + 1


@njit(**INLINE)
def rank_user(mf: MFState, cooc: CoocState, pop: PopularityState, bought: PurchasesState, sc: Scratch,
               fp: FusionParams, n_items: int, k: int, n_explore: int, u: int, has_history: bool, out_i: IntArray,
               out_s: FloatArray, out_m: IntArray, now_s: float) -> int:
    """One user's fused list without the items they bought (within the rebuy window before ``now_s``):
    the ranking every path of the service uses."""
    since = excluded_since(fp.rebuy_after_s, now_s)
    mark_excluded(bought, u, sc.excluded, fp.blocked, since, True)
    n = fuse(mf, cooc, pop, sc, fp, u, has_history, n_items, k, n_explore, out_i, out_s, out_m)
    mark_excluded(bought, u, sc.excluded, fp.blocked, since, False)
    return n


@njit(**INLINE)
def mark_excluded(bought: PurchasesState, u: int, excluded: np.ndarray, blocked: IntArray, since: int,
                   value: bool) -> None:
    """Set (or clear) ``excluded`` for what ``u`` may not be shown: recent purchases, unavailable items."""
    purchases_mark(bought.head, bought.next, bought.item, bought.ts_ms, u, excluded, value, since)
    for b in blocked:
        excluded[b] = value


@njit(**JIT)
def rank_many(mf: MFState, cooc: CoocState, pop: PopularityState, bought: PurchasesState, sc: Scratch,
               fp: FusionParams, n_items: int, k: int, n_explore: int, users: IntArray, has_history: np.ndarray,
               out_i: IntArray, out_s: FloatArray, out_m: IntArray, out_n: IntArray, out_a: IntArray,
               now_s: float) -> None:
    """Each user's list (what a worker publishes), in one call: see :func:`rank_user`. ``out_a`` gets,
    for each item co-occurrence put forward, the history item it goes with (else -1)."""
    for r in range(len(users)):
        n = out_n[r] = rank_user(mf, cooc, pop, bought, sc, fp, n_items, k, n_explore, users[r], has_history[r],
                                  out_i[r], out_s[r], out_m[r], now_s)
        cooc_anchors(cooc, users[r], out_i[r], n, sc.mask, out_a[r])
        for c in range(n):
            if not out_m[r, c] >> COOC & 1:
                out_a[r, c] = -1  # explained by another source (co-occurrence did not propose it)


def two_threads(sync: IntArray, main_args: tuple[Any, ...], mf_args: tuple[Any, ...]) -> None:
    """:func:`rank_then_learn` here and :func:`mf_thread` on a second thread, both free of the GIL and
    meeting through ``sync``; if either fails, the other stops waiting for it (``sync[ABORT]``) and the
    error is raised here."""
    failed: list[BaseException] = []

    def mf_side() -> None:
        try:
            mf_thread(*mf_args)
        except BaseException as err:  # handed to the caller below
            failed.append(err)
            sync[ABORT] = 1

    thread = threading.Thread(target=mf_side, name="stream-rec-mf", daemon=True)
    set_clock(sync, MOVED_BY_LOOP, thread_clock(threading.get_ident()))
    thread.start()
    set_clock(sync, MOVED_BY_SECOND, thread_clock(thread.ident))
    try:
        done = rank_then_learn(*main_args)
    except BaseException:
        sync[ABORT] = 1
        raise
    finally:
        thread.join()
    if failed:
        raise failed[0]
    if not done:
        raise RuntimeError("the learning loop's second thread stopped early")


@njit(**JIT)
def rank_then_learn(mf: MFState, cooc: CoocState, pop: PopularityState,
                     ranked: tuple[MFState, CoocState, PopularityState], bought: PurchasesState, sc: Scratch,
                     side: Scratch, sync: IntArray, fp: FusionParams, n_items: int, k: int, n_explore: int,
                     users: IntArray, items: IntArray, weights: FloatArray, ts_ms: IntArray, purchase: np.ndarray,
                     cats: IntArray, scored: np.ndarray, out: IntArray, mf_log: IntArray, cooc_log: IntArray,
                     log_n: IntArray, top_n: int, top_explore: int, item_log: ItemLog, start: int,
                     progress: IntArray) -> bool:
    """The learning of every path, event by event from ``start``: rank the event's user first if ``scored[e]``
    (:meth:`RecService.rank_then_learn`), measure the sources on every ``fp.sample_every``-th event
    of a known user (:func:`~stream_rec.fusion.rank_and_measure`), then learn the event.

    ``mf``, ``cooc`` and ``pop`` learn; the ``ranked`` sources rank (the same models, or an empty
    stand-in for a source the fusion leaves out). The sources are measured on lists of ``top_n`` (the
    published length, whatever ``k`` this call ranks). Rows the models changed go to ``mf_log`` and
    ``cooc_log`` while they have room, counted in ``log_n``.

    With ``sync[THREADS] == 2``, :func:`mf_thread` runs on another thread meanwhile and does matrix
    factorisation's part and the measuring (``side`` is its scratch): this loop hands it each event
    once the user's exclusions are marked, ranks the other sources, takes its list, hands it the union
    to measure, fuses and learns the rest; it reads the factorisation's state only once the other
    thread has learned every earlier event, and the union is cleared once it is measured. What one
    thread writes the other does not touch meanwhile (the measured hits and the learned scorer are
    read before the union is handed over), and the union puts the factorisation's list last either
    way, so the lists are the same with one thread or two. If the other thread keeps losing its core,
    this one sends it away at the start of an event and goes on alone (see :mod:`stream_rec.engine.handover`):
    the same results again, since the other thread has learned every earlier event. Returns ``False`` if
    the other thread gave up.

    ``item_log`` says which events' item half to learn and records it for other workers (see
    :mod:`stream_rec.state.item_updates`). ``progress[0]`` is the event in hand: if learning one raises,
    the caller sets it aside and calls again from the next.
    """
    row_i, row_s, row_m = np.empty(k, np.int64), np.empty(k), np.empty(k, np.int64)
    mf_n, cooc_n = log_n[0:1], log_n[1:2]
    interval = fp.sample_every
    two = sync[THREADS] > 1
    item_side = item_log.item_side
    for e in range(start, len(users)):
        progress[0] = e
        u, i, w, t = users[e], items[e], weights[e], ts_ms[e] / 1000.0
        if not (w >= 0.0 and ts_ms[e] >= 0):  # NaN fails both
            raise ValueError("an event with a negative or undefined weight or time cannot be learned")
        now = pop.clock[0]  # the latest event learned: what the worker's clock says after a batch
        if two:
            if not wait_for(sync, LEARNED, e):
                return False
            if should_go_alone(sync, e):  # the second thread keeps losing its core: it leaves, this one goes on
                go_alone(sync, e)
                two = False
        known = bool(mf.user_seen[u])
        measure = False
        if known:
            fp.events[0] += 1
            measure = fp.adapt and fp.events[0] % interval == 0  # measured before it is learned
        need = scored[e] or measure
        # Ranking and measuring both see the lists without what the user may not be shown.
        since = excluded_since(fp.rebuy_after_s, now)
        if need:
            mark_excluded(bought, u, sc.excluded, fp.blocked, since, True)
        if two:
            sync[NEED] = (LIST if need else 0) | (MEASURE_THERE if measure and k == top_n else 0)
            store_release(sync, GO, e + 1)
        if need:
            n = rank_and_measure(ranked[0], ranked[1], ranked[2], sc, side, sync, fp, u, i, known, n_items, k,
                                 n_explore, scored[e], measure, top_n, top_explore, row_i, row_s, row_m)
            if n < 0:
                return False
            out[e, :n] = row_i[:n]
            mark_excluded(bought, u, sc.excluded, fp.blocked, since, False)
        if not two:
            mf_learn_one(mf, u, i, w, mf_log, mf_n, item_side[e], item_log.pu, item_log.step, item_log.neg, e)
        cooc_learn_one(cooc, u, i, w, t, cooc_log, cooc_n, item_side[e], item_log.pair_n, item_log.pair_j,
                       item_log.pair_w, e)
        learn_each(fp.gathered, u, i, w, t, cats[e])  # the registered sources that learn on their own
        if item_side[e]:
            pop_learn_one(pop, i, w, t, cats[e])
        if purchase[e]:
            purchases_add(bought, u, i, ts_ms[e])
        if not measured(sc, sync):
            return False
    return not two or wait_for(sync, LEARNED, len(users))


@njit(**JIT)
def mf_thread(mf: MFState, ranked_mf: MFState, sc: Scratch, side: Scratch, sync: IntArray, fp: FusionParams,
               n_items: int, users: IntArray, items: IntArray, weights: FloatArray, mf_log: IntArray,
               log_n: IntArray, top_n: int, top_explore: int, item_log: ItemLog, start: int) -> bool:
    """The other thread's part of :func:`rank_then_learn` with two threads, for each event: matrix
    factorisation's list (when the loop needs one; with the exclusions it marked in ``sc``) into
    ``side``, its learning step, then, when the loop hands it the event's union, the measuring of every
    policy on it (:func:`~stream_rec.fusion.measure_gathered`, with ``side``'s work arrays), until
    the loop sends it away (:data:`~stream_rec.engine.handover.ALONE`). Returns ``False`` if the other thread
    gave up."""
    mf_n = log_n[0:1]
    for e in range(start, len(users)):
        store_release(sync, LEARNED, e)
        if not wait_for(sync, GO, e + 1):
            return False
        u, need = users[e], sync[NEED]
        if need & ALONE:
            return True
        m = 0
        if need & LIST:
            m = mf_list(ranked_mf, fp, u, bool(mf.user_seen[u]), n_items, sc.excluded, side)
        sync[COUNT] = m
        store_release(sync, LISTED, e + 1)
        mf_learn_one(mf, u, items[e], weights[e], mf_log, mf_n, item_log.item_side[e], item_log.pu, item_log.step,
                     item_log.neg, e)
        if need & MEASURE_THERE:
            if not wait_for(sync, MEASURE, e + 1):
                return False
            measure_gathered(sync[SEG], sc, side, fp, items[e], sync[UNION], top_n, top_explore)
            store_release(sync, MEASURED, e + 1)
    store_release(sync, LEARNED, len(users))
    return True


@njit(**JIT)
def apply_remote(mf: MFState, cooc: CoocState, pop: PopularityState, tmp: Float32Array, items: IntArray,
                  cats: IntArray, weights: FloatArray, ts: FloatArray, steps: FloatArray, pu: Float32Array,
                  negs: IntArray, pair_from: IntArray, pair_to: IntArray, pair_j: IntArray, pair_w: FloatArray,
                  mf_log: IntArray, cooc_log: IntArray, log_n: IntArray) -> None:
    """Other workers' item updates, in order: each event's item half, as :func:`rank_then_learn` learns
    it (popularity, co-occurrence's totals and pairs, factorisation's steps on the item rows)."""
    mf_n, cooc_n = log_n[0:1], log_n[1:2]
    for r in range(len(items)):
        i, w, t = items[r], weights[r], ts[r]
        mf_apply_remote(mf, tmp, pu[r], i, steps[r], negs[r], mf_log, mf_n)
        a, b = pair_from[r], pair_to[r]
        cooc_apply_remote(cooc, i, w, t, pair_j[a:b], pair_w[a:b], cooc_log, cooc_n)
        pop_learn_one(pop, i, w, t, cats[r])
