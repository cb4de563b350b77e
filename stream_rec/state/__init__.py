"""State stores: one interface, an in-memory and a RocksDB implementation."""

from stream_rec.state.store import FORMAT_VERSION, MemoryStore, RocksStore, StateFormatError, Store, StoreLockedError, open_store

__all__ = ["FORMAT_VERSION", "MemoryStore", "RocksStore", "StateFormatError", "Store", "StoreLockedError", "open_store"]
