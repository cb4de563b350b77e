"""``stream-rec replay PATH...``: a recorded event log into the input topics, as fast as possible or paced.

The log is read with :func:`stream_rec.logs.read_log` (native JSONL, or CSV/JSONL of another shape via
``--preset`` / ``--map`` / ``--types``), validated exactly as a worker validates, sorted by timestamp, and
every valid event is sent to its stream's topic, keyed by user id. Invalid lines are counted and the first
few reported; they are not sent. The summary on stdout says how many events the broker acknowledged;
the exit code is 0 only when that is every one sent.

Pacing is cheap: an event's due time follows from its position (``--rate``) or its timestamp
(``--speed``); the clock is read only when an event is due later than the last reading, and the replay
sleeps only when it is ahead of schedule, letting events due within the next few milliseconds go out
as one burst.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.topics import reachable
from tools.logargs import add_log_format_arguments, log_format
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
DESCRIPTION = """\
Send a recorded event log to stream_rec's input topics: each valid event to its stream's topic
(STREAM_REC_TOPIC_BROWSE / _CLICK / _PURCHASE), keyed by user id, in timestamp order. Lines are
validated as a worker validates them; invalid ones are counted, the first few listed, and not sent.
Prints a summary; exits 0 only when the broker acknowledged every valid event.

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
    p.add_argument("paths", nargs="+", metavar="PATH", help="log files (.gz or not), read in this order")

    add_log_format_arguments(p)
    fmt = p.add_argument_group("reading")
    fmt.add_argument("--no-sort", action="store_true", help="the log is already in time order: stream it instead "
                     "of reading it all into memory to sort it (default: sort, stable)")

    pace = p.add_argument_group("pacing (default: as fast as possible)").add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive_float, metavar="FACTOR", help="keep the log's gaps between events, "
                      "played FACTOR times faster (1 = real time, 60 = an hour per minute)")
    pace.add_argument("--rate", type=_positive_float, metavar="N", help="a fixed N events per second")

    sel = p.add_argument_group("selection")
    sel.add_argument("--skip", type=_non_negative_int, default=0, metavar="N", help="skip the first N valid events (default: 0)")
    sel.add_argument("--limit", type=_non_negative_int, metavar="N", help="send at most N events (default: all)")

    ts = p.add_argument_group("timestamps").add_mutually_exclusive_group()
    ts.add_argument("--keep-ts", dest="rewrite_ts", action="store_false", help="send the log's timestamps (default)")
    ts.add_argument("--rewrite-ts", dest="rewrite_ts", action="store_true", help="shift timestamps so the first event "
                    "is now, keeping the gaps (divided by --speed if given)")
    p.set_defaults(rewrite_ts=False)

    out = p.add_argument_group("output")
    out.add_argument("--bootstrap", help="Kafka bootstrap servers (default: STREAM_REC_KAFKA_BOOTSTRAP, else "
                     f"{DEFAULT_BOOTSTRAP}, where `stream-rec broker` listens); topics from STREAM_REC_TOPIC_*")
    out.add_argument("--no-key", action="store_true", help="send without a key (default: keyed by user id)")
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``stream-rec replay ARGS`` through the one command-line entry point (``argv``: the ARGS)."""
    from tools.cli import main as cli_main

    return cli_main(["replay", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    try:
        fmt = log_format(args)
        lines = read_log(args.paths, fmt, limit=None if args.limit is None else args.skip + args.limit,
                         sort=not args.no_sort)
    except (ValueError, FileNotFoundError) as err:
        print(f"stream-rec replay: {err}", file=sys.stderr)
        return 2
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
        send(events, settings, bootstrap, report, total=total, speed=args.speed, rate=args.rate,
             rewrite_ts=args.rewrite_ts, key_by_user=not args.no_key)
    except KeyboardInterrupt:
        report.interrupted = True
    print(report.format(), flush=True)
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
    limit: int | None = None
    error: str | None = None
    first_invalid: list[str] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_invalid(self, line: LogLine) -> None:
        self.invalid += 1
        if len(self.first_invalid) < SHOW_INVALID:
            assert line.error is not None
            self.first_invalid.append(f"{line.path}:{line.line_no}: {line.error.reason} - {line.error}")

    def acked(self, _metadata: Any) -> None:  # called by the producer's I/O thread
        with self._lock:
            self.delivered += 1

    def not_acked(self, exc: BaseException) -> None:
        with self._lock:
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
            f"  events/s     {rate:.0f}",
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

    def wait(self, n: int, ts_ms: int) -> None:
        if self.speed is None and self.rate is None:
            return
        if n == 0:
            self.start = self.horizon = time.monotonic()
            self.first_ts = ts_ms
            return
        due = self.start + (n / self.rate if self.rate else (ts_ms - self.first_ts) / 1000 / self.speed)  # type: ignore[operator]
        if due <= self.horizon:
            return  # already past it at the last look at the clock
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        self.horizon = now + BURST_S


def send(events: Iterable[Event], settings: Settings, bootstrap: str, report: ReplayReport, *, total: int | None = None,
         speed: float | None = None, rate: float | None = None, rewrite_ts: bool = False, key_by_user: bool = True) -> None:
    """Send ``events`` to their streams' topics, paced, counting acknowledgements in ``report``."""
    topics = {etype: settings.input_topics()[stream_of(etype)] for etype in EVENT_TYPES}
    producer = _connect(bootstrap, set(topics.values()), report)
    if producer is None:
        return
    pacer = Pacer(speed=speed, rate=rate)
    shift = TimeShift(speed or 1.0, settings.max_future_ms) if rewrite_ts else None
    bar = _progress(None, total=total, desc="replay", unit="ev")
    started = time.monotonic()
    try:
        for n, event in enumerate(events):
            pacer.wait(n, event.ts_ms)
            record = event_record(event, ts_ms=shift(event.ts_ms) if shift else None)
            _send_one(producer, topics[event.type], event.user_id.encode() if key_by_user else None,
                      json.dumps(record, separators=(",", ":")).encode(), report)
            if report.produced % PROGRESS_STEP == 0:
                bar.update(PROGRESS_STEP)
    finally:
        producer.flush()
        producer.close(timeout=10)
        report.send_s = time.monotonic() - started
        bar.update(report.produced % PROGRESS_STEP)
        bar.close()


def _send_one(producer: Any, topic: str, key: bytes | None, value: bytes, report: ReplayReport) -> None:
    from kafka.errors import KafkaError

    report.produced += 1
    try:
        future = producer.send(topic, key=key, value=value)
    except KafkaError as err:
        report.not_acked(err)
        return
    future.add_callback(report.acked).add_errback(report.not_acked)


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


def _connect(bootstrap: str, topics: set[str], report: ReplayReport) -> Any:
    """A producer with the topics' metadata fetched, or ``None`` (and ``report.error``) when Kafka is out of reach."""
    from kafka.errors import KafkaError

    from tools.produce import make_producer

    if not reachable(bootstrap):
        report.error = f"cannot reach Kafka at {bootstrap} (is `stream-rec broker` running? see --bootstrap)"
        return None
    try:
        producer = make_producer(bootstrap)
    except KafkaError as err:
        report.error = f"cannot connect to Kafka at {bootstrap}: {err}"
        return None
    _warm_up(producer, topics)
    return producer


def _warm_up(producer: Any, topics: set[str]) -> None:
    """Fetch the topics' metadata before the clock starts: a first send would otherwise wait for it mid-pacing."""
    from kafka.errors import KafkaError

    for topic in sorted(topics):
        try:
            producer.partitions_for(topic)
        except KafkaError as err:  # the sends to it will fail and be counted; say why now
            log.warning("no metadata for topic %s: %s", topic, err)


def _warn_if_future(ts_ms: int, max_future_ms: int) -> bool:
    if ts_ms - time.time() * 1000 <= max_future_ms:
        return False
    log.warning("rewritten timestamps run ahead of the clock by more than STREAM_REC_MAX_FUTURE_MS: workers will "
                "dead-letter those events (future_ts); pace the replay with --speed to keep them in step")
    return True


def _progress(iterable: Iterable[Any] | None, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), mininterval=0.5, **kwargs)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
