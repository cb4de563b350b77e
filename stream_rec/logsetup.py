"""How stream_rec's processes log: readable lines, or one JSON object per line (``STREAM_REC_LOG_FORMAT``).

The entry points (``stream-rec``, ``python -m agents.probes``) call :func:`setup_logging` once; library
modules only ever get a logger.
"""

from __future__ import annotations

import json
import logging
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line: ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback) when the record carries one.

    Newlines inside a message or a traceback are escaped by JSON, so a collector that reads line by line
    never splits a record.

    >>> record = logging.LogRecord("stream_rec", logging.WARNING, __file__, 1, "lag %d\\nbig", (7,), None)
    >>> record.created = 0.5
    >>> print(JsonFormatter().format(record))
    {"ts": "1970-01-01T00:00:00.500Z", "level": "WARNING", "logger": "stream_rec", "message": "lag 7\\nbig"}
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": _utc(record.created), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _utc(created: float) -> str:
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text``, or ``json``); any other format logs text (the
    settings' validation names the bad value). Like :func:`logging.basicConfig`, does nothing when the root
    logger has a handler already."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
