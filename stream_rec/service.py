"""The recommendation service: learn from a micro-batch, refresh the touched users' lists, persist.

This is the one code path behind everything that learns: the Faust worker, ``stream-rec evaluate``
and the tests all call :meth:`RecService.apply`. It never talks to Kafka; the runtime hands it decoded
events with their positions and sends what it returns.

Exactly-once effect on top of at-least-once delivery: every event carries a *position* ``(lane, offset)``
(in a worker, the lane names the source topic and partition). The highest applied offset of each lane
is stored in the same atomic write as the state it produced, so an event redelivered after a crash is
recognised and skipped. Producer retries, which get new offsets, are caught by ``event_id``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

import stream_rec
from stream_rec.events import EVENT_TYPES, Availability, Event
from stream_rec.ids import IdIndex
from stream_rec.models._kernels import INLINE, JIT
from stream_rec.models._sync import (ABORT, COUNT, GO, LEARNED, LIST, LISTED, MEASURE, MEASURE_THERE, MEASURED, NEED,
                                   SEG, THREADS, UNION, new_sync, store_release, wait_for)
from stream_rec.models.base import OnlineModel
from stream_rec.models.cooc import CoOccurrence, CoocState, cooc_anchors, cooc_learn_one
from stream_rec.models.fusion import (CATEGORY, COOC, EXPLORE_BIT, MF, RECENT, Fusion, FusionParams, Scratch, fuse, label,
                                      measure_gathered, measure_interval, measured, mf_list, new_scratch,
                                      rank_and_measure)
from stream_rec.models.mf import ImplicitMF, MFState, mf_learn_one
from stream_rec.models.popularity import DecayedPopularity, PopularityState, pop_learn_one
from stream_rec.profiles import Profile, decode_profile, encode_profile
from stream_rec.purchases import Purchases, PurchasesState, purchases_add, purchases_mark
from stream_rec.settings import Settings
from stream_rec.state.store import Store
from stream_rec.types import FloatArray, IntArray

log = logging.getLogger(__name__)

#: Where an event came from: ``(lane, offset)``; offsets grow within a lane.
Position = tuple[str, int]

_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
_PURCHASE = _TYPE_CODE["purchase"]
#: Batches shorter than this learn on one thread whatever ``settings.threads`` says: starting the
#: second one costs ~0.1 ms.
_THREADS_FROM = 256

_HWM = b"hwm/"
_COUNT = b"count/"
_ID = b"id/"
_PROFILE = b"profile/"
_FUSION = b"fusion/hits"
_CATEGORY = b"category/"


@dataclass
class BatchResult:
    """What one :meth:`RecService.apply` did: counts, the refreshed lists and the state to persist."""

    applied: int = 0
    duplicates: int = 0
    applied_by_type: dict[str, int] = field(default_factory=dict)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, dict[bytes, bytes | None]] = field(default_factory=dict)


def build_models(settings: Settings) -> dict[str, OnlineModel]:
    """The online models named by source, configured from ``settings``."""
    return {
        "mf": ImplicitMF(n_factors=settings.mf_factors, learning_rate=settings.mf_learning_rate, seed=settings.seed),
        "cooc": CoOccurrence(history_size=settings.cooc_history,
                             half_life_s=settings.cooc_half_life_days * 86400.0 or None),
        "popular": DecayedPopularity(half_life_s=settings.popularity_half_life_h * 3600.0),
    }


_warm = False


def warm_up() -> float:
    """Compile (or load from numba's on-disk cache) every kernel the service runs; returns seconds.

    The first process on a machine compiles for one to two minutes; later ones load the cache in about
    a second. :class:`RecService` calls this once per process, before it loads state, so a worker is
    ready to go fast before it joins its consumer group.
    """
    global _warm
    if _warm:
        return 0.0
    _warm = True
    from stream_rec.state import MemoryStore

    started = time.perf_counter()
    service = RecService(Settings(explore=0.5, threads=2), MemoryStore())
    events = [Event("u", "a", "purchase", 1000), Event("u", "b", "view", 2000), Event("v", "a", "view", 3000)]
    service.apply([(("warm-up", n), e) for n, e in enumerate(events)])
    service.rank_then_learn([(("warm-up", 3 + n), e) for n, e in enumerate(events)], np.ones(3, bool), 2)
    more = [Event(f"u{n % 3}", f"i{n % 5}", "view", 4000 + n) for n in range(_THREADS_FROM)]  # two threads
    service.rank_then_learn([(("warm-up", 6 + n), e) for n, e in enumerate(more)], np.ones(len(more), bool), 2)
    seconds = time.perf_counter() - started
    if seconds > 5:
        log.info("compiled the model kernels in %.0fs (cached for later starts)", seconds)
    return seconds


class RecService:
    """Online learning and ranking over a state store.

    Examples
    --------
    >>> from stream_rec.events import Event
    >>> from stream_rec.state import MemoryStore
    >>> service = RecService(Settings(top_n=3, explore=0.0), MemoryStore())
    >>> events = [Event("u1", "shoe", "purchase", 1000), Event("u2", "shoe", "view", 2000),
    ...           Event("u2", "sock", "purchase", 3000)]
    >>> result = service.apply([(("demo", n), e) for n, e in enumerate(events)])
    >>> result.applied, [r["user_id"] for r in result.recommendations]
    (3, ['u1', 'u2'])
    >>> [item["item_id"] for item in result.recommendations[1]["items"]]  # u2 bought the sock already
    ['shoe']
    >>> service.apply([(("demo", 2), events[2])]).duplicates  # redelivered after a crash
    1
    """

    def __init__(self, settings: Settings, store: Store, *, sources: Sequence[str] | None = None) -> None:
        warm_up()
        self.settings = settings
        self.store = store
        self.weights = settings.event_weights()
        self._weight_of_code = np.array([self.weights[t] for t in EVENT_TYPES], dtype=np.float64)
        self.users = IdIndex()
        self.items = IdIndex()
        self.categories = IdIndex()
        self.profiles: dict[int, Profile] = {}
        self.purchases = Purchases()
        self._unavailable: set[int] = set()
        self._side: Scratch | None = None  # the second learning thread's scratch (settings.threads == 2)
        self.hwm: dict[str, int] = {}
        self._touched_lanes: set[str] = set()
        self.counts: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)
        self.models = build_models(settings)
        # ``sources`` ranks with a subset of the models (e.g. ("mf",) to judge one alone); all still learn.
        # "recent" ranks the co-occurrence model's per-user history (the items a user just looked at).
        available = {**self.models, "recent": self.models["cooc"], "category": self.models["popular"]}
        chosen = available if sources is None else {name: available[name] for name in sources}
        # The co-occurrence model's histories serve "recent" and "category" even when it does not rank.
        self.fusion = Fusion({"cooc": self.models["cooc"], **chosen},
                             weights={} if "cooc" in chosen else {"cooc": 0.0}, explore=settings.explore,
                             seed=settings.seed, adapt=settings.fusion_adapt,
                             rebuy_after_s=settings.rebuy_after_days * 86400.0,
                             sample_every=settings.fusion_sample_every)
        self.model_version = f"{stream_rec.__version__}+{_settings_digest(settings)}"
        self._names = _Names(self.items, self.categories, self.models["popular"])
        self._load()

    # -- learning ---------------------------------------------------------------------------------

    def apply(self, batch: Sequence[tuple[Position, Event]], *, lists: bool = True, changes: bool = True) -> BatchResult:
        """Learn from a micro-batch in order and refresh each touched user's list once.

        Offline evaluation, which neither publishes nor persists, passes ``lists=False`` and
        ``changes=False``; the learning is the same.
        """
        result = BatchResult()
        fresh, _ = self._drop_duplicates(batch, result)
        if not fresh:
            return result
        users, items, weights, ts_ms, bought, cats = self._arrays(fresh)
        self._learn(users, items, weights, ts_ms, bought, cats, np.zeros(len(fresh), dtype=bool), 0, logs=True)
        last_event = self._update_profiles(fresh, users, result)
        if lists:
            touched = list(last_event)
            lists = self._rank_many(touched, self.settings.top_n)
            result.recommendations = [self._recommendation(last_event[u], *ranked) for u, ranked in zip(touched, lists)]
        if changes:
            result.changes = self._changes(last_event)
        else:
            self._forget_changes()
        return result

    def rank_then_learn(self, batch: Sequence[tuple[Position, Event]], scored: np.ndarray, k: int) -> IntArray:
        """The prequential step of offline evaluation, one event at a time in compiled code.

        For each event in order: if ``scored[e]``, rank the user's top ``k`` on the state so far exactly
        as :meth:`recommend` does (the same compiled :func:`~stream_rec.models.fusion.fuse`, bought
        items excluded); then learn the event with the same per-event steps :meth:`apply` runs.
        Returns ``(len(batch), k)`` item indices, padded with ``-1`` (all ``-1`` for an unscored or
        duplicate event). Nothing is published and the state is not marked for persisting.
        """
        result = BatchResult()
        fresh, keep = self._drop_duplicates(batch, result)
        out = np.full((len(batch), k), -1, dtype=np.int64)
        if not fresh:
            return out
        users, items, weights, ts_ms, bought, cats = self._arrays(fresh)
        out[keep] = self._learn(users, items, weights, ts_ms, bought, cats, np.asarray(scored, dtype=bool)[keep], k,
                                logs=False)
        self._update_profiles(fresh, users, result, triggers=False)
        self._forget_changes()
        return out

    def _learn(self, users: IntArray, items: IntArray, weights: FloatArray, ts_ms: IntArray, bought: np.ndarray,
               cats: IntArray, scored: np.ndarray, k: int, *, logs: bool) -> IntArray:
        """Learn a batch event by event in one compiled call, first ranking the ``scored`` ones (for
        :meth:`rank_then_learn`); with ``logs`` the changed rows are recorded for persisting."""
        n_users, n_items = len(self.users), len(self.items)
        mf, cooc, pop = (self.models[name] for name in ("mf", "cooc", "popular"))
        mf.reserve(n_users, n_items)
        cooc.reserve(n_users, n_items)
        pop.reserve(n_items)
        pop.reserve_categories(len(self.categories))
        self.purchases.reserve(n_users, int(bought.sum()))
        top_n = self.settings.top_n
        _, scratch = self.fusion.prepare(max(k, top_n), n_items)
        rows = np.full((len(users), k), -1, dtype=np.int64)
        n = len(users) if logs else 0
        mf_log = np.empty(n * (1 + mf.n_negatives), dtype=np.int64)
        cooc_log = np.empty(n * (1 + cooc.history_size), dtype=np.int64)
        log_n = np.zeros(2, dtype=np.int64)
        ranked = (self.fusion.mf.state, self.fusion.cooc.state, self.fusion.popular.state)
        threads = 2 if self.settings.threads > 1 and len(users) >= _THREADS_FROM else 1
        sync, side = new_sync(threads), scratch
        if threads > 1:
            side = self._side_scratch(len(scratch.excluded), len(scratch.ls))
        fp, top_explore = self.fusion.params(), self.fusion.n_explore(top_n)
        args = (mf.state, cooc.state, pop.state, ranked, self.purchases.state, scratch, side, sync, fp, n_items, k,
                self.fusion.n_explore(k), users, items, weights, ts_ms, bought, cats, scored, rows, mf_log, cooc_log,
                log_n, top_n, top_explore)
        if threads == 1:
            _rank_then_learn(*args)
        else:
            _two_threads(sync, args, (mf.state, ranked[0], scratch, side, sync, fp, n_items, users, items, weights,
                                      mf_log, log_n, top_n, top_explore))
        if logs:
            mf.touch(users=users, items=mf_log[: log_n[0]])
            cooc.touch(users=users, items=cooc_log[: log_n[1]])
            pop.touch(items=items)
        return rows

    def _side_scratch(self, n_items: int, depth: int) -> Scratch:
        """The scratch of the second thread's matrix factorisation lists, kept as large as the fusion's."""
        side = self._side
        if side is None or len(side.excluded) < n_items or len(side.ls) < depth:
            side = self._side = new_scratch(n_items, depth)
        return side

    def set_availability(self, updates: Iterable[Availability]) -> int:
        """Apply item-availability messages in order: an unavailable item leaves every list until it is
        available again. Returns how many items changed state."""
        changed = 0
        for update in updates:
            item = self.items.add(update.item_id)  # an item may be withdrawn before its first event
            if update.available == (item in self._unavailable):
                changed += 1
                if update.available:
                    self._unavailable.discard(item)
                else:
                    self._unavailable.add(item)
        if changed:
            self.fusion.blocked = np.array(sorted(self._unavailable), dtype=np.int64)
        return changed

    @property
    def unavailable(self) -> list[str]:
        """Item ids currently marked unavailable."""
        return self.items.externals(sorted(self._unavailable))

    def _arrays(self, fresh: list[Event]) -> tuple[IntArray, IntArray, FloatArray, IntArray, np.ndarray, IntArray]:
        """Index arrays of a batch: ``(users, items, weights, ts_ms, is_purchase, categories)`` (category
        -1 where an event names none); new ids get indices. One pass over the events per field, in C
        where it can be (``map``, ``list.count``): at ~8,000 events a call these passes are most of
        the Python time of ``stream-rec evaluate``."""
        users = np.array(self.users.add_many([e.user_id for e in fresh]), dtype=np.int64)
        items = np.array(self.items.add_many([e.item_id for e in fresh]), dtype=np.int64)
        named = [e.category for e in fresh]
        if named.count(None) < len(named):
            cats = np.array([-1 if c is None else self.categories.add(c) for c in named], dtype=np.int64)
        else:
            cats = np.full(len(fresh), -1, dtype=np.int64)
        codes = np.array(list(map(_TYPE_CODE.__getitem__, [e.type for e in fresh])), dtype=np.int64)
        weights = self._weight_of_code[codes]
        ts_ms = np.array([e.ts_ms for e in fresh], dtype=np.int64)
        return users, items, weights, ts_ms, codes == _PURCHASE, cats

    def persist(self, result: BatchResult) -> None:
        """Write a batch's state in one atomic write (call after its recommendations are sent)."""
        if result.changes:
            self.store.write(result.changes)

    def forget_positions(self, lanes: Iterable[str]) -> list[str]:
        """Drop the applied-offset marks of ``lanes``, at once and in the store; returns those that had one.

        For a source partition that starts again below its mark (a broker that lost its data numbers a
        recreated topic from 0 again): its events would otherwise all be skipped as already applied.

        >>> from stream_rec.state import MemoryStore
        >>> service = RecService(Settings(explore=0.0), MemoryStore())
        >>> event = Event(user_id="u", item_id="i", type="view", ts_ms=1)
        >>> service.apply([(("lane", 7), event)]).applied, service.apply([(("lane", 0), event)]).duplicates
        (1, 1)
        >>> service.forget_positions(["lane", "other"]), service.apply([(("lane", 0), event)]).applied
        (['lane'], 1)
        """
        gone = [lane for lane in lanes if self.hwm.pop(lane, None) is not None]
        self._touched_lanes.difference_update(gone)
        if gone:
            self.store.write({"meta": {_HWM + lane.encode(): None for lane in gone}})
        return gone

    def _drop_duplicates(self, batch: Sequence[tuple[Position, Event]], result: BatchResult) -> tuple[list[Event], list[int]]:
        """The events not applied before, and their positions in ``batch``."""
        fresh: list[Event] = []
        keep: list[int] = []
        seen_ids: set[tuple[str, str]] = set()
        for n, ((lane, offset), event) in enumerate(batch):
            if offset <= self.hwm.get(lane, -1):
                result.duplicates += 1
                continue
            self.hwm[lane] = offset
            self._touched_lanes.add(lane)
            if event.event_id is not None:
                key = (event.user_id, event.event_id)
                profile = self.profiles.get(self.users.get(event.user_id))
                if key in seen_ids or (profile is not None and profile.has_seen(event.event_id)):
                    result.duplicates += 1
                    continue
                seen_ids.add(key)
            fresh.append(event)
            keep.append(n)
        result.applied = len(fresh)
        return fresh, keep

    def _update_profiles(self, fresh: list[Event], users: IntArray, result: BatchResult, *,
                         triggers: bool = True) -> dict[int, Event]:
        """Count the batch into profiles and totals; with ``triggers``, each touched user's latest event."""
        user_list = users.tolist()
        profiles = self.profiles
        for u, n in Counter(user_list).items():
            profile = profiles.get(u)
            if profile is None:
                profile = profiles[u] = Profile()
            profile.n_events += n
        ids = [event.event_id for event in fresh]
        if ids.count(None) < len(ids):
            for event_id, u in zip(ids, user_list):
                if event_id is not None:
                    profiles[u].remember(event_id)
        by_type = Counter([event.type for event in fresh])
        for name, n in by_type.items():
            self.counts[name] += n
            result.applied_by_type[name] = result.applied_by_type.get(name, 0) + n
        last_event: dict[int, Event] = {}
        if triggers:
            for event, u in zip(fresh, user_list):
                # Events of one user from different topics arrive in no set order: the trigger is the latest.
                if u not in last_event or event.ts_ms >= last_event[u].ts_ms:
                    last_event[u] = event
        return last_event

    # -- ranking ----------------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int | None = None) -> tuple[list[str], list[float], list[tuple[str, ...]]]:
        """Top-``k`` item ids, scores and sources for a user (a user never seen gets popular items)."""
        k = self.settings.top_n if k is None else k
        return self._rank_many([self.users.get(user_id)], k)[0][:3]

    def recommend_explained(self, user_id: str, k: int | None = None) -> tuple[list[str], list[float],
                                                                             list[tuple[str, ...]], list[dict[str, str]]]:
        """:meth:`recommend` plus why each item is there (the ``because`` of a published list), from one
        ranking (two calls could draw different exploration items)."""
        k = self.settings.top_n if k is None else k
        return self._rank_many([self.users.get(user_id)], k)[0]

    def _rank_many(self, users: list[int], k: int) -> list[tuple[list[str], list[float], list[tuple[str, ...]],
                                                                 list[dict[str, str]]]]:
        """The fused top ``k`` of each user index (-1: a stranger), all in one compiled call:
        ``(item ids, scores, sources, because)`` per user."""
        n_items = len(self.items)
        _, scratch = self.fusion.prepare(k, n_items)
        idx = np.array(users, dtype=np.int64)
        has_history = np.array([u in self.profiles for u in users], dtype=bool)
        out_i, out_a = np.empty((len(users), k), dtype=np.int64), np.empty((len(users), k), dtype=np.int64)
        out_s, out_m = np.empty((len(users), k)), np.empty((len(users), k), dtype=np.int64)
        out_n = np.empty(len(users), dtype=np.int64)
        fusion = self.fusion
        _rank_many(fusion.mf.state, fusion.cooc.state, fusion.popular.state, self.purchases.state, scratch,
                   fusion.params(), n_items, k, fusion.n_explore(k), idx, has_history, out_i, out_s, out_m, out_n,
                   out_a, self.models["popular"].now)
        externals = self.items.externals
        lists = []
        for r, n in enumerate(out_n.tolist()):
            masks = out_m[r, :n].tolist()
            because = [_because(m, a, i, self._names) for m, a, i in zip(masks, out_a[r, :n].tolist(),
                                                                         out_i[r, :n].tolist())]
            lists.append((externals(out_i[r, :n].tolist()), out_s[r, :n].tolist(), [label(m) for m in masks], because))
        return lists

    def _recommendation(self, trigger: Event, item_ids: list[str], scores: list[float],
                        sources: list[tuple[str, ...]], because: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "v": 1,
            "user_id": trigger.user_id,
            "items": [
                {"item_id": item, "score": round(score, 6), "sources": list(src), "because": why}
                for item, score, src, why in zip(item_ids, scores, sources, because)
            ],
            "model_version": self.model_version,
            "trigger": {"event_id": trigger.event_id, "type": trigger.type, "ts": trigger.ts_ms},
            "generated_at": int(time.time() * 1000),
        }

    # -- persistence ------------------------------------------------------------------------------

    def _changes(self, touched_users: dict[int, Event]) -> dict[str, dict[bytes, bytes | None]]:
        users: dict[bytes, bytes | None] = {}
        items: dict[bytes, bytes | None] = {}
        for key in self.users.pop_new():
            users[_ID + key.encode()] = _int_bytes(self.users.get(key))
        for key in self.items.pop_new():
            items[_ID + key.encode()] = _int_bytes(self.items.get(key))
        categories = {_CATEGORY + key.encode(): _int_bytes(self.categories.get(key)) for key in self.categories.pop_new()}
        for u in touched_users:
            users[_PROFILE + _int_bytes(u)] = encode_profile(self.profiles[u], self.purchases.of(u))
        for name, model in self.models.items():
            prefix = name.encode() + b"/"
            touched_u, touched_i = model.pop_touched()
            for u in touched_u.tolist():
                users[prefix + _int_bytes(u)] = model.user_state(u)
            for i in touched_i.tolist():
                items[prefix + _int_bytes(i)] = model.item_state(i)
        meta: dict[bytes, bytes | None] = {_HWM + lane.encode(): str(self.hwm[lane]).encode() for lane in self._touched_lanes}
        self._touched_lanes.clear()
        meta.update({_COUNT + t.encode(): str(n).encode() for t, n in self.counts.items()})
        meta[_FUSION] = self.fusion.hits_state()
        meta.update(categories)
        return {"meta": meta, "users": users, "items": items}

    def _forget_changes(self) -> None:
        self._touched_lanes.clear()
        self.users.pop_new()
        self.items.pop_new()
        self.categories.pop_new()
        for model in self.models.values():
            model.pop_touched()

    def _load(self) -> None:
        started = time.perf_counter()
        for key, value in self.store.items("meta"):
            if key.startswith(_HWM):
                self.hwm[key[len(_HWM):].decode()] = int(value)
            elif key.startswith(_COUNT):
                self.counts[key[len(_COUNT):].decode()] = int(value)
            elif key.startswith(_CATEGORY):
                self.categories.restore(key[len(_CATEGORY):].decode(), _from_int_bytes(value))
            elif key == _FUSION and not self.fusion.set_hits_state(value):
                log.warning("the stored fusion statistics belong to another version: weights start equal again")
        self._load_family("users", self.users, self.profiles)
        self._load_family("items", self.items, None)
        self._forget_changes()  # rows restored from the store are not changes
        if self.hwm:
            log.info("restored %d users, %d items, %d events in %.2fs", len(self.users), len(self.items),
                     sum(self.counts.values()), time.perf_counter() - started)

    def _load_family(self, family: str, index: IdIndex, profiles: dict[int, Profile] | None) -> None:
        """Restore one column family: ids first, then each model's rows in one bulk call per model."""
        rows: dict[bytes, tuple[list[int], list[bytes]]] = {}
        for key, value in self.store.items(family):
            if key.startswith(_ID):
                index.restore(key[len(_ID):].decode(), _from_int_bytes(value))
            else:
                name, _, raw_idx = key.partition(b"/")
                indices, blobs = rows.setdefault(name, ([], []))
                indices.append(_from_int_bytes(raw_idx))
                blobs.append(value)
        index.pop_new()
        bought: dict[int, list[tuple[int, int]]] = {}
        for name, (indices, blobs) in rows.items():
            idx = np.array(indices, dtype=np.int64)
            if name == b"profile" and profiles is not None:
                for u, value in zip(indices, blobs):
                    profiles[u], bought[u] = decode_profile(value)
            elif family == "users":
                self.models[name.decode()].load_user_rows(idx, blobs)
            else:
                self.models[name.decode()].load_item_rows(idx, blobs)
        self.purchases.restore_many(bought)

    @property
    def events_total(self) -> int:
        """Events applied to this state, all time."""
        return sum(self.counts.values())

    def stats(self) -> dict[str, Any]:
        """Counts a person or a test can check against the input."""
        return {"users": len(self.users), "items": len(self.items), "events": dict(self.counts),
                "events_total": self.events_total}


def _because(mask: int, anchor: int, item: int, names: _Names) -> dict[str, str]:
    """An item's reason, the most specific one its sources give: an exploration slot is ``new``; the
    user's own recent item is ``recently_viewed``; an item co-occurrence put forward goes ``with_item``
    (the history item it was most often seen with); one the category source put forward is
    ``popular_in_category``; else ``similar_users`` (matrix factorisation) or ``popular``."""
    if mask >> EXPLORE_BIT & 1:
        return {"kind": "new"}
    if mask >> RECENT & 1:
        return {"kind": "recently_viewed"}
    if anchor >= 0:
        return {"kind": "with_item", "item_id": names.item(anchor)}
    if mask >> CATEGORY & 1 and (category := names.category_of(item)) is not None:
        return {"kind": "popular_in_category", "category": category}
    if mask >> MF & 1:
        return {"kind": "similar_users"}
    return {"kind": "popular"}


class _Names:
    """External names of item and category indices, for explanations."""

    def __init__(self, items: IdIndex, categories: IdIndex, popularity: DecayedPopularity) -> None:
        self.item = items.external
        self._categories, self._popularity = categories, popularity

    def category_of(self, item: int) -> str | None:
        c = self._popularity.category_of(item)
        return self._categories.external(c) if c >= 0 else None


@njit(**INLINE)
def _excluded_since(rebuy_after_s: float, now_s: float) -> int:
    """Purchases at or after this time (ms) are excluded from lists: all of them without a rebuy window."""
    if rebuy_after_s <= 0.0:
        return np.iinfo(np.int64).min
    return int(np.floor((now_s - rebuy_after_s) * 1000.0)) + 1


@njit(**JIT)
def _rank_user(mf: MFState, cooc: CoocState, pop: PopularityState, bought: PurchasesState, sc: Scratch,
               fp: FusionParams, n_items: int, k: int, n_explore: int, u: int, has_history: bool, out_i: IntArray,
               out_s: FloatArray, out_m: IntArray, now_s: float) -> int:
    """One user's fused list without the items they bought (within the rebuy window before ``now_s``):
    the ranking every path of the service uses."""
    since = _excluded_since(fp.rebuy_after_s, now_s)
    _mark_excluded(bought, u, sc.excluded, fp.blocked, since, True)
    n = fuse(mf, cooc, pop, sc, fp, u, has_history, n_items, k, n_explore, out_i, out_s, out_m)
    _mark_excluded(bought, u, sc.excluded, fp.blocked, since, False)
    return n


@njit(**INLINE)
def _mark_excluded(bought: PurchasesState, u: int, excluded: np.ndarray, blocked: IntArray, since: int,
                   value: bool) -> None:
    """Set (or clear) ``excluded`` for what ``u`` may not be shown: recent purchases, unavailable items."""
    purchases_mark(bought.head, bought.next, bought.item, bought.ts_ms, u, excluded, value, since)
    for b in blocked:
        excluded[b] = value


@njit(**JIT)
def _rank_many(mf: MFState, cooc: CoocState, pop: PopularityState, bought: PurchasesState, sc: Scratch,
               fp: FusionParams, n_items: int, k: int, n_explore: int, users: IntArray, has_history: np.ndarray,
               out_i: IntArray, out_s: FloatArray, out_m: IntArray, out_n: IntArray, out_a: IntArray,
               now_s: float) -> None:
    """Each user's list (what a worker publishes), in one call: see :func:`_rank_user`. ``out_a`` gets,
    for each item co-occurrence put forward, the history item it goes with (else -1)."""
    for r in range(len(users)):
        n = out_n[r] = _rank_user(mf, cooc, pop, bought, sc, fp, n_items, k, n_explore, users[r], has_history[r],
                                  out_i[r], out_s[r], out_m[r], now_s)
        cooc_anchors(cooc, users[r], out_i[r], n, sc.mask, out_a[r])
        for c in range(n):
            if not out_m[r, c] >> COOC & 1:
                out_a[r, c] = -1  # explained by another source (co-occurrence did not propose it)


def _two_threads(sync: IntArray, main_args: tuple[Any, ...], mf_args: tuple[Any, ...]) -> None:
    """:func:`_rank_then_learn` here and :func:`_mf_thread` on a second thread, both free of the GIL and
    meeting through ``sync``; if either fails, the other stops waiting for it (``sync[ABORT]``) and the
    error is raised here."""
    failed: list[BaseException] = []

    def mf_side() -> None:
        try:
            _mf_thread(*mf_args)
        except BaseException as err:  # handed to the caller below
            failed.append(err)
            sync[ABORT] = 1

    thread = threading.Thread(target=mf_side, name="stream-rec-mf", daemon=True)
    thread.start()
    try:
        done = _rank_then_learn(*main_args)
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
def _rank_then_learn(mf: MFState, cooc: CoocState, pop: PopularityState,
                     ranked: tuple[MFState, CoocState, PopularityState], bought: PurchasesState, sc: Scratch,
                     side: Scratch, sync: IntArray, fp: FusionParams, n_items: int, k: int, n_explore: int,
                     users: IntArray, items: IntArray, weights: FloatArray, ts_ms: IntArray, purchase: np.ndarray,
                     cats: IntArray, scored: np.ndarray, out: IntArray, mf_log: IntArray, cooc_log: IntArray,
                     log_n: IntArray, top_n: int, top_explore: int) -> bool:
    """The learning of every path, event by event: rank the event's user first if ``scored[e]``
    (:meth:`RecService.rank_then_learn`), measure the sources on every ``fp.sample_every``-th event
    of a known user (:func:`~stream_rec.models.fusion.rank_and_measure`), then learn the event.

    ``mf``, ``cooc`` and ``pop`` learn; the ``ranked`` sources rank (the same models, or an empty
    stand-in for a source the fusion leaves out). The sources are measured on lists of ``top_n`` (the
    published length, whatever ``k`` this call ranks). Rows the models changed go to ``mf_log`` and
    ``cooc_log`` while they have room, counted in ``log_n``.

    With ``sync[THREADS] == 2``, :func:`_mf_thread` runs on another thread meanwhile and does matrix
    factorisation's part and the measuring (``side`` is its scratch): this loop hands it each event
    once the user's exclusions are marked, ranks the other sources, takes its list, hands it the union
    to measure, fuses and learns the rest; it reads the factorisation's state only once the other
    thread has learned every earlier event, and the union is cleared once it is measured. What one
    thread writes the other does not touch meanwhile (the measured hits and the learned scorer are
    read before the union is handed over), and the union puts the factorisation's list last either
    way, so the lists are the same with one thread or two. Returns ``False`` if the other thread gave up.
    """
    row_i, row_s, row_m = np.empty(k, np.int64), np.empty(k), np.empty(k, np.int64)
    mf_n, cooc_n = log_n[0:1], log_n[1:2]
    interval = measure_interval(fp.sample_every, n_items)  # n_items is fixed for the call
    two = sync[THREADS] > 1
    for e in range(len(users)):
        u, i, w, t = users[e], items[e], weights[e], ts_ms[e] / 1000.0
        now = pop.clock[0]  # the latest event learned: what the worker's clock says after a batch
        if two and not wait_for(sync, LEARNED, e):
            return False
        known = bool(mf.user_seen[u])
        measure = False
        if known:
            fp.events[0] += 1
            measure = fp.adapt and fp.events[0] % interval == 0  # measured before it is learned
        need = scored[e] or measure
        # Ranking and measuring both see the lists without what the user may not be shown.
        since = _excluded_since(fp.rebuy_after_s, now)
        if need:
            _mark_excluded(bought, u, sc.excluded, fp.blocked, since, True)
        if two:
            sync[NEED] = (LIST if need else 0) | (MEASURE_THERE if measure and k == top_n else 0)
            store_release(sync, GO, e + 1)
        if need:
            n = rank_and_measure(ranked[0], ranked[1], ranked[2], sc, side, sync, fp, u, i, known, n_items, k,
                                 n_explore, scored[e], measure, top_n, top_explore, row_i, row_s, row_m)
            if n < 0:
                return False
            out[e, :n] = row_i[:n]
            _mark_excluded(bought, u, sc.excluded, fp.blocked, since, False)
        if not two:
            mf_learn_one(mf, u, i, w, mf_log, mf_n)
        cooc_learn_one(cooc, u, i, w, t, cooc_log, cooc_n)
        pop_learn_one(pop, i, w, t, cats[e])
        if purchase[e]:
            purchases_add(bought, u, i, ts_ms[e])
        if not measured(sc, sync):
            return False
    return not two or wait_for(sync, LEARNED, len(users))


@njit(**JIT)
def _mf_thread(mf: MFState, ranked_mf: MFState, sc: Scratch, side: Scratch, sync: IntArray, fp: FusionParams,
               n_items: int, users: IntArray, items: IntArray, weights: FloatArray, mf_log: IntArray,
               log_n: IntArray, top_n: int, top_explore: int) -> bool:
    """The other thread's part of :func:`_rank_then_learn` with two threads, for each event: matrix
    factorisation's list (when the loop needs one; with the exclusions it marked in ``sc``) into
    ``side``, its learning step, then, when the loop hands it the event's union, the measuring of every
    policy on it (:func:`~stream_rec.models.fusion.measure_gathered`, with ``side``'s work arrays).
    Returns ``False`` if the other thread gave up."""
    mf_n = log_n[0:1]
    for e in range(len(users)):
        store_release(sync, LEARNED, e)
        if not wait_for(sync, GO, e + 1):
            return False
        u, need = users[e], sync[NEED]
        m = 0
        if need & LIST:
            m = mf_list(ranked_mf, fp, u, bool(mf.user_seen[u]), n_items, sc.excluded, side)
        sync[COUNT] = m
        store_release(sync, LISTED, e + 1)
        mf_learn_one(mf, u, items[e], weights[e], mf_log, mf_n)
        if need & MEASURE_THERE:
            if not wait_for(sync, MEASURE, e + 1):
                return False
            measure_gathered(sync[SEG], sc, side, fp, items[e], sync[UNION], top_n, top_explore)
            store_release(sync, MEASURED, e + 1)
    store_release(sync, LEARNED, len(users))
    return True


def _int_bytes(value: int) -> bytes:
    # Big-endian so RocksDB's byte order is index order.
    return value.to_bytes(4, "big")


def _from_int_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _settings_digest(settings: Settings) -> str:
    model_fields = ("weights", "mf_factors", "mf_learning_rate", "cooc_history", "cooc_half_life_days",
                    "popularity_half_life_h", "explore", "fusion_adapt", "fusion_sample_every", "rebuy_after_days",
                    "seed")
    text = "|".join(f"{name}={getattr(settings, name)}" for name in model_fields)
    return hashlib.sha1(text.encode()).hexdigest()[:8]
