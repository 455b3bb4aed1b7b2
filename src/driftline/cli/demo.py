"""`driftline demo`: the whole pipeline on the embedded stack in about two minutes (`make demo`)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

DEFAULT_HOME = Path(".driftline/demo")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run broker, worker, simulator and retrain listener end to end; summary + HTML report",
        description="Start the embedded broker, a worker with its own embedded ClickHouse and the retrain "
        "listener in a fresh demo home, simulate about an hour of traffic for three models (drift "
        "injected halfway) in about two minutes of wall time, then print what was injected against what "
        "was detected, write an HTML report and stop everything.",
    )
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME,
                        help="demo home, wiped at the start (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="wall seconds of traffic (default 120, or 40 with --fast)")
    parser.add_argument("--fast", action="store_true", help="a shorter run with less traffic (tests)")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="HTML report path (default: HOME/report.html)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object on stdout (progress goes to stderr)")
    parser.add_argument("--job-wait", type=float, default=90.0, metavar="SECONDS",
                        help="how long to wait for retrain jobs after the traffic (default: %(default)s)")
    parser.set_defaults(handler=handle)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def handle(args: argparse.Namespace) -> int:
    from driftline.demo.run import DemoError, DemoOptions, run_demo

    if args.duration is not None and args.duration <= 0:
        print("driftline demo: --duration must be positive", file=sys.stderr)
        return 2
    options = DemoOptions(home=args.home, duration_s=args.duration, fast=args.fast, report=args.report,
                          config=getattr(args, "config", None), job_wait_s=args.job_wait)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children in order, as on Ctrl-C
    try:
        summary = run_demo(options, Console(stderr=True))
    except DemoError as err:
        print(f"driftline demo: {err}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        print_summary(Console(), summary)
    return 0 if all(code == 0 for code in summary["exit_codes"].values()) else 1


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _clock(timestamp: str | None) -> str:
    """The time of day of an RFC 3339 timestamp (the date is in the table title)."""
    return timestamp[11:19] if timestamp else "-"


def _features(names: list[str], injected: list[str]) -> str:
    return ", ".join(name if name in injected else f"[red]{name}[/]" for name in names) or "-"


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The terminal summary: one row per model version, then dead letters and late events."""
    table = Table(title=f"injected vs detected (drift injected at {summary['injection_time']})")
    for name in ("model", "version", "injected drift", "detected drift", "first detection", "accuracy",
                 "alarms", "triggers", "jobs ok"):
        table.add_column(name, justify="right" if name in ("alarms", "triggers", "jobs ok") else "left")
    for m in summary["models"]:
        accuracy = f"{_fmt(m['accuracy_before'])} -> {_fmt(m['accuracy_after'])}"
        injected = m["injected_drift"]
        table.add_row(m["model_id"], f"{m['model_version']} ({m['role']})",
                      ", ".join(injected) or "-", _features(m["detected_drift"], injected),
                      _clock(m["first_detection"]), accuracy, str(m["detector_alarms"]),
                      f"{m['retrain_triggers']} {' '.join(m['trigger_reasons'])}".strip(),
                      str(m["retrain_jobs_succeeded"]))
    console.print(table)
    dead = Table(title="dead letters by kind")
    dead.add_column("kind")
    dead.add_column("count", justify="right")
    for kind, n in summary["dead_letters"].items():
        dead.add_row(kind, str(n))
    console.print(dead)
    events = summary["events"]
    console.print(f"events produced: {sum(events.values()):,} "
                  f"({', '.join(f'{k} {v:,}' for k, v in sorted(events.items()))}); "
                  f"late events: {summary['late_events']}")
    timings = ", ".join(f"{k} {v:g}s" for k, v in summary["timings_s"].items())
    console.print(f"simulated {summary['simulated_seconds']:.0f} s of traffic at x{summary['speed']:g}; "
                  f"timings: {timings}")
    console.print(f"report: [bold]{summary['report']}[/]")
