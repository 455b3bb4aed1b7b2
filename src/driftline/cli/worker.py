"""`driftline worker`: run the pipeline stages, the ClickHouse sink and the web endpoints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from driftline.cli.common import port_taken, settings_from_args
from driftline.store.client import StoreError

ROLE_HELP = ("all = stage 1 + stage 2 + sink (default); processor = the two stages only; sink = the "
             "ClickHouse writer only. With the embedded ClickHouse only one process may run the sink.")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker", help="run the streaming pipeline (stages, ClickHouse sink, /metrics, /query and / for "
                       "BI tools, ingest)",
        description="Consume predictions and labels, compute drift and performance, write ClickHouse. "
                    "Serves GET /metrics, GET /healthz, POST /predictions and POST /feedback; sink roles "
                    "also POST /query and, with the embedded ClickHouse, ClickHouse's HTTP interface at / "
                    "(read-only, for Grafana, Superset, Metabase, clickhouse-connect). API: "
                    "infra/openapi.yaml. SIGTERM/SIGINT stop it gracefully (final checkpoints, exit 0).",
    )
    p.add_argument("--role", choices=("all", "processor", "sink"), default="all", help=ROLE_HELP)
    p.add_argument("--web-host", default=None, help="interface of the web server (default worker.web_host)")
    p.add_argument("--web-port", type=int, default=None,
                   help="port of the web server (default worker.web_port; 0: any free port, logged)")
    p.add_argument("--run-seconds", type=float, default=None, metavar="SECONDS",
                   help="stop gracefully after this many seconds (tests, demos)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="stop gracefully once nothing new was consumed for SECONDS and no lag remains")
    p.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"),
                   help="driftline's own log lines from this level on (default info); Kafka, Faust "
                        "and aiohttp lines from WARNING on, or everything with debug")
    p.add_argument("--insecure", action="store_true",
                   help="serve on a non-loopback address without DRIFTLINE_WORKER_AUTH_TOKENS "
                        "(anyone who reaches the port can read and write; also DRIFTLINE_WORKER_INSECURE)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from driftline.pipeline.state import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: each would keep a heap of its own (issue 19)
    from driftline.streams.app import run_worker
    from driftline.streams.http_security import serving_problem
    from driftline.streams.worker import WorkerRuntime

    settings = settings_from_args(args)
    given = (("web_host", args.web_host), ("web_port", args.web_port))
    worker_updates: dict[str, object] = {k: v for k, v in given if v is not None}
    if args.insecure:
        worker_updates["insecure"] = True
    if worker_updates:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=worker_updates)})
    problem = serving_problem(settings.worker.web_host, settings.worker)
    if problem:
        print(f"driftline: {problem}", file=sys.stderr)
        return 2
    taken = port_taken(settings.worker.web_host, settings.worker.web_port,
                       "--web-port PORT (or DRIFTLINE_WORKER_WEB_PORT)")
    if taken:
        print(f"driftline worker: {taken}", file=sys.stderr)
        return 1
    try:
        return run_worker(WorkerRuntime(settings, role=args.role), run_seconds=args.run_seconds,
                          exit_when_idle=args.exit_when_idle, loglevel=args.loglevel)
    except StoreError as err:
        print(f"driftline: {err}", file=sys.stderr)
        return 1
