"""`driftline serve`: a standalone HTTP ingest server (POST /predictions, POST /feedback).

Authentication and TLS are the worker's (``DRIFTLINE_WORKER_AUTH_TOKENS``,
``DRIFTLINE_WORKER_TLS_CERTFILE``/``_KEYFILE``); ``GET /healthz`` answers without a token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aiohttp import web

from driftline.cli.common import settings_from_args
from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.streams.http_ingest import DEFAULT_MAX_BODY_BYTES, add_ingest_routes
from driftline.streams.http_security import secure_app, server_ssl_context, serving_problem


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP ingest server: POST /predictions and /feedback to Kafka",
        description="Accept prediction and label events over HTTP (one JSON event or an array) and "
                    "produce them to Kafka keyed by prediction_id. API: infra/openapi.yaml. Requests "
                    "need a bearer token when DRIFTLINE_WORKER_AUTH_TOKENS is set; HTTPS with "
                    "DRIFTLINE_WORKER_TLS_CERTFILE and DRIFTLINE_WORKER_TLS_KEYFILE.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="larger request bodies get 413 (default 16 MiB)")
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
    add_ingest_routes(app, settings, max_body_bytes=args.max_body_bytes)
    return app


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.insecure:
        worker = settings.worker.model_copy(update={"insecure": True})
        settings = settings.model_copy(update={"worker": worker})
    problem = serving_problem(args.host, settings.worker)
    if problem:
        print(f"driftline: {problem}", file=sys.stderr)
        return 2
    ensure_topics(settings)  # co-partitioned predictions/labels before anything is produced
    app = build_app(args, settings)
    web.run_app(app, host=args.host, port=args.port, ssl_context=server_ssl_context(settings.worker),
                print=lambda msg: print(f"driftline serve: {msg}"))
    return 0
