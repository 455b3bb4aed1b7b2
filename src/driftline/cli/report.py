"""`driftline report --model M --out M.html`: one self-contained HTML page of a model's drift."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from driftline.cli.common import settings_from_args
from driftline.replay.times import parse_time

EPILOG = """\
The page reads the ClickHouse tables: through the worker's /query endpoint while a worker owns the
embedded store, else the configured ClickHouse server or embedded directory. It needs no network
to view (inline CSS and SVG, no scripts). Times are event times: --from inclusive, --to exclusive
(RFC 3339 or epoch ms); --last DURATION (e.g. 90m, 24h, 7d) ends at the model's newest event time
on the page: the end of its newest drift window of the heat map's size (the smallest), or of its
newest outcome interval if later.
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(text: str) -> int:
    """Milliseconds of a duration such as ``24h``, ``90m``, ``7d`` or ``3600`` (seconds).

    >>> parse_duration("24h"), parse_duration("90m"), parse_duration("3600")
    (86400000, 5400000, 3600000)
    """
    match = _DURATION.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report",
        help="write one self-contained HTML page of a model's drift, performance and rejects",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model id")
    parser.add_argument("--version", help="only this model version (default: all, compared side by side)")
    parser.add_argument(
        "--from", dest="from_time", type=_time, metavar="TIME", help="first event time (inclusive)"
    )
    parser.add_argument(
        "--to", dest="to_time", type=_time, metavar="TIME", help="end of event times (exclusive)"
    )
    parser.add_argument(
        "--last",
        type=parse_duration,
        metavar="DURATION",
        help="the last DURATION before the model's newest event time on the page (instead of --from/--to)",
    )
    parser.add_argument("--run-id", default="", help="a replay/backtest run id (default: the live pipeline)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="output file (default: MODEL.html)")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from driftline.report import NoReportData, ReportScope, build_model_report, read_model_report
    from driftline.store.client import StoreError
    from driftline.store.query import run_query

    if args.last is not None and (args.from_time is not None or args.to_time is not None):
        return _fail("--last replaces --from/--to: give one or the other")
    if args.from_time is not None and args.to_time is not None and args.to_time <= args.from_time:
        return _fail("--to must be after --from")
    settings = settings_from_args(args)
    # clickhouse-connect logs a failed connection itself; the one line below says it already
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)

    def query(sql: str, parameters: Mapping[str, Any]) -> str:
        return run_query(settings, sql, "json", parameters=parameters)

    scope = ReportScope(args.model, args.version, args.run_id, args.from_time, args.to_time)
    try:
        report = read_model_report(query, scope, args.last)
        page = build_model_report(report)
    except (StoreError, NoReportData) as err:
        return _fail(str(err))
    out: Path = args.out or Path(f"{args.model}.html")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        return _fail(f"cannot write {out}: {err.strerror or err}")
    windows = f", drift windows of {report.window_s} s" if report.window_s else ""
    print(f"wrote {out} ({len(page.encode()) // 1024} KiB): event times {report.scope.describe_range()}"
          + windows)
    return 0


def _fail(message: str) -> int:
    print(f"driftline report: {message}", file=sys.stderr)
    return 2
