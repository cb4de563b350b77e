"""State stores: one interface, an in-memory and a RocksDB implementation."""

from stream_rec.state.store import (FORMAT_VERSION, MemoryStore, RocksStore, StateCorruptError, StateError,
                                    StateFormatError, StateWriteError, Store, StoreLockedError, open_store, quarantine)

__all__ = ["FORMAT_VERSION", "MemoryStore", "RocksStore", "StateCorruptError", "StateError", "StateFormatError",
           "StateWriteError", "Store", "StoreLockedError", "open_store", "quarantine"]
