"""``stream-rec``: one command, one subcommand per job. ``stream-rec SUBCOMMAND --help`` tells more."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

# One thread unless asked for more, OpenBLAS's included (it reads this once, when numpy loads): its
# worker threads took a second core in `evaluate --threads 1` wherever matrix factorisation scored a
# whole catalogue of 16k+ items, and collapsed when other processes wanted the cores (73 s against
# 300+ s for one evaluation). Set OPENBLAS_NUM_THREADS to give it more.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stream_rec.extras import MissingExtra  # noqa: E402 (after the line above)
from stream_rec.logsetup import setup_logging  # noqa: E402
from stream_rec.settings import Settings, settings_table  # noqa: E402
from stream_rec.synth import ShopConfig
from tools import bench, chaos, evaluate, replay, tail
from tools.argtypes import finite, output_file, whole
from tools.command import CommandParser, UserError

log = logging.getLogger("stream_rec")


def _settings_epilog() -> str:
    lines = ["configuration (environment variable, default, meaning):"]
    for env, default, meaning in settings_table():
        lines.append(f"  {env} [{default}]\n      {meaning}")
    return "\n".join(lines)


def _cmd_broker(args: argparse.Namespace) -> int:
    from tools.broker import EmbeddedBroker, PortInUse

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the broker the way Ctrl-C does, child process included

    broker = EmbeddedBroker(args.port)
    # Everything after the handler is installed runs inside the try: a SIGTERM that lands anywhere
    # (even between the banner and the wait, as a fast supervisor's can) still stops the child.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        broker.start()
        print(f"embedded broker on {broker.bootstrap} (memory only; Ctrl-C or SIGTERM stops it)", flush=True)
        return broker.wait()
    except PortInUse as err:
        raise UserError(f"{err} (a broker running already?): choose another --port") from None
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        broker.stop()


def _cmd_worker(args: argparse.Namespace) -> int:
    from agents.topics import BrokerUnreachable
    from agents.worker import run_worker
    from stream_rec.state import StoreLockedError
    from tools.broker import port_taken

    overrides = {name: value for name, value in (("worker_id", args.worker_id), ("data_dir", args.data_dir),
                                                  ("kafka_bootstrap", args.bootstrap)) if value is not None}
    settings = Settings.from_env(**overrides)
    # Before the broker is asked anything: a second worker on a host finds its port taken at once.
    if settings.metrics_port and port_taken(settings.metrics_port, host=settings.metrics_host):
        raise UserError(f"the metrics port {settings.metrics_port} is in use by another process (a worker running "
                        "already on this host?): give this worker another STREAM_REC_METRICS_PORT (0: no endpoint)")
    try:
        return run_worker(settings)
    except BrokerUnreachable as err:
        raise UserError(str(err)) from None
    except StoreLockedError:
        raise UserError(f"the state folder {settings.state_path} is in use by another process (a worker with the "
                        f"same id {settings.worker_id!r} on this host?): give each worker its own "
                        "STREAM_REC_WORKER_ID") from None
    except OSError as err:  # whichever server of the worker found its port taken after the check above
        if err.errno != errno.EADDRINUSE:
            raise
        raise UserError(f"a port this worker listens on is in use by another process ({err.strerror}; a worker "
                        "running already on this host?): give each worker its own STREAM_REC_METRICS_PORT") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from agents.serve import ServeError, run_serve
    from agents.topics import BrokerUnreachable

    overrides = {name: value for name, value in (("serve_port", args.port), ("serve_host", args.host),
                                                  ("data_dir", args.data_dir), ("kafka_bootstrap", args.bootstrap))
                 if value is not None}
    try:
        return run_serve(Settings.from_env(**overrides))
    except (BrokerUnreachable, ServeError) as err:
        raise UserError(str(err)) from None


def _cmd_generate(args: argparse.Namespace) -> int:
    from stream_rec.synth import SyntheticShop, default_categories, write_jsonl

    categories = args.categories if args.categories is not None else default_categories(args.items)
    if categories > args.items:
        raise UserError(f"--categories ({categories}) must not exceed --items ({args.items})", code=2)
    try:
        config = ShopConfig(n_users=args.users, n_items=args.items, n_categories=categories, n_events=args.events,
                            popularity_exponent=args.popularity_exponent, seed=args.seed, days=args.days)
    except ValueError as err:  # the flags are checked one by one; this is a rule between them that was missed
        raise UserError(_flag_names(str(err)), code=2) from None
    log.info("building a shop of %d items in %d categories, %d users", args.items, categories, args.users)
    shop = SyntheticShop(config)
    events = _progress(shop.events(), total=args.events, desc="generate", unit="ev")
    if args.out == "-":
        for event in events:
            sys.stdout.write(json.dumps(event) + "\n")
        count = args.events
    else:
        count = write_jsonl(events, args.out)
    log.info("wrote %d events to %s", count, args.out)
    return 0


#: ShopConfig's fields that a flag of ``generate`` sets: its errors name the flag, not the field.
_SHOP_FLAGS = {"n_users": "--users", "n_items": "--items", "n_categories": "--categories", "n_events": "--events",
               "popularity_exponent": "--popularity-exponent", "days": "--days", "seed": "--seed"}


def _flag_names(message: str) -> str:
    """A :class:`ShopConfig` error in the words of ``generate``'s flags.

    >>> _flag_names("ShopConfig.n_categories (9) must not exceed n_items (5)")
    '--categories (9) must not exceed --items (5)'
    """
    fields = "|".join(_SHOP_FLAGS)
    return re.sub(rf"(?:ShopConfig\.)?\b({fields})\b", lambda m: _SHOP_FLAGS[m[1]], message).replace("ShopConfig.", "")


def _cmd_state(args: argparse.Namespace) -> int:
    from stream_rec.service import RecService
    from stream_rec.state import RocksStore, StateError, StoreLockedError

    settings = Settings.from_env(**{k: v for k, v in (("worker_id", args.worker_id), ("data_dir", args.data_dir)) if v})
    if not settings.state_path.is_dir():
        raise UserError(f"no state at {settings.state_path}")
    try:
        store = RocksStore(settings.state_path)
        try:
            service = RecService(settings, store)  # loading reads every row: a damaged block raises here
            # What became of the published lists, per A/B variant (stream_rec.outcomes).
            stats = service.stats() | {"variants": service.outcomes.summary()}
        finally:
            store.close()
    except StoreLockedError:
        raise UserError(f"the state in {settings.state_path} is in use by another process, a worker running on it: "
                        "stop that worker first (state reads a stopped worker's state)") from None
    except StateError as err:  # corrupt, another format version, or a disk that refuses writes
        raise UserError(str(err)) from None
    print(json.dumps(stats))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo

    return run_demo(Settings.from_env(), n_events=args.events, n_users=args.users, n_items=args.items, seed=args.seed)


def _progress(iterable, **kwargs):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = CommandParser(prog="stream-rec", description=__doc__, epilog=_settings_epilog(), formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) on loopback")
    p.add_argument("--port", type=int, default=9092, help="port to listen on (default: %(default)s)")
    p.set_defaults(func=_cmd_broker)

    p = sub.add_parser("worker", help="run a stream worker", epilog=_settings_epilog(), formatter_class=fmt)
    p.add_argument("--worker-id", help="overrides STREAM_REC_WORKER_ID")
    p.add_argument("--data-dir", help="overrides STREAM_REC_DATA_DIR")
    p.add_argument("--bootstrap", help="overrides STREAM_REC_KAFKA_BOOTSTRAP")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("serve", help="answer GET /users/{user_id}/recommendations over HTTP from a copy of the "
                                     "recommendations topic (docs/serving.md)", epilog=_settings_epilog(),
                       formatter_class=fmt)
    p.add_argument("--port", type=int, help="overrides STREAM_REC_SERVE_PORT")
    p.add_argument("--host", help="overrides STREAM_REC_SERVE_HOST")
    p.add_argument("--data-dir", help="overrides STREAM_REC_DATA_DIR")
    p.add_argument("--bootstrap", help="overrides STREAM_REC_KAFKA_BOOTSTRAP")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("generate", help="write a seeded synthetic shop's events as JSONL")
    p.add_argument("--users", type=whole(1), default=2000, help="users (default: %(default)s)")
    p.add_argument("--items", type=whole(1), default=5000, help="items (default: %(default)s)")
    p.add_argument("--events", type=whole(0), default=100_000, help="events (default: %(default)s)")
    p.add_argument("--categories", type=whole(1),
                   help="categories (default: 20, or one per item under 20 items; above 5,000 items "
                        "20 * sqrt(items / 5,000), rounded: 89 for 100k items, 283 for 1M)")
    p.add_argument("--popularity-exponent", type=finite(positive=False), default=ShopConfig.popularity_exponent,
                   metavar="X",
                   help="item popularity falls with its rank as rank ** -X (Zipf-like): 0 makes every item equally "
                        "popular, a larger X sends more of the traffic to the best sellers, so a stream touches "
                        "fewer distinct items; `stream-rec bench` uses 0.8 for a long tail (default: %(default)s)")
    p.add_argument("--days", type=finite(positive=True), default=14.0, help="days the stream spans (default: %(default)s)")
    p.add_argument("--seed", type=whole(0), default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", type=output_file(stdout=True), default="-",
                   help="output path, .gz compresses; - for stdout (default: %(default)s)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("demo", help="broker + worker + a synthetic shop's events, end to end")
    p.add_argument("--events", type=whole(1), default=20_000, help="events to stream (default: %(default)s)")
    p.add_argument("--users", type=whole(1), default=500, help="users (default: %(default)s)")
    p.add_argument("--items", type=whole(1), default=1000, help="items (default: %(default)s)")
    p.add_argument("--seed", type=whole(0), default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_cmd_demo)

    replay.add_parser(sub)
    tail.add_parser(sub)
    evaluate.add_parser(sub)
    bench.add_parser(sub)
    chaos.add_parser(sub)

    p = sub.add_parser("state", help="print the counts in a stopped worker's state")
    p.add_argument("--worker-id", help="overrides STREAM_REC_WORKER_ID")
    p.add_argument("--data-dir", help="overrides STREAM_REC_DATA_DIR")
    p.set_defaults(func=_cmd_state)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stream-rec ARGV``; returns the exit code.

    A mistake its user can put right is said here, and only here, in one line on stderr: ``stream-rec
    COMMAND: why``, with a non-zero code and no traceback (the commands raise :class:`UserError`; argument
    errors take the same shape, see :class:`tools.command.CommandParser`). The paths a command writes are
    checked with its arguments, before its work starts (:mod:`tools.argtypes`). Any other exception is a
    bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    setup_logging(os.environ.get("STREAM_REC_LOG_LEVEL", "info"), os.environ.get("STREAM_REC_LOG_FORMAT", "text"))
    for chatty in ("kafka", "aiokafka"):  # client libraries log every connection at INFO
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    # kafka-python 3 warns whenever its I/O task runs >100 ms, which a busy producing loop triggers
    # harmlessly; real connection trouble still surfaces as errors.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"stream-rec {args.command}: {err}", file=sys.stderr)
        return err.code
    except MissingExtra as err:  # a part of stream_rec this install left out: say how to add it
        print(f"stream-rec {args.command}: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # invalid settings: say which, no traceback
        if str(err).startswith("invalid setting"):
            print(f"stream-rec {args.command}: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
