"""What the worker's ClickHouse HTTP interface costs a client, beside reading chDB in-process.

Opens the embedded engine on a temp dir, serves the interface (streams/clickhouse_http.py over
store/embedded_reader.py, with bearer tokens as the worker has them) on a loopback port from a
thread, and measures with clickhouse-connect as a BI client uses it:

- round trip of a one-row query (``SELECT 1``), p50/p99, through the interface and in-process;
- a large result read as Arrow (``--rows`` rows of a UInt64 and a String column), rows/s,
  through the interface with clickhouse-connect's default compression (lz4), without it, and
  in-process.

    .venv/bin/python bench/bench_clickhouse_http.py [--rows 1000000] [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0] already
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import clickhouse_connect
from aiohttp import web
from common import Figure, environment, environment_line, percentile, print_figures

from driftline.config import Settings
from driftline.local.broker import free_port
from driftline.store.client import connect
from driftline.store.embedded_reader import EmbeddedReader
from driftline.store.migrate import migrate
from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.http_security import secure_app

TOKEN = "bench-token-0123456789abcdef"


def serve(settings: Settings, port: int) -> Callable[[], None]:
    """Serve the interface from a thread; returns the function that stops it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    app = web.Application()
    secure_app(app, settings.worker)
    add_clickhouse_interface(app, EmbeddedReader(settings))
    runner = web.AppRunner(app)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return stop


def round_trips(query: Callable[[], Any], n: int) -> list[float]:
    query()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        query()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def rows_per_s(read: Callable[[], Any], rows: int, repeat: int = 3) -> float:
    best = min(_timed(read) for _ in range(repeat))
    return rows / best


def _timed(read: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    read()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the large result")
    parser.add_argument("--n", type=int, default=300, help="round trips of the one-row query")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="driftline-bench-chhttp-"))
    try:
        settings = Settings(home=home, clickhouse={"url": f"chdb://{home / 'chdb'}"},
                            worker={"auth_tokens": [TOKEN], "query_max_result_rows": args.rows + 1})
        direct = connect(settings)
        migrate(direct, settings)
        port = free_port()
        stop = serve(settings, port)
        try:
            login = {"host": "127.0.0.1", "port": port, "username": "bench", "password": TOKEN}
            remote = clickhouse_connect.get_client(**login)
            plain = clickhouse_connect.get_client(**login, compress=False)
            big = f"SELECT number AS n, toString(number) AS s FROM numbers({args.rows})"
            via = round_trips(lambda: remote.command("SELECT 1"), args.n)
            local = round_trips(lambda: direct.command("SELECT 1"), args.n)
            figures = [
                Figure("chhttp_select1_p50_ms", "SELECT 1 through the interface, p50", percentile(via, 50),
                       "ms", detail=f"p99 {percentile(via, 99):.2f} ms, n={args.n}"),
                Figure("chhttp_select1_inprocess_p50_ms", "SELECT 1 in-process chDB, p50",
                       percentile(local, 50), "ms", detail=f"p99 {percentile(local, 99):.2f} ms"),
                Figure("chhttp_arrow_lz4_rows_s", f"query_arrow {args.rows:,} rows, lz4 (client default)",
                       rows_per_s(lambda: remote.query_arrow(big), args.rows), "rows/s"),
                Figure("chhttp_arrow_plain_rows_s", f"query_arrow {args.rows:,} rows, uncompressed",
                       rows_per_s(lambda: plain.query_arrow(big), args.rows), "rows/s"),
                Figure("chhttp_arrow_inprocess_rows_s", f"query_arrow {args.rows:,} rows, in-process chDB",
                       rows_per_s(lambda: direct.query_arrow(big), args.rows), "rows/s"),
            ]
            remote.close()
            plain.close()
        finally:
            stop()
            direct.close()
        print_figures(figures, "ClickHouse HTTP interface (loopback, one client):")
        print(environment_line(environment()))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
