"""Apply the ordered SQL files of infra/clickhouse once each, recorded in ``schema_migrations``.

A file is applied whole, then recorded with the checksum of its text; every statement is
``IF NOT EXISTS``, so a run interrupted mid-file simply re-applies that file. Placeholders
``{database}``, ``{ttl_days}`` and ``{aggregate_ttl_days}`` come from Settings at apply time (the
checksum is of the file, so changing a TTL later does not alter applied tables).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from driftline.config import Settings
from driftline.infra import clickhouse_sql_dir
from driftline.store.client import StoreError, database_name

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


def _ensure_table(client: Client, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{database}`.{MIGRATIONS_TABLE} ("
        " version UInt32 COMMENT 'number prefix of the SQL file',"
        " name String COMMENT 'file name without number and extension',"
        " checksum String COMMENT 'sha256 of the file text when it was applied',"
        " applied_at DateTime64(3, 'UTC') COMMENT 'when the file was applied (UTC)'"
        ") ENGINE = ReplacingMergeTree ORDER BY version"
        " COMMENT 'SQL migrations applied by driftline db migrate. Read with FINAL.'"
    )


def _applied(client: Client, database: str) -> dict[int, tuple[str, datetime]]:
    sql = f"SELECT version, checksum, applied_at FROM `{database}`.{MIGRATIONS_TABLE} FINAL"
    rows = client.query(sql).result_rows
    return {int(version): (str(checksum), applied_at) for version, checksum, applied_at in rows}


def status(client: Client, settings: Settings, sql_dir: Path | None = None) -> list[MigrationStatus]:
    """State of every migration file; creates the bookkeeping table if missing."""
    database = database_name(settings)
    _ensure_table(client, database)
    applied = _applied(client, database)
    out = []
    for m in discover(sql_dir):
        record = applied.get(m.version)
        state = "pending" if record is None else "applied" if record[0] == m.checksum else "changed"
        out.append(MigrationStatus(m.version, m.name, state, record[1] if record else None))
    return out


def migrate(client: Client, settings: Settings, sql_dir: Path | None = None) -> list[str]:
    """Apply pending migrations in order; returns the labels applied (empty when up to date).

    Raises MigrationError, before applying anything, if an applied file has since been edited.
    """
    database = database_name(settings)
    _ensure_table(client, database)
    applied = _applied(client, database)
    migrations = discover(sql_dir)
    changed = [m.label for m in migrations if m.version in applied and applied[m.version][0] != m.checksum]
    if changed:
        raise MigrationError(
            f"applied migrations were edited since: {', '.join(changed)}; add a new NNN_name.sql file instead"
        )
    done = []
    for m in migrations:
        if m.version in applied:
            continue
        for statement in m.statements(settings):
            client.command(statement)
        client.insert(
            MIGRATIONS_TABLE,
            [[m.version, m.name, m.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
            database=database,
        )
        done.append(m.label)
    return done
