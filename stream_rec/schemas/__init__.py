"""JSON Schemas (draft 2020-12) of the messages stream_rec reads and writes, shipped with the package.

``event`` (the input topics), ``item`` (the items topic: catalogue and availability), ``impression`` (the
impressions topic) and ``recommendation`` (the recommendations topic). They describe what
:mod:`stream_rec.events` accepts and :mod:`stream_rec.recommendations` publishes, and are tested against
that code (tests/unit/test_schemas.py); the few checks a schema cannot express are named in each one's
``description``. Schemas refer to each other by file name (``event.schema.json#/$defs/id``).

>>> sorted(NAMES)
['event', 'impression', 'item', 'recommendation']
>>> load("event")["required"]
['user_id', 'item_id', 'type', 'ts']
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

NAMES = ("event", "item", "impression", "recommendation")


def path(name: str) -> Any:
    """The schema file of ``name`` (an importlib Traversable: ``.read_text()``, or a path on disk)."""
    if name not in NAMES:
        raise ValueError(f"no schema named {name!r} (there are: {', '.join(NAMES)})")
    return resources.files(__name__) / f"{name}.schema.json"


def load(name: str) -> dict[str, Any]:
    """The schema of ``name`` as a dict."""
    return json.loads(path(name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
