"""``stream-rec tail``: watch the recommendation lists (or the dead letters) as they arrive.

One readable line per message::

    14:03:07 u42 <- purchase sku-1: sku-7 (cooc+mf), sku-3 (popular), ...

or, with ``--jsonl PATH``, the raw JSON payloads one per line (dead letters as
``{"key", "value", "headers"}`` objects, since their payload is whatever the producer sent). Reads
without a consumer group, so it never disturbs the workers' or the shop's offsets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from stream_rec.settings import Settings
from agents.security import kafka_python_options
from agents.topics import broker_problem
from tools.argtypes import output_file
from tools.command import unreachable

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Items shown per list on a readable line.
SHOW_ITEMS = 8
#: How long one poll waits; bounds how late --idle-exit and Ctrl-C are noticed.
POLL_MS = 200
REASON_HEADER = "stream_rec.reason"
DESCRIPTION = """\
Print each recommendation list (or dead letter) as it arrives, one line each:

  14:03:07 u42 <- purchase sku-1: sku-7 (cooc+mf), sku-3 (popular), ...

--jsonl writes the raw JSON payloads instead (dead letters with their headers). Reads without a
consumer group, so it never moves anyone's offsets. Ctrl-C stops it."""


def add_parser(subparsers: Any) -> None:
    """Register ``tail`` on the ``stream-rec`` command's subparsers."""
    p = subparsers.add_parser("tail", help="print recommendation lists (or dead letters) as they arrive",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--dead-letter", action="store_true",
                       help="the dead-letter topic (STREAM_REC_TOPIC_DEAD_LETTER), with each reason and source")
    which.add_argument("--topic", metavar="NAME", help="any other topic (default: STREAM_REC_TOPIC_RECOMMENDATIONS)")
    p.add_argument("--user", metavar="U", help="only messages keyed by this user id")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest message (default: only new ones)")
    p.add_argument("--jsonl", type=output_file(stdout=True), metavar="PATH", help="write the raw JSON payloads one per line to PATH (- for stdout)")
    p.add_argument("--max", type=int, metavar="N", help="stop after N messages (default: never)")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="stop after SECONDS without a message (default: never)")
    p.add_argument("--bootstrap", help=f"Kafka bootstrap servers (default: STREAM_REC_KAFKA_BOOTSTRAP, else {DEFAULT_BOOTSTRAP})")
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``stream-rec tail ARGS`` through the one command-line entry point (``argv``: the ARGS)."""
    from tools.cli import main as cli_main

    return cli_main(["tail", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    settings = Settings.from_env()
    topic = args.topic or (settings.topic_dead_letter if args.dead_letter else settings.topic_recommendations)
    bootstrap = args.bootstrap or settings.kafka_bootstrap or DEFAULT_BOOTSTRAP
    problem = broker_problem(settings, bootstrap, unreachable=unreachable(bootstrap))
    if problem:
        print(f"stream-rec tail: {problem}", file=sys.stderr)
        return 1
    try:
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest" if args.from_beginning else "latest",
                                 **kafka_python_options(settings))
    except KafkaError as err:  # e.g. a client certificate the brokers refuse after the handshake
        print(f"stream-rec tail: cannot connect to Kafka at {bootstrap}: {err}", file=sys.stderr)
        return 1
    out: IO[str] = sys.stdout if args.jsonl in (None, "-") else open(args.jsonl, "w", encoding="utf-8")
    user = args.user.encode() if args.user is not None else None
    shown = 0
    try:
        last = time.monotonic()
        while args.max is None or shown < args.max:
            batch = consumer.poll(timeout_ms=POLL_MS)
            for message in (m for records in batch.values() for m in records):
                last = time.monotonic()
                if user is not None and not _is_users(message, user):
                    continue
                out.write((as_jsonl(message) if args.jsonl else readable(message)) + "\n")
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
            out.flush()
            if args.idle_exit is not None and time.monotonic() - last >= args.idle_exit:
                break
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        consumer.close()
        if out is not sys.stdout:
            out.close()
    return 0


def _is_users(message: Any, user: bytes) -> bool:
    if message.key is not None:
        return bool(message.key == user)
    payload = _json(message.value)  # an unkeyed message: by the user id it carries, if any
    return isinstance(payload, dict) and str(payload.get("user_id")) == user.decode()


def _json(value: bytes | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _headers(message: Any) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in (message.headers or [])}


def as_jsonl(message: Any) -> str:
    """The payload as one line; a dead letter (or any message with headers) wrapped with its headers."""
    headers = _headers(message)
    text = (message.value or b"").decode("utf-8", "replace")
    if not headers and isinstance(_json(message.value), (dict, list)):
        return text if "\n" not in text else json.dumps(json.loads(text), separators=(",", ":"))
    key = message.key.decode("utf-8", "replace") if message.key is not None else None
    return json.dumps({"key": key, "value": text, "headers": headers}, separators=(",", ":"))


def readable(message: Any) -> str:
    """One line for a person: a recommendation list, a dead letter, or any other message."""
    headers = _headers(message)
    payload = _json(message.value)
    if REASON_HEADER in headers:
        return _dead_letter_line(message, headers)
    if isinstance(payload, dict) and isinstance(payload.get("items"), list):
        return _list_line(message, payload)
    key = message.key.decode("utf-8", "replace") if message.key is not None else "-"
    if message.value is None:
        return f"{_clock(message.timestamp)} {key}: (tombstone: deleted; a user forgotten, on the recommendations topic)"
    key = message.key.decode("utf-8", "replace") if message.key is not None else "-"
    return f"{_clock(message.timestamp)} {key}: {(message.value or b'').decode('utf-8', 'replace')[:200]}"


def _list_line(message: Any, rec: dict[str, Any]) -> str:
    trigger = rec.get("trigger") or {}
    cause = " ".join(str(trigger[k]) for k in ("type", "item_id") if trigger.get(k))
    items = [f"{i.get('item_id')} ({'+'.join(sorted(i.get('sources') or [])) or '?'})"
             for i in rec["items"][:SHOW_ITEMS] if isinstance(i, dict)]
    more = ", ..." if len(rec["items"]) > SHOW_ITEMS else ""
    when = rec.get("generated_at") if isinstance(rec.get("generated_at"), int) else message.timestamp
    return f"{_clock(when)} {rec.get('user_id')} <- {cause or '?'}: {', '.join(items) or '(empty)'}{more}"


def _dead_letter_line(message: Any, headers: dict[str, str]) -> str:
    source = ":".join(headers.get(f"stream_rec.source_{k}", "?") for k in ("topic", "partition"))
    offset = headers.get("stream_rec.source_offset", "?")
    value = (message.value or b"").decode("utf-8", "replace")
    value = value if len(value) <= 120 else value[:117] + "..."
    return (f"{_clock(message.timestamp)} [{headers[REASON_HEADER]}] {source}@{offset}: "
            f"{headers.get('stream_rec.error', '')} | {value!r}")


def _clock(epoch_ms: int | None) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000).strftime("%H:%M:%S") if epoch_ms else "--:--:--"


if __name__ == "__main__":
    sys.exit(main())
