"""Send events to stream_rec's input topics with kafka-python, and read topics back.

``security`` is the settings whose Kafka security the clients use; the default, ``Settings()``, is plaintext
(the tests' and tools' own embedded broker).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from agents.security import kafka_python_options
from stream_rec.events import stream_of
from stream_rec.settings import Settings


def make_producer(bootstrap: str, security: Settings | None = None) -> KafkaProducer:
    # acks=all and retries: the shop's producer must not lose events; linger batches them.
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5,
                         batch_size=256 * 1024, retries=5, **kafka_python_options(security or Settings()))


def topic_for(event: dict[str, Any], settings: Settings) -> str:
    """The input topic an event belongs on, by its type (unknown types go to the browse topic)."""
    try:
        return settings.input_topics()[stream_of(event.get("type", ""))]
    except ValueError:
        return settings.topic_browse


def produce_events(producer: KafkaProducer, events: Iterable[dict[str, Any]], settings: Settings,
                   *, key_by_user: bool = True) -> int:
    """Send each event to its stream's topic; returns how many the broker acknowledged."""
    futures = []
    for event in events:
        key = str(event["user_id"]).encode() if key_by_user and "user_id" in event else None
        futures.append(producer.send(topic_for(event, settings), key=key, value=json.dumps(event).encode()))
    producer.flush()
    return sum(1 for f in futures if f.succeeded())


def read_topic(bootstrap: str, topic: str, *, idle_ms: int = 2000, max_messages: int | None = None,
               security: Settings | None = None) -> Iterator[Any]:
    """Every message on ``topic`` from the beginning, stopping after ``idle_ms`` without news."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=idle_ms, group_id=None,
                             **kafka_python_options(security or Settings()))
    try:
        for n, message in enumerate(consumer, start=1):
            yield message
            if max_messages is not None and n >= max_messages:
                break
    finally:
        consumer.close()
