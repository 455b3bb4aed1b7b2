"""`driftline db migrate|status`: the ClickHouse schema."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table

from driftline.cli.common import print_table, settings_from_args
from driftline.store.client import EngineBusy, StoreError, connect
from driftline.store.migrate import cluster_name, migrate, plan_sql, status, status_through_owner

_CLUSTER_HELP = (
    "ClickHouse cluster (remote_servers) to create the schema on with ON CLUSTER DDL: replicated "
    "<table>_local tables and Distributed tables under the public names (docs/scaling.md); "
    "default: the clickhouse.cluster setting (DRIFTLINE_CLICKHOUSE_CLUSTER)"
)


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="ClickHouse schema: apply migrations, show their state")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    migrate_parser = actions.add_parser("migrate", help="apply pending SQL migrations (safe to re-run)")
    migrate_parser.add_argument("--cluster", metavar="NAME", help=_CLUSTER_HELP)
    migrate_parser.add_argument(
        "--print",
        dest="print_sql",
        action="store_true",
        help="print every statement a migrate of an empty database runs, without connecting",
    )
    migrate_parser.set_defaults(handler=_migrate)
    status_parser = actions.add_parser("status", help="list migrations: applied, pending or changed")
    status_parser.add_argument(
        "--cluster", metavar="NAME",
        help="ClickHouse cluster `db migrate --cluster` created the schema on (docs/scaling.md); default: "
             "the clickhouse.cluster setting (DRIFTLINE_CLICKHOUSE_CLUSTER)")
    status_parser.set_defaults(handler=_status)


def _migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.print_sql:
        try:
            sys.stdout.write(plan_sql(settings, args.cluster))
        except StoreError as err:
            print(f"driftline: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        client = connect(settings)
        try:
            applied = migrate(client, settings, cluster=args.cluster)
        finally:
            client.close()
    except EngineBusy as busy:
        print(f"driftline: {_busy(busy, 'migrate')}", file=sys.stderr)
        return 1
    except StoreError as err:
        print(f"driftline: {err}", file=sys.stderr)
        return 1
    where = f"{settings.clickhouse_url()} database {settings.clickhouse.database}"
    if cluster := cluster_name(settings, args.cluster):
        where += f" on cluster {cluster}"
    if applied:
        print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"{where} is up to date")
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        client = connect(settings)
        try:
            rows = status(client, settings, cluster=args.cluster)
        finally:
            client.close()
    except EngineBusy as busy:
        if busy.owner is None:
            print(f"driftline: {_busy(busy, 'status')}", file=sys.stderr)
            return 1
        try:  # the worker that owns the engine answers it
            rows = status_through_owner(settings)
        except StoreError as err:
            print(f"driftline: {err}", file=sys.stderr)
            return 1
    except StoreError as err:
        print(f"driftline: {err}", file=sys.stderr)
        return 1
    table = Table(title=f"{settings.clickhouse_url()} database {settings.clickhouse.database}")
    for column in ("version", "name", "state", "applied at (UTC)"):
        table.add_column(column)
    for row in rows:
        applied_at = row.applied_at.strftime("%Y-%m-%d %H:%M:%S") if row.applied_at else ""
        table.add_row(f"{row.version:03d}", row.name, row.state, applied_at)
    print_table(table)
    return 0 if all(row.state == "applied" for row in rows) else 1


def _busy(busy: EngineBusy, action: str) -> str:
    """Who holds the embedded directory and what to do: chDB opens one in a single process."""
    who = f"process {busy.pid}" if busy.pid else "that process"
    return (f"{busy}. The embedded engine opens in one process at a time: stop {who} to run "
            f"`driftline db {action}` (a worker applies pending migrations itself when it starts)")
