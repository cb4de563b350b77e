"""STREAM_REC_LOG_FORMAT=json: one JSON object per line, whatever the record holds."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stream_rec.logsetup import JsonFormatter
from stream_rec.settings import Settings


def test_a_record_with_a_traceback_is_one_json_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("stream_rec.test_logsetup")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise KeyError("ü\nsecond line")
        except KeyError:
            logger.exception("batch %d failed", 7)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR" and entry["logger"] == "stream_rec.test_logsetup"
    assert entry["message"] == "batch 7 failed"
    assert entry["exception"].startswith("Traceback") and "KeyError" in entry["exception"]
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]


def test_an_unknown_log_format_is_a_clear_setting_error() -> None:
    assert Settings.from_env({"STREAM_REC_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValueError, match="STREAM_REC_LOG_FORMAT='xml'"):
        Settings.from_env({"STREAM_REC_LOG_FORMAT": "xml"})
