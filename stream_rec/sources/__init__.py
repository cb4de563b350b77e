"""The sources a list is gathered from, behind one compiled contract (experiment, branch ``registry``).

A source is a small NamedTuple *marker* (its ``bit``: its place in the source mask and in the fusion's
weights) and one compiled step registered for the marker's class:

``propose(marker, cooc, pop, sc, fp, user, known, n_items, k) -> m``
    the source's list for ``user`` into ``sc.ls`` / ``sc.li`` (scores, items; best first), its length.

:func:`propose` is a stub that numba resolves by the marker's type at compile time
(``numba.extending.overload``), so the engine loops over a tuple of markers with ``literal_unroll`` and
calls each source's own code: no dispatch at run time, and the compiled loop is cached on disk (the
markers' classes are named, unlike compiled functions passed as values, whose cache key holds an
address). Adding a source is a module with a marker and its step, and one :func:`register` line.
"""

from __future__ import annotations

from typing import Any, Callable

from numba import types
from numba.extending import overload

_STEPS: dict[type, Callable[..., Any]] = {}


def register(marker: type, step: Callable[..., Any]) -> None:
    """Make ``step`` (a compiled function with :func:`propose`'s arguments) the list step of ``marker``."""
    _STEPS[marker] = step


def propose(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN201 (resolved by numba)
    raise NotImplementedError("propose runs in compiled code only")


@overload(propose, jit_options={"cache": True, "nogil": True})
def _propose(marker, cooc, pop, sc, fp, user, known, n_items, k):  # noqa: ANN001, ANN202
    if isinstance(marker, types.BaseNamedTuple) and marker.instance_class in _STEPS:
        return _STEPS[marker.instance_class]  # plain Python, compiled here and inlined into the caller
    return None


def gather_each(markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask):  # noqa: ANN001, ANN201
    raise NotImplementedError("gather_each runs in compiled code only")


@overload(gather_each, inline="always")
def _gather_each(markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask):  # noqa: ANN001, ANN202
    """Each marker's :func:`propose` then ``merge`` of its list, in order: the loop over the sources
    written out for the tuple's length (static indices type each source once; ``literal_unroll`` typed
    every source in every version of the loop's body, +17 s of compiling)."""
    if not isinstance(markers, types.BaseTuple):
        return None
    lines = ["def impl(markers, cooc, pop, sc, fp, user, known, n_items, k, merge, ranks, union, mask):",
             "    n_union, w = 0, fp.weights"]
    for s in range(len(markers)):
        lines += [f"    if w[markers[{s}].bit] > 0.0:",
                  f"        m = propose(markers[{s}], cooc, pop, sc, fp, user, known, n_items, k)",
                  f"        n_union = merge(sc.li, m, markers[{s}].bit, ranks, union, mask, n_union)"]
    lines.append("    return n_union")
    scope: dict[str, Any] = {"propose": propose}
    exec("\n".join(lines), scope)  # noqa: S102 (our own text, one line per registered source)
    return scope["impl"]
