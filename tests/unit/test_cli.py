"""The command line and the README describe the same settings, and the commands behave."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.events import decode
from stream_rec.settings import settings_table
from tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_shows_every_setting_with_its_default() -> None:
    text = build_parser().format_help()
    for env, default, _ in settings_table():
        assert f"{env} [{default}]" in text


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    for env, default, meaning in settings_table():
        assert f"| `{env}` | `{default}` | {meaning} |" in readme, f"README table out of date for {env}"


def test_generate_writes_valid_events(tmp_path: Path) -> None:
    out = tmp_path / "shop.jsonl.gz"
    assert main(["generate", "--users", "50", "--items", "80", "--events", "500", "--out", str(out)]) == 0
    lines = gzip.open(out, "rt").read().splitlines()
    assert len(lines) == 500
    assert all(decode(line.encode(), None, now_ms=10**13) for line in lines)


def test_invalid_setting_is_a_clear_error_not_a_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "state"], capture_output=True, text=True,
                          env={"STREAM_REC_TOP_N": "zero", "PATH": ""}, cwd=ROOT)
    assert proc.returncode == 2
    assert "STREAM_REC_TOP_N" in proc.stderr and "Traceback" not in proc.stderr


def test_state_of_a_missing_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["state", "--data-dir", str(tmp_path)]) == 1
    assert "no state at" in capsys.readouterr().err


def test_generate_to_stdout_is_jsonl() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "generate", "--events", "20", "--users", "5",
                           "--items", "10"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert [json.loads(line)["type"] for line in proc.stdout.splitlines()][0] == "view"
    assert len(proc.stdout.splitlines()) == 20


def test_impossible_shop_is_refused_with_a_message() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "generate", "--items", "5", "--categories", "9"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "n_categories" in proc.stderr and "Traceback" not in proc.stderr


def test_worker_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    from tools.broker import free_port

    env = {"STREAM_REC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "STREAM_REC_DATA_DIR": str(tmp_path),
           "STREAM_REC_METRICS_PORT": "0", "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "worker"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1
    assert "no Kafka broker answers" in proc.stderr and "stream-rec broker" in proc.stderr
    assert "Traceback" not in proc.stderr
