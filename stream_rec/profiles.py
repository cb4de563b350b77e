"""What the service remembers about each user beyond the models: purchases, event count, recent event ids."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from stream_rec.types import IntArray

#: Recent event ids kept per user to drop a producer's retried duplicates; retries arrive close together.
RECENT_EVENT_IDS = 64


@dataclass(slots=True)
class Profile:
    """One user's bookkeeping; ``bought`` maps item index -> last purchase time (ms)."""

    n_events: int = 0
    bought: dict[int, int] = field(default_factory=dict)
    event_ids: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_EVENT_IDS))

    def to_bytes(self) -> bytes:
        return json.dumps({"n": self.n_events, "b": [[i, t] for i, t in self.bought.items()], "e": list(self.event_ids)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        obj = json.loads(data)
        return cls(
            n_events=obj["n"],
            bought={int(i): int(t) for i, t in obj["b"]},
            event_ids=deque(obj["e"], maxlen=RECENT_EVENT_IDS),
        )

    def bought_items(self) -> IntArray:
        return np.fromiter(self.bought, dtype=np.int64, count=len(self.bought))
