"""What the service remembers about each user beyond the models: event count, recent event ids, purchases."""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass

#: Recent event ids kept per user to drop a producer's retried duplicates; retries arrive close together.
RECENT_EVENT_IDS = 64


@dataclass(slots=True)
class Profile:
    """One user's bookkeeping (their purchases live in :class:`stream_rec.purchases.Purchases`).

    ``event_ids`` stays ``None`` until the user's first event with an id: an empty deque costs more
    than half a kilobyte, a lot across a million users whose shop sends no ids.
    """

    n_events: int = 0
    event_ids: deque[str] | None = None

    def remember(self, event_id: str) -> None:
        if self.event_ids is None:
            self.event_ids = deque(maxlen=RECENT_EVENT_IDS)
        self.event_ids.append(event_id)

    def has_seen(self, event_id: str) -> bool:
        return self.event_ids is not None and event_id in self.event_ids


def event_digest(item_id: str, event_type: str, ts_ms: int) -> int:
    """A stable 32-bit fingerprint of one event of a user: a user's digest is the sum of its applied
    events' fingerprints (mod 2**64), so a checker that knows the input can tell a user whose state
    lost one event and applied another twice from one that applied exactly its events.

    >>> event_digest("sku-1", "view", 1000) == event_digest("sku-1", "view", 1000) != event_digest("sku-1", "view", 1001)
    True
    """
    return zlib.crc32(f"{item_id}\x1f{event_type}\x1f{ts_ms}".encode("utf-8", "surrogatepass"))
