"""The worker's ``POST /query``: read-only SQL in driftline's formats (json, csv, tsv).

BI tools use the ClickHouse HTTP interface at ``/`` instead (streams/clickhouse_http.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftline.store.guard import QueryLimits, QueryRejected, check_read_only
from driftline.store.readonly import CLICKHOUSE_FORMATS, CONTENT_TYPES, PARAMS_ARG, ReadOnlyRunner

QueryHandler = Callable[[web.Request], Awaitable[web.Response]]


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
    runner = ReadOnlyRunner(client_factory, lock, limits)

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
