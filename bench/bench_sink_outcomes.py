"""The sink's cost an outcome row, row by row against the C pass into a Native block, in one process.

The outcomes topic carries a JSON message a joined prediction: the sink's busiest input. Row by
row, each message is parsed (orjson), mapped to a column block, buffered column by column and
serialised to Native by clickhouse-connect in Python (the way every other topic goes); through
``ClickHouseRowWriter.write_json_objects`` a fetched batch is read in one C pass into the Native
block and inserted as it is. This feeds the outcome messages the in-process pipeline makes of the
bench workload (one model, 20 numeric + 5 categorical features) in batches of ``--batch`` to both,
each into its own table of an embedded ClickHouse, alternating, and prints the sink thread's CPU a
row: staging (what ``SinkRunner._stage`` does) and the flush (the insert, the engine's share in
other threads left out: thread CPU, the GIL the worker's stages share). The two tables' rows are
compared (equal or the run fails).

    .venv/bin/python bench/bench_sink_outcomes.py [--n 20000] [--batch 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import clickhouse_connect
from common import bench_scenario, bench_settings, raw_records

from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.records import joined_blocks
from driftline.pipeline.to_rows import RowMapper
from driftline.runtime import tune_gc
from driftline.store.writer import ClickHouseRowWriter

OUTCOMES_DDL = Path(__file__).resolve().parents[1] / "infra" / "clickhouse" / "003_outcomes.sql"


def outcome_messages(n: int) -> list[bytes]:
    """The outcome messages the in-process pipeline's shards send for ``n`` predictions of the bench
    workload (each labelled)."""
    settings = bench_settings("127.0.0.1:9", "so")
    records = raw_records(settings, bench_scenario(n))
    pipeline = InProcessPipeline(settings)
    sent: list[bytes] = []
    route = pipeline._route

    def kept(messages: list) -> None:  # type: ignore[type-arg]
        sent.extend(m.value for m in messages if m.topic == settings.topics.outcomes)
        route(messages)

    pipeline._route = kept  # type: ignore[method-assign]
    batch = settings.worker.batch_max_records
    for i in range(0, len(records), batch):
        pipeline.feed(records[i : i + batch])
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="predictions of the workload")
    parser.add_argument("--batch", type=int, default=5000, help="messages a fetched batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    messages = outcome_messages(args.n)
    settings = bench_settings("127.0.0.1:9", "so")
    mapper = RowMapper(settings.topics)
    topic = settings.topics.outcomes
    ddl = "\n".join(line for line in OUTCOMES_DDL.read_text().splitlines() if not line.startswith("--"))
    with tempfile.TemporaryDirectory(prefix="driftline-bench-sink-") as home:
        client = clickhouse_connect.get_client(dsn=f"chdb://{home}")
        for database in ("by_rows", "in_c"):
            client.command(f"CREATE DATABASE {database}")
            client.command(ddl.format(database=database, ttl_days=36500))
            client.command(f"SYSTEM STOP MERGES {database}.outcomes")  # no background work in the figures
        import pandas  # noqa: F401  (clickhouse-connect imports it at the first insert: not a row's cost)

        tune_gc()
        by_rows = ClickHouseRowWriter(client, "by_rows", close_client=False)
        in_c = ClickHouseRowWriter(client, "in_c", close_client=False)
        best: dict[str, list[float]] = {"rows": [float("inf")] * 2, "c": [float("inf")] * 2}
        for _ in range(args.rounds):
            spent = {"rows": [0.0, 0.0], "c": [0.0, 0.0]}
            for i in range(0, len(messages), args.batch):
                chunk = messages[i : i + args.batch]
                started = time.thread_time()
                blocks = [block for value in chunk for block in mapper.blocks(topic, value)[1]]
                by_rows.write_blocks("outcomes", joined_blocks(blocks))
                staged = time.thread_time()
                by_rows.flush()
                flushed = time.thread_time()
                if not in_c.write_json_objects("outcomes", chunk):
                    raise SystemExit("the C pass did not take the workload's outcome messages")
                staged_c = time.thread_time()
                in_c.flush()
                flushed_c = time.thread_time()
                spent["rows"][0] += staged - started
                spent["rows"][1] += flushed - staged
                spent["c"][0] += staged_c - flushed
                spent["c"][1] += flushed_c - staged_c
            for side, (stage, flush) in spent.items():
                if stage + flush < sum(best[side]):
                    best[side] = [stage, flush]
        select = "SELECT * FROM {}.outcomes ORDER BY prediction_id, label_time"
        written = [client.query(select.format(database)).result_rows for database in ("by_rows", "in_c")]
        if written[0] != written[1]:
            raise SystemExit("the two ways wrote different rows")
    n = len(messages) * 1e-6
    rows, c = ([figure / n for figure in best[side]] for side in ("rows", "c"))
    print(f"{len(messages):,} outcome messages ({sum(map(len, messages)) / len(messages):.0f} bytes each) "
          f"in batches of {args.batch:,}, sink thread CPU-us a row, best of {args.rounds}:")
    print(f"  row by row   stage {rows[0]:6.2f}  flush {rows[1]:6.2f}  total {sum(rows):6.2f}")
    print(f"  C pass       stage {c[0]:6.2f}  flush {c[1]:6.2f}  total {sum(c):6.2f}"
          f"  ({sum(c) / sum(rows):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
