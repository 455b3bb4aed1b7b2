"""Pipeline throughput: the real worker on the embedded broker, and the pure operators in process.

(1) ``driftline worker --exit-when-idle`` (one process, all roles) over N simulated prediction events
    (20 numeric + 5 categorical features, each with its label) produced to a fresh broker's topics
    *before* the worker starts. Rate = prediction events per second, read from the worker's
    ``/metrics`` (``driftline_events_in_total``, stage shard), from the first scrape that shows
    consumption (startup excluded: process start, ClickHouse migration, group joins) to the first
    that shows all N predictions *and all their labels* consumed: a prediction's work includes its
    label's. (The rate to the last prediction alone, reported as detail, left a varying share of
    the labels, a third to all of them, outside its interval: 12,300-24,900 pred/s for the same
    code.) Target >= 20,000 events/s. The detail splits the worker's CPU in that interval: its main thread
    (the event loop: stage 1 and 2 processors, Kafka clients, /metrics) and its other threads
    (checkpoint copies and writes, the sink's row mapping and ClickHouse inserts, chDB's own pools),
    and counts the checkpoints written and the Kafka metadata requests.
    ``--worker-setting checkpoint_interval_s=600`` (any ``worker.*`` setting, repeatable) runs the
    worker with it, e.g. to see what checkpoints cost. The detail also gives the checkpoint bytes
    the broker acknowledged per stage (``driftline_checkpoint_bytes_total``, bases and deltas)
    against the input's bytes. ``--event-rate R`` (default 100) is the workload's predictions per
    second of *event* time: how much one metrics interval or window holds, so what stage 2's
    outcome buckets keep open (at 5,000 a 300 s interval holds 1.5 million outcomes).
(4) InProcessPipeline over the same kind of pre-generated RawRecords (no Kafka), fed in batches of
    ``worker.batch_max_records``: prediction events per second on one core. Target >= 200,000.

    .venv/bin/python bench/bench_pipeline.py [--n 100000] [--quick] [--worker-only]
        [--worker-setting NAME=VALUE ...] [--event-rate R]
    .venv/bin/python bench/bench_pipeline.py --scrape-cost 3 --n 20000  # main-thread CPU a /metrics scrape
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    SCRAPE_NEAR_S,
    Figure,
    Metrics,
    WorkerProcess,
    at_least,
    bench_scenario,
    bench_settings,
    input_bytes_per_prediction,
    print_figures,
    raw_records,
    scrape_wait,
)

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.kafka.admin import ensure_topics
from driftline.local.broker import running_broker
from driftline.pipeline.local import InProcessPipeline
from driftline.runtime import tune_gc
from driftline.simulate import produce

WORKER_TARGET = 20_000.0
OPERATORS_TARGET = 200_000.0
EVENT_RATE = 100.0
"""The workload's predictions a second of event time unless ``--event-rate`` says otherwise."""


def produce_workload(settings: Settings, n: int, seed: int = 0,
                     event_rate: float = EVENT_RATE) -> tuple[dict[str, int], float]:
    """Create the topics and produce N predictions (+ labels) with the simulator, ``event_rate``
    of them a second of event time; (counts, seconds)."""
    ensure_topics(settings)
    started = time.perf_counter()
    counts = asyncio.run(produce(bench_scenario(n, seed, rate=event_rate), settings))
    return counts, time.perf_counter() - started


def checkpoint_bytes(metrics: Metrics | None) -> dict[tuple[str, str], float]:
    """(stage, kind) -> checkpoint bytes the broker acknowledged, from a scrape ({} without one)."""
    return {(labels["stage"], labels["kind"]): v for name, labels, v in metrics or ()
            if name == "driftline_checkpoint_bytes_total"}


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``'s main thread (Linux /proc; NaN if gone)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_drained(worker: WorkerProcess, settings: Settings, labels: int, deadline: float) -> float:
    """The worker's CPU seconds once everything is done: all ``labels`` consumed by stage 1, no stage
    lag, and the sink's message count unchanged for a second (its outcomes written). The rate above
    stops at the last prediction, when labels, outcomes and the sink may still be behind by a varying
    amount; this figure charges all of the workload's work, so A/B runs compare like with like."""
    stable_since, last = time.monotonic(), -1.0
    while time.monotonic() < deadline:
        worker.check_alive()
        metrics = worker.metrics()
        consumed = sum(v for name, labels_, v in metrics if name == "driftline_events_in_total"
                       and labels_.get("stage") == "shard" and labels_.get("topic") == settings.topics.labels)
        lag = sum(v for name, _, v in metrics if name == "driftline_consumer_lag")
        sunk = sum(v for name, _, v in metrics if name == "driftline_sink_messages_total")
        if sunk != last or consumed < labels or lag:
            stable_since, last = time.monotonic(), sunk
        elif time.monotonic() - stable_since >= 1.0:
            return worker.cpu_seconds()
        time.sleep(SCRAPE_NEAR_S)
    return float("nan")


def last_scrape(worker: WorkerProcess) -> Metrics | None:
    """The worker's ``/metrics`` once more (None if it does not answer)."""
    try:
        return worker.metrics()
    except OSError:
        return None


def metadata_requests_sent(metrics: Metrics | None) -> float:
    """The worker's Kafka metadata requests so far, from a scrape (all clients; NaN without one).
    A few dozen a run; thousands mean a client re-asked for a partition without a known leader, the
    storm that once cost the main thread several times its CPU (docs/scaling.md)."""
    if metrics is None:
        return float("nan")
    return sum(v for name, _, v in metrics if name == "driftline_kafka_metadata_requests_total")


def measure_worker(settings: Settings, n: int, produced: dict[str, int], timeout_s: float = 300.0,
                   event_rate: float = EVENT_RATE) -> Figure:
    """Run the worker over topics already holding ``n`` predictions; figure (1).

    Rate = ``n`` / time from the last ``/metrics`` scrape showing none consumed to the first showing
    all ``n`` predictions and all the produced labels consumed (scrapes every 0.1 s near either
    end, sparser between: ``common.scrape_wait``)."""
    pred_topic, label_topic = settings.topics.predictions, settings.topics.labels
    labels = produced.get("labels", 0)
    # --exit-when-idle counts the consumer-group join (no partitions yet: nothing seen, no lag) as
    # idle, so a short value can stop the worker before it starts; 15 s outlasts the join. The
    # worker is stopped with SIGTERM once all predictions are in.
    with WorkerProcess(settings, exit_when_idle=15.0) as worker:
        # (time, predictions, labels, worker CPU s, main thread CPU s, stage-1 checkpoints)
        samples: list[tuple[float, float, float, float, float, float]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            worker.check_alive()
            if time.monotonic() > deadline:
                seen = samples[-1][1:3] if samples else (0, 0)
                raise TimeoutError(f"worker consumed {seen[0]:.0f} of {n} predictions and {seen[1]:.0f} of "
                                   f"{labels} labels within {timeout_s}s\n{worker.log_tail()}")
            try:
                metrics = worker.metrics()
            except OSError:  # web server not up yet
                time.sleep(SCRAPE_NEAR_S)
                continue
            now, cpu = time.perf_counter(), worker.cpu_seconds()
            main = main_thread_cpu_seconds(worker.proc.pid)
            ins = {labels.get("topic"): v for name, labels, v in metrics
                   if name == "driftline_events_in_total" and labels.get("stage") == "shard"}
            checkpoints = sum(v for name, labels, v in metrics
                              if name == "driftline_checkpoints_total" and labels.get("stage") == "shard")
            samples.append((now, ins.get(pred_topic, 0.0), ins.get(label_topic, 0.0), cpu, main, checkpoints))
            if samples[-1][1] >= n and samples[-1][2] >= labels:
                break
            began = next((s for s in samples if s[1] > 0 or s[2] > 0), None)
            time.sleep(SCRAPE_NEAR_S if began is None else scrape_wait(
                [(began[1], samples[-1][1], n), (began[2], samples[-1][2], labels)], now - began[0]))
        # From the last scrape that showed nothing consumed (startup over, within one scrape interval)
        # (predictions or labels) to the first that showed all of both: conservative by at most two
        # scrape intervals.
        first = next(i for i, s in enumerate(samples) if s[1] > 0 or s[2] > 0)
        scrapes = len(samples) - first
        t0, p0, l0, c0, m0, k0 = samples[first - 1] if first > 0 else (worker.started_at, 0.0, 0.0, 0.0,
                                                                        0.0, 0.0)
        startup_s = t0 - worker.started_at
        t1, p1, l1, c1, m1, k1 = samples[-1]
        tp, pp, lp = next((t, p, lab) for t, p, lab, *_ in samples if p >= n)  # the last prediction in
        drained_cpu = wait_drained(worker, settings, labels, deadline)
        final = last_scrape(worker)
        metadata_requests, written = metadata_requests_sent(final), checkpoint_bytes(final)
        worker.stop()
        exit_code = worker.proc.returncode
    elapsed = t1 - t0
    rate = (p1 - p0) / elapsed if elapsed > 0 else None
    records_rate = (p1 - p0 + l1 - l0) / elapsed if elapsed > 0 else None
    predictions_alone = (pp - p0) / (tp - t0) if tp > t0 else None
    detail = (f"{int(p1 - p0):,} predictions + {int(l1 - l0):,} labels in {elapsed:.2f}s ({scrapes} "
              f"/metrics scrapes) after {startup_s:.1f}s startup; "
              f"{records_rate or 0:,.0f} records/s incl. labels; to the last "
              f"prediction alone {predictions_alone or 0:,.0f} pred/s ({int(lp - l0):,} labels in by then); "
              f"worker used "
              f"{c1 - c0:.2f} CPU-s ({(p1 - p0) / max(c1 - c0, 1e-9):,.0f} pred/CPU-s: main thread "
              f"{m1 - m0:.2f}, other threads {c1 - c0 - (m1 - m0):.2f}), {int(k1 - k0)} stage-1 checkpoints; "
              f"until drained (every label joined, outcomes written): {drained_cpu - c0:.2f} CPU-s, "
              f"{n / max(drained_cpu - c0, 1e-9):,.0f} pred/CPU-s; {metadata_requests:,.0f} Kafka metadata "
              f"requests; exit {exit_code}")
    input_mb = n * input_bytes_per_prediction(settings, raw_records(
        settings, bench_scenario(2_000, 0, rate=event_rate))) / 1e6
    detail += (f"; checkpoints by then ({event_rate:,.0f} predictions a second of event time), against the "
               f"input's {input_mb:,.1f} MB: {checkpoint_detail(written, input_mb)}")
    return Figure("worker_events_per_s", "(1) full pipeline, driftline worker (1 process, all roles)",
                  rate, "pred events/s", f">= {WORKER_TARGET:,.0f}", at_least(rate, WORKER_TARGET), detail,
                  {"elapsed_s": elapsed, "startup_s": startup_s, "records_per_s": records_rate,
                   "predictions": n, "labels": produced.get("labels", 0), "exit_code": exit_code,
                   "worker_cpu_s": c1 - c0, "main_thread_cpu_s": m1 - m0, "checkpoints": k1 - k0,
                   "labels_consumed": l1 - l0, "drained_cpu_s": drained_cpu - c0,
                   "predictions_alone_per_s": predictions_alone, "labels_by_last_prediction": lp - l0,
                   "metadata_requests": metadata_requests, "input_mb": input_mb,
                   "checkpoint_bytes": {f"{stage}_{kind}": v for (stage, kind), v in written.items()}})


def checkpoint_detail(written: dict[tuple[str, str], float], input_mb: float) -> str:
    """Each stage's checkpoint MB, bases and deltas, and their sum over the input's ``input_mb``."""
    parts = []
    for stage, label in (("shard", "stage 1"), ("model", "stage 2")):
        base, delta = written.get((stage, "base"), 0.0) / 1e6, written.get((stage, "delta"), 0.0) / 1e6
        parts.append(f"{label} {base + delta:,.1f} MB (bases {base:,.1f}, deltas {delta:,.1f}; "
                     f"{(base + delta) / max(input_mb, 1e-9):.2f}x)")
    return ", ".join(parts)


def measure_operators(settings: Settings, n: int, seed: int = 0, repeat: int = 1,
                      with_profile: bool = False, outcome_rows: bool = False) -> Figure:
    """Figure (4): InProcessPipeline over pre-generated records (best of ``repeat`` runs), with the GC
    tuning replay uses (``driftline.runtime.tune_gc``); ``with_profile`` publishes a training profile
    first, so stage 1's sequential detectors watch all 25 features (figure 4b).

    The outcomes topic's messages are kept as the stages made them, as a worker produces them (its
    sink inserts them without a dict a row); ``outcome_rows`` parses each into a dict row as the
    in-process pipeline's tables do (what (4) charged before session 48, ~2 CPU-us a prediction)."""
    tune_gc()
    scenario = bench_scenario(n, seed)
    records = raw_records(settings, scenario)
    profiles = [
        p.model_dump_json().encode()
        for p in training_profiles(scenario, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)
    ] if with_profile else []
    n_pred = sum(1 for r in records if r.topic == settings.topics.predictions)
    batch = settings.worker.batch_max_records
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        pipeline = InProcessPipeline(settings, profiles=profiles, outcome_messages=not outcome_rows)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, len(records), batch):
            pipeline.feed(records[i : i + batch])
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, time.process_time() - cpu0)
    rate = n_pred / best_wall
    detail = (f"{n_pred:,} predictions + {len(records) - n_pred:,} labels in {best_wall:.2f}s wall "
              f"({len(records) / best_wall:,.0f} records/s; {n_pred / best_cpu:,.0f} pred/CPU-s); "
              f"batches of {batch}; outcome messages kept as "
              f"{'dict rows' if outcome_rows else 'the stages made them, as a worker sends them'}")
    if with_profile:
        detail += "; training profile: 25 sequential feature detectors per shard (calibration included)"
        return Figure("operators_seq_events_per_s", "(4b) pure operators + sequential detectors", rate,
                      "pred events/s/core", f">= {OPERATORS_TARGET:,.0f}", at_least(rate, OPERATORS_TARGET),
                      detail, {"wall_s": best_wall, "cpu_s": best_cpu, "records": len(records)})
    return Figure("operators_events_per_s", "(4) pure operators, InProcessPipeline (no Kafka)", rate,
                  "pred events/s/core", f">= {OPERATORS_TARGET:,.0f}", at_least(rate, OPERATORS_TARGET),
                  detail,
                  {"wall_s": best_wall, "cpu_s": best_cpu, "records": len(records)})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="prediction events (each with a label)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--worker-only", action="store_true",
                        help="figure (1) only (A/B runs of the worker: (4) and (4b) do not change)")
    parser.add_argument("--worker-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker.* setting of figure (1)'s worker, e.g. checkpoint_interval_s=600")
    parser.add_argument("--outcome-rows-ab", type=int, default=0, metavar="PAIRS",
                        help="only (4): PAIRS runs with the outcome messages parsed into dict rows and kept "
                             "as made, alternating in one process after a warm-up run; CPU-s of each")
    parser.add_argument("--event-rate", type=float, default=EVENT_RATE, metavar="R",
                        help="the workload's predictions a second of event time (module docstring)")
    parser.add_argument("--scrape-cost", type=int, default=0, metavar="ROUNDS",
                        help="only: the worker's main-thread CPU a /metrics scrape, after it consumed --n "
                             "predictions: ROUNDS of 5 s without scrapes against 5 s of them")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2_000)
    return args


def scrape_cost(n: int, rounds: int, seconds: float = 5.0) -> None:
    """What a ``/metrics`` scrape costs the worker's main thread (what figure (1)'s own scrapes
    load it with, ``common.scrape_wait``): a worker that consumed ``n`` predictions and their
    labels, then ``rounds`` of ``seconds`` idle against ``seconds`` of scrapes every 20 ms."""
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, running_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers, "bs", Path(tmp) / "home")
        produced, _ = produce_workload(settings, n)
        with WorkerProcess(settings) as worker:
            worker.wait_until(lambda: worker.events_in(settings.topics.labels) >= produced["labels"], 300,
                              "every label consumed")
            pid = worker.proc.pid
            costs: list[float] = []
            for _ in range(rounds):
                before = main_thread_cpu_seconds(pid)
                time.sleep(seconds)  # the idle worker's own CPU over the same time, subtracted below
                idle = main_thread_cpu_seconds(pid) - before
                before, started, scrapes = main_thread_cpu_seconds(pid), time.monotonic(), 0
                while time.monotonic() - started < seconds:
                    worker.metrics()
                    scrapes += 1
                    time.sleep(0.02)
                costs.append((main_thread_cpu_seconds(pid) - before - idle) / scrapes * 1000)
            samples = len(worker.metrics())
            worker.stop()
    print(f"a /metrics scrape of {samples} samples: {statistics.median(costs):.2f} main-thread CPU-ms "
          f"(median of {rounds} rounds: {', '.join(f'{c:.2f}' for c in costs)})")


def outcome_rows_ab(n: int, pairs: int) -> None:
    """What parsing the outcome messages into dict rows costs figure (4): CPU-s of each run."""
    settings = bench_settings("127.0.0.1:9", "bp")
    measure_operators(settings, n)  # the first run in a process pays one-off set-up
    cpu: dict[str, list[float]] = {"dict rows": [], "messages kept": []}
    for _ in range(pairs):
        for side in cpu:
            cpu[side].append(measure_operators(settings, n, outcome_rows=side == "dict rows").extra["cpu_s"])
    print(f"(4) over {n:,} predictions, {pairs} pairs alternating after a warm-up run, CPU-s a run")
    for side, values in cpu.items():
        print(f"  {side:<14} median {statistics.median(values):.2f}  min {min(values):.2f}  "
              f"[{', '.join(f'{v:.2f}' for v in values)}]")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scrape_cost:
        scrape_cost(args.n, args.scrape_cost)
        return 0
    if args.outcome_rows_ab:
        outcome_rows_ab(args.n, args.outcome_rows_ab)
        return 0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, running_broker() as broker:
        worker = dict(item.split("=", 1) for item in args.worker_setting)
        settings = bench_settings(broker.bootstrap_servers, "bp", Path(tmp) / "home",
                                  **({"worker": worker} if worker else {}))
        produced, seconds = produce_workload(settings, args.n, event_rate=args.event_rate)
        print(f"produced {produced} in {seconds:.1f}s")
        figures.append(measure_worker(settings, args.n, produced, event_rate=args.event_rate))
    if not args.worker_only:
        figures.append(measure_operators(bench_settings("127.0.0.1:9", "bp"), args.n))
        figures.append(measure_operators(bench_settings("127.0.0.1:9", "bp"), args.n, with_profile=True))
    print_figures(figures, "pipeline throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
