"""Stage 2's and the sink's cost per small window (issue 19: 1,000 models close a window every ~26
predictions), today's code against a base commit's, in one process.

1. **Per window**: bench_models' under-filled windows (1-26 events over 4 shards' partials, one of
   its 25-feature profiles), each merged, counted (``DriftScorer.count_stats``) and turned into its
   ~52 rows, with the row and scoring code of ``--base`` (``to_rows``, ``scorer``, ``sketch``,
   ``drift.verdicts`` as ``git show`` has them, loaded by path) and of the checkout, alternating
   rounds, thread CPU, best of ``--rounds``; the two sides' rows compared (equal or the run fails).
2. **The sink's part** of those windows, the code of ``--sink-base`` (sink messages of rows,
   decoded to row dicts, ``ClickHouseRowWriter.write``) against today's (messages of column
   blocks, ``RowMapper.blocks``, ``write_blocks``), split into its steps: encoding the sink
   messages (``records.sink_rows``), decoding them, converting and buffering (``write``) and
   inserting (``flush``, into an embedded chDB; process CPU, as chDB inserts on its own threads),
   alternating rounds, the columns each side buffers compared. bench_models' figure 14b leaves
   the write and flush out (its rows are counted, not written). Then the sink's CPU a window by
   windows a flush (``--flush-every``): a flush has a fixed cost of several ms per table
   (``streams.sink.FLUSH_INTERVAL_S``).
3. With ``--models M`` (> 0): bench_models' run of ``M`` models and ``--n`` x ``M`` predictions on
   windows of 10 and 60 s (about 1,000 models' windows per prediction), with the base's functions
   that differ swapped in and out (``to_rows.finite``, ``sketch._Store.total``, ``scorer._result``,
   ``drift.verdicts`` as the scorer calls it), alternating runs with the order flipped each round,
   CPU-us a prediction.

    .venv/bin/python bench/bench_window_rows.py [--base COMMIT] [--sink-base COMMIT] [--n 200] [--rounds 7]
        [--flush-every 1 5 20 200] [--models 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_models as bm
import orjson
from common import module_at_revision

from driftline.operators import calibration, scorer, sketch
from driftline.operators.window_stats import WindowAccumulator, merge_accumulators
from driftline.pipeline import records, to_rows
from driftline.pipeline.records import WindowKey
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

BASE = "9bddfe5"  # before math.isfinite in finite(), the empty store's total, _result's one update
# and verdicts without floors for untested features
SINK_BASE = "6281b56"  # before sink messages of column blocks




class Sides:
    """The base's and today's row, scoring and sketch modules, and the functions a run swaps."""

    def __init__(self, commit: str) -> None:
        self.rows = {"base": module_at_revision(commit, "src/driftline/pipeline/to_rows.py", "base_to_rows"),
                     "now": to_rows}
        base_scorer = module_at_revision(commit, "src/driftline/operators/scorer.py", "base_scorer")
        self.scorers = {"base": base_scorer, "now": scorer}
        base_sketch = module_at_revision(commit, "src/driftline/operators/sketch.py", "base_sketch")
        base_verdicts = module_at_revision(commit, "src/driftline/operators/drift.py", "base_drift").verdicts
        self.scorers["base"].verdicts = base_verdicts  # it imported today's
        self.swapped: dict[str, tuple[Any, ...]] = {
            "base": (self.rows["base"].finite, base_sketch._Store.total, self.scorers["base"]._result,
                     base_verdicts),
            "now": (to_rows.finite, sketch._Store.total, scorer._result, scorer.verdicts),
        }

    def use(self, side: str) -> None:
        """Make today's modules run ``side``'s versions of the functions that changed (the window
        statistics are today's classes, so the sketch's total is swapped on them)."""
        to_rows.finite, sketch._Store.total, scorer._result, scorer.verdicts = self.swapped[side]


def close_windows(windows: list[list[WindowAccumulator]], rows: ModuleType,
                  count: Callable[..., Any]) -> dict[str, list[dict[str, Any]]]:
    """Stage 2's work on each under-filled window (merge, count_stats, rows), as WindowClock does it."""
    tables: dict[str, list[dict[str, Any]]] = {"feature_windows": [], "drift_scores": [], "model_drift": []}
    for w, shards in enumerate(windows):
        merged = merge_accumulators(shards, sketches=False)
        report = count(merged.features, n_rows=merged.n_events, prediction=merged.prediction_label)
        window = rows.window_columns("", WindowKey(60_000, bm.START_MS + w * 60_000, "m0000", "1", ""))
        tables["feature_windows"] += [
            rows.feature_window_row(window, r.feature, r.kind, merged.features[r.feature], r.score, "p")
            for r in report if r.feature in merged.features]
        tables["drift_scores"] += [
            rows.drift_score_row(window, r.feature, r.score, r.drifted, r.drifted_by, r.p_adj, "p", "h")
            for r in report]
        tables["model_drift"].append(rows.model_drift_row(
            window, merged.n_events, len(report), report.drifted, report.drifted_features, "p", "h",
            score_status="under_filled"))
    return tables


def per_window(sides: Sides, n: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Print stage 2's ms a window, base vs today (alternating, thread CPU); today's rows."""
    settings = bm.bench_settings("127.0.0.1:9", "bm")
    profile = bm.profiles_of(bm.model_specs(1), 1000, settings)[0]
    windows = bm.under_filled_windows(n)
    counts = {side: module.DriftScorer(profile, drift=settings.drift).count_stats
              for side, module in sides.scorers.items()}
    out = {}
    for side in ("base", "now"):
        sides.use(side)
        out[side] = close_windows(windows, sides.rows[side], counts[side])
    if orjson.dumps(out["base"]) != orjson.dumps(out["now"]):
        raise SystemExit("the base's and today's rows differ")
    best = {"base": float("inf"), "now": float("inf")}
    for r in range(rounds):
        for side in ("base", "now") if r % 2 == 0 else ("now", "base"):
            sides.use(side)
            t = time.thread_time()
            close_windows(windows, sides.rows[side], counts[side])
            best[side] = min(best[side], time.thread_time() - t)
    sides.use("now")
    old, new = (best[s] / n * 1e3 for s in ("base", "now"))
    rows = sum(len(t) for t in out["now"].values())
    print(f"under-filled window (1-26 events, 4 shards, 25 features), stage 2 merge + count_stats + "
          f"{rows / n:.0f} rows: {old:.3f} ms at the base, {new:.3f} ms now ({new / old:.2f}x), best of "
          f"{rounds} alternating, {n} windows; rows identical", flush=True)
    return out["now"]


def sink_part(tables: dict[str, list[dict[str, Any]]], n: int, rounds: int, base: str) -> None:
    """Print the sink's ms a window for these rows, ``base``'s code (sink messages of rows, each
    decoded to row dicts, ``ClickHouseRowWriter.write``) against today's (messages of column blocks
    handed to ``write_blocks`` as decoded), split into its steps, alternating rounds, process CPU;
    the columns each side buffers compared (equal or the run fails)."""
    old_records = module_at_revision(base, "src/driftline/pipeline/records.py", "base_records")
    old_rows = module_at_revision(base, "src/driftline/pipeline/to_rows.py", "base_sink_to_rows")
    old_writer = module_at_revision(base, "src/driftline/store/writer.py", "base_writer")
    mapper = RowMapper(bm.bench_settings("127.0.0.1:9", "bm").topics)
    sink_topic = mapper.topics[0]

    def encode(side: str) -> list[Any]:
        module = old_records if side == "base" else records
        return [m for table, rows in tables.items() for m in module.sink_rows(sink_topic, table, rows)]

    def decode(side: str, messages: list[Any]) -> dict[str, list[Any]]:
        per_table: dict[str, list[Any]] = {}  # as the sink's _stage gathers a batch
        for m in messages:
            table, got = (old_rows.RowMapper._sink(m.value) if side == "base"
                          else mapper.blocks(sink_topic, m.value))
            per_table.setdefault(table, []).extend(got)
        return per_table

    def write(side: str, writer: Any, per_table: dict[str, list[Any]]) -> None:
        for table, got in per_table.items():
            writer.write(table, got) if side == "base" else writer.write_blocks(table, got)

    with tempfile.TemporaryDirectory(prefix="driftline-bench-window-rows-") as home:
        settings = bm.bench_settings("127.0.0.1:9", "bm", home=Path(home))
        client = connect(settings)
        migrate(client, settings)
        database = database_name(settings)
        writers = {"base": old_writer.ClickHouseRowWriter(client, database, close_client=False),
                   "now": ClickHouseRowWriter(client, database, close_client=False)}
        buffered = {}
        for side in ("base", "now"):
            write(side, writers[side], decode(side, encode(side)))
            buffered[side] = {key: [list(c) for c in b.data] for key, b in writers[side]._batches.items()}
            writers[side].flush()
        if buffered["base"] != buffered["now"]:
            raise SystemExit("the columns the base's and today's sink buffered differ")
        best: dict[str, dict[str, float]] = {"base": {}, "now": {}}
        for r in range(rounds):
            for side in ("base", "now") if r % 2 == 0 else ("now", "base"):
                seen, t0 = best[side], time.process_time()
                messages = encode(side)
                t1 = time.process_time()
                per_table = decode(side, messages)
                t2 = time.process_time()
                write(side, writers[side], per_table)
                t3 = time.process_time()
                writers[side].flush()
                t4 = time.process_time()
                took = {"encode": t1 - t0, "decode": t2 - t1, "write": t3 - t2, "flush": t4 - t3}
                for step, cpu in took.items():
                    seen[step] = min(seen.get(step, float("inf")), cpu)
        for writer in writers.values():
            writer.close()
    size = {side: sum(len(m.value) for m in encode(side)) / n / 1e3 for side in ("base", "now")}
    for side in ("base", "now"):
        parts = ", ".join(f"{k} {v / n * 1e3:.3f}" for k, v in best[side].items())
        print(f"the sink's part of those windows' rows, {'base ' + base if side == 'base' else 'now'}: "
              f"{sum(best[side].values()) / n * 1e3:.3f} ms a window ({parts}), {size[side]:.1f} KB of "
              f"sink messages a window", flush=True)
    old, new = (sum(best[side].values()) for side in ("base", "now"))
    print(f"  now / base: {new / old:.2f}x (process CPU, best of {rounds} alternating; buffered columns "
          f"identical)", flush=True)


def flush_cadence(tables: dict[str, list[dict[str, Any]]], n: int, rounds: int, every: Sequence[int]) -> None:
    """Print the sink's CPU a window (today's code: blocks decoded, written, flushed) when each flush
    holds ``k`` windows' rows, for each ``k`` of ``every``, alternating, best of ``rounds``."""
    mapper = RowMapper(bm.bench_settings("127.0.0.1:9", "bm").topics)
    sink_topic = mapper.topics[0]
    each = {table: len(rows) // n for table, rows in tables.items()}  # a window's rows (all alike here)
    windows = [{table: rows[w * each[table]:(w + 1) * each[table]] for table, rows in tables.items()}
               for w in range(n)]
    with tempfile.TemporaryDirectory(prefix="driftline-bench-window-rows-") as home:
        settings = bm.bench_settings("127.0.0.1:9", "bm", home=Path(home))
        client = connect(settings)
        migrate(client, settings)
        writer = ClickHouseRowWriter(client, database_name(settings))
        best = dict.fromkeys(every, float("inf"))
        for r in range(rounds):
            for k in every if r % 2 == 0 else list(reversed(every)):
                t = time.process_time()
                for first in range(0, n, k):
                    for window in windows[first:first + k]:  # a batch of k windows' messages
                        for table, rows in window.items():
                            for m in records.sink_rows(sink_topic, table, rows):
                                writer.write_blocks(*mapper.blocks(sink_topic, m.value))
                    writer.flush()
                best[k] = min(best[k], time.process_time() - t)
        writer.close()
    figures = ", ".join(f"{k}: {best[k] / n * 1e3:.2f} ms ({best[k] / -(-n // k) * 1e3:.1f} a flush)"
                        for k in every)
    print(f"the sink's CPU a window (encode, decode, write, flush) by windows a flush, best of {rounds} "
          f"alternating, {n} windows: {figures}", flush=True)


def run_ab(sides: Sides, models: int, n: int, rounds: int) -> None:
    """Print bench_models' run CPU-us a prediction, base vs today, alternating runs."""
    settings = bm.bench_settings("127.0.0.1:9", "bm", windows={"sizes_s": [10, 60]})
    specs = bm.model_specs(models)
    profiles = bm.profiles_of(specs, 1000, settings)
    events, warm = bm.traffic(specs, n, settings)
    seen: dict[str, list[float]] = {"base": [], "now": []}
    result: dict[str, Any] = {}
    for r in range(rounds):
        for side in ("base", "now") if r % 2 == 0 else ("now", "base"):
            sides.use(side)
            result = bm.run(settings, profiles, events, warm)
            seen[side].append(result["cpu_per_prediction_us"])
    sides.use("now")
    old, new = min(seen["base"]), min(seen["now"])
    every = "; ".join(f"{k} {' '.join(f'{v:.0f}' for v in vs)}" for k, vs in seen.items())
    print(f"{models} models, {n:,} predictions, windows of 10 and 60 s ({result['windows_closed']:,} windows "
          f"closed, {result['windows_under_filled']:,} under-filled): {old:.1f} CPU-us a prediction at the "
          f"base, {new:.1f} now ({new / old:.2f}x), best of {rounds} alternating; every round: {every}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default=BASE, help="the commit to compare with")
    parser.add_argument("--sink-base", default=SINK_BASE, help="the commit to compare the sink's part with")
    parser.add_argument("--n", type=int, default=200, help="windows (per-window figures)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", type=int, default=0, help="also the many-model run, of this many")
    parser.add_argument("--flush-every", type=int, nargs="*", default=[1, 5, 20, 200],
                        help="windows a flush (part 3; none: skipped)")
    parser.add_argument("--run-n", type=int, default=20_000, help="predictions of the many-model run")
    parser.add_argument("--run-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    calibration.share_calibrations(bm.CALIBRATIONS)
    sides = Sides(args.base)
    tables = per_window(sides, args.n, args.rounds)
    sink_part(tables, args.n, args.rounds, args.sink_base)
    if args.flush_every:
        flush_cadence(tables, args.n, max(args.rounds // 2, 1), args.flush_every)
    if args.models > 0:
        run_ab(sides, args.models, args.run_n, args.run_rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
