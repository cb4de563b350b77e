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


def _worker_state(data_dir: Path) -> tuple[Path, dict]:
    """A closed worker state (a small synthetic shop learned through RecService) under ``data_dir/w1``,
    and the counts the service that wrote it had."""
    from stream_rec.service import RecService
    from stream_rec.settings import Settings
    from stream_rec.state import RocksStore
    from stream_rec.synth import ShopConfig, SyntheticShop

    settings = Settings(data_dir=str(data_dir), worker_id="w1")
    store = RocksStore(settings.state_path)
    service = RecService(settings, store)
    shop = SyntheticShop(ShopConfig(n_users=40, n_items=300, n_categories=5, n_events=1500, seed=3))
    events = [decode(json.dumps(e).encode(), None, now_ms=10**13) for e in shop.events()]
    service.persist(service.apply([(("lane", n), e) for n, e in enumerate(events)]))
    service.persist_items()
    store.close()
    return settings.state_path, service.stats()


def test_state_of_a_damaged_folder_names_it_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On main, 4 KiB of noise in a table file gave exit 0 and 0 items: rocksdict's iteration ended quietly."""
    state, written = _worker_state(tmp_path)
    args = ["state", "--data-dir", str(tmp_path), "--worker-id", "w1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == written and written["users"] > 30
    table = max(state.glob("*.sst"), key=lambda p: p.stat().st_size)
    with open(table, "r+b") as f:
        f.write(bytes(range(64)))  # the first data block; the index and footer stay whole, so it opens
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stream-rec state: ") and "is corrupt" in err
    assert str(state) in err and table.name in err


def test_state_of_a_folder_in_use_says_so_without_a_traceback(tmp_path: Path) -> None:
    from stream_rec.state import RocksStore

    holder = RocksStore(tmp_path / "w1" / "state")
    try:
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "state", "--data-dir", str(tmp_path),
                               "--worker-id", "w1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        holder.close()
    assert proc.returncode == 1
    assert "in use by another process" in proc.stderr and "Traceback" not in proc.stderr


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
