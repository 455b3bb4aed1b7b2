"""Read-only SQL from any process: directly, or through the process that owns the embedded engine."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline.client.http import open_worker
from driftline.config import Settings
from driftline.store.client import EngineBusy, QueryError, StoreError, connect
from driftline.store.owner import (
    CLICKHOUSE_FORMATS,
    PARAMS_ARG,
    Owner,
    check_read_only,
    execute_read_only,
    owner_path,
    read_owner,
)


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


def _ask_owner(settings: Settings, owner: Owner, sql: str, fmt: str, parameters: Mapping[str, Any] | None,
               timeout: float) -> str:
    # Parameters travel typed, as JSON, so the owner binds exactly what a direct client would.
    # The owner is a worker with the same settings: same token, same certificate.
    query = {"format": fmt}
    if parameters:
        query[PARAMS_ARG] = orjson.dumps(dict(parameters)).decode()
    request = urllib.request.Request(
        f"{owner.query_url}?{urlencode(query)}",
        data=sql.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        method="POST",
    )
    try:
        with open_worker(settings, request, timeout) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as err:
        if err.code == 400:
            raise QueryError(err.read().decode(errors="replace").strip()) from None
        if err.code == 401:
            given = "a wrong token" if settings.worker.auth_tokens else "no token"
            raise StoreError(
                f"the ClickHouse owner (pid {owner.pid}) at {owner.query_url} requires a bearer token and "
                f"this process sent {given}: set DRIFTLINE_WORKER_AUTH_TOKENS as for the worker"
            ) from None
        detail = f"answered HTTP {err.code} at {owner.query_url}"
        raise StoreError(f"the ClickHouse owner (pid {owner.pid}) {detail}") from None
    except (urllib.error.URLError, TimeoutError) as err:
        raise StoreError(
            f"the ClickHouse owner (pid {owner.pid}) does not answer at {owner.query_url}: {err}"
        ) from None
