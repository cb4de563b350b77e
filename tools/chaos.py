"""``stream-rec chaos``: run workers under faults and check from Kafka that every event was applied exactly once.

One run:

1. a broker (the embedded one unless ``--bootstrap``) and a seeded synthetic shop whose events carry no
   ``event_id`` (``--keep-event-ids`` keeps them), so exactly-once rests on offsets alone;
2. N workers under a supervisor (:class:`Supervisor`) that restarts one that exits, after a short delay,
   as systemd or Kubernetes would;
3. the events produced at a steady rate while a seeded schedule of faults runs (:func:`schedule`): kill -9
   of a random worker, joins (an extra worker) and leaves (SIGTERM), broker pauses (SIGSTOP/SIGCONT), and a
   worker killed whose state folder is deleted, or has random bytes written into a table file, before it
   restarts;
4. a wait until the user-state changelog reflects every event, then the verdict: the changelog's rows
   against the events in the input topics (:mod:`tools.checker`), every row checked as it was written,
   takeover times, moves, the users whose partition moved (:mod:`tools.chaos_analysis`).

The command exits 0 only if nothing was lost, nothing applied twice, no user holds a wrong set of events,
every takeover took at most ``--takeover-limit-s``, every damaged folder was rebuilt (its worker wrote to
the changelog again) and no worker exited by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agents.topics import ensure_topics
from stream_rec.ids import kafka_partition
from stream_rec.settings import TOPIC_FIELDS, Settings
from stream_rec.synth import ShopConfig, SyntheticShop
from tools import chaos_analysis as ca
from tools.argtypes import output_file, output_folder
from tools.broker import EmbeddedBroker
from tools.chaos_processes import ASSIGNED, MARKER, ChangelogFollower, Instance, PacedProducer, Supervisor
from tools.checker import Expected, expected_from
from tools.produce import read_topic, topic_for

log = logging.getLogger(__name__)

ENV_PREFIX = "STREAM_REC_CHAOS_"
#: Exit codes a report names (agents.lifecycle), negative ones are the signal that ended the process.
EXIT_NAMES = {0: "clean stop", 1: "start-up failure", 69: "broker unreachable", 70: "crashed",
              74: "state write failed", 75: "stop timed out", -signal.SIGKILL: "SIGKILL", -signal.SIGTERM: "SIGTERM"}
#: Share of the stream before the first fault and after the last: the group settles first, and the last
#: takeover still has events to write.
_FAULTS_FROM, _FAULTS_TO = 0.05, 0.9


@dataclass(frozen=True)
class ChaosConfig:
    """Size, faults and limits of a chaos run (each is a ``stream-rec chaos`` option)."""

    events: int = 100_000
    users: int = 10_000
    items: int = 5_000
    seed: int = 0
    workers: int = 3
    #: Partitions of the run's topics; 0: max(4, workers + 1), so a joining worker has one to take.
    partitions: int = 0
    #: Events per second; 0: slow enough that the faults fit ``fault_gap_s`` apart (see :func:`auto_rate`).
    rate: float = 0.0
    kills: int = 10
    moves: int = 5
    broker_pauses: int = 1
    pause_s: float = 5.0
    delete_state: int = 1
    corrupt_state: int = 1
    keep_event_ids: bool = False
    #: Seconds the supervisor waits before restarting a worker that exited.
    restart_delay_s: float = 1.0
    #: Mean spacing of faults when the rate is chosen automatically: a kill plays out in about 20 s here (the
    #: takeover, ~10 s, then the restarted worker's join), and the next measured fault waits for it anyway.
    fault_gap_s: float = 20.0
    takeover_limit_s: float = 15.0
    #: Longest wait, after the last event was produced, for the changelog to reflect every event.
    catch_up_timeout_s: float = 300.0
    bootstrap: str = ""
    #: Keep logs and state here (empty: a temporary folder, removed after a run that passed).
    workdir: str = ""

    @property
    def n_faults(self) -> int:
        return self.kills + 2 * self.moves + self.broker_pauses + self.delete_state + self.corrupt_state

    def partitions_for(self) -> int:
        return self.partitions or max(4, self.workers + 1)


def auto_rate(config: ChaosConfig) -> float:
    """The default rate: the faults spread ``fault_gap_s`` apart over the middle 85 % of the stream (at
    least 30 s of stream).

    >>> round(auto_rate(ChaosConfig()), 1)  # 23 faults, 20 s apart over 85 % of the stream: 541 s
    184.8
    """
    seconds = max(30.0, config.n_faults * config.fault_gap_s / (_FAULTS_TO - _FAULTS_FROM))
    return config.events / seconds


# -- the fault schedule ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """A fault due ``at_s`` seconds after the first event was produced."""

    at_s: float
    kind: str  # kill | join | leave | pause | delete | corrupt


def schedule(config: ChaosConfig, duration_s: float, rng: random.Random) -> list[Fault]:
    """The faults in a seeded order (each leave after its join and before the next join, damaged folders in
    the first half), evenly spread (with jitter) over the middle of a stream lasting ``duration_s``.

    >>> faults = schedule(ChaosConfig(kills=2, moves=1, broker_pauses=0, corrupt_state=0), 100.0, random.Random(1))
    >>> sorted(f.kind for f in faults), all(5 <= f.at_s <= 90 for f in faults)
    (['delete', 'join', 'kill', 'kill', 'leave'], True)
    >>> [f.kind for f in faults].index("join") < [f.kind for f in faults].index("leave")
    True
    """
    kinds = ["kill"] * config.kills + ["join"] * config.moves + ["pause"] * config.broker_pauses
    rng.shuffle(kinds)
    # Each join's leave comes after it and before the next join: the group is N or N + 1 workers, never
    # more than there are partitions (a worker beyond them would sit idle).
    joins = [n for n, kind in enumerate(kinds) if kind == "join"]
    for join, end in reversed(list(zip(joins, joins[1:] + [len(kinds)]))):
        kinds.insert(rng.randint(join + 1, end), "leave")
    # Damaged folders in the first half: a rebuilt worker shows that it serves again by writing to the
    # changelog, which needs events after its rebuild (30-50 s under load, measured).
    damage = ["delete"] * config.delete_state + ["corrupt"] * config.corrupt_state
    half = (len(kinds) + len(damage)) // 2
    for kind in damage:
        kinds.insert(rng.randint(0, max(0, half - 1)), kind)
    span = (_FAULTS_TO - _FAULTS_FROM) * duration_s
    return [Fault(round(duration_s * _FAULTS_FROM + span * (n + rng.uniform(0.4, 0.6)) / len(kinds), 2), kind)
            for n, kind in enumerate(kinds)]


# -- one run --------------------------------------------------------------------------------------

@dataclass
class FaultDone:
    """A fault as it happened."""

    kind: str
    at_s: float
    worker: str = ""
    pid: int = 0
    killed_ms: int = 0
    restarted: Instance | None = None
    note: str = ""


@dataclass
class Run:
    """Everything a chaos run keeps while it runs, for the report."""

    config: ChaosConfig
    settings: Settings
    workdir: Path
    rng: random.Random
    broker: EmbeddedBroker | None
    supervisor: Supervisor
    follower: ChangelogFollower
    faults: list[FaultDone] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    #: (seconds since the first event was produced, events produced, events the changelog reflects)
    progress: list[tuple[float, int, int]] = field(default_factory=list)
    next_worker: int = 1

    def new_worker_id(self) -> str:
        worker_id = f"w{self.next_worker}"
        self.next_worker += 1
        return worker_id


def run_chaos(config: ChaosConfig, settings: Settings, broker: EmbeddedBroker | None = None) -> dict[str, Any]:
    """Run the chaos described by ``config`` against ``settings``' topics and consumer group (their data
    folder is replaced by one in the work folder); the report (what ``--json`` writes).

    ``broker`` is the embedded broker to pause; without it (a broker given by address) pauses are skipped.
    """
    started = time.monotonic()
    with ExitStack() as stack:
        temporary = not config.workdir
        workdir = Path(config.workdir or tempfile.mkdtemp(prefix="stream-rec-chaos-"))
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        bootstrap = config.bootstrap or settings.kafka_bootstrap
        if not bootstrap:
            broker = stack.enter_context(EmbeddedBroker(log_path=str(workdir / "broker.log")))
            bootstrap = broker.bootstrap
        settings = replace(settings, kafka_bootstrap=bootstrap, partitions=config.partitions_for(),
                           data_dir=str(workdir / "data"), metrics_port=0)
        ensure_topics(settings, bootstrap)
        log.info("chaos run in %s against %s, topics of group %s", workdir, bootstrap, settings.app_id)
        shop = SyntheticShop(ShopConfig(n_users=config.users, n_items=config.items,
                                        n_categories=min(20, config.items), n_events=config.events, seed=config.seed))
        events = list(shop.events())
        if not config.keep_event_ids:
            for event in events:
                del event["event_id"]
        _warm_up()
        follower = ChangelogFollower(bootstrap, settings)
        follower.start()
        stack.callback(follower.stop)
        supervisor = stack.enter_context(Supervisor(settings, workdir / "logs", config.restart_delay_s))
        run = Run(config, settings, workdir, random.Random(config.seed), broker, supervisor, follower)
        for _ in range(config.workers):
            supervisor.start(run.new_worker_id())
        _wait_for_group(supervisor, settings.partitions)
        produced = _produce_under_faults(run, events)
        report = _finish(run, events, shop.complements, produced, started)
        if temporary and report["passed"]:
            stack.callback(shutil.rmtree, workdir, True)
        elif not report["passed"]:
            log.warning("kept the run's logs and state in %s", workdir)
        return report


def _warm_up() -> None:
    from stream_rec.service import warm_up

    warm_up()  # logs what it loads or compiles, and how long it took


def _settled(supervisor: Supervisor, partitions: int) -> list[int] | None:
    """The partitions each supervised worker owns, if every one owns some and together they own all."""
    owned = [int(p.metrics().get(ASSIGNED, 0.0)) for p in supervisor.processes()]
    return owned if owned and all(owned) and sum(owned) == partitions else None


def _wait_for_group(supervisor: Supervisor, partitions: int, timeout_s: float = 300.0) -> None:
    """Until the workers started first share the partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owned = _settled(supervisor, partitions)
        if owned:
            log.info("the group is formed: partitions per worker %s", owned)
            return
        time.sleep(0.5)
    raise TimeoutError(f"the workers did not share the {partitions} partitions within {timeout_s:.0f} s")


def _produce_under_faults(run: Run, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Produce every event at the run's rate while the fault schedule runs; how production went."""
    config, settings = run.config, run.settings
    rate = config.rate or auto_rate(config)
    duration = len(events) / rate
    faults = schedule(config, duration, run.rng)
    log.info("producing %d events at %.0f/s (%.0f s) with %d faults: %s", len(events), rate, duration, len(faults),
             dict(Counter(f.kind for f in faults)))
    messages = [(topic_for(e, settings), str(e["user_id"]).encode(), json.dumps(e).encode()) for e in events]
    producer = PacedProducer(settings, messages, rate)
    producer.start()
    with tqdm(total=len(messages), desc="produce", unit="ev", disable=not sys.stderr.isatty()) as bar:
        def tick() -> None:
            bar.update(producer.sent - bar.n)
            at = time.monotonic() - producer.started_at
            if producer.started_at and (not run.progress or at - run.progress[-1][0] >= _SAMPLE_S):
                run.progress.append((round(at, 1), producer.sent, run.follower.applied))

        def wait_until(at_s: float) -> None:
            while producer.is_alive() and (not producer.started_at or time.monotonic() - producer.started_at < at_s):
                tick()
                time.sleep(0.2)

        for fault in faults:
            wait_until(fault.at_s)
            _wait_for_takeovers(run, tick)
            if fault.kind in _MEASURED:
                _wait_for_stable_group(run, tick)
            if not producer.is_alive():
                log.warning("the stream ended before fault %s: skipped, with the ones after it", fault)
                break
            run.load.append(os.getloadavg()[0])
            done = FAULTS[fault.kind](run, time.monotonic() - producer.started_at)
            run.faults.append(done)
            log.info("fault %d/%d at %.1f s: %s %s %s", len(run.faults), len(faults), done.at_s, done.kind,
                     done.worker, done.note)
        wait_until(float("inf"))
        producer.join()
        bar.update(producer.sent - bar.n)
    ended = time.monotonic()
    seconds = ended - producer.started_at
    return {"rate": rate, "seconds": seconds, "achieved_rate": len(messages) / seconds, "failed": producer.failed,
            "ended": ended}


#: Faults whose takeover is measured: each waits for a settled group, so that it does not land in a rebalance
#: (a member that dies between rejoining and its assignment is given partitions it never serves, until the
#: session timeout and one more rebalance: the protocol's worst case, not a property of the worker).
_MEASURED = ("kill", "delete", "corrupt")


def _wait_for_stable_group(run: Run, tick: Callable[[], None], timeout_s: float = 30.0) -> None:
    """Until every supervised worker owns partitions and together they own all of them (at most
    ``timeout_s``: then the fault goes ahead and the report shows what it met)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _settled(run.supervisor, run.settings.partitions):
            return
        tick()
        time.sleep(0.3)
    log.warning("the group did not settle within %.0f s; the fault goes ahead", timeout_s)


#: Seconds between two samples of the backlog (events produced, events the changelog reflects).
_SAMPLE_S = 2.0


def _wait_for_takeovers(run: Run, tick: Callable[[], None]) -> None:
    """Until every partition of each worker killed so far is written again, or the takeover limit passed
    since its kill: a fault in the middle of a takeover would make it longer and measure both at once."""
    for done in run.faults:
        if not done.killed_ms:
            continue
        writer, assigned = f"{done.worker}/{done.pid}", _last_assignment(run, done)
        while (time.time() * 1000 - done.killed_ms < run.config.takeover_limit_s * 1000
               and ca.takeover(run.follower.marks_now(), writer, done.killed_ms, assigned).seconds is None):
            tick()
            time.sleep(0.3)


# -- the faults -----------------------------------------------------------------------------------

def _victim(run: Run, prefer: Callable[[str], bool] = lambda worker: True, wait_s: float = 10.0) -> str | None:
    """A random running worker that ``prefer`` likes (if any does) and that owns partitions: killing one that
    owns none (a worker still starting) tells nothing about takeovers. During a rebalance none owns any: wait
    up to ``wait_s`` for one to, then take any."""
    deadline = time.monotonic() + wait_s
    while True:
        rebuilding = _rebuilding(run)
        pool = [w for w in run.supervisor.running() if w not in rebuilding]
        pool = [w for w in pool if prefer(w)] or pool
        owning = [w for w in pool if run.supervisor.owns_partitions(w)]
        if owning or time.monotonic() > deadline:
            pool = owning or pool
            return run.rng.choice(pool) if pool else None
        time.sleep(0.5)


def _rebuilding(run: Run, within_s: float = 90.0) -> set[str]:
    """Workers whose damaged folder is being rebuilt: spared by later faults until the new process wrote to
    the changelog (or ``within_s`` passed), so the rebuild's time is measured whole."""
    seen = run.follower.writers()
    out = set()
    for done in run.faults:
        if done.kind in ("delete", "corrupt") and done.pid:
            new = done.restarted
            if new is None or (new.writer not in seen and time.time() * 1000 - new.started_ms < within_s * 1000):
                out.add(done.worker)
    return out


def fault_kill(run: Run, at_s: float) -> FaultDone:
    worker = _victim(run)
    if worker is None:
        return FaultDone("kill", at_s, note="skipped: no worker running")
    killed = run.supervisor.kill(worker)
    return FaultDone("kill", at_s, worker, killed.pid, killed.ended_ms or 0)


def fault_join(run: Run, at_s: float) -> FaultDone:
    idle = run.supervisor.idle()
    worker = idle[0] if idle else run.new_worker_id()  # a worker that left comes back with its old folder
    started = run.supervisor.start(worker)
    return FaultDone("join", at_s, worker, started.pid, note="(its folder from before)" if idle else "")


def fault_leave(run: Run, at_s: float) -> FaultDone:
    worker = _victim(run)
    if worker is None:
        return FaultDone("leave", at_s, note="skipped: no worker running")
    return FaultDone("leave", at_s, worker, run.supervisor.leave(worker).pid)


def fault_pause(run: Run, at_s: float) -> FaultDone:
    if run.broker is None:
        return FaultDone("pause", at_s, note="skipped: the broker is not one this run started")
    run.broker.send_signal(signal.SIGSTOP)
    time.sleep(run.config.pause_s)
    run.broker.send_signal(signal.SIGCONT)
    return FaultDone("pause", at_s, note=f"{run.config.pause_s:g} s")


def fault_delete(run: Run, at_s: float) -> FaultDone:
    return _damage(run, at_s, "delete", lambda path: (shutil.rmtree(path), "state folder deleted")[1])


def fault_corrupt(run: Run, at_s: float) -> FaultDone:
    def has_tables(worker: str) -> bool:  # a folder RocksDB never flushed holds only its write-ahead log
        return any(_state_path(run, worker).glob("*.sst"))

    return _damage(run, at_s, "corrupt", lambda path: corrupt_folder(path, run.rng), has_tables)


def _state_path(run: Run, worker: str) -> Path:
    return replace(run.settings, worker_id=worker).state_path


def _damage(run: Run, at_s: float, kind: str, damage: Callable[[Path], str],
            prefer: Callable[[str], bool] = lambda worker: True) -> FaultDone:
    """kill -9 a worker, damage its state folder while it is down, let the supervisor restart it."""
    worker = _victim(run, prefer)
    if worker is None:
        return FaultDone(kind, at_s, note="skipped: no worker running")
    killed = run.supervisor.kill(worker, hold=True)
    try:
        note = damage(_state_path(run, worker))
    finally:
        run.supervisor.release(worker)
    done = FaultDone(kind, at_s, worker, killed.pid, killed.ended_ms or 0, note=note)
    threading.Thread(target=_note_restart, args=(run, done), daemon=True).start()
    return done


def _note_restart(run: Run, done: FaultDone, timeout_s: float = 60.0) -> None:
    """Remember the process that replaced ``done``'s victim (for the rebuild's timing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        instance = run.supervisor.instance(done.worker)
        if instance is not None and instance.pid != done.pid:
            done.restarted = instance
            return
        time.sleep(0.05)


def corrupt_folder(path: Path, rng: random.Random, size: int = 4096) -> str:
    """Write ``size`` random bytes into the largest table file of a RocksDB folder (into its newest
    write-ahead log when it has no table file yet); says what was done."""
    tables = sorted(path.glob("*.sst"), key=lambda p: p.stat().st_size)
    target = tables[-1] if tables else max(path.glob("*.log"), key=lambda p: p.stat().st_mtime, default=None)
    if target is None:
        return "nothing to corrupt: the folder holds no table file or log"
    length = target.stat().st_size
    at = rng.randrange(0, max(1, length // 2))  # data blocks come first in a table file
    with open(target, "r+b") as f:
        f.seek(at)
        f.write(rng.randbytes(min(size, length - at)))
    return f"{min(size, length - at)} random bytes at offset {at} of {target.name} ({length} bytes)"


FAULTS: dict[str, Callable[[Run, float], FaultDone]] = {
    "kill": fault_kill, "join": fault_join, "leave": fault_leave, "pause": fault_pause,
    "delete": fault_delete, "corrupt": fault_corrupt,
}


# -- the verdict ----------------------------------------------------------------------------------

def _finish(run: Run, events: list[dict[str, Any]], complements: dict[str, str], produced: dict[str, Any],
            started: float) -> dict[str, Any]:
    settings, config, follower = run.settings, run.config, run.follower
    inputs, sent = read_inputs(settings)
    expected = expected_from(sent)
    caught_up_s = _wait_for_changelog(run, expected, produced)
    verdict = follower.verdict(expected)
    run.load.append(os.getloadavg()[0])
    run.supervisor.stop_all()
    time.sleep(1.0)  # the stopping workers' last records
    follower.stop()
    moves = ca.find_moves(follower.marks, follower.fences)
    check = ca.check_rows(follower.rows, inputs)
    report = {
        "config": asdict(config),
        "settings": {k: getattr(settings, k) for k in ("app_id", "kafka_bootstrap", "partitions", "batch_max",
                                                         "input_keys", "session_timeout_s", "explore")},
        "workdir": str(run.workdir),
        "timing": {"produce": produced, "caught_up_s": caught_up_s, "total_s": time.monotonic() - started,
                   "load_1min": {"min": min(run.load), "max": max(run.load)}},
        "backlog": _backlog(run.progress, produced["seconds"]),
        "events": {"generated": len(events), "in_topics": len(sent)},
        "verdict": asdict(verdict),
        "dead_letters": dead_letters(settings),
        "exits": _exits(run.supervisor.instances),
        "faults": [_fault_entry(f) for f in run.faults],
        "takeovers": _takeovers(run, follower.marks),
        "rebuilds": _rebuilds(run, follower.marks),
        "moves": {"count": len(moves), "by_partition": dict(Counter(mv.partition for mv in moves))},
        "rows": {"checked": check.checked, "inexact": len(check.inexact), "examples": check.examples},
        "moved_users": asdict(ca.moved_users(follower.rows, moves, check)),
        "probe": _probe(settings, follower.rows, moves, complements),
    }
    report["failures"] = failures(report)
    report["passed"] = not report["failures"]
    return report


def read_inputs(settings: Settings) -> tuple[ca.InputLog, list[dict[str, Any]]]:
    """The events in the input topics (what the workers were given, producer retries included), with the
    lanes the workers file them under."""
    found, sent = [], []
    for topic in settings.input_topics().values():
        for message in read_topic(settings.kafka_bootstrap, topic, idle_ms=2000, security=settings):
            event = json.loads(message.value)
            user = str(event["user_id"])
            lane = f"{kafka_partition(user, settings.partitions)}>{topic}:{message.partition}"
            found.append(ca.InputEvent(user, lane, message.offset, event["type"], str(event["item_id"]), int(event["ts"])))
            sent.append(event)
    return ca.InputLog(found), sent


def _wait_for_changelog(run: Run, expected: Expected, produced: dict[str, Any], settle_s: float = 3.0) -> float | None:
    """Seconds from the last event produced until the changelog reflected every event (None: not within the
    run's ``catch_up_timeout_s``), then ``settle_s`` more with nothing new, room for a redelivered batch to be
    (wrongly) applied again."""
    follower, timeout_s = run.follower, run.config.catch_up_timeout_s
    ended = produced["ended"]
    first = ended - produced["seconds"]  # when the first event was produced
    with tqdm(total=expected.total, desc="changelog", unit="ev", disable=not sys.stderr.isatty()) as bar:
        while time.monotonic() - ended < timeout_s and follower.is_alive():
            verdict = follower.verdict(expected)
            bar.update(verdict.applied - bar.n)
            run.progress.append((round(time.monotonic() - first, 1), expected.total, follower.applied))
            if verdict.lost == 0:
                caught_up = time.monotonic() - ended
                while follower.idle_s() < settle_s and time.monotonic() - ended < timeout_s:
                    time.sleep(0.5)
                return caught_up
            time.sleep(_SAMPLE_S)
    log.error("the changelog did not reflect every event within %.0f s%s", timeout_s,
              "" if follower.is_alive() else " (its reader failed)")
    return None


def _backlog(progress: list[tuple[float, int, int]], stream_s: float) -> dict[str, Any]:
    """The most events produced and not yet reflected by the changelog, when, and at the stream's end.

    >>> _backlog([(0.0, 0, 0), (2.0, 400, 100), (4.0, 800, 750), (6.0, 800, 800)], 4.0)
    {'max': 300, 'max_at_s': 2.0, 'at_end': 50, 'samples': [[0.0, 0, 0], [2.0, 400, 100], [4.0, 800, 750], [6.0, 800, 800]]}
    """
    if not progress:
        return {"max": None, "max_at_s": None, "at_end": None, "samples": []}
    at, sent, applied = max(progress, key=lambda p: p[1] - p[2])
    end = min(progress, key=lambda p: abs(p[0] - stream_s))
    return {"max": sent - applied, "max_at_s": at, "at_end": end[1] - end[2], "samples": [list(p) for p in progress]}


def dead_letters(settings: Settings) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for message in read_topic(settings.kafka_bootstrap, settings.topic_dead_letter, idle_ms=1500, security=settings):
        reasons[dict(message.headers or ()).get("stream_rec.reason", b"?").decode(errors="replace")] += 1
    return {"total": sum(reasons.values()), "by_reason": dict(reasons)}


def _exits(instances: list[Instance]) -> dict[str, Any]:
    ended = [i for i in instances if i.code is not None]
    by_code = Counter(f"{i.code} ({EXIT_NAMES.get(i.code or 0, 'other')})" for i in ended)
    by_cause = Counter(f"{i.cause or 'by itself'}: {i.code}" for i in ended)
    return {"processes": len(instances), "by_code": dict(by_code), "by_cause": dict(by_cause),
            "unplanned": [f"{i.worker_id} (pid {i.pid}) exited {i.code}" for i in ended if i.cause is None]}


def _fault_entry(done: FaultDone) -> dict[str, Any]:
    return {"kind": done.kind, "at_s": round(done.at_s, 1), "worker": done.worker, "pid": done.pid,
            "note": done.note}


def _takeovers(run: Run, marks: list[ca.Marks]) -> list[dict[str, Any]]:
    out = []
    for done in run.faults:
        if done.killed_ms:
            t = ca.takeover(marks, f"{done.worker}/{done.pid}", done.killed_ms, _last_assignment(run, done))
            until = done.at_s + (t.seconds if t.seconds is not None else float("inf"))
            during = [f"{f.kind} {f.worker}".strip() for f in run.faults if done.at_s < f.at_s <= until]
            out.append({"fault": done.kind, "worker": done.worker, "at_s": round(done.at_s, 1),
                        "partitions": t.partitions, "seconds": t.seconds, "faults_during": during})
    return out


_OWNS = re.compile(r"worker \S+ owns partitions \[([\d, ]*)\]")


def _last_assignment(run: Run, done: FaultDone) -> list[int]:
    """The partitions the killed process was last given, from its log (agents.app logs each assignment)."""
    killed = next((i for i in run.supervisor.instances if i.pid == done.pid), None)
    if killed is None:
        return []
    found = _OWNS.findall(_log_of(run.workdir / "logs" / f"{done.worker}.log", killed))
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


def _rebuilds(run: Run, marks: list[ca.Marks]) -> list[dict[str, Any]]:
    """For each damaged folder: the restart's first write, and what its log says it did with the folder."""
    out = []
    for done in run.faults:
        if done.kind not in ("delete", "corrupt") or not done.pid:
            continue
        new = done.restarted
        first = ca.first_write(marks, new.writer) if new else None
        out.append({"fault": done.kind, "worker": done.worker, "damage": done.note,
                    "restarted_pid": new.pid if new else None,
                    "restart_to_first_write_s": (first - new.started_ms) / 1000 if first and new else None,
                    "kill_to_first_write_s": (first - done.killed_ms) / 1000 if first else None,
                    "log": _rebuild_evidence(run.workdir / "logs" / f"{done.worker}.log", new) if new else []})
    return out


_EVIDENCE = ("moved it to", "no local state", "restored", "item model caught up", "owns partitions")


def _rebuild_evidence(path: Path, instance: Instance) -> list[str]:
    """The lines of ``instance``'s part of its worker's log about its folder and its restore."""
    return [line for line in _log_of(path, instance).splitlines() if any(word in line for word in _EVIDENCE)][:12]


def _log_of(path: Path, instance: Instance) -> str:
    """``instance``'s part of its worker's log (the supervisor writes a marker before each start)."""
    try:
        parts = path.read_text(errors="replace").split(MARKER)
    except OSError:
        return ""
    return parts[instance.log_segment + 1] if instance.log_segment + 1 < len(parts) else ""


def _probe(settings: Settings, rows: list[ca.Row], moves: list[ca.Move],
           complements: dict[str, str]) -> dict[str, Any]:
    """The planted-partner probe (:func:`tools.chaos_analysis.probe_cases`) over the recommendations topic."""
    cases = ca.probe_cases(rows, moves, complements)
    wanted = {case.user for case in cases}
    lists: dict[str, list[tuple[int, frozenset[str]]]] = {}
    for message in read_topic(settings.kafka_bootstrap, settings.topic_recommendations, idle_ms=2000, security=settings):
        user = (message.key or b"").decode(errors="replace")
        if user in wanted:
            payload = json.loads(message.value)
            lists.setdefault(user, []).append((int(payload["generated_at"]),
                                               frozenset(i["item_id"] for i in payload["items"])))
    for seq in lists.values():
        seq.sort(key=lambda x: x[0])

    def first_list(user: str, since_ms: int) -> frozenset[str] | None:
        return next((items for at, items in lists.get(user, []) if at >= since_ms), None)

    shares = ca.probe_shares(cases, first_list)
    return {group: {"cases": s.cases, "hits": s.hits, "share": s.share} for group, s in shares.items()}


def failures(report: dict[str, Any]) -> list[str]:
    """Why a run failed; empty when it passed."""
    v, limit = report["verdict"], report["config"]["takeover_limit_s"]
    out = [f"{v[name]} {label}" for name, label in (("lost", "events lost"), ("applied_twice", "events applied twice"),
                                                     ("wrong_set", "users with a wrong set"))
           if v[name]]
    if report["timing"]["caught_up_s"] is None:
        out.append("the changelog did not reflect every event in time")
    for r in report["rebuilds"]:
        if r["restart_to_first_write_s"] is None:
            out.append(f"{r['worker']}'s folder ({r['fault']}) was never rebuilt (its restart never wrote)")
    if report["exits"]["unplanned"]:
        out.append(f"workers exited by themselves: {', '.join(report['exits']['unplanned'])}")
    for t in report["takeovers"]:
        if t["seconds"] is None:
            out.append(f"{t['worker']} killed at {t['at_s']} s: partitions never written again {t['partitions']}")
        elif t["seconds"] > limit:
            out.append(f"{t['worker']} killed at {t['at_s']} s: takeover {t['seconds']:.1f} s > {limit:g} s")
    return out


# -- the report -----------------------------------------------------------------------------------

def format_report(report: dict[str, Any]) -> str:
    """The report as plain text."""
    v, ev, timing = report["verdict"], report["events"], report["timing"]
    lines = ["chaos report", "============",
             f"events generated      {ev['generated']:>10,}   in the input topics: {ev['in_topics']:,}",
             f"events in             {v['events_in']:>10,}",
             f"applied               {v['applied']:>10,}",
             f"applied twice         {v['applied_twice']:>10,}",
             f"lost                  {v['lost']:>10,}",
             f"users with a wrong set{v['wrong_set']:>10,}   (users {v['users']:,}, missing from the changelog "
             f"{v['users_missing']:,})",
             f"dead-lettered         {report['dead_letters']['total']:>10,}   {report['dead_letters']['by_reason'] or ''}",
             *[f"  e.g. {example}" for example in v["examples"]],
             "", _timing_line(timing), _backlog_line(report["backlog"]), "",
             f"worker processes      {report['exits']['processes']}; exits by code: "
             + ", ".join(f"{code} x{n}" for code, n in sorted(report["exits"]["by_code"].items())),
             "  by cause: " + ", ".join(f"{c} x{n}" for c, n in sorted(report["exits"]["by_cause"].items())),
             f"  exits chaos did not cause: {report['exits']['unplanned'] or 'none'}",
             "", "faults (seconds after the first event was produced):"]
    lines += [f"  {f['at_s']:7.1f}  {f['kind']:<8} {f['worker']:<4} {f['note']}" for f in report["faults"]]
    lines += ["", "takeovers after kill -9 (until every partition the dead worker held was written again):"]
    for t in report["takeovers"]:
        per = ", ".join(f"p{p}: {'never' if s is None else f'{s:.1f} s'}" for p, s in t["partitions"].items())
        shown = "never" if t["seconds"] is None else f"{t['seconds']:.1f} s"
        during = f"; meanwhile: {', '.join(t['faults_during'])}" if t["faults_during"] else ""
        lines.append(f"  {t['at_s']:7.1f}  {t['fault']:<8} {t['worker']:<4} {shown:>8}   ({per or 'held no partition'}{during})")
    lines += ["", "damaged state folders:"]
    for r in report["rebuilds"]:
        lines.append(f"  {r['fault']} {r['worker']}: {r['damage']}; first write "
                     f"{_s(r['restart_to_first_write_s'])} after the restart, {_s(r['kill_to_first_write_s'])} after the kill")
        lines += [f"      | {_elide(line)}" for line in r["log"]]
    mu, rows, probe = report["moved_users"], report["rows"], report["probe"]
    lines += ["", f"partition moves       {report['moves']['count']}  {report['moves']['by_partition']}",
              f"rows checked          {rows['checked']:,}, not an exact prefix of their user's events: {rows['inexact']:,}",
              *[f"  e.g. {example}" for example in rows["examples"]],
              f"moved users           {mu['users']:,} users in {mu['pairs']:,} (user, move) pairs; first row after the "
              f"move counts every event before it: {mu['survived']:,}; and is exact: {mu['exact']:,}",
              *[f"  e.g. {example}" for example in mu["examples"]],
              "planted-partner probe (first list after the move holds the partner of an item bought before it):",
              f"  moved users         {_share(probe['moved'])}",
              f"  unmoved partitions  {_share(probe['unmoved'])}",
              "", "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"])]
    return "\n".join(lines)


def _timing_line(timing: dict[str, Any]) -> str:
    p = timing["produce"]
    return (f"produced at {p['achieved_rate']:,.0f} ev/s (target {p['rate']:,.0f}) for {p['seconds']:.0f} s; changelog "
            f"complete {_s(timing['caught_up_s'])} after the last event was produced; run {timing['total_s']:.0f} s; load (1 min) "
            f"{timing['load_1min']['min']:.1f}-{timing['load_1min']['max']:.1f}")


def _backlog_line(backlog: dict[str, Any]) -> str:
    if backlog["max"] is None:
        return "backlog: not sampled"
    return (f"backlog (events produced, not yet in the changelog): at most {backlog['max']:,} "
            f"({backlog['max_at_s']:.0f} s after the first event), {backlog['at_end']:,} when the stream ended")


def _elide(line: str, width: int = 240) -> str:
    """``line`` cut in the middle to ``width`` characters: its time and its end (where a path ends) stay."""
    return line if len(line) <= width else f"{line[:width - 100]} ... {line[-95:]}"


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def _share(group: dict[str, Any]) -> str:
    if not group["cases"]:
        return "no cases"
    return f"{group['hits']:,}/{group['cases']:,} = {group['share']:.1%}"


# -- the command ----------------------------------------------------------------------------------

#: Options: (flag, config field, help). Each also reads ``STREAM_REC_CHAOS_<FIELD>``.
_OPTIONS = (
    ("--events", "events", "events to produce"),
    ("--users", "users", "users of the synthetic shop"),
    ("--items", "items", "items of the synthetic shop"),
    ("--seed", "seed", "seed of the shop and of the fault schedule"),
    ("--workers", "workers", "workers started (and kept running by the supervisor)"),
    ("--partitions", "partitions", "partitions of the run's topics; 0: max(4, workers + 1)"),
    ("--rate", "rate", "events per second; 0: slow enough that the faults come --fault-gap-s apart over the "
                       "middle 85%% of the stream"),
    ("--kills", "kills", "kill -9 of a random worker"),
    ("--moves", "moves", "joins of an extra worker, each followed later by a graceful leave (SIGTERM) of a random one"),
    ("--broker-pauses", "broker_pauses", "SIGSTOP of the broker for --pause-s, then SIGCONT (embedded broker only)"),
    ("--pause-s", "pause_s", "seconds of each broker pause"),
    ("--delete-state", "delete_state", "kill -9 of a worker whose state folder is deleted before it restarts"),
    ("--corrupt-state", "corrupt_state", "kill -9 of a worker that gets random bytes in a table file before it restarts"),
    ("--restart-delay-s", "restart_delay_s", "seconds before the supervisor restarts a worker that exited"),
    ("--fault-gap-s", "fault_gap_s", "mean seconds between faults when --rate is 0"),
    ("--takeover-limit-s", "takeover_limit_s", "longest takeover after a kill -9 that passes"),
    ("--catch-up-timeout-s", "catch_up_timeout_s", "longest wait for the changelog to reflect every event"),
    ("--bootstrap", "bootstrap", "an existing broker instead of the embedded one (no broker pauses then)"),
    ("--workdir", "workdir", "keep logs and state here (default: a temporary folder, kept only if the run fails)"),
)


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _default(name: str) -> Any:
    """A config field's default, or its environment variable's value."""
    kind = type(getattr(ChaosConfig, name))
    raw = os.environ.get(_env_name(name))
    if raw is None:
        return getattr(ChaosConfig, name)
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"stream-rec chaos: invalid {_env_name(name)}={raw!r}: expected {kind.__name__}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chaos", help="run workers under kill -9, moves, broker pauses and damaged folders; check "
                                     "from Kafka that every event was applied exactly once",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, name, text in _OPTIONS:
        kind = type(getattr(ChaosConfig, name))
        p.add_argument(flag, dest=name, type=_workdir if name == "workdir" else kind, default=_default(name),
                       help=f"{text} (default: %(default)s; env {_env_name(name)})")
    p.add_argument("--keep-event-ids", action="store_true", default=_default("keep_event_ids"),
                   help=f"keep the events' event_id (default: dropped, so exactly-once rests on offsets alone; "
                        f"env {_env_name('keep_event_ids')})")
    p.add_argument("--json", type=output_file(), metavar="PATH", help="also write the report as JSON to PATH")
    p.set_defaults(func=_cmd_chaos)


def _workdir(text: str) -> str:
    """``--workdir``: a folder to write in, or none (empty, the default: a temporary one)."""
    return output_folder(text) if text else text


def _cmd_chaos(args: Any) -> int:
    config = ChaosConfig(**{f.name: getattr(args, f.name) for f in fields(ChaosConfig)})
    base = Settings.from_env()
    run_id = f"chaos-{int(time.time())}"
    # Fresh topics and group per run, so a run against a real cluster never mixes with an earlier one.
    settings = replace(base, app_id=run_id, **{name: f"{run_id}.{getattr(base, name)}" for name in TOPIC_FIELDS})
    report = run_chaos(config, settings)
    print(format_report(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        log.info("wrote %s", args.json)
    return 0 if report["passed"] else 1

