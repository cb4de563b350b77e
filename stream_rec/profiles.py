"""What the service remembers about each user beyond the models: event count, recent event ids, purchases."""

from __future__ import annotations

import json
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


def encode_profile(profile: Profile, bought: list[tuple[int, int]]) -> bytes:
    """A user's row in the ``users`` family: JSON ``{"n": events, "b": [[item, ms], ...], "e": [ids]}``.

    >>> encode_profile(Profile(2), [(5, 1000)])
    b'{"n": 2, "b": [[5, 1000]], "e": []}'
    """
    return json.dumps({"n": profile.n_events, "b": [[i, t] for i, t in bought], "e": list(profile.event_ids or ())}).encode()


def decode_profile(data: bytes) -> tuple[Profile, list[tuple[int, int]]]:
    """The inverse of :func:`encode_profile`: ``(profile, bought)``.

    >>> decode_profile(b'{"n": 2, "b": [[5, 1000]], "e": ["x"]}')
    (Profile(n_events=2, event_ids=deque(['x'], maxlen=64)), [(5, 1000)])
    >>> decode_profile(b'{"n": 1, "b": [], "e": []}')
    (Profile(n_events=1, event_ids=None), [])
    """
    obj = json.loads(data)
    profile = Profile(n_events=obj["n"], event_ids=deque(obj["e"], maxlen=RECENT_EVENT_IDS) if obj["e"] else None)
    return profile, [(int(i), int(t)) for i, t in obj["b"]]
