"""agents/lifecycle.py: what ends a worker and with which code; and the mode/Faust behaviours it relies on.

Relied on, pinned here: mode's worker hands SIGTERM and SIGINT to ``_on_sigterm`` / ``_on_sigint`` (which
:class:`agents.lifecycle.Worker` overrides to start its stop deadline); Faust reads an agent's name and a
task's arguments through the wrapper :func:`agents.lifecycle.guarded` puts around them; mode marks the app
with ``crash_reason`` when a child service crashes.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import faust
import pytest
from mode import Service

from agents.lifecycle import (EXIT_CRASHED, EXIT_STATE_WRITE, StateWriteFailed, Worker, guarded, state_write)

ROOT = Path(__file__).resolve().parents[2]


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    code = "import asyncio, logging, sys\nlogging.basicConfig()\nfrom agents.lifecycle import *\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_an_exception_escaping_a_guarded_coroutine_ends_the_process_with_its_traceback() -> None:
    proc = run_script("""
        @guarded
        async def learn(stream):
            raise ValueError("bad batch")
        asyncio.run(learn(None))
        print("still running")
    """)
    assert proc.returncode == EXIT_CRASHED
    assert "learn crashed: ValueError: bad batch" in proc.stderr and "Traceback" in proc.stderr
    assert "still running" not in proc.stdout


def test_a_failed_state_write_ends_the_process_with_its_own_code() -> None:
    proc = run_script("""
        def persist():
            raise OSError(28, "No space left on device")
        @guarded
        async def learn(stream):
            with state_write():
                persist()
        asyncio.run(learn(None))
    """)
    assert proc.returncode == EXIT_STATE_WRITE
    assert "writing the state failed (OSError: [Errno 28] No space left on device)" in proc.stderr


def test_cancellation_is_not_a_crash() -> None:
    async def main() -> None:
        @guarded
        async def learn(stream: Any) -> None:
            await asyncio.sleep(10)

        task = asyncio.ensure_future(learn(None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # the process is still here: no exit


def test_state_write_keeps_the_cause() -> None:
    with pytest.raises(StateWriteFailed) as caught:
        with state_write():
            raise RuntimeError("IO error: File too large")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_guarded_keeps_what_faust_reads_of_agents_and_tasks() -> None:
    async def learn(stream: faust.StreamT) -> None: ...

    async def follow() -> None: ...

    wrapped = guarded(learn)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__module__) == (learn.__name__, learn.__qualname__,
                                                                             learn.__module__)
    assert list(inspect.signature(wrapped).parameters) == ["stream"]
    assert not inspect.signature(guarded(follow)).parameters  # Faust calls a task without ``app`` then

    app = faust.App("guarded-names", broker="kafka://127.0.0.1:9", web_enabled=False)
    agent = app.agent(app.topic("t"))(guarded(learn))
    assert agent.name == app.agent(app.topic("u"), name=None)(learn).name


class FakeLoop:
    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}

    def add_signal_handler(self, sig: int, callback: Any) -> None:
        self.handlers[sig] = callback


def test_mode_hands_sigterm_and_sigint_to_the_methods_the_worker_overrides() -> None:
    app = faust.App("signals", broker="kafka://127.0.0.1:9", web_enabled=False)
    worker = Worker(app, stop_timeout_s=5.0, loglevel="WARNING", override_logging=False)
    worker.loop = FakeLoop()  # type: ignore[assignment]
    worker.install_signal_handlers()
    handlers = worker.loop.handlers  # type: ignore[attr-defined]
    assert handlers[signal.SIGTERM] == worker._on_sigterm and handlers[signal.SIGINT] == worker._on_sigint
    assert type(worker)._on_sigterm is not faust.Worker._on_sigterm  # ours, which arms the deadline


def test_mode_marks_the_app_when_one_of_its_services_crashes() -> None:
    async def main() -> BaseException | None:
        app = faust.App("crash-mark", broker="kafka://127.0.0.1:9", web_enabled=False)
        child = Service()
        app.add_dependency(child)  # a child like Faust's fetcher or consumer thread
        await child.crash(RuntimeError("fetcher died"))
        return app.crash_reason

    reason = asyncio.run(main())
    assert isinstance(reason, RuntimeError) and str(reason) == "fetcher died"
