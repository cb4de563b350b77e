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
import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

import stream_rec
from stream_rec.engine.handover import THREADS, new_sync
from stream_rec.engine.loop import apply_remote, rank_many, rank_then_learn, two_threads
from stream_rec.events import EVENT_TYPES, Availability, Event, Forget, Impression
from stream_rec.fusion import EXPLORE_BIT, SOURCES, Fusion, Scratch, label, new_scratch
from stream_rec.ids import IdIndex, kafka_partition, row_keys
from stream_rec.models._arrays import grow
from stream_rec.models.base import OnlineModel
from stream_rec.models.cooc import CoOccurrence
from stream_rec.models.mf import ImplicitMF
from stream_rec.models.popularity import DecayedPopularity
from stream_rec.outcomes import Outcomes
from stream_rec.profiles import RECENT_EVENT_IDS, Profile, event_digest
from stream_rec.purchases import Purchases
from stream_rec.recommendations import Names, message, reason, stranger_message
from stream_rec.settings import Settings
from stream_rec.sources import registered
from stream_rec.state import item_updates as updates
from stream_rec.state import keys
from stream_rec.state.changelog import MARKS_KEY, UserRow, decode_marks, decode_user_row, encode_marks, encode_user_row
from stream_rec.state.item_updates import ItemLog, ItemUpdateError, ItemUpdates, new_item_log
from stream_rec.state.store import Store
from stream_rec.types import FloatArray, IntArray
from stream_rec.variants import DEFAULT, Variant, parse_variants, variant_of

log = logging.getLogger(__name__)

#: Where an event came from: ``(lane, offset)``; offsets grow within a lane. A worker's lanes are
#: ``"<user partition>>topic:partition"`` (the source partition of the event, read in the user partition
#: that holds its user); a lane without ``>`` belongs to partition 0 (offline evaluation, tests).
Position = tuple[str, int]

_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
_PURCHASE = _TYPE_CODE["purchase"]
#: Batches shorter than this learn on one thread whatever ``settings.threads`` says: starting the
#: second one costs ~0.1 ms.
_THREADS_FROM = 256
#: After a call of the learning loop went on alone (the second thread kept losing its core), calls start
#: on one thread for this long before they try two again: how busy a machine is changes over seconds.
_ALONE_FOR_S = 1.0
#: Events of one batch whose learning may fail and be set aside; one more and the batch fails: so many
#: bad events at once is a fault of the code or of the state, which dead-lettering would hide.
_MOST_SET_ASIDE = 3
#: Events per item-update message: ~330 bytes each with 32 factors (~830 with 128), so a message stays
#: well under Kafka's customary 1 MB limit.
UPDATES_PER_MESSAGE = 1000

def lane_partition(lane: str) -> int:
    """The user partition a lane belongs to (see :data:`Position`).

    >>> lane_partition("3>shop.browse:1"), lane_partition("evaluate")
    (3, 0)
    """
    head, sep, _ = lane.partition(">")
    return int(head) if sep else 0


class Ranked(NamedTuple):
    """Rows of ranked lists: items, scores, source masks, lengths, co-occurrence anchors, variant."""

    out_i: IntArray
    out_s: FloatArray
    out_m: IntArray
    out_n: IntArray
    out_a: IntArray
    variant: IntArray


@dataclass
class BatchResult:
    """What one :meth:`RecService.apply` did: counts, the refreshed lists and the state to write.

    ``item_updates`` (messages per user partition, for every other worker: send and flush them first),
    then ``changelog`` (per user partition: the rows of the batch's users, then the partition's
    marks record) go to Kafka; ``changes`` goes to the local cache (:meth:`RecService.persist`).
    ``rejected`` are ``(index in the batch, error)`` of events whose learning failed: set aside, the
    rest learned (dead-letter them).
    """

    applied: int = 0
    duplicates: int = 0
    applied_by_type: dict[str, int] = field(default_factory=dict)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, dict[bytes, bytes | None]] = field(default_factory=dict)
    changelog: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    item_updates: dict[int, list[bytes]] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: Users erased (:meth:`RecService.forget`): publish a tombstone for each on the recommendations topic.
    forgotten: list[str] = field(default_factory=list)


def build_models(settings: Settings) -> dict[str, OnlineModel]:
    """The online models named by source, configured from ``settings``."""
    return {
        "mf": ImplicitMF(n_factors=settings.mf_factors, learning_rate=settings.mf_learning_rate, seed=settings.seed,
                         index_above=settings.mf_index_above or np.inf),
        "cooc": CoOccurrence(history_size=settings.cooc_history,
                             half_life_s=settings.cooc_half_life_days * 86400.0 or None),
        "popular": DecayedPopularity(half_life_s=settings.popularity_half_life_h * 3600.0),
    }


_warm = False


def warm_up() -> float:
    """Compile (or load from numba's on-disk cache) every kernel the service runs; returns seconds.

    The first process on a machine compiles for about two minutes; later ones load the cache in about
    a second. :class:`RecService` calls this once per process, before it loads state, so a worker is
    ready to go fast before it joins its consumer group.
    """
    global _warm
    if _warm:
        return 0.0
    _warm = True
    from stream_rec.state import MemoryStore

    log.info("loading the model kernels (the first start on a machine compiles them: about two minutes)")
    stats = rank_then_learn.stats
    misses = sum(stats.cache_misses.values())
    started = time.perf_counter()
    service = RecService(Settings(explore=0.5, threads=2), MemoryStore(), record_items=True)
    events = [Event("u", "a", "purchase", 1000), Event("u", "b", "view", 2000), Event("v", "a", "view", 3000)]
    result = service.apply([(("warm-up", n), e) for n, e in enumerate(events)])
    service.rank_then_learn([(("warm-up", 3 + n), e) for n, e in enumerate(events)], np.ones(3, bool), 2)
    more = [Event(f"u{n % 3}", f"i{n % 5}", "view", 4000 + n) for n in range(_THREADS_FROM)]  # two threads
    service.rank_then_learn([(("warm-up", 6 + n), e) for n, e in enumerate(more)], np.ones(len(more), bool), 2)
    other = RecService(Settings(), MemoryStore())
    other.apply_item_updates([m for messages in result.item_updates.values() for m in messages])
    other.restore(0, result.changelog[0])
    seconds = time.perf_counter() - started
    if sum(stats.cache_misses.values()) > misses:
        log.info("compiled the model kernels in %.1f s (cached in %s for later starts)", seconds, stats.cache_path)
    else:
        log.info("loaded the model kernels from %s in %.1f s", stats.cache_path, seconds)
    return seconds


class RecService:
    """Online learning and ranking over a state store.

    ``record_items`` makes every batch describe its item-side learning for other workers
    (``BatchResult.item_updates``); a worker alone in its group, or offline evaluation, can leave it off.

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

    def __init__(self, settings: Settings, store: Store, *, sources: Sequence[str] | None = None,
                 record_items: bool = False, variant: Variant | None = None) -> None:
        warm_up()
        self.settings = settings
        self.store = store
        self.record_items = record_items
        self.weights = settings.event_weights()
        self._weight_of_code = np.array([self.weights[t] for t in EVENT_TYPES], dtype=np.float64)
        self.users = IdIndex()
        self.items = IdIndex()
        self.categories = IdIndex()
        self.profiles: dict[int, Profile] = {}
        self.purchases = Purchases()
        self._type_counts = np.zeros((0, len(EVENT_TYPES)), dtype=np.int64)  # per user: applied events by type
        self._digests = np.zeros(0, dtype=np.uint64)  # per user: the sum of its applied events' fingerprints
        self._unavailable: set[int] = set()
        self._side: Scratch | None = None  # the second learning thread's scratch (settings.threads == 2)
        self._alone_until = 0.0  # time.monotonic() before which the learning loop keeps to one thread
        #: Calls of the learning loop that started on two threads and went on alone (see stream_rec.engine.handover).
        self.went_alone = 0
        #: lane -> offset of the last event whose user half was applied (the marks of the user partitions)
        self.hwm: dict[str, int] = {}
        #: lane -> {user: offset}: users restored from rows written after the lane's last marks record
        self.ahead: dict[str, dict[int, int]] = {}
        #: lane -> offset of the last event whose item half is in the item model (any worker's lanes)
        self.item_hwm: dict[str, int] = {}
        #: user partition -> the changelog offset after the last record the users of that partition reflect
        self.checkpoints: dict[int, int] = {}
        #: item-updates partition -> the next offset to apply
        self.item_log: dict[int, int] = {}
        #: topic -> the id of the topic (Kafka's topic id) the marks and offsets above were taken from
        self.topic_ids: dict[str, str] = {}
        #: the user-state changelog was made anew: each partition's users are written to it again on restore
        self.reseed = False
        self._lane_part: dict[str, int] = {}
        self._touched_lanes: set[str] = set()
        self.models = build_models(settings)
        # ``sources`` ranks with a subset of the models (e.g. ("mf",) to judge one alone); all still learn.
        # "recent" ranks the co-occurrence model's per-user history (the items a user just looked at).
        available = {**self.models, "recent": self.models["cooc"], "category": self.models["popular"]}
        # A source registered from outside the package holds its own state (its marker's): no model here.
        available |= {source.name: None for source in registered() if source.name not in available}
        chosen = available if sources is None else {name: available[name] for name in sources}
        # The co-occurrence model's histories serve "recent" and "category" even when it does not rank.
        # ``variant`` makes one variant the whole model (evaluation replays a log through each variant so).
        base = variant or DEFAULT
        _check_variant_sources([base, *parse_variants(settings.variants)])
        self.fusion = Fusion({"cooc": self.models["cooc"], **chosen},
                             weights=({} if "cooc" in chosen else {"cooc": 0.0}) | base.weights,
                             explore=settings.explore if base.explore is None else base.explore,
                             seed=settings.seed, adapt=settings.fusion_adapt if base.adapt is None else base.adapt,
                             rebuy_after_s=settings.rebuy_after_days * 86400.0,
                             sample_every=settings.fusion_sample_every)
        #: The A/B variants lists are ranked by (STREAM_REC_VARIANTS), a user's chosen by a hash of its id.
        self.variants = parse_variants(settings.variants) or [base if variant else DEFAULT]
        self._variant_weights = [self._weights_of(v) for v in self.variants]
        self.outcomes = Outcomes([v.name for v in self.variants])
        self.model_version = f"{stream_rec.__version__}+{_settings_digest(settings)}"
        self._names = Names(self.items, self.categories, self.models["popular"])
        self._tmp_row = np.zeros((1, settings.mf_factors), dtype=np.float32)
        self._pending_updates: dict[int, list[bytes]] = {}
        self._load()

    def _weights_of(self, variant: Variant) -> FloatArray:
        """The fusion's source weights with ``variant``'s own in place."""
        weights = self.fusion.weights.copy()
        for source, weight in variant.weights.items():
            weights[SOURCES.index(source)] = weight
        return weights

    # -- ids --------------------------------------------------------------------------------------

    def _index_users(self, ids: list[str]) -> list[int]:
        """Indices of user ids; a new user's factors are seeded by its id (every worker alike)."""
        known = len(self.users)
        found = self.users.add_many(ids)
        if len(self.users) > known:
            new = np.arange(known, len(self.users), dtype=np.int64)
            self.models["mf"].set_row_keys(new, row_keys(self.users.externals(new.tolist())), _NONE, _NONE_KEYS)
            self._type_counts = grow(self._type_counts, len(self.users))
            self._digests = grow(self._digests, len(self.users))
        return found

    def _index_items(self, ids: list[str]) -> list[int]:
        """Indices of item ids; a new item's factors are seeded by its id, so every worker starts it alike."""
        known = len(self.items)
        found = self.items.add_many(ids)
        if len(self.items) > known:
            new = np.arange(known, len(self.items), dtype=np.int64)
            self.models["mf"].set_row_keys(_NONE, _NONE_KEYS, new, row_keys(self.items.externals(new.tolist())))
        return found

    def partition_of(self, lane: str) -> int:
        part = self._lane_part.get(lane)
        if part is None:
            part = self._lane_part[lane] = lane_partition(lane)
        return part

    # -- learning ---------------------------------------------------------------------------------

    def apply(self, batch: Sequence[tuple[Position, Event]], *, lists: bool = True, changes: bool = True) -> BatchResult:
        """Learn from a micro-batch in order and refresh each touched user's list once.

        Offline evaluation, which neither publishes nor persists, passes ``lists=False`` and
        ``changes=False``; the learning is the same.
        """
        result = BatchResult()
        fresh, keep, item_side = self._drop_duplicates(batch, result)
        if not fresh:
            if changes:
                result.changelog, result.changes = self._user_side({})
            return result
        arrays = self._arrays(fresh)
        if self.outcomes.remembering:  # judged before they are learned: what each user had been offered
            self.outcomes.measure(arrays[0].tolist(), arrays[1].tolist(), [e.type for e in fresh],
                                  [e.list_id for e in fresh])
        item_log = self._item_log(item_side)
        failed = self._learn(*arrays, np.zeros(len(fresh), dtype=bool), 0, item_log, logs=True)
        if failed:  # set aside: the rest is learned, these are handed back to be dead-lettered
            result.rejected = [(keep[e], error) for e, error in failed]
            ok = np.ones(len(fresh), dtype=bool)
            ok[[e for e, _ in failed]] = False
            fresh = [event for event, good in zip(fresh, ok) if good]
            keep = [n for n, good in zip(keep, ok) if good]
            arrays = tuple(a[ok] for a in arrays)
            item_log = ItemLog(*(a[ok] if len(a) else a for a in item_log))
            result.applied = len(fresh)
        users, items, weights, ts_ms, _, cats = arrays
        last_event = self._update_profiles(fresh, users, result, digests=True)
        if lists:
            touched = list(last_event)
            ranked = self._rank_rows(touched, self.settings.top_n, published=True)
            result.recommendations = []
            for r, (u, explained) in enumerate(zip(touched, self._explain(ranked))):
                variant = int(ranked.variant[r])
                payload = message(last_event[u], *explained, self.model_version, self.variants[variant].name)
                n = int(ranked.out_n[r])
                self.outcomes.remember(u, payload["list_id"], variant, ranked.out_i[r, :n], ranked.out_m[r, :n])
                result.recommendations.append(payload)
        positions = [batch[n][0] for n in keep]
        if self.record_items:
            result.item_updates = self._item_updates(positions, items, cats, weights, ts_ms, item_log)
        if changes:
            result.changelog, result.changes = self._user_side(self._user_rows(users, positions))
        else:
            self._forget_changes()
        return result

    def forget(self, position: Position, request: Forget) -> BatchResult:
        """Erase everything held about a user (the request at ``position`` of its user partition): the
        user's row (factors, history, purchases, event counts, the event ids kept for de-duplication) here,
        in the local cache and, by a tombstone, in the changelog; the user is then a stranger. Events after
        the request start a new history. ``forgotten`` names the user, whose list the caller tombstones.

        What the user's past events taught the item side (item factors, co-occurrence, popularity) stays:
        it is aggregated over every user and keyed by item, not by user.

        >>> from stream_rec.state import MemoryStore
        >>> service = RecService(Settings(explore=0.0), MemoryStore())
        >>> _ = service.apply([(("lane", 0), Event("u", "i", "purchase", 1, event_id="e1"))])
        >>> result = service.forget(("lane", 1), Forget("u"))
        >>> result.forgotten, result.changelog[0][0], service.stats()["users"]
        (['u'], (b'u', None), 0)
        >>> service.apply([(("lane", 2), Event("u", "i", "purchase", 1, event_id="e1"))]).applied  # not a duplicate now
        1
        """
        result = BatchResult()
        if not self._take(position):  # applied before: events after it may be applied already
            result.duplicates = 1
            return result
        self._erase_users([request.user_id])
        result.forgotten.append(request.user_id)
        key = request.user_id.encode("utf-8", "surrogatepass")
        result.changelog, result.changes = self._user_side({self.partition_of(position[0]): [(key, None)]})  # type: ignore[list-item]
        return result

    def _take(self, position: Position) -> bool:
        """Mark a request's position applied (a forget request, an impression); False if it was before."""
        lane, offset = position
        if offset <= self.hwm.get(lane, -1):
            return False
        self.hwm[lane] = offset
        self._touched_lanes.add(lane)
        return True

    def _erase_users(self, user_ids: list[str]) -> None:
        """Put a blank row in place of these users' state, in memory, and make them strangers again."""
        known = [user_id for user_id in user_ids if self.users.get(user_id) >= 0]
        if not known:
            return
        for u in self._install_rows([UserRow(user_id) for user_id in known]):
            del self.profiles[u]
            self.outcomes.forget(u)
            for users in self.ahead.values():
                users.pop(u, None)

    def _item_log(self, item_side: list[bool]) -> ItemLog:
        mf, cooc = self.models["mf"], self.models["cooc"]
        return new_item_log(np.array(item_side, dtype=bool), mf.n_factors, mf.n_negatives, cooc.history_size,
                            self.record_items)

    def rank_then_learn(self, batch: Sequence[tuple[Position, Event]], scored: np.ndarray, k: int) -> IntArray:
        """The prequential step of offline evaluation, one event at a time in compiled code.

        For each event in order: if ``scored[e]``, rank the user's top ``k`` on the state so far exactly
        as :meth:`recommend` does (the same compiled :func:`~stream_rec.fusion.fuse`, bought
        items excluded); then learn the event with the same per-event steps :meth:`apply` runs.
        Returns ``(len(batch), k)`` item indices, padded with ``-1`` (all ``-1`` for an unscored or
        duplicate event). Nothing is published and the state is not marked for persisting; with
        ``record_items`` the item updates of the events are kept for :meth:`pop_item_updates` (the
        scale-out simulation hands them to the other simulated workers).
        """
        result = BatchResult()
        fresh, keep, item_side = self._drop_duplicates(batch, result)
        out = np.full((len(batch), k), -1, dtype=np.int64)
        if not fresh:
            return out
        users, items, weights, ts_ms, bought, cats = self._arrays(fresh)
        item_log = self._item_log(item_side)
        rows = np.full((len(users), k), -1, dtype=np.int64)
        failed = self._learn(users, items, weights, ts_ms, bought, cats, np.asarray(scored, dtype=bool)[keep], k,
                             item_log, logs=False, rows=rows)
        if failed:
            raise ValueError(f"learning failed on event {keep[failed[0][0]]} of the chunk: {failed[0][1]}")
        out[keep] = rows
        self._update_profiles(fresh, users, result, triggers=False)
        if self.record_items:
            positions = [batch[n][0] for n in keep]
            for part, messages in self._item_updates(positions, items, cats, weights, ts_ms, item_log).items():
                self._pending_updates.setdefault(part, []).extend(messages)
        self._forget_changes()
        return out

    def pop_item_updates(self) -> dict[int, list[bytes]]:
        """The item updates :meth:`rank_then_learn` recorded since the last call, per user partition."""
        pending, self._pending_updates = self._pending_updates, {}
        return pending

    def _learn(self, users: IntArray, items: IntArray, weights: FloatArray, ts_ms: IntArray, bought: np.ndarray,
               cats: IntArray, scored: np.ndarray, k: int, item_log: ItemLog, *, logs: bool,
               rows: IntArray | None = None) -> list[tuple[int, str]]:
        """Learn a batch event by event in compiled code, first ranking the ``scored`` ones into ``rows``
        (for :meth:`rank_then_learn`); with ``logs`` the changed rows are recorded for persisting.

        An event whose learning raises is set aside and the loop goes on from the next one: returns the
        ``(event, error)`` of those (its learning may have left part of its effect)."""
        n_users, n_items = len(self.users), len(self.items)
        mf, cooc, pop = (self.models[name] for name in ("mf", "cooc", "popular"))
        mf.reserve(n_users, n_items)
        cooc.reserve(n_users, n_items)
        pop.reserve(n_items)
        pop.reserve_categories(len(self.categories))
        self.purchases.reserve(n_users, int(bought.sum()))
        top_n = self.settings.top_n
        _, scratch = self.fusion.prepare(max(k, top_n), n_items)
        if rows is None:
            rows = np.full((len(users), k), -1, dtype=np.int64)
        n = len(users) if logs else 0
        mf_log = np.empty(n * (1 + mf.n_negatives), dtype=np.int64)
        cooc_log = np.empty(n * (1 + cooc.history_size), dtype=np.int64)
        log_n = np.zeros(2, dtype=np.int64)
        ranked = (self.fusion.mf.state, self.fusion.cooc.state, self.fusion.popular.state)
        fp, top_explore = self.fusion.params(), self.fusion.n_explore(top_n)
        failed: list[tuple[int, str]] = []
        start, progress = 0, np.zeros(1, dtype=np.int64)
        while start < len(users):
            threads = 2 if self._two_threads_pay(len(users) - start) else 1
            sync, side = new_sync(threads), scratch
            if threads > 1:
                side = self._side_scratch(len(scratch.excluded), len(scratch.ls))
            args = (mf.state, cooc.state, pop.state, ranked, self.purchases.state, scratch, side, sync, fp, n_items, k,
                    self.fusion.n_explore(k), users, items, weights, ts_ms, bought, cats, scored, rows, mf_log,
                    cooc_log, log_n, top_n, top_explore, item_log, start, progress)
            try:
                if threads == 1:
                    rank_then_learn(*args)
                else:
                    two_threads(sync, args, (mf.state, ranked[0], scratch, side, sync, fp, n_items, users, items,
                                              weights, mf_log, log_n, top_n, top_explore, item_log, start))
                    self._note_alone(sync)
                break
            except Exception as err:  # one event's learning failed: set it aside, go on after it
                if len(failed) >= _MOST_SET_ASIDE:
                    raise  # not one bad event: a fault of the code or the state, for the supervisor to see
                bad = int(progress[0])
                log.error("learning event %d of a batch failed, set aside: %r", bad, err)
                failed.append((bad, f"{type(err).__name__}: {err}"))
                scratch = self.fusion.reset_scratch(max(k, top_n), n_items)  # it may be left mid-ranking
                self._side = None
                start = bad + 1
        if logs:
            mf.touch(users=users, items=mf_log[: log_n[0]])
            cooc.touch(users=users, items=cooc_log[: log_n[1]])
            pop.touch(items=items[item_log.item_side])
        return failed

    def _two_threads_pay(self, events: int) -> bool:
        """Whether to learn ``events`` events on two threads: if settings allow, the batch is long enough
        and the last call that tried did not have to go on alone within :data:`_ALONE_FOR_S`."""
        return self.settings.threads > 1 and events >= _THREADS_FROM and time.monotonic() >= self._alone_until

    def _note_alone(self, sync: IntArray) -> None:
        if sync[THREADS] == 1:  # the loop sent the second thread away
            self.went_alone += 1
            self._alone_until = time.monotonic() + _ALONE_FOR_S
            log.debug("the learning loop went on alone (its second thread kept losing its core)")

    def _side_scratch(self, n_items: int, depth: int) -> Scratch:
        """The scratch of the second thread's matrix factorisation lists, kept as large as the fusion's."""
        side = self._side
        if side is None or len(side.excluded) < n_items or len(side.ls) < depth:
            side = self._side = new_scratch(n_items, depth)
        return side

    def set_availability(self, updates: Iterable[Availability]) -> int:
        """Apply the items topic's messages in order: an unavailable (or deleted) item leaves every list
        until it is available again; a category files the item under it, and a new item may be explored
        before its first event (:meth:`DecayedPopularity.catalogue`). Returns how many items changed
        availability."""
        changed = 0
        pop = self.models["popular"]
        for update in updates:
            item = self._index_items([update.item_id])[0]  # an item may be withdrawn before its first event
            if update.category is not None or update.new:
                category = -1 if update.category is None else self.categories.add(update.category)
                arrived = None
                if update.new:  # from when the message says, else now (the events' clock, or the wall's before any)
                    now = pop.now if math.isfinite(pop.now) else time.time()
                    arrived = update.ts_ms / 1000.0 if update.ts_ms is not None else now
                pop.catalogue(item, category, arrived)
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
        users = np.array(self._index_users([e.user_id for e in fresh]), dtype=np.int64)
        items = np.array(self._index_items([e.item_id for e in fresh]), dtype=np.int64)
        named = [e.category for e in fresh]
        if named.count(None) < len(named):
            cats = np.array([-1 if c is None else self.categories.add(c) for c in named], dtype=np.int64)
        else:
            cats = np.full(len(fresh), -1, dtype=np.int64)
        codes = np.array(list(map(_TYPE_CODE.__getitem__, [e.type for e in fresh])), dtype=np.int64)
        weights = self._weight_of_code[codes]
        ts_ms = np.array([e.ts_ms for e in fresh], dtype=np.int64)
        return users, items, weights, ts_ms, codes == _PURCHASE, cats

    def _drop_duplicates(self, batch: Sequence[tuple[Position, Event]],
                         result: BatchResult) -> tuple[list[Event], list[int], list[bool]]:
        """The events not applied before, their positions in ``batch``, and whether each one's item half
        is still to learn (it is not when another worker's item update for it was applied here)."""
        fresh: list[Event] = []
        keep: list[int] = []
        item_side: list[bool] = []
        seen_ids: set[tuple[str, str]] = set()
        hwm, item_hwm, ahead = self.hwm, self.item_hwm, self.ahead
        for n, ((lane, offset), event) in enumerate(batch):
            if offset <= hwm.get(lane, -1):
                result.duplicates += 1
                continue
            hwm[lane] = offset
            self._touched_lanes.add(lane)
            if ahead and lane in ahead and offset <= ahead[lane].get(self.users.get(event.user_id), -1):
                # Its user's row, written by a batch cut short, reflects it already; its item half went
                # out before that row did and reaches the item model as an item update.
                result.duplicates += 1
                continue
            if event.event_id is not None:
                key = (event.user_id, event.event_id)
                profile = self.profiles.get(self.users.get(event.user_id))
                if key in seen_ids or (profile is not None and profile.has_seen(event.event_id)):
                    result.duplicates += 1
                    continue
                seen_ids.add(key)
            fresh.append(event)
            keep.append(n)
            item_side.append(offset > item_hwm.get(lane, -1))
            if offset > item_hwm.get(lane, -1):
                item_hwm[lane] = offset
        if ahead:
            for lane in [lane for lane in ahead if hwm.get(lane, -1) >= max(ahead[lane].values(), default=-1)]:
                del ahead[lane]
        result.applied = len(fresh)
        return fresh, keep, item_side

    def _update_profiles(self, fresh: list[Event], users: IntArray, result: BatchResult, *,
                         triggers: bool = True, digests: bool = False) -> dict[int, Event]:
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
        types = [event.type for event in fresh]
        codes = np.array(list(map(_TYPE_CODE.__getitem__, types)), dtype=np.int64)
        np.add.at(self._type_counts, (users, codes), 1)
        if digests:
            prints = np.array([event_digest(e.item_id, e.type, e.ts_ms) for e in fresh], dtype=np.uint64)
            np.add.at(self._digests, users, prints)
        for name, n in Counter(types).items():
            result.applied_by_type[name] = result.applied_by_type.get(name, 0) + n
        last_event: dict[int, Event] = {}
        if triggers:
            for event, u in zip(fresh, user_list):
                # Events of one user from different topics arrive in no set order: the trigger is the latest.
                if u not in last_event or event.ts_ms >= last_event[u].ts_ms:
                    last_event[u] = event
        return last_event

    # -- item updates -----------------------------------------------------------------------------

    def _item_updates(self, positions: list[Position], items: IntArray, cats: IntArray, weights: FloatArray,
                      ts_ms: IntArray, item_log: ItemLog) -> dict[int, list[bytes]]:
        """Item-update messages per user partition (at most :data:`UPDATES_PER_MESSAGE` events each, well
        under Kafka's 1 MB message limit), for the events whose item half was learned here."""
        out: dict[int, list[bytes]] = {}
        by_part: dict[int, list[int]] = {}
        for e, (lane, _) in enumerate(positions):
            if item_log.item_side[e]:
                by_part.setdefault(self.partition_of(lane), []).append(e)
        chunks = [(part, rows[c:c + UPDATES_PER_MESSAGE]) for part, rows in by_part.items()
                  for c in range(0, len(rows), UPDATES_PER_MESSAGE)]
        for part, rows in chunks:
            sel = np.array(rows, dtype=np.int64)
            lanes = sorted({positions[e][0] for e in rows})
            lane_no = {lane: n for n, lane in enumerate(lanes)}
            pair_n = item_log.pair_n[sel]
            pair_start = np.zeros(len(sel) + 1, dtype=np.int64)
            np.cumsum(pair_n, out=pair_start[1:])
            mask = np.arange(item_log.pair_j.shape[1])[None, :] < pair_n[:, None]
            pair_j, pair_w = item_log.pair_j[sel][mask], item_log.pair_w[sel][mask]
            negs = item_log.neg[sel]
            named = np.unique(np.concatenate([items[sel], negs[negs >= 0], pair_j]))
            table = np.full(int(named.max(initial=-1)) + 1, -1, dtype=np.int64)
            table[named] = np.arange(len(named))
            cat_sel = cats[sel]
            cat_named = np.unique(cat_sel[cat_sel >= 0])
            cat_table = np.full(int(cat_named.max(initial=0)) + 1, -1, dtype=np.int64)
            cat_table[cat_named] = np.arange(len(cat_named))
            message = ItemUpdates(
                lanes, self.items.externals(named.tolist()), self.categories.externals(cat_named.tolist()),
                np.array([lane_no[positions[e][0]] for e in rows], dtype=np.int64),
                np.array([positions[e][1] for e in rows], dtype=np.int64), table[items[sel]],
                np.where(cat_sel >= 0, cat_table[np.maximum(cat_sel, 0)], -1), weights[sel], ts_ms[sel] / 1000.0,
                item_log.step[sel], item_log.pu[sel], np.where(negs >= 0, table[np.maximum(negs, 0)], -1), pair_start,
                table[pair_j], pair_w)
            out.setdefault(part, []).append(updates.encode(message))
        return out

    def apply_item_updates(self, messages: Iterable[bytes]) -> BatchResult:
        """Learn the item half of other workers' events from their item updates, each event once.

        Records of positions whose item half is in the model already (learned here, or applied from an
        earlier copy) are skipped. Returns the records applied in ``applied`` and those skipped in
        ``duplicates``, messages that cannot be read in ``rejected``. The item rows it changed are written
        with the next :meth:`persist_items`."""
        result = BatchResult()
        mf, cooc, pop = (self.models[name] for name in ("mf", "cooc", "popular"))
        log_mf, log_cooc = [], []
        for n, data in enumerate(messages):
            try:
                upd = updates.decode(data)
            except ItemUpdateError as err:  # set aside (``rejected``): one bad message costs only itself
                result.rejected.append((n, str(err)))
                continue
            if len(upd) == 0:
                continue
            if upd.pu.shape[1] != mf.n_factors:
                raise ValueError(f"an item update has {upd.pu.shape[1]} factors, this worker {mf.n_factors}: every "
                                 "worker of a group needs the same STREAM_REC_MF_FACTORS")
            keep = np.zeros(len(upd), dtype=bool)
            for r, (lane_no, offset) in enumerate(zip(upd.lane.tolist(), upd.offset.tolist())):
                lane = upd.lanes[lane_no]
                if offset > self.item_hwm.get(lane, -1):
                    self.item_hwm[lane] = offset
                    keep[r] = True
            result.duplicates += int(len(upd) - keep.sum())
            if not keep.any():
                continue
            local = np.array(self._index_items(upd.ids), dtype=np.int64)
            cat_local = np.array([self.categories.add(c) for c in upd.categories] or [0], dtype=np.int64)
            n_items = len(self.items)
            mf.reserve(0, n_items)
            cooc.reserve(0, n_items)
            pop.reserve(n_items)
            pop.reserve_categories(len(self.categories))
            rows = np.flatnonzero(keep)
            items = local[upd.item[rows]]
            cats = np.where(upd.category[rows] >= 0, cat_local[np.maximum(upd.category[rows], 0)], -1)
            negs = np.where(upd.neg[rows] >= 0, local[np.maximum(upd.neg[rows], 0)], -1)
            pair_j = local[upd.pair_j] if len(upd.pair_j) else upd.pair_j
            mf_log = np.empty(len(rows) * (1 + negs.shape[1]), dtype=np.int64)
            cooc_log = np.empty(len(rows) + len(pair_j), dtype=np.int64)
            log_n = np.zeros(2, dtype=np.int64)
            apply_remote(mf.state, cooc.state, pop.state, self._tmp_row, items, cats, upd.weight[rows], upd.ts[rows],
                          upd.step[rows], upd.pu[rows], negs, upd.pair_start[rows], upd.pair_start[rows + 1], pair_j,
                          upd.pair_w, mf_log, cooc_log, log_n)
            log_mf.append(mf_log[: log_n[0]])
            log_cooc.append(cooc_log[: log_n[1]])
            pop.touch(items=items)
            result.applied += len(rows)
        for logged in log_mf:
            mf.touch(items=logged)
        for logged in log_cooc:
            cooc.touch(items=logged)
        return result

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

    def stranger_list(self) -> dict[str, Any]:
        """The list for a user never seen (the popular items, as :meth:`recommend` ranks an unknown id), as
        the message published under :data:`stream_rec.wire.STRANGER_KEY`, ranked by the first variant.

        No exploration slots: drawing them would count the new items as shown and move the exploration's
        random stream, so how often this list is published would change the users' lists.
        """
        ranked = self._rank_rows([-1], self.settings.top_n, explore=False, variant=0)
        return stranger_message(*self._explain(ranked)[0], self.model_version, self.variants[0].name)

    def _rank_many(self, users: list[int], k: int) -> list[tuple[list[str], list[float], list[tuple[str, ...]],
                                                                 list[dict[str, str]]]]:
        """The fused top ``k`` of each user index (-1: a stranger): ``(item ids, scores, sources, because)``
        per user."""
        return self._explain(self._rank_rows(users, k))

    def _rank_rows(self, users: list[int], k: int, *, published: bool = False, explore: bool = True,
                   variant: int | None = None) -> Ranked:
        """Each user's list, ranked by the user's variant (or by ``variant`` for all): one compiled call per
        variant over its users; ``explore=False`` gives no exploration slots.

        ``published``: the lists go to the users. With STREAM_REC_IMPRESSIONS exploration then counts an
        item as shown only when an impression says so, so the showing the ranking counted is taken back."""
        n_items = len(self.items)
        _, scratch = self.fusion.prepare(k, n_items)
        n = len(users)
        idx = np.array(users, dtype=np.int64)
        has_history = np.array([u in self.profiles for u in users], dtype=bool)
        out_i, out_a = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.int64)
        out_s, out_m = np.empty((n, k)), np.empty((n, k), dtype=np.int64)
        out_n = np.empty(n, dtype=np.int64)
        fusion = self.fusion
        params = fusion.params()
        order = None
        if len(self.variants) == 1 or variant is not None:
            groups = [(variant or 0, 0, n)]
            variant = np.full(n, variant or 0, dtype=np.int64)
        else:
            external = self.users.external
            variant = np.array([variant_of(external(u) if u >= 0 else "", len(self.variants)) for u in users],
                               dtype=np.int64)
            order = np.argsort(variant, kind="stable")
            idx, has_history, variant = idx[order], has_history[order], variant[order]
            bounds = np.searchsorted(variant, np.arange(len(self.variants) + 1))
            groups = [(v, int(bounds[v]), int(bounds[v + 1])) for v in range(len(self.variants)) if bounds[v] < bounds[v + 1]]
        for v, a, b in groups:
            chosen = self.variants[v]
            fp = params if len(self.variants) == 1 else params._replace(
                weights=self._variant_weights[v], adapt=fusion.adapt if chosen.adapt is None else chosen.adapt)
            n_explore = fusion.n_explore(k) if chosen.explore is None else max(0, round(chosen.explore * k))
            n_explore = n_explore if explore else 0
            rank_many(fusion.mf.state, fusion.cooc.state, fusion.popular.state, self.purchases.state, scratch, fp,
                      n_items, k, n_explore, idx[a:b], has_history[a:b], out_i[a:b], out_s[a:b], out_m[a:b], out_n[a:b],
                      out_a[a:b], self.models["popular"].now)
        if order is not None:  # back to the callers' order
            back = np.empty(n, dtype=np.int64)
            back[order] = np.arange(n)
            out_i, out_s, out_m, out_n, out_a, variant = (x[back] for x in (out_i, out_s, out_m, out_n, out_a, variant))
        if published and self.settings.impressions:
            explored = out_i[(out_m >> EXPLORE_BIT & 1).astype(bool) & (np.arange(k)[None, :] < out_n[:, None])]
            np.subtract.at(fusion.shown, explored, 1)
        return Ranked(out_i, out_s, out_m, out_n, out_a, variant)

    def _explain(self, ranked: Ranked) -> list[tuple[list[str], list[float], list[tuple[str, ...]], list[dict[str, str]]]]:
        """External ids, scores, source labels and reasons of ranked rows."""
        externals = self.items.externals
        lists = []
        for r, n in enumerate(ranked.out_n.tolist()):
            masks = ranked.out_m[r, :n].tolist()
            because = [reason(m, a, i, self._names) for m, a, i in zip(masks, ranked.out_a[r, :n].tolist(),
                                                                         ranked.out_i[r, :n].tolist())]
            lists.append((externals(ranked.out_i[r, :n].tolist()), ranked.out_s[r, :n].tolist(),
                          [label(m) for m in masks], because))
        return lists

    # -- outcomes: impressions, and what was done from a list --------------------------------------

    def note_impressions(self, batch: Sequence[tuple[Position, Impression]]) -> BatchResult:
        """What the front end showed (the impressions topic): counted per variant and source
        (:attr:`outcomes`); with STREAM_REC_IMPRESSIONS, the exploration items shown count for exploration.
        Each position once, like events (``duplicates``: applied before)."""
        result = BatchResult()
        for position, impression in batch:
            if not self._take(position):
                result.duplicates += 1
                continue
            result.applied += 1
            explored = self.outcomes.shown(self.users.get(impression.user_id), impression.list_id,
                                           [self.items.get(item) for item in impression.items])
            if self.settings.impressions and len(explored):
                np.add.at(self.fusion.shown, explored[explored < len(self.fusion.shown)], 1)
        result.changelog, result.changes = self._user_side({})
        return result

    # -- user rows: the changelog and the local cache ---------------------------------------------

    def _user_rows(self, users: IntArray, positions: list[Position]) -> dict[int, list[tuple[bytes, bytes]]]:
        """The rows of the batch's users, per user partition (that of the user's last event), each with
        the user's last offset in every lane it had events in."""
        marks: dict[int, dict[str, int]] = {}
        part_of: dict[int, int] = {}
        for u, (lane, offset) in zip(users.tolist(), positions):
            marks.setdefault(u, {})[lane] = offset
            part_of[u] = self.partition_of(lane)
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for u, row in zip(marks, self.export_users(list(marks), marks)):
            out.setdefault(part_of[u], []).append((row.user_id.encode("utf-8", "surrogatepass"), encode_user_row(row)))
        return out

    def export_users(self, users: list[int], marks: dict[int, dict[str, int]] | None = None) -> list[UserRow]:
        """Everything known about each user index, with item ids in place of indices (each model's part is
        taken for all the users at once: this runs for every user a batch touched)."""
        if not users:
            return []
        mf, cooc = self.models["mf"], self.models["cooc"]
        mf.reserve(len(self.users), 0)
        cooc.reserve(len(self.users), 0)
        idx = np.array(users, dtype=np.int64)
        st, mst = cooc.state, mf.state
        lengths = st.hist_len[idx]
        keep = np.arange(st.hist_item.shape[1])[None, :] < lengths[:, None]
        hist_ids = self.items.externals(st.hist_item[idx][keep].tolist())
        hist_ts, hist_w = st.hist_ts[idx][keep].tolist(), st.hist_w[idx][keep].astype(np.float64).tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        seen = mst.user_seen[idx].tolist()
        factors, mf_events = mst.P[idx], mst.user_n[idx].tolist()
        counts, digests = self._type_counts[idx].tolist(), self._digests[idx].tolist()
        externals, marks = self.items.externals, marks or {}
        rows = []
        for r, u in enumerate(users):
            profile = self.profiles.get(u) or Profile()
            bought = self.purchases.of(u)
            a, b = starts[r], starts[r + 1]
            rows.append(UserRow(
                self.users.external(u), profile.n_events, tuple(counts[r]), digests[r], list(profile.event_ids or ()),
                list(zip(externals([i for i, _ in bought]), [t for _, t in bought])),
                list(zip(hist_ids[a:b], hist_ts[a:b], hist_w[a:b])), factors[r] if seen[r] else None,
                mf_events[r] if seen[r] else 0, marks.get(u, {})))
        return rows

    def _user_side(self, rows: dict[int, list[tuple[bytes, bytes]]]
                   ) -> tuple[dict[int, list[tuple[bytes, bytes]]], dict[str, dict[bytes, bytes | None]]]:
        """A batch's user side, encoded once for both of its homes: the changelog (per user partition
        touched, its rows, then its marks record, written last) and the local cache's write."""
        touched = {self.partition_of(lane) for lane in self._touched_lanes}
        marks = {part: encode_marks(self.marks_of(part)) for part in set(rows) | touched}
        changelog = {part: [*rows.get(part, []), (MARKS_KEY, marks[part])] for part in sorted(marks)}
        return changelog, self._changes([row for part_rows in rows.values() for row in part_rows],
                                        {part: marks[part] for part in touched})

    def forget_positions(self, lanes: Iterable[str]) -> list[str]:
        """Forget what was applied from ``lanes``, at once and in the store; returns those that had a mark.

        For a source partition made anew (a broker that lost its data numbers a recreated topic from 0
        again): its events would otherwise all be skipped as already applied.

        >>> from stream_rec.state import MemoryStore
        >>> service = RecService(Settings(explore=0.0), MemoryStore())
        >>> event = Event(user_id="u", item_id="i", type="view", ts_ms=1)
        >>> service.apply([(("lane", 7), event)]).applied, service.apply([(("lane", 0), event)]).duplicates
        (1, 1)
        >>> service.forget_positions(["lane", "other"]), service.apply([(("lane", 0), event)]).applied
        (['lane'], 1)
        """
        gone = [lane for lane in lanes if lane in self.hwm or lane in self.item_hwm]
        for lane in gone:
            self.hwm.pop(lane, None)
            self.item_hwm.pop(lane, None)
            self.ahead.pop(lane, None)
        if gone:
            parts = {self.partition_of(lane) for lane in gone}
            meta = {keys.MARKS + str(p).encode(): encode_marks(self.marks_of(p)) for p in parts}
            meta[keys.ITEM_HWM] = encode_marks(self.item_hwm)
            self.store.write({"meta": meta})
        return gone

    def adopt_topic_ids(self, ids: dict[str, str], *, changelog: str, item_updates: str) -> list[str]:
        """Compare the topics' ids now with those the state was built from; returns the topics made anew
        (deleted and created again, e.g. by a broker that kept everything in memory and restarted).

        A recreated topic numbers its messages from 0 again: what was applied from the old one is forgotten
        (its marks), a recreated item-updates topic is read from its start, and a recreated changelog is
        written again from this state (``reseed``), since this state is then the only copy of its users.
        """
        recreated = [topic for topic, topic_id in ids.items()
                     if self.topic_ids.get(topic) not in (None, topic_id)]
        meta: dict[bytes, bytes | None] = {}
        if recreated:
            gone = set(recreated)
            self.forget_positions([lane for lane in {*self.hwm, *self.item_hwm} if _lane_topic(lane) in gone])
            if changelog in gone:
                meta.update({keys.CHECKPOINT + str(p).encode(): None for p in self.checkpoints})
                self.checkpoints.clear()
                self.reseed = True
            if item_updates in gone:
                meta.update({keys.ITEM_LOG + str(p).encode(): None for p in self.item_log})
                self.item_log.clear()
        self.topic_ids.update(ids)
        meta[keys.TOPIC_IDS] = orjson.dumps(self.topic_ids)
        self.store.write({"meta": meta})
        return recreated

    def users_of(self, partition: int, partitions: int) -> list[int]:
        """The users this worker holds whose rows belong to ``partition`` (Kafka's default partitioner)."""
        return [u for u in range(len(self.users)) if u in self.profiles
                and kafka_partition(self.users.external(u), partitions) == partition]

    def marks_of(self, partition: int) -> dict[str, int]:
        """The marks record of a user partition: its lanes' last applied offsets."""
        return {lane: offset for lane, offset in self.hwm.items() if self.partition_of(lane) == partition}

    def restore(self, partition: int, records: Iterable[tuple[bytes, bytes | None]],
                next_offset: int | None = None) -> BatchResult:
        """Replace what this worker holds about a user partition's users by the changelog records that
        follow what it holds (``records`` in log order), and take the partition's marks from them.

        Users whose rows were written after the partition's last marks record (a batch cut short) keep
        their own marks: their events up to those are not applied again. ``next_offset`` is the
        changelog offset after the last record read: what the cache then reflects. Returns the rows
        restored in ``applied`` and the local cache's write in ``changes`` (:meth:`persist` it). A record
        that cannot be read raises :class:`~stream_rec.state.changelog.ChangelogFormatError`.
        """
        latest: dict[bytes, bytes | None] = {}
        marks = None
        for key, value in records:
            if key == MARKS_KEY:
                marks = decode_marks(value) if value is not None else None
            elif not key.startswith(b"\x00"):  # fences and any other record of stream_rec's own
                latest[key] = value
        rows = [decode_user_row(key, value) for key, value in latest.items() if value is not None]
        # A tombstone is a forgotten user (:meth:`forget`): whatever this worker still held of it goes too.
        self._erase_users([key.decode("utf-8", "surrogatepass") for key, value in latest.items() if value is None])
        if marks is not None:
            for lane, offset in marks.items():
                self.hwm[lane] = offset
        for u, row in zip(self._install_rows(rows), rows):
            for lane, offset in row.marks.items():
                if offset > self.hwm.get(lane, -1):
                    self.ahead.setdefault(lane, {})[u] = offset
        result = BatchResult(applied=len(rows))
        result.changes = self._changes(list(latest.items()))
        result.changes["meta"][keys.MARKS + str(partition).encode()] = encode_marks(self.marks_of(partition))
        if next_offset is not None:
            self.checkpoints[partition] = next_offset
            result.changes["meta"][keys.CHECKPOINT + str(partition).encode()] = str(next_offset).encode()
        return result

    def _install_rows(self, rows: list[UserRow]) -> list[int]:
        """Put users' rows in place of whatever this worker held about them; returns their indices."""
        if not rows:
            return []
        users = self._index_users([row.user_id for row in rows])
        item_ids = [item for row in rows for item, _ in row.purchases] + [item for row in rows for item, _, _ in row.history]
        self._index_items(item_ids)
        idx = np.array(users, dtype=np.int64)
        mf, cooc = self.models["mf"], self.models["cooc"]
        n_users, n_items = len(self.users), len(self.items)
        mf.reserve(n_users, n_items)
        cooc.reserve(n_users, n_items)
        self.purchases.reserve(n_users, sum(len(row.purchases) for row in rows))
        self.purchases.clear(idx)
        get_item = self.items.get
        bought_u, bought_i, bought_t = [], [], []
        with_mf = [n for n, row in enumerate(rows) if row.mf is not None]
        for u, row in zip(users, rows):
            self.profiles[u] = Profile(row.n_events, deque(row.event_ids, maxlen=RECENT_EVENT_IDS) if row.event_ids else None)
            for item, ts in reversed(row.purchases):
                bought_u.append(u)
                bought_i.append(get_item(item))
                bought_t.append(ts)
        self._type_counts[idx] = np.array([row.counts for row in rows], dtype=np.int64)
        self._digests[idx] = np.array([row.digest for row in rows], dtype=np.uint64)
        self.purchases.add_many(np.array(bought_u, dtype=np.int64), np.array(bought_i, dtype=np.int64),
                                np.array(bought_t, dtype=np.int64))
        mf.set_user_rows(idx, np.array([row.mf is not None for row in rows]),
                         np.array([rows[n].mf for n in with_mf], dtype=np.float32).reshape(len(with_mf), mf.n_factors),
                         np.array([row.mf_events for row in rows], dtype=np.int64))
        size = cooc.history_size
        hist_item = np.full((len(rows), size), -1, dtype=np.int64)
        hist_ts, hist_w = np.zeros((len(rows), size)), np.zeros((len(rows), size))
        lengths = np.zeros(len(rows), dtype=np.int64)
        for r, row in enumerate(rows):
            recent = row.history[-size:]
            lengths[r] = len(recent)
            for c, (item, ts, w) in enumerate(recent):
                hist_item[r, c], hist_ts[r, c], hist_w[r, c] = get_item(item), ts, w
        cooc.set_histories(idx, hist_item, hist_ts, hist_w, lengths)
        return users

    def _changes(self, user_rows: list[tuple[bytes, bytes | None]], marks: dict[int, bytes] | None = None
                 ) -> dict[str, dict[bytes, bytes | None]]:
        """The local cache's write of the user side: these user rows and the marks of the partitions whose
        lanes moved (``marks``, encoded already, or encoded here). The item side is written apart, less
        often (:meth:`persist_items`)."""
        self.users.pop_new()  # users are keyed by id in the cache: no index to remember
        if marks is None:
            marks = {p: encode_marks(self.marks_of(p)) for p in {self.partition_of(lane) for lane in self._touched_lanes}}
        self._touched_lanes.clear()
        meta: dict[bytes, bytes | None] = {keys.MARKS + str(p).encode(): m for p, m in marks.items()}
        return {"meta": meta, "users": dict(user_rows)}

    def _item_changes(self) -> dict[str, dict[bytes, bytes | None]]:
        """The local cache's write of the item side: new ids, the item rows changed since the last one,
        the item positions they reflect (``item_hwm``, ``item_log``) and the fusion's statistics."""
        items: dict[bytes, bytes | None] = {}
        for key in self.items.pop_new():
            items[keys.ID + key.encode("utf-8", "surrogatepass")] = keys.int_bytes(self.items.get(key))
        for name, model in self.models.items():
            prefix = name.encode() + b"/"
            _, touched_i = model.pop_touched()
            for i in touched_i.tolist():
                items[prefix + keys.int_bytes(i)] = model.item_state(i)
        meta: dict[bytes, bytes | None] = {keys.CATEGORY + key.encode("utf-8", "surrogatepass"): keys.int_bytes(
            self.categories.get(key)) for key in self.categories.pop_new()}
        meta[keys.ITEM_HWM] = encode_marks(self.item_hwm)
        meta.update({keys.ITEM_LOG + str(part).encode(): str(offset).encode()
                     for part, offset in self.item_log.items()})
        meta[keys.FUSION] = self.fusion.hits_state()
        meta[keys.OUTCOMES] = self.outcomes.state()
        shown = np.flatnonzero(self.fusion.shown)
        meta[keys.SHOWN] = shown.astype("<i8").tobytes() + self.fusion.shown[shown].astype("<i8").tobytes()
        return {"meta": meta, "items": items}

    def _forget_changes(self) -> None:
        self._touched_lanes.clear()
        self.users.pop_new()
        self.items.pop_new()
        self.categories.pop_new()
        for model in self.models.values():
            model.pop_touched()

    def persist(self, result: BatchResult, checkpoints: dict[int, int] | None = None) -> None:
        """Write a batch's user side to the local cache in one atomic write (after its lists, changelog
        records and item updates are sent), with the changelog offsets it reflects (``checkpoints``, per
        user partition)."""
        changes = result.changes
        if not changes and not checkpoints:
            return
        meta = changes.setdefault("meta", {})
        for part, offset in (checkpoints or {}).items():
            self.checkpoints[part] = offset
            meta[keys.CHECKPOINT + str(part).encode()] = str(offset).encode()
        self.store.write(changes)

    def persist_items(self) -> None:
        """Write the item side to the local cache in one atomic write: the item rows changed since the last
        call, with the positions they reflect. A worker calls it every few seconds rather than with every
        batch: a popular item changes in every batch, and an item row costs more to encode than a user's.
        What a crash loses of it, the item updates bring back (a worker's own are in Kafka before any row
        that reflects them)."""
        self.store.write(self._item_changes())

    def note_item_log(self, offsets: dict[int, int]) -> None:
        """The item-updates topic's partitions are applied up to these offsets (written by :meth:`persist_items`)."""
        self.item_log.update(offsets)

    def _load(self) -> None:
        started = time.perf_counter()
        shown = b""
        for key, value in self.store.items("meta"):
            if key.startswith(keys.MARKS):
                self.hwm.update(decode_marks(value))
            elif key.startswith(keys.CHECKPOINT):
                self.checkpoints[int(key[len(keys.CHECKPOINT):])] = int(value)
            elif key.startswith(keys.ITEM_LOG):
                self.item_log[int(key[len(keys.ITEM_LOG):])] = int(value)
            elif key == keys.ITEM_HWM:
                self.item_hwm = decode_marks(value)
            elif key == keys.TOPIC_IDS:
                self.topic_ids = {str(k): str(v) for k, v in orjson.loads(value).items()}
            elif key.startswith(keys.CATEGORY):
                self.categories.restore(key[len(keys.CATEGORY):].decode("utf-8", "surrogatepass"),
                                        keys.from_int_bytes(value))
            elif key == keys.FUSION and not self.fusion.set_hits_state(value):
                log.warning("the stored fusion statistics belong to another version: weights start equal again")
            elif key == keys.OUTCOMES:
                self.outcomes.set_state(value)
            elif key == keys.SHOWN:
                shown = value
        self.categories.pop_new()
        self._load_items()
        if shown:  # after the items: the fusion's arrays have room for every item index then
            self.fusion.prepare(1, len(self.items))
            half = len(shown) // 2
            np.add.at(self.fusion.shown, np.frombuffer(shown[:half], "<i8"), np.frombuffer(shown[half:], "<i8"))
        rows = [decode_user_row(key, value) for key, value in self.store.items("users")]
        self._install_rows(rows)
        self._forget_changes()  # rows restored from the store are not changes
        if rows or len(self.items):
            log.info("loaded %d users, %d items, %d events from the local state in %.2fs", len(self.users),
                     len(self.items), self.events_total, time.perf_counter() - started)

    def _load_items(self) -> None:
        """Restore the items family: ids first, then each model's rows in one bulk call per model."""
        rows: dict[bytes, tuple[list[int], list[bytes]]] = {}
        restored: list[tuple[str, int]] = []
        for key, value in self.store.items("items"):
            if key.startswith(keys.ID):
                restored.append((key[len(keys.ID):].decode("utf-8", "surrogatepass"), keys.from_int_bytes(value)))
            else:
                name, _, raw_idx = key.partition(b"/")
                indices, blobs = rows.setdefault(name, ([], []))
                indices.append(keys.from_int_bytes(raw_idx))
                blobs.append(value)
        for item_id, idx in restored:
            self.items.restore(item_id, idx)
        self.items.pop_new()
        if restored:
            idx = np.array([i for _, i in restored], dtype=np.int64)
            self.models["mf"].set_row_keys(_NONE, _NONE_KEYS, idx, row_keys([item for item, _ in restored]))
        for name, (indices, blobs) in rows.items():
            self.models[name.decode()].load_item_rows(np.array(indices, dtype=np.int64), blobs)

    @property
    def events_total(self) -> int:
        """Events reflected in the user state this worker holds."""
        return int(self._type_counts.sum())

    @property
    def counts(self) -> dict[str, int]:
        """Events reflected in the user state this worker holds, by type."""
        return dict(zip(EVENT_TYPES, self._type_counts.sum(axis=0).tolist()))

    def stats(self) -> dict[str, Any]:
        """Counts a person or a test can check against the input."""
        return {"users": len(self.profiles), "items": len(self.items), "events": self.counts,
                "events_total": self.events_total}


_NONE = np.zeros(0, dtype=np.int64)
_NONE_KEYS = np.zeros(0, dtype=np.uint64)


def _check_variant_sources(variants: Sequence[Variant]) -> None:
    for variant in variants:
        for source in variant.weights:
            if source not in SOURCES:
                raise ValueError(f"STREAM_REC_VARIANTS: variant {variant.name!r} weights {source!r}, which is not a "
                                 f"source (sources: {', '.join(SOURCES)}; other keys: explore, adapt)")


def _lane_topic(lane: str) -> str:
    """The source topic of a lane (see :data:`Position`)."""
    return lane.rpartition(">")[2].rpartition(":")[0]




def _settings_digest(settings: Settings) -> str:
    model_fields = ("weights", "mf_factors", "mf_learning_rate", "cooc_history", "cooc_half_life_days",
                    "popularity_half_life_h", "explore", "fusion_adapt", "fusion_sample_every", "rebuy_after_days",
                    "seed")
    text = "|".join(f"{name}={getattr(settings, name)}" for name in model_fields)
    return hashlib.sha1(text.encode()).hexdigest()[:8]
