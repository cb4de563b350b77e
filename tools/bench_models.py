"""Model costs in isolation and memory at scale: sections (d) and (e) of ``stream-rec bench``.

(d) **Model costs**: microseconds per event of each model's update in micro-batches (MF at ranks 32,
64 and 128; co-occurrence; popularity), and the latency of one user's fused top 20, the call a worker
makes once per touched user, for catalogues of 10k, 100k and 1M items. The ranking scans the full
catalogue's candidates; from :data:`~stream_rec.models.mf.INDEX_ABOVE` items on, matrix factorisation
takes its list from item clusters (:mod:`stream_rec.models.mf_index`), and the recall that loses against
the exact scan is measured on the same users.

(e) **Memory**: a service is filled through :meth:`RecService.apply` and persisted to RocksDB in a
child process, which reports its resident memory (RSS) and the state's size on disk; a second child
loads that state as a restarting worker does and reports the time to ready and its RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream_rec.events import Event
from stream_rec.models.cooc import CoOccurrence
from stream_rec.models.mf import ImplicitMF
from stream_rec.models.popularity import DecayedPopularity
from stream_rec.service import RecService, warm_up
from stream_rec.settings import Settings
from stream_rec.state import MemoryStore, RocksStore

BATCH = 500


def skewed_stream(n_events: int, n_users: int, n_items: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``(users, items, weights, ts)``: power-law items (every item appears), heavy-tailed users."""
    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.2, n_events) - 1, n_items - 1)
    items[: min(n_items, n_events)] = rng.permutation(n_items)[: min(n_items, n_events)]  # the whole catalogue
    users = np.minimum(rng.zipf(1.5, n_events) - 1, n_users - 1)
    users = rng.permutation(n_users)[users]
    weights = rng.choice([1.0, 2.0, 4.0, 8.0], n_events, p=[0.7, 0.2, 0.07, 0.03])
    ts = np.sort(rng.uniform(0, 14 * 86400.0, n_events))
    return users.astype(np.int64), items.astype(np.int64), weights, ts


def _us_per_event(model: Any, stream: tuple[np.ndarray, ...]) -> float:
    users, items, weights, ts = stream
    warm = min(len(users), 2 * BATCH)
    model.learn_many(users[:warm], items[:warm], weights[:warm], ts[:warm])  # compile or load the kernels
    started = time.perf_counter()
    for a in range(warm, len(users), BATCH):
        b = a + BATCH
        model.learn_many(users[a:b], items[a:b], weights[a:b], ts[a:b])
    return (time.perf_counter() - started) / max(1, len(users) - warm) * 1e6


def update_costs(n_events: int = 200_000, n_users: int = 100_000, n_items: int = 100_000) -> dict[str, float]:
    """Microseconds per event of each model's ``learn_many`` in batches of :data:`BATCH`."""
    stream = skewed_stream(n_events, n_users, n_items)
    out = {f"mf_rank{r}_us": _us_per_event(ImplicitMF(n_factors=r), stream) for r in (32, 64, 128)}
    out["cooc_us"] = _us_per_event(CoOccurrence(), stream)
    out["popularity_us"] = _us_per_event(DecayedPopularity(), stream)
    return out


def top20_latency(n_items: int, n_users: int = 100_000, n_lists: int = 300,
                  index_above: float | None = None) -> dict[str, float]:
    """Milliseconds for one user's fused top 20 (``RecService.recommend``) over ``n_items`` items.

    Catalogues of at least ``index_above`` items (default: the model's,
    :data:`~stream_rec.models.mf.INDEX_ABOVE`) rank matrix factorisation through its item clusters;
    then the same users are also ranked with the exact scan, after them, and ``mf_recall`` is the share
    of the exact MF top 30 (the depth the fusion reads) that the clusters return. Without it,
    ``mf_recall`` is 1 by construction.
    """
    service = RecService(Settings(), MemoryStore())
    mf = service.fusion.mf
    if index_above is not None:
        mf.index_above = index_above
    users, items, weights, ts = skewed_stream(max(2 * n_items, 200_000), n_users, n_items, seed=1)
    kinds = np.array(["view", "click", "add_to_cart", "purchase"])[np.searchsorted([1.5, 3, 6], weights)]
    for a in range(0, len(users), 20_000):
        b = a + 20_000
        batch = [(("bench", n), Event(f"u{u}", f"i{i}", str(kind), int(t * 1000)))
                 for n, u, i, kind, t in zip(range(a, b), users[a:b].tolist(), items[a:b].tolist(),
                                             kinds[a:b].tolist(), ts[a:b].tolist())]
        service.apply(batch, lists=False, changes=False)
    who = [f"u{u}" for u in np.random.default_rng(2).choice(np.unique(users), n_lists).tolist()]
    quantized = len(service.items) >= mf.index_above and mf.index.built_for[0] > 0
    threshold = mf.index_above
    service.recommend(who[0])
    times, exact_times, found, wanted = [], [], 0, 0
    # The users one after another, as a worker ranks a batch's touched users; then, if the lists came from
    # the item clusters, the same users with the exact scan. Alternating them per user timed each fast
    # list on caches the exact scan had just filled with 128 MB of item rows (0.87 ms a list at 1M items,
    # against 0.33 ms one after another).
    for user in who:
        started = time.perf_counter()
        service.recommend(user, 20)
        times.append(time.perf_counter() - started)
    if quantized:
        fast = [mf.recommend(service.users.get(user), 30)[0] for user in who]
        mf.index_above = np.inf
        for user, listed in zip(who, fast):
            started = time.perf_counter()
            service.recommend(user, 20)
            exact_times.append(time.perf_counter() - started)
            exact = mf.recommend(service.users.get(user), 30)[0]
            found += len(np.intersect1d(listed, exact))
            wanted += len(exact)
        mf.index_above = threshold
    ms = np.array(times) * 1e3
    out = {"items": n_items, "mean_ms": float(ms.mean()), "p50_ms": float(np.median(ms)),
           "p99_ms": float(np.percentile(ms, 99)), "quantized": quantized,
           "mf_recall": found / wanted if wanted else 1.0}
    if exact_times:
        out["exact_mean_ms"] = float(np.mean(exact_times) * 1e3)
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fill(path: str, n_users: int, n_items: int, events_per_user: int, queue: Any) -> None:
    settings = Settings(data_dir=path)
    store = RocksStore(Path(path) / "state")
    service = RecService(settings, store)
    users, items, weights, ts = skewed_stream(n_users * events_per_user, n_users, n_items, seed=3)
    users[:n_users] = np.arange(n_users)  # every user present
    kinds = np.array(["view", "click", "add_to_cart", "purchase"])[np.searchsorted([1.5, 3, 6], weights)]
    started = time.perf_counter()
    step = 5_000
    for a in range(0, len(users), step):
        b = a + step
        batch = [(("bench", n), Event(f"u{u}", f"i{i}", str(kind), int(t * 1000)))
                 for n, u, i, kind, t in zip(range(a, b), users[a:b].tolist(), items[a:b].tolist(),
                                             kinds[a:b].tolist(), ts[a:b].tolist())]
        service.persist(service.apply(batch, lists=False))
        service.persist_items()
    fill_s = time.perf_counter() - started
    rss = _rss_mb()
    store.close()
    queue.put({"events": len(users), "seconds": fill_s, "rss_mb": rss})


def _load(path: str, queue: Any) -> None:
    warm_up()  # a worker compiles (or loads the kernel cache) before it loads state; not part of this figure
    started = time.perf_counter()
    store = RocksStore(Path(path) / "state")
    service = RecService(Settings(data_dir=path), store)
    service.recommend(service.users.external(0))
    ready_s = time.perf_counter() - started
    queue.put({"restart_to_ready_s": ready_s, "rss_mb": _rss_mb(), "users": len(service.users)})
    store.close()


def _child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def memory(n_users: int, n_items: int = 100_000, events_per_user: int = 3) -> dict[str, Any]:
    """RSS, on-disk size and restart-to-ready for ``n_users`` users over ``n_items`` items."""
    folder = tempfile.mkdtemp(prefix="stream-rec-bench-")
    try:
        filled = _child(_fill, folder, n_users, n_items, events_per_user)
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        loaded = _child(_load, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"users": n_users, "items": n_items, **{f"fill_{k}": v for k, v in filled.items()},
            "disk_mb": disk / 2**20, "restart_to_ready_s": loaded["restart_to_ready_s"],
            "loaded_rss_mb": loaded["rss_mb"]}
