"""`driftline query "SQL"`: read-only SQL, also while a worker owns the embedded engine."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import orjson
from rich.table import Table

from driftline.cli.common import print_table, settings_from_args
from driftline.infra import clickhouse_sql_dir
from driftline.store.client import StoreError
from driftline.store.guard import QueryRejected
from driftline.store.query import run_query


def register(sub: Any) -> None:
    parser = sub.add_parser("query", help="run one read-only SQL statement (SELECT, SHOW, DESCRIBE, ...)")
    parser.add_argument("sql", help="the statement, e.g. \"SELECT * FROM latest_drift\"")
    parser.add_argument("--format", choices=("table", "json", "csv", "tsv"), default="table",
                        help="table (default), or raw ClickHouse JSON / CSV / TSV with column names")
    parser.set_defaults(handler=_query)


# "FROM/JOIN [db.]table [FINAL]" in a statement (names optionally back-quoted)
_TABLE_READ = re.compile(r"\b(?:FROM|JOIN)\s+(?:`?\w+`?\.)?`?(\w+)`?(\s+FINAL\b)?", re.IGNORECASE)
_CREATED_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS \{database\}\.(\w+)")


def driftline_tables() -> frozenset[str]:
    """The tables the migrations create: every one a ReplacingMergeTree, read with FINAL."""
    return frozenset(name for path in clickhouse_sql_dir().glob("*.sql")
                     for name in _CREATED_TABLE.findall(path.read_text()))


def read_without_final(sql: str, tables: frozenset[str]) -> list[str]:
    """The driftline tables ``sql`` reads without FINAL, in order.

    >>> read_without_final("SELECT * FROM drift_episodes WHERE x IN (SELECT y FROM outcomes FINAL)",
    ...                    frozenset({"drift_episodes", "outcomes"}))
    ['drift_episodes']
    """
    out = []
    for match in _TABLE_READ.finditer(sql):
        if match.group(1) in tables and not match.group(2) and match.group(1) not in out:
            out.append(match.group(1))
    return out


def _query(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    fmt = "json" if args.format == "table" else args.format
    try:
        text = run_query(settings, args.sql, fmt)
    except (StoreError, QueryRejected) as err:
        print(f"driftline: {err}", file=sys.stderr)
        return 1
    for table in read_without_final(args.sql, driftline_tables()):
        # without FINAL a ReplacingMergeTree shows every version not merged yet: an episode's
        # updates read as many episodes
        print(f"driftline: note: {table} read without FINAL may hold a row several times (each "
              f"version not merged yet); put FINAL after {table} in the statement", file=sys.stderr)
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
