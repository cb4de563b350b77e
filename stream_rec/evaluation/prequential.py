"""Prequential ("test, then train") evaluation of online recommenders on an event stream.

For each event of a user seen before, a model first recommends its top ``K`` (``K = 20``, the largest
cut-off reported) for that user, excluding what the user already bought; the rank of the event's item
in that list is recorded; only then does the model learn from the event. A user's first event cannot
be scored (there is no one to recommend to yet): it is learned and counted as ``unscored``.

Micro-batches, as the worker does it
------------------------------------
The stream is processed in micro-batches of at most ``batch_size`` events (default
:data:`BATCH_SIZE`), as the worker does: every event of a batch is scored with the state **before** the
batch (one ranking pass per batch), then the batch is learned through the same
:meth:`RecService.apply` the worker calls.

By default (``exact=True``) a batch is also cut just before an event whose user already has an event
in it, so every event is scored with all earlier events learned: the result equals a strict
event-by-event protocol. Events of different users inside one batch still see each other's item-side
updates only after the batch, as in the worker.

``exact=False`` (``--pre-batch``) keeps full batches: a user's later events in a batch are then scored
without the earlier ones learned (nor their purchases excluded); if the user is new in the batch they
are scored as a stranger (:attr:`Evaluation.scored_as_strangers` counts those). That is much faster
on bursty logs but can change the figures a lot: MovieLens users rate dozens of films within minutes,
so with 256-event batches about half of its scored events are scored as strangers, and exact batches
shrink to about one event.

A user counts as **new** while they have fewer than ``new_user_events`` earlier events, else as
**returning**; an event scored before any of its user's events reached the models (the user's first
event sits earlier in the same batch) is scored as the model answers a stranger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_rec.evaluation.baselines import Batch, Competitor, Vocabulary
from stream_rec.evaluation.metrics import KS, MAIN_K, Accumulator, novelty, ranks_of
from stream_rec.events import EVENT_TYPES, Event
from stream_rec.models._arrays import grow
from stream_rec.settings import Settings
from stream_rec.types import IntArray

log = logging.getLogger(__name__)

#: Default events per micro-batch: large enough to amortise per-batch work, small enough that few
#: users repeat inside one batch (and close to what a busy worker batches within its wait).
BATCH_SIZE = 256
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
    exact: bool
    scored_as_strangers: int = 0
    k: int = max(KS)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "scored": self.scored, "unscored_new_users": self.unscored_new_users,
                "scored_as_strangers": self.scored_as_strangers,
                "users": self.n_users, "items": self.n_items, "batch_size": self.batch_size, "exact": self.exact,
                "k": self.k, **self.extra, "models": self.models}


def micro_batches(events: Iterable[Event], size: int, exact: bool = False) -> Iterator[list[Event]]:
    """Consecutive batches of at most ``size`` events; with ``exact``, also cut before a repeated user.

    >>> from stream_rec.events import Event
    >>> evs = [Event(u, "i", "view", n) for n, u in enumerate("abacd")]
    >>> [[e.user_id for e in b] for b in micro_batches(evs, 4)]
    [['a', 'b', 'a', 'c'], ['d']]
    >>> [[e.user_id for e in b] for b in micro_batches(evs, 4, exact=True)]
    [['a', 'b'], ['a', 'c', 'd']]
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    batch: list[Event] = []
    users: set[str] = set()
    for event in events:
        if len(batch) >= size or (exact and event.user_id in users):
            yield batch
            batch, users = [], set()
        batch.append(event)
        users.add(event.user_id)
    if batch:
        yield batch


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
    batch_size, exact
        Micro-batching (see the module docstring).
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
                 batch_size: int = BATCH_SIZE, exact: bool = True, window: int = 1000,
                 new_user_events: int = NEW_USER_EVENTS) -> None:
        self.competitors = dict(competitors)
        self.vocab = vocab
        self.weights = (settings or Settings()).event_weights()
        self.batch_size = batch_size
        self.exact = exact
        self.new_user_events = new_user_events
        self.k = max(KS)
        self.accumulators = {name: Accumulator(window) for name in self.competitors}
        self.seconds = dict.fromkeys(self.competitors, 0.0)
        self._user_events = np.zeros(0, dtype=np.int64)
        self._item_events = np.zeros(0, dtype=np.int64)
        self._bought: dict[int, list[int]] = {}
        self.events = self.scored = self.scored_as_strangers = 0

    def run(self, events: Iterable[Event], progress: Callable[[int], None] | None = None) -> Evaluation:
        """Evaluate every competitor on ``events`` (in the order given); ``progress(n)`` after each batch."""
        for chunk in micro_batches(events, self.batch_size, self.exact):
            self.step(chunk)
            if progress is not None:
                progress(len(chunk))
        return self.result()

    def step(self, events: list[Event]) -> None:
        """Score then learn one micro-batch for every competitor."""
        batch, types = self._batch(events)
        prior = self._prior_events(batch.users)
        scored = prior > 0
        users, targets = batch.users[scored], batch.items[scored]
        exclude = self._exclusions(users)
        counts, total = self._item_events.copy(), self.events
        for name, model in self.competitors.items():
            started = time.perf_counter()
            lists = model.recommend_many(users, self.k, exclude) if len(users) else np.empty((0, self.k), np.int64)
            model.learn_many(batch)
            self.seconds[name] += time.perf_counter() - started
            self.accumulators[name].add(ranks_of(lists, targets), types[scored], prior[scored] < self.new_user_events,
                                        lists[:, :MAIN_K], novelty(lists[:, :MAIN_K], counts, total))
        self.scored_as_strangers += int((scored & (self._user_events[batch.users] == 0)).sum())
        self._learn_bookkeeping(batch)
        self.scored += int(scored.sum())

    def _batch(self, events: list[Event]) -> tuple[Batch, IntArray]:
        users = np.array(self.vocab.users.add_many(e.user_id for e in events), dtype=np.int64)
        items = np.array(self.vocab.items.add_many(e.item_id for e in events), dtype=np.int64)
        types = np.array([_TYPE_CODE[e.type] for e in events], dtype=np.int64)
        weights = np.array([self.weights[e.type] for e in events], dtype=np.float64)
        ts = np.array([e.ts_ms for e in events], dtype=np.float64) / 1000.0
        purchase = types == _TYPE_CODE["purchase"]
        return Batch(events, users, items, weights, ts, purchase), types

    def _prior_events(self, users: IntArray) -> IntArray:
        """Events of each event's user before it: learned ones plus earlier ones in this batch."""
        self._user_events = grow(self._user_events, len(self.vocab.users))
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        within = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
        before = np.empty(len(users), dtype=np.int64)
        before[order] = within
        return self._user_events[users] + before

    def _exclusions(self, users: IntArray) -> list[IntArray]:
        cache: dict[int, IntArray] = {}
        empty = np.empty(0, dtype=np.int64)
        for u in set(users.tolist()):
            bought = self._bought.get(u)
            cache[u] = np.array(bought, dtype=np.int64) if bought else empty
        return [cache[u] for u in users.tolist()]

    def _learn_bookkeeping(self, batch: Batch) -> None:
        np.add.at(self._user_events, batch.users, 1)
        self._item_events = grow(self._item_events, len(self.vocab.items))
        np.add.at(self._item_events, batch.items, 1)
        for u, i in zip(batch.users[batch.purchase].tolist(), batch.items[batch.purchase].tolist()):
            bought = self._bought.setdefault(u, [])
            if i not in bought:
                bought.append(i)
        self.events += len(batch.users)

    def result(self) -> Evaluation:
        n_items = len(self.vocab.items)
        models: dict[str, dict[str, Any]] = {}
        for name, acc in self.accumulators.items():
            summary = acc.summary(n_items)
            seconds = self.seconds[name]
            summary["seconds"] = seconds
            summary["events_per_s"] = self.events / seconds if seconds > 0 else None
            models[name] = summary
        return Evaluation(models=models, events=self.events, scored=self.scored,
                          unscored_new_users=self.events - self.scored,
                          scored_as_strangers=self.scored_as_strangers, n_users=len(self.vocab.users),
                          n_items=n_items, batch_size=self.batch_size, exact=self.exact)
