"""`driftline query "SQL"`: read-only SQL, also while a worker owns the embedded engine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from rich.table import Table

from driftline.cli.common import print_table, settings_from_args
from driftline.store.client import StoreError
from driftline.store.guard import QueryRejected
from driftline.store.query import run_query


def register(sub: Any) -> None:
    parser = sub.add_parser("query", help="run one read-only SQL statement (SELECT, SHOW, DESCRIBE, ...)")
    parser.add_argument("sql", help="the statement, e.g. \"SELECT * FROM latest_drift\"")
    parser.add_argument("--format", choices=("table", "json", "csv", "tsv"), default="table",
                        help="table (default), or raw ClickHouse JSON / CSV / TSV with column names")
    parser.set_defaults(handler=_query)


def _query(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    fmt = "json" if args.format == "table" else args.format
    try:
        text = run_query(settings, args.sql, fmt)
    except (StoreError, QueryRejected) as err:
        print(f"driftline: {err}", file=sys.stderr)
        return 1
    if args.format != "table":
        sys.stdout.write(text)
        return 0
    print_table(render_table(orjson.loads(text)))
    return 0


def render_table(result: dict[str, Any]) -> Table:
    """A rich table of a ClickHouse JSON-format result."""
    names = [column["name"] for column in result["meta"]]
    table = Table(caption=f"{result['rows']} row(s)")
    for column in result["meta"]:
        table.add_column(column["name"], justify="right" if _numeric(column["type"]) else "left")
    for row in result["data"]:
        table.add_row(*(_cell(row[name]) for name in names))
    return table


def _numeric(type_name: str) -> bool:
    return any(token in type_name for token in ("Int", "Float", "Decimal"))


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    return value if isinstance(value, str) else orjson.dumps(value).decode()
