"""SIGKILL of a worker that keeps local copies of its base checkpoints (``worker.state_dir``).

The fault stream is fed to the worker in event-time chunks (a copy on topics of this test's own), and
every stage-1 shard checkpoints after each chunk, so the chain the restart finds is the same whatever
the machine's speed: a base (its local copy) and one delta per later chunk. The killed worker's
restart reads each base from its copy and only the deltas from the broker (the restore gauges say
so), is killed in turn, and the tables still equal the clean run's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from harness import (
    RssSampler,
    Stream,
    Worker,
    assert_same_tables,
    dump_tables,
    kill_after_progress,
    read_topic,
    run_env,
    run_to_idle,
    start_watched,
    wait_until,
    workers,
)
from kafka import KafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration

CHUNKS = 6  # the first makes each shard's base, the next three its deltas before the kill
# topic, partition, timestamp, key, value, headers
Record = tuple[str, int, int, bytes | None, bytes, list[tuple[str, bytes]]]


def _shard_figures(worker: Worker, name: str) -> dict[str, float]:
    return {labels["shard"]: value for metric, labels, value in worker.metrics()
            if metric == f"driftline_stage_{name}" and labels["stage"] == "shard"}


def _read_all(stream: Stream, topic: str) -> list[Record]:
    return [(topic, m.partition, m.timestamp, m.key, m.value, list(m.headers or ()))
            for m in read_topic(stream.bootstrap, topic, stream.partitions)]


class ChunkedCopy:
    """The fault stream copied to topics of its own, chunk by chunk in event time (each record to
    its partition, in its order), so a test decides when the worker has more to read."""

    def __init__(self, stream: Stream, prefix: str, chunks: int) -> None:
        self.stream = Stream(stream.bootstrap, f"{prefix}.predictions", f"{prefix}.labels",
                             stream.partitions, stream.counts, stream.profiles)
        ensure_topics(Settings(kafka={"bootstrap_servers": stream.bootstrap},
                               topics={"predictions": self.stream.predictions, "labels": self.stream.labels,
                                       "partitions": stream.partitions}))
        records = _read_all(stream, stream.predictions) + _read_all(stream, stream.labels)
        assert len(records) >= sum(stream.counts.values()), (len(records), stream.counts)
        times = sorted(ts for _, _, ts, _, _, _ in records)
        bounds = [times[len(times) * i // chunks] for i in range(1, chunks)] + [times[-1] + 1]
        self.chunks: list[list[Record]] = [[] for _ in range(chunks)]
        for record in records:  # read partition by partition in offset order: the order stays
            self.chunks[next(i for i, bound in enumerate(bounds) if record[2] < bound)].append(record)
        self.sent: Counter[tuple[str, int]] = Counter()
        self._source = {stream.predictions: self.stream.predictions, stream.labels: self.stream.labels}

    def send(self, index: int) -> None:
        producer = KafkaProducer(bootstrap_servers=self.stream.bootstrap, acks="all")
        try:
            for topic, partition, ts, key, value, headers in self.chunks[index]:
                producer.send(self._source[topic], value=value, key=key, partition=partition,
                              timestamp_ms=ts, headers=headers)
                self.sent[(self._source[topic], partition)] += 1
            producer.flush(60)
        finally:
            producer.close()

    def checkpointed(self, worker: Worker) -> bool:
        """Every record sent so far is in a stage-1 checkpoint (the copy's topics are fresh, so a
        partition's records sent are its end offset)."""
        resume = {(labels["topic"], int(labels["partition"])): value
                  for metric, labels, value in worker.metrics()
                  if metric == "driftline_checkpoint_offset" and labels["stage"] == "shard"}
        return all(resume.get(tp, 0) >= sent for tp, sent in self.sent.items() if sent)


def test_sigkill_restores_each_base_from_its_local_copy(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    run = "local_base_kill"
    copy = ChunkedCopy(fault_stream, "faultlocal", CHUNKS)
    state_dir = fault_root / run / "state"
    # One base per shard (at the first checkpoint), then deltas only: the copy stays the chain's base.
    env = run_env(copy.stream, run, fault_root,
                  DRIFTLINE_WORKER_STATE_DIR=str(state_dir),
                  DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S="0.3",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTAS_PER_BASE="1000",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTA_RATIO="1000",
                  DRIFTLINE_WORKER_RESTORE_TARGET_S="0")
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    shards = fault_stream.partitions
    with workers() as started, RssSampler() as rss:
        first = start_watched(started, rss, env, log, home=home, idle=None)
        for index in range(4):  # one link per shard and chunk: a base, then three deltas
            copy.send(index)
            wait_until(lambda: copy.checkpointed(first), 180, f"chunk {index} checkpointed", alive=[first])
        assert len(list(state_dir.glob("*.shard-*.base"))) == shards
        first.kill()

        second = start_watched(started, rss, env, log, home=home, idle=None)
        wait_until(lambda: len(_shard_figures(second, "restore_local_bytes")) == shards, 180,
                   "every stage-1 shard restored", alive=[second])
        local = _shard_figures(second, "restore_local_bytes")
        broker = _shard_figures(second, "restore_broker_bytes")
        deltas = _shard_figures(second, "restore_deltas")
        assert all(value > 0 for value in local.values()), f"bases from the broker: {local}"
        assert all(value >= 3 for value in deltas.values()), f"deltas restored per shard: {deltas}"
        assert second.metric_sum("driftline_checkpoint_local_copy_failures_total") == 0
        remaining = sum(len(chunk) for chunk in copy.chunks[4:])
        for index in range(4, CHUNKS):
            copy.send(index)
        kill_after_progress(second, remaining / 4)
        run_to_idle(env, log, started, home, rss)
    print(f"bases read locally {local}, from the broker {broker}, deltas {deltas}; {rss.check()}")
    source = {copy.stream.predictions: fault_stream.predictions, copy.stream.labels: fault_stream.labels}
    tables = {table: [[source.get(cell, cell) for cell in row] for row in rows]  # rows naming their topic
              for table, rows in dump_tables(fault_root, run).items()}
    assert_same_tables(tables, clean_tables)
