"""A sixth source, registered from a module of its own with no edit to the engine, fusion or service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.sources import MODULES_ENV, register

ROOT = Path(__file__).resolve().parents[2]
#: A source with a state and a learn step of its own, and one that only reads another model's state.
PLUGINS = "tests.plugins.just_seen,tests.plugins.newest"


def test_toy_sixth_and_seventh_sources_pass_the_contract_suite_and_reach_the_lists(tmp_path: Path) -> None:
    # Its own process: the sources are fixed when the fusion is imported, and the kernels compile for them.
    env = {**os.environ, MODULES_ENV: PLUGINS, "PYTHONPATH": str(ROOT), "STREAM_REC_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                          "tests/unit/test_source_contract.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.findall(r"::(\w+)\[(\w+)\] PASSED", run.stdout)
    names = {name for _, name in passed}
    assert names == {"cooc", "popular", "recent", "category", "just_seen", "newest"}
    tests = {test for test, _ in passed}
    assert len(passed) == len(tests) * len(names) and len(tests) >= 4  # every contract test, every source
    # Its kernels were cached apart: the package's own cache never names the plugin's classes (a process
    # without the plugin could not read it: numba's index pickles the types it was compiled for).
    assert list((tmp_path / "kernels").glob("sources-*/*/*.nbi"))
    for index in (ROOT / "stream_rec").rglob("*.nbi"):
        assert b"just_seen" not in index.read_bytes() and b"Newest" not in index.read_bytes(), index


def test_the_engine_fusion_and_service_do_not_name_the_toy_sources() -> None:
    for path in (ROOT / "stream_rec").rglob("*.py"):
        assert "just_seen" not in path.read_text() and "Newest" not in path.read_text(), path


def test_a_source_registered_after_the_fusion_took_its_sources_is_refused() -> None:
    import stream_rec.fusion  # noqa: F401 (takes the registered sources)

    with pytest.raises(RuntimeError, match=MODULES_ENV):
        register("late", tuple, lambda *a: 0)


def test_a_source_module_that_cannot_be_imported_is_named_in_the_error() -> None:
    env = {**os.environ, MODULES_ENV: "no_such_module_here"}
    run = subprocess.run([sys.executable, "-c", "import stream_rec.fusion"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    assert f"{MODULES_ENV} names 'no_such_module_here'" in run.stderr
