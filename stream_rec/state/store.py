"""Key-value state stores with atomic multi-family writes.

Three column families keep different kinds of state apart:

``meta``
    the state-format version, the marks of the user partitions, the changelog and item-update offsets
    the cache reflects;
``users``
    one row per user, keyed by user id, the same bytes as the user's changelog record
    (:mod:`stream_rec.state.changelog`);
``items``
    item-keyed rows (item factors, co-occurrence, popularity), which every worker holds.

A micro-batch's changes across all three go in one :meth:`Store.write`, which is atomic, so the
offsets recorded in ``meta`` always describe exactly the state beside them.

A RocksDB folder is a cache of state whose home is elsewhere: it can be lost, damaged or moved. A
:class:`RocksStore` never reads a damaged folder as less state than it holds. Opening, reading or
iterating a folder that RocksDB finds corrupt raises :class:`StateCorruptError`, naming the folder and,
where RocksDB says it, the file; :func:`quarantine` moves such a folder aside so the state can be rebuilt
in a clean one. A write that the disk refuses (full, read-only, I/O error) raises
:class:`StateWriteError`. What RocksDB does with each kind of damage is in ``tests/unit/test_store_faults.py``.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FAMILIES = ("meta", "users", "items")
FORMAT_VERSION = 2
_VERSION_KEY = b"format_version"

#: One atomic change: family -> key -> new value (``None`` deletes the key).
Changes = Mapping[str, Mapping[bytes, bytes | None]]


class StateError(RuntimeError):
    """A state store cannot be used; the subclasses say why."""


class StateFormatError(StateError):
    """The store was written by an incompatible version of stream_rec."""


class StoreLockedError(StateError):
    """Another process holds the store open."""


class StateCorruptError(StateError):
    """The state folder cannot be read back intact: move it aside (:func:`quarantine`) and rebuild it.

    ``path`` is the folder, ``detail`` what was found (RocksDB's own words where it said something) and
    ``file`` the file RocksDB named, if it named one.
    """

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        found = _NAMED_FILE.search(detail)
        self.file: str | None = found.group(0) if found else None
        super().__init__(f"state folder {self.path} is corrupt: {detail}; move it aside and rebuild the state "
                         "by replaying the events")


class StateWriteError(StateError):
    """The disk refused a write (full, read-only, I/O error); the store accepts no more writes.

    RocksDB stops taking writes after such a failure, so the process should close the store and exit; the
    state written before the failure is intact once the disk is fixed.
    """

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        super().__init__(f"cannot write the state in {self.path}: {detail}; stop, fix the disk (free space, "
                         "remount read-write) and restart")


#: A file of a RocksDB folder as RocksDB names it in its messages.
_NAMED_FILE = re.compile(r"\S*?(\d+\.(?:sst|log|blob)|MANIFEST-\d+|OPTIONS-\d+|CURRENT)\b")
#: The files that hold data: a folder with any of them and no CURRENT is damaged, not new.
_DATA_FILE = re.compile(r"\d+\.(?:sst|log|blob)|MANIFEST-\d+")
#: How the disk refusing a write reads in RocksDB's messages (ENOSPC, EROFS, EDQUOT, EFBIG).
_WRITE_FAULTS = ("No space left on device", "Read-only file system", "Disk quota exceeded", "File too large")


def _from_rocksdb(exc: BaseException) -> bool:
    """rocksdict raises RocksDB's errors as bare ``Exception``s (its ``DbClosedError`` is a subclass and
    means a closed store, a caller's bug); their message is all there is to tell them apart."""
    return type(exc) is Exception


class Store(ABC):
    """The interface every store implements; see ``tests/unit/test_store.py`` for the contract."""

    @abstractmethod
    def get(self, family: str, key: bytes) -> bytes | None: ...

    @abstractmethod
    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]: ...

    @abstractmethod
    def write(self, changes: Changes) -> None:
        """Apply all changes atomically: after a crash either all of them are there or none."""

    def close(self) -> None:
        """Release the store; the default has nothing to release."""

    def check_version(self) -> None:
        """Stamp a new store with :data:`FORMAT_VERSION`; refuse one of another version."""
        found = self.get("meta", _VERSION_KEY)
        if found is None:
            self.write({"meta": {_VERSION_KEY: str(FORMAT_VERSION).encode()}})
        elif int(found) != FORMAT_VERSION:
            raise StateFormatError(
                f"state format version {int(found)} found, this stream_rec reads version {FORMAT_VERSION}; "
                "point STREAM_REC_DATA_DIR elsewhere or rebuild the state by replaying the events"
            )


class MemoryStore(Store):
    """A store in a dict, for tests and offline evaluation."""

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {name: {} for name in FAMILIES}
        self.check_version()

    def get(self, family: str, key: bytes) -> bytes | None:
        return self._data[family].get(key)

    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self._data[family].items())

    def write(self, changes: Changes) -> None:
        for family, rows in changes.items():
            table = self._data[family]
            for key, value in rows.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value


class RocksStore(Store):
    """A RocksDB store (rocksdict) with one column family per kind of state, written in WriteBatches.

    ``fresh`` tells whether the folder held no state when it was opened (absent, empty, or created and
    never written), so a caller can say it starts from nothing rather than start silently empty.
    ``verify=True`` reads every key of every family with checksums verified before returning
    (:meth:`verify`), for a caller that wants to know the whole folder is readable before it serves.

    Raises :class:`StateCorruptError` (damaged folder), :class:`StoreLockedError` (open elsewhere),
    :class:`StateWriteError` (the disk refused to let RocksDB open, e.g. full or read-only) or
    :class:`StateFormatError` (another format version).
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        had_tables = self._check_folder()
        self._db = self._open()
        try:
            self._families = {name: self._db if name == "meta" else self._db.get_column_family(name)
                              for name in FAMILIES}
            self._handles = {name: self._db.get_column_family_handle(name) for name in FAMILIES if name != "meta"}
            self.fresh = self.get("meta", _VERSION_KEY) is None
            live = {os.path.basename(f["name"]) for f in self._db.live_files()}
            dropped = [name for name in had_tables if name not in live]
            if dropped:
                # A damaged MANIFEST that RocksDB read as a shorter history (measured with truncated ones):
                # it opens without error and drops the tables recorded after the cut, all of them when the
                # cut is early, so a family silently goes back in time or the folder opens empty; it has
                # already deleted them. A crash between a compaction's MANIFEST record and the deletion of
                # its inputs also leaves tables RocksDB no longer lists: rebuilt from Kafka then too, no loss.
                raise StateCorruptError(self.path, f"RocksDB opened without table files the folder held "
                                                   f"({', '.join(dropped[:3])}): its MANIFEST is damaged")
            self.check_version()
            if verify:
                self.verify()
        except BaseException:
            self._release()
            raise

    def _check_folder(self) -> list[str]:
        """The folder's table files; refuse data files without a CURRENT before RocksDB sees them.

        Without CURRENT, RocksDB takes a folder for a new database: it fails the first time (an existing
        write-ahead log) but leaves a new CURRENT behind, and the next open starts empty and deletes the
        old files (measured). A folder with no data files at all (absent, empty, only a LOG) is new.
        """
        names = sorted(os.listdir(self.path)) if self.path.is_dir() else []
        data = [name for name in names if _DATA_FILE.fullmatch(name)]
        if data and "CURRENT" not in names:
            raise StateCorruptError(self.path, f"it holds RocksDB data files ({', '.join(data[:3])}) but no CURRENT "
                                               "file, so RocksDB would take it for a new database and delete them")
        return [name for name in data if name.endswith(".sst")]

    def _open(self) -> Any:
        from rocksdict import DBRecoveryMode, Options, Rdict

        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_paranoid_checks(True)  # RocksDB's default, relied on: a damaged file fails the open
        # Replay the write-ahead log up to its first damaged record, the tail a crash tears (RocksDB's
        # default too). Each batch carries its own offsets, so the state opens at an earlier consistent
        # point and is caught up from Kafka beyond it.
        options.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
        families = {name: Options(raw_mode=True) for name in FAMILIES if name != "meta"}
        try:
            return Rdict(str(self.path), options, column_families=families)
        except Exception as exc:
            # OSError: rocksdict writes its own rocksdict-config.json beside RocksDB's files at open
            if not (_from_rocksdb(exc) or isinstance(exc, OSError)):
                raise
            raise self._open_error(exc) from exc

    def _open_error(self, exc: Exception) -> Exception:
        """The :class:`StateError` for a failed open; RocksDB only says what happened in its message."""
        detail = str(exc)
        if f"{os.sep}LOCK:" in detail:
            return StoreLockedError(f"state folder {self.path} is in use by another process; give each worker its "
                                    "own STREAM_REC_WORKER_ID or STREAM_REC_DATA_DIR")
        if detail.startswith("Corruption") or "No such file or directory" in detail:
            return StateCorruptError(self.path, detail)
        if any(fault in detail for fault in _WRITE_FAULTS):
            return StateWriteError(self.path, detail)
        return StateError(f"cannot open the state folder {self.path}: {detail}")

    def get(self, family: str, key: bytes) -> bytes | None:
        try:
            return self._families[family].get(key)
        except Exception as exc:
            if not _from_rocksdb(exc):
                raise
            raise StateCorruptError(self.path, str(exc)) from exc

    def items(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        return self._scan(family, keys_only=False)

    def verify(self) -> dict[str, int]:
        """Read every key of every family with block checksums verified; the rows in each family.

        Raises :class:`StateCorruptError` at the first block that fails. Values are not copied out, so
        this costs a read of the folder, not a load of the state.
        """
        from rocksdict import ReadOptions

        options = ReadOptions()
        options.set_verify_checksums(True)
        options.fill_cache(False)  # one pass over everything would evict the blocks the worker reads
        return {name: sum(1 for _ in self._scan(name, keys_only=True, options=options)) for name in FAMILIES}

    def _scan(self, family: str, *, keys_only: bool, options: Any = None) -> Iterator[Any]:
        """Every row (or key) of a family, in key order, and an error instead of a silently short scan.

        rocksdict's ``items()`` and ``keys()`` end quietly where RocksDB's iterator fails (a block with a
        bad checksum ends them as if the family ended there; measured), and do not expose the iterator's
        status. So after the fast scan ends, a second iterator on the same snapshot steps past the last
        key read: if RocksDB had failed there it fails again and says why.
        """
        snapshot = self._families[family].snapshot()
        last: Any = None  # the loops' own targets, so tracking the last key costs nothing per row
        try:
            if keys_only:
                for last in snapshot.keys(read_opt=options):
                    yield last
            else:
                for last in snapshot.items(read_opt=options):
                    yield last
                last = None if last is None else last[0]
            self._check_end(snapshot, family, last, options)
        except Exception as exc:
            if not _from_rocksdb(exc):
                raise
            raise StateCorruptError(self.path, f"reading family {family!r}: {exc}") from exc

    def _check_end(self, snapshot: Any, family: str, last: bytes | None, options: Any) -> None:
        """Raise if a scan that ended after ``last`` (None: before any key) did not reach the family's end."""
        cursor = snapshot.iter(options)
        if last is None:
            cursor.seek_to_first()
        else:
            cursor.seek(last)
            cursor.next()
        cursor.status()  # raises RocksDB's error, if it met one
        if cursor.valid():
            raise StateCorruptError(self.path, f"reading family {family!r} stopped before its end, after key {last!r}")

    def write(self, changes: Changes) -> None:
        """Apply all changes atomically.

        Raises :class:`StateWriteError` if the disk refuses the write, and :class:`StateCorruptError` if
        RocksDB refuses it because it found the folder corrupt (a compaction that read a damaged block).
        Either way RocksDB takes no more writes until the store is reopened.
        """
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for family, rows in changes.items():
            handle = self._handles.get(family)  # None: the default family, which holds meta
            for key, value in rows.items():
                if value is None:
                    batch.delete(key, handle) if handle is not None else batch.delete(key)
                elif handle is not None:
                    batch.put(key, value, handle)
                else:
                    batch.put(key, value)
        try:
            self._db.write(batch)
        except Exception as exc:
            if not _from_rocksdb(exc):
                raise
            raise self._write_error(exc) from exc

    def compact(self) -> None:
        """Flush and compact every family down to its last level, so that deleted rows (a forgotten user's,
        :meth:`stream_rec.service.RecService.forget`) are gone from the files too, not only from reads."""
        from rocksdict import BottommostLevelCompaction, CompactOptions

        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        try:
            for family in self._families.values():
                family.flush()
                family.compact_range(None, None, options)
        except Exception as exc:
            if not _from_rocksdb(exc):
                raise
            raise self._write_error(exc) from exc

    def _write_error(self, exc: Exception) -> StateError:
        detail = str(exc)
        return StateCorruptError(self.path, detail) if detail.startswith("Corruption") else StateWriteError(self.path, detail)

    def close(self) -> None:
        """Release the store. Closing flushes RocksDB's memory tables, so it can fail as a write does
        (:class:`StateWriteError`); what earlier writes returned from is in the write-ahead log and stays."""
        # rocksdict keeps the DB (and its lock) alive while any column-family object refers to it.
        self._families, self._handles = {}, {}
        try:
            self._db.close()
        except Exception as exc:
            if not _from_rocksdb(exc):
                raise
            raise self._write_error(exc) from exc

    def _release(self) -> None:
        """Close after a failed open, keeping the error that made it fail; the lock is released either way."""
        try:
            self.close()
        except StateError:
            pass


def quarantine(path: str | os.PathLike[str]) -> Path:
    """Move a corrupt state folder aside as ``<name>.corrupt-<UTC time>`` and return its new path.

    The evidence is kept for a post-mortem while the state is rebuilt in a clean folder at ``path``.
    The folder must not be open (a process holding it would go on writing into the moved folder).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "state").mkdir()
    >>> moved = quarantine(root / "state")
    >>> moved.name.startswith("state.corrupt-"), (root / "state").exists(), moved.is_dir()
    (True, False, True)
    >>> import shutil; shutil.rmtree(root)
    """
    source = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = source.with_name(f"{source.name}.corrupt-{stamp}")
    if target.exists():
        raise FileExistsError(f"cannot quarantine {source}: {target} exists")
    source.rename(target)  # same parent folder: one atomic rename, nothing copied
    return target


def open_store(path: str | os.PathLike[str] | None) -> Store:
    """A :class:`RocksStore` at ``path``, or a :class:`MemoryStore` when ``path`` is None."""
    return MemoryStore() if path is None else RocksStore(path)
