"""``tools.bench_models`` (bench sections d and e) runs on a tiny configuration and reports every figure."""

from __future__ import annotations

from tools.bench_models import run


def test_quick_model_costs_and_memory_report_every_figure() -> None:
    report = run(quick=True)
    assert set(report["updates"]) == {"mf_rank32_us", "mf_rank64_us", "mf_rank128_us", "cooc_us", "popularity_us"}
    assert all(v > 0 for v in report["updates"].values())
    assert [t["items"] for t in report["top20"]] == [1_000, 5_000]
    assert all(0 < t["p50_ms"] <= t["p99_ms"] for t in report["top20"])
    (mem,) = report["memory"]
    assert mem["users"] == 2_000 and mem["fill_events"] == 4_000
    for key in ("fill_seconds", "fill_rss_mb", "disk_mb", "restart_to_ready_s", "loaded_rss_mb"):
        assert mem[key] > 0, key
