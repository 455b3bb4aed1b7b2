"""The sink's staging of a fetched batch (``SinkRunner._stage``: decode each message, buffer its
column blocks in the ClickHouse writer), today's code against ``--base``'s (before dead letters:
a record's blocks went straight into one list per table), in one process.

Staging is the sink's per-message cost; the flush (the insert) is the same code on both sides
and is left out, so no ClickHouse is needed: the writer is given the table's schema, as
tests/test_sink_columns.py does. A batch is ``--messages`` sink messages of ``--rows`` rows each
(the columns form ``records.sink_rows`` writes), plus ``--bad`` messages that are not JSON (on
both sides; today's turns them into dead letters). Alternating rounds, thread CPU, best of
``--rounds``; the columns both sides buffer for the good messages compared (equal or the run fails).

    .venv/bin/python bench/bench_sink_stage.py [--base COMMIT] [--messages 200] [--rows 50] [--rounds 9]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from common import module_at_revision

from driftline.config import Settings
from driftline.pipeline import records
from driftline.store import writer as writer_now
from driftline.streams import sink

BASE = "b2f0a1f"  # before the sink's dead letters
SCHEMA = [
    ("run_id", "String"), ("model_id", "LowCardinality(String)"), ("model_version", "LowCardinality(String)"),
    ("window_start", "DateTime64(3, 'UTC')"), ("window_end", "DateTime64(3, 'UTC')"), ("feature", "String"),
    ("count", "UInt64"), ("mean", "Nullable(Float64)"), ("std", "Nullable(Float64)"),
    ("psi", "Nullable(Float64)"), ("bin_edges", "Array(Float64)"), ("evidence", "String"),
]
TABLE = "feature_windows"
DEAD_LETTERS = [
    ("run_id", "LowCardinality(String)"), ("source_topic", "LowCardinality(String)"),
    ("source_partition", "Int32"), ("source_offset", "Int64"), ("source_timestamp", "DateTime64(3, 'UTC')"),
    ("error_kind", "LowCardinality(String)"), ("error_message", "String"), ("payload", "String"),
    ("payload_size", "UInt64"), ("model_id", "LowCardinality(String)"),
]




def writer_of(module: ModuleType) -> Any:
    """A ClickHouseRowWriter of ``module`` that knows the tables without asking a ClickHouse."""
    writer = module.ClickHouseRowWriter(None, "db", max_buffer_rows=10**9, close_client=False)
    for table, schema in ((TABLE, SCHEMA), ("dead_letters", DEAD_LETTERS)):
        writer._schemas[table] = {name: module._Column(name, type_name, "Nullable(" in type_name,
                                                       module._converter(type_name))
                                  for name, type_name in schema}
    return writer


def batch_of(settings: Settings, messages: int, rows: int, bad: int
             ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    topic = settings.topics.sink
    out = []
    for m in range(messages):
        window = [{"run_id": "", "model_id": f"m{m % 7}", "model_version": "1",
                   "window_start": 1_760_000_000_000, "window_end": 1_760_000_060_000,
                   "feature": f"f{i}", "count": 26, "mean": 0.5 + i,
                   "std": 0.1, "psi": None if i % 5 else 0.02, "bin_edges": [0.0, 0.5, 1.0],
                   "evidence": {"n": i}} for i in range(rows)]
        (message,) = records.sink_rows(topic, TABLE, window)
        out.append(message.value)
    out += [b"not json"] * bad
    return {TopicPartition(topic, 0): [
        ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), [])
        for offset, value in enumerate(out)]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default=BASE, help="the commit to compare with")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--bad", type=int, default=2, help="messages that are not JSON, in each batch")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    settings = Settings()
    base_sink = module_at_revision(args.base, "streams/sink.py", "base_sink")
    base_writer = module_at_revision(args.base, "src/driftline/store/writer.py", "base_writer")
    batch = batch_of(settings, args.messages, args.rows, args.bad)
    sides = {"base": (base_sink.SinkRunner, base_writer), "now": (sink.SinkRunner, writer_now)}
    runners = {side: runner(settings, writer_of(module)) for side, (runner, module) in sides.items()}
    logging_off = sink.log.disabled, base_sink.log.disabled
    sink.log.disabled = base_sink.log.disabled = True  # one log line per bad message, on both sides
    try:
        buffered = {}
        for side, runner in runners.items():
            runner._stage(batch)
            buffered[side] = {key: [list(c) for c in b.data] for key, b in runner.writer._batches.items()
                              if key[0] == TABLE}
        if buffered["base"] != buffered["now"]:
            raise SystemExit("the columns the base's and today's sink buffered differ")
        best = {"base": float("inf"), "now": float("inf")}
        for r in range(args.rounds):
            for side in ("base", "now") if r % 2 == 0 else ("now", "base"):
                runner = runners[side]
                runner.writer._batches.clear()
                runner.writer._buffered = 0
                t0 = time.thread_time()
                runner._stage(batch)
                best[side] = min(best[side], time.thread_time() - t0)
    finally:
        sink.log.disabled, base_sink.log.disabled = logging_off
    n = args.messages + args.bad
    print(f"_stage of {n} messages ({args.messages} x {args.rows} rows, {args.bad} not JSON), thread CPU, "
          f"best of {args.rounds}:")
    for side in ("base", "now"):
        print(f"  {side:4s} {best[side] * 1e3:8.2f} ms  {best[side] / n * 1e6:7.1f} us a message")
    print(f"  now / base {best['now'] / best['base']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
