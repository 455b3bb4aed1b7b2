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

import logging
from typing import Any

import faust
from aiohttp.web import BaseSite, TCPSite
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web

from driftline.client.http import worker_url
from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.http_ingest import add_ingest_routes
from driftline.streams.http_security import secure_app
from driftline.streams.metrics import render
from driftline.streams.worker import WorkerRuntime

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds the charset itself


class WorkerWeb(Web):
    """Faust's aiohttp server, bound to ``bind_port`` (0 too: any free port, which Faust's own
    ``web_port`` setting refuses) and keeping the addresses it listens on once started."""

    bind_port = 0
    addresses: tuple[Any, ...] = ()
    # Its service lines ("Starting...") stay Faust's, quiet below WARNING as Web's were (a logger
    # mode has not claimed: it would replace one named after a Service class's module).
    logger = logging.getLogger("faust.web.drivers.aiohttp.worker")

    def _new_transport_tcp(self) -> BaseSite:
        conf = self.app.conf
        return TCPSite(self._runner, conf.web_bind, self.bind_port, ssl_context=conf.web_ssl_context)

    async def start_server(self) -> None:
        await super().start_server()
        self.addresses = tuple(self._runner.addresses)  # (host, port, ...) per bound socket


def announce(web: WorkerWeb, runtime: WorkerRuntime) -> int:
    """Log where the web endpoints listen, once bound (with port 0 only then known); returns the
    port."""
    listening = ", ".join(f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}" for a in web.addresses)
    port = int(web.addresses[0][1])
    paths = ["/metrics", "/healthz", "/predictions", "/feedback"]
    if runtime.query_handler is not None:
        paths.insert(2, "/query")
    if runtime.clickhouse_reader is not None:
        paths.append("/ (ClickHouse HTTP)")
    base = worker_url(runtime.settings, "", port=port)
    log.info("web server listening on %s: %s%s", listening, base, ", ".join(paths))
    return port


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
