"""Run ``stream-rec worker`` (or ``serve``) as a child process and read its metrics or API: demo, bench, tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stream_rec.settings import ENV_PREFIX, Settings
from tools.broker import free_port


def settings_env(settings: Settings) -> dict[str, str]:
    """``STREAM_REC_*`` variables that reproduce ``settings`` in a child process."""
    return {ENV_PREFIX + name.upper(): str(value) for name, value in vars(settings).items()}


class WorkerProcess:
    """A worker in its own process, with its metrics and health endpoint (:mod:`agents.health`) on a free port.

    ``module`` runs another entry point with the same settings and metrics (the bench's probes:
    ``("agents.probes", "noop")``).
    """

    def __init__(self, settings: Settings, *, log_path: str | Path | None = None,
                 module: Sequence[str] = ("tools.cli", "worker")) -> None:
        if not settings.metrics_port:
            settings = replace(settings, metrics_port=free_port())
        self.settings = settings
        self.base_url = f"http://127.0.0.1:{settings.metrics_port}"  # /readyz, /healthz
        self.log_path = Path(log_path) if log_path else None
        self.module = tuple(module)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings)}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", *self.module], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
        return self

    def metrics(self) -> dict[str, float]:
        """Every sample of the worker's metrics, keyed ``name`` or ``name{label=value}``; {} if unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.metrics_port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def wait_for(self, name: str, at_least: float, timeout_s: float,
                 on_value: Callable[[float], object] | None = None) -> float:
        """Wait until metric ``name`` reaches ``at_least``; returns its value (raises on timeout or exit).

        ``on_value`` sees every reading, for a progress display.
        """
        deadline = time.monotonic() + timeout_s
        value = 0.0
        while time.monotonic() < deadline:
            self._check_alive()
            value = self.metrics().get(name, 0.0)
            if on_value is not None:
                on_value(value)
            if value >= at_least:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{name} reached {value}, not {at_least}, within {timeout_s:.0f} s (log: {self.log_path})")

    def get(self, path: str) -> tuple[int, dict]:
        """``(status, JSON body)`` of a GET of ``path``, error statuses included."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until ``/readyz`` answers 200 (raises on timeout, or if the process ends)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:  # not listening yet
                pass
            time.sleep(0.1)
        raise TimeoutError(f"python -m {' '.join(self.module)} was not ready within {timeout_s:.0f} s (log: {self.log_path})")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {self.proc.returncode} (log: {self.log_path})")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` (SIGKILL for a crash) and wait for the process to end; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class ServeProcess(WorkerProcess):
    """``stream-rec serve`` in its own process, on ``settings.serve_host:serve_port``."""

    def __init__(self, settings: Settings, *, log_path: str | Path | None = None) -> None:
        super().__init__(settings, log_path=log_path, module=("tools.cli", "serve"))
        self.base_url = f"http://{settings.serve_host}:{settings.serve_port}"
