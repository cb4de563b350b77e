"""``stream-rec bench``: how fast the worker is, and how far from the ceilings around it, in one run.

Sections run in order against one broker (the embedded one unless ``--bootstrap``); each is a function
``(Bench) -> list[Figure]`` registered in :data:`SECTIONS`, so a later section (model costs, memory)
is one more function and one more line there. Every section gets the same seeded synthetic events,
except ``catalogue_scale``, which generates a shop of the same shape for each catalogue size.

Throughput runs consume a *backlog*: the events are produced first, then a process starts and drains
them; its rate is read from its metrics between 10% and 90% of the events (start-up and the tail
excluded). Figures from one run are comparable with each other; across runs and machines compare only
their ratios.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agents.security import aiokafka_options
from agents.topics import ensure_topics
from stream_rec.settings import TOPIC_FIELDS, Settings
from stream_rec.synth import ShopConfig, SyntheticShop, default_categories
from tools.argtypes import finite, output_file, output_folder, whole, whole_list
from tools.broker import EmbeddedBroker
from tools.command import UserError
from tools.produce import topic_for
from tools.workers import WorkerProcess

log = logging.getLogger(__name__)

APPLIED = "stream_rec_learn_events_applied_total"
ASSIGNED = "stream_rec_worker_assigned_partitions"
#: The share of a backlog over which a sustained rate is measured: start-up and the tail are left out.
_WINDOW = (0.1, 0.9)
_POLL_S = 0.25


@dataclass(frozen=True)
class BenchConfig:
    """Size of a bench run."""

    events: int = 100_000
    users: int = 10_000
    items: int = 5_000
    seed: int = 0
    #: Seconds of paced traffic in the freshness section.
    freshness_s: float = 10.0
    bootstrap: str = ""
    #: Keep the workers' logs and state here (empty: a temporary folder, removed afterwards).
    workdir: str = ""
    #: Tiny sizes for the model-cost and memory sections too (see :data:`QUICK`).
    quick: bool = False
    #: Catalogue sizes of the ``catalogue_scale`` section; its rates are compared with the first one's.
    catalogues: tuple[int, ...] = (5_000, 100_000, 1_000_000)
    #: Events of each of that section's shops, all of them evaluated.
    catalogue_events: int = 200_000
    #: Events of a shop the section's worker drains (its first ones): a worker at 1M items is slow.
    catalogue_worker_events: int = 50_000
    #: Popularity exponent of that section's shops: a long tail, so a bigger catalogue is really touched.
    catalogue_exponent: float = 0.8


#: Pairs of fused evaluates (``--threads 1`` then ``--threads 2``) per load in the threads section.
THREAD_ROUNDS = 3
#: CPU-bound processes beside the loaded runs of the threads section: one per core of a 2-core machine.
BUSY_PROCESSES = 2

#: ``--quick``: enough to see every figure, too small for the figures to mean much.
QUICK: dict[str, Any] = {"events": 3_000, "users": 300, "items": 200, "freshness_s": 2.0, "catalogues": (200, 2_000, 20_000),
                         "catalogue_events": 3_000, "catalogue_worker_events": 3_000}


@dataclass(frozen=True)
class Figure:
    """One measured number of a section."""

    name: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Bench:
    """What every section works with: the broker, base settings, the events and the figures so far."""

    config: BenchConfig
    settings: Settings
    workdir: Path
    events: list[dict[str, Any]]
    #: The settings the bench was given, before its own overrides (sections that evaluate use them).
    base: Settings = field(default_factory=Settings)
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)
    _runs: int = 0

    def fresh_settings(self, label: str, *, inputs: Settings | None = None, **overrides: Any) -> Settings:
        """Settings with their own consumer group, topics and state folder; ``inputs`` shares its input topics."""
        self._runs += 1
        run_id = f"{self.settings.app_id}-{self._runs}-{label}"
        topics = {name: f"{run_id}.{getattr(Settings, name)}" for name in TOPIC_FIELDS}
        if inputs is not None:
            topics.update({name: getattr(inputs, name) for name in ("topic_browse", "topic_click", "topic_purchase")})
        settings = replace(self.settings, app_id=run_id, data_dir=str(self.workdir / run_id), metrics_port=0,
                           **topics, **overrides)
        ensure_topics(settings, settings.kafka_bootstrap)
        return settings

    def figure(self, section: str, name: str) -> float:
        return self.figures[section][name].value


Section = Callable[[Bench], list[Figure]]


# -- building blocks ------------------------------------------------------------------------------

def produce_backlog(bench: Bench, settings: Settings, events: Sequence[dict[str, Any]] | None = None) -> float:
    """Send ``events`` (default: the bench's) to ``settings``' input topics, keyed by user id, one event per
    message; events/s."""
    events = bench.events if events is None else events
    messages = [(topic_for(e, settings), e["user_id"].encode(), json.dumps(e).encode()) for e in events]
    return asyncio.run(_produce(settings, messages))


async def _produce(settings: Settings, messages: Sequence[tuple[str, bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, **aiokafka_options(settings))
    await producer.start()
    try:
        started = time.perf_counter()
        for topic, key, value in _progress(messages, desc="produce", unit="ev"):
            await producer.send(topic, value, key=key)
        await producer.flush()
        return len(messages) / (time.perf_counter() - started)
    finally:
        await producer.stop()


def raw_consume_rate(settings: Settings, expected: int) -> float:
    """aiokafka ``getmany`` over every input partition from the beginning, no processing; events/s."""
    return asyncio.run(_raw_consume(settings, expected))


async def _raw_consume(settings: Settings, expected: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                **aiokafka_options(settings))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(t, p) for t in settings.input_topics().values() for p in range(settings.partitions)])
        await consumer.seek_to_beginning()
        seen, started = 0, time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batches.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def drain_rate(bench: Bench, settings: Settings, label: str, module: Sequence[str] = ("tools.cli", "worker"), *,
               total: int | None = None, min_rate: float = 500.0) -> float:
    """Start a worker process on a backlog of ``total`` events (default: ``len(bench.events)``); its
    sustained events/s. It fails if the worker drains slower than ``min_rate`` after two minutes to start."""
    total = len(bench.events) if total is None else total
    worker = WorkerProcess(settings, log_path=bench.workdir / f"{settings.app_id}.log", module=module).start()
    samples: list[tuple[float, float]] = []
    try:
        with _bar(total, label) as bar:
            def seen(value: float) -> None:
                samples.append((time.monotonic(), value))
                bar.update(int(value) - bar.n)

            worker.wait_for(APPLIED, total, timeout_s=120 + total / min_rate, on_value=seen)
    finally:
        worker.stop()
    return sustained_rate(samples, total)


def sustained_rate(samples: Sequence[tuple[float, float]], total: int, window: tuple[float, float] = _WINDOW) -> float:
    """Events/s between the moments the count crossed ``window`` shares of ``total`` (interpolated).

    >>> round(sustained_rate([(0.0, 0), (1.0, 0), (2.0, 500), (3.0, 1000)], 1000), 6)
    500.0
    """
    low, high = (_crossing(samples, share * total) for share in window)
    if high <= low:  # too few samples inside the window (a tiny run): fall back to first movement..end
        moving = [t for t, v in samples if v > 0]
        start = max((t for t, v in samples if v == 0), default=moving[0] - _POLL_S)
        return total / max(samples[-1][0] - start, 1e-3)
    return (window[1] - window[0]) * total / (high - low)


def _crossing(samples: Sequence[tuple[float, float]], level: float) -> float:
    for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
        if v0 < level <= v1:
            return t0 + (t1 - t0) * (level - v0) / (v1 - v0)
    return samples[-1][0]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; nan when empty.

    >>> percentile([5, 1, 4, 2, 3], 50), percentile(range(1, 101), 99)
    (3, 99)
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _progress(iterable: Sequence[Any], **kwargs: Any) -> Any:
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, **kwargs)


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="ev", disable=not sys.stderr.isatty(), leave=False)


# -- sections -------------------------------------------------------------------------------------

def ceilings(bench: Bench) -> list[Figure]:
    """(a) What the client, the producer and Faust alone can do with these events."""
    settings = bench.fresh_settings("ceil")
    produce = produce_backlog(bench, settings)
    raw = raw_consume_rate(settings, len(bench.events))
    noop = drain_rate(bench, bench.fresh_settings("noop", inputs=settings), "do-nothing Faust agent",
                      module=("agents.probes", "noop"))
    stock = drain_rate(bench, bench.fresh_settings("noop-stock", inputs=settings, inline_delivery=False),
                       "do-nothing Faust agent, stock consumer loop", module=("agents.probes", "noop"))
    return [
        Figure("raw_consume", raw, "ev/s", "aiokafka getmany, no processing"),
        Figure("produce", produce, "ev/s", "aiokafka producer, one event per message, acks=all"),
        Figure("noop_faust", noop, "ev/s", "Faust agent with the worker's settings, take_events, counts only"),
        Figure("noop_faust_stock", stock, "ev/s", "the same on Faust's own consumer loop (STREAM_REC_INLINE_DELIVERY=false)"),
        Figure("noop_faust_over_stock", noop / stock, "x", "what inline delivery (agents/transport.py) gains"),
    ]


def full_worker(bench: Bench) -> list[Figure]:
    """(b) The worker on single-event messages, sustained events/s, on both input paths.

    ``keyed``: producers key by user id and the worker applies straight from the input topics
    (``STREAM_REC_INPUT_KEYS=user_id``); ``rekey``: the two-agent path through the internal topic. Each
    runs with the real service and with a stand-in that does nothing (the Faust side's own ceiling).
    """
    inputs = bench.fresh_settings("full")
    produce_backlog(bench, inputs)
    rates: dict[str, float] = {}
    for path, keys in (("keyed", "user_id"), ("rekey", "any")):
        for kind, module in (("full", ("tools.cli", "worker")), ("stub", ("agents.probes", "stub"))):
            settings = bench.fresh_settings(f"{kind}-{path}", inputs=inputs, input_keys=keys)
            rates[f"{kind}_{path}"] = drain_rate(bench, settings, f"{kind} worker, {path}", module=module)
    stock = bench.fresh_settings("full-keyed-stock", inputs=inputs, input_keys="user_id", inline_delivery=False)
    rates["full_keyed_stock"] = drain_rate(bench, stock, "full worker, keyed, stock consumer loop")
    noop, raw = bench.figure("ceilings", "noop_faust"), bench.figure("ceilings", "raw_consume")
    return [
        Figure("full_keyed", rates["full_keyed"], "ev/s", "RecService, RocksDB state, lists sent; input keyed by user; target >= 20,000"),
        Figure("full_keyed_stock", rates["full_keyed_stock"], "ev/s", "full_keyed on Faust's own consumer loop"),
        Figure("full_rekey", rates["full_rekey"], "ev/s", "the same, re-keyed through the internal topic (any producer keys)"),
        Figure("stub_keyed", rates["stub_keyed"], "ev/s", "keyed path with a do-nothing service: the Faust side alone"),
        Figure("stub_rekey", rates["stub_rekey"], "ev/s", "re-key path with a do-nothing service"),
        Figure("full_keyed_over_noop_faust", rates["full_keyed"] / noop, "x", "target >= 0.8"),
        Figure("full_keyed_over_raw_consume", rates["full_keyed"] / raw, "x"),
        Figure("full_rekey_over_noop_faust", rates["full_rekey"] / noop, "x"),
        Figure("full_rekey_over_raw_consume", rates["full_rekey"] / raw, "x"),
        Figure("stub_keyed_over_noop_faust", rates["stub_keyed"] / noop, "x"),
        Figure("stub_rekey_over_noop_faust", rates["stub_rekey"] / noop, "x"),
    ]


def freshness(bench: Bench) -> list[Figure]:
    """(c) Produce-to-list latency at half the full worker's measured rate, keyed input path."""
    return _freshness(bench, "keyed", "user_id")


def freshness_rekey(bench: Bench) -> list[Figure]:
    """(c') The same for the re-key path, at half its own rate."""
    return _freshness(bench, "rekey", "any")


def _freshness(bench: Bench, path: str, input_keys: str) -> list[Figure]:
    """An event's freshness is the time from its produce (the bench stamps ``ts`` with the wall clock as it
    hands the event to its producer) to the moment a consumer of the recommendations topic receives the
    first list for that user whose ``trigger.ts`` is at or after the event's ``ts``: the first list that
    reflects it. Producer, consumer and clock are the bench's own, so no clocks are compared across hosts.
    """
    rate = bench.figure("full_worker", f"full_{path}") / 2
    settings = bench.fresh_settings(f"fresh-{path}", input_keys=input_keys)
    worker = WorkerProcess(settings, log_path=bench.workdir / f"{settings.app_id}.log").start()
    try:
        worker.wait_for(ASSIGNED, 1, timeout_s=120)
        count = max(1, int(rate * bench.config.freshness_s))
        events = list(_cycle(bench.events, count))
        latencies, unmatched, achieved = asyncio.run(_paced_round_trip(settings, events, rate))
    finally:
        worker.stop()
    return [
        Figure("target_rate", rate, "ev/s", f"half the full worker's rate ({path} path)"),
        Figure("achieved_rate", achieved, "ev/s"),
        Figure("p50", percentile(latencies, 50), "ms"),
        Figure("p95", percentile(latencies, 95), "ms"),
        Figure("p99", percentile(latencies, 99), "ms", "target <= 250"),
        Figure("events_measured", len(latencies), "events"),
        Figure("events_unmatched", unmatched, "events", "no list reflected them before the end"),
    ]


def _cycle(events: Sequence[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield events[n % len(events)]


async def _paced_round_trip(settings: Settings, events: Sequence[dict[str, Any]],
                            rate: float) -> tuple[list[float], int, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    # Each message as the bytes around its ts, so stamping it at send time costs no JSON encoding.
    heads = [(topic_for(e, settings), e["user_id"], json.dumps({k: v for k, v in e.items() if k not in ("ts", "event_id")})[:-1]
              .encode() + b',"ts":') for e in events]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=1,
                                **aiokafka_options(settings))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, fetch_max_wait_ms=5,
                                **aiokafka_options(settings))
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(settings.topic_recommendations, p) for p in range(settings.partitions)])
    await consumer.seek_to_beginning()
    pending: dict[str, deque[int]] = defaultdict(deque)  # user -> produce times (ms) not yet reflected
    latencies: list[float] = []
    done = asyncio.Event()

    async def receive() -> None:
        while not done.is_set() or any(pending.values()):
            for records in (await consumer.getmany(timeout_ms=20)).values():
                now_ms = time.time() * 1000
                for record in records:
                    rec = json.loads(record.value)
                    waiting = pending[rec["user_id"]]
                    while waiting and waiting[0] <= rec["trigger"]["ts"]:
                        latencies.append(now_ms - waiting.popleft())

    receiver = asyncio.create_task(receive())
    started = time.perf_counter()
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    with _bar(len(heads), "paced produce") as bar:
        for start in range(0, len(heads), per_tick):
            for topic, user, head in heads[start:start + per_tick]:
                ts = int(time.time() * 1000)
                pending[user].append(ts)
                await producer.send(topic, head + b"%d}" % ts, key=user.encode())
            bar.update(min(per_tick, len(heads) - start))
            await asyncio.sleep(max(0.0, started + (start + per_tick) / rate - time.perf_counter()))
    await producer.flush()
    achieved = len(heads) / (time.perf_counter() - started)
    done.set()
    try:
        await asyncio.wait_for(receiver, timeout=30)
    except asyncio.TimeoutError:
        pass
    await producer.stop()
    await consumer.stop()
    return latencies, sum(len(q) for q in pending.values()), achieved


def model_costs(bench: Bench) -> list[Figure]:
    """(d) Each model's update cost in micro-batches, and one user's fused top 20 by catalogue size."""
    from tools import bench_models

    if bench.config.quick:  # the 5k catalogue goes through the item clusters, so its figures exist too
        updates = bench_models.update_costs(5_000, 2_000, 1_000)
        tops = [bench_models.top20_latency(n, n_users=2_000, n_lists=30, index_above=4_000) for n in (1_000, 5_000)]
    else:
        updates = bench_models.update_costs()
        tops = [bench_models.top20_latency(n) for n in (10_000, 100_000, 1_000_000)]
    notes = {"mf_rank64_us": "target <= 5"}
    figures = [Figure(name, value, "us/event", notes.get(name, "learn_many, batches of 500, 100k users x 100k items"))
               for name, value in updates.items()]
    targets = {100_000: "target <= 1", 1_000_000: "target <= 0.5"}
    for top in tops:
        n = top["items"]
        how = "MF list from item clusters, candidates rescored exactly" if top["quantized"] else "full catalogue, exact"
        figures.append(Figure(f"top20_{n}_items_mean", top["mean_ms"], "ms", targets.get(n, how)))
        figures.append(Figure(f"top20_{n}_items_p99", top["p99_ms"], "ms", how))
        if top["quantized"]:
            figures.append(Figure(f"top20_{n}_items_exact_mean", top["exact_mean_ms"], "ms",
                                  "the same users, exact MF scan, after them"))
            figures.append(Figure(f"mf_recall_{n}_items", top["mf_recall"], "x",
                                  "share of the exact MF top 30 the item clusters return"))
    return figures


def memory(bench: Bench) -> list[Figure]:
    """(e) RSS and on-disk state after filling a service through ``apply``; restart-to-ready."""
    from tools import bench_models

    sizes = [(2_000, 1_000, 2)] if bench.config.quick else [(100_000, 100_000, 3), (1_000_000, 100_000, 3)]
    figures = []
    for users, items, per_user in sizes:
        m = bench_models.memory(users, items, per_user)
        tag = f"{users // 1000}k_users"
        big = users >= 1_000_000
        figures += [
            Figure(f"{tag}_rss_mb", m["fill_rss_mb"], "MB", "target <= 2048" if big else f"{items:,} items, {m['fill_events']:,} events"),
            Figure(f"{tag}_disk_mb", m["disk_mb"], "MB", "RocksDB folder"),
            Figure(f"{tag}_restart_to_ready_s", m["restart_to_ready_s"], "s", "target <= 30" if big else "load state, first list"),
            Figure(f"{tag}_reloaded_rss_mb", m["loaded_rss_mb"], "MB"),
        ]
    return figures


def threads_under_load(bench: Bench) -> list[Figure]:
    """(f) The fused ``stream-rec evaluate`` with ``--threads 2`` against ``--threads 1``, alternately,
    as it is and with :data:`BUSY_PROCESSES` CPU-bound processes running: a second thread must win where
    a core is free and never cost where none is (target >= 0.9x loaded).

    On MovieLens-100K (fetched once, see ``stream-rec evaluate --dataset``), on the bench's own events
    with ``--quick`` or where the dataset cannot be had. The rates are evaluate's own (learning and
    ranking, not start-up); the ratios are the median of each pair's, so a drifting machine cancels out.
    """
    source, data = _evaluate_input(bench)
    rounds = 1 if bench.config.quick else THREAD_ROUNDS
    _fused_rate(data, 2, bench.workdir)  # compiles the kernels (cached on disk) before anything is timed
    figures = []
    for load, busy in (("idle", 0), ("loaded", BUSY_PROCESSES)):
        with _busy_processes(busy):
            pairs = [(_fused_rate(data, 1, bench.workdir), _fused_rate(data, 2, bench.workdir))
                     for _ in _progress(range(rounds), desc=f"threads, {load}")]
        ones, twos = zip(*pairs)
        note = f"{source}, {busy} CPU-bound processes beside it" if busy else f"{source}, nothing added beside it"
        figures += [
            Figure(f"{load}_threads1", statistics.median(ones), "ev/s", note),
            Figure(f"{load}_threads2", statistics.median(twos), "ev/s", note),
            Figure(f"{load}_threads2_over_threads1", statistics.median([two / one for one, two in pairs]), "x",
                   "target >= 0.9" if busy else "what the second thread gains with a core to spare"),
        ]
    return figures


def _evaluate_input(bench: Bench) -> tuple[str, list[str]]:
    """What the threads section evaluates: a name and ``stream-rec evaluate``'s arguments for it."""
    if not bench.config.quick:
        from tools.evaluate import cache_dir, fetch_recbole_wheel

        try:
            fetch_recbole_wheel(cache_dir())
            return "MovieLens-100K", ["--dataset", "ml-100k"]
        except (OSError, UserError) as err:  # no network: pip fails
            log.warning("MovieLens-100K unavailable (%s): the threads section uses the bench's events", err)
    from stream_rec.synth import write_jsonl

    path = bench.workdir / "threads-events.jsonl"
    write_jsonl(bench.events, path)
    return f"{len(bench.events):,} generated events", [str(path)]


def _fused_rate(data: Sequence[str], threads: int, workdir: Path) -> float:
    """The fused model's events/s in one ``stream-rec evaluate`` process with ``threads`` threads."""
    report = workdir / "threads-report.json"
    done = subprocess.run([sys.executable, "-m", "tools.cli", "evaluate", *data, "--models", "fused", "--threads",
                           str(threads), "--json", str(report)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stream-rec evaluate --threads {threads} failed: {done.stderr[-2000:]}")
    return float(json.loads(report.read_text())["models"]["fused"]["events_per_s"])


@contextmanager
def _busy_processes(count: int) -> Iterator[None]:
    """``count`` processes that only burn CPU, for as long as the block runs."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()
def catalogue_scale(bench: Bench) -> list[Figure]:
    """(g) The fused evaluate and the full worker on shops of 5k, 100k and 1M items, side by side."""
    from tools import bench_catalogue

    return bench_catalogue.catalogue_scale(bench)


def serving(bench: Bench) -> list[Figure]:
    """(h) The read API, ``stream-rec serve``: latency at 1,000 requests/s and produce-to-readable freshness."""
    from tools import bench_serving

    return bench_serving.serving(bench)


#: The sections, in run order; each later one may read the figures of the earlier ones.
SECTIONS: dict[str, Section] = {
    "ceilings": ceilings,
    "full_worker": full_worker,
    "freshness": freshness,
    "freshness_rekey": freshness_rekey,
    "model_costs": model_costs,
    "memory": memory,
    "threads_under_load": threads_under_load,
    "catalogue_scale": catalogue_scale,
    "serving": serving,
}


# -- running and reporting ------------------------------------------------------------------------

def run_bench(config: BenchConfig, base: Settings, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``sections`` (all by default) and return the report (also what ``--json`` writes)."""
    with ExitStack() as stack:
        workdir = Path(config.workdir) if config.workdir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="stream-rec-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        bootstrap = config.bootstrap or base.kafka_bootstrap
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=str(workdir / "broker.log"))).bootstrap
        settings = replace(base, kafka_bootstrap=bootstrap, app_id=f"bench-{int(time.time())}", explore=0.0)
        shop = SyntheticShop(ShopConfig(n_users=config.users, n_items=config.items,
                                        n_categories=default_categories(config.items), n_events=config.events,
                                        seed=config.seed))
        bench = Bench(config, settings, workdir, list(shop.events()), base=base)
        for name in sections or SECTIONS:
            log.info("bench section %s", name)
            started = time.monotonic()
            bench.figures[name] = {f.name: f for f in SECTIONS[name](bench)}
            log.info("bench section %s took %.1f s", name, time.monotonic() - started)
        return _report(bench, bootstrap)


def _report(bench: Bench, bootstrap: str) -> dict[str, Any]:
    return {
        "config": asdict(bench.config),
        "bootstrap": bootstrap,
        "settings": {k: v for k, v in vars(bench.settings).items() if k in ("partitions", "batch_max", "batch_wait_ms")},
        "sections": {section: {name: asdict(f) for name, f in figures.items()} for section, figures in bench.figures.items()},
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, one figure a row."""
    rows = [("section", "figure", "value", "unit", "note")]
    for section, figures in report["sections"].items():
        for f in figures.values():
            value = f["value"]
            shown = "nan" if isinstance(value, float) and math.isnan(value) else _shown(value, f["unit"])
            rows.append((section, f["name"], shown, f["unit"], f["note"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3].ljust(widths[3]), r[4]]).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _shown(value: float, unit: str) -> str:
    """Two decimals for ratios and small values (three for ratios under 0.1), none for large values.

    >>> _shown(0.0234, "x"), _shown(0.59, "x"), _shown(43.74, "%"), _shown(15633.2, "ev/s")
    ('0.023', '0.59', '43.74', '15,633')
    """
    if unit == "x" and abs(value) < 0.1:
        return f"{value:,.3f}"
    return f"{value:,.2f}" if unit == "x" or abs(value) < 100 else f"{value:,.0f}"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure throughput ceilings, the worker's rate and freshness in one run, "
                                     "and how they hold up as the catalogue grows")
    p.add_argument("--events", type=int, default=BenchConfig.events, help="events per throughput run (default: %(default)s)")
    p.add_argument("--users", type=int, default=BenchConfig.users, help="users (default: %(default)s)")
    p.add_argument("--items", type=int, default=BenchConfig.items, help="items (default: %(default)s)")
    p.add_argument("--seed", type=whole(0), default=BenchConfig.seed, help="random seed (default: %(default)s)")
    p.add_argument("--freshness-s", type=float, default=BenchConfig.freshness_s,
                   help="seconds of paced traffic for the freshness section (default: %(default)s)")
    p.add_argument("--catalogues", type=whole_list(1), default=BenchConfig.catalogues, metavar="N[,N...]",
                   help="catalogue sizes of the catalogue_scale section, each rate compared with the first size's "
                        f"(default: {','.join(map(str, BenchConfig.catalogues))})")
    p.add_argument("--catalogue-events", type=whole(1), default=BenchConfig.catalogue_events,
                   help="events of each of its shops, all evaluated (default: %(default)s)")
    p.add_argument("--catalogue-worker-events", type=whole(1), default=BenchConfig.catalogue_worker_events,
                   help="the first N events of each shop, drained by its full worker (default: %(default)s)")
    p.add_argument("--catalogue-exponent", type=finite(positive=False), default=BenchConfig.catalogue_exponent,
                   help="popularity exponent of its shops, see stream-rec generate --popularity-exponent "
                        "(default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=f"a tiny run that shows every figure ({QUICK}); overrides sizes")
    p.add_argument("--bootstrap", help="an existing broker instead of the embedded one (overrides STREAM_REC_KAFKA_BOOTSTRAP)")
    p.add_argument("--sections", help=f"comma-separated subset of: {', '.join(SECTIONS)} (default: all; later ones need earlier ones)")
    p.add_argument("--json", type=output_file(), metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--workdir", type=output_folder, help="keep worker logs and state here (default: a temporary folder)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: Any) -> int:
    sizes = QUICK if args.quick else {"events": args.events, "users": args.users, "items": args.items,
                                      "freshness_s": args.freshness_s, "catalogues": args.catalogues,
                                      "catalogue_events": args.catalogue_events,
                                      "catalogue_worker_events": args.catalogue_worker_events}
    config = BenchConfig(seed=args.seed, bootstrap=args.bootstrap or "", workdir=args.workdir or "", quick=args.quick,
                         catalogue_exponent=args.catalogue_exponent, **sizes)
    sections = args.sections.split(",") if args.sections else None
    unknown = set(sections or ()) - set(SECTIONS)
    if unknown:
        raise UserError(f"unknown section(s) {', '.join(sorted(unknown))}; --sections takes: {', '.join(SECTIONS)}", code=2)
    report = run_bench(config, Settings.from_env(), sections)
    print(format_table(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
        log.info("wrote %s", args.json)
    return 0
