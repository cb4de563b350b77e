"""What stream_rec asks a cluster for when it creates its topics (agents/topics.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agents import topics
from stream_rec.settings import Settings


class _Admin:
    """Stands in for kafka-python's admin client: records the topics asked for."""

    created: list[Any] = []

    def __init__(self, **_: Any) -> None:
        pass

    def list_topics(self) -> list[str]:
        return ["stream-rec.browse"]  # exists already: left as it is

    def create_topics(self, new: list[Any]) -> None:
        _Admin.created.extend(new)

    def close(self) -> None:
        pass


def test_topics_are_created_compacted_where_the_latest_value_per_key_is_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "KafkaAdminClient", _Admin)
    monkeypatch.setattr(topics, "reachable", lambda bootstrap: True)
    _Admin.created = []
    settings = replace(Settings(), partitions=6, replication_factor=3)
    topics.ensure_topics(settings, "broker:9092")
    made = {t.name: t for t in _Admin.created}
    assert set(made) == set(topics.all_topics(settings)) - {"stream-rec.browse"}
    assert {t.num_partitions for t in made.values()} == {6}
    assert {t.replication_factor for t in made.values()} == {3}
    compacted = {name for name, t in made.items() if t.topic_configs.get("cleanup.policy") == "compact"}
    assert compacted == {settings.topic_recommendations, settings.topic_items, settings.topic_user_state}
    # A deleted item's tombstone must outlive compaction: workers read the items topic from its start.
    assert int(made[settings.topic_items].topic_configs["delete.retention.ms"]) == 2**63 - 1
    assert made[settings.topic_item_updates].topic_configs["retention.ms"] == "-1"  # rebuilt from it, all of it


def test_the_replication_factor_is_a_checked_setting() -> None:
    assert Settings.from_env({"STREAM_REC_REPLICATION_FACTOR": "3"}).replication_factor == 3
    with pytest.raises(ValueError, match="STREAM_REC_REPLICATION_FACTOR"):
        Settings.from_env({"STREAM_REC_REPLICATION_FACTOR": "0"})
