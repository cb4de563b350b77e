"""How long a consumer group's changes stop the work: the pause a join or a leave causes, the takeover after kill -9.

Both are read from the recommendations topic, which tells when each user's events were applied: a worker
publishes one list per touched user per micro-batch, stamped ``generated_at`` with its wall clock (the same
clock as this process: one host). A :class:`PacedProducer` keeps every partition busy with a steady trickle
of events from users whose partition is known, so a partition's lists come every few tens of milliseconds
while it is served and stop while nobody serves it.

- **pause**: the longest time a partition went without a list around a join or a leave, over the partitions
  that stayed with the same worker (their worker is one of those that stay; with Faust's eager rebalancing
  every partition stops, so this is the time those workers applied nothing).
- **takeover**: from the kill to the first list from any partition the killed worker owned.

``python -m tools.group_timing`` runs the whole scenario (two workers, a third joins, leaves, then one of the
first two is killed) against the embedded broker and prints the figures; the integration tests
(``tests/integration/test_group.py``) run the same steps and assert on them.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kafka.partitioner.default import murmur2

from stream_rec.settings import Settings
from stream_rec.wire import STRANGER_KEY
from tools.produce import make_producer, read_topic
from tools.workers import WorkerProcess

ASSIGNED = "stream_rec_worker_assigned_partitions"
_OWNS = re.compile(r"worker (\S+) owns partitions \[([0-9, ]*)\]")


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's, aiokafka's, kafka-python's) gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def users_per_partition(partitions: int, per_partition: int, prefix: str = "pace") -> dict[int, list[str]]:
    """``per_partition`` user ids for each partition of the user-keyed topic."""
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(users) < per_partition for users in found.values()):
        user = f"{prefix}-{n}"
        users = found[partition_of(user, partitions)]
        if len(users) < per_partition:
            users.append(user)
        n += 1
    return found


class PacedProducer(threading.Thread):
    """Sends ``rate`` view events a second, spread evenly over ``users``, until :meth:`stop`."""

    def __init__(self, settings: Settings, users: Sequence[str], rate: float = 200.0, tick_s: float = 0.01) -> None:
        super().__init__(daemon=True, name="paced-producer")
        self.settings, self.users, self.rate, self.tick_s = settings, list(users), rate, tick_s
        self.sent = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        producer = make_producer(self.settings.kafka_bootstrap, self.settings)
        started = time.monotonic()
        try:
            while not self._stopped.wait(self.tick_s):
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    user = self.users[self.sent % len(self.users)]
                    event = {"user_id": user, "item_id": f"item-{self.sent % 50}", "type": "view",
                             "ts": int(time.time() * 1000)}
                    producer.send(self.settings.topic_browse, key=user.encode(), value=json.dumps(event).encode())
                    self.sent += 1
            producer.flush()
        finally:
            producer.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=30)


def owned(worker: WorkerProcess) -> list[int] | None:
    """The partitions the worker's last assignment gave it, read from its log (None before its first)."""
    if worker.log_path is None or not worker.log_path.exists():
        return None
    found = _OWNS.findall(worker.log_path.read_text(errors="replace"))
    if not found:
        return None
    return [int(p) for p in found[-1][1].split(",") if p.strip()]


def wait_for_assignment(workers: Sequence[WorkerProcess], partitions: int, timeout_s: float = 90.0,
                        *, each_at_least: int = 1) -> list[int]:
    """Wait until every worker owns ``each_at_least`` partitions by its metric and all own them together."""
    deadline = time.monotonic() + timeout_s
    counts: list[int] = []
    while time.monotonic() < deadline:
        for worker in workers:
            worker._check_alive()
        counts = [int(w.metrics().get(ASSIGNED, 0)) for w in workers]
        if all(n >= each_at_least for n in counts) and sum(counts) == partitions:
            return counts
        time.sleep(0.2)
    raise TimeoutError(f"partitions never shared as asked: {counts} of {partitions}")


def list_times(settings: Settings) -> dict[int, list[float]]:
    """When each partition's lists were made (seconds, wall clock), in order."""
    times: dict[int, list[float]] = {p: [] for p in range(settings.partitions)}
    for message in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=1500, security=settings):
        if message.key == STRANGER_KEY:  # any worker publishes it: it says nothing of a partition
            continue
        payload = json.loads(message.value)
        times[partition_of(payload["user_id"], settings.partitions)].append(payload["generated_at"] / 1000.0)
    return {p: sorted(ts) for p, ts in times.items()}


def longest_gap(times: Sequence[float], start: float, end: float) -> float:
    """The longest time between two consecutive lists that overlaps ``[start, end]`` (``end - start`` if none)."""
    longest = 0.0
    inside = [t for t in times if start <= t <= end]
    before = [t for t in times if t < start][-1:]
    after = [t for t in times if t > end][:1]
    points = before + inside + after
    if len(points) < 2:
        return end - start
    for a, b in zip(points, points[1:]):
        longest = max(longest, b - a)
    return longest


def first_after(times: Iterable[float], moment: float) -> float | None:
    later = [t for t in times if t > moment]
    return min(later) if later else None


@dataclass
class Change:
    """One group change: when it began, when the group had settled again, who owned what before and after."""

    name: str
    began: float
    settled: float
    before: dict[str, list[int]]
    after: dict[str, list[int]]

    def kept(self) -> list[int]:
        """Partitions that stayed with the same worker."""
        return sorted({p for w, ps in self.before.items() for p in ps if p in self.after.get(w, [])})

    def pause(self, times: dict[int, list[float]], margin_s: float = 2.0) -> float:
        """Longest stop of a kept partition (of any partition if none was kept) from the change to settling."""
        parts = self.kept() or sorted(times)
        return max(longest_gap(times[p], self.began, self.settled + margin_s) for p in parts)

    def takeover(self, times: dict[int, list[float]], dead: str) -> float | None:
        """From the change (a kill) to the first list of a partition ``dead`` owned."""
        firsts = [first_after(times[p], self.began) for p in self.before.get(dead, [])]
        firsts = [t for t in firsts if t is not None]
        return min(firsts) - self.began if firsts else None


def ownership(workers: dict[str, WorkerProcess]) -> dict[str, list[int]]:
    return {name: owned(w) or [] for name, w in workers.items() if w.proc is not None and w.proc.poll() is None}


def settle(workers: dict[str, WorkerProcess], partitions: int, timeout_s: float, each_at_least: int = 1) -> float:
    live = [w for w in workers.values() if w.proc is not None and w.proc.poll() is None]
    wait_for_assignment(live, partitions, timeout_s, each_at_least=min(each_at_least, partitions // len(live)))
    return time.time()


def run_scenario(settings: Settings, workdir: Path, *, rate: float = 200.0, steady_s: float = 3.0,
                 timeout_s: float = 90.0, log=print) -> dict[str, float | None]:  # type: ignore[no-untyped-def]
    """Two workers, a third joins, then leaves (SIGTERM), then one of the first two is killed (SIGKILL).

    Returns the pause of the join and of the leave, the takeover after the kill, and the events sent.
    With ``each_at_least`` the wait for a settled group accepts an empty member only where Faust gives one
    (it is the thing measured elsewhere), so this runs against the old settings too.
    """
    users = [u for us in users_per_partition(settings.partitions, 4).values() for u in us]
    workers: dict[str, WorkerProcess] = {}

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(replace(settings, worker_id=name), log_path=workdir / f"{name}.log").start()
        workers[name] = worker
        return worker

    producer = PacedProducer(settings, users, rate)
    changes: list[Change] = []
    try:
        start("w1"), start("w2")
        settle(workers, settings.partitions, timeout_s)
        producer.start()
        time.sleep(steady_s)

        began, before = time.time(), ownership(workers)
        joined = start("w3")
        _wait_owned(joined, timeout_s)
        settled = settle(workers, settings.partitions, timeout_s, each_at_least=0)
        time.sleep(steady_s)
        changes.append(Change("join", began, settled, before, ownership(workers)))
        log(f"join: {changes[-1].before} -> {changes[-1].after}")

        began, before = time.time(), ownership(workers)
        code = joined.stop(signal.SIGTERM)
        settled = settle(workers, settings.partitions, timeout_s)
        time.sleep(steady_s)
        changes.append(Change("leave", began, settled, before, ownership(workers)))
        log(f"leave (exit code {code}): {changes[-1].before} -> {changes[-1].after}")

        began, before = time.time(), ownership(workers)
        workers["w2"].stop(signal.SIGKILL)
        settled = settle(workers, settings.partitions, timeout_s)
        time.sleep(steady_s)
        changes.append(Change("kill", began, settled, before, ownership(workers)))
        log(f"kill -9: {changes[-1].before} -> {changes[-1].after}")
    finally:
        producer.stop()
        time.sleep(1.0)
        for worker in workers.values():
            worker.stop()
    times = list_times(settings)
    join, leave, kill = changes
    return {"join_pause_s": join.pause(times), "leave_pause_s": leave.pause(times),
            "takeover_s": kill.takeover(times, "w2"), "events_sent": float(producer.sent)}


def run_restart(settings: Settings, workdir: Path, *, sig: int = signal.SIGTERM, rate: float = 200.0,
                steady_s: float = 3.0, timeout_s: float = 90.0, log=print) -> dict[str, float | None]:  # type: ignore[no-untyped-def]
    """Two workers; one is stopped with ``sig`` and started again at once (what a supervisor does).

    Returns the pause on the worker that stayed and the time from the stop to the first list again from
    the restarted worker's former partitions (whoever serves them).
    """
    users = [u for us in users_per_partition(settings.partitions, 4).values() for u in us]
    workers: dict[str, WorkerProcess] = {}

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(replace(settings, worker_id=name), log_path=workdir / f"{name}-{len(workers)}.log")
        workers[f"{name}#{len(workers)}"] = worker.start()
        return worker

    producer = PacedProducer(settings, users, rate)
    try:
        start("w1"), start("w2")
        settle(workers, settings.partitions, timeout_s)
        producer.start()
        time.sleep(steady_s)
        began, before = time.time(), ownership(workers)
        workers["w2#1"].stop(sig)
        stopped = time.time()
        _wait_owned(start("w2"), timeout_s)
        settled = settle(workers, settings.partitions, timeout_s)
        time.sleep(steady_s)
        change = Change("restart", began, settled, before, ownership(workers))
        log(f"restart: {change.before} -> {change.after}")
    finally:
        producer.stop()
        time.sleep(1.0)
        for worker in workers.values():
            worker.stop()
    times = list_times(settings)
    stayed = Change("stay", began, settled, {"w1#0": before["w1#0"]}, {"w1#0": change.after.get("w1#0", [])})
    back = replace(change, began=stopped)
    return {"stayed_pause_s": stayed.pause(times), "stop_s": stopped - began, "back_s": back.takeover(times, "w2#1"),
            "events_sent": float(producer.sent)}


def _wait_owned(worker: WorkerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while owned(worker) is None:
        worker._check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.settings.worker_id} never got an assignment (log: {worker.log_path})")
        time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from stream_rec.settings import TOPIC_FIELDS
    from tools.broker import EmbeddedBroker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=1, help="scenarios in a row (default: %(default)s)")
    parser.add_argument("--restart", action="store_true", help="measure a worker's restart instead")
    parser.add_argument("--keep", help="keep logs and state in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="group-timing-") as scratch, EmbeddedBroker() as broker:
        tmp = args.keep or scratch
        for run in range(args.runs):
            prefix = f"timing-{run}-{int(time.time())}"
            topics = {name: f"{prefix}.{getattr(Settings, name)}" for name in TOPIC_FIELDS}
            settings = replace(Settings.from_env(), kafka_bootstrap=broker.bootstrap, app_id=prefix,
                               data_dir=str(Path(tmp) / prefix), metrics_port=0, explore=0.0, **topics)
            workdir = Path(tmp) / f"{prefix}-logs"
            workdir.mkdir()
            scenario = run_restart if args.restart else run_scenario
            print(json.dumps(scenario(settings, workdir, rate=args.rate)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
