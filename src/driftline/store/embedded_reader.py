"""Read-only statements on the embedded engine, run as ClickHouse's HTTP interface runs them.

clickhouse-connect formats parameter values itself, but a ClickHouse HTTP client sends them
already as text (``param_<name>``); and it picks the output format with ``FORMAT`` or
``default_format``. So the interface talks to chDB directly: its own connection to the
engine the writer holds (chDB shares one engine per process and path), set to the
``QueryLimits`` and then ``readonly=1``, so the engine refuses writes and limit changes itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from driftline.config import Settings
from driftline.store.client import database_name, embedded_path
from driftline.store.guard import QueryLimits

_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EngineError(Exception):
    """ClickHouse refused or failed a statement; ``code`` is its error code (0 when not given)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        match = _CODE.search(message)
        self.code = int(match.group(1)) if match else 0


@dataclass(frozen=True)
class ReadResult:
    """The engine's output bytes and what it read (for ``X-ClickHouse-Summary``)."""

    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    elapsed_s: float = 0.0


def connection_string(settings: Settings) -> str:
    """The chDB connection string of the configured embedded directory (as clickhouse-connect
    spells it: chDB compares paths literally, so it must be the writer's spelling)."""
    path = embedded_path(settings)
    return os.path.realpath(path) if path else ":memory:"


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class EmbeddedReader:
    """One read-only chDB connection, opened lazily and used by one thread at a time.

    ``lock`` is the one the writer holds around its own engine calls. A failed statement closes
    the connection (chDB may keep a failed result's partial output), the next one reopens it.
    """

    def __init__(self, settings: Settings, lock: threading.Lock | None = None,
                 limits: QueryLimits | None = None) -> None:
        if not settings.clickhouse.embedded:
            raise ValueError(f"{settings.clickhouse_url()} is a ClickHouse server, not the embedded engine")
        self._conn_str = connection_string(settings)
        self._default_database = database_name(settings)
        self._limits = limits or QueryLimits.from_settings(settings)
        self._lock = lock or threading.Lock()
        self._conn: Any = None
        self._database: str | None = None
        self.timezone = "UTC"

    def run(self, statement: str, *, default_format: str, database: str | None = None,
            params: Mapping[str, str] | None = None, settings: Mapping[str, str] | None = None) -> ReadResult:
        """Rows of a checked read-only statement, in its ``FORMAT`` or else ``default_format``.

        ``settings`` are applied as on a readonly ClickHouse user: the engine accepts a value
        equal to the current one and refuses a change (Code 164). Raises EngineError.
        """
        with self._lock:
            try:
                conn = self._open()
                self._use(conn, database or self._default_database)
                for name, value in (settings or {}).items():
                    if not _SETTING_NAME.match(name):
                        raise EngineError(
                            f"Code: 115. DB::Exception: Unknown setting {name!r}. (UNKNOWN_SETTING)")
                    conn.query(f"SET {name} = {_quote_value(value)}", "TabSeparated")
                result = conn.query(statement, default_format, params=dict(params or {}))
                return ReadResult(body=result.bytes() or b"", read_rows=int(result.rows_read()),
                                  read_bytes=int(result.bytes_read()), elapsed_s=float(result.elapsed()))
            except EngineError:
                self._close()
                raise
            except RuntimeError as err:  # chdb.ChdbError: the engine's own message
                self._close()
                raise EngineError(str(err).strip()) from None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> Any:
        if self._conn is not None:
            return self._conn
        import chdb  # the `local` extra: only embedded mode needs it

        conn = chdb.connect(self._conn_str)
        try:
            for name, value in self._limits.clickhouse_settings().items():
                conn.query(f"SET {name} = {_quote_value(value)}", "TabSeparated")
            conn.query("SET readonly = 1", "TabSeparated")
            # Defence in depth: never answer on a session the engine does not hold read-only.
            row = bytes(conn.query("SELECT getSetting('readonly'), timezone()", "TabSeparated").bytes())
            readonly, timezone = row.decode().strip().split("\t")
            if readonly != "1":
                raise RuntimeError("the ClickHouse interface's chDB session is not read-only")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self.timezone = timezone
        self._conn, self._database = conn, None
        return conn

    def _use(self, conn: Any, database: str) -> None:
        if database != self._database:
            conn.query(f"USE {_quote_identifier(database)}", "TabSeparated")
            self._database = database

    def _close(self) -> None:
        conn, self._conn, self._database = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
