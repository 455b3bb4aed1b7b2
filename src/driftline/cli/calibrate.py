"""`driftline calibrate`: PSI/JS thresholds that would have met a false alarm target in a run.

Definitions: driftline.replay.calibrate. The snippet is printed and, with --out, written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from driftline.cli.common import print_table, settings_from_args
from driftline.replay.calibrate import Calibrated, FeatureThresholds, calibrate, toml_snippet
from driftline.replay.incidents import load_incidents
from driftline.replay.results import load_scores, stored_runs, window_size
from driftline.store.client import StoreError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="drift thresholds that meet a false-alarm target over a run's quiet periods",
        description="Per model and feature, the smallest PSI and JS-distance thresholds at which at most "
                    "--target-far windows per million events would have alarmed over quiet periods "
                    "(windows overlapping no incident; all windows without --incidents). Writes a TOML "
                    "snippet: [drift] psi_threshold/js_threshold = the max over features.",
    )
    p.add_argument("--run-id", required=True, help="the run whose drift scores are used")
    p.add_argument("--target-far", type=float, required=True, metavar="F",
                   help="false alarms per million quiet events")
    p.add_argument("--incidents", type=Path, help="CSV: model_id,start,end[,features]")
    p.add_argument("--out", type=Path, help="also write the TOML snippet here")
    p.add_argument("--window-size", type=int, help="window size in seconds (default: the smallest)")
    p.set_defaults(handler=handle)


def _cell(c: Calibrated | None) -> tuple[str, str]:
    if c is None:
        return "-", "-"
    return f"{c.threshold:.4g}", "-" if c.far is None else f"{c.far:,.1f}"


def _table(results: Sequence[FeatureThresholds]) -> Table:
    table = Table(title="calibrated thresholds (alarm when score >= threshold)")
    for column in ("model", "feature", "quiet windows", "quiet events", "alarms allowed", "psi", "psi FAR/M",
                   "js", "js FAR/M"):
        table.add_column(column, justify="left" if column in ("model", "feature") else "right",
                         overflow="fold")
    for r in results:
        table.add_row(r.model_id, r.feature, str(r.quiet_windows), f"{r.quiet_events:,}", str(r.allowed),
                      *_cell(r.psi), *_cell(r.js))
    return table


def handle(args: argparse.Namespace) -> int:
    if args.target_far < 0:
        print("driftline calibrate: --target-far must not be negative", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    try:
        incidents = load_incidents(args.incidents) if args.incidents else []
        size = window_size(settings, [args.run_id], args.window_size)
        scores = load_scores(settings, args.run_id, size) if size is not None else []
    except (OSError, ValueError, StoreError) as err:
        print(f"driftline calibrate: {err}", file=sys.stderr)
        return 1
    if not scores:
        print(f"driftline calibrate: no drift scores for run {args.run_id!r} ({stored_runs(settings)})",
              file=sys.stderr)
        return 1
    results = calibrate(scores, incidents, args.target_far)
    basis = (f"outside the incidents in {args.incidents}" if args.incidents
             else "all windows (no incidents file)")
    snippet = toml_snippet(results, args.run_id, args.target_far, f"{basis}; {size}s windows")
    print_table(_table(results), stderr=True)
    sys.stdout.write(snippet)
    if args.out is not None:
        args.out.write_text(snippet)
        print(f"driftline calibrate: snippet written to {args.out}", file=sys.stderr)
    return 0
