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
CATALOGUES = (50, 500, 5_000)
EXPECTED["catalogue_scale"] = {
    *(f"{n}_items_{f}" for n in CATALOGUES
      for f in ("touched", "fused_evaluate", "fused_evaluate_cpu", "fused_hr10", "full_keyed")),
    *(f"{n}_items_{f}_over_50" for n in CATALOGUES[1:] for f in ("fused_evaluate", "fused_evaluate_cpu", "full_keyed")),
}

EXPECTED["serving"] = {"lists", "ready_s", "target_rate", "achieved_rate", "p50_ms", "p99_ms", "max_ms", "errors",
                       "fresh_p50_ms", "fresh_p99_ms", "fresh_missed"}


def test_bench_reports_every_figure(broker: EmbeddedBroker, tmp_path: Path) -> None:
    config = BenchConfig(events=600, users=60, items=50, freshness_s=1.0, bootstrap=broker.bootstrap,
                         workdir=str(tmp_path / "bench"), quick=True, catalogues=CATALOGUES, catalogue_events=1_500,
                         catalogue_worker_events=600)
    report = run_bench(config, Settings(batch_max=200))

    assert {s: set(figures) for s, figures in report["sections"].items()} == EXPECTED
    for section, figures in report["sections"].items():
        for name, figure in figures.items():
            value = figure["value"]
            assert math.isfinite(value) and value >= 0, f"{section}.{name} = {value}"
            if figure["unit"] in ("ev/s", "x") or name == "events_measured":
                assert value > 0, f"{section}.{name} = {value}"
    assert report["sections"]["freshness"]["events_unmatched"]["value"] == 0
    serving = {name: f["value"] for name, f in report["sections"]["serving"].items()}
    assert serving["errors"] == 0 and serving["fresh_missed"] == 0 and serving["achieved_rate"] > 0
    catalogue = {name: f["value"] for name, f in report["sections"]["catalogue_scale"].items()}
    touched = [catalogue[f"{n}_items_touched"] for n in CATALOGUES]
    assert touched[0] <= 50 and touched[0] < touched[1] < touched[2] <= 1_500  # a bigger shop, more of it reached
    assert all(0 < catalogue[f"{n}_items_fused_hr10"] <= 100 for n in CATALOGUES)
    json.loads(json.dumps(report))  # what --json writes
    table = format_table(report)
    assert all(name in table for figures in EXPECTED.values() for name in figures)
