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

from driftline.cli.common import fit_annotations

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


def _detected(model: dict[str, Any]) -> str:
    """Detected features, naming those that were not injected (plain text: logs have no colour)."""
    text = ", ".join(model["detected_drift"]) or "-"
    if model["false_detections"]:
        text += f" ({', '.join(model['false_detections'])} not injected)"
    return text


def _episodes(model: dict[str, Any]) -> str:
    """The model's feature drift episodes (one per shifted feature however long the shift lasts):
    how many, their features, when the first opened, escalations."""
    n = model["drift_episodes"]
    if not n:
        return "0"
    text = f"{n}: {', '.join(model['episode_features'])}; first {_clock(model['first_episode'])}"
    escalations = model["escalations"]
    return text + (f"; {escalations} escalation{'s' if escalations > 1 else ''}" if escalations else "")


def summary_table(summary: dict[str, Any]) -> Table:
    """Injected against detected drift, one block of rows per model version: two columns, so it
    reads whole in an 80-column log (values wrap, nothing is cut to an ellipsis)."""
    table = Table(title=f"injected vs detected (drift injected at {summary['injection_time']})",
                  show_header=False, min_width=66)
    table.add_column("what", style="bold cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for m in summary["models"]:
        injected = m["injected_drift"]
        table.add_row(f"[bold]{m['model_id']} v{m['model_version']}[/]", f"[bold]{m['role']}[/]")
        table.add_row("injected drift", ", ".join(injected) or "-")
        table.add_row("detected drift", _detected(m))
        if m["missed"]:
            table.add_row("missed", ", ".join(m["missed"]))
        table.add_row("first detection", _clock(m["first_detection"]))
        table.add_row("drift episodes", _episodes(m))
        if m["error_episodes"]:
            table.add_row("error episodes", str(m["error_episodes"]))
        table.add_row("accuracy", f"{_fmt(m['accuracy_before'])} -> {_fmt(m['accuracy_after'])}")
        reasons = f" ({', '.join(m['trigger_reasons'])})" if m["trigger_reasons"] else ""
        table.add_row("alarms, triggers", f"{m['detector_alarms']}, {m['retrain_triggers']}{reasons}")
        table.add_row("retrain jobs ok", str(m["retrain_jobs_succeeded"]), end_section=True)
    return table


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The terminal summary: one block per model version, then dead letters and late events."""
    table = summary_table(summary)
    console.print(table)
    dead = Table(title="dead letters by kind")
    dead.add_column("kind")
    dead.add_column("count", justify="right")
    for kind, n in summary["dead_letters"].items():
        dead.add_row(kind, str(n))
    fit_annotations(dead, console)
    console.print(dead)
    events = summary["events"]
    console.print(f"events produced: {sum(events.values()):,} "
                  f"({', '.join(f'{k} {v:,}' for k, v in sorted(events.items()))}); "
                  f"late events: {summary['late_events']}")
    unjoined = summary.get("unjoined_events") or {}
    if unjoined:
        console.print("not joined (a row each in unjoined_events): "
                      + ", ".join(f"{reason} {n:,}" for reason, n in unjoined.items()))
    timings = ", ".join(f"{k} {v:g}s" for k, v in summary["timings_s"].items())
    console.print(f"simulated {summary['simulated_seconds']:.0f} s of traffic at x{summary['speed']:g}; "
                  f"timings: {timings}")
    console.print(f"report: [bold]{summary['report']}[/]")
