"""A second worker started on a host with the first one's worker id: one line names the setting to change.

Its own broker, not the session's: the worker stops at its state folder, before any kernel is needed, so
this test does not wait for the kernels to be compiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stream_rec.state import RocksStore
from tools.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_worker_with_the_same_id_is_told_to_change_it(tmp_path: Path) -> None:
    state = tmp_path / "w1" / "state"
    env = os.environ | {"STREAM_REC_DATA_DIR": str(tmp_path), "STREAM_REC_WORKER_ID": "w1",
                        "STREAM_REC_METRICS_PORT": "0", "STREAM_REC_LOG_LEVEL": "warning"}
    with EmbeddedBroker() as broker:
        first = RocksStore(state)  # this process stands for the first worker: RocksDB locks the folder per process
        try:
            proc = subprocess.run([sys.executable, "-m", "tools.cli", "worker", "--bootstrap", broker.bootstrap],
                                  capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        finally:
            first.close()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"stream-rec worker: the state folder {state} is in use by another process (a worker with the same id 'w1' "
        "on this host?): give each worker its own STREAM_REC_WORKER_ID"]
