"""The sources a list is gathered from, behind one compiled contract.

A source is a :class:`typing.NamedTuple` class, its *marker*, whose first field is ``bit`` (its place
in a list entry's source mask and in the fusion's weights) and whose other fields, if any, are the
source's own state (numpy arrays, declared once, by name). Two compiled steps are registered for it:

``propose(marker, cooc, pop, sc, fp, user, known, n_items, k) -> m``
    the source's list for ``user`` into ``sc.ls`` / ``sc.li`` (scores, items; best first, at most
    ``fp.depth`` long, none of ``sc.excluded``), its length. ``known``: the user has history. It reads
    state and never writes any (other scratch arrays it borrows, such as ``sc.mark``, it leaves clear).
``learn(marker, user, item, weight, t, category)``
    learn one event (``t`` in seconds; ``category`` -1 if none), in the learning loop, after the event
    was ranked and measured. Optional: the built-in sources learn in their models' own kernels
    (:mod:`stream_rec.models.cooc`, :mod:`stream_rec.models.popularity`), whose state several of them
    share.

The engine never names a source: :func:`gather_each` and :func:`learn_each` are written out, at compile
time, for the tuple of markers the fusion holds (``FusionParams.gathered``), each calling the steps
registered for its marker's class, inlined, so nothing dispatches at run time. The markers' classes are
part of the compiled functions' types, so a process with another set of sources compiles its own
kernels.

Adding a source is a module with a marker class, its steps and one :func:`register` line; a module
outside this package is loaded by naming it in ``STREAM_REC_SOURCE_MODULES`` (comma-separated), which
must be set before :mod:`stream_rec` is imported (the worker, ``stream-rec evaluate`` and ``replay``
read it from the environment). Their kernels are cached apart, in a folder named by those modules and
their contents (see :func:`stream_rec._kernel_cache_apart`). Matrix factorisation is not a registered
source: its list is made on the second thread, when there is one (see :mod:`stream_rec.fusion`).

Limits: a source's own state (its marker's arrays) is neither persisted nor shared between workers, as
the built-in models' is; the fusion's weight grid grows as 3 to the number of sources (not capped).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from numba import njit, types
from numba.extending import overload

from stream_rec import SOURCE_MODULES_ENV
from stream_rec.models._kernels import INLINE

#: Environment variable naming modules (comma-separated) that register more sources.
MODULES_ENV = SOURCE_MODULES_ENV


class Source(NamedTuple):
    """One registered source: its steps compiled to be inlined where the engine calls them (callable from
    Python too, as the contract tests do)."""

    name: str  # as in settings, labels and metrics
    marker: type  # a NamedTuple class whose first field is ``bit``
    make: Callable[[int], tuple]  # bit -> a marker holding a fresh state
    propose: Any  # the compiled propose step
    learn: Any  # the compiled learn step, None for a source that learns elsewhere (a built-in one)


_SOURCES: dict[str, Source] = {}
_sealed = False
_BY_MARKER: dict[type, Source] = {}


def register(name: str, marker: type, propose: Callable[..., int], learn: Callable[..., None] | None = None,
             make: Callable[[int], tuple] | None = None) -> None:
    """Register source ``name``: lists by ``propose``, learns by ``learn`` (see the module docstring).

    ``make(bit)`` builds the source's marker with a fresh state; by default ``marker(bit)`` (a source
    without state of its own). The fusion takes the registered sources when it is imported
    (:func:`seal`); registering later is an error: name the module in ``STREAM_REC_SOURCE_MODULES``.
    """
    if _sealed:
        raise RuntimeError(f"source {name!r} registered after the fusion took the registered sources: name its "
                           f"module in {MODULES_ENV} (read when stream_rec.sources is first imported)")
    fields = getattr(marker, "_fields", ())
    if not fields or fields[0] != "bit":
        raise TypeError(f"source {name!r}: its marker must be a NamedTuple whose first field is 'bit'")
    if name in _SOURCES or name in ("mf", "explore"):
        raise ValueError(f"a source named {name!r} is already registered")
    source = Source(name, marker, make or marker, njit(**INLINE)(propose),
                    njit(**INLINE)(learn) if learn is not None else None)
    _SOURCES[name] = source
    _BY_MARKER[marker] = source


def registered() -> tuple[Source, ...]:
    """The registered sources, in registration order (the built-in ones first)."""
    return tuple(_SOURCES.values())


def seal() -> tuple[Source, ...]:
    """:func:`registered`, after which no source may register (what the fusion ranks with is fixed)."""
    global _sealed
    _sealed = True
    return registered()


def _written_out(name: str, args: str, head: list[str], per_source: list[str], tail: list[str],
                 indices: list[int], scope: dict[str, Any]) -> Callable[..., Any]:
    """A function ``name(args)``: ``head``, then ``per_source`` once per marker index in ``indices``
    (``{s}`` in it: the index), then ``tail``. Static indices type each source once (``literal_unroll``
    typed every source in every version of the loop's body: 17 s more compiling for the four built-in
    sources)."""
    lines = [f"def {name}({args}):", *head]
    for s in indices:
        lines += [line.format(s=s) for line in per_source]
    lines += tail
    exec("\n".join(lines), scope)  # noqa: S102 (our own text, a few lines per registered source)
    return scope[name]


def gather_each(markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask):  # noqa: ANN001, ANN201
    raise NotImplementedError("gather_each runs in compiled code only")


@overload(gather_each, inline="always")
def _gather_each(markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask):  # noqa: ANN001
    """Each source in use (weight above 0) proposes its list, which ``merge`` adds to the union; returns
    the union's size."""
    if not isinstance(markers, types.BaseTuple):
        return None
    return _written_out(
        "gather_each", "markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask",
        ["    n_union, w = 0, fp.weights"],
        ["    if w[markers[{s}].bit] > 0.0:",
         "        m = propose_{s}(markers[{s}], cooc, pop, sc, fp, user, known, n_items, k)",
         "        n_union = merge(sc.li, m, markers[{s}].bit, ranks, union, mask, n_union)"],
        ["    return n_union"], list(range(len(markers))), _kernels(markers, "propose"))


def learn_each(markers, user, item, weight, t, category):  # noqa: ANN001, ANN201
    raise NotImplementedError("learn_each runs in compiled code only")


@overload(learn_each, inline="always")
def _learn_each(markers, user, item, weight, t, category):  # noqa: ANN001, ANN202
    """Each source that learns on its own learns the event."""
    if not isinstance(markers, types.BaseTuple):
        return None
    kernels = _kernels(markers, "learn")
    learning = [s for s in range(len(markers)) if f"learn_{s}" in kernels]
    return _written_out("learn_each", "markers, user, item, weight, t, category", [],
                        ["    learn_{s}(markers[{s}], user, item, weight, t, category)"], ["    return None"], learning,
                        kernels)


def _kernels(markers: Any, step: str) -> dict[str, Any]:
    """``{step}_{s}``: the compiled ``step`` of marker ``s``, inlined where the written-out loop calls it.

    Each source's step is inlined: as a compiled call of its own it took the state
    tuples and paid reference counting per array per call (ML-100K fused evaluate 0.93x of the
    hand-written gathering, side by side); through an inlining overload it cost ~18 s more compiling."""
    found = {}
    for s in range(len(markers)):
        kernel = getattr(_BY_MARKER[markers[s].instance_class], step)
        if kernel is not None:
            found[f"{step}_{s}"] = kernel
    return found


def _load() -> None:
    from stream_rec.sources import builtin  # noqa: F401 (registers the built-in sources)

    for module in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"{MODULES_ENV} names {module!r}, which cannot be imported: {exc}") from exc


_load()
