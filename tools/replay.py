"""``stream-rec replay PATH...``: a recorded event log into the input topics, as fast as possible or paced.

The log is read with :func:`stream_rec.logs.read_log` (native JSONL, or CSV/JSONL of another shape via
``--preset`` / ``--map`` / ``--types``), validated exactly as a worker validates, sorted by timestamp, and
every valid event is sent to its stream's topic, keyed by user id. Invalid lines are counted and the first
few reported; they are not sent. The summary on stdout says how many events the broker acknowledged;
the exit code is 0 only when that is every one sent. A log with no valid event at all fails, with one line
that says why (its lines read, their reasons, its columns against the expected ones).

Pacing is cheap: an event's due time follows from its position (``--rate``) or its timestamp
(``--speed``); the clock is read only when an event is due later than the last reading, and the replay
sleeps only when it is ahead of schedule, letting events due within the next few milliseconds go out
as one burst.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.security import aiokafka_options
from agents.topics import broker_problem
from tools.argtypes import finite, input_file, whole
from tools.command import UserError, unreachable
from tools.logargs import add_log_format_arguments, log_format, no_events
from stream_rec.events import EVENT_TYPES, Event, stream_of
from stream_rec.logs import LogLine, event_record, read_log
from stream_rec.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Invalid lines listed in the summary; the rest are only counted.
SHOW_INVALID = 10
#: Events due within this many seconds of the last clock reading go out without another look at the clock.
BURST_S = 0.01
#: The progress bar is advanced in steps of this many events (tqdm per event would cost more than a send).
PROGRESS_STEP = 100
#: Deliveries are counted this many messages at a time (bounds the futures held).
SETTLE_EVERY = 10_000
#: Where ``--ceiling`` sends its copy of the messages: never an input topic, so no worker sees them.
CEILING_TOPIC = "stream-rec.replay-ceiling"
DESCRIPTION = """\
Send a recorded event log to stream_rec's input topics: each valid event to its stream's topic
(STREAM_REC_TOPIC_BROWSE / _CLICK / _PURCHASE), keyed by user id, in timestamp order. Lines are
validated as a worker validates them; invalid ones are counted, the first few listed, and not sent.
Prints a summary; exits 0 only when the broker acknowledged every valid event (and fails when the
log holds none).

examples:
  stream-rec replay shop.jsonl.gz
  stream-rec replay --preset movielens --rewrite-ts --speed 3600 u.data
  stream-rec replay --map user_id=visitorid,item_id=itemid,type=event,ts=timestamp \\
                    --types addtocart=add_to_cart,transaction=purchase --rate 500 events.csv"""


def add_parser(subparsers: Any) -> None:
    """Register ``replay`` on the ``stream-rec`` command's subparsers."""
    p = subparsers.add_parser(
        "replay", help="send a recorded event log (JSONL, CSV, public data sets) to the input topics",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=input_file, metavar="PATH", help="log files (.gz or not), read in this order")

    add_log_format_arguments(p)
    fmt = p.add_argument_group("reading")
    fmt.add_argument("--no-sort", action="store_true", help="the log is already in time order: stream it instead "
                     "of reading it all into memory to sort it (default: sort, stable)")

    pace = p.add_argument_group("pacing (default: as fast as possible)").add_mutually_exclusive_group()
    pace.add_argument("--speed", type=finite(positive=True), metavar="FACTOR", help="keep the log's gaps between events, "
                      "played FACTOR times faster (1 = real time, 60 = an hour per minute)")
    pace.add_argument("--rate", type=finite(positive=True), metavar="N", help="a fixed N events per second")

    sel = p.add_argument_group("selection")
    sel.add_argument("--skip", type=whole(0), default=0, metavar="N", help="skip the first N valid events (default: 0)")
    sel.add_argument("--limit", type=whole(0), metavar="N", help="send at most N events (default: all)")

    ts = p.add_argument_group("timestamps").add_mutually_exclusive_group()
    ts.add_argument("--keep-ts", dest="rewrite_ts", action="store_false", help="send the log's timestamps (default)")
    ts.add_argument("--rewrite-ts", dest="rewrite_ts", action="store_true", help="shift timestamps so the first event "
                    "is now, keeping the gaps (divided by --speed if given)")
    p.set_defaults(rewrite_ts=False)

    out = p.add_argument_group("output")
    out.add_argument("--bootstrap", help="Kafka bootstrap servers (default: STREAM_REC_KAFKA_BOOTSTRAP, else "
                     f"{DEFAULT_BOOTSTRAP}, where `stream-rec broker` listens); topics from STREAM_REC_TOPIC_*")
    out.add_argument("--no-key", action="store_true", help="send without a key (default: keyed by user id)")
    out.add_argument("--ceiling", type=whole(0), default=0, metavar="N",
                     help=f"first time the bare producer on N of the same messages, already encoded, sent to the "
                          f"scratch topic {CEILING_TOPIC} (never an input topic), and print the replay's rate against "
                          f"it (default: 0, off)")
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``stream-rec replay ARGS`` through the one command-line entry point (``argv``: the ARGS)."""
    from tools.cli import main as cli_main

    return cli_main(["replay", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    fmt = log_format(args)
    lines = read_log(args.paths, fmt, limit=None if args.limit is None else args.skip + args.limit,
                     sort=not args.no_sort)
    settings = Settings.from_env()
    bootstrap = args.bootstrap or settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    report = ReplayReport(limit=args.limit)
    events: Iterable[Event] = _valid_events(lines, report, args.skip)
    total = args.limit
    try:
        if not args.no_sort:  # read_log holds the sorted log anyway; reading it up front gives the bar a total
            started = time.monotonic()
            events = list(_progress(events, desc="read", unit="ev"))
            report.read_s, total = time.monotonic() - started, len(events)
            if not report.valid:  # before the broker is asked anything
                raise UserError(no_events(args.paths, fmt, report.reasons, report.first))
        send(events, settings, bootstrap, report, total=total, speed=args.speed, rate=args.rate,
             rewrite_ts=args.rewrite_ts, key_by_user=not args.no_key, ceiling=args.ceiling)
    except KeyboardInterrupt:
        report.interrupted = True
    print(report.format(), flush=True)
    if not report.valid and not report.interrupted and report.error is None:  # --no-sort reads as it sends
        raise UserError(no_events(args.paths, fmt, report.reasons, report.first))
    return 0 if report.complete else 1


@dataclass
class ReplayReport:
    """What a replay read and sent; :meth:`format` is the summary it prints."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    skipped: int = 0
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    read_s: float = 0.0
    send_s: float = 0.0
    interrupted: bool = False
    ceiling_rate: float | None = None
    limit: int | None = None
    error: str | None = None
    first_invalid: list[str] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # invalid lines per reason
    first: str | None = None  # the first invalid line, as path:line: why

    def add_invalid(self, line: LogLine) -> None:
        assert line.error is not None
        self.invalid += 1
        self.reasons[line.error.reason] += 1
        self.first = self.first or f"{line.path}:{line.line_no}: {line.error}"
        if len(self.first_invalid) < SHOW_INVALID:
            self.first_invalid.append(f"{line.path}:{line.line_no}: {line.error.reason} - {line.error}")

    def acked(self, _metadata: Any) -> None:
        self.delivered += 1

    def not_acked(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.first_errors) < SHOW_INVALID:
            self.first_errors.append(f"{type(exc).__name__}: {exc}")

    @property
    def complete(self) -> bool:
        """Every valid event selected was sent and acknowledged."""
        return (not self.interrupted and self.error is None and self.failed == 0
                and self.delivered == self.produced == self.valid - self.skipped)

    def _selection(self) -> str:
        notes = [f"{self.skipped} skipped"] if self.skipped else []
        if self.limit is not None and self.valid - self.skipped >= self.limit:
            notes.append("stopped at --limit")
        return f" ({', '.join(notes)})" if notes else ""

    def format(self) -> str:
        rate = self.delivered / self.send_s if self.send_s > 0 else 0.0
        rows = [
            "replay summary" + (" (interrupted)" if self.interrupted else ""),
            f"  lines read   {self.lines}",
            f"  valid        {self.valid}" + self._selection(),
            f"  invalid      {self.invalid}" + (" (not sent)" if self.invalid else ""),
            *(f"    {text}" for text in self.first_invalid),
            *([f"    ... and {self.invalid - len(self.first_invalid)} more"] if self.invalid > len(self.first_invalid) else []),
            f"  produced     {self.produced}",
            f"  delivered    {self.delivered}" + (" (all acknowledged)" if self.complete else
                                                   f" (NOT ALL: {self.valid - self.skipped - self.delivered} of "
                                                   f"{self.valid - self.skipped} not delivered)"),
            *(f"    {text}" for text in self.first_errors),
            *([f"  error        {self.error}"] if self.error else []),
            f"  elapsed      {self.read_s + self.send_s:.2f} s (read {self.read_s:.2f} s, send {self.send_s:.2f} s)",
            f"  events/s     {rate:.0f}" + (f" (producer ceiling in this run: {self.ceiling_rate:.0f} messages/s, the "
                                               f"replay {rate / self.ceiling_rate:.2f}x of it)"
                                               if self.ceiling_rate else ""),
        ]
        return "\n".join(rows)


def _valid_events(lines: Iterable[LogLine], report: ReplayReport, skip: int) -> Iterator[Event]:
    for line in lines:
        report.lines += 1
        if line.event is None:
            report.add_invalid(line)
            continue
        report.valid += 1
        if report.skipped < skip:
            report.skipped += 1
            continue
        yield line.event


class Pacer:
    """Holds each event back until it is due; reads the clock only when an event may be early.

    ``rate``: event ``n`` is due ``n / rate`` s after the first. ``speed``: an event stamped ``ts`` is due
    ``(ts - first ts) / speed`` ms after the first. Neither: every event is due at once.
    """

    def __init__(self, *, speed: float | None = None, rate: float | None = None) -> None:
        self.speed, self.rate = speed, rate
        self.start = self.horizon = 0.0
        self.first_ts = 0

    def delay(self, n: int, ts_ms: int) -> float:
        """Seconds to wait before event ``n`` (stamped ``ts_ms``) goes out; 0 when it is due."""
        if self.speed is None and self.rate is None:
            return 0.0
        if n == 0:
            self.start = self.horizon = time.monotonic()
            self.first_ts = ts_ms
            return 0.0
        due = self.start + (n / self.rate if self.rate else (ts_ms - self.first_ts) / 1000 / self.speed)  # type: ignore[operator]
        if due <= self.horizon:
            return 0.0  # already past it at the last look at the clock
        now = time.monotonic()
        self.horizon = max(now, due) + BURST_S
        return max(0.0, due - now)


def send(events: Iterable[Event], settings: Settings, bootstrap: str, report: ReplayReport, *, total: int | None = None,
         speed: float | None = None, rate: float | None = None, rewrite_ts: bool = False, key_by_user: bool = True,
         ceiling: int = 0) -> None:
    """Send ``events`` to their streams' topics, paced, counting acknowledgements in ``report``.

    ``ceiling > 0``: first time the bare producer on that many of the same messages, already encoded,
    sent to :data:`CEILING_TOPIC` (``report.ceiling_rate``): what the client manages with no log work.
    """
    report.error = broker_problem(settings, bootstrap, unreachable=unreachable(bootstrap))
    if report.error:
        return
    asyncio.run(_send(events, settings, bootstrap, report, total=total, speed=speed, rate=rate,
                      rewrite_ts=rewrite_ts, key_by_user=key_by_user, ceiling=ceiling))


async def _send(events: Iterable[Event], settings: Settings, bootstrap: str, report: ReplayReport, *,
                total: int | None, speed: float | None, rate: float | None, rewrite_ts: bool, key_by_user: bool,
                ceiling: int) -> None:
    from aiokafka.errors import KafkaError

    topics = {etype: settings.input_topics()[stream_of(etype)] for etype in EVENT_TYPES}
    producer = _producer(settings, bootstrap)
    try:
        await producer.start()
    except KafkaError as err:
        report.error = f"cannot connect to Kafka at {bootstrap}: {err}"
        return
    try:
        for topic in sorted(set(topics.values())):  # metadata before the clock starts
            await producer.partitions_for(topic)
        if ceiling:
            events = list(events)
            report.ceiling_rate = await _ceiling(producer, events[:ceiling], key_by_user)
        await _replay(producer, events, topics, report, total=total, speed=speed, rate=rate, rewrite_ts=rewrite_ts,
                      key_by_user=key_by_user, max_future_ms=settings.max_future_ms)
    finally:
        await producer.stop()


def _producer(settings: Settings, bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    # acks=all: a shop's events must not be lost; linger and large batches: throughput. aiokafka, not
    # kafka-python: 55-62k vs 18k messages/s measured here, one message per event.
    return AIOKafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5,
                            max_batch_size=256 * 1024, request_timeout_ms=30_000, **aiokafka_options(settings))


def _encode(event: Event, ts_ms: int | None, key_by_user: bool) -> tuple[bytes | None, bytes]:
    record = event_record(event, ts_ms=ts_ms)
    return (event.user_id.encode() if key_by_user else None), orjson.dumps(record)


async def _replay(producer: Any, events: Iterable[Event], topics: dict[str, str], report: ReplayReport, *,
                  total: int | None, speed: float | None, rate: float | None, rewrite_ts: bool, key_by_user: bool,
                  max_future_ms: int) -> None:
    from aiokafka.errors import KafkaError

    pacer = Pacer(speed=speed, rate=rate)
    shift = TimeShift(speed or 1.0, max_future_ms) if rewrite_ts else None
    bar = _progress(None, total=total, desc="replay", unit="ev")
    pending: list[asyncio.Future[Any]] = []
    started = time.monotonic()
    try:
        for n, event in enumerate(events):
            wait = pacer.delay(n, event.ts_ms)
            if wait > 0:
                await asyncio.sleep(wait)
            key, value = _encode(event, shift(event.ts_ms) if shift else None, key_by_user)
            report.produced += 1
            try:
                pending.append(await producer.send(topics[event.type], value=value, key=key))
            except KafkaError as err:  # refused before it left (too large, ...): counted, not fatal
                report.not_acked(err)
            if len(pending) >= SETTLE_EVERY:
                await _settle(pending, report)
            if report.produced % PROGRESS_STEP == 0:
                bar.update(PROGRESS_STEP)
    except asyncio.CancelledError:
        report.interrupted = True
    finally:
        await producer.flush()
        await _settle(pending, report)
        report.send_s = time.monotonic() - started
        bar.update(report.produced % PROGRESS_STEP)
        bar.close()


async def _settle(pending: list[asyncio.Future[Any]], report: ReplayReport) -> None:
    """Wait for the delivery of every pending message and count it; empties ``pending``."""
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        if isinstance(outcome, BaseException):
            report.not_acked(outcome)
        else:
            report.acked(outcome)
    pending.clear()


async def _ceiling(producer: Any, events: list[Event], key_by_user: bool) -> float:
    """Messages per second of the bare producer loop on ``events``, encoded beforehand, to
    :data:`CEILING_TOPIC`: the same client, settings and message sizes as the replay, none of its work."""
    messages = [_encode(e, None, key_by_user) for e in events]
    if not messages:
        return 0.0
    await producer.partitions_for(CEILING_TOPIC)
    started = time.monotonic()
    pending = [await producer.send(CEILING_TOPIC, value=value, key=key) for key, value in messages]
    await producer.flush()
    await asyncio.gather(*pending)
    return len(messages) / (time.monotonic() - started)


class TimeShift:
    """Restamps the log onto now: the first event is stamped now, the gaps divided by ``speed``."""

    def __init__(self, speed: float, max_future_ms: int) -> None:
        self.speed, self.max_future_ms = speed, max_future_ms
        self.first_ts: int | None = None
        self.base_ms = 0
        self.warned = False

    def __call__(self, ts_ms: int) -> int:
        if self.first_ts is None:
            self.first_ts, self.base_ms = ts_ms, int(time.time() * 1000)
        ts = self.base_ms + round((ts_ms - self.first_ts) / self.speed)
        if not self.warned and ts - self.base_ms > self.max_future_ms:
            self.warned = _warn_if_future(ts, self.max_future_ms)
        return ts


def _warn_if_future(ts_ms: int, max_future_ms: int) -> bool:
    if ts_ms - time.time() * 1000 <= max_future_ms:
        return False
    log.warning("rewritten timestamps run ahead of the clock by more than STREAM_REC_MAX_FUTURE_MS: workers will "
                "dead-letter those events (future_ts); pace the replay with --speed to keep them in step")
    return True


def _progress(iterable: Iterable[Any] | None, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), mininterval=0.5, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
