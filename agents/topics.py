"""Create stream_rec's topics up front (a consumer subscribed to a missing topic waits silently)."""

from __future__ import annotations

import logging
import socket

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.security import kafka_python_options, tls_refused
from stream_rec.settings import Settings

log = logging.getLogger(__name__)


def all_topics(settings: Settings) -> list[str]:
    return [*settings.input_topics().values(), settings.topic_items, settings.topic_impressions, settings.topic_forget,
            settings.topic_events,
            settings.topic_recommendations, settings.topic_dead_letter, settings.topic_user_state,
            settings.topic_item_updates]


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Configs of the topics that need more than the cluster's defaults.

    Compacted, the latest value per key kept: the user-state changelog (a row per user), the
    recommendations (a list per user; a front end or ``stream-rec serve`` reads the latest of each) and
    the items (a message per item). The items topic keeps its tombstones for ever (``delete.retention.ms``
    at its maximum): every worker reads it from the start, so a deleted item's tombstone is the only way
    one started later learns of the deletion. The item updates are kept for ever: a worker that starts
    without a local state rebuilds its item model from all of them."""
    return {settings.topic_user_state: {"cleanup.policy": "compact"},
            settings.topic_recommendations: {"cleanup.policy": "compact"},
            settings.topic_items: {"cleanup.policy": "compact", "delete.retention.ms": str(2**63 - 1)},
            settings.topic_item_updates: {"retention.ms": "-1", "retention.bytes": "-1"}}


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answers at the configured bootstrap address."""


def _unreachable(bootstrap: str, why: str) -> str:
    return (f"no Kafka broker answers at {bootstrap} ({why}); start one with `stream-rec broker`, "
            "or point STREAM_REC_KAFKA_BOOTSTRAP at your cluster")


def reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """Whether any bootstrap server accepts a connection: fail in seconds, not after the client's 30 s timeout."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def broker_problem(settings: Settings, bootstrap: str, *, unreachable: str) -> str | None:
    """Why the Kafka clients of ``settings`` cannot start against ``bootstrap``, found in seconds rather than
    after a client's 30 s timeout: ``unreachable`` when no bootstrap server accepts a connection, the refused
    TLS handshake (:func:`agents.security.tls_refused`); None when neither."""
    if not reachable(bootstrap):
        return unreachable
    return tls_refused(settings, bootstrap)


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create every topic that does not exist yet, with ``settings.partitions`` partitions replicated
    ``settings.replication_factor`` times (a topic that exists is left as it is)."""
    problem = broker_problem(settings, bootstrap, unreachable=_unreachable(bootstrap, "connection refused or timed out"))
    if problem:
        raise BrokerUnreachable(problem)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=f"{settings.app_id}-admin",
                                 **kafka_python_options(settings))
    except KafkaError as err:
        raise BrokerUnreachable(_unreachable(bootstrap, err.__class__.__name__)) from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in all_topics(settings) if t not in existing]
        configs = topic_configs(settings)
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, num_partitions=settings.partitions,
                                              replication_factor=settings.replication_factor,
                                              topic_configs=configs.get(topic, {}))])
            except TopicAlreadyExistsError:
                pass  # another worker created it between our listing and our request
        if missing:
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()


def topic_ids(settings: Settings, bootstrap: str) -> dict[str, str]:
    """Kafka's id of each of stream_rec's topics: a topic deleted and created again gets a new one, which is
    how a worker tells that the offsets it applied up to no longer mean anything there."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=f"{settings.app_id}-admin",
                             **kafka_python_options(settings))
    try:
        described = admin.describe_topics(all_topics(settings))
    finally:
        admin.close()
    return {str(topic["name"]): str(topic["topic_id"]) for topic in described
            if not topic.get("error_code") and topic.get("topic_id")}
