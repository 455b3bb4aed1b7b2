"""Restart after SIGKILL at N pending predictions: the real worker, the embedded broker.

Issue 19's target: "restart to first processed event after SIGKILL <= 60 s" (at 10M pending per
worker). This bench measures it at ``--n`` (default 1,000,000) pending predictions:

1. produces N predictions (25 numeric features, UUID-like ids) whose labels never come, to a fresh
   broker's topics, and runs ``driftline worker`` over them;
2. waits until every stage-1 shard has checkpointed past them (``driftline_checkpoint_offset`` of
   every predictions partition at its end offset: the chain's base and deltas cover all N), then
   SIGKILLs the worker;
3. produces a few fresh predictions, each with its label, later in event time (they wait in the
   topics), and starts the worker again;
4. prints the time from the second process's start to its first fresh prediction fed to a shard
   (``driftline_events_in_total``) and to its first outcome (``driftline_stage_joined_total``),
   the restore gauges of every shard (``driftline_stage_restore_*``), peak RSS (VmHWM) of both
   processes and the load average.

Not part of ``make bench`` (producing and consuming 1M predictions takes minutes here). Run it as

    .venv/bin/python bench/bench_restart.py [--n 1000000] [--budget-mb 64] [--state-dir] [--quick]

``--state-dir`` gives the worker a ``worker.state_dir`` (local copies of the bases, docs/state.md
"Restoring from a local copy"); without it a restore reads the whole chain from the broker.
``--budget-mb`` sets ``join.memory_budget_mb`` (64 is what docs/state.md measured at 10M).
``--probe DIR`` has both workers write what their memory holds into ``DIR`` every 30 s
(``bench/memory_probe/sitecustomize.py``: resident heap, glibc's and pymalloc's figures, the
joins' tables, object types); the workers run a little slower meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    START_MS,
    Figure,
    WorkerProcess,
    at_most,
    bench_settings,
    environment,
    environment_line,
    print_figures,
)
from kafka import KafkaConsumer, TopicPartition

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.batch import BatchSender, OutRecord, Submitted
from driftline.kafka.clients import aiokafka_producer
from driftline.local.broker import running_broker
from driftline.simulate import Scenario, produce
from driftline.simulate.scenario import LabelDelay, ModelSpec
from driftline.simulate.traffic import generate

TARGET_S = 60.0
TARGET_PENDING = 10_000_000
TARGET_RSS_MB = 2048.0
RATE = 1000.0  # predictions per simulated second: 1M span 1,000 s, far inside the 1-day horizon
FRESH = 200  # fresh labelled predictions produced after the kill
SCRAPE_EVERY_S = 0.2
POOL = 20_000  # predictions drawn by the simulator; later ones reuse their features (pending_records)
PRODUCE_CHUNK = 5000
IN_FLIGHT_BATCHES = 64


def scenario(n: int, *, seed: int, start_ms: int, labelled: bool) -> Scenario:
    """One model, 25 numeric features; every prediction labelled 1 s later, or none labelled."""
    spec = ModelSpec(model_id="bench", n_numeric=25, n_categorical=0)
    return Scenario(seed=seed, id_namespace=f"restart{seed}", start=start_ms, duration_s=n / RATE,
                    rate=RATE, models=[spec], label_delay=LabelDelay(distribution="fixed", median_s=1.0),
                    label_coverage=1.0 if labelled else 0.0, malformed_rate=0.0)


def pending_records(n: int, settings: Settings, *, seed: int, start_ms: int) -> Iterator[OutRecord]:
    """The records ``produce(scenario(n, labelled=False))`` writes, made ~20x cheaper for large ``n``:
    the simulator draws every prediction's 25 features (~50 us of CPU each: 8 min of one core at
    10M, ~40 min at this machine's load), so only the first ``POOL`` are drawn and later ones reuse
    a drawn prediction's features under their own id and event time (one prediction every ms, as
    the scenario's). Every prediction is distinct by id, so all ``n`` stay pending the same way."""
    topic = settings.topics.predictions
    pool = [e for e in generate(scenario(min(n, POOL), seed=seed, start_ms=start_ms, labelled=False)
                                .resolved()) if e.kind == "predictions"]
    for i in range(n):
        drawn = pool[i % len(pool)]
        if i < len(pool):
            yield OutRecord(topic, drawn.key, drawn.value, drawn.timestamp_ms)
            continue
        key = drawn.key.replace(b"-%d-v1" % (i % len(pool)), b"-%d-v1" % i, 1)
        ts = start_ms + (drawn.timestamp_ms - start_ms) + (i - i % len(pool))
        value = drawn.value.replace(drawn.key, key, 1).replace(
            b'"timestamp":%d' % drawn.timestamp_ms, b'"timestamp":%d' % ts, 1)
        yield OutRecord(topic, key, value, ts)


async def produce_pending(n: int, settings: Settings, *, seed: int, start_ms: int) -> None:
    """Send :func:`pending_records` in chunks, a few chunks in flight (as ``simulate.produce``)."""
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        sender = BatchSender(producer)
        in_flight: list[Submitted] = []
        chunk: list[OutRecord] = []
        for record in pending_records(n, settings, seed=seed, start_ms=start_ms):
            chunk.append(record)
            if len(chunk) < PRODUCE_CHUNK:
                continue
            submitted, _ = await sender.send(chunk)
            chunk.clear()
            in_flight.extend(submitted)
            while len(in_flight) > IN_FLIGHT_BATCHES:
                await in_flight.pop(0).future
        submitted, _ = await sender.send(chunk)
        for batch in [*in_flight, *submitted]:
            await batch.future
    finally:
        await producer.stop()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in worker.metrics()
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def checkpointed_past(worker: WorkerProcess, topic: str, ends: dict[int, int]) -> bool:
    """Every partition of ``topic``: the stage-1 checkpoint's next offset is at its end."""
    resumes = {int(lab["partition"]): v for n, lab, v in worker.metrics()
               if n == "driftline_checkpoint_offset" and lab.get("stage") == "shard"
               and lab.get("topic") == topic}
    return all(resumes.get(p, -1) >= end for p, end in ends.items())


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def status_mb(pid: int, field_name: str) -> float:
    """A /proc/<pid>/status figure in MB (VmRSS: resident now; VmHWM: the peak so far)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class RssTrace:
    """The worker's VmRSS sampled while it consumes, with the stage-1 pending count and how many
    bases were in flight at each sample: where the memory goes (what grows with the pending
    predictions, what a base being written adds)."""

    pid: int
    every_s: float = 1.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (pending, bases, RSS MB)
    _last: float = 0.0

    def sample(self, worker: WorkerProcess) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        pending = bases = 0.0
        for name, labels, value in worker.metrics():
            if labels.get("stage") != "shard":
                continue
            if name == "driftline_stage_pending_predictions":
                pending += value
            elif name == "driftline_stage_base_in_flight":
                bases += value
        self.samples.append((pending, bases, status_mb(self.pid, "VmRSS")))

    def summary(self) -> str:
        """The least-squares line of RSS over pending with no base in flight (fixed MB + bytes a
        pending prediction) and the highest sample with and without bases in flight."""
        quiet = [(p, r) for p, b, r in self.samples if b == 0 and p > 0]
        busy = [(p, b, r) for p, b, r in self.samples if b > 0]
        parts = [f"{len(self.samples)} RSS samples"]
        if len(quiet) >= 2:
            mean_p = sum(p for p, _ in quiet) / len(quiet)
            mean_r = sum(r for _, r in quiet) / len(quiet)
            var = sum((p - mean_p) ** 2 for p, _ in quiet)
            if var > 0:
                slope = sum((p - mean_p) * (r - mean_r) for p, r in quiet) / var
                parts.append(f"no base in flight: RSS ~ {mean_r - slope * mean_p:.0f} MB + "
                             f"{slope * 2**20:.0f} B a pending prediction")
            high = max(quiet, key=lambda s: s[1])
            parts.append(f"highest without a base {high[1]:.0f} MB at {high[0]:,.0f} pending")
            top = max(p for p, _ in quiet)
            at = [min(quiet, key=lambda s, q=q: abs(s[0] - q * top)) for q in (0.1, 0.25, 0.5, 0.75, 1.0)]
            parts.append("without a base, (pending, MB): " + " ".join(f"({p:,.0f}, {r:.0f})" for p, r in at))
        if busy:
            high_b = max(busy, key=lambda s: s[2])
            parts.append(f"highest with bases in flight {high_b[2]:.0f} MB ({high_b[1]:.0f} bases) at "
                         f"{high_b[0]:,.0f} pending")
        return "; ".join(parts)


def progress(what: str) -> None:
    """A line on stderr as each long step ends (a 10M run takes most of an hour)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def join_section(n: int, budget_mb: float, spill_dir: Path) -> dict[str, object]:
    """The join settings of the run: every pending prediction kept (``max_pending`` at least ``n``:
    the default 2M per shard would evict at 10M over 4 shards, and the restart would restore fewer),
    and the memory budget per shard if one is given."""
    section: dict[str, object] = {"max_pending": max(n, Settings().join.max_pending)}
    if budget_mb > 0:
        section |= {"memory_budget_mb": budget_mb, "spill_dir": str(spill_dir)}
    return section


def measure(n: int, state_dir: bool, timeout_s: float, budget_mb: float = 0.0) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="driftline-restart-") as tmp, \
            running_broker(log_path=Path(tmp) / "broker.log") as broker:
        home = Path(tmp) / "home"
        worker_section = {"state_dir": str(Path(tmp) / "state")} if state_dir else {}
        settings = bench_settings(broker.bootstrap_servers, "restart", home, worker=worker_section,
                                  join=join_section(n, budget_mb, Path(tmp) / "spill"))
        ensure_topics(settings)
        topic = settings.topics.predictions
        # the worker consumes while the predictions are produced: at 10M either alone takes minutes
        with WorkerProcess(settings, log_path=Path(tmp) / "first.log") as first:
            trace = RssTrace(first.proc.pid)

            def traced(predicate: Callable[[], bool]) -> Callable[[], bool]:
                def check() -> bool:
                    trace.sample(first)
                    return predicate()
                return check

            started = time.perf_counter()
            # produced in a thread, so the worker's memory is sampled meanwhile
            with ThreadPoolExecutor(1) as pool:
                producing = pool.submit(asyncio.run, produce_pending(n, settings, seed=1, start_ms=START_MS))
                first.wait_until(traced(producing.done), timeout_s, f"{n:,} predictions produced",
                                 every=SCRAPE_EVERY_S)
                producing.result()
            produce_s = time.perf_counter() - started
            progress(f"{n:,} predictions produced in {produce_s:.0f} s")
            ends = end_offsets(settings, topic)
            first.wait_until(traced(lambda: first.events_in(topic) >= n), timeout_s,
                             f"{n:,} predictions consumed", every=SCRAPE_EVERY_S)
            consumed_s = time.perf_counter() - first.started_at
            progress(f"consumed {consumed_s:.0f} s after the worker's start (RSS peak "
                     f"{peak_rss_mb(first.proc.pid):.0f} MB)")
            first.wait_until(traced(lambda: checkpointed_past(first, topic, ends)), timeout_s,
                             "checkpoints past every prediction", every=SCRAPE_EVERY_S)
            pending = metric(first, "driftline_stage_pending_predictions", stage="shard")
            checkpoints = metric(first, "driftline_checkpoints_total", stage="shard")
            first_rss = peak_rss_mb(first.proc.pid)
            rss_at_kill = status_mb(first.proc.pid, "VmRSS")
            load_at_kill = load()
            progress(f"checkpointed past every prediction; killing (RSS peak {first_rss:.0f} MB, load "
                     f"{load_at_kill})")
            first.proc.kill()
            first.proc.wait(30)
        fresh_start = START_MS + int(n / RATE * 1000) + 60_000
        asyncio.run(produce(scenario(FRESH, seed=2, start_ms=fresh_start, labelled=True), settings))
        with WorkerProcess(settings, log_path=Path(tmp) / "second.log") as second:
            second.wait_until(lambda: second.events_in(topic) > 0, timeout_s, "a fresh prediction fed",
                              every=0.05)
            to_first_event = time.perf_counter() - second.started_at
            restored_rss = status_mb(second.proc.pid, "VmRSS")  # the shards restored, the heap trimmed
            second.wait_until(lambda: metric(second, "driftline_stage_joined_total", stage="shard") > 0,
                              timeout_s, "a fresh outcome", every=0.05)
            to_first_outcome = time.perf_counter() - second.started_at
            # the shards take batches as each is restored (StageRunner.on_assigned): the last later
            shards = settings.topics.partitions
            second.wait_until(lambda: metric(second, "driftline_shards_owned", stage="shard") >= shards,
                              timeout_s, "every shard restored", every=0.05)
            to_all_restored = time.perf_counter() - second.started_at
            gauges = [(n_, lab, v) for n_, lab, v in second.metrics()
                      if n_.startswith("driftline_stage_restore_") and lab.get("stage") == "shard"]
            restored = metric(second, "driftline_stage_pending_predictions", stage="shard")
            second_rss = peak_rss_mb(second.proc.pid)
            load_after = load()
    by_shard: dict[str, dict[str, float]] = {}
    for name, lab, v in gauges:
        by_shard.setdefault(lab.get("shard", "?"), {})[name.removeprefix("driftline_stage_restore_")] = v
    for shard, figures in sorted(by_shard.items()):
        shown = (f"{k} {v / 1e6:.1f} MB" if k.endswith("bytes") else f"{k} {v:.2f}"
                 for k, v in sorted(figures.items()))
        print(f"shard {shard}: " + ", ".join(shown))
    print(f"memory before the kill: {trace.summary()}; VmRSS at the kill {rss_at_kill:.0f} MB, peak "
          f"{first_rss:.0f}")
    print(f"memory after the restart: VmRSS {restored_rss:.0f} MB at the first fresh event, peak "
          f"{second_rss:.0f} (the restore)")
    slowest = max((f.get("seconds", 0.0) for f in by_shard.values()), default=None)
    cpu = sum(f.get("cpu_seconds", 0.0) for f in by_shard.values())
    # one load reads every shard's chain: read_seconds is that load's, the same in every shard
    read = max((f.get("read_seconds", 0.0) for f in by_shard.values()), default=0.0)
    rebuild = sum(f.get("seconds", 0.0) - f.get("read_seconds", 0.0) for f in by_shard.values())
    broker_mb = sum(f.get("broker_bytes", 0.0) for f in by_shard.values()) / 1e6
    mb = sum(f.get("bytes", 0.0) for f in by_shard.values()) / 1e6
    detail = (f"{int(pending):,} pending at the kill ({int(restored):,} after the restore), produced "
              f"in {produce_s:.0f} s while the worker consumed them, all consumed {consumed_s:.0f} s "
              f"after its start, {int(checkpoints)} stage-1 "
              f"checkpoints; first fresh event fed after {to_first_event:.1f} s, every shard restored "
              f"after {to_all_restored:.1f} s; restore: slowest shard "
              f"{slowest or 0:.1f} s: the chains read in {read:.1f} s ({broker_mb:.0f} MB from the broker "
              f"for {mb:.0f} MB of bases and deltas), then {rebuild:.1f} s rebuilding the shards "
              f"({cpu:.1f} CPU-s); peak RSS "
              f"{first_rss:.0f} MB before the kill, {second_rss:.0f} MB after the restart; load "
              f"{load_at_kill} at the kill, {load_after} after; state_dir {'set' if state_dir else 'unset'}, "
              f"budget {f'{budget_mb:g} MB a shard' if budget_mb > 0 else 'none'}")
    return [Figure("restart_to_first_outcome_s", f"restart after SIGKILL at {n:,} pending -> first outcome",
                   to_first_outcome, "s", f"<= {TARGET_S:.0f} (at 10M)",
                   at_target_scale(n, to_first_outcome, TARGET_S),
                   detail, {"pending": pending, "to_first_event_s": to_first_event, "peak_rss_mb": first_rss,
                            "restart_peak_rss_mb": second_rss, "restore_cpu_s": cpu, "restore_mb": mb,
                            "restore_read_s": read, "restore_broker_mb": broker_mb}),
            Figure("restart_peak_rss_mb", f"worker peak RSS at {n:,} pending (before the kill, after)",
                   max(first_rss, second_rss), "MB", f"<= {TARGET_RSS_MB:.0f} (at 10M)",
                   at_target_scale(n, max(first_rss, second_rss), TARGET_RSS_MB),
                   f"{first_rss:.0f} MB before the kill, {second_rss:.0f} MB after the restart; budget "
                   f"{f'{budget_mb:g} MB a shard' if budget_mb > 0 else 'none'}")]


def at_target_scale(n: int, value: float, target: float) -> bool | None:
    """Issue 19's targets are for 10M pending: a smaller run has no verdict (None), not "met"."""
    return at_most(value, target) if n >= TARGET_PENDING else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="pending predictions before the kill")
    parser.add_argument("--state-dir", action="store_true", help="keep local copies of the bases")
    parser.add_argument("--quick", action="store_true", help="10,000 pending (a smoke run)")
    parser.add_argument("--budget-mb", type=float, default=0.0,
                        help="join.memory_budget_mb per shard (docs/state.md: 64 at 10M); 0 = none")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each step")
    parser.add_argument("--probe", type=Path, default=None,
                        help="directory the workers dump what their memory holds into, every 30 s")
    return parser.parse_args(argv)


def probe_workers(directory: Path) -> None:
    """Workers started from now on load ``bench/memory_probe/sitecustomize.py`` (they inherit this
    process's environment) and dump their memory's parts into ``directory``."""
    probe = Path(__file__).resolve().parent / "memory_probe"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")]))
    os.environ["BENCH_MEMORY_PROBE_DIR"] = str(directory.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe is not None:
        probe_workers(args.probe)
    n = 10_000 if args.quick else args.n
    print(environment_line(environment()))
    print(f"load before: {load()}")
    print_figures(measure(n, args.state_dir, args.timeout, args.budget_mb), "restart after SIGKILL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
