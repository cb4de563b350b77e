"""Catalogue scale: section (f) of ``stream-rec bench``, the same shop at several catalogue sizes in one run.

For every size in ``BenchConfig.catalogues`` (5k, 100k and 1M items by default) a shop of the same shape
is generated: ``catalogue_events`` events (200,000) from the bench's users, popularity exponent
``catalogue_exponent`` (0.8, a long tail: with the generator's default 1.1 a 1M-item shop's stream touches
hardly more items than a 100k one's, so a bigger catalogue would not be measured at all) and categories
by :func:`~stream_rec.synth.default_categories`. On each shop it measures

* the fused model's prequential evaluation on one thread, every event: :func:`tools.evaluate.prequential`,
  what ``stream-rec evaluate LOG --models fused --threads 1`` runs on the same shop written by
  ``stream-rec generate``; its events/s and HR@10;
* the full worker on the keyed input path draining the first ``catalogue_worker_events`` events of that
  shop as a backlog, as ``full_worker`` drains its own (:func:`tools.bench.drain_rate`); fewer events
  than the evaluation, because a worker at 1M items drains far slower;

and the rates of every size over those of the first size in the list.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from stream_rec.evaluation.baselines import Vocabulary, build
from stream_rec.events import Event, decode
from stream_rec.synth import ShopConfig, SyntheticShop, default_categories
from tools.bench import Bench, BenchConfig, Figure, drain_rate, produce_backlog
from tools.evaluate import prequential

log = logging.getLogger(__name__)

#: The slowest drain (events/s) a worker run may show, after two minutes to start, before the bench gives
#: up on it: low, so that a slow worker at a big catalogue is measured and only a stuck one trips it.
MIN_WORKER_RATE = 25.0


@dataclass(frozen=True)
class CatalogueRow:
    """What was measured on the shop of one catalogue size."""

    items: int
    events: int  # evaluated
    touched: int  # distinct items in the evaluated events
    evaluate_rate: float  # events/s
    hr10: float
    worker_events: int
    worker_touched: int  # distinct items in the worker's backlog
    worker_rate: float  # events/s


def shop_events(config: BenchConfig, n_items: int) -> list[dict[str, Any]]:
    """The events of the section's shop with ``n_items`` items (the same shape at every size)."""
    shop = SyntheticShop(ShopConfig(n_users=config.users, n_items=n_items, n_categories=default_categories(n_items),
                                    n_events=config.catalogue_events, popularity_exponent=config.catalogue_exponent,
                                    seed=config.seed))
    bar = tqdm(shop.events(), total=config.catalogue_events, desc=f"generate, {n_items:,} items", unit="ev",
               disable=not sys.stderr.isatty(), leave=False)
    return list(bar)


def fused_evaluate(bench: Bench, events: Sequence[dict[str, Any]], label: str) -> tuple[float, float]:
    """The fused model's prequential events/s and HR@10 on ``events``, one thread.

    The settings are the ones the bench was given (not the workers' ``explore=0``), as ``stream-rec
    evaluate`` would read them; the events pass the same decoder as a log's lines.
    """
    settings = replace(bench.base, threads=1)
    decoded = _decoded(events)
    vocab = Vocabulary.empty()
    competitors = build(["fused"], vocab, settings)
    fused = prequential(decoded, competitors, vocab, settings, desc=f"evaluate, {label}").models["fused"]
    return float(fused["events_per_s"] or 0.0), float(fused["hr@10"])


def _decoded(events: Sequence[dict[str, Any]]) -> list[Event]:
    now_ms = int(time.time() * 1000)
    return [decode(json.dumps(e).encode(), None, now_ms=now_ms) for e in events]


def worker_rate(bench: Bench, events: Sequence[dict[str, Any]], n_items: int) -> float:
    """The full worker's sustained events/s draining ``events`` from its keyed input topics."""
    settings = bench.fresh_settings(f"catalogue-{n_items}", input_keys="user_id")
    produce_backlog(bench, settings, events)
    return drain_rate(bench, settings, f"full worker, keyed, {n_items:,} items", total=len(events),
                      min_rate=MIN_WORKER_RATE)


def measure(bench: Bench, n_items: int) -> CatalogueRow:
    """Generate the shop of ``n_items`` items, evaluate on it, drain a worker on the head of it."""
    started = time.monotonic()
    events = shop_events(bench.config, n_items)
    label = f"{n_items:,} items"
    rate, hr10 = fused_evaluate(bench, events, label)
    head = events[: bench.config.catalogue_worker_events]
    row = CatalogueRow(items=n_items, events=len(events), touched=_distinct_items(events), evaluate_rate=rate, hr10=hr10,
                       worker_events=len(head), worker_touched=_distinct_items(head),
                       worker_rate=worker_rate(bench, head, n_items))
    log.info("catalogue of %s: %d items touched, fused evaluate %.0f ev/s (HR@10 %.4f), full worker %.0f ev/s "
             "(%.0f s)", label, row.touched, row.evaluate_rate, row.hr10, row.worker_rate, time.monotonic() - started)
    return row


def _distinct_items(events: Sequence[dict[str, Any]]) -> int:
    return len({e["item_id"] for e in events})


def figures(rows: Sequence[CatalogueRow]) -> list[Figure]:
    """Every row's figures, then each rate over the first row's."""
    out: list[Figure] = []
    for row in rows:
        tag = f"{row.items}_items"
        out += [
            Figure(f"{tag}_touched", row.touched, "items", f"distinct items in the {row.events:,} evaluated events"),
            Figure(f"{tag}_fused_evaluate", row.evaluate_rate, "ev/s", "stream-rec evaluate --models fused --threads 1"),
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
                   f"over {base}{evaluate_target}".strip()),
            Figure(f"{tag}_full_keyed_over_{first.items}", row.worker_rate / first.worker_rate, "x",
                   f"over {base}{worker_target}".strip()),
        ]
    return out


def _backlog(row: CatalogueRow) -> str:
    if row.worker_events < row.events:
        return f"capped: the first {row.worker_events:,} events only ({row.worker_touched:,} items)"
    return f"all {row.events:,} events"


def catalogue_scale(bench: Bench) -> list[Figure]:
    """(f) Fused evaluate and full worker rates at every catalogue size of ``BenchConfig.catalogues``."""
    return figures([measure(bench, n_items) for n_items in bench.config.catalogues])
