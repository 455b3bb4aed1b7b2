"""Window close -> its model_drift row visible in ClickHouse (through the worker's /query endpoint).

A worker (one process, all roles, embedded ClickHouse) runs with 60 s tumbling windows and no
allowed lateness. For each window w the bench produces its body (400 predictions, 20 numeric +
5 categorical features, event times inside w, spread over all partitions) and waits until the
worker has consumed it; then it produces one *closing* record per partition stamped with the start
of window w+1 (which moves every partition's watermark to the end of w). The clock starts when the
broker has acknowledged all closing records and stops when ``SELECT ... FROM model_drift`` through
``POST /query`` first returns w's row (polled every 20 ms). Window 0 becomes the reference profile
and is not timed. Target: p99 <= 2 s.

    .venv/bin/python bench/bench_window_latency.py [--windows 25] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from common import (
    N_CATEGORICAL,
    N_NUMERIC,
    START_MS,
    Figure,
    WorkerProcess,
    at_most,
    bench_settings,
    keys_per_partition,
    percentile,
    print_figures,
)

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer
from driftline.local.broker import running_broker
from driftline.schemas.events import SCHEMA_VERSION

WINDOW_S = 60
BODY = 400
MODEL = "latency-bench"
POLL_S = 0.02
TARGET_S = 2.0


def _event(pid: str, ts: int, rng: random.Random) -> bytes:
    features: dict[str, Any] = {f"x{j}": round(rng.gauss(10.0 * j, 1.0 + j), 4) for j in range(N_NUMERIC)}
    features.update({f"c{k}": rng.choice("abcd") for k in range(N_CATEGORICAL)})
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "prediction_id": pid, "model_id": MODEL, "model_version": "1",
        "timestamp": ts, "features": features,
        "prediction": {"label": rng.choice(("yes", "no")), "score": round(rng.random(), 4)},
        "latency_ms": round(rng.uniform(5, 20), 2),
    })


async def _send(producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    futures = [await producer.send(topic, value, key=key, timestamp_ms=ts) for key, value, ts in records]
    await asyncio.gather(*futures)


def _row_visible(worker: WorkerProcess, start_ms: int) -> bool:
    sql = (f"SELECT count() AS n FROM model_drift WHERE model_id = '{MODEL}' "
           f"AND window_size_s = {WINDOW_S} AND toUnixTimestamp64Milli(window_start) = {start_ms}")
    return int(worker.query(sql)[0]["n"]) > 0


async def _run(settings: Settings, worker: WorkerProcess, windows: int) -> list[float]:
    topic = settings.topics.predictions
    rng = random.Random(3)
    size_ms = WINDOW_S * 1000
    latencies: list[float] = []
    sent = 0
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        for w in range(windows + 2):  # window 0 (the reference) and `windows` timed ones
            start = START_MS + w * size_ms
            if w > 0:  # close window w-1: every partition's watermark moves to `start`
                closers = keys_per_partition(settings.topics.partitions, f"close-{w}")
                closing = [(key, _event(key.decode(), start, rng), start) for key in closers]
                await _send(producer, topic, closing)
                acked = time.perf_counter()
                sent += len(closers)
                if w == 1:  # window 0 becomes the reference profile; not timed
                    await asyncio.sleep(0.5)
                else:
                    deadline = acked + 30.0
                    while not _row_visible(worker, start - size_ms):
                        worker.check_alive()
                        if time.perf_counter() > deadline:
                            raise TimeoutError(f"window {w - 1} row not visible after 30s\n"
                                               f"{worker.log_tail()}")
                        await asyncio.sleep(POLL_S)
                    latencies.append(time.perf_counter() - acked)
            if w == windows + 1:
                break
            body = []
            for i in range(BODY):  # strictly inside the window, after the closing records' time
                ts = start + 1 + (i * (size_ms - 2)) // BODY
                pid = f"w{w}-{i}"
                body.append((pid.encode(), _event(pid, ts, rng), ts))
            await _send(producer, topic, body)
            sent += len(body)
            deadline = time.perf_counter() + 30.0
            while worker.events_in(topic) < sent:  # the body is consumed before the close is timed
                worker.check_alive()
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"worker did not consume window {w} within 30s\n{worker.log_tail()}")
                await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return latencies


def latency_settings(bootstrap: str, home: Path) -> Settings:
    return bench_settings(
        bootstrap, "bw", home,
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 0, "metrics_interval_s": WINDOW_S},
        drift={"min_count": 100},
    )


def measure(bootstrap: str, home: Path, windows: int) -> list[Figure]:
    settings = latency_settings(bootstrap, home)
    ensure_topics(settings)
    with WorkerProcess(settings) as worker:
        worker.wait_until(worker.healthy, 90, "worker /healthz")
        startup = time.perf_counter() - worker.started_at
        latencies = asyncio.run(_run(settings, worker, windows))
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    detail = (f"{len(latencies)} windows of {WINDOW_S}s ({BODY} events each), max "
              f"{max(latencies, default=0):.3f}s; worker ready after {startup:.1f}s")
    return [
        Figure("window_row_p50_s", "(6) window close -> model_drift row visible, p50", p50, "s",
               detail=detail, extra={"latencies_s": latencies}),
        Figure("window_row_p99_s", "(6) window close -> model_drift row visible, p99", p99, "s",
               f"<= {TARGET_S:g}", at_most(p99, TARGET_S), detail),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--windows", type=int, default=25, help="windows timed (plus the reference window)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows = min(args.windows, 3)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, running_broker() as broker:
        figures = measure(broker.bootstrap_servers, Path(tmp) / "home", args.windows)
    print_figures(figures, "window close latency")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
