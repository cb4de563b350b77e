"""The Faust behaviours agents/group.py relies on, pinned: if Faust changes them, these fail loudly.

1. Faust's consumer uses Faust's (co-partitioning) assignor only when ``table_standby_replicas`` > 0 (or
   the app has changelog tables); otherwise aiokafka's round robin, which does not co-partition.
2. Faust's assignor sizes shares for standbys: with replicas, a third worker joining two that hold 4
   partitions gets none; with none, every worker gets at least one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from agents.app import faust_app
from agents.group import BalancedAssignor
from stream_rec.settings import Settings

TOPICS = ("in.browse", "in.click", "in.purchase")
PARTITIONS = 4


class FakeCluster:
    """What Faust's assignor reads of aiokafka's cluster metadata."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))


def member(*held: int) -> ConsumerProtocolMemberMetadata:
    """A member subscribed to :data:`TOPICS` that held partitions ``held`` of each before this rebalance."""
    previous = ClientAssignment(actives={topic: list(held) for topic in TOPICS} if held else {}, standbys={})
    metadata = ClientMetadata(assignment=previous, url="http://worker:6066", changelog_distribution={},
                              external_topic_distribution={}, topic_groups={})
    return ConsumerProtocolMemberMetadata(0, list(TOPICS), metadata.dumps())


def assign(assignor: Any, members: dict[str, ConsumerProtocolMemberMetadata]) -> dict[str, dict[str, list[int]]]:
    result = assignor.assign(FakeCluster(), members)
    return {m: {topic: sorted(parts) for topic, parts in a.assignment} for m, a in result.items()}


@pytest.fixture
def app() -> Any:
    return faust_app(Settings(), "127.0.0.1:9")  # never connects


def test_the_worker_app_assigns_with_the_balanced_assignor_and_keeps_faust_s_assignor_selected(app: Any) -> None:
    assert isinstance(app.assignor, BalancedAssignor)
    assert app.assignor.replicas == 0
    assert app.conf.table_standby_replicas == 1


def test_faust_s_consumer_uses_faust_s_assignor_only_with_standby_replicas(app: Any) -> None:
    async def strategy(of: faust.App) -> list:
        consumer = of.consumer._thread._create_worker_consumer(of.transport)
        try:
            return list(consumer._partition_assignment_strategy)
        finally:
            await consumer.stop()

    assert asyncio.run(strategy(app)) == [app.assignor]
    no_standbys = faust.App("no-standbys", broker="kafka://127.0.0.1:9", table_standby_replicas=0, web_enabled=False)
    assert asyncio.run(strategy(no_standbys)) == [RoundRobinPartitionAssignor]


def test_with_standbys_faust_leaves_a_third_worker_without_partitions(app: Any) -> None:
    out = assign(PartitionAssignor(app, replicas=1), {"a": member(0, 1), "b": member(2, 3), "c": member()})
    assert [len(out[m].get(TOPICS[0], [])) for m in "abc"] == [2, 2, 0]


@pytest.mark.parametrize("held,joining", [((2, 2), 1), ((1, 1, 2), 1), ((4,), 1), ((4,), 3)],
                         ids=["2+2+new", "1+1+2+new", "4+new", "4+3new"])
def test_the_balanced_assignor_gives_every_worker_partitions_and_co_partitions(
        app: Any, held: tuple[int, ...], joining: int) -> None:
    members: dict[str, ConsumerProtocolMemberMetadata] = {}
    start = 0
    for n, count in enumerate(held):
        members[f"old{n}"] = member(*range(start, start + count))
        start += count
    members.update({f"new{n}": member() for n in range(joining)})
    out = assign(app.assignor, members)
    for assignment in out.values():
        assert set(assignment) == set(TOPICS) and len({tuple(p) for p in assignment.values()}) == 1  # co-partitioned
    owned = [out[m][TOPICS[0]] for m in members]
    assert all(owned), owned
    assert sorted(p for parts in owned for p in parts) == list(range(PARTITIONS))
    assert max(map(len, owned)) - min(map(len, owned)) <= 1
