"""`stream-rec demo`, the README's first command, runs end to end and reports what happened."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from tools.demo import malformed_messages

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_streams_events_and_prints_recommendations_and_a_summary() -> None:
    env = {"PATH": "/usr/bin:/bin", "STREAM_REC_LOG_LEVEL": "warning"}
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "demo", "--events", "3000", "--users", "150", "--items", "300"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    n_bad = len(malformed_messages(Settings()))
    assert re.search(r"events in\s+3000\b", out)
    assert re.search(rf"dead-lettered\s+{n_bad} \(of {n_bad} malformed\)", out)
    lists = re.search(r"recommendations\s+(\d+) lists for (\d+) users", out)
    assert lists and int(lists.group(1)) >= int(lists.group(2)) > 100
    assert re.search(r"throughput\s+[\d,]+ events/s", out)
    assert out.count("recommended:") == 3
    assert "goes with " in out  # every entry says why it is there; co-occurrence names the item
