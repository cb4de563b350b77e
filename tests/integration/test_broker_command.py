"""``stream-rec broker`` stops its broker process on SIGTERM (a supervisor's stop), not only on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from agents.topics import reachable
from tools.broker import free_port


def test_sigterm_stops_the_broker_child_too() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # log lines first, then the banner
            if "embedded broker on" in line:
                break
        assert reachable(f"127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while reachable(f"127.0.0.1:{port}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not reachable(f"127.0.0.1:{port}"), "the Tansu child outlived `stream-rec broker`"
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["pkill", "-f", f"tcp://127.0.0.1:{port}"], check=False)  # never leave a broker behind
