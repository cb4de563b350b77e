"""Ids: the partition a user's messages go to must be the one Kafka's default partitioner picks."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2

from stream_rec.ids import kafka_partition


def test_kafka_partition_is_the_kafka_clients_default_partitioner() -> None:
    rng = random.Random(3)
    keys = ["", "a", "ab", "abc", "abcd", "abcde", "u42", "ü-ß-€", "\U0001f600x"]
    keys += ["".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 40))) for _ in range(500)]
    for key in keys:
        for partitions in (1, 4, 7, 12):
            expected = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
            assert kafka_partition(key, partitions) == expected, key
