"""Catalogue scale: section (f) of ``stream-rec bench``, the same shop at several catalogue sizes in one run.

For every size in ``BenchConfig.catalogues`` (5k, 100k and 1M items by default) a shop of the same shape
is generated: ``catalogue_events`` events (200,000) from the bench's users, popularity exponent
``catalogue_exponent`` (0.8, a long tail: with the generator's default 1.1 a 1M-item shop's stream touches
hardly more items than a 100k one's, so a bigger catalogue would not be measured at all) and categories
by :func:`~stream_rec.synth.default_categories`. On the shops it measures

* the fused model's prequential evaluation on one thread, every event: what ``stream-rec evaluate LOG
  --models fused --threads 1`` runs on the same shop written by ``stream-rec generate`` (the same
  :class:`~stream_rec.evaluation.prequential.Prequential`, settings and defaults); events/s, events per
  CPU-second and HR@10. The sizes are evaluated side by side, a chunk of each in turn
  (:func:`~stream_rec.evaluation.prequential.side_by_side`): run one after the other, minutes apart, their
  ratios moved several-fold with the load of the shared machine. They run in a child process whose
  OpenBLAS (and OpenMP, MKL) is held to one thread, :data:`ONE_THREAD_ENV`: ``--threads 1`` alone leaves
  OpenBLAS its own worker threads, which the compiled ranking wakes at large catalogues, and which
  collapse when the machine is busy (200k events at 100k items, two busy loops beside it: 73 s with one
  OpenBLAS thread, more than 300 s without);
* the full worker on the keyed input path draining the first ``catalogue_worker_events`` events of each
  shop as a backlog, as ``full_worker`` drains its own (:func:`tools.bench.drain_rate`); twice, in mirrored
  order (5k, 100k, 1M, 1M, 100k, 5k), so a drift of the machine's load is spread over every size; fewer
  events than the evaluation, because a worker at 1M items drains slowly;

and the rates of every size over those of the first size in the list.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from stream_rec.evaluation.baselines import Vocabulary, build
from stream_rec.evaluation.prequential import Prequential, side_by_side
from stream_rec.events import Event, decode
from stream_rec.heap import settle
from stream_rec.settings import Settings
from stream_rec.synth import ShopConfig, SyntheticShop, default_categories
from tools.bench import Bench, BenchConfig, Figure, drain_rate, produce_backlog

log = logging.getLogger(__name__)

#: The slowest drain (events/s) a worker run may show, after two minutes to start, before the bench gives
#: up on it: low, so that a slow worker at a big catalogue is measured and only a stuck one trips it.
MIN_WORKER_RATE = 25.0
#: The evaluating child's environment: every native thread pool it may load held to one thread.
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Shop:
    """One catalogue size's shop, as the parent process uses it (the evaluating child makes its own)."""

    items: int
    events: int
    head: list[dict[str, Any]]  # the worker's backlog: the first events, as produced
    touched: int  # distinct items in all the events
    head_touched: int


@dataclass(frozen=True)
class Evaluated:
    """The fused model's figures on one shop."""

    rate: float  # events/s
    cpu_rate: float  # events per CPU-second of the process
    hr10: float


@dataclass(frozen=True)
class CatalogueRow:
    """What was measured on the shop of one catalogue size."""

    items: int
    events: int  # evaluated
    touched: int  # distinct items in the evaluated events
    evaluate_rate: float  # events/s
    evaluate_cpu_rate: float  # events per CPU-second
    hr10: float
    worker_events: int
    worker_touched: int  # distinct items in the worker's backlog
    worker_rates: tuple[float, ...]  # events/s of each drain

    @property
    def worker_rate(self) -> float:
        return statistics.fmean(self.worker_rates)


def shop_events(config: BenchConfig, n_items: int) -> list[dict[str, Any]]:
    """The events of the section's shop with ``n_items`` items (the same shape at every size)."""
    shop = SyntheticShop(ShopConfig(n_users=config.users, n_items=n_items, n_categories=default_categories(n_items),
                                    n_events=config.catalogue_events, popularity_exponent=config.catalogue_exponent,
                                    seed=config.seed))
    bar = tqdm(shop.events(), total=config.catalogue_events, desc=f"generate, {n_items:,} items", unit="ev",
               disable=not sys.stderr.isatty(), leave=False)
    return list(bar)


def build_shop(config: BenchConfig, n_items: int) -> Shop:
    """Generate the shop of ``n_items`` items and keep what the workers' runs need of it."""
    events = shop_events(config, n_items)
    head = events[: config.catalogue_worker_events]
    return Shop(items=n_items, events=len(events), head=head, touched=_distinct_items(events),
                head_touched=_distinct_items(head))


def decoded(events: Sequence[dict[str, Any]]) -> list[Event]:
    """``events`` through the decoder every log line and every message passes."""
    now_ms = int(time.time() * 1000)
    return [decode(json.dumps(e).encode(), None, now_ms=now_ms) for e in events]


def _distinct_items(events: Sequence[dict[str, Any]]) -> int:
    return len({e["item_id"] for e in events})


def fused_evaluations(config: BenchConfig, settings: Settings) -> list[Evaluated]:
    """The fused model's figures on the shop of every catalogue size, evaluated side by side in a child
    process with one thread (:data:`ONE_THREAD_ENV`); ``settings`` as ``stream-rec evaluate`` would read them."""
    with _environment(ONE_THREAD_ENV), ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as child:
        return child.submit(_evaluate_shops, config, settings).result()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` inside the block (a spawned child starts with them), then as before."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _evaluate_shops(config: BenchConfig, settings: Settings) -> list[Evaluated]:
    """In the child: generate every shop again (seeded, so the same events) and evaluate them."""
    return evaluate_side_by_side([decoded(shop_events(config, n)) for n in config.catalogues], settings)


def evaluate_side_by_side(streams: Sequence[Sequence[Event]], settings: Settings) -> list[Evaluated]:
    """The fused model's prequential figures on each stream, the streams side by side, with
    ``settings`` on one thread; batch size, window and new-user threshold are ``stream-rec evaluate``'s
    defaults."""
    settings = replace(settings, threads=1)
    runs = []
    for _ in streams:
        vocab = Vocabulary.empty()
        runs.append(Prequential(build(["fused"], vocab, settings), vocab, settings))
    settle()  # as stream-rec evaluate does: what lives to the end leaves the collector's scans
    with tqdm(total=sum(map(len, streams)), desc="evaluate, side by side", unit="ev",
              disable=not sys.stderr.isatty(), leave=False) as bar:
        results = side_by_side(runs, streams, progress=bar.update)
    return [_evaluated(result.models["fused"]) for result in results]


def _evaluated(fused: dict[str, Any]) -> Evaluated:
    return Evaluated(rate=float(fused["events_per_s"] or 0.0), cpu_rate=float(fused["events_per_cpu_s"] or 0.0),
                     hr10=float(fused["hr@10"]))


def worker_rates(bench: Bench, shops: Sequence[Shop]) -> list[tuple[float, ...]]:
    """Each shop's full worker drain rates (events/s), keyed input: every backlog drained twice, the shops in
    mirrored order, each drain by a fresh worker with its own consumer group and state."""
    backlogs = []
    for shop in shops:
        backlogs.append(bench.fresh_settings(f"catalogue-{shop.items}", input_keys="user_id"))
        produce_backlog(bench, backlogs[-1], shop.head)
    rates: list[list[float]] = [[] for _ in shops]
    order = [*range(len(shops)), *reversed(range(len(shops)))]
    for n, i in enumerate(order, start=1):
        shop = shops[i]
        settings = bench.fresh_settings(f"catalogue-{shop.items}-drain", inputs=backlogs[i], input_keys="user_id")
        rates[i].append(drain_rate(bench, settings, f"full worker, keyed, {shop.items:,} items ({n}/{len(order)})",
                                   total=len(shop.head), min_rate=MIN_WORKER_RATE))
    return [tuple(r) for r in rates]


def measure(bench: Bench) -> list[CatalogueRow]:
    """Evaluate every shop side by side (in a child), then drain a worker on the head of each."""
    started = time.monotonic()
    # The bench's own settings switch off exploration for its workers; an evaluation reads them as given.
    evaluated = fused_evaluations(bench.config, bench.base)
    log.info("fused evaluations of %d shops side by side took %.0f s", len(evaluated), time.monotonic() - started)
    shops = [build_shop(bench.config, n_items) for n_items in bench.config.catalogues]
    drains = worker_rates(bench, shops)
    rows = [CatalogueRow(items=shop.items, events=shop.events, touched=shop.touched, evaluate_rate=e.rate,
                         evaluate_cpu_rate=e.cpu_rate, hr10=e.hr10, worker_events=len(shop.head),
                         worker_touched=shop.head_touched, worker_rates=rates)
            for shop, e, rates in zip(shops, evaluated, drains)]
    for row in rows:
        log.info("catalogue of %d items: %d touched, fused evaluate %.0f ev/s (%.0f per CPU-s, HR@10 %.4f), "
                 "full worker %s ev/s", row.items, row.touched, row.evaluate_rate, row.evaluate_cpu_rate, row.hr10,
                 " and ".join(f"{r:.0f}" for r in row.worker_rates))
    return rows


def figures(rows: Sequence[CatalogueRow]) -> list[Figure]:
    """Every row's figures, then each rate over the first row's."""
    out: list[Figure] = []
    for row in rows:
        tag = f"{row.items}_items"
        out += [
            Figure(f"{tag}_touched", row.touched, "items", f"distinct items in the {row.events:,} evaluated events"),
            Figure(f"{tag}_fused_evaluate", row.evaluate_rate, "ev/s",
                   "stream-rec evaluate --models fused --threads 1; the sizes side by side"),
            Figure(f"{tag}_fused_evaluate_cpu", row.evaluate_cpu_rate, "ev/cpu-s",
                   "the same per CPU-second of the process"),
            Figure(f"{tag}_fused_hr10", 100 * row.hr10, "%", "HR@10 of that evaluation"),
            Figure(f"{tag}_full_keyed", row.worker_rate, "ev/s", f"full worker, keyed input, {_backlog(row)}"),
        ]
    first = rows[0]
    targets = {100_000: (" target >= 0.5", " target >= 0.5"), 1_000_000: (" target >= 0.3", "")}
    for row in rows[1:]:
        tag, base = f"{row.items}_items", f"{first.items}_items"
        evaluate_target, worker_target = targets.get(row.items, ("", "")) if first.items == 5_000 else ("", "")
        out += [
            Figure(f"{tag}_fused_evaluate_over_{first.items}", row.evaluate_rate / first.evaluate_rate, "x",
                   f"over {base}{evaluate_target}"),
            Figure(f"{tag}_fused_evaluate_cpu_over_{first.items}", row.evaluate_cpu_rate / first.evaluate_cpu_rate, "x",
                   f"over {base}, per CPU-second"),
            Figure(f"{tag}_full_keyed_over_{first.items}", row.worker_rate / first.worker_rate, "x",
                   f"over {base}{worker_target}"),
        ]
    return out


def _backlog(row: CatalogueRow) -> str:
    drains = " and ".join(f"{r:,.0f}" for r in row.worker_rates)
    if row.worker_events < row.events:
        events = f"capped: the first {row.worker_events:,} events only ({row.worker_touched:,} items)"
    else:
        events = f"all {row.events:,} events"
    return f"{events}; mean of {len(row.worker_rates)} drains, {drains}"


def catalogue_scale(bench: Bench) -> list[Figure]:
    """(f) Fused evaluate and full worker rates at every catalogue size of ``BenchConfig.catalogues``."""
    return figures(measure(bench))
