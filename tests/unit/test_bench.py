"""The bench's arithmetic and its command line (the runs themselves are in tests/integration/test_bench.py)."""

from __future__ import annotations

import math

import pytest

from tools.bench import QUICK, SECTIONS, BenchConfig, Figure, format_table, percentile, sustained_rate
from tools.cli import build_parser


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
