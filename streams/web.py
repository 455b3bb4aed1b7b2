"""The worker's HTTP endpoints on Faust's web server.

``GET /metrics`` (Prometheus text) and ``GET /healthz`` are Faust pages; ``POST /query`` (the
store's read-only query handler, sink roles only) and ``POST /predictions`` / ``POST /feedback``
(HTTP ingest) are aiohttp handlers mounted on the aiohttp application Faust serves.

With the embedded engine, the sink roles also answer ClickHouse's HTTP interface at ``/`` (and
``/ping``, ``/replicas_status``) of this same port, where BI tools expect a ClickHouse server's
root: see clickhouse_http. It takes ``/`` over from Faust's index page (``{"status": "OK"}``,
which ``/healthz`` supersedes); a separate port would be one more thing to open and secure.

With ``worker.auth_tokens`` every path of that application (Faust's own pages too) needs a
token except ``/healthz``, ``/ping`` and ``/replicas_status`` (and ``/metrics`` with
``worker.metrics_open``): see http_security.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.http_ingest import add_ingest_routes
from driftline.streams.http_security import secure_app
from driftline.streams.metrics import render
from driftline.streams.worker import WorkerRuntime

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds the charset itself


def install_routes(app: faust.App, runtime: WorkerRuntime) -> None:
    """Register every endpoint (before the app starts: aiohttp freezes its router on start)."""

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(render(runtime.runners, runtime.sink), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        health = runtime.health()
        return self.json(health, status=200 if health["ok"] else 503)

    web_app: Any = app.web.web_app  # type: ignore[attr-defined]  # the aiohttp driver's Application
    secure_app(web_app, runtime.settings.worker)
    if runtime.query_handler is not None:
        web_app.router.add_post("/query", runtime.query_handler)
    if runtime.clickhouse_reader is not None:
        add_clickhouse_interface(web_app, runtime.clickhouse_reader)
    add_ingest_routes(web_app, runtime.settings, producer_factory=runtime.producer)
