"""Two compiled loops handing one event stream to each other across cores.

The learning loop can run matrix factorisation (its list and its learning step) and the adaptive
fusion's measuring on a second thread beside the other sources
(:func:`stream_rec.service._rank_then_learn`). The threads meet a few times per event, microseconds
apart, so they signal through counters in one shared int64
array, written with release and read with acquire ordering: everything a thread wrote before it
moved a counter is visible to the other once it sees the new value. A hand-over costs ~30 ns
between the two cores of this machine (a lock or an event would cost tens of microseconds).

A waiting thread spins with the CPU's pause hint; after :data:`SPINS_BEFORE_YIELD` rounds it gives
its core away (``sched_yield``) on every round, so a machine with fewer free cores than threads
still gets through, only slower. Either thread stops waiting when the :data:`ABORT` slot is set
(the other one failed).
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from stream_rec.models._kernels import INLINE
from stream_rec.types import IntArray

#: Counters of the shared array, 64 bytes apart so the two threads' counters sit on different cache
#: lines; what a counter hands over sits next to it, on its line.
GO, LISTED, LEARNED, MEASURE, MEASURED, ABORT, THREADS = (8 * s for s in range(7))
NEED = GO + 1  # with GO: what the event needs from the other thread (LIST and/or MEASURE_THERE)
COUNT = LISTED + 1  # with LISTED: the length of its list
SEG, UNION = MEASURE + 1, MEASURE + 2  # with MEASURE: the user's segment, the size of the union to measure
HANDED = THREADS + 1  # the loop's own note: 1 + the size of a union the other thread is measuring (0: none)
LIST, MEASURE_THERE = 1, 2  # bits of NEED
SIZE = 8 * 7
#: Rounds of pause-hinted spinning before a waiting thread yields its core on every round.
SPINS_BEFORE_YIELD = 1 << 14


def new_sync(threads: int) -> IntArray:
    """A zeroed shared array for one call of the learning loop with ``threads`` threads (1 or 2)."""
    sync = np.zeros(SIZE, np.int64)
    sync[THREADS] = threads
    return sync


def _slot_pointer(context, builder, aryty, ary, idx):  # type: ignore[no-untyped-def]
    return cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, ary), [idx])


@intrinsic
def load_acquire(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """``arr[idx]`` read with acquire ordering (an int64 array)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load_atomic(_slot_pointer(context, builder, signature.args[0], args[0], args[1]), "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, value):  # type: ignore[no-untyped-def]
    """``arr[idx] = value`` written with release ordering (an int64 array)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()
    return types.void(arr, idx, types.int64), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _pause(typingctx):  # type: ignore[no-untyped-def]
    """The spin-wait hint (x86 ``pause``; nothing elsewhere)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])
    return types.int32(), codegen


@njit(**INLINE)
def wait_for(sync: IntArray, slot: int, value: int) -> bool:
    """Wait until ``sync[slot] >= value``; ``False`` if the other thread gave up first (:data:`ABORT`)."""
    spins = 0
    while load_acquire(sync, slot) < value:
        if load_acquire(sync, ABORT) != 0:
            return False
        spins += 1
        if spins < SPINS_BEFORE_YIELD:
            _pause()
        else:
            _sched_yield()
    return True
