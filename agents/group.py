"""How the workers of one consumer group share the partitions: every worker gets some whenever it can.

Faust's assignor (:class:`faust.assignor.PartitionAssignor`) gives each worker the same partition numbers of
the topics its agents read together (co-partitioning: with ``STREAM_REC_INPUT_KEYS=user_id`` a user's
events on the three input topics must meet in one worker). It sizes a worker's share for *standby
replicas* of Faust tables: with ``table_standby_replicas`` above 0 (Faust's default is 1) each worker may
hold ``ceil(partitions / workers)`` active partitions and keeps them while under that cap, so with 4
partitions and 3 workers the first two keep 2 each and the third gets none. With no replicas it first
trims every worker to ``floor(partitions / workers)``, so every worker gets one as long as there are at
least as many partitions as workers.

stream_rec keeps its state in its own RocksDB, not in Faust tables, so standbys would replicate nothing.
But the setting cannot simply be 0: Faust's consumer then does not use Faust's assignor at all and falls
back to aiokafka's round robin over all topic-partitions, which does not co-partition. So the app keeps
``table_standby_replicas=1`` (Faust's assignor in use) and :class:`BalancedAssignor` assigns as with 0.
Both Faust behaviours are pinned by ``tests/unit/test_group.py``.
"""

from __future__ import annotations

from typing import Any

from faust.assignor import PartitionAssignor


class BalancedAssignor(PartitionAssignor):  # type: ignore[misc]
    """Faust's co-partitioning assignor with no standby replicas: balanced, no member left empty."""

    def __init__(self, app: Any, replicas: int = 0) -> None:
        super().__init__(app, replicas=0)  # the configured standbys would size shares, never hold state
