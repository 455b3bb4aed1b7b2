"""Scale-out: 1 vs 2 worker processes in one consumer group on the same topics (figure 13).

Each run gets fresh topics (``topics.partitions`` partitions, 4 by default) holding the same N
simulated predictions (+ labels), one ``driftline worker --role sink`` process (the embedded
ClickHouse allows one writer) and K ``driftline worker --role processor`` processes (stages 1 and
2; Kafka's group protocol spreads the partitions over them). The rate counts from the first
``/metrics`` scrape at which the processors together own every stage-1 shard and each owns at
least one (the group has settled; what was consumed before is subtracted) to the first at which
all N predictions are consumed, summed over the processors' ``driftline_events_in_total``.

Reported per run: predictions/s, predictions per processor CPU-second (user + system of the
processor processes only), and the machine's busy cores in the interval (/proc/stat), split into
processors, sink, broker and the rest. Target: 2 workers >= 1.6x one worker's rate, or, where the
machine's cores are already saturated (busy >= 90 % of them), predictions per processor
CPU-second within 10 % of one worker's (no coordination overhead).

    .venv/bin/python bench/bench_scaleout.py [--n 60000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_pipeline import produce_workload
from common import (
    SCRAPE_NEAR_S,
    Figure,
    WorkerProcess,
    bench_settings,
    free_port,
    print_figures,
    scrape_wait,
    worker_env,
)

from driftline.config import Settings
from driftline.local.broker import running_broker

SPEEDUP_TARGET = 1.6
CPU_EFFICIENCY_TOLERANCE = 0.10
SATURATED_SHARE = 0.9


class RoleWorker(WorkerProcess):
    """``driftline worker --role ROLE`` as a subprocess (WorkerProcess runs all roles)."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = settings.home / f"worker-{role}.log"
        command = [sys.executable, "-m", "driftline.cli.main", "worker", "--role", role,
                   "--web-port", str(self.port), "--loglevel", "warning"]
        settings.home.mkdir(parents=True, exist_ok=True)
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=worker_env(settings), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(settings.home))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ScaleRun:
    workers: int
    predictions: float  # consumed in the measured interval
    seconds: float
    processor_cpu_s: float
    sink_cpu_s: float
    broker_cpu_s: float
    machine_busy_s: float
    owned: list[int]  # stage-1 shards per processor in the interval
    settled: bool  # measured from a settled group; False: from startup (the group settled too late)

    @property
    def rate(self) -> float:
        return self.predictions / self.seconds

    @property
    def per_cpu_s(self) -> float:
        return self.predictions / self.processor_cpu_s

    @property
    def busy_cores(self) -> float:
        return self.machine_busy_s / self.seconds

    def describe(self) -> str:
        others = self.machine_busy_s - self.processor_cpu_s - self.sink_cpu_s - self.broker_cpu_s
        per_s = {"processors": self.processor_cpu_s, "sink": self.sink_cpu_s, "broker": self.broker_cpu_s,
                 "rest": others}
        split = ", ".join(f"{name} {cpu / self.seconds:.2f}" for name, cpu in per_s.items())
        shards = "+".join(map(str, self.owned))
        interval = "" if self.settled else " from startup (the group settled after half the input)"
        return (f"{self.workers} worker(s) (shards {shards}){interval}: {self.rate:,.0f} pred/s, "
                f"{self.per_cpu_s:,.0f} pred/processor CPU-s, {int(self.predictions):,} in "
                f"{self.seconds:.1f}s; busy cores {self.busy_cores:.2f} of {os.cpu_count()} ({split})")


def _owned_and_consumed(worker: WorkerProcess, topic: str) -> tuple[int, float]:
    owned, consumed = 0, 0.0
    for name, labels, value in worker.metrics():
        if name == "driftline_shards_owned" and labels.get("stage") == "shard":
            owned = int(value)
        elif (name == "driftline_events_in_total" and labels.get("stage") == "shard"
              and labels.get("topic") == topic):
            consumed += value
    return owned, consumed


def run(bootstrap: str, broker_pid: int, home: Path, prefix: str, n: int, workers: int,
        timeout_s: float = 600.0) -> ScaleRun:
    """One run: fresh topics with n predictions, a sink process and `workers` processor processes."""
    settings = bench_settings(bootstrap, prefix, home / "sink")
    produce_workload(settings, n)
    topic, partitions = settings.topics.predictions, settings.topics.partitions
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(RoleWorker(settings, "sink"))
        processors = [
            stack.enter_context(RoleWorker(settings.model_copy(update={"home": home / f"p{i}"}), "processor"))
            for i in range(workers)
        ]
        start: tuple[float, float, float, float, float, float, list[int]] | None = None
        busy_at_start = machine_busy_s()
        deadline = time.monotonic() + timeout_s
        while True:
            for process in (sink, *processors):
                process.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} worker(s) did not consume {n} predictions in {timeout_s}s\n"
                                   + "\n".join(p.log_tail() for p in processors))
            try:
                states = [_owned_and_consumed(p, topic) for p in processors]
            except OSError:  # a web server is not up yet
                time.sleep(SCRAPE_NEAR_S)
                continue
            now = time.perf_counter()
            owned = [o for o, _ in states]
            consumed = sum(c for _, c in states)
            settled = sum(owned) == partitions and all(o > 0 for o in owned)
            if start is None and settled and consumed <= n / 2:
                start = (now, consumed, sum(process_cpu_s(p.proc.pid) for p in processors),
                         process_cpu_s(sink.proc.pid), process_cpu_s(broker_pid), machine_busy_s(), owned)
            if consumed >= n:
                # The group settled late or never (small n): the whole interval from startup.
                t0, c0, cpu0, sink0, broker0, busy0, owned0 = start or (
                    processors[0].started_at, 0.0, 0.0, 0.0, 0.0, busy_at_start, owned)
                return ScaleRun(
                    workers, consumed - c0, now - t0,
                    sum(process_cpu_s(p.proc.pid) for p in processors) - cpu0,
                    process_cpu_s(sink.proc.pid) - sink0, process_cpu_s(broker_pid) - broker0,
                    machine_busy_s() - busy0, owned0, start is not None,
                )
            time.sleep(SCRAPE_NEAR_S if start is None
                       else scrape_wait([(start[1], consumed, n)], now - start[0]))


def measure(bootstrap: str, broker_pid: int, home: Path, n: int) -> Figure:
    """Figure (13): 2 processor workers over 1, on fresh topics with the same workload each; the
    broker's CPU is reported (``broker_pid``), not counted."""
    one = run(bootstrap, broker_pid, home / "one", "so1", n, 1)
    two = run(bootstrap, broker_pid, home / "two", "so2", n, 2)
    speedup = two.rate / one.rate
    efficiency = two.per_cpu_s / one.per_cpu_s
    cores = os.cpu_count() or 1
    saturated = one.busy_cores >= SATURATED_SHARE * cores or two.busy_cores >= SATURATED_SHARE * cores
    met: bool | None
    if not (one.settled and two.settled):
        met, criterion = None, f"not measured on a settled group: {n:,} predictions are too few"
    elif speedup >= SPEEDUP_TARGET:
        met, criterion = True, f"speed-up {speedup:.2f}x >= {SPEEDUP_TARGET}x"
    elif saturated:
        met = efficiency >= 1 - CPU_EFFICIENCY_TOLERANCE
        criterion = (f"cores saturated (busy {one.busy_cores:.2f} / {two.busy_cores:.2f} of {cores}): "
                     f"pred per processor CPU-s at {efficiency:.0%} of one worker's (target >= "
                     f"{1 - CPU_EFFICIENCY_TOLERANCE:.0%})")
    else:
        met = False
        criterion = (f"speed-up {speedup:.2f}x misses {SPEEDUP_TARGET}x by "
                     f"{(SPEEDUP_TARGET - speedup) / SPEEDUP_TARGET:.0%} with cores not saturated; "
                     f"pred per processor CPU-s at {efficiency:.0%} of one worker's")
    detail = f"{criterion}; {one.describe()}; {two.describe()}; sink in its own process, embedded broker"
    return Figure("scaleout_speedup", "(13) scale-out: 2 processor workers over 1 (same topics, one group)",
                  speedup, "x", f">= {SPEEDUP_TARGET:g} x, or saturated and CPU-s within 10 %", met, detail,
                  {"one": one.__dict__, "two": two.__dict__, "cpu_efficiency": efficiency,
                   "saturated": saturated, "settled": one.settled and two.settled})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000, help="prediction events per run (each with a label)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2_000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, running_broker() as broker:
        figure = measure(broker.bootstrap_servers, broker.pid, Path(tmp), args.n)
    print_figures([figure], "scale-out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
