"""Running checked read-only SQL on a clickhouse-connect client, for the worker's ``POST /query``.

``execute_read_only`` returns a statement's rows in one of driftline's three output formats;
``ReadOnlyRunner`` keeps one read-only client for a server, checked to carry ``readonly=1``
and the ``QueryLimits`` before it answers anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline.store.guard import QueryLimits, check_read_only

# Output formats of the /query endpoint -> ClickHouse format names and HTTP content types.
CLICKHOUSE_FORMATS = {"json": "JSON", "csv": "CSVWithNames", "tsv": "TSVWithNames"}
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "tsv": "text/tab-separated-values"}

PARAMS_ARG = "params"  # /query argument: the statement's parameters as a JSON object


def execute_read_only(
    client: Client, sql: str, fmt: str, parameters: Mapping[str, Any] | None = None
) -> bytes:
    """Run a checked statement on a read-only client; the result in `fmt` (json, csv or tsv).
    ``parameters`` are bound server-side to the statement's ``{name:Type}`` placeholders."""
    if fmt not in CLICKHOUSE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(CLICKHOUSE_FORMATS)}")
    statement = check_read_only(sql)
    return bytes(client.raw_query(statement, parameters=dict(parameters or {}), fmt=CLICKHOUSE_FORMATS[fmt]))


class ReadOnlyRunner:
    """One lazily opened read-only client, used by one thread at a time (``lock``)."""

    def __init__(self, client_factory: Callable[[], Client], lock: threading.Lock | None,
                 limits: QueryLimits | None) -> None:
        self._factory = client_factory
        self._lock = lock or threading.Lock()
        self._limits = limits
        self._client: Client | None = None

    def run(self, sql: str, fmt: str, parameters: Mapping[str, Any]) -> bytes:
        with self._lock:
            if self._client is None:
                self._client = self._open()
            try:
                return execute_read_only(self._client, sql, fmt, parameters)
            except ClickHouseError:
                # chDB keeps the partial output of a query that failed mid-result (e.g. over the
                # row limit) and prepends it to the client's next answer: start a fresh client.
                client, self._client = self._client, None
                with contextlib.suppress(Exception):
                    client.close()
                raise

    def _open(self) -> Client:
        client = self._factory()
        # Defence in depth: the SQL guard alone must never be the only barrier to writes, and the
        # limits must hold for the session (a statement's SETTINGS cannot change them under readonly).
        row = client.query("SELECT getSetting('readonly'), getSetting('max_result_rows'), "
                           "getSetting('max_execution_time')").result_rows[0]
        problem = None
        if not row[0]:
            problem = "the /query client must be read-only: connect(..., readonly=True)"
        elif self._limits is not None and (int(row[1]) != self._limits.max_result_rows
                                           or float(row[2]) != self._limits.max_execution_time_s):
            problem = "the /query client must carry its limits: connect(..., limits=...)"
        if problem:
            client.close()
            raise RuntimeError(problem)
        return client
