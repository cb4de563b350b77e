"""When a worker ends, and with what exit code: it never lingers unable to make progress.

A worker is meant to run under a supervisor (systemd, Kubernetes, Docker's restart policy) that starts it
again when it exits non-zero. So a worker that cannot make progress ends at once, with a code that says
why, rather than stay up with its metrics answering and nothing applied:

- an exception escaping an agent or a task (Faust would log it and restart the agent, or leave it dead),
  or a crash of one of Faust's own services (the fetcher, the consumer thread), which Faust only marks:
  :data:`EXIT_CRASHED`;
- its state could not be written (a full disk, a failing volume): :data:`EXIT_STATE_WRITE`;
- no broker answered for ``STREAM_REC_BROKER_UNREACHABLE_S`` (:mod:`agents.broker_watch`):
  :data:`EXIT_BROKER_UNREACHABLE`.

Such an end is abrupt on purpose (:func:`fatal`): nothing is committed, flushed or persisted after the
failure, so everything not yet in the state is delivered again to whoever owns the partition next, and
the stored offsets make that exactly-once. A graceful stop could not promise it: Faust acks a batch's
events when the generator that yielded them is closed, even when the agent failed on that batch, and
would commit them on its way out.

SIGTERM and SIGINT stop the worker gracefully, as Faust does, but within ``STREAM_REC_STOP_TIMEOUT_S``:
after that the process ends with :data:`EXIT_STOP_TIMEOUT`, whatever it was waiting for (a broker that
is gone or paused can hold Faust's shutdown for minutes). A stop that finishes in time exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import faust

log = logging.getLogger(__name__)

#: sysexits.h codes, so a supervisor's log says what kind of failure ended the worker.
EXIT_CRASHED = 70  # EX_SOFTWARE
EXIT_BROKER_UNREACHABLE = 69  # EX_UNAVAILABLE
EXIT_STATE_WRITE = 74  # EX_IOERR
EXIT_STOP_TIMEOUT = 75  # EX_TEMPFAIL

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


class StateWriteFailed(RuntimeError):
    """Persisting a batch failed; the worker cannot go on without losing what it applied."""


@contextmanager
def state_write() -> Iterator[None]:
    """Turn any failure of the block (``service.persist``) into :class:`StateWriteFailed`."""
    try:
        yield
    except Exception as err:
        raise StateWriteFailed(f"{type(err).__name__}: {err}") from err


def fatal(code: int, message: str, exc: BaseException | None = None) -> NoReturn:
    """Log ``message`` (with the traceback of ``exc``) and end the process with ``code`` at once.

    ``os._exit``: no ``finally`` blocks, no Faust shutdown, no commit of offsets acked since the last
    persisted batch; the supervisor restarts the worker and the group redelivers what was not persisted.
    """
    log.critical("%s; exiting with code %d", message, code, exc_info=exc)
    _flush_logs()
    os._exit(code)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - a broken log must not stop the exit
            pass


def guarded(fun: F) -> F:
    """Wrap an agent or task body: an exception escaping it ends the process (:func:`fatal`).

    Cancellation (a rebalance, a stop) is not an exception here and passes through. The wrapper keeps the
    function's name, module and signature, which Faust reads to name agents and to call tasks.
    """

    @functools.wraps(fun)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fun(*args, **kwargs)
        except StateWriteFailed as err:
            fatal(EXIT_STATE_WRITE, f"{fun.__name__}: writing the state failed ({err})", err)
        except Exception as err:
            fatal(EXIT_CRASHED, f"{fun.__name__} crashed: {type(err).__name__}: {err}", err)

    return run  # type: ignore[return-value]


#: Seconds between two looks for a crash that Faust recorded but did not act on.
CRASH_CHECK_S = 1.0


async def exit_on_crash(app: faust.App) -> None:
    """A task: end the process once a Faust service has crashed (its fetcher, its consumer thread).

    mode marks a crashed service and its parents, up to the app, with ``crash_reason`` and otherwise leaves
    the worker running, consuming nothing; this turns that mark into an exit.
    """
    while True:
        await asyncio.sleep(CRASH_CHECK_S)
        reason = app.crash_reason
        if reason is not None:
            fatal(EXIT_CRASHED, f"a Faust service crashed: {type(reason).__name__}: {reason}", reason)


class Worker(faust.Worker):
    """Faust's worker with a deadline on stopping: a SIGTERM or SIGINT ends the process within
    ``stop_timeout_s`` seconds, cleanly (exit 0) when Faust's shutdown finishes in time, else with
    :data:`EXIT_STOP_TIMEOUT`.

    The deadline runs on a timer thread, so it fires even while the event loop waits on a broker that
    does not answer.
    """

    def __init__(self, app: faust.App, *, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # Faust's start-up spinner writes terminal escapes (hide and show the cursor) even when its output is
        # a file, a pipe or a container's log; the log says when the worker is ready ("Ready", and /readyz).
        self.spinner = None
        self.stop_timeout_s = stop_timeout_s
        self._deadline: threading.Timer | None = None

    def _on_sigterm(self) -> None:
        self.arm_stop_deadline("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.arm_stop_deadline("SIGINT")
        super()._on_sigint()

    def arm_stop_deadline(self, why: str) -> None:
        """Start the countdown (once): the process ends ``stop_timeout_s`` from now at the latest."""
        if self._deadline is None:
            log.info("%s: stopping, %.0f s at most", why, self.stop_timeout_s)
            self._deadline = threading.Timer(self.stop_timeout_s, self._overdue, args=(why,))
            self._deadline.daemon = True
            self._deadline.start()

    def _overdue(self, why: str) -> None:
        log.error("the worker did not stop within %.0f s of %s; exiting with code %d",
                  self.stop_timeout_s, why, EXIT_STOP_TIMEOUT)
        _flush_logs()
        os._exit(EXIT_STOP_TIMEOUT)


def run(worker: Worker) -> int:
    """Run ``worker`` until it stops; its exit code (Faust's own: 0, or 1 if it crashed on the way)."""
    try:
        worker.execute_from_commandline()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0

