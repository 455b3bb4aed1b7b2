"""The process that owns the embedded engine, and the read-only `/query` endpoint it serves.

chDB lets one process open a data directory. That process (the worker) records itself in
``<home>/clickhouse-owner.json`` and serves ``POST /query`` so that other processes can still read.
Each query on that endpoint runs within ``QueryLimits`` (execution time, result rows), fixed on
the read-only session so that a statement's own SETTINGS cannot lift them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline.config import Settings

OWNER_FILE = "clickhouse-owner.json"

# Output formats of the query endpoint -> ClickHouse format names and HTTP content types.
CLICKHOUSE_FORMATS = {"json": "JSON", "csv": "CSVWithNames", "tsv": "TSVWithNames"}
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "tsv": "text/tab-separated-values"}

READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"})


@dataclass(frozen=True)
class Owner:
    """A live process holding the embedded engine; ``query_url`` is its ``POST /query`` endpoint."""

    pid: int
    query_url: str


def owner_path(home: Path) -> Path:
    return Path(home) / OWNER_FILE


def claim_owner(home: Path, query_url: str) -> Path:
    """Record this process as the engine owner (call after opening the engine); returns the file."""
    path = owner_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "query_url": query_url}))
    tmp.replace(path)  # atomic: readers never see a half-written file
    return path


def release_owner(home: Path) -> None:
    """Remove the record if it names this process (another owner's record is left alone)."""
    path = owner_path(home)
    owner = _read(path)
    if owner is not None and owner.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_owner(home: Path) -> Owner | None:
    """The recorded owner if its process is still alive, else None."""
    owner = _read(owner_path(home))
    if owner is None or not pid_alive(owner.pid):
        return None
    return owner


def _read(path: Path) -> Owner | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    pid, url = (data.get("pid"), data.get("query_url")) if isinstance(data, dict) else (None, None)
    if not isinstance(pid, int) or not isinstance(url, str):
        return None
    return Owner(pid=pid, query_url=url)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


# -- the read-only guard ---------------------------------------------------------------------------


class QueryRejected(ValueError):
    """The SQL is not a single read-only statement."""


@dataclass(frozen=True)
class QueryLimits:
    """Bounds of every ``POST /query`` statement (``worker.query_max_*`` settings)."""

    max_execution_time_s: float
    max_result_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        w = settings.worker
        return cls(w.query_max_execution_time_s, w.query_max_result_rows)

    def clickhouse_settings(self) -> dict[str, str]:
        """Session settings for ``connect(..., limits=...)`` (applied before ``readonly``)."""
        return {"max_execution_time": str(self.max_execution_time_s),
                "max_result_rows": str(self.max_result_rows), "result_overflow_mode": "throw"}

    def explain(self, error: str) -> str:
        """A ClickHouse error that is one of these limits, in the user's terms; others unchanged."""
        if "TOO_MANY_ROWS_OR_BYTES" in error:
            return (f"the result has more than {self.max_result_rows} rows, the /query limit "
                    "(DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS)") + ": aggregate, filter or add a LIMIT"
        if "TIMEOUT_EXCEEDED" in error:
            return (f"the query ran longer than {self.max_execution_time_s:g} s, the /query limit "
                    "(DRIFTLINE_WORKER_QUERY_MAX_EXECUTION_TIME_S)")
        return error


_HEREDOC = re.compile(r"\$(\w*)\$")
_WORD = re.compile(r"[A-Za-z_]+")


def _code_outside_literals(sql: str) -> str:
    """`sql` with string literals, quoted identifiers and comments blanked out (same length).

    Deliberately conservative: block comments do not nest and `#` always starts a line comment,
    so any reading that differs from ClickHouse's can only reveal more code, never hide it.
    """
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            if j >= n:
                raise QueryRejected("unterminated quoted string or identifier")
            end = j + 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise QueryRejected("unterminated comment")
            end = j + 2
        elif c == "$" and (m := _HEREDOC.match(sql, i)):
            j = sql.find(m.group(0), m.end())
            if j < 0:
                raise QueryRejected("unterminated heredoc string")
            end = j + len(m.group(0))
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def check_read_only(sql: str) -> str:
    """The single read-only statement in `sql` (trailing `;` removed), or raise QueryRejected.

    Accepted: SELECT, WITH, SHOW, DESCRIBE/DESC, EXPLAIN. The client must still run it with
    ``readonly=1``; this check only narrows what reaches the engine (``INTO OUTFILE`` and
    multi-statement input are not stopped by readonly on chDB).
    """
    code = _code_outside_literals(sql)
    semicolon = code.find(";")
    if semicolon >= 0:
        if code[semicolon + 1 :].strip():
            raise QueryRejected("only a single statement is accepted")
        sql = sql[:semicolon]
        code = code[:semicolon]
    words = _WORD.findall(code)
    if not words:
        raise QueryRejected("empty query")
    first = words[0].upper()
    if first not in READ_ONLY_KEYWORDS:
        allowed = ", ".join(sorted(READ_ONLY_KEYWORDS))
        raise QueryRejected(f"only {allowed} statements are accepted, not {first}")
    if "OUTFILE" in (w.upper() for w in words):
        raise QueryRejected("INTO OUTFILE is not accepted")
    return sql.strip()


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


# -- the /query endpoint ---------------------------------------------------------------------------

QueryHandler = Callable[[web.Request], Awaitable[web.Response]]


class _ReadOnlyRunner:
    """One lazily opened read-only client, used by one thread at a time."""

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


def make_query_handler(
    client_factory: Callable[[], Client], lock: threading.Lock | None = None,
    limits: QueryLimits | None = None,
) -> QueryHandler:
    """aiohttp handler for ``POST /query`` (body: SQL; query parameters ``format=json|csv|tsv`` and
    ``params`` = a JSON object of values for the statement's ``{name:Type}`` placeholders).

    ``client_factory`` must return a read-only client (``connect(settings, readonly=True,
    limits=limits.clickhouse_settings())``), checked when it is opened: on the first request and
    after a failed query. Queries run in a thread, serialized by ``lock``. Answers 200 with the
    rows, or 400 with a one-line reason for rejected or failing SQL (a limit says which setting).
    """
    runner = _ReadOnlyRunner(client_factory, lock, limits)

    async def handle(request: web.Request) -> web.Response:
        fmt = request.query.get("format", "json")
        if fmt not in CLICKHOUSE_FORMATS:
            choices = "|".join(CLICKHOUSE_FORMATS)
            return web.Response(status=400, text=f"unknown format {fmt!r}; use {choices}")
        sql = await request.text()
        try:
            parameters = orjson.loads(request.query.get(PARAMS_ARG, "{}"))
        except orjson.JSONDecodeError:
            parameters = None
        if not isinstance(parameters, dict):
            return web.Response(status=400, text=f"{PARAMS_ARG} must be a JSON object")
        try:
            check_read_only(sql)
            body = await asyncio.to_thread(runner.run, sql, fmt, parameters)
        except QueryRejected as err:
            return web.Response(status=400, text=f"rejected: {err}")
        except ClickHouseError as err:
            first_line = str(err).strip().splitlines()[0]
            return web.Response(status=400, text=limits.explain(first_line) if limits else first_line)
        return web.Response(body=body, content_type=CONTENT_TYPES[fmt])

    return handle
