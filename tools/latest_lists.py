"""A shop front end's way to keep every user's latest list from the recommendations topic (the example
docs/formats.md points to; ``stream-rec serve`` does the same into RocksDB and answers over HTTP).

The topic is compacted and keyed by user id, so its whole content is the latest list of every user.
Read it **without a consumer group, from the beginning**, then keep following it: a group with
``auto_offset_reset="latest"`` starts after the lists published before it joined (and a group join
takes seconds), so it misses every user who has not had an event since. A null value (tombstone) is
a forgotten user; the empty key holds the list for a user not seen yet.

    python -m tools.latest_lists --bootstrap 127.0.0.1:9092 --idle-exit 5

prints ``{"user id": ["item id", ...], ...}`` when the topic has been quiet for 5 s (without
``--idle-exit`` it follows the topic until Ctrl-C, then prints).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from agents.security import kafka_python_options
from stream_rec.settings import Settings

#: The key of the list for users the shop has not seen yet (no user id is empty).
STRANGER = ""


class LatestLists:
    """The latest list per user, from the start of the recommendations topic and on as lists arrive."""

    def __init__(self, bootstrap: str, topic: str = "stream-rec.recommendations", security: Settings | None = None) -> None:
        """``security``: the settings whose Kafka security to use (default: the ``STREAM_REC_*`` environment's)."""
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                      **kafka_python_options(security or Settings.from_env()))
        partitions = self.consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise SystemExit(f"no topic {topic!r} at {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.latest: dict[str, list[str]] = {}

    def poll(self, timeout_ms: int = 200) -> int:
        """Apply what arrived; returns how many messages that was."""
        n = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for message in records:
                self.apply(message)
                n += 1
        return n

    def apply(self, message: Any) -> None:
        if message.key is None:
            return  # every list is keyed by its user id: not one of stream_rec's
        user = message.key.decode("utf-8", "replace")
        if message.value is None:  # a forgotten user: nothing of theirs may be shown any more
            self.latest.pop(user, None)
            return
        rec = json.loads(message.value)
        self.latest[user] = [item["item_id"] for item in rec["items"]]

    def for_user(self, user_id: str) -> list[str]:
        """What to show ``user_id``: their latest list, else the list for a user not seen yet."""
        return self.latest.get(user_id) or self.latest.get(STRANGER, [])

    def close(self) -> None:
        self.consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="stream-rec.recommendations")
    parser.add_argument("--idle-exit", type=float, default=None, help="stop after this many seconds without a message")
    args = parser.parse_args(argv)
    lists = LatestLists(args.bootstrap, args.topic)
    try:
        last = time.monotonic()
        while args.idle_exit is None or time.monotonic() - last < args.idle_exit:
            if lists.poll():
                last = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        lists.close()
    json.dump(lists.latest, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
