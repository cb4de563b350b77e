"""Blend named recommendation sources into one ranked list, with a few exploration slots.

Scores of different sources live on unrelated scales (dot products, cosine sums, decayed counts), so
they are fused by **weighted reciprocal-rank fusion**: an item ranked ``r`` (0-based) by source ``s``
earns ``weight_s / (RRF_K + r + 1)``, summed over sources. Only ranks matter, and an item several
sources agree on rises above one that a single source ranks first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from stream_rec.models._arrays import as_index
from stream_rec.models.base import OnlineModel
from stream_rec.types import FloatArray, IntArray

#: The customary RRF constant (Cormack et al. 2009): damps the gap between the very top ranks.
RRF_K = 60.0
#: Name of the source used for users without history, for filling short lists and for exploration.
POPULAR = "popular"
EXPLORE = "explore"
#: Exploration items score this far below each other and below the last exploited item.
_EXPLORE_STEP = 1e-9


class Fusion:
    """Weighted reciprocal-rank fusion of named sources, plus seeded exploration of new items.

    Parameters
    ----------
    sources
        Named models, e.g. ``{"mf": ..., "cooc": ..., "popular": ...}``. The ``"popular"`` source (a
        :class:`~stream_rec.models.popularity.DecayedPopularity`) serves users without history, fills
        short lists and supplies exploration candidates through ``new_items``.
    weights
        Per-source weight in the fusion (default 1.0 each; 0 disables a source).
    candidates_per_source
        Depth read from each source (``"popular"`` is read at least ``k`` deep so lists fill up).
    explore
        Fraction of the ``k`` slots (``round(explore * k)``) given to new, rarely seen items.
    explore_max_age_s
        An item counts as new for this long after its first event.
    seed
        Seeds the exploration draws; with ``explore=0`` the output is fully deterministic.
    explore_max_events
        An item stops being an exploration candidate after this many events.

    Examples
    --------
    >>> import numpy as np
    >>> from stream_rec.models.popularity import DecayedPopularity
    >>> pop = DecayedPopularity()
    >>> pop.learn_many(np.zeros(6), np.array([1, 1, 1, 2, 2, 3]), np.ones(6), np.zeros(6))
    >>> fusion = Fusion({"popular": pop}, explore=0.0)
    >>> items, scores, labels = fusion.recommend(-1, k=2, exclude=np.array([1]))
    >>> items.tolist(), labels
    ([2, 3], [('popular',), ('popular',)])
    """

    def __init__(
        self,
        sources: Mapping[str, OnlineModel],
        weights: Mapping[str, float] | None = None,
        candidates_per_source: int = 100,
        explore: float = 0.1,
        explore_max_age_s: float = 86400.0,
        seed: int = 0,
        explore_max_events: int = 50,
    ) -> None:
        self.sources = dict(sources)
        self.weights = {name: 1.0 for name in self.sources} | dict(weights or {})
        self.candidates_per_source = candidates_per_source
        self.explore = explore
        self.explore_max_age_s = explore_max_age_s
        self.explore_max_events = explore_max_events
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def recommend(
        self, user: int, k: int, exclude: IntArray | None = None, has_history: bool = True
    ) -> tuple[IntArray, FloatArray, list[tuple[str, ...]]]:
        """Top-``k`` items, their fused scores (non-increasing) and the sources that proposed each.

        Exactly ``k`` items come back whenever the sources know ``k`` items outside ``exclude``.
        Exploration items come last, labelled ``("explore",)``.
        """
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64), []
        exclude = as_index(exclude if exclude is not None else [])
        names = self._active_sources(user, has_history)
        pool, fused, masks = self._fuse(user, k, exclude, names)

        n_explore = max(0, round(self.explore * k))
        picked = self._explore(n_explore, np.concatenate([exclude, pool[: k - n_explore]]))
        n_exploit = k - len(picked)  # explore slots nobody can fill go back to exploitation
        # A picked item may sit in the pool below the first k - n_explore: skip it there.
        head = pool[: n_exploit + len(picked)]
        if len(picked):
            skip = set(picked.tolist())
            keep = np.array([n for n, i in enumerate(head.tolist()) if i not in skip][:n_exploit], dtype=np.int64)
        else:
            keep = np.arange(len(head))
        pool, fused, masks = pool[keep], fused[keep], masks[keep]

        base = fused[-1] if len(fused) else 0.0
        items = np.concatenate([pool, picked])
        scores = np.concatenate([fused, base - _EXPLORE_STEP * np.arange(1, len(picked) + 1)])
        table = _label_table(tuple(names))
        return items, scores, [table[m] for m in masks.tolist()] + [(EXPLORE,)] * len(picked)

    def _active_sources(self, user: int, has_history: bool) -> list[str]:
        if user < 0 or not has_history:
            return [POPULAR] if POPULAR in self.sources else []
        return [n for n in self.sources if self.weights.get(n, 0.0) > 0.0]

    def _fuse(self, user: int, k: int, exclude: IntArray, names: list[str]) -> tuple[IntArray, FloatArray, IntArray]:
        """All candidates ranked by fused score (ties: lower index), with a bitmask of the sources that
        proposed each.

        Scores and masks are accumulated in dense arrays indexed by item, one source after the other,
        so each item's sum is taken in source order.
        """
        lists = []
        for b, name in enumerate(names):
            depth = self.candidates_per_source
            if name == POPULAR:
                depth = max(depth, k)  # popularity is the filler that guarantees k items
            items, _ = self.sources[name].recommend(user, depth, exclude)
            if len(items):
                lists.append((b, name, as_index(items)))
        if not lists:
            return np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64)
        size = 1 + max(int(items.max()) for _, _, items in lists)
        fused = np.zeros(size, dtype=np.float64)
        masks = np.zeros(size, dtype=np.int64)
        for b, name, items in lists:
            # A source lists an item once, so plain fancy-index updates add each contribution once.
            fused[items] += _rrf(self.weights.get(name, 1.0), len(items))
            masks[items] |= 1 << b
        if len(exclude):
            masks[exclude[(exclude >= 0) & (exclude < size)]] = 0  # sources already leave them out
        cand = np.flatnonzero(masks)
        order = np.lexsort((cand, -fused[cand]))
        cand = cand[order]
        return cand, fused[cand], masks[cand]

    def _explore(self, n: int, taken: IntArray) -> IntArray:
        """Up to ``n`` new items from the popularity source, none in ``taken``, drawn with the seeded RNG."""
        popular = self.sources.get(POPULAR)
        if n <= 0 or popular is None or not hasattr(popular, "new_items"):
            return np.empty(0, np.int64)
        fresh = popular.new_items(popular.now, self.explore_max_age_s, self.explore_max_events)
        taken_set = set(taken.tolist())  # a few dozen ids: a set beats np.isin's set-up cost
        fresh = np.array([i for i in fresh.tolist() if i not in taken_set], dtype=np.int64)
        if len(fresh) == 0:
            return np.empty(0, np.int64)
        return self._rng.choice(fresh, size=min(n, len(fresh)), replace=False).astype(np.int64)


@functools.lru_cache(maxsize=256)
def _rrf(weight: float, n: int) -> FloatArray:
    """``weight / (RRF_K + rank + 1)`` for ranks ``0 .. n-1`` (read-only, shared between lists)."""
    out = weight / (RRF_K + 1.0 + np.arange(n))
    out.flags.writeable = False
    return out


@functools.cache
def _label_table(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The label of every source bitmask: the names whose bit is set, in source order."""
    return [tuple(n for b, n in enumerate(names) if m >> b & 1) for m in range(1 << len(names))]
