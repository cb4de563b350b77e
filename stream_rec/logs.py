"""Reading recorded event logs: JSONL or CSV, plain or gzipped, mapped onto the event schema and validated.

A log is any file of one event per line. Native logs are JSONL in our schema (what ``stream-rec generate``
writes) and pass through unchanged. Public data sets and shop exports name things their own way; a
:class:`LogFormat` says how their columns and type values map onto ours, and :data:`PRESETS` holds the
formats of well-known data sets (MovieLens, Taobao UserBehavior).

Every record, whatever its format, is turned into a JSON object of our schema and checked by
:func:`stream_rec.events.decode`, the same check a worker applies at its boundary, so a line that reads
fine here is a line a worker accepts. Bad lines never stop a read: :func:`read_log` yields them with
their file, physical line number and :class:`~stream_rec.events.InvalidEvent`.

Examples
--------
>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "shop.csv")
...     with open(path, "w") as out:
...         _ = out.write("timestamp,visitorid,event,itemid\\n"
...                       "1433221332117,257597,view,355908\\n"
...                       "1433221100000,257597,transaction,248676\\n"
...                       "oops,1,view,2\\n")
...     fmt = LogFormat(mapping=parse_mapping("user_id=visitorid,item_id=itemid,type=event,ts=timestamp"),
...                     types={"transaction": "purchase"})
...     for line in read_log([path], fmt):
...         print(line.line_no, line.event.type if line.event else line.error.reason)
4 bad_field
3 purchase
2 view
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from stream_rec.events import EVENT_TYPES, Event, InvalidEvent, Limits, decode

__all__ = ["DELIMITERS", "FIELDS", "PRESETS", "LogFormat", "LogLine", "event_record", "expected_columns", "log_columns",
           "parse_mapping", "read_log", "sniff_delimiter"]

#: Our fields that a log's columns can supply, in schema order.
FIELDS: Final = ("user_id", "item_id", "type", "ts", "event_id", "session_id", "category", "price", "quantity")
_REQUIRED: Final = ("user_id", "item_id", "type", "ts")
#: The column separators a CSV log's first line is searched for; a tab wins whenever there is one.
DELIMITERS: Final = ("\t", ",", ";", "|")
_QUOTED: Final = re.compile(r'"[^"]*"')
_OPTIONAL_OUT: Final = ("event_id", "session_id", "category", "price", "quantity", "properties")
_KINDS: Final = ("auto", "jsonl", "csv")
_TS_UNITS: Final = ("ms", "s")
_JSONL_SUFFIXES: Final = frozenset({".jsonl", ".json", ".ndjson"})
_CSV_SUFFIXES: Final = frozenset({".csv", ".tsv", ".data", ".inter"})
#: RecBole's atomic files name their columns ``name:type``; these are its types.
_RECBOLE_TYPES: Final = frozenset({"token", "token_seq", "float", "float_seq"})
_GZIP_MAGIC: Final = b"\x1f\x8b"
#: Historical logs lie in the past by nature: the future-timestamp check is off unless ``now_ms`` is given.
_HISTORICAL: Final = Limits(max_future_ms=10**15)


@dataclass(frozen=True)
class LogFormat:
    """How a log's records map onto the event schema.

    Parameters
    ----------
    kind
        ``"jsonl"``, ``"csv"`` or ``"auto"``: by the suffix once ``.gz`` is stripped (``.jsonl``, ``.json``,
        ``.ndjson`` are JSONL; ``.csv``, ``.tsv``, ``.data``, ``.inter`` are CSV), else by the first
        character of the file (``{`` means JSONL).
    mapping
        Our field -> their column, e.g. ``{"user_id": "visitorid"}``. Unmapped fields are looked up under
        their own name.
    types
        Their type value -> ours, e.g. ``{"transaction": "purchase"}``. Values already ours pass as they are.
    default_type
        The type of every record of a log without a type column (a rating log: ``"purchase"``).
    ts_unit
        Unit of numeric timestamps, ``"ms"`` or ``"s"``; ISO-8601 strings are always accepted.
    delimiter
        CSV only: the column separator; ``None`` sniffs it from the first line (:func:`sniff_delimiter`).
    header
        CSV only: whether the first line names the columns. ``None`` decides: with no ``columns`` given the
        first line must be a header; otherwise it is one if any of its names is a column this format knows
        (so a preset can read both a bare file and the same data with a header).
    columns
        CSV only: the column names of a file without a header.
    """

    kind: str = "auto"
    mapping: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    default_type: str | None = None
    ts_unit: str = "ms"
    delimiter: str | None = None
    header: bool | None = None
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if self.kind not in _KINDS:
            raise ValueError(f"log format kind {self.kind!r} is not one of: {', '.join(_KINDS)}")
        if self.ts_unit not in _TS_UNITS:
            raise ValueError(f"timestamp unit {self.ts_unit!r} is not one of: {', '.join(_TS_UNITS)}")
        unknown = sorted(set(self.mapping) - set(FIELDS))
        if unknown:
            raise ValueError(f"cannot map {unknown[0]!r}: our fields are {', '.join(FIELDS)}")
        for theirs, ours in self.types.items():
            if ours not in EVENT_TYPES:
                raise ValueError(f"type {theirs!r} maps to {ours!r}, which is not one of: {', '.join(EVENT_TYPES)}")
        if self.default_type is not None and self.default_type not in EVENT_TYPES:
            raise ValueError(f"default type {self.default_type!r} is not one of: {', '.join(EVENT_TYPES)}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"the CSV delimiter must be one character, got {self.delimiter!r}")
        if self.header is False and not self.columns:
            raise ValueError("a CSV log without a header needs its column names (columns)")

    @property
    def passthrough(self) -> bool:
        """Whether records are already in our schema, so JSONL lines go to :func:`decode` untouched."""
        return not self.mapping and not self.types and self.default_type is None and self.ts_unit == "ms"

    def column(self, name: str) -> str:
        """Their column holding our field ``name``."""
        return self.mapping.get(name, name)


#: Formats of well-known public data sets (each file must still be obtained under its own licence).
PRESETS: Final[dict[str, LogFormat]] = {
    # MovieLens u.data (user, item, rating, seconds; tab-separated, no header) and RecBole's ml-100k.inter
    # (the same columns under a "user_id:token ..." header). A rating is an implicit positive: a purchase.
    "movielens": LogFormat(kind="csv", mapping={"ts": "timestamp"}, default_type="purchase", ts_unit="s",
                           columns=("user_id", "item_id", "rating", "timestamp")),
    # Taobao UserBehavior.csv: user, item, category, behavior, seconds; comma-separated, no header.
    "taobao": LogFormat(kind="csv", mapping={"user_id": "user", "item_id": "item", "type": "behavior"},
                        types={"pv": "view", "fav": "click", "cart": "add_to_cart", "buy": "purchase"},
                        ts_unit="s", columns=("user", "item", "category", "behavior", "ts")),
}


@dataclass(frozen=True)
class LogLine:
    """One record of a log: its valid event, or why it is invalid."""

    path: str
    line_no: int  # 1-based physical line number in its file
    event: Event | None
    error: InvalidEvent | None


def parse_mapping(text: str) -> dict[str, str]:
    """``"a=b,c=d"`` as a dict, as given on a command line (``--map``, ``--types``).

    Examples
    --------
    >>> parse_mapping("user_id=visitorid, item_id=itemid")
    {'user_id': 'visitorid', 'item_id': 'itemid'}
    >>> parse_mapping("user_id")
    Traceback (most recent call last):
    ...
    ValueError: bad mapping entry 'user_id' in 'user_id': expected name=value
    """
    result: dict[str, str] = {}
    if not text.strip():
        return result
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"bad mapping entry {part.strip()!r} in {text!r}: expected name=value")
        if key in result:
            raise ValueError(f"mapping entry {key!r} is given twice in {text!r}")
        result[key] = value
    return result


def event_record(event: Event, *, ts_ms: int | None = None) -> dict[str, Any]:
    """An event as a schema-v1 JSON object (``ts`` in ms, optional fields only when set).

    ``ts_ms`` replaces the event's timestamp (a replay that shifts time).

    Examples
    --------
    >>> e = decode(b'{"user_id": 7, "item_id": "i1", "type": "view", "ts": "1970-01-01T00:00:01Z"}', now_ms=0,
    ...            limits=Limits(max_future_ms=10**15))
    >>> event_record(e)
    {'user_id': '7', 'item_id': 'i1', 'type': 'view', 'ts': 1000}
    """
    record: dict[str, Any] = {"user_id": event.user_id, "item_id": event.item_id, "type": event.type,
                              "ts": event.ts_ms if ts_ms is None else ts_ms}
    for name in _OPTIONAL_OUT:
        value = getattr(event, name)
        if value is not None:
            record[name] = value
    return record


def read_log(paths: Sequence[str | Path] | str | Path, fmt: LogFormat = LogFormat(), *, skip: int = 0,
             limit: int | None = None, sort: bool = True, now_ms: int | None = None) -> Iterator[LogLine]:
    """Every record of the logs at ``paths``, decoded and validated; bad records are yielded, never raised.

    Parameters
    ----------
    paths
        Log files, read in this order; gzip is recognised by a ``.gz`` suffix or the gzip magic bytes.
    fmt
        How the records map onto the schema (see :class:`LogFormat` and :data:`PRESETS`).
    skip, limit
        Drop the first ``skip`` valid events (after sorting), then stop after ``limit`` valid events.
        Invalid lines are not counted.
    sort
        Yield the valid events in timestamp order (stable: equal timestamps keep file order, files in
        the order given). This holds the events in memory; every invalid line is yielded first, as it is
        read. ``sort=False`` streams: every line in file order, invalid ones in place.
    now_ms
        The current time for the future-timestamp check. ``None`` (the default) turns the check off,
        since a historical log lies in the past; given, events more than the worker's default
        :class:`~stream_rec.events.Limits` ``max_future_ms`` after it are invalid (``future_ts``).

    Yields
    ------
    LogLine
        ``event`` set for a valid record, ``error`` for an invalid one.

    Raises
    ------
    FileNotFoundError
        At once, when a path does not exist.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if skip < 0 or (limit is not None and limit < 0):
        raise ValueError("skip and limit must not be negative")
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such log file: {path}")
    if now_ms is None:
        now, limits = int(time.time() * 1000), _HISTORICAL
    else:
        now, limits = now_ms, Limits()
    lines: Iterable[LogLine] = itertools.chain.from_iterable(_read_file(p, fmt, now, limits) for p in paths)
    if sort:
        lines = _invalid_then_sorted(lines)
    return _window(lines, skip, limit)


def _invalid_then_sorted(lines: Iterable[LogLine]) -> Iterator[LogLine]:
    valid = []
    for line in lines:
        if line.event is None:
            yield line
        else:
            valid.append(line)
    valid.sort(key=lambda line: line.event.ts_ms)  # type: ignore[union-attr]  # list.sort is stable
    yield from valid


def _window(lines: Iterable[LogLine], skip: int, limit: int | None) -> Iterator[LogLine]:
    taken = 0
    for line in lines:
        if line.event is not None:
            if skip:
                skip -= 1
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
        yield line
        if limit is not None and taken >= limit and line.event is not None:
            return  # don't read on just to find the next valid event


# ------------------------------------------------------------------------------------------------ files


def _read_file(path: str | Path, fmt: LogFormat, now: int, limits: Limits) -> Iterator[LogLine]:
    name = str(path)
    with _open(Path(path)) as raw:
        kind = fmt.kind if fmt.kind != "auto" else _sniff_kind(Path(path), raw)
        if kind == "jsonl":
            yield from _jsonl_lines(name, raw, fmt, now, limits)
        else:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            yield from _csv_lines(name, text, fmt, now, limits)


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        gzipped = path.suffix == ".gz" or probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def _sniff_kind(path: Path, raw: IO[bytes]) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    head = raw.peek(4096)[:4096].lstrip() if hasattr(raw, "peek") else b""  # type: ignore[attr-defined]
    return "jsonl" if head.startswith(b"{") else "csv"


def _jsonl_lines(name: str, raw: IO[bytes], fmt: LogFormat, now: int, limits: Limits) -> Iterator[LogLine]:
    passthrough = fmt.passthrough
    for line_no, line in enumerate(raw, start=1):
        line = line.strip()
        if not line:
            continue  # blank lines (a trailing newline, a separator) are not records
        try:
            body = line if passthrough else _encode(_to_schema(_json_object(line, limits), fmt, text=False))
            yield LogLine(name, line_no, decode(body, None, now_ms=now, limits=limits), None)
        except InvalidEvent as err:
            yield LogLine(name, line_no, None, err)


def _json_object(line: bytes, limits: Limits) -> dict[str, Any]:
    if len(line) > limits.max_bytes:
        raise InvalidEvent("too_large", f"the line has {len(line)} bytes, over the limit of {limits.max_bytes}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("not_json", f"the line is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"the line is a JSON {type(obj).__name__}, not an object")
    return obj


def _csv_lines(name: str, text: IO[str], fmt: LogFormat, now: int, limits: Limits) -> Iterator[LogLine]:
    blank = 0
    first = text.readline()
    while first and not first.strip():
        blank, first = blank + 1, text.readline()
    if not first:
        return
    delimiter = fmt.delimiter or sniff_delimiter(first)
    rows = _numbered(csv.reader(itertools.chain([first], text), delimiter=delimiter))
    first_row = next(rows)
    names = _header_names(first_row[1], fmt)
    if names is None:
        names, rows = list(fmt.columns), itertools.chain([first_row], rows)
    for line_no, row, csv_error in rows:
        if csv_error is not None or any(cell.strip() for cell in row):
            yield _csv_line(name, blank + line_no, row, csv_error, names, fmt, now, limits)


def _numbered(reader: Any) -> Iterator[tuple[int, list[str], str | None]]:
    """``(line, row, csv error)`` with the physical line each row starts on (a quoted field may span lines)."""
    last = 0
    while True:
        try:
            row, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as err:  # e.g. a NUL byte: report the row and carry on with the next line
            row, error = [], str(err)
        yield last + 1, row, error
        last = reader.line_num


def _csv_line(name: str, line_no: int, row: list[str], csv_error: str | None, names: list[str], fmt: LogFormat,
              now: int, limits: Limits) -> LogLine:
    try:
        if csv_error is not None:
            raise InvalidEvent("bad_field", f"the line is not valid CSV: {csv_error}")
        record = _row_record(row, names)
        event = decode(_encode(_to_schema(record, fmt, text=True)), None, now_ms=now, limits=limits)
        return LogLine(name, line_no, event, None)
    except InvalidEvent as err:
        return LogLine(name, line_no, None, err)


def sniff_delimiter(line: str) -> str:
    """The column separator of a CSV log, from its first line: a tab if it holds one, else whichever of
    :data:`DELIMITERS` it holds most often outside quotes (a comma when it holds none).

    Not :class:`csv.Sniffer`: of two separators found as often on every line it takes the comma, so a
    ``;``-separated export with a decimal comma (``1;2;3,5``) would read as two columns.

    Examples
    --------
    >>> sniff_delimiter("user_id;item_id;price"), sniff_delimiter('1;"a, b, c";3,5'), sniff_delimiter("u\\ti,j")
    (';', ';', '\\t')
    """
    bare = _QUOTED.sub("", line)
    return max(DELIMITERS, key=lambda d: (d == "\t" and d in bare, bare.count(d), -DELIMITERS.index(d)))


def log_columns(path: str | Path, fmt: LogFormat = LogFormat()) -> tuple[str, ...]:
    """The columns a log's records offer as ``fmt`` reads it: a CSV log's column names (its header, or
    ``fmt.columns``), a JSONL log's first record's fields; none for an empty log or a first line not a JSON
    object. What to show next to :func:`expected_columns` when a log yields no events."""
    with _open(Path(path)) as raw:
        kind = fmt.kind if fmt.kind != "auto" else _sniff_kind(Path(path), raw)
        if kind == "jsonl":
            first = next((line for line in raw if line.strip()), b"")
            try:
                obj = json.loads(first) if first else None
            except ValueError:
                return ()
            return tuple(obj) if isinstance(obj, dict) else ()
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        line = next((line for line in text if line.strip()), "")
    if not line:
        return ()
    row = next(csv.reader([line], delimiter=fmt.delimiter or sniff_delimiter(line)))
    names = _header_names(row, fmt)
    return tuple(fmt.columns if names is None else names)


def expected_columns(fmt: LogFormat = LogFormat()) -> tuple[str, ...]:
    """The columns ``fmt`` reads our required fields from.

    >>> expected_columns(PRESETS["taobao"])
    ('user', 'item', 'behavior', 'ts')
    """
    return tuple(fmt.column(name) for name in _REQUIRED if not (name == "type" and fmt.default_type is not None))


def _header_names(row0: list[str], fmt: LogFormat) -> list[str] | None:
    """The column names of a CSV log whose first row is ``row0``; ``None`` when that row is a record."""
    if not _has_header(row0, fmt):
        return None
    return list(fmt.columns) if fmt.columns else [_column_name(cell) for cell in row0]


def _has_header(row0: list[str], fmt: LogFormat) -> bool:
    if fmt.header is not None:
        return fmt.header
    if not fmt.columns:
        return True
    known = set(fmt.columns) | set(fmt.mapping.values()) | set(FIELDS)
    return any(_column_name(cell) in known for cell in row0)


def _column_name(cell: str) -> str:
    name, sep, kind = cell.strip().rpartition(":")
    return name if sep and kind in _RECBOLE_TYPES else cell.strip()


def _row_record(row: list[str], names: list[str]) -> dict[str, str]:
    if len(row) < len(names):
        missing = ", ".join(repr(n) for n in names[len(row):])
        raise InvalidEvent("missing_field", f"the line has {len(row)} of {len(names)} columns (missing {missing})")
    if len(row) > len(names) and any(cell.strip() for cell in row[len(names):]):
        raise InvalidEvent("bad_field", f"the line has {len(row)} columns, expected {len(names)}")
    return dict(zip(names, row))


# ------------------------------------------------------------------------------------- their schema -> ours


def _to_schema(record: dict[str, Any], fmt: LogFormat, *, text: bool) -> dict[str, Any]:
    """Our JSON object from one of their records; ``text`` when every value is a CSV string."""
    out: dict[str, Any] = {} if text else dict(record)
    for name in FIELDS:
        column = fmt.column(name)
        if not text and column != name:
            out.pop(column, None)
            out.pop(name, None)
        value = record.get(column)
        if text and value is not None:
            value = value.strip() or None
        if value is None:
            _require(name, column, fmt)
            continue
        out[name] = _convert(name, column, value, fmt, text)
    if "type" not in out and fmt.default_type is not None:
        out["type"] = fmt.default_type
    return out


def _require(name: str, column: str, fmt: LogFormat) -> None:
    if name in _REQUIRED and not (name == "type" and fmt.default_type is not None):
        theirs = f"column {column!r} (our {name!r})" if column != name else f"column {name!r}"
        raise InvalidEvent("missing_field", f"{theirs} is missing or empty")


def _convert(name: str, column: str, value: Any, fmt: LogFormat, text: bool) -> Any:
    if name == "type":
        return fmt.types.get(str(value), value)
    if name == "ts":
        return _timestamp_ms(value, fmt.ts_unit, column)
    if text and name == "price":
        number = _number(value, column)
        if number is None:
            raise InvalidEvent("bad_field", f"column {column!r}: {value!r} is not a number")
        return number
    if text and name == "quantity":
        try:
            return int(value)
        except ValueError:
            raise InvalidEvent("bad_field", f"column {column!r}: {value!r} is not an integer") from None
    return value


def _timestamp_ms(value: Any, unit: str, column: str) -> Any:
    """Numeric timestamps (numbers or numeric strings) in ms; anything else is left to :func:`decode`."""
    if isinstance(value, str):
        number = _number(value, column)
        if number is None:
            return value  # ISO-8601, or junk that decode names
        value = number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if unit == "s":
        return round(value * 1000)  # round, not truncate: 1.1 s * 1000 is 1100.0000000000002
    return value


def _number(text: str, column: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        raise InvalidEvent("non_finite", f"column {column!r} is not a finite number")
    return number


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
