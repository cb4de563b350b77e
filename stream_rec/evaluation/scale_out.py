"""N workers, simulated: how much ranking quality a group of workers loses to sharing item knowledge late.

Users are partitioned as a consumer group partitions them: each user's partition is the Kafka default
partitioner's (murmur2 of the user id modulo the partitions), and partitions go round-robin to the
workers. Each simulated worker is a :class:`~stream_rec.service.RecService` that ranks and learns its own
users' events one at a time (the prequential protocol, exactly as ``stream-rec evaluate`` does for one
worker), and records the item half of each event as the item updates a real worker publishes
(:mod:`stream_rec.state.item_updates`). Every ``sync_ms`` of simulated time each worker applies the
updates the others recorded since the last exchange, with the code a worker's ``follow_item_updates``
runs; ``sync_ms=None`` never exchanges them (each worker learns items from its own users only).

The simulated clock is the events' own timestamps (``clock="event"``: a live shop, where events arrive
as they happen) or the stream as a backfill drains it (``clock="replay"``: ``rate`` events per second per
worker, so a group of N drains N times as fast, and the most events pass between two exchanges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
from stream_rec.evaluation.baselines import Batch, Competitor, Vocabulary
from stream_rec.ids import kafka_partition
from stream_rec.service import RecService
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore
from stream_rec.types import IntArray

#: A full worker's measured rate (``stream-rec bench``, 5,000-6,000 events/s): the default backfill pace.
WORKER_RATE = 5000.0
CLOCKS = ("replay", "event")


class ScaleOut(Competitor):
    """The fused service run as ``workers`` workers that exchange item updates every ``sync_ms``.

    ``workers=1`` is exactly the single service (``stream-rec evaluate``'s ``fused``): with one worker
    there is nobody to exchange with.
    """

    sequential = True

    def __init__(self, name: str, settings: Settings, vocab: Vocabulary, workers: int, sync_ms: float | None, *,
                 partitions: int | None = None, clock: str = "event", rate: float = WORKER_RATE,
                 sources: Sequence[str] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        self.name = name
        self.vocab = vocab
        self.workers = workers
        self.sync_s = None if sync_ms is None else sync_ms / 1000.0
        self.partitions = partitions or max(settings.partitions, workers)
        self.clock, self.rate = clock, rate * workers
        share = workers > 1 and sync_ms is not None
        if sources is not None:  # one source alone ranks in its own order (see ServiceModel)
            settings = replace(settings, fusion_adapt=False)
        self.services = [RecService(settings, MemoryStore(), record_items=share, sources=sources)
                         for _ in range(workers)]
        self._to_vocab = [np.zeros(0, dtype=np.int64) for _ in range(workers)]
        self._partition: dict[int, int] = {}  # vocabulary user -> partition
        self._events = 0
        self._inbox: list[list[bytes]] = [[] for _ in range(workers)]  # updates sent, not applied yet
        self.exchanged = 0  # item-update records applied across workers

    def rank_then_learn(self, batch: Batch, scored: npt.NDArray[np.bool_], k: int) -> IntArray:
        """The chunk's events, each ranked by its user's worker before it learns the event.

        The clock is cut into windows of ``sync_ms``; an update a worker records in one window reaches the
        others at its end (each applies what it was sent just before it next ranks). Within a window the
        workers are independent, so each ranks and learns its events of the window in one call; windows in
        which only one worker has events are run together (nobody sends it anything meanwhile).
        """
        n = len(batch.events)
        out = np.full((n, k), -1, dtype=np.int64)
        parts = np.array([self._partition_of(u, e.user_id) for u, e in zip(batch.users.tolist(), batch.events)],
                         dtype=np.int64)
        owner = parts % self.workers
        if self.sync_s is None or self.workers == 1:
            window = np.zeros(n, dtype=np.int64)
        else:
            now = (self._events + np.arange(n)) / self.rate if self.clock == "replay" else batch.ts
            # A late event does not turn the clock back.
            window = np.maximum.accumulate(np.floor(np.asarray(now) / self.sync_s).astype(np.int64))
        i = 0
        while i < n:
            j = int(np.searchsorted(window, window[i], side="right"))
            here = np.unique(owner[i:j])
            if len(here) == 1:
                w = int(here[0])
                while j < n:  # the following windows hold only this worker's events: nobody sends it anything
                    j2 = int(np.searchsorted(window, window[j], side="right"))
                    if not (owner[j:j2] == w).all():
                        break
                    j = j2
                groups = [(w, np.arange(i, j))]
            else:
                groups = [(int(w), i + np.flatnonzero(owner[i:j] == w)) for w in here]
            sent = []
            for w, rows in groups:
                self._receive(w)
                out[rows] = self._rank_then_learn(w, batch, rows, parts, scored, k)
                sent.append((w, self.services[w].pop_item_updates()))
            for w, messages in sent:  # at the window's end
                flat = [m for ms in messages.values() for m in ms]
                for v in range(self.workers):
                    if v != w and flat:
                        self._inbox[v].extend(flat)
            i = j
        self._events += n
        return out

    def _receive(self, w: int) -> None:
        """Worker ``w`` applies what the others sent it since it last ranked."""
        if self._inbox[w]:
            self.exchanged += self.services[w].apply_item_updates(self._inbox[w]).applied
            self._inbox[w] = []

    def _partition_of(self, user: int, user_id: str) -> int:
        part = self._partition.get(user)
        if part is None:
            part = self._partition[user] = kafka_partition(user_id, self.partitions)
        return part

    def _rank_then_learn(self, w: int, batch: Batch, rows: IntArray, parts: IntArray, scored: npt.NDArray[np.bool_],
                         k: int) -> IntArray:
        service = self.services[w]
        positions = [((f"{p}>sim:{p}", self._events + r), batch.events[r]) for r, p in
                     zip(rows.tolist(), parts[rows].tolist())]
        lists = service.rank_then_learn(positions, scored[rows], k)
        items = service.items
        to_vocab = self._to_vocab[w]
        if len(items) > len(to_vocab):
            new = [self.vocab.items.get(items.external(i)) for i in range(len(to_vocab), len(items))]
            to_vocab = self._to_vocab[w] = np.concatenate([to_vocab, np.array(new, dtype=np.int64)])
        return np.where(lists >= 0, to_vocab[np.maximum(lists, 0)], -1)


def scale_out_name(workers: int, sync_ms: float | None) -> str:
    """``fused/4w/1000ms``; ``fused/4w/none`` for no sharing; ``fused/1w`` for one worker."""
    if workers == 1:
        return "fused/1w"
    return f"fused/{workers}w/{'none' if sync_ms is None else f'{sync_ms:g}ms'}"


def build_scale_out(settings: Settings, vocab: Vocabulary, workers: Sequence[int], syncs: Sequence[float | None], *,
                    clock: str = "event", rate: float = WORKER_RATE) -> dict[str, ScaleOut]:
    """One competitor per (workers, sync) pair; one worker needs no sync, so it appears once."""
    out: dict[str, ScaleOut] = {}
    for n in workers:
        for sync in ([None] if n == 1 else syncs):
            name = scale_out_name(n, sync)
            out[name] = ScaleOut(name, settings, vocab, n, sync, clock=clock, rate=rate)
    return out
