"""Apply the ordered SQL files of infra/clickhouse once each, recorded in ``schema_migrations``.

A file is applied whole, then recorded with the checksum of its text; every statement is
``IF NOT EXISTS``, so a run interrupted mid-file simply re-applies that file. Placeholders
``{database}``, ``{ttl_days}`` and ``{aggregate_ttl_days}`` come from Settings at apply time (the
checksum is of the file, so changing a TTL later does not alter applied tables).

With a cluster (the ``cluster`` argument, else the ``clickhouse.cluster`` setting), each statement
is rewritten by `driftline.store.cluster_ddl` into ON CLUSTER DDL (replicated ``_local`` tables,
Distributed tables under the public names) and the bookkeeping table is replicated over every node.
Choose it at the first migrate: the files' checksums do not record the layout, so a database
migrated without a cluster stays single-server.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from driftline.config import Settings
from driftline.infra import clickhouse_sql_dir
from driftline.store.client import StoreError, database_name
from driftline.store.cluster_ddl import (
    MIGRATIONS_REPLICA_NAME,
    MIGRATIONS_REPLICATION_PATH,
    ClusterRewriter,
    table_names,
)
from driftline.store.query import run_query

_FILE_NAME = re.compile(r"^(\d+)_(\w+)\.sql$")
# Statements in the SQL files end with `;` at the end of a line (string literals never do).
_STATEMENT_END = re.compile(r";[ \t]*$", re.M)
_COMMENT_LINE = re.compile(r"^\s*--.*$", re.M)

MIGRATIONS_TABLE = "schema_migrations"


class MigrationError(StoreError):
    """The SQL files and the recorded migrations disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"

    def statements(self, settings: Settings) -> list[str]:
        text = (
            self.path.read_text()
            .replace("{database}", database_name(settings))
            .replace("{ttl_days}", str(settings.clickhouse.ttl_days))
            .replace("{aggregate_ttl_days}", str(settings.clickhouse.aggregate_ttl_days))
        )
        chunks = (chunk.strip() for chunk in _STATEMENT_END.split(text))
        return [chunk for chunk in chunks if _COMMENT_LINE.sub("", chunk).strip()]


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: str  # 'applied' | 'pending' | 'changed' (file edited after it was applied)
    applied_at: datetime | None


def discover(sql_dir: Path | None = None) -> list[Migration]:
    """The migrations in `sql_dir` (default: the packaged infra/clickhouse), by version."""
    found: dict[int, Migration] = {}
    for path in sorted((sql_dir or clickhouse_sql_dir()).glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is also {found[version].path.name}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


def cluster_name(settings: Settings, cluster: str | None = None) -> str | None:
    """The cluster the migrations run ON CLUSTER on: ``cluster`` (a `--cluster` flag), else the
    ``clickhouse.cluster`` setting; None for a single server."""
    return cluster or settings.clickhouse.cluster or None


def _migrations_table_ddl(database: str, cluster: str | None) -> list[str]:
    if cluster is not None and not re.fullmatch(r"[\w.-]+", cluster):  # it goes into DDL text
        raise MigrationError(f"cluster name {cluster!r}: use letters, digits, '_', '-' or '.'")
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    engine = (
        f"ReplicatedReplacingMergeTree('{MIGRATIONS_REPLICATION_PATH}', '{MIGRATIONS_REPLICA_NAME}')"
        if cluster
        else "ReplacingMergeTree"
    )
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}",
        f"CREATE TABLE IF NOT EXISTS `{database}`.{MIGRATIONS_TABLE}{on_cluster} ("
        " version UInt32 COMMENT 'number prefix of the SQL file',"
        " name String COMMENT 'file name without number and extension',"
        " checksum String COMMENT 'sha256 of the file text when it was applied',"
        " applied_at DateTime64(3, 'UTC') COMMENT 'when the file was applied (UTC)'"
        f") ENGINE = {engine} ORDER BY version"
        " COMMENT 'SQL migrations applied by driftline db migrate. Read with FINAL.'",
    ]


def _ensure_table(client: Client, database: str, cluster: str | None) -> None:
    for statement in _migrations_table_ddl(database, cluster):
        _command(client, statement, cluster)


def _command(client: Client, statement: str, cluster: str | None) -> None:
    """Run one DDL statement; on a cluster, a refusal (no such cluster, no Keeper, a node down)
    is a MigrationError naming the statement, not a driver traceback."""
    if cluster is None:
        client.command(statement)
        return
    try:
        client.command(statement)
    except OperationalError:
        raise
    except DatabaseError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MigrationError(
            f"on cluster {cluster!r}: {reason}\n  statement: {statement[:160]}"
            + (" ..." if len(statement) > 160 else "")
            + "\n  --cluster needs a ClickHouse server cluster (remote_servers, Keeper, {shard}/{replica}"
            " macros); the embedded engine has none"
        ) from err


def _applied(client: Client, database: str) -> dict[int, tuple[str, datetime]]:
    sql = f"SELECT version, checksum, applied_at FROM `{database}`.{MIGRATIONS_TABLE} FINAL"
    rows = client.query(sql).result_rows
    return {int(version): (str(checksum), applied_at) for version, checksum, applied_at in rows}


def statements(
    migrations: list[Migration], settings: Settings, cluster: str | None = None, sql_dir: Path | None = None
) -> dict[str, list[str]]:
    """The SQL each migration runs, by label: as written, or as ON CLUSTER DDL for `cluster`."""
    if cluster is None:
        return {m.label: m.statements(settings) for m in migrations}
    database = database_name(settings)
    # Every file's tables, so an ALTER of a table created in an earlier run knows it.
    known = table_names(sql for m in discover(sql_dir) for sql in m.statements(settings))
    rewriter = ClusterRewriter(cluster, database, known)
    return {
        m.label: [out for sql in m.statements(settings) for out in rewriter.rewrite(sql)] for m in migrations
    }


def plan_sql(settings: Settings, cluster: str | None = None, sql_dir: Path | None = None) -> str:
    """Every statement `migrate` would run on an empty database, as one SQL script."""
    database = database_name(settings)
    cluster = cluster_name(settings, cluster)
    blocks = ["-- bookkeeping\n" + ";\n".join(_migrations_table_ddl(database, cluster)) + ";"]
    for label, sqls in statements(discover(sql_dir), settings, cluster, sql_dir).items():
        blocks.append(f"-- {label}\n" + ";\n".join(sqls) + ";")
    return "\n\n".join(blocks) + "\n"


def status(
    client: Client, settings: Settings, sql_dir: Path | None = None, cluster: str | None = None
) -> list[MigrationStatus]:
    """State of every migration file; creates the bookkeeping table if missing."""
    database = database_name(settings)
    cluster = cluster_name(settings, cluster)
    _ensure_table(client, database, cluster)
    return states(_applied(client, database), sql_dir)


def status_through_owner(settings: Settings, sql_dir: Path | None = None) -> list[MigrationStatus]:
    """:func:`status` read through the worker that owns the embedded engine (its read-only
    ClickHouse HTTP interface): `db status` told a user to stop the worker to be answered."""
    text = run_query(settings, f"SELECT version, checksum, applied_at FROM {MIGRATIONS_TABLE} FINAL", "json")
    applied = {int(row["version"]): (str(row["checksum"]), _utc(row["applied_at"]))
               for row in orjson.loads(text)["data"]}
    return states(applied, sql_dir)


def _utc(text: str) -> datetime:
    """A DateTime64(3, 'UTC') as ClickHouse writes it in JSON ('2026-12-04 20:35:54.123')."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def states(applied: Mapping[int, tuple[str, datetime]], sql_dir: Path | None = None) -> list[MigrationStatus]:
    """Each migration file's state against the ``applied`` records (version: checksum, when)."""
    out = []
    for m in discover(sql_dir):
        record = applied.get(m.version)
        state = "pending" if record is None else "applied" if record[0] == m.checksum else "changed"
        out.append(MigrationStatus(m.version, m.name, state, record[1] if record else None))
    return out


def pending(client: Client, settings: Settings, sql_dir: Path | None = None) -> list[str]:
    """Labels of the migrations not applied, reading only (a user allowed to insert and select
    can ask; :func:`status` creates the bookkeeping table): without that table, all of them."""
    database = database_name(settings)
    found = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        parameters={"db": database, "table": MIGRATIONS_TABLE},
    ).result_rows
    applied = _applied(client, database) if found and int(found[0][0]) else {}
    return [m.label for m in discover(sql_dir) if m.version not in applied]


def migrate(
    client: Client, settings: Settings, sql_dir: Path | None = None, cluster: str | None = None
) -> list[str]:
    """Apply pending migrations in order; returns the labels applied (empty when up to date).

    Raises MigrationError, before applying anything, if an applied file has since been edited.
    With `cluster` (else the ``clickhouse.cluster`` setting), runs them as ON CLUSTER DDL (see
    `driftline.store.cluster_ddl`).
    """
    database = database_name(settings)
    cluster = cluster_name(settings, cluster)
    _ensure_table(client, database, cluster)
    applied = _applied(client, database)
    migrations = discover(sql_dir)
    changed = [m.label for m in migrations if m.version in applied and applied[m.version][0] != m.checksum]
    if changed:
        raise MigrationError(
            f"applied migrations were edited since: {', '.join(changed)}; add a new NNN_name.sql file instead"
        )
    pending = [m for m in migrations if m.version not in applied]
    sqls = statements(pending, settings, cluster, sql_dir)
    done = []
    for m in pending:
        for statement in sqls[m.label]:
            _command(client, statement, cluster)
        client.insert(
            MIGRATIONS_TABLE,
            [[m.version, m.name, m.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
            database=database,
        )
        done.append(m.label)
    return done
