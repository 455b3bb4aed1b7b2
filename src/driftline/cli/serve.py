"""`driftline serve`: a standalone HTTP ingest server (POST /predictions, POST /feedback)."""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from driftline.cli.common import settings_from_args
from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.streams.http_ingest import DEFAULT_MAX_BODY_BYTES, add_ingest_routes


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP ingest server: POST /predictions and /feedback to Kafka",
        description="Accept prediction and label events over HTTP (one JSON event or an array) and "
                    "produce them to Kafka keyed by prediction_id. API: infra/openapi.yaml.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="larger request bodies get 413 (default 16 MiB)")
    p.set_defaults(handler=handle)


def build_app(args: argparse.Namespace, settings: Settings) -> web.Application:
    app = web.Application()
    add_ingest_routes(app, settings, max_body_bytes=args.max_body_bytes)
    return app


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ensure_topics(settings)  # co-partitioned predictions/labels before anything is produced
    app = build_app(args, settings)
    web.run_app(app, host=args.host, port=args.port, print=lambda msg: print(f"driftline serve: {msg}"))
    return 0
