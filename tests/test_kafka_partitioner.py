"""driftline.kafka.partitioner is Kafka's default partitioner: equal to the Java client's murmur2
(its own test vectors), to kafka-python's and aiokafka's, scalar and vectorised alike."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from driftline.kafka.partitioner import (
    murmur2,
    murmur2_many,
    partition_for_key,
    partitions_for_keys,
    partitions_for_texts,
)

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's signed results.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


def many_keys(n: int = 20_000, seed: int = 14) -> list[bytes]:
    """Random keys of every length 0..64 (each remainder mod 4), a few ids and non-ASCII text."""
    rng = random.Random(seed)
    keys = [rng.randbytes(rng.randrange(65)) for _ in range(n)]
    return keys + [f"pred-{i}".encode() for i in range(1000)] + ["ünïcode-ïd".encode(), b"\xff" * 37]


def test_the_java_clients_test_vectors() -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert murmur2(key.encode()) == signed & 0xFFFFFFFF, key
    assert murmur2_many([k.encode() for k in JAVA_MURMUR2]).tolist() == [
        s & 0xFFFFFFFF for s in JAVA_MURMUR2.values()
    ]


def test_scalar_and_vectorised_equal_kafka_python_and_aiokafka_on_many_keys() -> None:
    keys = many_keys()
    scalar = [murmur2(k) for k in keys]
    assert scalar == [kafka_python_murmur2(k) for k in keys]
    assert scalar == [aiokafka_murmur2(k) for k in keys]
    assert murmur2_many(keys).tolist() == scalar
    assert murmur2_many([]).tolist() == []


def test_vectorised_on_keys_of_one_length() -> None:
    # a batch whose keys share a length (ids of one format) takes a path of its own
    rng = random.Random(3)
    for length in range(0, 70):
        keys = [rng.randbytes(length) for _ in range(40)]
        assert murmur2_many(keys).tolist() == [kafka_python_murmur2(k) for k in keys], length


def test_partitions_equal_aiokafkas_default_partitioner() -> None:
    keys = many_keys(5000, seed=7)
    for partitions in (1, 2, 3, 7, 12, 64):
        every = list(range(partitions))
        want = [DefaultPartitioner()(k, every, every) for k in keys]
        assert [partition_for_key(k, partitions) for k in keys] == want
        assert partitions_for_keys(keys, partitions).tolist() == want


def test_texts_partition_as_their_utf8_keys() -> None:
    # ASCII ids take one encode of them all; a batch with any other text, each its own
    rng = random.Random(9)
    ascii_ids = [f"pred-{rng.randrange(10**9)}-{'x' * rng.randrange(9)}" for _ in range(2000)]
    for texts in (ascii_ids, [*ascii_ids, "ünïcode-ïd"], [*ascii_ids[:50], "lone-\ud800"], [], [""]):
        want = [partition_for_key(t.encode("utf-8", "surrogatepass"), 7) for t in texts]
        assert partitions_for_texts(texts, 7).tolist() == want


@given(st.lists(st.binary(max_size=80), max_size=50), st.integers(1, 500))
def test_any_keys_any_partition_count(keys: list[bytes], partitions: int) -> None:
    want = [(kafka_python_murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]
    assert [partition_for_key(k, partitions) for k in keys] == want
    assert partitions_for_keys(keys, partitions).tolist() == want
