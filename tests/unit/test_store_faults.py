"""A RocksStore on a damaged disk: real RocksDB folders, written, closed, damaged, reopened.

The known answer in every case: either exactly the rows that were written (or, after a torn write-ahead
log, exactly those of the batches up to the recovered offset) come back, or :class:`StateCorruptError`
(or :class:`StateWriteError` for a disk that refuses writes) is raised. Never fewer rows in silence.

What RocksDB (through rocksdict, with the store's options) does, measured by these tests:

- bytes overwritten in a table file: a damaged footer or index fails the open; a damaged data block
  opens fine and fails the read of that block. rocksdict's ``items()`` ends *quietly* there, so the
  store checks where the scan ended (``RocksStore._scan``);
- no CURRENT: RocksDB takes the folder for a new database (the first open fails, the second starts
  empty and deletes the old files), so the store refuses the folder before RocksDB sees it;
- the write-ahead log cut or garbled after a kill -9 (an OS crash without sync): the open replays up
  to the first damaged record and drops the rest; each batch carries its offsets, so the state is an
  earlier consistent one;
- disk full, file too large, read-only file system: the write fails with RocksDB's "IO error", which
  stops all later writes (and the flush at close) until the store is reopened.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.state import (RocksStore, StateCorruptError, StateError, StateFormatError, StateWriteError,
                              StoreLockedError, quarantine)
from tests.mounts import require_mount_namespaces

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("users", "items")
ROWS, VALUE = 20, 100  # per family and batch; random values, so tables do not compress below a few blocks

Rows = dict[str, dict[bytes, bytes]]


def _batch(b: int) -> Rows:
    """Batch ``b``: its rows in users and items, and the offset it was applied at in meta."""
    rng = random.Random(b)
    return {"users": {b"u%05d-%02d" % (b, i): rng.randbytes(VALUE) for i in range(ROWS)},
            "items": {b"i%05d-%02d" % (b, i): rng.randbytes(VALUE) for i in range(ROWS)},
            "meta": {b"hwm/lane": b"%d" % b}}


def _expected(n: int) -> Rows:
    """What batches ``0 .. n-1`` leave behind."""
    rows: Rows = {"meta": {}, "users": {}, "items": {}}
    for b in range(n):
        for family, changes in _batch(b).items():
            rows[family].update(changes)
    return rows


def _write(path: Path, n: int) -> Rows:
    store = RocksStore(path)
    for b in range(n):
        store.write(_batch(b))
    store.close()
    return _expected(n)


def _read_all(path: Path) -> Rows:
    """Every row of the families this test writes, through the store's own reads; closes the store."""
    store = RocksStore(path)
    try:
        rows = {family: dict(store.items(family)) for family in FAMILIES}
        rows["meta"] = {k: v for k, v in store.items("meta") if k.startswith(b"hwm/")}
        return rows
    finally:
        _close_quietly(store)


def _close_quietly(store: RocksStore) -> None:
    try:
        store.close()
    except StateError:
        pass  # a store that found damage may refuse the flush at close too; the read's error is the one


def _recovered_batches(path: Path) -> int:
    """Batches back after a torn log, checked row for row against the offset stored beside them."""
    rows = _read_all(path)
    hwm = rows["meta"].get(b"hwm/lane")
    n = 0 if hwm is None else int(hwm) + 1
    assert rows == _expected(n), f"the rows are not exactly those of batches 0..{n - 1}"
    return n


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Rows]:
    """A closed store of 8 batches: one table file per family."""
    path = tmp_path_factory.mktemp("written") / "state"
    return path, _write(path, 8)


def _copy(written: tuple[Path, Rows], tmp_path: Path) -> Path:
    target = tmp_path / "state"
    shutil.copytree(written[0], target)
    return target


def _table_of(path: Path, family: str) -> str:
    """The table file holding ``family``'s rows, found by its first key (read-only: nothing is compacted)."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), column_families={f: Options(raw_mode=True) for f in FAMILIES},
               access_type=AccessType.read_only())
    try:
        (name,) = [Path(f["name"]).name for f in db.live_files() if f["start_key"][:1] == family[:1].encode()]
        return name
    finally:
        db.close()


def _overwrite(file: Path, offset: int, n: int, seed: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        f.write(random.Random(seed).randbytes(n))


# --- bytes overwritten in a table file ----------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", ["first block", "middle", "last blocks", "footer"])
def test_random_bytes_in_a_table_file_are_reported_never_read_as_fewer_rows(
        written: tuple[Path, Rows], tmp_path: Path, family: str, where: str) -> None:
    path = _copy(written, tmp_path)
    name = _table_of(path, family)
    size = (path / name).stat().st_size
    offset = {"first block": 0, "middle": size // 2, "last blocks": max(0, size - 6000), "footer": size - 48}[where]
    _overwrite(path / name, offset, 4096, seed=offset)
    with pytest.raises(StateCorruptError) as caught:
        _read_all(path)
    # 4 KiB of noise breaks a block checksum wherever it lands, so the known answer here is the error.
    assert caught.value.path == path and str(path) in str(caught.value)
    assert caught.value.file is not None and caught.value.file.endswith(name)


def test_a_damaged_block_opens_but_fails_get_verify_and_iteration(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    name = _table_of(path, "users")
    _overwrite(path / name, 0, 64, seed=1)  # the first data block only: footer and index intact
    store = RocksStore(path)  # RocksDB does not read data blocks at open
    try:
        with pytest.raises(StateCorruptError, match=name):
            store.get("users", b"u00000-00")
        with pytest.raises(StateCorruptError, match=name):
            list(store.items("users"))
        with pytest.raises(StateCorruptError, match=name):
            store.verify()
        assert dict(store.items("items")) == written[1]["items"]  # the other family reads whole
    finally:
        _close_quietly(store)
    with pytest.raises(StateCorruptError, match=name):
        RocksStore(path, verify=True)


def test_verify_counts_every_row_of_a_sound_store(written: tuple[Path, Rows], tmp_path: Path) -> None:
    store = RocksStore(_copy(written, tmp_path), verify=True)
    counts = store.verify()
    store.close()
    assert counts["users"] == counts["items"] == 8 * ROWS
    assert counts["meta"] >= 2  # the offset and the format version, at least


def test_a_removed_table_file_is_reported_by_name(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    name = _table_of(path, "items")
    (path / name).unlink()
    with pytest.raises(StateCorruptError, match=name):
        RocksStore(path)


# --- CURRENT, MANIFEST ---------------------------------------------------------------------------------

def test_without_current_the_folder_is_refused_and_left_untouched(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    (path / "CURRENT").unlink()
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    for _ in range(2):  # on main the second start opened an empty state and RocksDB deleted the files
        with pytest.raises(StateCorruptError, match="no CURRENT"):
            RocksStore(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


@pytest.mark.parametrize("damage", ["no manifest", "current names another manifest", "current garbled",
                                    "manifest garbled"])
def test_damaged_current_or_manifest_is_reported(written: tuple[Path, Rows], tmp_path: Path, damage: str) -> None:
    path = _copy(written, tmp_path)
    manifest = next(path.glob("MANIFEST-*"))
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "current names another manifest":
        (path / "CURRENT").write_text("MANIFEST-999999\n")
    elif damage == "current garbled":
        (path / "CURRENT").write_bytes(b"\x00" * 16)
    else:
        _overwrite(manifest, 64, 128, seed=2)
    with pytest.raises(StateCorruptError) as caught:
        RocksStore(path)
    assert str(path) in str(caught.value)
    assert caught.value.file is not None


def test_a_manifest_cut_to_nothing_useful_is_reported(tmp_path: Path) -> None:
    """RocksDB reads a MANIFEST cut inside a record as a shorter history: with every table lost it opens
    an empty database (measured). The store knows the folder held tables and refuses it."""
    path = tmp_path / "state"
    _write(path, 8)
    manifest = next(path.glob("MANIFEST-*"))
    outcomes = set()
    for cut in range(0, manifest.stat().st_size, 40):
        trial = tmp_path / f"cut-{cut}"
        shutil.copytree(path, trial)
        os.truncate(trial / manifest.name, cut)
        try:
            assert _read_all(trial) == _expected(8)
            outcomes.add("exact")
        except StateCorruptError:
            outcomes.add("corrupt")
    assert "corrupt" in outcomes


def test_a_manifest_cut_never_loses_a_family_silently(tmp_path: Path) -> None:
    """A MANIFEST cut anywhere, with the format version's table recorded before the cut: RocksDB opens
    the shorter history and drops the tables recorded after it (measured). The store refuses such a
    folder; every cut either reads exactly what was written or is reported, never a family gone back."""
    path = tmp_path / "state"
    RocksStore(path).close()  # first session: the format version reaches a table of its own
    store = RocksStore(path)
    for b in range(5):
        store.write({family: rows for family, rows in _batch(b).items() if family != "meta"})
    store.close()
    manifest = next(path.glob("MANIFEST-*"))
    expected = {family: _expected(5)[family] for family in FAMILIES if family != "meta"}
    outcomes = []
    for cut in [*range(0, manifest.stat().st_size, 20), manifest.stat().st_size - 30]:
        trial = tmp_path / f"cut-{cut}"
        shutil.copytree(path, trial)
        os.truncate(trial / manifest.name, cut)
        try:
            rows = _read_all(trial)
        except StateCorruptError:
            outcomes.append("corrupt")
            continue
        assert {family: rows[family] for family in expected} == expected, f"cut at byte {cut}"
        outcomes.append("exact")
    assert outcomes[-1] == "corrupt"  # inside the last table's record: that table is gone
    assert outcomes.count("corrupt") > len(outcomes) // 2


# --- absent, empty, quarantined ---------------------------------------------------------------------

@pytest.mark.parametrize("state", ["absent", "empty", "only a LOG"])
def test_a_folder_without_data_is_fresh(tmp_path: Path, state: str) -> None:
    path = tmp_path / "state"
    if state != "absent":
        path.mkdir()
    if state == "only a LOG":
        (path / "LOG").write_text("a RocksDB that never got further\n")
    store = RocksStore(path)
    assert store.fresh
    store.write(_batch(0))
    store.close()
    again = RocksStore(path)
    assert not again.fresh
    again.close()


def test_a_deleted_folder_opens_fresh_and_says_so(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    store = RocksStore(path)
    assert not store.fresh
    store.close()
    shutil.rmtree(path)
    store = RocksStore(path)
    assert store.fresh and list(store.items("users")) == []
    store.close()


def test_quarantine_keeps_the_evidence_and_frees_the_path(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    (path / "CURRENT").unlink()
    with pytest.raises(StateCorruptError) as caught:
        RocksStore(path)
    files = sorted(p.name for p in path.iterdir())
    moved = quarantine(caught.value.path)
    assert moved.parent == path.parent and moved.name.startswith("state.corrupt-") and moved.name.endswith("Z")
    assert sorted(p.name for p in moved.iterdir()) == files
    store = RocksStore(path)  # rebuilt in a clean folder where the old one was
    assert store.fresh
    store.close()
    assert quarantine(path) != moved


def test_a_failed_open_lets_go_of_the_folder(written: tuple[Path, Rows], tmp_path: Path) -> None:
    path = _copy(written, tmp_path)
    store = RocksStore(path)
    store.write({"meta": {b"format_version": b"999"}})
    store.close()
    with pytest.raises(StateFormatError) as first:
        RocksStore(path)
    # Not StoreLockedError, though the first error (and with it the half-opened store) is still alive.
    with pytest.raises(StateFormatError):
        RocksStore(path)
    assert first.value is not None


def test_a_damaged_index_block_is_corruption_not_a_lock(written: tuple[Path, Rows], tmp_path: Path) -> None:
    """On main any open error with "lock" in it was StoreLockedError: "block checksum mismatch" too."""
    path = _copy(written, tmp_path)
    name = _table_of(path, "users")
    _overwrite(path / name, (path / name).stat().st_size - 200, 32, seed=3)  # the index, read at open
    with pytest.raises(StateCorruptError, match="block checksum mismatch"):
        RocksStore(path)
    holder = RocksStore(tmp_path / "other")
    with pytest.raises(StoreLockedError):
        RocksStore(tmp_path / "other")
    holder.close()


# --- the write-ahead log after kill -9 and an OS crash ------------------------------------------------

def _write_and_die(path: str, n: str) -> None:
    """Child process: write ``n`` batches, then die by SIGKILL without closing (nothing flushed or synced)."""
    store = RocksStore(path)
    for b in range(int(n)):
        store.write(_batch(b))
    os.kill(os.getpid(), signal.SIGKILL)


def _child(function: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from tests.unit.test_store_faults import {function}; {function}(*sys.argv[1:])"
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("killed") / "state"
    proc = _child("_write_and_die", str(path), "40")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p.name for p in path.glob("*.sst")] == []  # everything is in the log
    return path


def test_kill_9_alone_loses_nothing(killed: Path, tmp_path: Path) -> None:
    path = tmp_path / "state"
    shutil.copytree(killed, path)
    assert _recovered_batches(path) == 40


@pytest.mark.parametrize("tear", ["cut", "cut, zeros after", "cut, garbage after", "garbage inside"])
def test_a_torn_log_opens_at_an_earlier_consistent_state(killed: Path, tmp_path: Path, tear: str) -> None:
    (log,) = killed.glob("*.log")
    size = log.stat().st_size
    rng = random.Random(tear)
    recovered = []
    for trial in range(6):
        path = tmp_path / f"trial-{trial}"
        shutil.copytree(killed, path)
        at = rng.randrange(size)
        with open(path / log.name, "r+b") as f:
            if tear != "garbage inside":
                f.truncate(at)
            f.seek(at)
            if tear == "cut, zeros after":
                f.write(bytes(8192))
            elif tear != "cut":
                f.write(rng.randbytes(4096))
        try:
            recovered.append(_recovered_batches(path))
        except StateCorruptError:
            recovered.append(-1)
    # RocksDB's point-in-time recovery (the store's setting) drops the log from its first bad record on.
    assert all(0 <= n < 40 for n in recovered), recovered
    assert max(recovered) > 0


# --- disks that refuse writes ------------------------------------------------------------------------

def _write_until_refused(store: RocksStore) -> tuple[int, list[str]]:
    """Write batch after batch until the store refuses one: the batches acknowledged, and the refusal."""
    for b in range(100_000):
        try:
            store.write(_batch(b))
        except StateWriteError as err:
            return b, [str(err)]
    return 100_000, []


def _fill_then_free(root: str) -> None:
    """Child process on a small tmpfs: write until the disk is full, then free space and reopen."""
    filler = Path(root, "filler")
    filler.write_bytes(bytes(5_500_000))
    store = RocksStore(Path(root, "state"))
    acked, errors = _write_until_refused(store)
    for step in (lambda: store.write(_batch(acked)), store.close):
        try:
            step()
            errors.append("")
        except StateWriteError as err:
            errors.append(str(err))
    filler.unlink()
    print(json.dumps({"acked": acked, "errors": errors, "recovered": _recovered_batches(Path(root, "state"))}))


def _open_read_only(root: str) -> None:
    """Child process: a store on a tmpfs that is then remounted read-only."""
    _write(Path(root, "state"), 3)
    subprocess.run(["mount", "-o", "remount,ro", root], check=True)
    try:
        RocksStore(Path(root, "state"))
        print(json.dumps({"error": None}))
    except StateError as err:
        print(json.dumps({"error": type(err).__name__, "message": str(err)}))


def _beyond_file_size_limit(root: str) -> None:
    """Child process: the write-ahead log grows past RLIMIT_FSIZE (EFBIG), then the limit is lifted."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    store = RocksStore(Path(root, "state"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    acked, errors = _write_until_refused(store)
    try:
        store.close()
    except StateWriteError as err:
        errors.append(str(err))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(json.dumps({"acked": acked, "errors": errors, "recovered": _recovered_batches(Path(root, "state"))}))


def _on_small_tmpfs(function: str, tmp_path: Path) -> dict:
    """Run ``function`` in a child process with its own mount namespace and an 8 MiB tmpfs at ``tmp_path``.

    A user namespace maps the caller to root there, so this needs no privilege where user namespaces
    are allowed, and the mount vanishes with the child.
    """
    require_mount_namespaces("a real full or read-only disk needs mount namespaces (unshare -rm); "
                             "test_a_file_size_limit_is_a_write_error still covers a refused write")
    mount = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$@"', str(tmp_path)]
    proc = _child(function, str(tmp_path), prefix=tuple(mount))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_full_disk_is_a_write_error_and_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    outcome = _on_small_tmpfs("_fill_then_free", tmp_path)
    assert outcome["acked"] > 50
    first, again, at_close = outcome["errors"]
    assert "No space left on device" in first and str(tmp_path / "state") in first
    assert "No space left on device" in again  # RocksDB takes no more writes after one failed
    assert "No space left on device" in at_close  # nor the flush at close
    assert outcome["recovered"] == outcome["acked"]  # after freeing space: exactly the acknowledged batches


def test_a_read_only_file_system_is_a_write_error(tmp_path: Path) -> None:
    outcome = _on_small_tmpfs("_open_read_only", tmp_path)
    assert outcome["error"] == "StateWriteError" and "Read-only file system" in outcome["message"]


def test_a_file_size_limit_is_a_write_error(tmp_path: Path) -> None:
    proc = _child("_beyond_file_size_limit", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome["acked"] > 10
    assert all("File too large" in error for error in outcome["errors"])
    assert outcome["recovered"] == outcome["acked"]
