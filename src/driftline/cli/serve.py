"""`driftline serve`: a standalone HTTP server for ingest (POST /predictions, POST /feedback) and,
with ``--clickhouse-http``, read access to the embedded ClickHouse for BI tools.

``--clickhouse-http`` opens the embedded engine read-only and serves ClickHouse's HTTP interface
at ``/`` plus ``POST /query`` (streams/clickhouse_http.py), recording itself as the engine owner
so that ``driftline query`` reads through it. It is for when no worker runs (a worker owns the
engine and serves the same interface itself; chDB lets one process open the directory).

Authentication and TLS are the worker's (``DRIFTLINE_WORKER_AUTH_TOKENS``,
``DRIFTLINE_WORKER_TLS_CERTFILE``/``_KEYFILE``); ``GET /healthz`` and ``GET /ping`` answer
without a token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import threading
from typing import Any

from aiohttp import web

from driftline.cli.common import port_taken, settings_from_args
from driftline.client.http import worker_url
from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.store.client import StoreError, connect
from driftline.store.embedded_reader import EmbeddedReader
from driftline.store.guard import QueryLimits
from driftline.store.owner import claim_owner, release_owner
from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.http_ingest import DEFAULT_MAX_BODY_BYTES, add_ingest_routes
from driftline.streams.http_security import secure_app, server_ssl_context, serving_problem
from driftline.streams.query_endpoint import make_query_handler


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP server: ingest to Kafka, and/or ClickHouse's HTTP interface for BI tools",
        description="Accept prediction and label events over HTTP (one JSON event or an array) and "
                    "produce them to Kafka keyed by prediction_id. With --clickhouse-http also serve "
                    "the embedded ClickHouse read-only over ClickHouse's HTTP interface at / (Grafana, "
                    "Superset, Metabase, clickhouse-connect) and POST /query. API: infra/openapi.yaml. "
                    "Requests need a token when DRIFTLINE_WORKER_AUTH_TOKENS is set; HTTPS with "
                    "DRIFTLINE_WORKER_TLS_CERTFILE and DRIFTLINE_WORKER_TLS_KEYFILE.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="larger request bodies get 413 (default 16 MiB)")
    p.add_argument("--clickhouse-http", action="store_true",
                   help="serve the embedded ClickHouse read-only at / (ClickHouse HTTP interface) and "
                        "POST /query; fails while a worker owns the engine (it serves them itself)")
    p.add_argument("--no-ingest", action="store_true",
                   help="do not serve /predictions and /feedback (no Kafka needed; with --clickhouse-http)")
    p.add_argument("--insecure", action="store_true",
                   help="serve on a non-loopback address without DRIFTLINE_WORKER_AUTH_TOKENS "
                        "(anyone who reaches the port can write events; also DRIFTLINE_WORKER_INSECURE)")
    p.set_defaults(handler=handle)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app(args: argparse.Namespace, settings: Settings) -> web.Application:
    app = web.Application()
    secure_app(app, settings.worker)
    app.router.add_get("/healthz", _healthz)
    if not args.no_ingest:
        add_ingest_routes(app, settings, max_body_bytes=args.max_body_bytes)
    if args.clickhouse_http:
        _add_clickhouse(app, args, settings)
    return app


def _add_clickhouse(app: web.Application, args: argparse.Namespace, settings: Settings) -> None:
    limits = QueryLimits.from_settings(settings)
    lock = threading.Lock()  # one engine call at a time, as in the worker
    app.router.add_post("/query", make_query_handler(
        lambda: connect(settings, readonly=True, limits=limits.clickhouse_settings()), lock, limits))
    add_clickhouse_interface(app, EmbeddedReader(settings, lock, limits))

    async def release(_: web.Application) -> None:
        release_owner(settings.home)

    app.on_cleanup.append(release)


def _engine_problem(settings: Settings) -> str | None:
    """Why the embedded engine cannot be served read-only from here (one line), or None."""
    if not settings.clickhouse.embedded:
        return ("--clickhouse-http serves the embedded engine; with a ClickHouse server "
                f"({settings.clickhouse_url()}) point BI tools at the server itself")
    try:
        connect(settings, readonly=True).close()  # EngineBusy while a worker owns it; no database yet
    except StoreError as err:
        return str(err)
    return None


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.insecure:
        worker = settings.worker.model_copy(update={"insecure": True})
        settings = settings.model_copy(update={"worker": worker})
    if args.no_ingest and not args.clickhouse_http:
        print("driftline: --no-ingest leaves nothing to serve without --clickhouse-http", file=sys.stderr)
        return 2
    problem = serving_problem(args.host, settings.worker)
    if problem is None and args.clickhouse_http:
        problem = _engine_problem(settings)
    if problem:
        print(f"driftline: {problem}", file=sys.stderr)
        return 2
    taken = port_taken(args.host, args.port, "--port PORT")
    if taken:
        print(f"driftline serve: {taken}", file=sys.stderr)
        return 1
    if not args.no_ingest:
        ensure_topics(settings)  # co-partitioned predictions/labels before anything is produced
    app = build_app(args, settings)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):  # SIGTERM, SIGINT: a clean stop
        asyncio.run(_serve(app, args, settings, server_ssl_context(settings.worker)))
    return 0


async def _serve(app: web.Application, args: argparse.Namespace, settings: Settings,
                 ssl_context: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM. Unlike ``web.run_app`` it records the engine owner and says
    where it listens once bound: with ``--port 0`` only then is the port known (run_app's banner
    and an owner record written at startup said port 0, so `driftline query` found nothing)."""
    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port, ssl_context=ssl_context).start()
        port = int(runner.addresses[0][1])
        if args.clickhouse_http:
            claim_owner(settings.home, worker_url(settings, "/query", host=args.host, port=port))
        paths = ["/healthz", *([] if args.no_ingest else ["/predictions", "/feedback"]),
                 *(["/query", "/ (ClickHouse HTTP)"] if args.clickhouse_http else [])]
        print(f"driftline serve: listening on {args.host}:{port}: "
              f"{worker_url(settings, '', host=args.host, port=port)}{', '.join(paths)} (Ctrl+C to stop)",
              flush=True)
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()
