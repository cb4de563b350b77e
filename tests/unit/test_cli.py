"""The command line and the README describe the same settings, and the commands behave."""

from __future__ import annotations

import gzip
import os
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


def test_the_configuration_table_matches_the_settings() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text()
    for env, default, meaning in settings_table():
        assert f"| `{env}` | `{default}` | {meaning} |" in table, f"docs/configuration.md out of date for {env}"
    assert "docs/configuration.md" in (ROOT / "README.md").read_text()


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
    for part in (range(0, 750), range(750, 1500)):  # two batches: the second is judged by the lists of the first
        service.persist(service.apply([(("lane", n), events[n]) for n in part]))
    service.persist_items()
    store.close()
    return settings.state_path, service.stats() | {"variants": service.outcomes.summary()}


def test_state_of_a_damaged_folder_names_it_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On main, 4 KiB of noise in a table file gave exit 0 and 0 items: rocksdict's iteration ended quietly."""
    state, written = _worker_state(tmp_path)
    args = ["state", "--data-dir", str(tmp_path), "--worker-id", "w1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == written and written["users"] > 30
    assert written["variants"]["default"]["events_measured"] > 100  # what became of the lists persists
    table = max(state.glob("*.sst"), key=lambda p: p.stat().st_size)
    with open(table, "r+b") as f:
        f.write(bytes(range(64)))  # the first data block; the index and footer stay whole, so it opens
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stream-rec state: ") and "is corrupt" in err
    assert str(state) in err and table.name in err


def test_generate_to_stdout_is_jsonl() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "generate", "--events", "20", "--users", "5",
                           "--items", "10"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert [json.loads(line)["type"] for line in proc.stdout.splitlines()][0] == "view"
    assert len(proc.stdout.splitlines()) == 20


def test_impossible_shop_is_refused_with_a_message() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "generate", "--items", "5", "--categories", "9"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--categories (9) must not exceed --items (5)" in proc.stderr and "n_categories" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--popularity-exponent", "-0.5"), ("--popularity-exponent", "nan"), ("--popularity-exponent", "inf"),
     ("--popularity-exponent", "steep"), ("--items", "0"), ("--users", "-3"), ("--events", "-1"), ("--days", "0"),
     ("--days", "inf"), ("--categories", "0")],
)  # fmt: skip
def test_generate_refuses_a_bad_value_naming_its_flag(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--events", "10", flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}:" in err and value in err
    assert "ShopConfig" not in err and "_" not in err.splitlines()[-1]  # no internal field names


def _distinct(path: Path, field: str) -> int:
    return len({json.loads(line)[field] for line in path.read_text().splitlines()})


def test_a_lower_popularity_exponent_spreads_the_stream_over_more_items(tmp_path: Path) -> None:
    touched = {}
    for exponent in ("0.6", "1.1", "1.6"):
        out = tmp_path / f"shop-{exponent}.jsonl"
        assert main(["generate", "--items", "20000", "--users", "500", "--events", "4000", "--popularity-exponent",
                     exponent, "--out", str(out)]) == 0
        touched[exponent] = _distinct(out, "item_id")
    assert touched["0.6"] > 1.3 * touched["1.1"] > 1.3**2 * touched["1.6"]
    default = tmp_path / "default.jsonl"
    assert main(["generate", "--items", "20000", "--users", "500", "--events", "4000", "--out", str(default)]) == 0
    assert default.read_text() == (tmp_path / "shop-1.1.jsonl").read_text()  # the default is unchanged


def test_generate_scales_categories_with_the_catalogue_unless_told(tmp_path: Path) -> None:
    counts = {}
    for items, extra in ((5_000, []), (80_000, []), (80_000, ["--categories", "7"])):
        out = tmp_path / f"shop-{items}-{len(extra)}.jsonl"
        assert main(["generate", "--items", str(items), "--events", "20000", *extra, "--out", str(out)]) == 0
        counts[items, bool(extra)] = _distinct(out, "category")
    # 20 for the default 5,000-item shop as before; 20 * sqrt(80,000 / 5,000) = 80 at 80k items
    assert counts[5_000, False] == 20 and 60 < counts[80_000, False] <= 80 and counts[80_000, True] == 7


def test_worker_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    from tools.broker import free_port

    env = {"STREAM_REC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "STREAM_REC_DATA_DIR": str(tmp_path),
           "STREAM_REC_METRICS_PORT": "0", "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "worker"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1
    assert "no Kafka broker answers" in proc.stderr and "stream-rec broker" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_command_holds_openblas_to_one_thread_unless_told_otherwise() -> None:
    """`stream-rec` runs on one thread by default, numpy's BLAS included (its threads collapse on a busy
    machine): its process has as many threads after a large product as with OPENBLAS_NUM_THREADS=1,
    and an explicit OPENBLAS_NUM_THREADS is kept."""
    probe = ("import os, tools.cli, numpy; a = numpy.ones((1500, 1500)); a @ a; "
             "print(len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(**extra: str) -> int:
        done = subprocess.run([sys.executable, "-c", probe], env=env | extra, capture_output=True, text=True, check=True)
        return int(done.stdout)

    assert threads() == threads(OPENBLAS_NUM_THREADS="1") < threads(OPENBLAS_NUM_THREADS="2")
