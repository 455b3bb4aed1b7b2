"""What the broker and the plain clients allow on the same prediction messages the worker reads.

(2) Raw consume + decode: one aiokafka consumer (no group, all partitions assigned) reading the
    predictions topic with ``getmany`` (5000 records per call) and decoding every value with
    ``PredictionEvent.model_validate_json``. Clock from the first ``getmany`` to the N-th record.
(3) A trivial Faust counting agent (faust.App, one agent on the predictions topic, raw bytes,
    counts and stops at N), in its own process. Clock from its first event to its N-th event
    (startup and the group join excluded). The per-event baseline the worker must beat.

Run alone it starts a broker and produces N simulated predictions first:

    .venv/bin/python bench/bench_broker.py [--n 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from common import Figure, bench_settings, print_figures

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer
from driftline.local.broker import free_port, running_broker
from driftline.schemas.events import PredictionEvent

BATCH = 5000


async def _raw_consume(settings: Settings, n: int, timeout_s: float) -> tuple[int, float, int]:
    """(records read, seconds, invalid) for ``n`` records of the predictions topic, decoded."""
    topic = settings.topics.predictions
    consumer = aiokafka_consumer(settings, None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = invalid = 0
        validate = PredictionEvent.model_validate_json
        started = time.perf_counter()
        deadline = started + timeout_s
        while count < n and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            for records in batch.values():
                for record in records:
                    try:
                        validate(record.value)
                    except ValueError:
                        invalid += 1
                count += sum(len(r) for r in batch.values())
        return count, time.perf_counter() - started, invalid
    finally:
        await consumer.stop()


def measure_raw(settings: Settings, n: int, timeout_s: float = 120.0) -> Figure:
    count, seconds, invalid = asyncio.run(_raw_consume(settings, n, timeout_s))
    rate = count / seconds if seconds > 0 and count >= n else None
    return Figure("raw_consume_decode_per_s", "(2) raw aiokafka getmany + PredictionEvent decode", rate,
                  "pred events/s", detail=f"{count:,} records in {seconds:.2f}s, {invalid} invalid; "
                                          f"1 consumer, no group, max_records={BATCH}",
                  extra={"seconds": seconds, "records": count})


# -- (3) the Faust baseline, run in a child process --------------------------------------------------


def _faust_child(bootstrap: str, topic: str, n: int, result: Path, datadir: Path) -> None:
    import faust

    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_port=free_port(),
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        broker_session_timeout=3,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=3,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = {"count": 0, "first": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for _ in stream:
            state["count"] += 1
            if state["count"] == 1:
                state["first"] = time.perf_counter()
            if state["count"] == n:
                last = time.perf_counter()
                result.write_text(json.dumps({"count": n, "seconds": last - state["first"]}))
                os.kill(os.getpid(), signal.SIGTERM)

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def measure_faust(settings: Settings, n: int, timeout_s: float = 300.0) -> Figure:
    with tempfile.TemporaryDirectory(prefix="driftline-faust-") as tmp:
        result = Path(tmp) / "result.json"
        log = Path(tmp) / "faust.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--faust-child",
                   "--bootstrap", settings.bootstrap_servers(), "--topic", settings.topics.predictions,
                   "--n", str(n), "--result", str(result), "--datadir", str(Path(tmp) / "data")]
        started = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        total = time.perf_counter() - started
        if not result.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            return Figure("faust_agent_per_s", "(3) trivial Faust counting agent", None, "pred events/s",
                          detail=f"no result within {timeout_s:.0f}s (exit {proc.returncode}): {tail[-300:]}")
        data = json.loads(result.read_text())
    seconds = float(data["seconds"])
    rate = (n - 1) / seconds if seconds > 0 else None
    return Figure("faust_agent_per_s", "(3) trivial Faust counting agent", rate, "pred events/s",
                  detail=f"{n:,} events, first to last in {seconds:.2f}s; process total {total:.1f}s "
                         f"(exit {proc.returncode})",
                  extra={"seconds": seconds, "process_s": total})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="prediction events")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--faust-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--datadir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2_000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.faust_child:
        _faust_child(args.bootstrap, args.topic, args.n, args.result, args.datadir)
        return 0
    from bench_pipeline import produce_workload

    with running_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers, "bb")
        produced, seconds = produce_workload(settings, args.n)
        print(f"produced {produced} in {seconds:.1f}s")
        figures = [measure_raw(settings, args.n), measure_faust(settings, args.n)]
    print_figures(figures, "broker and client baselines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
