"""ClickHouse's HTTP interface, read-only, on the process that owns the embedded engine.

BI tools (Grafana's ClickHouse data source, Superset, Metabase, clickhouse-connect) speak this
protocol to a host and port; the worker answers it at ``/`` of its web port (next to
``/metrics`` and ``/query``), ``driftline serve --clickhouse-http`` on its own. What it serves:

- ``GET|POST /?query=…`` and/or the SQL in the POST body (concatenated, as ClickHouse does);
  ``FORMAT`` in the SQL, else ``default_format`` or ``X-ClickHouse-Format`` (TabSeparated);
  ``database`` or ``X-ClickHouse-Database``; ``param_<name>`` values for ``{name:Type}``.
- Other query-string parameters are settings, applied as for a ClickHouse ``readonly=1`` user:
  the current value is accepted, a change is refused (Code 164). The HTTP-only ones
  (``TRANSPORT_PARAMS``: sessions, progress headers, ``wait_end_of_query``…) are accepted and
  have no effect: the result is always computed in full, in memory (bounded by the row limit),
  before it is sent.
- Responses compressed with gzip, deflate, zstd or lz4, the first of these the client lists in
  ``Accept-Encoding`` (unless it sends ``enable_http_compression=0``). A ClickHouse server
  also wants ``enable_http_compression=1``, a setting a readonly user cannot send, so clients
  of a readonly server (clickhouse-connect checks) would never get compression; HTTP lets a
  server use any encoding the client accepts. ClickHouse's own block compression
  (``compress=1``/``decompress=1``) is refused with UNSUPPORTED_METHOD.
- Errors as ClickHouse sends them: body ``Code: N. DB::Exception: …``, header
  ``X-ClickHouse-Exception-Code`` and the HTTP status of ClickHouse's exceptionCodeToHTTPStatus.
- ``GET /ping`` and ``GET /replicas_status``: ``Ok.``.

Statements pass the same guard as ``/query`` and run on a ``readonly=1`` chDB session within
the same ``QueryLimits``. Credentials (http_security): the token as the password of basic auth,
``X-ClickHouse-Key`` or a bearer token; the user name is not checked.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from driftline.store.embedded_reader import EmbeddedReader, EngineError, ReadResult
from driftline.store.guard import QueryRejected, check_read_only, output_format

QUERY_PATH = "/"
STATUS_PATHS = frozenset({"/ping", "/replicas_status"})
OK_BODY = "Ok.\n"
DEFAULT_FORMAT = "TabSeparated"
SERVER_NAME = "driftline"

# Query-string parameters that are part of the HTTP protocol, not settings for the engine.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query", "buffer_size",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close", "add_http_cors_header",
    "http_response_buffer_size", "client_protocol_version",
})
PARAM_PREFIX = "param_"

# Error codes and names this module raises itself (the engine names its own).
ERROR_NAMES = {1: "UNSUPPORTED_METHOD", 62: "SYNTAX_ERROR", 164: "READONLY",
               194: "REQUIRED_PASSWORD", 516: "AUTHENTICATION_FAILED"}
UNSUPPORTED_METHOD, REQUIRED_PASSWORD, AUTHENTICATION_FAILED = 1, 194, 516

# ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error code; others are 500.
_HTTP_STATUS: dict[int, int] = {
    194: 401,
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8,
                     167, 168, 223, 62, 117, 53, 321), 400),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413, 48: 501, 209: 503, 76: 503, 381: 411, 159: 408, 439: 503, 779: 415,
}


def http_status(code: int) -> int:
    """The HTTP status ClickHouse answers an error code with.

    >>> http_status(62), http_status(60), http_status(516), http_status(164), http_status(159)
    (400, 404, 403, 500, 408)
    """
    return _HTTP_STATUS.get(code, 500)


def exception_response(code: int, message: str, *,
                       headers: dict[str, str] | None = None) -> web.Response:
    """An error as ClickHouse's HTTP interface sends it. ``message`` is either the engine's own
    ``Code: N. DB::Exception: …`` line or a description to which code and name are added."""
    if not message.startswith("Code: "):
        message = f"Code: {code}. DB::Exception: {message}. ({ERROR_NAMES.get(code, 'UNKNOWN_EXCEPTION')})"
    all_headers = {"X-ClickHouse-Exception-Code": str(code), "X-ClickHouse-Server-Display-Name": SERVER_NAME}
    all_headers.update(headers or {})
    return web.Response(status=http_status(code), text=message.rstrip("\n") + "\n",
                        content_type="text/plain", headers=all_headers)


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for an output format.

    >>> content_type("JSONCompact"), content_type("Native")
    ('application/json; charset=UTF-8', 'application/octet-stream')
    >>> content_type("TSVWithNames")
    'text/tab-separated-values; charset=UTF-8'
    """
    name = fmt.lower()
    if name.startswith("json") and "eachrow" not in name and "lines" not in name:
        return "application/json; charset=UTF-8"
    if name.startswith("json"):
        return "application/x-ndjson; charset=UTF-8"
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent" if name == "csv" else "text/csv; charset=UTF-8"
    if name.startswith(("pretty", "vertical", "markdown", "values", "xml")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def _zstd_compress(data: bytes) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
    except ImportError:
        from backports import zstd  # installed with clickhouse-connect on older Pythons
    return bytes(zstd.compress(data, level=ZSTD_LEVEL))


def _lz4_compress(data: bytes) -> bytes:
    import lz4.frame  # type: ignore[import-untyped]  # a dependency of clickhouse-connect

    return bytes(lz4.frame.compress(data))


def _gzip_compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=ZLIB_LEVEL)


def _deflate_compress(data: bytes) -> bytes:
    return zlib.compress(data, ZLIB_LEVEL)  # HTTP "deflate" is the zlib format


# Fast levels, as ClickHouse's http_zlib_compression_level (3): the server's CPU is the worker's.
ZLIB_LEVEL = 3
ZSTD_LEVEL = 1
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gzip_compress,
    "deflate": _deflate_compress,
    "zstd": _zstd_compress,
    "lz4": _lz4_compress,
}


def choose_encoding(accept_encoding: str) -> str | None:
    """The first encoding in the client's Accept-Encoding that this server writes, if any.

    >>> choose_encoding("br, zstd;q=0.9, gzip"), choose_encoding("identity"), choose_encoding("")
    ('zstd', None, None)
    """
    for item in accept_encoding.split(","):
        name, _, quality = item.strip().partition(";")
        if name.strip().lower() in ENCODERS and quality.strip().replace(" ", "") not in ("q=0", "q=0.0"):
            return name.strip().lower()
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")


class ClickHouseInterface:
    """The request handler of the interface, over one ``EmbeddedReader``."""

    def __init__(self, reader: EmbeddedReader) -> None:
        self.reader = reader

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status_only = request.method in ("GET", "HEAD") and not request.query.get("query")
        if request.path in STATUS_PATHS or status_only:
            return web.Response(text=OK_BODY, content_type="text/plain")
        if request.method not in ("GET", "POST"):
            return exception_response(UNSUPPORTED_METHOD, f"HTTP method {request.method} is not served")
        query = request.query
        if _truthy(query.get("compress")) or _truthy(query.get("decompress")):
            return exception_response(
                UNSUPPORTED_METHOD, "ClickHouse block compression (compress=1, decompress=1) is not served; "
                "use HTTP compression (Accept-Encoding: gzip, deflate, zstd or lz4)")
        body = (await request.read()).decode() if request.method == "POST" else ""
        sql = query.get("query", "") + body
        query_id = query.get("query_id") or str(uuid.uuid4())
        try:
            statement = check_read_only(sql)
        except QueryRejected as err:
            return exception_response(err.code, f"driftline serves read-only queries: {err}")
        default_format = (query.get("default_format") or request.headers.get("X-ClickHouse-Format")
                          or DEFAULT_FORMAT)
        fmt = output_format(statement) or default_format
        database = query.get("database") or request.headers.get("X-ClickHouse-Database") or None
        params = {k[len(PARAM_PREFIX):]: v for k, v in query.items() if k.startswith(PARAM_PREFIX)}
        settings = {k: v for k, v in query.items()
                    if k not in TRANSPORT_PARAMS and not k.startswith(PARAM_PREFIX)}
        try:
            result = await asyncio.to_thread(self.reader.run, statement, default_format=default_format,
                                             database=database, params=params, settings=settings)
        except EngineError as err:
            return exception_response(err.code, str(err), headers={"X-ClickHouse-Query-Id": query_id})
        return await self._respond(request, result, fmt, query_id)

    async def _respond(self, request: web.Request, result: ReadResult, fmt: str,
                       query_id: str) -> web.Response:
        summary = {"read_rows": str(result.read_rows), "read_bytes": str(result.read_bytes),
                   "written_rows": "0", "written_bytes": "0",
                   "total_rows_to_read": str(result.read_rows), "result_bytes": str(len(result.body)),
                   "elapsed_ns": str(int(result.elapsed_s * 1e9))}
        headers = {
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.reader.timezone,
            "X-ClickHouse-Server-Display-Name": SERVER_NAME,
            "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
            "Content-Type": content_type(fmt),
        }
        body = result.body
        encoding = (None if request.query.get("enable_http_compression", "").strip() in ("0", "false")
                    else choose_encoding(request.headers.get("Accept-Encoding", "")))
        if encoding is not None:
            body = await asyncio.to_thread(ENCODERS[encoding], body)  # off the worker's event loop
            headers["Content-Encoding"] = encoding
        return web.Response(body=body, headers=headers)


def is_clickhouse_request(request: web.Request) -> bool:
    """Whether a request is for the interface (its paths are ClickHouse's, fixed by its clients)."""
    return request.path == QUERY_PATH or request.path in STATUS_PATHS


def clickhouse_middleware(interface: ClickHouseInterface) -> Middleware:
    """Serve the interface's paths ahead of the router: Faust serves its own index at ``/``."""

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_clickhouse_request(request):
            return await interface.handle(request)
        return await handler(request)

    return serve


def add_clickhouse_interface(app: web.Application, reader: EmbeddedReader) -> ClickHouseInterface:
    """Mount the interface on ``app`` (before it starts; after ``secure_app``, which stays first)."""
    interface = ClickHouseInterface(reader)
    app.middlewares.append(clickhouse_middleware(interface))

    async def close_reader(_: Any) -> None:
        await asyncio.to_thread(reader.close)

    app.on_cleanup.append(close_reader)
    return interface
