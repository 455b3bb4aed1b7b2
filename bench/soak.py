"""Soak run and malformed-traffic throughput, against the real worker on the embedded broker.

``soak`` (default): a worker (role all) and a paced simulator at steady load for ``--duration``
seconds. Every ``--sample`` seconds: the worker's RSS (psutil) and the processors' state gauges
from /metrics (``pending_predictions``, ``held_labels``, shard and model ``open_windows``). At the
end: RSS slope after warm-up (least squares, MB per 10 minutes) and the state maxima against the
bounds the label horizon and window sizes imply. Exit 1 if RSS grows or state exceeds its bound.
``--split`` runs the processor and the sink (which hosts the embedded ClickHouse engine) as two
processes, to tell driftline's own memory from the engine's.

``garbage``: the same traffic unpaced, once clean and once with ``--malformed-rate`` malformed
messages mixed in; valid events per second must stay within ``--max-slowdown`` (20%).

    .venv/bin/python bench/soak.py soak [--duration 600] [--rate 100] [--split] [--json out.json]
    .venv/bin/python bench/soak.py garbage [--events-s 600] [--malformed-rate 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from common import slope_per_10min

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.local.broker import free_port, running_broker
from driftline.simulate import Scenario
from driftline.simulate.output import produce
from driftline.simulate.scenario import LabelDelay, ModelSpec

HORIZON_S = 300
LATENESS_S = 10
WINDOWS_S = (60, 300)
_SAMPLE = re.compile(
    r"^driftline_stage_(pending_predictions|held_labels|open_windows)\{([^}]*)\} (\S+)$", re.M
)


def worker_env(bootstrap: str, root: Path, tag: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DRIFTLINE_HOME": str(root / tag / "home"),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{root / tag / 'chdb'}",
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"soak_{tag}",
        "DRIFTLINE_WINDOWS_SIZES_S": json.dumps(list(WINDOWS_S)),
        "DRIFTLINE_WINDOWS_ALLOWED_LATENESS_S": str(LATENESS_S),
        "DRIFTLINE_WINDOWS_METRICS_INTERVAL_S": "60",
        "DRIFTLINE_JOIN_LABEL_HORIZON_S": str(HORIZON_S),
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    }
    for name in (
        "predictions",
        "labels",
        "outcomes",
        "dead_letters",
        "retrain_triggers",
        "retrain_status",
        "profiles",
        "model_events",
        "sink",
        "state",
    ):
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"soak.{tag}.{name}"
    return env


def settings_of(env: dict[str, str]) -> Settings:
    topics = {
        k[len("DRIFTLINE_TOPICS_") :].lower(): v for k, v in env.items() if k.startswith("DRIFTLINE_TOPICS_")
    }
    return Settings(kafka={"bootstrap_servers": env["DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS"]}, topics=topics)


def start_worker(env: dict[str, str], log: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftline.cli.main",
                "worker",
                "--web-port",
                str(port),
                "--loglevel",
                "warning",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            return response.read().decode()
    except OSError:
        return ""


def state_gauges(text: str) -> dict[str, float]:
    out = {
        "pending_predictions": 0.0,
        "held_labels": 0.0,
        "open_windows_shard": 0.0,
        "open_windows_model": 0.0,
    }
    for name, labels, value in _SAMPLE.findall(text):
        if name == "open_windows":
            name += "_model" if 'stage="model"' in labels else "_shard"
        out[name] += float(value)
    return out


def soak(
    duration: float,
    rate: float,
    sample_s: float,
    warmup_s: float,
    max_slope_mb: float,
    out: Path | None,
    split: bool = False,
) -> int:
    """With ``split``, the processor and the sink (which hosts the embedded ClickHouse) run as two
    processes: the verdict is on the processor's RSS, the sink's is reported beside it."""
    root = Path(tempfile.mkdtemp(prefix="driftline-soak-"))
    with running_broker(log_path=root / "broker.log") as broker:
        env = worker_env(broker.bootstrap_servers, root, "soak")
        settings = settings_of(env)
        ensure_topics(settings)
        port = free_port()
        limit = ["--run-seconds", str(duration + 120)]
        if split:
            worker = start_worker(env, root / "worker.log", port, [*limit, "--role", "processor"])
            sink_env = {**env, "DRIFTLINE_HOME": str(root / "sink-home")}
            sink = start_worker(sink_env, root / "sink.log", free_port(), [*limit, "--role", "sink"])
        else:
            worker = start_worker(env, root / "worker.log", port, limit)
            sink = None
        samples: list[dict[str, float]] = []
        try:
            scenario = Scenario(
                seed=1,
                duration_s=duration,
                rate=rate,
                speed=1.0,
                models=[ModelSpec(model_id="soak", n_numeric=10, n_categorical=3)],
                label_delay=LabelDelay(median_s=30, max_s=HORIZON_S * 2),
                label_coverage=0.9,
                malformed_rate=0.002,
            )

            async def run() -> dict[str, int]:
                task = asyncio.create_task(produce(scenario, settings))
                t0 = time.monotonic()
                process = psutil.Process(worker.pid)
                sink_process = psutil.Process(sink.pid) if sink is not None else None
                # Sample for `duration` seconds; the labels' tail after the last request is not waited for.
                while not task.done() and time.monotonic() - t0 < duration:
                    await asyncio.sleep(sample_s)
                    if worker.poll() is not None:
                        task.cancel()
                        log = root / "worker.log"
                        raise RuntimeError(f"worker exited with {worker.returncode}; see {log}")
                    gauges = await asyncio.to_thread(lambda: state_gauges(scrape(port)))
                    rss = process.memory_info().rss / 2**20
                    samples.append({"t": time.monotonic() - t0, "rss_mb": rss, **gauges})
                    if sink_process is not None:
                        samples[-1]["sink_rss_mb"] = sink_process.memory_info().rss / 2**20
                    print(json.dumps({k: round(v, 1) for k, v in samples[-1].items()}), flush=True)
                if task.done():
                    return await task
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return {}

            counts = asyncio.run(run())
        finally:
            for process in (worker, sink):
                if process is None:
                    continue
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    steady = [s for s in samples if s["t"] >= warmup_s]
    slope = slope_per_10min([(s["t"], s["rss_mb"]) for s in steady])
    # Bounds implied by the configuration: a prediction waits at most horizon + lateness for its
    # label; a label waits for its prediction at most the lateness; windows stay open until every
    # shard's watermark passed them.
    bounds = {
        "pending_predictions": rate * (HORIZON_S + LATENESS_S + 2 * sample_s) * 1.25,
        "held_labels": rate * (LATENESS_S + 2 * sample_s) * 1.25 + 100,
    }
    peaks = {
        k: max((s[k] for s in steady), default=0.0)
        for k in ("pending_predictions", "held_labels", "open_windows_shard", "open_windows_model", "rss_mb")
    }
    result = {
        "duration_s": duration,
        "rate": rate,
        "counts": counts,
        "samples": len(samples),
        "rss_first_mb": steady[0]["rss_mb"] if steady else None,
        "rss_last_mb": steady[-1]["rss_mb"] if steady else None,
        "rss_slope_mb_per_10min": round(slope, 2),
        "roles": "processor (sink apart)" if split else "all",
        "peaks": peaks,
        "bounds": bounds,
    }
    if split:
        sink_points = [(s["t"], s["sink_rss_mb"]) for s in steady]
        result["sink_rss_first_mb"] = sink_points[0][1] if sink_points else None
        result["sink_rss_last_mb"] = sink_points[-1][1] if sink_points else None
        result["sink_rss_slope_mb_per_10min"] = round(slope_per_10min(sink_points), 2)
    ok = bool(steady) and slope <= max_slope_mb and all(peaks[k] <= b for k, b in bounds.items())
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    if out is not None:
        out.write_text(json.dumps({**result, "series": samples}, indent=2))
    return 0 if ok else 1


def _valid_rate(
    env: dict[str, str], root: Path, tag: str, scenario: Scenario
) -> tuple[float, dict[str, int]]:
    settings = settings_of(env)
    ensure_topics(settings)
    counts = asyncio.run(produce(scenario, settings))
    total = sum(counts.values())
    port = free_port()
    worker = start_worker(env, root / f"{tag}.log", port, ["--exit-when-idle", "5", "--run-seconds", "600"])
    first = last = None
    try:
        while worker.poll() is None:
            text = scrape(port)
            seen = sum(
                float(v)
                for v in re.findall(r'^driftline_events_in_total\{stage="shard"[^}]*\} (\S+)$', text, re.M)
            )
            now = time.monotonic()
            if seen and first is None:
                first = now
            if seen >= total:
                last = now
                break
            time.sleep(0.05)
        worker.wait(600)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    if first is None or last is None:
        raise RuntimeError(f"{tag}: the worker did not consume everything; see {root / f'{tag}.log'}")
    valid = counts.get("predictions", 0) + counts.get("labels", 0)
    return valid / max(last - first, 0.05), counts


def garbage(events_s: float, rate: float, malformed_rate: float, max_slowdown: float) -> int:
    root = Path(tempfile.mkdtemp(prefix="driftline-garbage-"))
    start = (int(time.time()) - int(events_s) - 600) * 1000
    results = {}
    with running_broker(log_path=root / "broker.log") as broker:
        for tag, share in (("clean", 0.0), ("garbage", malformed_rate)):
            scenario = Scenario(
                seed=4,
                start=start,
                duration_s=events_s,
                rate=rate,
                malformed_rate=share,
                models=[ModelSpec(model_id="g", n_numeric=10, n_categorical=3)],
                label_delay=LabelDelay(median_s=30, max_s=HORIZON_S),
            )
            results[tag] = _valid_rate(worker_env(broker.bootstrap_servers, root, tag), root, tag, scenario)
    ratio = results["garbage"][0] / results["clean"][0]
    summary: dict[str, Any] = {
        tag: {"valid_events_per_s": round(r, 1), "counts": c} for tag, (r, c) in results.items()
    }
    summary["ratio"] = round(ratio, 3)
    summary["ok"] = ratio >= 1 - max_slowdown
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode")
    s = sub.add_parser("soak", help="steady paced load; RSS slope and state bounds")
    s.add_argument("--duration", type=float, default=600, help="seconds of paced traffic")
    s.add_argument("--rate", type=float, default=100, help="requests per second")
    s.add_argument("--sample", type=float, default=10, help="seconds between samples")
    s.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds ignored for the slope (default: label horizon + 60 s, capped at a third of the run)",
    )
    s.add_argument("--max-slope-mb", type=float, default=20, help="RSS growth per 10 min that fails the run")
    s.add_argument("--json", type=Path, default=None, help="write the result and samples here")
    s.add_argument(
        "--split",
        action="store_true",
        help="run processor and sink (embedded ClickHouse) as two processes; judge the processor's RSS",
    )
    g = sub.add_parser("garbage", help="valid-event throughput with vs without malformed messages")
    g.add_argument("--events-s", type=float, default=600, help="simulated seconds of traffic")
    g.add_argument("--rate", type=float, default=100)
    g.add_argument("--malformed-rate", type=float, default=0.1)
    g.add_argument("--max-slowdown", type=float, default=0.2)
    args = parser.parse_args(argv)
    if args.mode == "garbage":
        return garbage(args.events_s, args.rate, args.malformed_rate, args.max_slowdown)
    if args.mode is None:
        args = parser.parse_args(["soak", *(argv or [])])
    warmup = args.warmup if args.warmup is not None else min(HORIZON_S + 60, args.duration / 3)
    return soak(args.duration, args.rate, args.sample, warmup, args.max_slope_mb, args.json, args.split)


if __name__ == "__main__":
    sys.exit(main())
