"""CPU a consumed record costs between aiokafka's fetched bytes and the worker's ``RawRecord``.

    .venv/bin/python bench/bench_fetch_records.py [--batches 40] [--per-batch 500] [--rounds 5]
                                                   [--gzip]

Builds v2 record batches (prediction-sized JSON values, UUID keys; ``--gzip``: gzip-compressed),
then, alternating in one process, reads them through aiokafka's ``PartitionRecords`` as a stock
consumer does (a ``ConsumerRecord`` a record, then ``to_raw``) and as the worker's ``raw_records``
consumer does (``driftline.kafka.records``), keeping every record of a pass alive as ``getmany``
does: aiokafka's record loop with the RawRecord builder, and the C pass over the fetched bytes
(where built). Prints the median CPU-us a record of each and its ratio to the first; the records
are checked equal.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--per-batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="gzip-compressed batches")
    args = parser.parse_args(argv)
    data, n = record_batches(args.batches, args.per_batch, 1 if args.gzip else 0)

    def fetched(marker: object) -> Any:
        return fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], 0, None, marker, True, 0)

    def stock() -> list[RawRecord]:
        return [to_raw(r) for r in fetched(None)]

    def raw(native: Any) -> Callable[[], list[RawRecord]]:
        def read() -> list[RawRecord]:
            records.NATIVE = native
            return as_raw(list(fetched(RAW_RECORDS)))
        return read

    sides: dict[str, Callable[[], list[RawRecord]]] = {
        "ConsumerRecord + to_raw": stock, "raw_records, aiokafka's loop": raw(None)}
    if records.NATIVE is not None:
        sides["raw_records, C pass"] = raw(records.NATIVE)
    native = records.NATIVE
    for read in sides.values():
        assert read() == stock() and len(stock()) == n
    records.NATIVE = native
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, read in sides.items():
            started = time.process_time()
            read()
            times[name].append((time.process_time() - started) / n * 1e6)
    records.NATIVE = native
    first = statistics.median(times["ConsumerRecord + to_raw"])
    print(f"{n:,} records{' gzipped' if args.gzip else ''} ({len(data) / n:.0f} bytes each in the fetch), "
          f"{args.rounds} rounds alternating, median CPU-us a record")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<30} {median:.3f}  ({median / first:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
