"""What re-routing costs: the in-process pipeline (stage 1 + stage 2) on the same events, once with
every record on its murmur2 partition (the SDK; nothing re-routed) and once with the labels on
librdkafka's CRC32 partitions (most re-routed through driftline.repartition).

    .venv/bin/python bench/bench_reroute.py [--n 100000] [--partitions 4]

Prints events/s of each run and the share of labels re-routed. In process the detour costs the
repartition encoding, a second decode and the bookkeeping; on a broker add one produce and consume
per re-routed record.
"""

from __future__ import annotations

import argparse
import random
import time
import zlib
from collections import Counter

import orjson

from driftline.config import Settings
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.runtime import tune_gc

START = 1_767_225_600_000


def events(n: int, seed: int = 1) -> list[tuple[str, int, bytes, bytes]]:
    """(kind, timestamp, key, value) in production order: a prediction every 10 ms, its label
    1-30 s later."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = START + i * 10
        pid = f"p-{i:09d}"
        features = {f"x{j}": rng.gauss(0, 1) for j in range(10)}
        prediction = {"prediction_id": pid, "model_id": "m", "timestamp": ts, "features": features,
                      "prediction": {"label": rng.choice(("a", "b")), "score": rng.random()}}
        out.append(("p", ts, pid.encode(), orjson.dumps(prediction)))
        label_ts = ts + rng.randint(1_000, 30_000)
        label = {"prediction_id": pid, "label": rng.choice(("a", "b")), "timestamp": label_ts}
        out.append(("l", label_ts, pid.encode(), orjson.dumps(label)))
    out.sort(key=lambda e: e[1])
    return out


def records(
    settings: Settings, stream: list[tuple[str, int, bytes, bytes]], crc_labels: bool
) -> list[RawRecord]:
    partitions = settings.topics.partitions
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for kind, ts, key, value in stream:
        topic = settings.topics.predictions if kind == "p" else settings.topics.labels
        if kind == "l" and crc_labels:
            partition = zlib.crc32(key) % partitions
        else:
            partition = partition_for_key(key, partitions)
        out.append(RawRecord(topic, partition, offsets[(topic, partition)], ts, key, value))
        offsets[(topic, partition)] += 1
    return out


def run(settings: Settings, recs: list[RawRecord], batch: int = 5000) -> tuple[float, int, int]:
    pipeline = InProcessPipeline(settings)
    t0 = time.perf_counter()
    for i in range(0, len(recs), batch):
        pipeline.feed(recs[i : i + batch])
    elapsed = time.perf_counter() - t0
    rerouted = sum(int(g.value) for s in pipeline.shards for g in s.gauges()
                   if g.name == "rerouted_total" and g.labels["kind"] == "label")
    return elapsed, len(pipeline.rows["outcomes"]), rerouted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="predictions (as many labels)")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    tune_gc()
    settings = Settings(topics={"partitions": args.partitions}, sequential={"enabled": False})
    stream = events(args.n)
    for name, crc in (("murmur2 labels (none re-routed)", False), ("CRC32 labels (librdkafka)", True)):
        recs = records(settings, stream, crc)
        elapsed, joined, rerouted = run(settings, recs)
        print(f"{name:34s} {len(recs) / elapsed:10,.0f} events/s  joined {joined:,}  "
              f"labels re-routed {rerouted / args.n:.0%}")


if __name__ == "__main__":
    main()
