"""``stream-rec bench`` runs on a tiny configuration against the embedded broker and reports every figure.

No timing assertions: the figures of a tiny run on a shared machine mean nothing, only that they exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from tools.bench import BenchConfig, format_table, run_bench
from tools.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

EXPECTED = {
    "ceilings": {"raw_consume", "produce", "noop_faust", "noop_faust_stock", "noop_faust_over_stock"},
    "full_worker": {"full_keyed", "full_keyed_stock", "full_rekey", "stub_keyed", "stub_rekey", "full_keyed_over_noop_faust",
                    "full_keyed_over_raw_consume", "full_rekey_over_noop_faust", "full_rekey_over_raw_consume",
                    "stub_keyed_over_noop_faust", "stub_rekey_over_noop_faust"},
    "freshness": {"target_rate", "achieved_rate", "p50", "p95", "p99", "events_measured", "events_unmatched"},
}
EXPECTED["freshness_rekey"] = EXPECTED["freshness"]
EXPECTED["model_costs"] = {"mf_rank32_us", "mf_rank64_us", "mf_rank128_us", "cooc_us", "popularity_us",
                           *(f"top20_{n}_items_{s}" for n in (1000, 5000) for s in ("mean", "p99")),
                           "top20_5000_items_exact_mean", "mf_recall_5000_items"}
EXPECTED["memory"] = {"2k_users_rss_mb", "2k_users_disk_mb", "2k_users_restart_to_ready_s", "2k_users_reloaded_rss_mb"}
EXPECTED["threads_under_load"] = {f"{load}_{name}" for load in ("idle", "loaded")
                                 for name in ("threads1", "threads2", "threads2_over_threads1")}


def test_bench_reports_every_figure(broker: EmbeddedBroker, tmp_path: Path) -> None:
    config = BenchConfig(events=600, users=60, items=50, freshness_s=1.0, bootstrap=broker.bootstrap,
                         workdir=str(tmp_path / "bench"), quick=True)
    report = run_bench(config, Settings(batch_max=200))

    assert {s: set(figures) for s, figures in report["sections"].items()} == EXPECTED
    for section, figures in report["sections"].items():
        for name, figure in figures.items():
            value = figure["value"]
            assert math.isfinite(value) and value >= 0, f"{section}.{name} = {value}"
            if figure["unit"] in ("ev/s", "x") or name == "events_measured":
                assert value > 0, f"{section}.{name} = {value}"
    assert report["sections"]["freshness"]["events_unmatched"]["value"] == 0
    json.loads(json.dumps(report))  # what --json writes
    table = format_table(report)
    assert all(name in table for figures in EXPECTED.values() for name in figures)
