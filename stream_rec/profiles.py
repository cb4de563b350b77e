"""What the service remembers about each user beyond the models: event count, recent event ids, purchases."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

#: Recent event ids kept per user to drop a producer's retried duplicates; retries arrive close together.
RECENT_EVENT_IDS = 64


@dataclass(slots=True)
class Profile:
    """One user's bookkeeping (their purchases live in :class:`stream_rec.purchases.Purchases`)."""

    n_events: int = 0
    event_ids: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_EVENT_IDS))


def encode_profile(profile: Profile, bought: list[tuple[int, int]]) -> bytes:
    """A user's row in the ``users`` family: JSON ``{"n": events, "b": [[item, ms], ...], "e": [ids]}``.

    >>> encode_profile(Profile(2), [(5, 1000)])
    b'{"n": 2, "b": [[5, 1000]], "e": []}'
    """
    return json.dumps({"n": profile.n_events, "b": [[i, t] for i, t in bought], "e": list(profile.event_ids)}).encode()


def decode_profile(data: bytes) -> tuple[Profile, list[tuple[int, int]]]:
    """The inverse of :func:`encode_profile`: ``(profile, bought)``.

    >>> decode_profile(b'{"n": 2, "b": [[5, 1000]], "e": ["x"]}')
    (Profile(n_events=2, event_ids=deque(['x'], maxlen=64)), [(5, 1000)])
    """
    obj = json.loads(data)
    profile = Profile(n_events=obj["n"], event_ids=deque(obj["e"], maxlen=RECENT_EVENT_IDS))
    return profile, [(int(i), int(t)) for i, t in obj["b"]]
