"""Two compiled loops handing one event stream to each other across cores.

The learning loop can run matrix factorisation (its list and its learning step) and the adaptive
fusion's measuring on a second thread beside the other sources
(:func:`stream_rec.engine.loop.rank_then_learn`). The threads meet a few times per event, microseconds
apart, so they signal through counters in one shared int64
array, written with release and read with acquire ordering: everything a thread wrote before it
moved a counter is visible to the other once it sees the new value. A hand-over costs ~30 ns
between the two cores of this machine (a lock or an event would cost tens of microseconds).

That only pays while both threads have a core. A waiting thread spins with the CPU's pause hint for
:data:`SPIN_NS`; past that it watches the thread it waits for through that thread's CPU clock: while
the other one runs it spins on, while it does not (the machine had no core for it) it naps
(``nanosleep``) and so frees its own core, maybe for the other one. The time the threads wait for each
other off its core adds up in :data:`OFF_CORE`; once that is a noticeable share of the call
(:data:`OFF_CORE_SHARE`), the machine has no second core to spare and the loop goes on alone
(:func:`go_alone`, at the start of an event, once the other thread has learned every earlier one): the
second thread leaves, and the rest of the call runs the one-thread path, which gives the same results.
Either thread stops waiting when the :data:`ABORT` slot is set (the other one failed).
"""

from __future__ import annotations

import platform
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from stream_rec.models._kernels import INLINE, JIT
from stream_rec.types import IntArray

#: Counters of the shared array, 64 bytes apart so the two threads' counters sit on different cache
#: lines; what a counter hands over sits next to it, on its line.
GO, LISTED, LEARNED, MEASURE, MEASURED, ABORT, THREADS = (8 * s for s in range(7))
NEED = GO + 1  # with GO: what the event needs from the other thread (LIST and/or MEASURE_THERE, or ALONE)
COUNT = LISTED + 1  # with LISTED: the length of its list
SEG, UNION = MEASURE + 1, MEASURE + 2  # with MEASURE: the user's segment, the size of the union to measure
OFF_CORE = ABORT + 1  # with ABORT (both rarely written): ns either thread waited while the other was off its core
STARTED = ABORT + 2  # when the call began (CLOCK_MONOTONIC, ns)
HANDED = THREADS + 1  # the loop's own note: 1 + the size of a union the other thread is measuring (0: none)
ALONE_AT = THREADS + 2  # the loop goes on alone from this event at the latest (tests set it), then where it did
#: On each counter's line, this far from the counter: the CPU clock of the thread that moves it.
MOVER_CLOCK = 7
LIST, MEASURE_THERE, ALONE = 1, 2, 4  # bits of NEED; ALONE: the second thread leaves
SIZE = 8 * 7
#: Counters the loop's own thread moves; the second thread moves the others.
MOVED_BY_LOOP = (GO, MEASURE)
MOVED_BY_SECOND = (LISTED, LEARNED, MEASURED)
#: No CPU clock known for a thread: waits for it past :data:`SPIN_NS` count wholly as off its core.
NO_CLOCK = -1
#: How long a waiting thread spins before it looks at the other one: a hand-over between two running
#: threads takes well under a microsecond, a source's list tens of microseconds, and a thread waking from
#: a nap (NAP_NS plus Linux's timer slack, 50 us) less than this, so two waiting threads never keep each
#: other napping; a thread taken off its core stays off for milliseconds.
SPIN_NS = 200_000
#: Past SPIN_NS, how often a waiting thread looks at the other one, and how long it naps when that one is
#: off its core.
NAP_NS = 20_000
#: The loop goes on alone once the threads have waited for each other off its core for more than this,
#: and for more than 1 / OFF_CORE_SHARE of the call so far: with both threads on their cores such waits
#: stay near zero, while each time the machine takes a core from one of them the other waits out its
#: time slice (milliseconds).
OFF_CORE_MIN_NS = 1_000_000
OFF_CORE_SHARE = 20
_NEVER = np.iinfo(np.int64).max
_MONOTONIC = time.CLOCK_MONOTONIC


def new_sync(threads: int, alone_at: int = _NEVER) -> IntArray:
    """A zeroed shared array for one call of the learning loop with ``threads`` threads (1 or 2), that
    goes on alone from event ``alone_at`` at the latest."""
    sync = np.zeros(SIZE, np.int64)
    sync[THREADS] = threads
    sync[ALONE_AT] = alone_at
    sync[STARTED] = time.clock_gettime_ns(_MONOTONIC)
    sync[[c + MOVER_CLOCK for c in MOVED_BY_LOOP + MOVED_BY_SECOND]] = NO_CLOCK
    return sync


def set_clock(sync: IntArray, counters: tuple[int, ...], clock: int) -> None:
    """Record the CPU clock (:func:`thread_clock`) of the thread that moves ``counters`` beside them."""
    for counter in counters:
        sync[counter + MOVER_CLOCK] = clock


def thread_clock(ident: int | None) -> int:
    """The CPU clock of the thread ``ident`` (:data:`NO_CLOCK` where the platform has none, or the thread
    has ended)."""
    try:
        return int(time.pthread_getcpuclockid(ident))  # type: ignore[arg-type]
    except (AttributeError, TypeError, OSError):
        return NO_CLOCK


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


_I32, _I64 = ir.IntType(32), ir.IntType(64)
#: ``struct timespec`` of 64-bit Linux and macOS: seconds, nanoseconds.
_TIMESPEC = ir.LiteralStructType([_I64, _I64])


@intrinsic
def clock_ns(typingctx, clock):  # type: ignore[no-untyped-def]
    """``clock_gettime(clock)`` in nanoseconds, -1 if that clock cannot be read."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32, _TIMESPEC.as_pointer()]),
                                            "clock_gettime")
        failed = builder.icmp_signed("!=", builder.call(fn, [builder.trunc(args[0], _I32), ts]), _I32(0))
        ns = builder.add(builder.mul(builder.load(cgutils.gep_inbounds(builder, ts, 0, 0)), _I64(1_000_000_000)),
                         builder.load(cgutils.gep_inbounds(builder, ts, 0, 1)))
        return builder.select(failed, _I64(-1), ns)
    return types.int64(types.int64), codegen


@intrinsic
def _nap(typingctx, ns):  # type: ignore[no-untyped-def]
    """``nanosleep`` for ``ns`` (< 1 s) nanoseconds: the thread leaves its core meanwhile."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        builder.store(_I64(0), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(args[0], cgutils.gep_inbounds(builder, ts, 0, 1))
        fnty = ir.FunctionType(_I32, [_TIMESPEC.as_pointer(), _TIMESPEC.as_pointer()])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "nanosleep"),
                     [ts, ir.Constant(_TIMESPEC.as_pointer(), None)])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@njit(**INLINE)
def wait_for(sync: IntArray, slot: int, value: int) -> bool:
    """Wait until ``sync[slot] >= value``; ``False`` if the other thread gave up first (:data:`ABORT`)."""
    return load_acquire(sync, slot) >= value or _wait(sync, slot, value)


@njit(**JIT)
def _wait(sync: IntArray, slot: int, value: int) -> bool:
    """:func:`wait_for` once the value is not there at once: spin for :data:`SPIN_NS`, then watch the
    thread that moves ``slot`` (:func:`_watch`)."""
    start = clock_ns(_MONOTONIC)
    spins = 0
    while load_acquire(sync, slot) < value:
        if load_acquire(sync, ABORT) != 0:
            return False
        _pause()
        spins += 1
        if spins % 64 == 0 and clock_ns(_MONOTONIC) - start > SPIN_NS:
            return _watch(sync, slot, value)
    return True


@njit(**JIT)
def _watch(sync: IntArray, slot: int, value: int) -> bool:
    """The rest of a long wait: every :data:`NAP_NS` or so, look whether the thread that moves ``slot``
    ran for at least half of that time; spin on while it does (it is working), nap while it does not
    (it is off its core, which ours may give it). How long it was off its core goes to :data:`OFF_CORE`."""
    mover = sync[slot + MOVER_CLOCK]
    first_t, first_c = clock_ns(_MONOTONIC), _cpu_ns(mover)
    t, c = first_t, first_c
    while load_acquire(sync, slot) < value:
        if load_acquire(sync, ABORT) != 0:
            return False
        now = clock_ns(_MONOTONIC)
        if now - t < NAP_NS:
            _pause()
            continue
        ran = _cpu_ns(mover)
        if 2 * (ran - c) < now - t:
            _nap(NAP_NS)
        t, c = now, ran
    off_core = (clock_ns(_MONOTONIC) - first_t) - (_cpu_ns(mover) - first_c)
    sync[OFF_CORE] += max(off_core, 0)  # both threads may add at once: a sum lost then only delays going alone
    return True


@njit(**INLINE)
def _cpu_ns(clock: int) -> int:
    """CPU time of the thread of ``clock``, 0 where it is not known (then it seems never to run)."""
    return max(clock_ns(clock), 0) if clock != NO_CLOCK else 0


@njit(**INLINE)
def should_go_alone(sync: IntArray, event: int) -> bool:
    """Whether the loop, at the start of ``event``, is to go on without the second thread."""
    off_core = sync[OFF_CORE]
    return event >= sync[ALONE_AT] or (off_core > OFF_CORE_MIN_NS and
                                       OFF_CORE_SHARE * off_core > clock_ns(_MONOTONIC) - sync[STARTED])


@njit(**INLINE)
def go_alone(sync: IntArray, event: int) -> None:
    """Send the second thread away at the start of ``event`` (it has learned every earlier one and waits
    for this one): from here the loop's thread does everything, as with one thread."""
    sync[NEED] = ALONE
    sync[THREADS], sync[ALONE_AT] = 1, event
    store_release(sync, GO, event + 1)
