"""Read-only SQL from any process: directly, or through the process that owns the embedded engine.

A second process reads through the owner's ClickHouse HTTP interface, the same one BI tools use
(streams/clickhouse_http.py): the statement in the body, ``default_format`` and ``database``
in the query string, and each parameter as ``param_<name>`` in ClickHouse's text form.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline.client.http import open_worker
from driftline.config import Settings
from driftline.store.client import EngineBusy, QueryError, StoreError, connect, database_name
from driftline.store.guard import QueryLimits, check_read_only
from driftline.store.owner import Owner, owner_path, read_owner
from driftline.store.readonly import CLICKHOUSE_FORMATS, execute_read_only


def run_query(
    settings: Settings,
    sql: str,
    fmt: str = "json",
    *,
    parameters: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> str:
    """Rows of one read-only statement as text in `fmt`: json (ClickHouse JSON), csv or tsv (with names).

    Values go in ``parameters`` and are referenced as ``{name:Type}`` in the SQL (bound by
    ClickHouse itself, never spliced into the text).

    Raises QueryRejected (not read-only), QueryError (ClickHouse refused it), or StoreError
    (the engine is busy and its owner does not serve queries, or ClickHouse is unreachable).
    """
    if fmt not in CLICKHOUSE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(CLICKHOUSE_FORMATS)}")
    statement = check_read_only(sql)
    if settings.clickhouse.embedded:
        # Ask a running owner first: opening the directory here, even briefly, could stop it starting.
        owner = read_owner(settings.home)
        if owner is not None and owner.pid != os.getpid():
            return _ask_owner(settings, owner, statement, fmt, parameters, timeout)
    try:
        client = connect(settings, readonly=True)
    except EngineBusy as busy:
        if busy.owner is not None:
            return _ask_owner(settings, busy.owner, statement, fmt, parameters, timeout)
        record = owner_path(settings.home)
        raise StoreError(f"{busy}, which does not serve queries (no live owner in {record})") from None
    try:
        return execute_read_only(client, statement, fmt, parameters).decode()
    except ClickHouseError as err:
        raise QueryError(str(err).strip().splitlines()[0]) from None
    finally:
        client.close()


def param_text(value: Any) -> str:
    r"""A parameter value as ClickHouse's HTTP interface reads ``param_<name>`` (escaped text).

    >>> [param_text(v) for v in ("it's a\\b", 3, 2.5, True, None)]
    ["it's a\\\\b", '3', '2.5', 'true', '\\N']
    >>> param_text(["a'b", "c"]), param_text(datetime(2026, 1, 2, 3, 4, 5))
    ("['a\\'b','c']", '2026-01-02 03:04:05')
    """
    if isinstance(value, str):
        return value.replace("\\", "\\\\")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_element_text(v) for v in value) + "]"
    return _scalar_text(value)


def _element_text(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_element_text(v) for v in value) + "]"
    if value is None:
        return "NULL"
    text = _scalar_text(value)
    return f"'{text}'" if isinstance(value, (date, datetime)) else text


def _scalar_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} as a ClickHouse query parameter")


def _ask_owner(settings: Settings, owner: Owner, sql: str, fmt: str, parameters: Mapping[str, Any] | None,
               timeout: float) -> str:
    # The owner is a worker with the same settings: same token, same certificate.
    query = {"default_format": CLICKHOUSE_FORMATS[fmt], "database": database_name(settings)}
    query.update({f"param_{name}": param_text(value) for name, value in (parameters or {}).items()})
    request = urllib.request.Request(
        f"{owner.clickhouse_url}?{urlencode(query)}",
        data=sql.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        method="POST",
    )
    try:
        with open_worker(settings, request, timeout) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as err:
        message = err.read().decode(errors="replace").strip()
        if err.code in (401, 403) and err.headers.get("X-ClickHouse-Exception-Code") in ("194", "516"):
            given = "a wrong token" if settings.worker.auth_tokens else "no token"
            raise StoreError(
                f"the ClickHouse owner (pid {owner.pid}) at {owner.clickhouse_url} requires a token and "
                f"this process sent {given}: set DRIFTLINE_WORKER_AUTH_TOKENS as for the worker"
            ) from None
        if err.headers.get("X-ClickHouse-Exception-Code"):
            first_line = message.splitlines()[0] if message else f"HTTP {err.code}"
            raise QueryError(QueryLimits.from_settings(settings).explain(first_line)) from None
        detail = f"answered HTTP {err.code} at {owner.clickhouse_url}"
        if err.code == 404:
            detail += " (a worker from before the ClickHouse HTTP interface? restart it)"
        raise StoreError(f"the ClickHouse owner (pid {owner.pid}) {detail}") from None
    except (urllib.error.URLError, TimeoutError) as err:
        raise StoreError(
            f"the ClickHouse owner (pid {owner.pid}) does not answer at {owner.clickhouse_url}: {err}"
        ) from None
