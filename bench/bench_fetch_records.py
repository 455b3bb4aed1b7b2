"""CPU a consumed record costs between aiokafka's fetched bytes and the worker's ``RawRecord``.

    .venv/bin/python bench/bench_fetch_records.py [--batches 40] [--per-batch 500] [--rounds 5]
                                                   [--gzip] [--replay N]

Builds v2 record batches (prediction-sized JSON values, UUID keys; ``--gzip``: gzip-compressed),
then, alternating in one process, reads them through aiokafka's ``PartitionRecords`` as a stock
consumer does (a ``ConsumerRecord`` a record, then ``to_raw``) and as the worker's ``raw_records``
consumer does (``driftline.kafka.records``), keeping every record of a pass alive as ``getmany``
does: aiokafka's record loop with the RawRecord builder, and the C pass over the fetched bytes
(where built). Prints the median CPU-us a record of each and its ratio to the first; the records
are checked equal. ``--replay N``: topic replays instead (:func:`replay_sides`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0] already
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from driftline.kafka import records
from driftline.kafka.records import RAW_RECORDS, as_raw, to_raw
from driftline.operators.validate import RawRecord

TP = TopicPartition("predictions", 0)


def record_batches(batches: int, per_batch: int, compression: int = 0) -> tuple[bytes, int]:
    data = bytearray()
    for b in range(batches):
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0,
                                            producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                            batch_size=1 << 26)
        for i in range(per_batch):
            value = orjson.dumps({"prediction_id": str(uuid.uuid4()), "model_id": "churn",
                                  "features": {f"x{j}": j * 1.5 + i for j in range(25)},
                                  "ts": 1_767_225_600_000 + i})
            builder.append(i, timestamp=1_767_225_600_000 + i, key=str(uuid.uuid4()).encode(), value=value,
                           headers=[])
        batch = builder.build()
        batch[0:8] = struct.pack(">q", b * per_batch)  # base offset: the builder writes 0
        data += batch
    return bytes(data), batches * per_batch


def fetch_sides(args: argparse.Namespace) -> int:
    data, n = record_batches(args.batches, args.per_batch, 1 if args.gzip else 0)

    def fetched(marker: object) -> Any:
        return fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], 0, None, marker, True, 0)

    def stock() -> list[RawRecord]:
        return [to_raw(r) for r in fetched(None)]

    def raw(native: bool) -> Callable[[], list[RawRecord]]:
        def read() -> list[RawRecord]:
            records.use_native_fetch(native)
            return as_raw(list(fetched(RAW_RECORDS)))
        return read

    built = records.native_fetch()
    sides: dict[str, Callable[[], list[RawRecord]]] = {
        "ConsumerRecord + to_raw": stock, "raw_records, aiokafka's loop": raw(False)}
    if built:
        sides["raw_records, C pass"] = raw(True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for read in sides.values():
            assert read() == stock() and len(stock()) == n
        for _ in range(args.rounds):
            for name, read in sides.items():
                started = time.process_time()
                read()
                times[name].append((time.process_time() - started) / n * 1e6)
    finally:
        records.use_native_fetch(built)
    print(f"{n:,} records{' gzipped' if args.gzip else ''} ({len(data) / n:.0f} bytes each in the fetch), "
          f"{args.rounds} rounds alternating, median CPU-us a record")
    _print_medians(times, "ConsumerRecord + to_raw")
    return 0


def replay_sides(args: argparse.Namespace) -> int:
    """``--replay N``: bench_pipeline's workload of N predictions (and labels) produced to an
    embedded broker, then replayed from its topics into a MemoryRowWriter, the replay's consumer a
    stock one and a RawRecords one (the C pass where built) in turn, after a warm-up of each."""
    import bench_pipeline
    from common import bench_settings

    from driftline.local.broker import running_broker
    from driftline.replay import kafka_source
    from driftline.replay.run import replay_topics
    from driftline.store.writer import MemoryRowWriter

    made = kafka_source.aiokafka_consumer

    def consumers(raw_records: bool) -> Callable[..., Any]:
        def make(settings: Any, group_id: str | None, **options: Any) -> Any:
            options["raw_records"] = raw_records and options.get("raw_records", False)
            return made(settings, group_id, **options)
        return make

    times: dict[str, list[float]] = {"stock consumer": [], "raw_records consumer": []}
    with tempfile.TemporaryDirectory() as tmp, running_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers, "fr", Path(tmp) / "home")
        bench_pipeline.produce_workload(settings, args.replay)
        try:
            for round_ in range(args.rounds + 1):  # the first round warms both up, untimed
                for name in times:
                    kafka_source.aiokafka_consumer = consumers(name == "raw_records consumer")
                    started = time.process_time()
                    run_id = f"r{round_}{len(name)}"
                    result = asyncio.run(replay_topics(settings, run_id, MemoryRowWriter()))
                    if round_:
                        times[name].append(time.process_time() - started)
                    assert result.records == 2 * args.replay, result.records
        finally:
            kafka_source.aiokafka_consumer = made
    print(f"topic replay of {args.replay:,} predictions and their labels, {args.rounds} rounds alternating "
          "after a warm-up round, median CPU-s a replay")
    _print_medians(times, "stock consumer")
    return 0


def _print_medians(times: dict[str, list[float]], first_name: str) -> None:
    first = statistics.median(times[first_name])
    for name, values in times.items():
        median = statistics.median(values)
        each = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {name:<30} {median:.3f}  ({median / first:.2f}x)  [{each}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--per-batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="gzip-compressed batches")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="time topic replays of N predictions instead (embedded broker)")
    args = parser.parse_args(argv)
    return replay_sides(args) if args.replay else fetch_sides(args)


if __name__ == "__main__":
    raise SystemExit(main())
