"""The bench's arithmetic and its command line (the runs themselves are in tests/integration/test_bench.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from stream_rec.settings import Settings
from stream_rec.synth import default_categories, write_jsonl
from tools.bench import QUICK, SECTIONS, BenchConfig, Figure, format_table, percentile, sustained_rate
from tools.bench_catalogue import (ONE_THREAD_ENV, CatalogueRow, _environment, decoded, evaluate_side_by_side,
                                   fused_evaluations, shop_events)
from tools.bench_catalogue import figures as catalogue_figures
from tools.cli import build_parser, main


def test_sustained_rate_leaves_out_start_up_and_tail() -> None:
    # 2 s of start-up at zero, then 1,000 events/s, then a slow tail.
    samples = [(0.0, 0), (2.0, 0)] + [(2.0 + t / 10, t * 100) for t in range(1, 91)] + [(20.0, 10_000)]
    assert sustained_rate(samples, 10_000) == pytest.approx(1000.0)


def test_sustained_rate_of_a_run_too_short_to_sample_falls_back_to_its_whole_span() -> None:
    assert sustained_rate([(0.0, 0), (0.5, 1000)], 1000) == pytest.approx(2000.0)


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    values = list(range(1, 1001))
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (500, 950, 990)
    assert math.isnan(percentile([], 50))


def test_table_has_a_row_per_figure() -> None:
    report = {"sections": {"ceilings": {"produce": vars(Figure("produce", 12345.6, "ev/s", "note"))},
                           "freshness": {"p99": vars(Figure("p99", math.nan, "ms"))}}}
    lines = format_table(report).splitlines()
    assert len(lines) == 4 and "12,346" in lines[2] and "nan" in lines[3]


def test_bench_options_and_quick_configuration() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--json", "out.json", "--sections", "ceilings"])
    assert args.quick and args.json == "out.json" and args.sections == "ceilings"
    assert QUICK["events"] < BenchConfig.events
    assert list(SECTIONS)[:3] == ["ceilings", "full_worker", "freshness"]


def _row(items: int, evaluate_rate: float, worker_rates: tuple[float, ...]) -> CatalogueRow:
    return CatalogueRow(items=items, events=200_000, touched=items // 2, evaluate_rate=evaluate_rate,
                        evaluate_cpu_rate=2 * evaluate_rate, hr10=0.1234, worker_events=50_000,
                        worker_touched=items // 4, worker_rates=worker_rates)


def test_catalogue_figures_compare_every_size_with_the_first() -> None:
    rows = [_row(5_000, 20_000.0, (4_000.0, 6_000.0)), _row(100_000, 8_000.0, (3_000.0, 3_000.0)),
            _row(1_000_000, 2_000.0, (400.0, 600.0))]
    figures = {f.name: f for f in catalogue_figures(rows)}
    assert figures["5000_items_full_keyed"].value == pytest.approx(5_000.0)  # the mean of its drains
    assert figures["100000_items_fused_evaluate_over_5000"].value == pytest.approx(0.4)
    assert figures["1000000_items_fused_evaluate_over_5000"].value == pytest.approx(0.1)
    assert figures["1000000_items_fused_evaluate_cpu_over_5000"].value == pytest.approx(0.1)
    assert figures["1000000_items_full_keyed_over_5000"].value == pytest.approx(0.1)
    assert figures["100000_items_full_keyed_over_5000"].note.endswith("target >= 0.5")
    assert figures["1000000_items_fused_evaluate_over_5000"].note.endswith("target >= 0.3")
    assert figures["5000_items_fused_hr10"].value == pytest.approx(12.34) and figures["5000_items_fused_hr10"].unit == "%"
    note = figures["1000000_items_full_keyed"].note
    assert "capped: the first 50,000 events only (250,000 items)" in note and "2 drains, 400 and 600" in note
    assert not any(name.startswith("5000_items") and "_over_" in name for name in figures)
    assert len(figures) == 3 * 5 + 2 * 3


def test_catalogue_options_are_checked_and_quick_shrinks_them(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["bench", "--catalogues", "5000,100000", "--catalogue-exponent", "0.7"])
    assert args.catalogues == (5_000, 100_000) and args.catalogue_exponent == 0.7
    assert build_parser().parse_args(["bench"]).catalogues == BenchConfig.catalogues == (5_000, 100_000, 1_000_000)
    for flag, value in (("--catalogues", "5000,0"), ("--catalogues", ","), ("--catalogue-exponent", "nan"),
                        ("--catalogue-worker-events", "0")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", flag, value])
        assert f"argument {flag}:" in capsys.readouterr().err
    assert max(QUICK["catalogues"]) < BenchConfig.catalogues[1] and QUICK["catalogue_events"] < BenchConfig.catalogue_events
    assert "catalogue_scale" in SECTIONS


def test_the_sections_fused_evaluation_is_stream_rec_evaluates(tmp_path: Path) -> None:
    """Same shop, same figures: side by side with another shop, the section measures on each what
    ``stream-rec generate | stream-rec evaluate --models fused --threads 1`` would."""
    config = BenchConfig(users=200, catalogue_events=3_000, catalogue_exponent=0.8)
    small, big = shop_events(config, 500), shop_events(config, 20_000)
    evaluated = evaluate_side_by_side([decoded(small), decoded(big)], Settings.from_env())
    for name, events, mine in (("small", small, evaluated[0]), ("big", big, evaluated[1])):
        log, report = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
        write_jsonl(events, log)
        assert main(["evaluate", str(log), "--models", "fused", "--threads", "1", "--json", str(report)]) == 0
        fused = json.loads(report.read_text())["models"]["fused"]
        assert mine.rate > 0 and mine.cpu_rate > 0 and 0 < mine.hr10 < 1 and mine.hr10 == fused["hr@10"], name
    assert len({e["category"] for e in big}) <= default_categories(20_000) == 40


def test_the_child_evaluates_the_same_shops_with_one_blas_thread() -> None:
    """The section evaluates in a spawned child (OpenBLAS held to one thread): same shops, same figures."""
    config = BenchConfig(users=50, catalogues=(100, 1_000), catalogue_events=600)
    in_child = fused_evaluations(config, Settings())
    here = evaluate_side_by_side([decoded(shop_events(config, n)) for n in config.catalogues], Settings())
    assert [e.hr10 for e in in_child] == [e.hr10 for e in here] and all(e.rate > 0 for e in in_child)


def test_the_childs_environment_is_set_only_around_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with _environment(ONE_THREAD_ENV):
        assert all(os.environ[name] == "1" for name in ONE_THREAD_ENV)
    assert os.environ["OMP_NUM_THREADS"] == "4" and "OPENBLAS_NUM_THREADS" not in os.environ
