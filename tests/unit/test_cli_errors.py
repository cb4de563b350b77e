"""Every mistake a user can put right is one line on stderr, ``stream-rec COMMAND: why``, a non-zero exit
code and no traceback; the paths a command writes are refused before its work starts (issue 17, item 6).

The commands run for real: through :func:`tools.cli.main` where one process will do, as a process of their
own where a second process is the point (a port or a state folder held by another one).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounts import require_mount_namespaces
from tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
EVENT = {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1_700_000_000_000}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``stream-rec ARGV`` in this process: its exit code and the one line it wrote on stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argument errors end in argparse's exit
        code = exit_.code  # type: ignore[assignment]
    return code, one_line(capsys.readouterr().err)


def run_process(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``stream-rec ARGV`` as a process of its own: its exit code and the one line it wrote on stderr."""
    proc = subprocess.run([sys.executable, "-m", "tools.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=None if env is None else os.environ | env)
    return proc.returncode, one_line(proc.stderr)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def listener() -> Iterator[int]:
    """A port another process holds: a socket listening on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_evaluate_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "x.jsonl"
    assert run(capsys, "evaluate", str(missing)) == (2, f"stream-rec evaluate: argument PATH: no such file: {missing}")


def test_generate_into_a_missing_folder_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nope" / "shop.jsonl"
    code, line = run(capsys, "generate", "--events", "10", "--out", str(out))
    assert (code, line) == (2, f"stream-rec generate: argument --out: the folder {out.parent} does not exist")
    assert not out.parent.exists()


def test_evaluate_json_into_a_missing_folder_is_refused_and_makes_no_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    log.write_text(json.dumps(EVENT) + "\n")
    report = tmp_path / "nonexistent" / "x.json"
    code, line = run(capsys, "evaluate", "--json", str(report), str(log))
    assert (code, line) == (2, f"stream-rec evaluate: argument --json: the folder {report.parent} does not exist")
    assert not report.parent.exists()


def test_evaluate_plots_under_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    log.write_text(json.dumps(EVENT) + "\n")
    code, line = run(capsys, "evaluate", "--plots", str(log / "plots"), str(log))
    assert (code, line) == (2, f"stream-rec evaluate: argument --plots: {log} is not a folder")


def test_evaluate_plots_into_an_unwritable_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    """A read-only file system, mounted in a namespace of the command's own (root writes anywhere else)."""
    require_mount_namespaces("an unwritable folder needs a read-only mount in a mount namespace (unshare -rm)")
    log = tmp_path / "shop.jsonl"
    log.write_text(json.dumps(EVENT) + "\n")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    mount = 'mount -t tmpfs -o ro,size=1m tmpfs "$0" && exec "$@"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", mount, str(readonly), sys.executable, "-m", "tools.cli",
                           "evaluate", "--plots", str(readonly), str(log)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2
    assert one_line(proc.stderr) == f"stream-rec evaluate: argument --plots: the folder {readonly} is not writable"


def test_state_while_a_worker_holds_it(tmp_path: Path) -> None:
    from stream_rec.state import RocksStore

    state = tmp_path / "w1" / "state"
    holder = RocksStore(state)  # this process stands for the worker: RocksDB locks the folder per process
    try:
        code, line = run_process("state", "--data-dir", str(tmp_path), "--worker-id", "w1")
    finally:
        holder.close()
    assert code == 1
    assert line == (f"stream-rec state: the state in {state} is in use by another process, a worker running on it: "
                    "stop that worker first (state reads a stopped worker's state)")


def test_a_second_worker_on_a_host_is_told_to_change_its_metrics_port(tmp_path: Path, listener: int) -> None:
    """Refused before any broker is asked: the bootstrap here answers nothing."""
    from tools.broker import free_port

    env = {"STREAM_REC_METRICS_PORT": str(listener), "STREAM_REC_DATA_DIR": str(tmp_path),
           "STREAM_REC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    code, line = run_process("worker", env=env)
    assert code == 1
    assert line == (f"stream-rec worker: the metrics port {listener} is in use by another process (a worker running "
                    "already on this host?): give this worker another STREAM_REC_METRICS_PORT (0: no endpoint)")


def test_a_port_taken_once_the_worker_starts_still_names_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Whichever server of the worker finds its port taken (after the check, or one the check does not know);
    any other OSError is not the user's to fix and keeps its traceback."""
    import agents.worker

    def refused(errno_: int) -> None:
        def run_worker(settings: object) -> int:
            raise OSError(errno_, os.strerror(errno_))

        monkeypatch.setattr(agents.worker, "run_worker", run_worker)

    monkeypatch.setenv("STREAM_REC_METRICS_PORT", "0")
    refused(errno.EADDRINUSE)
    code, line = run(capsys, "worker", "--data-dir", str(tmp_path))
    assert code == 1
    assert line == ("stream-rec worker: a port this worker listens on is in use by another process (Address already "
                    "in use; a worker running already on this host?): give each worker its own STREAM_REC_METRICS_PORT")
    refused(errno.EACCES)
    with pytest.raises(PermissionError):
        main(["worker", "--data-dir", str(tmp_path)])


def test_broker_on_a_busy_port_fails(listener: int) -> None:
    code, line = run_process("broker", "--port", str(listener))
    assert code == 1
    assert line == (f"stream-rec broker: port {listener} on 127.0.0.1 is in use by another process (a broker running "
                    "already?): choose another --port")


def test_replay_of_a_log_without_one_valid_line_fails_saying_why(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before the broker is asked anything (none listens at this bootstrap)."""
    from tools.broker import free_port

    log = tmp_path / "shop.jsonl"
    log.write_text(json.dumps({**EVENT, "user_id": None}) + "\n" + json.dumps({**EVENT, "type": "wish"}) + "\n")
    code, line = run(capsys, "replay", "--bootstrap", f"127.0.0.1:{free_port()}", str(log))
    assert code == 1
    assert line.startswith(f"stream-rec replay: no events in {log}: 2 lines read, all rejected "
                           "(1 missing_field, 1 unknown_type); the first: ")
    assert f"{log}:1: " in line


def test_evaluate_of_a_log_of_other_columns_names_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.csv"
    log.write_text("visitorid,itemid,event,timestamp\n1,2,view,1700000000000\n3,4,view,1700000001000\n")
    code, line = run(capsys, "evaluate", str(log))
    assert code == 1  # and no warning per line before it: one_line
    assert line == (f"stream-rec evaluate: no events in {log}: 2 lines read, all rejected (2 missing_field); the "
                    f"first: {log}:2: column 'user_id' is missing or empty; columns found in {log}: visitorid, itemid, "
                    "event, timestamp; expected: user_id, item_id, type, ts (see --map, --preset, --delimiter)")


def test_evaluate_of_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "shop.jsonl"
    log.write_text("\n")
    assert run(capsys, "evaluate", str(log)) == (1, f"stream-rec evaluate: no events in {log}: it holds no records")


def test_a_semicolon_separated_log_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found in the first line, so a ``;`` export reads; ``--delimiter`` says it where the guess would be wrong."""
    from tools.broker import free_port

    log = tmp_path / "shop.csv"
    log.write_text("user_id;item_id;type;ts\nu1;i1;view;1700000000000\nu2;i2;purchase;1700000001000\n")
    for extra in ([], ["--delimiter", "semicolon"]):
        assert main(["replay", "--bootstrap", f"127.0.0.1:{free_port()}", *extra, str(log)]) == 1  # no broker
        out, err = capsys.readouterr()
        assert "valid        2" in out and "invalid      0" in out and "no events" not in err
    code, line = run(capsys, "evaluate", "--delimiter", "comma", str(log))
    assert code == 1 and f"columns found in {log}: user_id;item_id;type;ts;" in line


def test_generate_names_its_flags_not_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "generate", "--events", "10", "--seed", "-1")
    assert (code, line) == (2, "stream-rec generate: argument --seed: must be at least 0, got -1")
    code, line = run(capsys, "generate", "--items", "5", "--categories", "9")
    assert (code, line) == (2, "stream-rec generate: --categories (9) must not exceed --items (5)")


def test_demo_refuses_a_bad_size_before_starting_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "demo", "--items", "0") == (2, "stream-rec demo: argument --items: must be at least 1, got 0")


@pytest.mark.parametrize("command", ["bench", "chaos"])
def test_long_runs_refuse_a_report_path_they_could_not_write(command: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "missing" / "report.json"
    code, line = run(capsys, command, "--json", str(report))
    assert (code, line) == (2, f"stream-rec {command}: argument --json: the folder {report.parent} does not exist")
    code, line = run(capsys, command, "--workdir", str(tmp_path / "a" / "b"))
    assert (code, line) == (2, f"stream-rec {command}: argument --workdir: the folder {tmp_path / 'a'} does not exist")


def test_an_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "evaluat")
    assert code == 2 and line.startswith("stream-rec: argument command: invalid choice: 'evaluat'")


def test_help_is_plain_text() -> None:
    """Descriptions are module docstrings, written for Sphinx: their markup stays out of --help."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    helps = {"stream-rec": parser.format_help()} | {name: p.format_help() for name, p in commands.items()}
    assert len(helps) > 10
    for name, text in helps.items():
        for markup in ("``", ":class:", ":func:", ":meth:", ":mod:", ":data:"):
            assert markup not in text, f"{markup} in stream-rec {name} --help"
