"""Prequential ("test, then train") evaluation of online recommenders on an event stream.

For each event of a user seen before, a model first recommends its top ``K`` (``K = 20``, the largest
cut-off reported) for that user, excluding what the user already bought; the rank of the event's item
in that list is recorded; only then does the model learn from the event. A user's first event cannot
be scored (there is no one to recommend to yet): it is learned and counted as ``unscored``.

One event at a time
-------------------
Our models (``fused``, ``mf``, ``cooc``) rank and learn **strictly event by event**: the service's
:meth:`~stream_rec.service.RecService.rank_then_learn` runs the compiled ranking the worker uses and
the compiled learning steps of :meth:`~stream_rec.service.RecService.apply`, for a whole chunk of the
stream in one call, so every event is scored on the state after all earlier events.

Baselines written in Python (River, item-kNN, popularity counts) rank a micro-batch at a time: a
micro-batch is cut just before an event whose user already has an event in it, and after at most
``batch_size`` events. Each user's own earlier events are then always learned before they are scored;
only other users' events of the same micro-batch (at most ``batch_size - 1``) are learned after it, as
in a worker's micro-batch. ``batch_size=1`` makes them strictly sequential too, at a cost in speed.

A user counts as **new** while they have fewer than ``new_user_events`` earlier events, else as
**returning**. Novelty is measured against item counts at the start of each chunk of
:data:`CHUNK` events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_rec.evaluation.baselines import Batch, Competitor, Vocabulary
from stream_rec.evaluation.metrics import KS, MAIN_K, Accumulator, novelty, ranks_of
from stream_rec.events import EVENT_TYPES, Event
from stream_rec.models._arrays import grow
from stream_rec.purchases import Purchases
from stream_rec.settings import Settings
from stream_rec.types import IntArray

log = logging.getLogger(__name__)

#: Default most events per micro-batch of a baseline that ranks a batch at a time.
BATCH_SIZE = 64
#: Events handed over per call: sequential competitors rank and learn a chunk in one compiled call.
CHUNK = 8192
#: A user is "new" while they have fewer earlier events than this.
NEW_USER_EVENTS = 5
_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}


@dataclass
class Evaluation:
    """The outcome of one run: per-model figures and the run's bookkeeping."""

    models: dict[str, dict[str, Any]]
    events: int
    scored: int
    unscored_new_users: int
    n_users: int
    n_items: int
    batch_size: int
    k: int = max(KS)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "scored": self.scored, "unscored_new_users": self.unscored_new_users,
                "users": self.n_users, "items": self.n_items, "batch_size": self.batch_size,
                "k": self.k, **self.extra, "models": self.models}


def chunks(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    """Consecutive lists of at most ``size`` events."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def micro_batches(users: IntArray, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive micro-batches of at most ``size`` events, each cut before a
    repeated user.

    >>> import numpy as np
    >>> micro_batches(np.array([0, 1, 0, 2, 3]), 4)
    [(0, 2), (2, 5)]
    >>> micro_batches(np.array([0, 1, 2, 3, 4]), 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    bounds, start, members = [], 0, set()
    for n, u in enumerate(users.tolist()):
        if n - start >= size or u in members:
            bounds.append((start, n))
            start, members = n, set()
        members.add(u)
    if start < len(users):
        bounds.append((start, len(users)))
    return bounds


class Prequential:
    """Runs competitors side by side over one stream: same events, same batches, same protocol.

    Parameters
    ----------
    competitors
        Name -> competitor, all built on ``vocab``.
    vocab
        The shared id index (the competitors' index space).
    settings
        Event weights (as the service applies them) come from here.
    batch_size
        Most events per micro-batch of a baseline that ranks a batch at a time (see the module docstring).
    window
        Scored events per point of the HR@10 curve.
    new_user_events
        A user with fewer earlier events than this is "new".

    Examples
    --------
    >>> from stream_rec.events import Event
    >>> from stream_rec.evaluation.baselines import Popularity, Vocabulary
    >>> events = [Event(f"u{n % 3}", "hit" if n % 2 else f"i{n}", "view", n) for n in range(12)]
    >>> result = Prequential({"popularity": Popularity()}, Vocabulary.empty(), batch_size=1).run(events)
    >>> result.scored, result.unscored_new_users  # each user's first event is not scored
    (9, 3)
    >>> round(result.models["popularity"]["hr@5"], 4)  # the 5 scored "hit" events, never the fresh items
    0.5556
    """

    def __init__(self, competitors: Mapping[str, Competitor], vocab: Vocabulary, settings: Settings | None = None, *,
                 batch_size: int = BATCH_SIZE, window: int = 1000, new_user_events: int = NEW_USER_EVENTS,
                 chunk: int = CHUNK) -> None:
        self.competitors = dict(competitors)
        self.vocab = vocab
        self.weights = (settings or Settings()).event_weights()
        self.batch_size = batch_size
        self.chunk = chunk
        self.new_user_events = new_user_events
        self.k = max(KS)
        self.accumulators = {name: Accumulator(window) for name in self.competitors}
        self.seconds = dict.fromkeys(self.competitors, 0.0)
        self.cpu_seconds = dict.fromkeys(self.competitors, 0.0)
        self._user_events = np.zeros(0, dtype=np.int64)
        self._item_events = np.zeros(0, dtype=np.int64)
        self._bought = Purchases()  # for the baselines' exclusions (our service keeps its own)
        self.events = self.scored = 0

    def run(self, events: Iterable[Event], progress: Callable[[int], None] | None = None) -> Evaluation:
        """Evaluate every competitor on ``events`` (in the order given); ``progress(n)`` after each chunk."""
        for chunk in chunks(events, self.chunk):
            self.step(chunk)
            if progress is not None:
                progress(len(chunk))
        return self.result()

    def step(self, events: list[Event]) -> None:
        """Score then learn one chunk of the stream for every competitor."""
        batch, types = self._batch(events)
        prior = self._prior_events(batch.users)
        scored = prior > 0
        lists = {name: np.full((len(events), self.k), -1, dtype=np.int64) for name in self.competitors}
        for name, model in self.competitors.items():
            if model.sequential:
                started = _clocks()
                lists[name] = model.rank_then_learn(batch, scored, self.k)
                self._charge(name, started)
        batched = {name: model for name, model in self.competitors.items() if not model.sequential}
        for a, b in micro_batches(batch.users, self.batch_size) if batched else ():
            part = batch.slice(a, b)
            rows = a + np.flatnonzero(scored[a:b])
            exclude = self._exclusions(batch.users[rows])
            for name, model in batched.items():
                started = _clocks()
                if len(rows):
                    lists[name][rows] = model.recommend_many(batch.users[rows], self.k, exclude)
                model.learn_many(part)
                self._charge(name, started)
            self._remember_purchases(part)
        # Items first seen inside the chunk may be recommended later in it: they count zero so far.
        self._item_events = grow(self._item_events, len(self.vocab.items))
        counts, total = self._item_events, self.events
        targets, new_user = batch.items[scored], prior[scored] < self.new_user_events
        for name, acc in self.accumulators.items():
            top = lists[name][scored]
            acc.add(ranks_of(top, targets), types[scored], new_user, top[:, :MAIN_K], novelty(top[:, :MAIN_K], counts, total))
        self._learn_bookkeeping(batch)
        self.scored += int(scored.sum())

    def _charge(self, name: str, started: tuple[float, float]) -> None:
        """Add the wall and CPU time since ``started`` (from :func:`_clocks`) to competitor ``name``."""
        wall, cpu = _clocks()
        self.seconds[name] += wall - started[0]
        self.cpu_seconds[name] += cpu - started[1]

    def _batch(self, events: list[Event]) -> tuple[Batch, IntArray]:
        users = np.array(self.vocab.users.add_many(e.user_id for e in events), dtype=np.int64)
        items = np.array(self.vocab.items.add_many(e.item_id for e in events), dtype=np.int64)
        types = np.array([_TYPE_CODE[e.type] for e in events], dtype=np.int64)
        weights = np.array([self.weights[e.type] for e in events], dtype=np.float64)
        ts = np.array([e.ts_ms for e in events], dtype=np.float64) / 1000.0
        purchase = types == _TYPE_CODE["purchase"]
        return Batch(events, users, items, weights, ts, purchase), types

    def _prior_events(self, users: IntArray) -> IntArray:
        """Events of each event's user before it: learned ones plus earlier ones in this chunk."""
        self._user_events = grow(self._user_events, len(self.vocab.users))
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        within = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
        before = np.empty(len(users), dtype=np.int64)
        before[order] = within
        return self._user_events[users] + before

    def _exclusions(self, users: IntArray) -> list[IntArray]:
        cache = {u: self._bought.items_of(u) for u in set(users.tolist())}
        return [cache[u] for u in users.tolist()]

    def _remember_purchases(self, batch: Batch) -> None:
        bought = batch.purchase
        self._bought.add_many(batch.users[bought], batch.items[bought], (batch.ts[bought] * 1000).astype(np.int64))

    def _learn_bookkeeping(self, batch: Batch) -> None:
        np.add.at(self._user_events, batch.users, 1)
        self._item_events = grow(self._item_events, len(self.vocab.items))
        np.add.at(self._item_events, batch.items, 1)
        self.events += len(batch.users)

    def result(self) -> Evaluation:
        n_items = len(self.vocab.items)
        models: dict[str, dict[str, Any]] = {}
        for name, acc in self.accumulators.items():
            summary = acc.summary(n_items)
            seconds = self.seconds[name]
            summary["seconds"] = seconds
            summary["events_per_s"] = self.events / seconds if seconds > 0 else None
            # CPU time is what the model cost, whatever else the machine was running meanwhile.
            summary["cpu_seconds"] = cpu = self.cpu_seconds[name]
            summary["events_per_cpu_s"] = self.events / cpu if cpu > 0 else None
            models[name] = summary
        return Evaluation(models=models, events=self.events, scored=self.scored,
                          unscored_new_users=self.events - self.scored, n_users=len(self.vocab.users),
                          n_items=n_items, batch_size=self.batch_size)


def side_by_side(evaluations: Sequence[Prequential], streams: Sequence[Iterable[Event]],
                 progress: Callable[[int], None] | None = None) -> list[Evaluation]:
    """Run several evaluations, each on its own stream, in turns of one chunk each.

    Whatever else the machine runs meanwhile then slows them all alike, so their rates compare as if
    measured at the same moment; run one after the other, minutes apart on a shared machine, they did
    not. Each evaluation's figures are exactly those of its own :meth:`Prequential.run`.

    Examples
    --------
    >>> from stream_rec.evaluation.baselines import Popularity, Vocabulary
    >>> def stream(n):
    ...     return [Event(f"u{i % 3}", f"i{i % n}", "view", i) for i in range(10 * n)]  # uneven lengths
    >>> def popularity():
    ...     return Prequential({"popularity": Popularity()}, Vocabulary.empty(), batch_size=1, chunk=16)
    >>> both = side_by_side([popularity(), popularity()], [stream(2), stream(7)])
    >>> [round(e.models["popularity"]["hr@5"], 3) for e in both]
    [1.0, 0.672]
    >>> both[1].models["popularity"]["hr@5"] == popularity().run(stream(7)).models["popularity"]["hr@5"]
    True
    """
    if len(evaluations) != len(streams):
        raise ValueError(f"{len(evaluations)} evaluations but {len(streams)} streams")
    turns = [(evaluation, chunks(stream, evaluation.chunk)) for evaluation, stream in zip(evaluations, streams)]
    while turns:
        remaining = []
        for evaluation, pending in turns:
            chunk = next(pending, None)
            if chunk is None:
                continue
            evaluation.step(chunk)
            if progress is not None:
                progress(len(chunk))
            remaining.append((evaluation, pending))
        turns = remaining
    return [evaluation.result() for evaluation in evaluations]


def _clocks() -> tuple[float, float]:
    """Wall-clock and process CPU seconds, now."""
    return time.perf_counter(), time.process_time()
