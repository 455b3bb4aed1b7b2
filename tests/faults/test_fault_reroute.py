"""SIGKILL while records are re-routed: the fault stream's labels copied through confluent-kafka
(librdkafka's default CRC32 partitioner, every 4th label without a key), its predictions as the
SDK keys them (murmur2). Most labels then reach their join through driftline.repartition; three
SIGKILLs at random points still give the uninterrupted run's tables."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import Stream, dump_tables, read_topic, run_env, run_to_idle, workers
from kafka import KafkaProducer
from test_fault_sigkill import _kill_repeatedly

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, bytes | None, bytes]]:
    return [(m.timestamp, m.key, m.value) for m in read_topic(bootstrap, topic, partitions)]


@pytest.fixture(scope="module")
def crc_stream(fault_stream: Stream) -> Stream:
    prefix = "faultcrc"
    settings = Settings(
        kafka={"bootstrap_servers": fault_stream.bootstrap},
        topics={"predictions": f"{prefix}.predictions", "labels": f"{prefix}.labels",
                "partitions": fault_stream.partitions,
                **{name: f"{prefix}.setup.{name}" for name in ("outcomes", "dead_letters", "repartition")}},
    )
    ensure_topics(settings)
    predictions = _read_all(fault_stream.bootstrap, fault_stream.predictions, fault_stream.partitions)
    labels = _read_all(fault_stream.bootstrap, fault_stream.labels, fault_stream.partitions)
    assert predictions and labels
    murmur2 = KafkaProducer(bootstrap_servers=fault_stream.bootstrap, acks="all")
    for ts, key, value in sorted(predictions, key=lambda r: r[0]):
        murmur2.send(settings.topics.predictions, value=value, key=key, timestamp_ms=ts)
    murmur2.flush(60)
    murmur2.close()
    crc32 = confluent_kafka.Producer({"bootstrap.servers": fault_stream.bootstrap})  # default partitioner
    for i, (ts, key, value) in enumerate(sorted(labels, key=lambda r: r[0])):
        crc32.produce(settings.topics.labels, value, None if i % 4 == 0 else key, timestamp=ts)
        crc32.poll(0)
    assert crc32.flush(60) == 0
    return Stream(fault_stream.bootstrap, settings.topics.predictions, settings.topics.labels,
                  fault_stream.partitions, fault_stream.counts, fault_stream.profiles)


@pytest.mark.timeout(1500)
def test_three_sigkills_while_labels_are_rerouted(crc_stream: Stream, fault_root: Path) -> None:
    root = fault_root / "crc"  # runs named like test_fault_sigkill's, so a root of their own
    root.mkdir(exist_ok=True)
    with workers() as started:
        run_to_idle(run_env(crc_stream, "clean", root), root / "clean.log", started, root / "clean" / "home")
    clean = dump_tables(root, "clean")
    labelled = crc_stream.counts["labels"]
    assert len(clean["outcomes"]) > 0.9 * labelled, (len(clean["outcomes"]), labelled)
    t0 = time.monotonic()
    _kill_repeatedly(crc_stream, root, clean, kills=3, seed=317)  # all three mid-stream
    print(f"3 kills and the final run: {time.monotonic() - t0:.0f} s")
