"""`driftline backtest compare`: when runs alarmed, detection delays, false alarm rates, a plot.

Reads the runs' rows from ClickHouse (model_drift, drift_scores, model_metrics,
retrain_triggers, by run_id; all traffic, one window size). Definitions: driftline.replay.backtest.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from driftline.cli.common import print_table, settings_from_args
from driftline.replay.backtest import (
    KINDS,
    Alarm,
    Detection,
    FalseAlarms,
    detections,
    drift_alarms,
    false_alarms,
)
from driftline.replay.incidents import NEVER, Incident, load_incidents
from driftline.replay.plot import METRICS, render_png, write_plot
from driftline.replay.results import load_point_alarms, load_windows, stored_runs, window_size
from driftline.replay.times import format_time
from driftline.store.client import StoreError


def register(sub: Any) -> None:
    p = sub.add_parser("backtest", help="compare replay runs: alarms, detection delay, false alarm rate")
    actions = p.add_subparsers(dest="backtest_command", metavar="ACTION", required=True)
    c = actions.add_parser(
        "compare", help="compare runs against known incidents",
        description="Alarms = drifted model windows (at window end), concept-drift detector alarms and "
                    "retrain triggers. Detection delay = first alarm at or after an incident's start "
                    "(whose evidence began before its end). False alarms per million quiet events = "
                    "alarms in windows overlapping no incident / events of those windows x 1e6.",
    )
    c.add_argument("--run-id", action="append", required=True, dest="run_ids", help="a run (repeat)")
    c.add_argument("--incidents", type=Path, help="CSV: model_id,start,end[,features] (RFC 3339 or epoch ms)")
    c.add_argument("--plot", type=Path, help="write the drift-score plot to out.png or out.html")
    c.add_argument("--metric", choices=METRICS, default="psi",
                   help="plotted per window: max PSI over features (default) or drifted features")
    c.add_argument("--window-size", type=int, help="window size in seconds (default: the smallest)")
    c.set_defaults(handler=handle)


def _when(ms: int) -> str:
    """UTC time to the second, compact for tables."""
    return format_time(ms)[:19].replace("T", " ")


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:,.0f}s"


def _alarm_table(summaries: Sequence[FalseAlarms], alarms: Sequence[Alarm]) -> Table:
    table = Table(title="alarms; false alarms (in quiet windows) per million quiet events",
                  caption=f"alarm kinds: {', '.join(KINDS)} (drift = drifted window, at its end)")
    for column in ("run", "model", "windows", *KINDS, "first alarm", "quiet win", "quiet events",
                   "false", "per M"):
        table.add_column(column, justify="left" if column in ("run", "model", "first alarm") else "right",
                         overflow="fold")
    for s in summaries:
        mine = [a.time_ms for a in alarms if a.run_id == s.run_id and a.model_id == s.model_id]
        rate = s.per_million
        table.add_row(s.run_id, s.model_id, str(s.windows), *(str(s.alarms[k]) for k in KINDS),
                      _when(min(mine)) if mine else "-", str(s.quiet_windows), f"{s.quiet_events:,}",
                      str(s.false_alarms), "-" if rate is None else f"{rate:,.1f}")
    return table


def _detection_table(found: Sequence[Detection]) -> Table:
    table = Table(title="detection delay per incident")
    for column in ("run", "model", "incident start", "end", "detected by", "at", "delay", "trigger delay"):
        table.add_column(column, justify="right" if "delay" in column else "left", overflow="fold")
    for d in found:
        i: Incident = d.incident
        end = "open" if i.end_ms == NEVER else _when(i.end_ms)
        table.add_row(d.run_id, i.model_id, _when(i.start_ms), end,
                      d.first.kind if d.first else "missed", _when(d.first.time_ms) if d.first else "-",
                      _seconds(d.delay_ms), _seconds(d.trigger_delay_ms))
    return table


def handle(args: argparse.Namespace) -> int:
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".html", ".htm"):
        print("driftline backtest: --plot must end in .png or .html", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    try:
        incidents = load_incidents(args.incidents) if args.incidents else []
        size = window_size(settings, args.run_ids, args.window_size)
        if size is None:
            print(f"driftline backtest: no model_drift rows for run(s) {', '.join(args.run_ids)} "
                  f"({stored_runs(settings)})", file=sys.stderr)
            return 1
        windows = load_windows(settings, args.run_ids, size)
        missing = [r for r in args.run_ids if not any(w.run_id == r for w in windows)]
        if missing:  # a mistyped run id is not a run without alarms
            print(f"driftline backtest: no {size}s windows for run(s) {', '.join(missing)} "
                  f"({stored_runs(settings)})", file=sys.stderr)
            return 1
        alarms = drift_alarms(windows) + load_point_alarms(settings, args.run_ids)
    except (OSError, ValueError, StoreError) as err:
        print(f"driftline backtest: {err}", file=sys.stderr)
        return 1
    console = Console()
    # no total of windows: summed over the runs it read as one run's (24 for two replays of an hour)
    which = "" if args.window_size else " (the smallest; --window-size for another)"
    console.print(f"runs {', '.join(args.run_ids)}: {size}s windows{which}, "
                  f"{len(incidents)} incident(s){'' if incidents else ' (every window is quiet)'}",
                  soft_wrap=True)
    print_table(_alarm_table(false_alarms(windows, alarms, incidents), alarms))
    if incidents:
        print_table(_detection_table(detections(args.run_ids, alarms, incidents)))
    if args.plot is not None:
        png = render_png(windows, alarms, incidents, args.run_ids, args.metric)
        write_plot(args.plot, png, f"driftline backtest: {', '.join(args.run_ids)}")
        console.print(f"plot written to {args.plot}")
    return 0
