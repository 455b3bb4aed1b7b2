"""`driftline replay`: re-run the pipeline over historical predictions and labels under a run id.

Semantics (also in --help):
- Time bounds apply to *record timestamps*: ``[--from, --to)`` — inclusive lower, exclusive upper
  bound; either may be left open. A record stamped exactly ``--to`` is not replayed.
- From the topics: the stop offset of every partition is fixed at start (true log end from the
  Fetch high watermark, never ListOffsets); start/stop offsets for the bounds are found by binary
  search over record timestamps (the broker's offsets_for_times is not used: the embedded broker
  answers it by append time). Every partition of both topics is read with a group-less consumer.
  Reference profiles: the whole profiles topic, as live.
- From files (--predictions/--labels, JSONL or Parquet, see driftline.replay.files): partitions as
  Kafka's default partitioner assigns them by prediction_id, record timestamp = event timestamp,
  ordered by timestamp: no event is late. An export of live traffic keeps its late events with
  --file-order (the file's order is the arrival order; record timestamp = the latest event
  timestamp so far) or --record-time FIELD (each event's record timestamp, e.g. the Kafka record
  timestamp the export kept, records ordered by it): they are then counted as late. Reference
  profiles: --profiles FILE (JSONL), else none (each model's first full window becomes its
  reference, as live without a training profile).
- Partitions are kept and the two topics of each partition merged by record timestamp, so a
  replay of what a live worker processed reproduces its aggregates.
- The input ends at --to, else just after the last record timestamp: every window ending by then
  is closed and written; windows extending past the end are listed as partial (not written), as are
  windows begun before --from (written with the events from --from on). Outcome intervals are
  written up to the one holding the end, so every outcome row is counted by an interval.
- Rows go to ClickHouse tagged with --run-id (never '' — that is live data); re-running a run id
  replaces its rows (ReplacingMergeTree keys are deterministic). Retrain triggers become rows only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from driftline.cli.common import print_table, settings_from_args
from driftline.config import CONFIG_FILE_ENV, Settings
from driftline.kafka.groups import consumer_group
from driftline.replay.engine import ReplayResult, RunIdError, check_run_id
from driftline.replay.files import Arrival, read_profiles
from driftline.replay.kafka_source import OFFSET_METHOD
from driftline.replay.results import select
from driftline.replay.run import ReplayInputError, ReplayPlan, replay_files, replay_topics
from driftline.replay.times import format_time, parse_time
from driftline.store.client import StoreError, database_name
from driftline.store.migrate import pending
from driftline.store.writer import ClickHouseRowWriter, KafkaSinkRowWriter, RowWriter, open_row_writer

EPILOG = """\
time bounds: record timestamps in [--from, --to) (inclusive lower, exclusive upper; RFC 3339 or
epoch ms). Topic replays fix each partition's stop offset at start (log end from the Fetch high
watermark) and find the bounds by reading record timestamps — never ListOffsets/offsets_for_times.
File replays order events by their own timestamps, so none is late; --file-order or
--record-time FIELD keeps an export's arrival, and its late events count as late_events rows.
Rows are written with --run-id ('' is live and refused); re-running a run id is idempotent.
The input ends at --to (else just after its last record): every window ending by then is written;
windows extending past the end are listed in the summary as partial and not written.
The summary also gives the drift episodes (drift_episodes rows are their versions), what did not
count (dead letters, late events, failed joins, exact re-sends) and the models that had no
training profile or were never scored (docs/real-data.md).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="replay historical predictions/labels (topics or files) under a run id",
        description=__doc__.split("\n\n")[0] if __doc__ else None, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="TOML config of this run (thresholds, windows, ...); also before the command")
    p.add_argument("--run-id", required=True, help="tag of the replay's rows (not empty)")
    p.add_argument("--from", dest="from_time", type=parse_time, metavar="TIME",
                   help="first record timestamp replayed (inclusive)")
    p.add_argument("--to", dest="to_time", type=parse_time, metavar="TIME",
                   help="record timestamps from here on are not replayed (exclusive)")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="replay this export (JSONL/Parquet) instead of the predictions topic")
    p.add_argument("--labels", type=Path, metavar="FILE", help="label events export (with --predictions)")
    p.add_argument("--profiles", type=Path, metavar="FILE",
                   help="reference profiles (JSONL) for a file replay; topic replays read the profiles topic")
    arrival = p.add_mutually_exclusive_group()
    arrival.add_argument("--file-order", action="store_true",
                         help="file replay: the files' order is the arrival order (late events stay late); "
                              "record timestamp = latest event timestamp so far")
    arrival.add_argument("--record-time", metavar="FIELD",
                         help="file replay: each event's record (arrival) timestamp is in FIELD, e.g. the "
                              "Kafka record timestamp an export kept; records ordered by it")
    p.add_argument("--batch-size", type=int, default=5000, help="records per micro-batch (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=handle)


class RateColumn(ProgressColumn):
    """Events per second of the task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} ev/s" if speed else "- ev/s", style="progress.data.speed")


def _progress(console: Console, disable: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=disable,
    )


def _run(args: argparse.Namespace, settings: Settings, writer: RowWriter, console: Console) -> ReplayResult:
    with _progress(console, args.no_progress) as progress:
        task = progress.add_task("replay", total=None)

        def on_plan(plan: ReplayPlan) -> None:
            progress.update(task, total=plan.total_records)
            source = "files" if args.predictions else "topics"
            console.print(f"replaying {plan.total_records:,} records from {source}, "
                          f"{plan.profiles} reference profile(s), run id {args.run_id!r}, "
                          f"{_settings_source(args, settings)}", soft_wrap=True)
            if plan.ranges:
                console.print(OFFSET_METHOD, soft_wrap=True)  # one line into a log, not cut at 80

        def on_progress(n: int) -> None:
            progress.advance(task, n)

        if args.predictions is not None:
            profiles = read_profiles(args.profiles) if args.profiles else []
            return replay_files(settings, args.run_id, writer, args.predictions, args.labels,
                                args.from_time, args.to_time, profiles=profiles,
                                batch_size=args.batch_size, on_plan=on_plan, on_progress=on_progress,
                                arrival=Arrival(args.file_order, args.record_time))
        return asyncio.run(replay_topics(settings, args.run_id, writer, args.from_time, args.to_time,
                                         batch_size=args.batch_size, on_plan=on_plan,
                                         on_progress=on_progress))


def _summary(result: ReplayResult, run_id: str) -> Table:
    table = Table(title=f"replay {run_id!r}", caption=(
        f"{result.records:,} records in {result.elapsed_s:.1f}s ({result.events_per_s:,.0f} ev/s)"))
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name in sorted(result.rows):
        table.add_row(name, f"{result.rows[name]:,}")
    table.add_row("(retrain triggers, not published)", f"{result.triggers:,}")
    return table


MAX_PARTIAL_LINES = 20


def _by_kind(counts: Counter[str]) -> str:
    return f"{sum(counts.values()):,} ({', '.join(f'{k} {n:,}' for k, n in sorted(counts.items()))})"


def not_counted_lines(result: ReplayResult) -> list[str]:
    """What did not count and where it is: rejected and late events (a row each, with the reason),
    and the failed joins and exact re-sends model_metrics counts."""
    lines = []
    if result.dead_letters:
        lines.append(f"dead letters: {_by_kind(result.dead_letters)}; a dead_letters row each, with its "
                     "reason")
    if result.late_events:
        lines.append(f"late events: {_by_kind(result.late_events)}; each a late_events row")
    joins = result.not_joined
    if any(joins.values()):
        lines.append(
            f"not joined (model_metrics counts, all traffic): {joins['n_expired']:,} predictions expired "
            f"without a label, {joins['n_evicted']:,} evicted at join.max_pending, "
            f"{joins['n_orphan_labels']:,} labels joined no prediction; exact re-sends counted, not applied: "
            f"{joins['n_duplicate_predictions']:,} predictions, {joins['n_duplicate_labels']:,} labels"
            + ("; a row each in unjoined_events" if result.rows["unjoined_events"] else ""))
    return lines


def _wait_for_the_sink(writer: KafkaSinkRowWriter, settings: Settings, console: Console) -> None:
    """Return once the worker's sink has inserted the rows: the broker's acknowledgement alone
    let a `backtest compare` right after read the run in part."""
    group = consumer_group(settings, "sink")
    console.print(f"waiting for the worker's sink (group {group}) to insert the rows into ClickHouse",
                  soft_wrap=True)
    try:
        left = writer.wait_inserted(settings, group)
    except KafkaError as err:
        left, why = -1, f"cannot read its offsets: {err}"
    else:
        why = "no progress for 30 s: is a worker running?"
    if left:
        what = f"{left:,} of the replay's sink messages" if left > 0 else "the rows"
        console.print(f"the worker's sink has not inserted {what} ({why}); queries miss those rows "
                      "until it has", soft_wrap=True)


def _earlier_windows(settings: Settings, writer: RowWriter, run_id: str) -> str | None:
    """A note if the run id already has windows: a replay adds to them, so a second replay of
    another range or config under the same id reads back mixed with the first (backtest compare
    counted the earlier windows as the run's)."""
    sql = ("SELECT count() AS n, toUnixTimestamp64Milli(min(window_start)) AS first, "
           f"toUnixTimestamp64Milli(max(window_end)) AS last FROM {database_name(settings)}.model_drift "
           "FINAL WHERE run_id = {run:String}")
    try:
        if isinstance(writer, ClickHouseRowWriter):
            n, first, last = writer.client.query(sql, parameters={"run": run_id}).result_rows[0]
        else:  # the rows go through the sink topic: read through the engine's owner
            row = select(settings, sql, run=run_id)[0]
            n, first, last = row["n"], row["first"], row["last"]
    except (DatabaseError, StoreError):  # no table yet or unreachable: the writes will say so
        return None
    if not int(n):
        return None
    return (f"run id {run_id!r} already has {int(n):,} model_drift windows ({format_time(int(first))} .. "
            f"{format_time(int(last))}): this replay replaces the windows it writes again and leaves the "
            "others; use a new --run-id to compare settings or ranges")


def _settings_source(args: argparse.Namespace, settings: Settings) -> str:
    """The settings' config_hash (its rows carry it) and file: runs compared with backtest can look
    alike, and nothing said a replay's --config was read."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_FILE_ENV)
    return f"settings config_hash {settings.config_hash()}" + (f" (from {path})" if path else "")


def no_records_line(args: argparse.Namespace, settings: Settings) -> str:
    """What a replay that read nothing looked in and how to widen it: "no records in the range"
    left a user of the README's example dates guessing which range and what to change."""
    if args.predictions is not None:
        where = f"{args.predictions}" + (f" or {args.labels}" if args.labels else "")
    else:
        where = (f"topics {settings.topics.predictions} and {settings.topics.labels} at "
                 f"{settings.bootstrap_servers()}")
    bounds = [f"from {format_time(args.from_time)}" if args.from_time is not None else "",
              f"before {format_time(args.to_time)}" if args.to_time is not None else ""]
    if not any(bounds):
        return f"no records in {where}"
    return (f"no records in {where} {' '.join(b for b in bounds if b)} (by record timestamp): leave "
            "--from/--to out to replay all of them")


def summary_lines(result: ReplayResult) -> list[str]:
    """The record times, the input's end, and the windows the input covers only in part."""
    if result.first_ms is None or result.last_ms is None:
        return ["no records in the range"]
    lines = [f"record times {format_time(result.first_ms)} .. {format_time(result.last_ms)}"]
    lines.extend(not_counted_lines(result))
    if result.first_window_references:
        models = ", ".join(f"{m} v{v}" for m, v in sorted(result.first_window_references))
        lines.append(f"no training profile for {models}: its first full window is the reference its "
                     "windows are scored against, and drift episodes (the per-event feature monitors) run "
                     "only against a training profile (`driftline profile build --out FILE`, then "
                     "--profiles FILE)")
    if result.models_never_scored:
        models = ", ".join(f"{m} v{v}" for m, v in result.models_never_scored)
        lines.append(f"never scored, no reference: {models} (no training profile, and no window of any "
                     "size held drift.min_count events to become the reference; its events are "
                     "in feature_windows)")
    if result.rows["drift_episodes"]:
        lines.append(f"drift episodes: {len(result.episode_ids):,} (the {result.rows['drift_episodes']:,} "
                     "drift_episodes rows are their versions, kept current while each lasts; read "
                     "the table with FINAL)")
    if result.end_ms is not None:
        lines.append(f"input ends {format_time(result.end_ms)}: every window ending by then is written")
    intervals_end = result.intervals_end_ms
    if intervals_end is not None and intervals_end != result.end_ms:
        lines.append(f"outcome intervals closed up to {format_time(intervals_end)}: the last one counts "
                     "the outcomes labeled up to the input's end")
    for written, heading in (
        (False, "windows left partial, extending past the end (not written):"),
        (True, "windows begun before --from (written with the events from --from on):"),
    ):
        windows = [w for w in result.partial_windows if w.written == written]
        if not windows:
            continue
        lines.append(heading)
        lines.extend(f"  {w.model_id} v{w.model_version} {w.window_size_s}s "
                     f"{format_time(w.window_start)} .. {format_time(w.window_end)}"
                     for w in windows[:MAX_PARTIAL_LINES])
        if len(windows) > MAX_PARTIAL_LINES:
            lines.append(f"  ... and {len(windows) - MAX_PARTIAL_LINES} more")
        if not written:
            lines.append("  (--to TIME declares the input complete up to TIME)")
    return lines


def handle(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        check_run_id(args.run_id)
        if (args.labels or args.profiles or args.file_order or args.record_time) and args.predictions is None:
            raise ReplayInputError("--labels, --profiles, --file-order and --record-time go with "
                                   "--predictions FILE (a file replay; a topic replay keeps its "
                                   "records' order)")
        if args.from_time is not None and args.to_time is not None and args.to_time <= args.from_time:
            raise ReplayInputError("--to must be after --from")
        if args.batch_size < 1:
            raise ReplayInputError("--batch-size must be positive")
    except (RunIdError, ReplayInputError) as err:
        print(f"driftline replay: {err}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    try:
        writer = open_row_writer(settings)
    except StoreError as err:
        print(f"driftline replay: {err}", file=sys.stderr)
        return 1
    where = (f"ClickHouse {settings.clickhouse_url()} database {settings.clickhouse.database}"
             if isinstance(writer, ClickHouseRowWriter) else f"the sink topic {settings.topics.sink}")
    console.print(f"writing rows to {where}", soft_wrap=True)
    try:
        # Checked before reading any input: otherwise a whole replay runs, then fails at its first write.
        if isinstance(writer, ClickHouseRowWriter):
            try:
                not_applied = pending(writer.client, settings)
            except DatabaseError:  # not allowed to read the bookkeeping: the first write will tell
                not_applied = []
            if not_applied:
                raise ReplayInputError(f"{len(not_applied)} ClickHouse migration(s) not applied "
                                       f"({not_applied[0]}, ...): run `driftline db migrate` first")
        earlier = _earlier_windows(settings, writer, args.run_id)
        if earlier:
            console.print(earlier, soft_wrap=True)
        result = _run(args, settings, writer, console)
    except (ReplayInputError, OSError, TimeoutError, StoreError) as err:
        print(f"driftline replay: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # e.g. a table missing in ClickHouse
        print(f"driftline replay: {err} (run `driftline db migrate` first?)", file=sys.stderr)
        return 1
    finally:
        writer.close()
    if isinstance(writer, KafkaSinkRowWriter) and result.records:
        _wait_for_the_sink(writer, settings, console)
    print_table(_summary(result, args.run_id))
    out = Console()
    for line in summary_lines(result) if result.first_ms is not None else [no_records_line(args, settings)]:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0
