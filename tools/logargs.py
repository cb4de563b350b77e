"""The log-format options shared by ``replay`` and ``evaluate``, and the :class:`LogFormat` they describe."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from stream_rec.events import EVENT_TYPES
from stream_rec.logs import PRESETS, LogFormat, parse_mapping


def add_log_format_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset --format --map --types --default-type --ts-unit``, in their own help group."""
    fmt = parser.add_argument_group("log format")
    fmt.add_argument("--preset", choices=sorted(PRESETS), help="a known data set's format: movielens (u.data or "
                     "RecBole .inter; each rating a purchase), taobao (UserBehavior.csv); --map etc. refine it")
    fmt.add_argument("--format", choices=("auto", "jsonl", "csv"), help="file format (default: by suffix, else by content)")
    fmt.add_argument("--map", metavar="OURS=THEIRS,...", help="our field -> their column, "
                     "e.g. user_id=visitorid,item_id=itemid,type=event,ts=timestamp (default: same names)")
    fmt.add_argument("--types", metavar="THEIRS=OURS,...", help="their type value -> ours "
                     f"({', '.join(EVENT_TYPES)}), e.g. addtocart=add_to_cart,transaction=purchase")
    fmt.add_argument("--default-type", choices=EVENT_TYPES, help="type of every event of a log without a type column")
    fmt.add_argument("--ts-unit", choices=("ms", "s"), help="unit of numeric timestamps (default: ms; ISO-8601 always works)")


def log_format(args: argparse.Namespace) -> LogFormat:
    """The :class:`LogFormat` the options describe: a preset (or the native format) with overrides merged in."""
    fmt = PRESETS[args.preset] if args.preset else LogFormat()
    changes: dict[str, Any] = {}
    if args.format:
        changes["kind"] = args.format
    if args.map:
        changes["mapping"] = {**fmt.mapping, **parse_mapping(args.map)}
    if args.types:
        changes["types"] = {**fmt.types, **parse_mapping(args.types)}
    if args.default_type:
        changes["default_type"] = args.default_type
    if args.ts_unit:
        changes["ts_unit"] = args.ts_unit
    return replace(fmt, **changes) if changes else fmt
