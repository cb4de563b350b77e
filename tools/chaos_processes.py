"""The processes of a chaos run (:mod:`tools.chaos`): workers under a supervisor, a paced producer, and a
reader that follows the user-state changelog for the whole run."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.security import kafka_python_options
from agents.state import PID_HEADER, WORKER_HEADER
from stream_rec.settings import Settings
from stream_rec.state.changelog import FENCE_KEY, MARKS_KEY, decode_user_row
from tools import chaos_analysis as ca
from tools.checker import Expected, Verdict, compare
from tools.produce import make_producer
from tools.workers import WorkerProcess

log = logging.getLogger(__name__)

ASSIGNED = "stream_rec_worker_assigned_partitions"
#: Precedes each process's lines in its worker's log (with the process's number).
MARKER = "---- chaos: start #"

# -- the supervisor -------------------------------------------------------------------------------

@dataclass
class Instance:
    """One process of a worker."""

    worker_id: str
    pid: int
    started_ms: int
    log_segment: int  # its part of the worker's log follows the marker with this number
    code: int | None = None
    ended_ms: int | None = None
    cause: str | None = None  # what chaos did to end it: kill, leave, stop; None: it exited by itself

    @property
    def writer(self) -> str:
        """How its marks records name it (:func:`tools.chaos_analysis.writer_of`)."""
        return f"{self.worker_id}/{self.pid}"


@dataclass
class _Slot:
    worker_id: str
    process: WorkerProcess | None = None
    instance: Instance | None = None
    supervised: bool = True  # restart when it exits
    held: bool = False  # a fault works on its folder: do not restart yet
    restart_at: float | None = None
    cause: str | None = None  # the cause of the exit chaos is bringing about


class Supervisor:
    """Starts workers, restarts one that exits (after ``restart_delay_s``, unless a fault holds it or it was
    told to leave), and records every process and how it ended."""

    def __init__(self, settings: Settings, logs: Path, restart_delay_s: float) -> None:
        self.settings, self.logs, self.restart_delay_s = settings, logs, restart_delay_s
        self.instances: list[Instance] = []
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self._stop.set()
        self._thread.join(timeout=5)

    def start(self, worker_id: str) -> Instance:
        """Start (or restart) ``worker_id`` under supervision."""
        with self._lock:
            slot = self._slots.setdefault(worker_id, _Slot(worker_id))
            slot.supervised, slot.held, slot.restart_at, slot.cause = True, False, None, None
            return self._launch(slot)

    def _launch(self, slot: _Slot) -> Instance:
        path = self.logs / f"{slot.worker_id}.log"
        segment = sum(1 for i in self.instances if i.worker_id == slot.worker_id)
        with open(path, "a") as out:  # a marker, so each process's lines can be found in the shared log
            out.write(f"{MARKER}{segment} of {slot.worker_id} at {time.strftime('%H:%M:%S')} ----\n")
        settings = replace(self.settings, worker_id=slot.worker_id, metrics_port=0)
        slot.process = WorkerProcess(settings, log_path=path).start()
        assert slot.process.proc is not None
        slot.instance = Instance(slot.worker_id, slot.process.proc.pid, now_ms(), segment)
        self.instances.append(slot.instance)
        log.info("started %s (pid %d)", slot.worker_id, slot.instance.pid)
        return slot.instance

    def running(self) -> list[str]:
        """Workers whose process is up, supervised and not held by a fault."""
        with self._lock:
            return sorted(s.worker_id for s in self._slots.values() if s.supervised and not s.held
                          and s.process is not None and s.process.proc is not None and s.process.proc.poll() is None)

    def idle(self) -> list[str]:
        """Workers that left and are not running: their ids (and state folders) can join again."""
        with self._lock:
            return sorted(s.worker_id for s in self._slots.values() if not s.supervised and s.instance
                          and s.instance.code is not None)

    def instance(self, worker_id: str) -> Instance | None:
        with self._lock:
            slot = self._slots.get(worker_id)
            return slot.instance if slot else None

    def owns_partitions(self, worker_id: str) -> bool:
        with self._lock:
            process = self._slots[worker_id].process
        return process is not None and process.metrics().get(ASSIGNED, 0.0) > 0

    def processes(self) -> list[WorkerProcess]:
        with self._lock:
            return [s.process for s in self._slots.values() if s.process is not None and s.supervised]

    def kill(self, worker_id: str, *, hold: bool = False) -> Instance:
        """kill -9 ``worker_id``; with ``hold`` it is not restarted until :meth:`release`. Returns the killed
        process, after it is gone."""
        with self._lock:
            slot = self._slots[worker_id]
            slot.held, slot.cause = hold, "kill"
            process, instance = slot.process, slot.instance
        assert process is not None and process.proc is not None and instance is not None
        instance.ended_ms = now_ms()  # the kill's time; the exit is recorded when the watcher sees it
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait()
        return instance

    def release(self, worker_id: str) -> None:
        with self._lock:
            slot = self._slots[worker_id]
            slot.held = False
            slot.restart_at = time.monotonic() + self.restart_delay_s

    def leave(self, worker_id: str) -> Instance:
        """SIGTERM ``worker_id``: a graceful stop that the supervisor does not undo."""
        with self._lock:
            slot = self._slots[worker_id]
            slot.supervised, slot.cause = False, "leave"
            assert slot.process is not None and slot.process.proc is not None and slot.instance is not None
            slot.process.proc.send_signal(signal.SIGTERM)
            return slot.instance

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every running worker and wait for them (the end of the run)."""
        with self._lock:
            slots = [s for s in self._slots.values() if s.process is not None and s.process.proc is not None
                     and s.process.proc.poll() is None]
            for slot in slots:
                slot.supervised, slot.cause = False, "stop"
                slot.process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for slot in slots:
            proc = slot.process.proc  # type: ignore[union-attr]
            try:
                proc.wait(timeout=timeout_s)  # not WorkerProcess.stop: a second SIGTERM ends Faust's shutdown
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self._reap()

    def _reap(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                proc = slot.process.proc if slot.process is not None else None
                instance = slot.instance
                if proc is not None and instance is not None and instance.code is None and proc.poll() is not None:
                    instance.code, instance.cause = proc.returncode, slot.cause
                    instance.ended_ms = instance.ended_ms if slot.cause == "kill" else now_ms()
                    slot.cause = None
                    if instance.cause is None:
                        log.warning("%s (pid %d) exited with code %d by itself", slot.worker_id, instance.pid,
                                    instance.code)
                    if slot.supervised and not slot.held:
                        slot.restart_at = time.monotonic() + self.restart_delay_s
                if slot.restart_at is not None and not slot.held and slot.supervised and time.monotonic() >= slot.restart_at:
                    slot.restart_at = None
                    self._launch(slot)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- producing and following ----------------------------------------------------------------------

class PacedProducer(threading.Thread):
    """Sends ``messages`` at ``rate`` per second from a thread; ``sent`` counts them."""

    def __init__(self, settings: Settings, messages: list[tuple[str, bytes, bytes]], rate: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.settings, self.messages, self.rate = settings, messages, rate
        self.sent = 0
        self.failed = 0
        self.started_at = 0.0

    def run(self) -> None:
        producer = make_producer(self.settings.kafka_bootstrap, self.settings)
        self.started_at = time.monotonic()
        tick = max(1, round(self.rate / 100))  # about every 10 ms
        try:
            for start in range(0, len(self.messages), tick):
                for topic, key, value in self.messages[start:start + tick]:
                    producer.send(topic, key=key, value=value).add_errback(self._failed)
                self.sent = min(start + tick, len(self.messages))
                time.sleep(max(0.0, self.started_at + self.sent / self.rate - time.monotonic()))
            producer.flush(timeout=120)
        finally:
            producer.close()

    def _failed(self, err: Exception) -> None:
        self.failed += 1
        log.error("producing an event failed: %s", err)


class ChangelogFollower(threading.Thread):
    """Reads the user-state changelog from its start for the whole run: every row, marks record and fence
    (for :mod:`tools.chaos_analysis`), and the latest row of each user (for the checker)."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        super().__init__(name="chaos-changelog", daemon=True)
        self.bootstrap, self.settings = bootstrap, settings
        self.rows: list[ca.Row] = []
        self.marks: list[ca.Marks] = []
        self.fences: list[ca.Fence] = []
        self.latest: dict[str, Any] = {}
        self.applied = 0  # events the users' latest rows count together
        self._writers: set[str] = set()
        self.last_record = time.monotonic()
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap.split(","), group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 **kafka_python_options(self.settings))
        try:
            tps = [TopicPartition(self.settings.topic_user_state, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self._halt.is_set():
                for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                    with self._lock:
                        for record in records:
                            self._take(record)
                    self.last_record = time.monotonic()
        except Exception:  # the run then waits in vain: say why
            log.exception("reading the changelog failed")
        finally:
            consumer.close()

    def _take(self, record: Any) -> None:
        key = record.key or b""
        if key == MARKS_KEY:
            writer = ca.writer_of(record.headers, WORKER_HEADER, PID_HEADER)
            self.marks.append(ca.Marks(record.partition, record.offset, record.timestamp, writer))
            self._writers.add(writer)
        elif key == FENCE_KEY:
            writer = ca.writer_of(record.headers, WORKER_HEADER, PID_HEADER)
            self.fences.append(ca.Fence(record.partition, record.offset, record.timestamp, writer))
        elif not key.startswith(b"\x00") and record.value is not None:
            row = decode_user_row(key, record.value)
            before = self.latest.get(row.user_id)
            self.applied += sum(row.counts) - (sum(before.counts) if before is not None else 0)
            self.latest[row.user_id] = row
            self.rows.append(ca.Row(record.partition, record.offset, record.timestamp, row.user_id, tuple(row.counts),
                                    row.digest, row.marks, tuple(item for item, _ in row.purchases)))

    def marks_now(self) -> list[ca.Marks]:
        """The marks records read so far."""
        with self._lock:
            return list(self.marks)

    def writers(self) -> set[str]:
        """The processes that wrote marks records so far."""
        with self._lock:
            return set(self._writers)

    def verdict(self, expected: Expected) -> Verdict:
        with self._lock:
            return compare(expected, dict(self.latest))

    def idle_s(self) -> float:
        return time.monotonic() - self.last_record

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


