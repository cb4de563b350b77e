"""A seeded synthetic shop: realistic e-commerce events with answers known in advance.

The shop is a small generative model, built once per seed:

* **Items** belong to categories (category sizes vary) and carry a latent taste vector that lies near
  its category's centre, a price (log-normal around a per-category median) and a popularity drawn
  from a Zipf-like power law. A share of items only becomes available partway through the stream.
* **Users** carry a latent taste vector mixed from two favourite categories; it drifts as a slow
  random walk, one step per simulated day. Activity is heavy-tailed across users.
* **Sessions**: a user visits at a time of day drawn from a diurnal profile, browses a few items
  (category chosen by taste, often the session's focus category; item chosen within the category by
  popularity re-weighted by taste) and runs each viewed item through the funnel
  view -> click -> add_to_cart -> purchase (about 100 : 30 : 8 : 3). Events inside a session are
  seconds to minutes apart; a user's sessions are more than 30 minutes apart.
* **Complements**: some items have a planted "bought together" partner. After a purchase of such an
  item the same session continues, with probability ``complement_share``, with a funnel on the
  partner. :attr:`SyntheticShop.complements` is the known answer for tests.

Generation is vectorised with numpy (about a million events in a few seconds, most of it spent
building the dicts) and fully determined by ``ShopConfig.seed``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from stream_rec.events import EVENT_TYPES, SCHEMA_VERSION
from stream_rec.types import Float32Array, FloatArray, IntArray

__all__ = ["ShopConfig", "SyntheticShop", "default_categories", "write_jsonl"]

DAY_MS: Final = 86_400_000
#: Sessions of one user are separated by strictly more than this (the usual sessionisation window).
SESSION_GAP_MS: Final = 30 * 60 * 1000

#: Per-step funnel conversion (view->click, click->cart, cart->purchase) giving ~100 : 30 : 8 : 3.
P_CLICK: Final = 0.30
P_CART: Final = 0.27
P_PURCHASE: Final = 0.375
#: A complement is wanted by construction, so its funnel converts far better than a browsed item.
P_COMPLEMENT_STEPS: Final = (0.8, 0.6, 0.6)
#: How strongly a user's taste for an item raises its click rate (slope on the logit scale).
CLICK_TASTE_GAIN: Final = 2.0

#: Views per session are geometric with this stop probability (mean 1 / 0.25 = 4 views).
P_SESSION_STOP: Final = 0.25
#: Expected events per session: 4 views * (1 + 0.30 + 0.081 + 0.030); used only to size batches.
EVENTS_PER_SESSION: Final = 5.6
#: Share of a session's views that stay in its focus category (people browse one aisle at a time).
P_FOCUS: Final = 0.6
#: Softmax temperatures of taste: category choice, then item choice within the category.
BETA_CATEGORY: Final = 4.0
BETA_ITEM: Final = 3.0
#: Candidates drawn by popularity and re-weighted by taste per view (sampling-importance-resampling:
#: exact softmax over every item per session would cost sessions x items).
N_CANDIDATES: Final = 8
#: How far an item's vector lies from its category centre (relative to the unit-length centre).
ITEM_SPREAD: Final = 0.6
#: Share of items with a planted complement, and how often that complement is in another category.
COMPLEMENT_ITEM_SHARE: Final = 0.15
P_COMPLEMENT_OTHER_CATEGORY: Final = 0.7

#: Gaps between consecutive events of a session: log-normal medians (ms) and spread, then clipped.
GAP_FUNNEL_STEP_MS: Final = 8_000
GAP_NEXT_ITEM_MS: Final = 40_000
GAP_SIGMA: Final = 0.9
GAP_CLIP_MS: Final = (1_000, 10 * 60 * 1000)
#: Relative traffic per hour of day: quiet at night, peaks at lunch and in the evening.
DIURNAL: Final = (
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 0.9, 1.0, 1.0, 1.1,
    1.3, 1.2, 1.0, 1.0, 1.1, 1.3, 1.6, 1.9, 2.0, 1.8, 1.2, 0.6,
)  # fmt: skip
#: Sessions generated per numpy batch: bounds memory whatever ``n_events`` is.
MAX_BATCH_SESSIONS: Final = 50_000
#: Events per chunk when turning columns into dicts (bounds the size of temporary Python lists).
DICT_CHUNK: Final = 65_536
#: The default shop: 20 categories for 5,000 items; :func:`default_categories` scales from there.
BASE_CATEGORIES: Final = 20
BASE_ITEMS: Final = 5_000


@dataclass(frozen=True)
class ShopConfig:
    """Knobs of the synthetic shop.

    Parameters
    ----------
    n_users, n_items, n_categories
        Catalogue and audience size; ids are ``u0..``, ``i0..`` and ``c0..``.
    n_events
        Exactly this many events are generated.
    n_factors
        Latent taste dimensions of users, items and categories.
    popularity_exponent
        Item popularity is proportional to ``rank ** -popularity_exponent`` (Zipf-like): 0 makes every
        item equally popular; the larger it is, the more of the traffic goes to the best sellers and
        the fewer distinct items a stream touches.
    new_item_share
        Share of items that only become available partway through the stream.
    drift
        Standard length of the daily random-walk step of a user's (unit-length) taste vector.
    complement_share
        Probability that a purchase of an item with a complement is followed, in the same session,
        by a funnel on its complement.
    start_ms, days
        Start of the stream (epoch ms) and its nominal length in days. Visits are drawn within
        ``days``; a user too busy to fit their sessions with the 30-minute gaps spills a little past
        it (only with many events per user, e.g. 1M events over 2,000 users).
    seed
        Same seed, same events.
    """

    n_users: int = 2_000
    n_items: int = 5_000
    n_categories: int = 20
    n_events: int = 100_000
    n_factors: int = 8
    popularity_exponent: float = 1.1
    new_item_share: float = 0.1
    drift: float = 0.05
    complement_share: float = 0.3
    start_ms: int = 1_700_000_000_000
    days: float = 14.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "n_factors"):
            if getattr(self, name) < 1:
                raise ValueError(f"ShopConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_events < 0:
            raise ValueError(f"ShopConfig.n_events must be >= 0, got {self.n_events}")
        if self.n_categories > self.n_items:
            raise ValueError(f"ShopConfig.n_categories ({self.n_categories}) must not exceed n_items ({self.n_items})")
        for name in ("new_item_share", "complement_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ShopConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.n_new_items > self.n_items - 1:
            raise ValueError("ShopConfig.new_item_share must leave at least one item available from the start")
        for name in ("popularity_exponent", "drift"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):  # nan and inf would slip past a plain `< 0`
                raise ValueError(f"ShopConfig.{name} must be a finite number >= 0, got {value}")
        if not self.days > 0:
            raise ValueError(f"ShopConfig.days must be > 0, got {self.days}")

    @property
    def n_new_items(self) -> int:
        """How many items only become available partway through the stream."""
        return int(round(self.new_item_share * self.n_items))


@dataclass
class _Columns:
    """Events as parallel arrays (one row per event); ``session`` is a session index."""

    session: IntArray
    user: IntArray
    item: IntArray
    kind: IntArray  # index into EVENT_TYPES: the funnel step
    quantity: IntArray
    offset_ms: IntArray  # time since the session started; becomes ``ts`` once sessions are placed

    def take(self, index: IntArray | slice) -> _Columns:
        return _Columns(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[_Columns]) -> _Columns:
        return _Columns(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Columns)})


class SyntheticShop:
    """A seeded synthetic shop that emits schema-v1 event dicts.

    Parameters
    ----------
    config
        Size, realism knobs and seed; see :class:`ShopConfig`.

    Attributes
    ----------
    complements : dict[str, str]
        Planted "bought together" pairs, ``item_id -> complement item_id``.
    item_category : dict[str, str]
        Category id of every item.
    item_available_from_ms : dict[str, int]
        When each item becomes available; no event ever touches an item earlier.

    Examples
    --------
    >>> shop = SyntheticShop(ShopConfig(n_users=50, n_items=200, n_events=1_000, seed=7))
    >>> events = list(shop.events())
    >>> len(events), events[0]["type"]
    (1000, 'view')
    >>> sorted(events[0])
    ['category', 'event_id', 'item_id', 'price', 'session_id', 'ts', 'type', 'user_id', 'v']
    >>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    True
    >>> events == list(SyntheticShop(ShopConfig(n_users=50, n_items=200, n_events=1_000, seed=7)).events())
    True
    """

    def __init__(self, config: ShopConfig = ShopConfig()) -> None:
        self.config = config
        world_seed, self._events_seed = np.random.SeedSequence(config.seed).spawn(2)
        rng = np.random.default_rng(world_seed)
        self._build_catalogue(rng)
        self._build_users(rng)
        self._build_complements(rng)
        self._user_ids = [f"u{u}" for u in range(config.n_users)]
        self._item_ids = [f"i{i}" for i in range(config.n_items)]
        self._item_cat_ids = [f"c{c}" for c in self._item_cat.tolist()]
        self.item_category: dict[str, str] = dict(zip(self._item_ids, self._item_cat_ids))
        self.item_available_from_ms: dict[str, int] = dict(zip(self._item_ids, self._available_ms.tolist()))
        sources = np.flatnonzero(self._complement >= 0)
        self.complements: dict[str, str] = {f"i{a}": f"i{b}" for a, b in zip(sources, self._complement[sources])}

    # ----------------------------------------------------------------------------------------- world

    def _build_catalogue(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n_items, n_cats, f = cfg.n_items, cfg.n_categories, cfg.n_factors
        self._cat_vec = _unit_rows(rng.standard_normal((n_cats, f)))
        self._item_cat = _category_of_items(rng, n_items, n_cats)
        noise = rng.standard_normal((n_items, f)) * (ITEM_SPREAD / math.sqrt(f))
        self._item_vec = _unit_rows(self._cat_vec[self._item_cat] + noise)
        # Popularity rank is independent of category, so every category has hits and a long tail.
        ranks = rng.permutation(n_items) + 1.0
        self._item_pop = ranks**-cfg.popularity_exponent
        cat_median = np.exp(rng.normal(math.log(30.0), 0.9, n_cats))
        price = cat_median[self._item_cat] * np.exp(rng.normal(0.0, 0.5, n_items))
        self._item_price = np.maximum(np.round(price, 2), 0.5)
        self._available_ms = self._availability(rng)
        self._cat_log_mass = np.log(np.bincount(self._item_cat, self._item_pop, n_cats))
        self._in_category = _CategorySampler(self._item_cat, self._item_pop, n_cats)
        self._fallback = self._fallback_items()

    def _availability(self, rng: np.random.Generator) -> IntArray:
        """Start of stream for most items; a uniform time in the middle 85 % of it for new ones."""
        cfg = self.config
        available = np.full(cfg.n_items, cfg.start_ms, dtype=np.int64)
        n_new = cfg.n_new_items
        new = rng.choice(cfg.n_items, size=n_new, replace=False)
        horizon = cfg.days * DAY_MS
        available[new] = cfg.start_ms + rng.uniform(0.05 * horizon, 0.9 * horizon, n_new).astype(np.int64)
        return available

    def _fallback_items(self) -> IntArray:
        """Per category, its most popular item available from the start (else the global one).

        Used when every popularity-drawn candidate of a view is not yet available.
        """
        initial = self._available_ms <= self.config.start_ms
        weight = np.where(initial, self._item_pop, -1.0)
        by_cat = np.lexsort((-weight, self._item_cat))  # category, then most popular first
        top = by_cat[np.searchsorted(self._item_cat[by_cat], np.arange(self.config.n_categories))]
        return np.where(initial[top], top, int(np.argmax(weight))).astype(np.int64)

    def _build_users(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n_users, f = cfg.n_users, cfg.n_factors
        favourite = rng.integers(0, cfg.n_categories, (n_users, 2))
        noise = rng.standard_normal((n_users, f)) * (0.35 / math.sqrt(f))
        start = _unit_rows(0.75 * self._cat_vec[favourite[:, 0]] + 0.35 * self._cat_vec[favourite[:, 1]] + noise)
        # Daily random walk; one spare day covers sessions pushed past the horizon by the gap rule.
        n_days = int(math.ceil(cfg.days)) + 2
        steps = rng.standard_normal((n_days - 1, n_users, f)) * (cfg.drift / math.sqrt(f))
        walk = np.concatenate([start[None], start[None] + np.cumsum(steps, axis=0)])
        # Back to unit length: drift turns a taste without sharpening it (a longer vector would).
        self._taste_by_day = (walk / np.linalg.norm(walk, axis=2, keepdims=True)).astype(np.float32)
        activity = np.exp(rng.normal(0.0, 0.8, n_users))
        self._user_cdf = np.cumsum(activity) / activity.sum()

    def _build_complements(self, rng: np.random.Generator) -> None:
        """Plant ``item -> complement`` pairs; complements are available from the start of the stream."""
        cfg = self.config
        n_src = int(round(COMPLEMENT_ITEM_SHARE * cfg.n_items)) if cfg.n_items > 1 else 0
        sources = rng.choice(cfg.n_items, size=n_src, replace=False)
        other = rng.random(n_src) < P_COMPLEMENT_OTHER_CATEGORY
        shift = rng.integers(1, max(cfg.n_categories, 2), n_src) * other
        target_cat = (self._item_cat[sources] + shift) % cfg.n_categories
        initial = self._available_ms <= cfg.start_ms
        # Uniform, not by popularity: a partner that everybody buys anyway would not stand out.
        initial_sampler = _CategorySampler(self._item_cat, initial.astype(np.float64), cfg.n_categories)
        targets = initial_sampler.sample(target_cat, rng.random(n_src))
        targets = np.where(initial[targets], targets, self._fallback[target_cat])
        keep = targets != sources
        self._complement = np.full(cfg.n_items, -1, dtype=np.int64)
        self._complement[sources[keep]] = targets[keep]

    # ---------------------------------------------------------------------------------------- events

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield exactly ``config.n_events`` event dicts in non-decreasing ``ts`` order.

        Every call replays the same stream: the event generator is re-seeded each time.
        """
        ts, cols, session_rank = self._generate()
        for lo in range(0, len(ts), DICT_CHUNK):
            hi = min(lo + DICT_CHUNK, len(ts))
            yield from self._dicts(lo, ts[lo:hi], cols.take(slice(lo, hi)), session_rank[lo:hi])

    def _dicts(self, first_seq: int, ts: IntArray, cols: _Columns, session: IntArray) -> Iterator[dict[str, Any]]:
        users, items, cats, prices = self._user_ids, self._item_ids, self._item_cat_ids, self._item_price.tolist()
        rows = zip(ts.tolist(), cols.user.tolist(), cols.item.tolist(), cols.kind.tolist(),
                   cols.quantity.tolist(), session.tolist())  # fmt: skip
        for seq, (t, u, i, kind, qty, s) in enumerate(rows, start=first_seq):
            event = {
                "v": SCHEMA_VERSION, "event_id": f"e{seq}", "user_id": users[u], "item_id": items[i],
                "type": EVENT_TYPES[kind], "ts": t, "session_id": f"s{s}", "category": cats[i], "price": prices[i],
            }  # fmt: skip
            if kind >= 2:  # add_to_cart and purchase carry a quantity
                event["quantity"] = qty
            yield event

    def _generate(self) -> tuple[IntArray, _Columns, IntArray]:
        """All events as columns sorted by time, plus each event's session number (in start order)."""
        rng = np.random.default_rng(self._events_seed)
        cols, starts, users = self._enough_sessions(rng)
        starts = _separate_sessions(users, starts, _session_durations(cols, len(starts)))
        ts = starts[cols.session] + cols.offset_ms
        order = np.argsort(ts, kind="stable")
        session_rank = np.empty(len(starts), dtype=np.int64)
        session_rank[np.argsort(starts, kind="stable")] = np.arange(len(starts))
        cols = cols.take(order)
        return ts[order], cols, session_rank[cols.session]

    def _enough_sessions(self, rng: np.random.Generator) -> tuple[_Columns, IntArray, IntArray]:
        """Generate sessions in batches until there are ``n_events`` events, cutting the last session short."""
        parts: list[_Columns] = []
        starts: list[IntArray] = []
        users: list[IntArray] = []
        total, n_sessions = 0, 0
        while total < self.config.n_events:
            need = self.config.n_events - total
            batch = min(MAX_BATCH_SESSIONS, int(need / EVENTS_PER_SESSION * 1.1) + 16)
            user, start = self._sample_visits(rng, batch)
            cols = self._sessions(rng, user, start)
            cols.session += n_sessions
            parts.append(cols)
            starts.append(start)
            users.append(user)
            total, n_sessions = total + len(cols.session), n_sessions + batch
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return _Columns(empty, empty, empty, empty, empty, empty), empty, empty
        cols = _Columns.concat(parts).take(slice(0, self.config.n_events))
        # Events are session-major, so the kept sessions are exactly 0 .. last kept session.
        n_kept = int(cols.session[-1]) + 1
        return cols, np.concatenate(starts)[:n_kept], np.concatenate(users)[:n_kept]

    def _sample_visits(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """Who visits (heavy-tailed activity) and when (uniform day, diurnal hour)."""
        cfg = self.config
        user = np.minimum(np.searchsorted(self._user_cdf, rng.random(n), side="right"), cfg.n_users - 1)
        hour_cdf = np.cumsum(DIURNAL) / sum(DIURNAL)
        hour = np.minimum(np.searchsorted(hour_cdf, rng.random(n), side="right"), 23)
        day = rng.integers(0, int(math.ceil(cfg.days)), n)
        t = (day * 24 + hour + rng.random(n)) * (DAY_MS / 24)
        start = cfg.start_ms + (t % (cfg.days * DAY_MS)).astype(np.int64)
        return user.astype(np.int64), start

    def _taste(self, users: IntArray, ts: IntArray) -> Float32Array:
        """Users' taste vectors at the given times, interpolated between daily snapshots."""
        day = (ts - self.config.start_ms) / DAY_MS
        d0 = np.clip(np.floor(day).astype(np.int64), 0, len(self._taste_by_day) - 2)
        frac = np.clip(day - d0, 0.0, 1.0)[:, None].astype(np.float32)
        return (1 - frac) * self._taste_by_day[d0, users] + frac * self._taste_by_day[d0 + 1, users]

    def _sessions(self, rng: np.random.Generator, user: IntArray, start: IntArray) -> _Columns:
        """Browse, run each view through the funnel, add complement funnels, then time the events."""
        taste = self._taste(user, start)
        n_views = rng.geometric(P_SESSION_STOP, len(user))
        view_session = np.repeat(np.arange(len(user)), n_views)
        category = self._browse_categories(rng, taste, view_session)
        item, affinity = self._browse_items(rng, taste[view_session], category, start[view_session])
        depth = _funnel_depth(rng, _click_probability(affinity), (P_CART, P_PURCHASE))
        f_session, f_item, f_depth = self._add_complements(rng, view_session, item, depth, start)
        return _expand_funnels(rng, f_session, f_item, f_depth, user)

    def _browse_categories(self, rng: np.random.Generator, taste: Float32Array, view_session: IntArray) -> IntArray:
        """Category per view: the session's focus category or a fresh draw, both by taste."""
        logits = self._cat_log_mass + BETA_CATEGORY * (taste @ self._cat_vec.T)
        cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
        cdf /= cdf[:, -1:]
        sessions = np.arange(len(taste))
        focus = _sample_rows(cdf, sessions, rng.random(len(taste)))
        fresh = _sample_rows(cdf, view_session, rng.random(len(view_session)))
        return np.where(rng.random(len(view_session)) < P_FOCUS, focus[view_session], fresh)

    def _browse_items(
        self, rng: np.random.Generator, taste: Float32Array, category: IntArray, when: IntArray
    ) -> tuple[IntArray, FloatArray]:
        """Item per view: popularity-drawn candidates in the category, re-weighted by taste and availability."""
        n = len(category)
        cand = self._in_category.sample(np.repeat(category, N_CANDIDATES), rng.random(n * N_CANDIDATES))
        cand = cand.reshape(n, N_CANDIDATES)
        # Dot products one factor at a time: avoids an (n, candidates, factors) temporary.
        affinity = np.zeros(cand.shape, dtype=np.float32)
        for k in range(taste.shape[1]):
            affinity += taste[:, k : k + 1] * self._item_vec[:, k].astype(np.float32)[cand]
        weight = np.exp(BETA_ITEM * affinity) * (self._available_ms[cand] <= when[:, None])
        cum = np.cumsum(weight, axis=1)
        pick = np.argmax(cum > rng.random(n)[:, None] * cum[:, -1:], axis=1)
        chosen = np.where(cum[:, -1] > 0, cand[np.arange(n), pick], self._fallback[category])
        taste_of_chosen = np.einsum("ij,ij->i", taste, self._item_vec[chosen].astype(np.float32))
        return chosen, taste_of_chosen

    def _add_complements(
        self, rng: np.random.Generator, session: IntArray, item: IntArray, depth: IntArray, start: IntArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Insert a complement funnel right after some purchases of items that have a complement."""
        partner = self._complement[item]
        follow = (depth == 4) & (partner >= 0) & (rng.random(len(item)) < self.config.complement_share)
        follow &= self._available_ms[np.maximum(partner, 0)] <= start[session]
        parents = np.flatnonzero(follow)
        c_depth = _funnel_depth(rng, np.full(len(parents), P_COMPLEMENT_STEPS[0]), P_COMPLEMENT_STEPS[1:])
        # Sort key 2k puts view k in place; 2k + 1 slots its complement funnel right behind it.
        key = np.concatenate([2 * np.arange(len(item)), 2 * parents + 1])
        order = np.argsort(key, kind="stable")
        return (
            np.concatenate([session, session[parents]])[order],
            np.concatenate([item, partner[parents]])[order],
            np.concatenate([depth, c_depth])[order],
        )


class _CategorySampler:
    """Draw items within given categories, proportionally to a weight, by one flat ``searchsorted``."""

    def __init__(self, item_cat: IntArray, weight: FloatArray, n_categories: int) -> None:
        self.order = np.argsort(item_cat, kind="stable")
        cats = item_cat[self.order]
        w = weight[self.order]
        self.first = np.searchsorted(cats, np.arange(n_categories + 1))
        within = np.cumsum(w) - np.repeat(np.cumsum(w)[self.first[:-1] - 1] * (self.first[:-1] > 0), np.diff(self.first))
        mass = np.repeat(np.maximum(np.bincount(cats, w, n_categories), 1e-300), np.diff(self.first))
        # Category c occupies (c, c + 1] of one increasing array, so a single search serves every category.
        self.flat = cats + within / mass

    def sample(self, category: IntArray, u: FloatArray) -> IntArray:
        pos = np.searchsorted(self.flat, category + u, side="right")
        pos = np.clip(pos, self.first[category], self.first[category + 1] - 1)
        return self.order[pos]


def default_categories(n_items: int) -> int:
    """Categories for a catalogue of ``n_items`` when none are asked for.

    20 up to 5,000 items (the default shop; at most one per item), then ``20 * sqrt(n_items / 5,000)``,
    rounded: both the number of categories and their size grow with the square root of the catalogue,
    as a shop adds aisles and fills them. Linear growth would keep 250 items a category but make the
    generator's sessions-by-categories taste matrix grow with the catalogue.

    Examples
    --------
    >>> [default_categories(n) for n in (7, 5_000, 100_000, 1_000_000)]
    [7, 20, 89, 283]
    """
    if n_items <= BASE_ITEMS:
        return min(BASE_CATEGORIES, n_items)
    return round(BASE_CATEGORIES * math.sqrt(n_items / BASE_ITEMS))


def _unit_rows(x: FloatArray) -> FloatArray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _category_of_items(rng: np.random.Generator, n_items: int, n_categories: int) -> IntArray:
    """Uneven category sizes (Dirichlet shares), every category non-empty."""
    share = rng.dirichlet(np.full(n_categories, 2.0))
    rest = rng.choice(n_categories, size=n_items - n_categories, p=share)
    return rng.permutation(np.concatenate([np.arange(n_categories), rest])).astype(np.int64)


def _sample_rows(cdf: FloatArray, rows: IntArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw from row ``rows[j]`` of a row-normalised ``cdf`` for every ``j``, vectorised."""
    n_rows, k = cdf.shape
    # Shifting row r by r makes the flattened CDF increasing, so one searchsorted serves all rows.
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right") - rows * k
    return np.clip(pos, 0, k - 1)


def _click_probability(affinity: FloatArray) -> FloatArray:
    """Click rate rises with taste for the item while staying near :data:`P_CLICK` on average."""
    logit = math.log(P_CLICK / (1 - P_CLICK)) + CLICK_TASTE_GAIN * (affinity - affinity.mean())
    return 1.0 / (1.0 + np.exp(-logit))


def _funnel_depth(rng: np.random.Generator, p_click: FloatArray, later: tuple[float, float]) -> IntArray:
    """How far each item gets: 1 view, 2 click, 3 add_to_cart, 4 purchase."""
    n = len(p_click)
    click = rng.random(n) < p_click
    cart = click & (rng.random(n) < later[0])
    purchase = cart & (rng.random(n) < later[1])
    return 1 + click.astype(np.int64) + cart + purchase


def _expand_funnels(
    rng: np.random.Generator, session: IntArray, item: IntArray, depth: IntArray, user: IntArray
) -> _Columns:
    """One event per funnel step, with in-session offsets (short gaps inside a funnel, longer between)."""
    n_events = int(depth.sum())
    funnel = np.repeat(np.arange(len(depth)), depth)
    funnel_first = np.cumsum(depth) - depth
    step = np.arange(n_events) - funnel_first[funnel]
    quantity = np.minimum(rng.geometric(0.75, len(depth)), 5)[funnel]
    median = np.where(step == 0, GAP_NEXT_ITEM_MS, GAP_FUNNEL_STEP_MS)
    gap = np.clip(median * np.exp(GAP_SIGMA * rng.standard_normal(n_events)), *GAP_CLIP_MS).astype(np.int64)
    ev_session = session[funnel]
    session_first = np.flatnonzero(np.r_[True, ev_session[1:] != ev_session[:-1]])
    gap[session_first] = 0
    elapsed = np.cumsum(gap)
    offset = elapsed - np.repeat(elapsed[session_first], np.diff(np.r_[session_first, n_events]))
    return _Columns(ev_session, user[ev_session], item[funnel], step, quantity, offset)


def _session_durations(cols: _Columns, n_sessions: int) -> IntArray:
    """Offset of each session's last event (events are session-major with increasing offsets)."""
    duration = np.zeros(n_sessions, dtype=np.int64)
    duration[cols.session] = cols.offset_ms  # the last write per session wins, and it is the largest
    return duration


def _separate_sessions(users: IntArray, starts: IntArray, durations: IntArray) -> IntArray:
    """Push sessions later until each user's sessions are more than :data:`SESSION_GAP_MS` apart.

    With ``D_k`` the summed durations-plus-gap of a user's earlier sessions, the fixed start is
    ``D_k + max_{j<=k}(s_j - D_j)``: a per-user running maximum, computed for all users at once.
    """
    if len(starts) == 0:
        return starts
    order = np.lexsort((starts, users))
    u, s, need = users[order], starts[order], durations[order] + SESSION_GAP_MS + 1
    first = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[first, len(u)])
    before = np.cumsum(need) - need
    d = before - np.repeat(before[first], counts)
    slack = s - d
    # Lift each user's block above every earlier block so the running max never leaks between users.
    base = slack.min()
    span = int(slack.max() - base) + 1
    block = np.repeat(np.arange(len(first), dtype=np.int64), counts) * span
    fixed = np.maximum.accumulate(slack - base + block) - block + base + d
    out = np.empty_like(starts)
    out[order] = fixed
    return out


def write_jsonl(events: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one compact JSON object per line; a ``.gz`` suffix gzips the file.

    Parameters
    ----------
    events
        Dicts ready for :func:`json.dumps`, e.g. from :meth:`SyntheticShop.events`.
    path
        Destination file.

    Returns
    -------
    int
        Number of events written.

    Examples
    --------
    >>> import tempfile, os
    >>> shop = SyntheticShop(ShopConfig(n_users=10, n_items=50, n_events=20, seed=3))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_jsonl(shop.events(), os.path.join(tmp, "events.jsonl.gz"))
    20
    """
    path = Path(path)
    count = 0
    with _open_text(path) as out:
        for event in events:
            out.write(json.dumps(event, separators=(",", ":")))
            out.write("\n")
            count += 1
    return count


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8")
    return path.open("w", encoding="utf-8")
