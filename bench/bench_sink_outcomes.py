"""The sink's cost a row, row by row against the C pass into a Native block, in one process.

The outcomes topic carries a JSON message a joined prediction: the sink's busiest input. Row by
row, each message is parsed (orjson), mapped to a column block, buffered column by column and
serialised to Native by clickhouse-connect in Python (the way every other topic goes); through
``ClickHouseRowWriter.write_json_objects`` a fetched batch is read in one C pass into the Native
block and inserted as it is. This feeds the outcome messages the in-process pipeline makes of the
bench workload (one model, 20 numeric + 5 categorical features) in batches of ``--batch`` to both,
each into its own table of an embedded ClickHouse, alternating, and prints the sink thread's CPU a
row: staging (what ``SinkRunner._stage`` does) and the flush (the insert, the engine's share in
other threads left out: thread CPU, the GIL the worker's stages share). The two tables' rows are
compared (equal or the run fails). Then the same for the sink topic's messages of the same run
(the columns form: feature_windows, drift_scores, ... of its windows, a training profile published
first), each written ``--repeat`` times (they are few: a window's rows) and flushed once, through
``write_sink_message`` against the mapping's ``write_blocks``.

With ``--models-data DIR`` (bench_models' kept ``--data DIR``) the messages are those of its
1,000-model workload's timed part after the warm-up (~1.5 minutes more), and the last line says
what the sink spends a prediction of that run both ways.

    .venv/bin/python bench/bench_sink_outcomes.py [--n 20000] [--batch 5000] [--rounds 3] [--repeat 20]
    .venv/bin/python bench/bench_sink_outcomes.py --models-data DIR --repeat 1 --rounds 2
    .venv/bin/python bench/bench_sink_outcomes.py --replay 40000

``--replay N`` also times a replay of N predictions of the bench workload from files into the
engine (``driftline.replay``), which hands its outcome messages to the same C pass, against the
pass off (``ClickHouseRowWriter.native_rows``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import clickhouse_connect
from bench_models import CALIBRATIONS, warmed_from
from bench_pipeline import training_profiles
from clickhouse_connect.driver.client import Client
from common import bench_scenario, bench_settings, raw_records

from driftline.config import Settings
from driftline.operators import calibration
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.records import ColumnBlock, joined_blocks
from driftline.pipeline.to_rows import RowMapper
from driftline.replay.run import replay_files
from driftline.runtime import tune_gc
from driftline.simulate import write_jsonl
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

SINK_TABLES = ("outcomes", "feature_windows", "drift_scores", "model_drift", "model_metrics")
"""The tables whose rows both ways wrote are compared."""


def messages_of(pipeline: InProcessPipeline, records: Sequence[RawRecord]) -> tuple[list[bytes], list[bytes]]:
    """The outcome messages and the sink topic's messages ``pipeline``'s stages send for
    ``records``, every window closed after them."""
    topics = pipeline.settings.topics
    sent: dict[str, list[bytes]] = {topics.outcomes: [], topics.sink: []}
    route = pipeline._route

    def kept(messages: list) -> None:  # type: ignore[type-arg]
        for m in messages:
            if m.topic in sent:
                sent[m.topic].append(m.value)
        route(messages)

    pipeline._route = kept  # type: ignore[method-assign]
    batch = pipeline.settings.worker.batch_max_records
    for i in range(0, len(records), batch):
        pipeline.feed(records[i : i + batch])
    pipeline.finish(max(r.timestamp_ms for r in records) + 3_600_000)
    return sent[topics.outcomes], sent[topics.sink]


def workload(n: int, models_data: Path | None) -> tuple[Settings, list[bytes], list[bytes], int]:
    """The messages to write, their settings and the predictions they came of: the bench workload's
    (``n`` predictions, one model, its training profile published) or, with ``models_data``,
    bench_models' kept 1,000-model workload's timed part after its warm-up."""
    if models_data is not None:
        calibration.share_calibrations(CALIBRATIONS)
        pipeline, records, warm = warmed_from(models_data, "many")
        timed = records[warm:]
    else:
        settings = bench_settings("127.0.0.1:9", "so")
        scenario = bench_scenario(n)
        timed = raw_records(settings, scenario)
        profiles = training_profiles(scenario, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)
        pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    predictions = sum(1 for r in timed if r.topic == pipeline.settings.topics.predictions)
    outcomes, sink = messages_of(pipeline, timed)
    return pipeline.settings, outcomes, sink, predictions


def replay_cpu(client: Client, settings: Settings, home: Path, n: int, rounds: int) -> dict[str, float]:
    """Process CPU-s of a replay of ``n`` predictions of the bench workload from files into the
    engine's two databases, its outcome messages through the C pass or (the pass off) row by row,
    alternating, best of ``rounds`` after a warm-up pair."""
    write_jsonl(bench_scenario(n), home)
    best = {"rows": float("inf"), "c": float("inf")}
    for r in range(rounds + 1):
        for side, database in (("rows", "by_rows"), ("c", "in_c")):
            writer = ClickHouseRowWriter(client, database, close_client=False)
            writer.native_rows = side == "c"
            started = time.process_time()
            replay_files(settings, f"{side}{r}", writer, home / "predictions.jsonl", home / "labels.jsonl")
            if r:  # (the first pair warms both up: imports, references, the engine)
                best[side] = min(best[side], time.process_time() - started)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="predictions of the workload")
    parser.add_argument("--batch", type=int, default=5000, help="messages a fetched batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20, help="times the sink messages are written")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="also time a replay of N predictions into the engine, the pass on and off")
    parser.add_argument("--models-data", type=Path, metavar="DIR",
                        help="bench_models' kept --data DIR: its 1,000-model workload's messages instead")
    args = parser.parse_args(argv)
    settings, messages, sink_messages, predictions = workload(args.n, args.models_data)
    mapper = RowMapper(settings.topics)
    topic = settings.topics.outcomes
    with tempfile.TemporaryDirectory(prefix="driftline-bench-sink-") as home:
        client = clickhouse_connect.get_client(dsn=f"chdb://{home}")
        for database in ("by_rows", "in_c"):  # every table, twice: one engine holds both
            migrate(client, settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
                update={"database": database})}))
        # no background work in the figures, and no duplicate collapsed in one database and not the other
        client.command("SYSTEM STOP MERGES")
        import pandas  # noqa: F401  (clickhouse-connect imports it at the first insert: not a row's cost)

        tune_gc()
        writers = {side: ClickHouseRowWriter(client, database, close_client=False)
                   for side, database in (("rows", "by_rows"), ("c", "in_c"))}

        def by_rows(chunk: list[bytes], message_topic: str) -> None:
            tables: dict[str, list[ColumnBlock]] = {}
            for value in chunk:
                table, blocks = mapper.blocks(message_topic, value)
                tables.setdefault(table, []).extend(blocks)
            for table, blocks in tables.items():
                writers["rows"].write_blocks(table, joined_blocks(blocks))

        def in_c(chunk: list[bytes], message_topic: str) -> None:
            taken = writers["c"].write_json_objects("outcomes", chunk) if message_topic == topic else \
                all(writers["c"].write_sink_message(value) for value in chunk)
            if not taken:
                raise SystemExit(f"the C pass did not take the workload's {message_topic} messages")

        figures = {}
        for kind, message_topic, chunks in (
                ("outcome", topic, [messages[i : i + args.batch]
                                    for i in range(0, len(messages), args.batch)]),
                ("sink-topic", settings.topics.sink, [sink_messages] * args.repeat if sink_messages else [])):
            if not chunks:
                continue
            best = {"rows": [float("inf")] * 2, "c": [float("inf")] * 2}
            for _ in range(args.rounds):
                spent = {"rows": [0.0, 0.0], "c": [0.0, 0.0]}
                for k, chunk in enumerate(chunks):
                    for side, write in (("rows", by_rows), ("c", in_c)):
                        started = time.thread_time()
                        write(chunk, message_topic)
                        staged = time.thread_time()
                        if message_topic == topic or k == len(chunks) - 1:  # (the sink topic's: once)
                            writers[side].flush()
                        spent[side][0] += staged - started
                        spent[side][1] += time.thread_time() - staged
                for side, (stage, flush) in spent.items():
                    if stage + flush < sum(best[side]):
                        best[side] = [stage, flush]
            rows = sum(block.n for chunk in chunks for value in chunk
                       for block in mapper.blocks(message_topic, value)[1])
            figures[kind] = (len(chunks[0]), rows, best)
        for table in sorted(SINK_TABLES):
            select = f"SELECT * FROM {{}}.{table} ORDER BY tuple(*)"
            written = [client.query(select.format(database)).result_rows for database in ("by_rows", "in_c")]
            if written[0] != written[1]:
                raise SystemExit(f"the two ways wrote different rows to {table}")
        replayed = replay_cpu(client, settings, Path(home), args.replay, args.rounds) if args.replay else None
    for kind, (messages_a_chunk, rows, best) in figures.items():
        by_row, c = ([figure / rows * 1e6 for figure in best[side]] for side in ("rows", "c"))
        print(f"{kind} messages ({rows:,} rows, {messages_a_chunk:,} messages a batch), sink thread CPU-us a "
              f"row, best of {args.rounds}:")
        print(f"  row by row   stage {by_row[0]:6.2f}  flush {by_row[1]:6.2f}  total {sum(by_row):6.2f}")
        print(f"  C pass       stage {c[0]:6.2f}  flush {c[1]:6.2f}  total {sum(c):6.2f}"
              f"  ({sum(c) / sum(by_row):.2f}x)")
    if replayed is not None:
        print(f"a replay of {args.replay:,} predictions from files into the embedded engine, process "
              f"CPU-s, best of {args.rounds} after a warm-up pair: row by row {replayed['rows']:.2f}, C pass "
              f"{replayed['c']:.2f} ({replayed['c'] / replayed['rows']:.2f}x)")
    if figures:  # what the sink spends a prediction of this run (its sink messages written once)
        spent = {side: sum(sum(best[side]) / (args.repeat if kind == "sink-topic" else 1)
                           for kind, (_, _, best) in figures.items()) for side in ("rows", "c")}
        print(f"the run's {predictions:,} predictions: sink thread CPU-us a prediction, row by row "
              f"{spent['rows'] / predictions * 1e6:.2f}, C pass {spent['c'] / predictions * 1e6:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
