"""Create stream_rec's topics up front (a consumer subscribed to a missing topic waits silently)."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream_rec.settings import Settings

log = logging.getLogger(__name__)


def all_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics().values(), settings.topic_events, settings.topic_recommendations,
            settings.topic_dead_letter]


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create every topic that does not exist yet, with ``settings.partitions`` partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in all_topics(settings) if t not in existing]
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, num_partitions=settings.partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass  # another worker created it between our listing and our request
        if missing:
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()
