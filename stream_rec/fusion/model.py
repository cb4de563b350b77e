"""The fused model as Python sees it: :class:`Fusion` holds the sources' models, the fusion's settings and
its online state, and ranks one list through :func:`~stream_rec.fusion.rank.fuse`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stream_rec.fusion.explore import TAG_EXPLORE
from stream_rec.fusion.policy import (GATHERED, LEARNED, LEARNED_BONUS, LEARNED_SLOPE, N_POLICIES, N_SOURCES, SOURCES,
                                      chosen_weighting, label, source_weight)
from stream_rec.fusion.rank import fuse
from stream_rec.fusion.scratch import FusionParams, Scratch, new_scratch
from stream_rec.models._arrays import as_index, grow
from stream_rec.models._kernels import stream_key
from stream_rec.models.cooc import CoOccurrence
from stream_rec.models.mf import ImplicitMF
from stream_rec.models.popularity import DecayedPopularity
from stream_rec.types import FloatArray, IntArray


class Fusion:
    """Weighted reciprocal-rank fusion of the sources, plus seeded exploration of new items.

    Parameters
    ----------
    sources
        Named models among ``"mf"`` (:class:`ImplicitMF`), ``"cooc"`` (:class:`CoOccurrence`),
        ``"popular"`` (:class:`DecayedPopularity`), ``"recent"`` (a :class:`CoOccurrence`, whose
        per-user history it ranks newest first) and ``"category"`` (a :class:`DecayedPopularity`, whose
        per-category lists it reads for the categories of the user's recent items, taken from the
        co-occurrence model's history). ``"popular"`` serves users without history, fills short lists
        and supplies exploration candidates; a source left out takes no part.
    weights
        Per-source weight in the fusion (default 1.0 each; 0 disables a source, whose model still
        serves the others: give ``"cooc"`` at weight 0 for ``"category"`` alone).
    candidates_per_source
        Depth read from each source (``"popular"`` is read at least ``k`` deep so lists fill up).
    explore
        Fraction of the ``k`` slots (``round(explore * k)``) given to new, rarely seen items. An item
        shown in exploration slots :data:`SHOWS_PER_EVENT` times per event it earned stops being
        explored (shown and ignored); one that earns events goes on.
    explore_max_age_s
        An item counts as new for this long after its first event.
    seed
        Seeds the exploration draws; with ``explore=0`` the output is fully deterministic.
    explore_max_events
        An item stops being an exploration candidate after this many events.
    adapt
        Choose the weighting online (see the module docstring); ``False`` keeps ``weights`` fixed.
    sample_every
        One event in this many, of users with history, is measured (every policy judged, the learned
        scorer trained) before it is learned: 1 learns fastest; each measurement costs the worker one
        more ranking, over the sources' candidates only, whatever the catalogue's size.
    rebuy_after_s
        The service excludes a user's purchases from their lists for this long (0: for ever); the
        fusion carries the setting to the compiled ranking.

    Examples
    --------
    >>> import numpy as np
    >>> pop = DecayedPopularity()
    >>> pop.learn_many(np.zeros(6), np.array([1, 1, 1, 2, 2, 3]), np.ones(6), np.zeros(6))
    >>> fusion = Fusion({"popular": pop}, explore=0.0)
    >>> items, scores, labels = fusion.recommend(-1, k=2, exclude=np.array([1]))
    >>> items.tolist(), labels
    ([2, 3], [('popular',), ('popular',)])
    """

    def __init__(
        self,
        sources: Mapping[str, object],
        weights: Mapping[str, float] | None = None,
        candidates_per_source: int = 30,
        explore: float = 0.1,
        explore_max_age_s: float = 86400.0,
        seed: int = 0,
        explore_max_events: int = 50,
        adapt: bool = True,
        rebuy_after_s: float = 0.0,
        sample_every: int = 2,
    ) -> None:
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown source {sorted(unknown)[0]!r} (expected some of {', '.join(SOURCES)})")
        # A source left out is an empty stand-in with weight 0, so the compiled code has one shape.
        self.mf: ImplicitMF = sources.get("mf") or ImplicitMF(n_factors=1)  # type: ignore[assignment]
        # "recent" reads the co-occurrence model's per-user history.
        self.cooc: CoOccurrence = (sources.get("cooc") or sources.get("recent")  # type: ignore[assignment]
                                   or CoOccurrence(history_size=1, max_neighbors=1))
        self.popular: DecayedPopularity = (sources.get("popular") or sources.get("category")  # type: ignore[assignment]
                                           or DecayedPopularity())
        chosen = {name: 1.0 for name in sources} | dict(weights or {})
        self.weights = np.array([chosen.get(name, 0.0) if name in sources else 0.0 for name in SOURCES])
        #: Each registered source's marker, holding its own state if it has one (see :mod:`stream_rec.sources`).
        self.gathered = tuple(source.make(bit) for bit, source in enumerate(GATHERED, 1))
        self.candidates_per_source = candidates_per_source
        self.explore = explore
        self.popular.keep_new(explore_max_age_s, explore_max_events)
        self.seed = seed
        self._rng_key = stream_key(seed, TAG_EXPLORE)
        self._rng_counter = np.zeros(1, dtype=np.int64)
        self.adapt = adapt
        self.rebuy_after_s = rebuy_after_s
        self.sample_every = sample_every
        #: Items no list may hold (marked unavailable), sorted.
        self.blocked = np.zeros(0, dtype=np.int64)
        #: Exploration slots each item was shown in (kept in memory: a restart forgets them).
        self.shown = np.zeros(0, dtype=np.int64)
        #: Decayed hits per user segment (new, returning) and policy (:data:`WEIGHT_GRID`, :data:`LEARNED`).
        self.hits = np.zeros((2, N_POLICIES))
        self._events = np.zeros(1, dtype=np.int64)
        #: The learned scorer per segment: (slope, bonus) per source, and its squared-gradient averages.
        self.theta = np.tile(np.array([LEARNED_SLOPE, LEARNED_BONUS] * N_SOURCES), (2, 1))
        self.theta_g2 = np.zeros((2, 2 * N_SOURCES))
        self._scratch = new_scratch(0, 0)
        self._reserved = 0  # every source has room for this many items

    @property
    def explore_max_age_s(self) -> float:
        """An item is new this long after its first event (kept by the popularity model, whose pool of
        young items learning sweeps by the same rule)."""
        return self.popular.new_rule[0]

    @property
    def explore_max_events(self) -> int:
        """An item is new while it has at most this many events."""
        return self.popular.new_rule[1]

    def n_explore(self, k: int) -> int:
        """Exploration slots in a list of ``k``."""
        return max(0, round(self.explore * k))

    def params(self) -> FusionParams:
        return FusionParams(self.weights, self.candidates_per_source, self._rng_key, self._rng_counter, self.hits,
                            bool(self.adapt), self._events, float(self.rebuy_after_s), self.blocked, self.shown,
                            int(self.sample_every),
                            self.theta, self.theta_g2, self.gathered)

    def hits_state(self) -> bytes:
        """The adaptive fusion's state, to persist: hits, the learned scorer, then the sampling counter."""
        arrays = (self.hits, self.theta, self.theta_g2)
        return b"".join(a.astype("<f8").tobytes() for a in arrays) + int(self._events[0]).to_bytes(8, "big")

    def set_hits_state(self, data: bytes) -> bool:
        """Restore :meth:`hits_state`; ``False`` (and equal weights again) if it was written for another
        set of policies, by another version: the statistics are rebuilt from live events."""
        arrays = (self.hits, self.theta, self.theta_g2)
        if len(data) != sum(a.size for a in arrays) * 8 + 8:
            return False
        at = 0
        for a in arrays:
            a[:] = np.frombuffer(data[at : at + a.size * 8], dtype="<f8").reshape(a.shape)
            at += a.size * 8
        self._events[0] = int.from_bytes(data[at:], "big")
        return True

    def source_weights(self) -> dict[str, dict[str, object]]:
        """The policy lists use now, for new and for returning users: ``{"policy": "rrf", "weights":
        {source: weight}}`` or ``{"policy": "learned", "slope": {...}, "bonus": {...}}``."""
        out: dict[str, dict[str, object]] = {}
        for seg, seg_name in enumerate(("new", "returning")):
            row = chosen_weighting(self.hits, seg) if self.adapt else 0
            used = [(s, name) for s, name in enumerate(SOURCES) if self.weights[s] > 0]
            if row == LEARNED:
                out[seg_name] = {"policy": "learned",
                                 "slope": {name: round(float(self.theta[seg, 2 * s]), 4) for s, name in used},
                                 "bonus": {name: round(float(self.theta[seg, 2 * s + 1]), 4) for s, name in used}}
            else:
                out[seg_name] = {"policy": "rrf",
                                 "weights": {name: round(float(source_weight(self.weights, self.adapt, s, row)), 4)
                                             for s, name in used}}
        return out

    def prepare(self, k: int, n_items: int | None = None) -> tuple[int, Scratch]:
        """Size every source and the scratch to the catalogue: ``(n_items, scratch)`` for :func:`fuse`.

        ``n_items`` is the number of item indices in use (default: the largest capacity of a source).
        """
        if n_items is None:
            n_items = max(len(self.mf.state.item_seen), len(self.cooc.state.seen), len(self.popular.state.seen))
        if n_items > self._reserved:  # growth is rare: skip three models' checks on every list
            self.mf.reserve(0, n_items)
            self.cooc.reserve(0, n_items)
            self.popular.reserve(n_items)
            self.shown = grow(self.shown, n_items)
            self._reserved = n_items
        depth = max(self.candidates_per_source, k)
        if len(self._scratch.excluded) < n_items or len(self._scratch.ls) < depth:
            self._scratch = new_scratch(max(n_items, 2 * len(self._scratch.excluded)), max(depth, len(self._scratch.ls)))
        return n_items, self._scratch

    def reset_scratch(self, k: int, n_items: int) -> Scratch:
        """A new, all-clear scratch (after a ranking was interrupted half way)."""
        self._scratch = new_scratch(max(n_items, 1), max(self.candidates_per_source, k))
        return self.prepare(k, n_items)[1]

    def recommend(
        self, user: int, k: int, exclude: IntArray | None = None, has_history: bool = True,
        n_items: int | None = None,
    ) -> tuple[IntArray, FloatArray, list[tuple[str, ...]]]:
        """Top-``k`` items, their fused scores (non-increasing) and the sources that proposed each.

        Exactly ``k`` items come back whenever the sources know ``k`` items outside ``exclude``.
        Exploration items come last, labelled ``("explore",)``.
        """
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64), []
        n_items, sc = self.prepare(k, n_items)
        ex = as_index(exclude if exclude is not None else [])
        ex = ex[(ex >= 0) & (ex < n_items)]
        out_i, out_s, out_m = np.empty(k, np.int64), np.empty(k), np.empty(k, np.int64)
        sc.excluded[ex] = True
        try:
            n = fuse(self.mf.state, self.cooc.state, self.popular.state, sc, self.params(), user, has_history,
                     n_items, k, self.n_explore(k), out_i, out_s, out_m)
        finally:
            sc.excluded[ex] = False
        return out_i[:n], out_s[:n], [label(m) for m in out_m[:n].tolist()]
