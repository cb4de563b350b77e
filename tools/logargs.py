"""The log-format options shared by ``replay`` and ``evaluate``, the :class:`LogFormat` they describe, and what
both say when a log yields no event."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream_rec.events import EVENT_TYPES
from stream_rec.logs import PRESETS, LogFormat, expected_columns, log_columns, parse_mapping
from tools.command import UserError

_SEPARATORS = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


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
    fmt.add_argument("--delimiter", choices=sorted(_SEPARATORS), help="CSV column separator (default: found in the "
                     "first line: a tab if it has one, else the most frequent of comma, semicolon and pipe)")


def log_format(args: argparse.Namespace) -> LogFormat:
    """The :class:`LogFormat` the options describe: a preset (or the native format) with overrides merged in.
    Options that contradict each other or our schema raise :class:`UserError`."""
    try:
        return _log_format(args)
    except ValueError as err:
        raise UserError(str(err), code=2) from None


def _log_format(args: argparse.Namespace) -> LogFormat:
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
    if args.delimiter:
        changes["delimiter"] = _SEPARATORS[args.delimiter]
    return replace(fmt, **changes) if changes else fmt


def no_events(paths: Sequence[str | Path], fmt: LogFormat, rejected: Counter[str], first: str | None) -> str:
    """Why a log yielded no event, in one line: the lines read and why they were rejected (``rejected``: lines
    per reason; ``first``: the first one, as ``path:line: why``), and the columns found against the ones
    expected in the first file that lacks one (a log of another shape, or split at another separator)."""
    files = ", ".join(str(p) for p in paths)
    read = sum(rejected.values())
    if not read:
        return f"no events in {files}: it holds no records"
    reasons = ", ".join(f"{n} {reason}" for reason, n in rejected.most_common())
    text = f"no events in {files}: {read} line{'s' * (read != 1)} read, all rejected ({reasons}); the first: {first}"
    expected = expected_columns(fmt)
    for path in paths:
        found = log_columns(path, fmt)
        if found and not set(expected) <= set(found):
            return (f"{text}; columns found in {path}: {', '.join(found)}; expected: {', '.join(expected)} "
                    "(see --map, --preset, --delimiter)")
    return text
