"""What stage 1's checkpoints cost on the bench workload, under the runner's base/delta policy.

The pure operators (InProcessPipeline, 4 shards, the bench workload of bench_pipeline (4b): 20
numeric + 5 categorical features, every prediction labelled, a training profile) are fed in
batches of ``worker.batch_max_records``; every ``--every`` batches each shard is checkpointed as
the worker does (``streams.runner``): a base (``base_copy`` then its dump) when
``ChainLength.base_due`` says so, else a delta (``checkpoint(False)``). Reported: bases and deltas
written, their CPU time and the mean delta's size, with ``RATIO_FLOOR_BYTES`` at 0
(``worker.checkpoint_delta_ratio`` alone, as before it) and at its value, in alternating rounds of
one process; then what a delta is made of (its pickled parts, as the shard builds it) and the
input's bytes per prediction (its label included). ``--every 10`` is a delta per shard every
25,000 predictions: 5 s at 5,000 predictions/s.

``--issue19``: issue 19's checkpoint bytes over input at 10M pending, 5,000 predictions/s and 5 s
intervals (``bench_join_state``'s join-only run at 300,000 pending under a 16 MB budget, scaled by
``bounded_chain``, bases read from their local copy), the join alone and with 4 shards' non-join
part of a delta as measured here added to each interval; the run's base restored and its deltas
applied ``--rounds`` times, with ``--baseline FILE`` (an older ``join.py``: ``git show
<commit>:src/driftline/operators/join.py > FILE``) alternating that one's ``apply_changes`` with
today's in this process (CPU time, best of the rounds, the same table checked) (minutes). Each
chain is priced with deltas read from the broker at ``RestoreCosts``' default speed (what a worker
that never restored used until the timed read) and at each ``--read-mb-per-s``; ``--time-read N``
adds the speed a live worker learns (``CheckpointStore.time_delta_read`` on a fresh embedded broker
reading back 64 MiB of deltas of this run's size a shard, median of N reads). With the shards'
non-join parts, each shard's chain is also priced as the runner bounds it (``restore_target_s`` a
shard) and with the worker bounded (the target divided among its shards), at this run's CPU costs
and at each ``--cpu-scale`` times them.

``--closings``: the join's changes as delta format 4 wrote them (a record the chain held and
closed since whole) against closings (format 5), alternating in one process: CPU and bytes a
shard's delta.

``--stage2-outcomes N``: stage 2's checkpoints of a ``ModelProcessor`` whose one model holds N
joined outcomes in its open metrics interval (UUID ids; stage 2 keeps every outcome of an
interval, deduplicated by id, until the interval closes, to feed its estimators in canonical
order): the process's RSS growth, a base's bytes and CPU, its copy's CPU (what holds batches out),
and a delta of one ``worker.checkpoint_interval_s`` of outcomes at the rate that holds N in one
default interval (best of ``--rounds``); then the checkpoint bytes a second against the input's,
a base at every checkpoint (before stage 2 wrote deltas) and a chain as the runner's byte bound
cuts it. One model at 5,000 predictions/s over the default 300 s interval holds 1,500,000.

``--models N``: N models (20 + 5 features each, a training profile each) under Zipf traffic (model
k's share ~ 1/(k+1)^``--zipf``), and the per-model items A/B: each round runs the same checkpoints
twice, deltas carrying every model's windows and detectors (``_changed_items`` off: delta format 3's
content) and only the models that moved (on), alternating, and prints the deltas' CPU and bytes a
shard.

    .venv/bin/python bench/bench_checkpoints.py [--n 100000] [--every 4] [--rounds 2] [--issue19]
    .venv/bin/python bench/bench_checkpoints.py --n 100000 --every 10 --issue19 --baseline /tmp/join_old.py
    .venv/bin/python bench/bench_checkpoints.py --n 100000 --every 10 --issue19 --rounds 2 --time-read 5
    .venv/bin/python bench/bench_checkpoints.py --n 100000 --every 10 --issue19 --rounds 1 --cpu-scale 3 \
        --read-mb-per-s 60
    .venv/bin/python bench/bench_checkpoints.py --closings --n 100000 --every 10
    .venv/bin/python bench/bench_checkpoints.py --models 200 --n 50000 --every 1 --rounds 3
    .venv/bin/python bench/bench_checkpoints.py --stage2-outcomes 1500000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import random
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench_models import rss_bytes
from common import bench_scenario, bench_settings, input_bytes_per_prediction, raw_records

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.join import JoinChanges, LabelJoin, _closing_keys
from driftline.operators.validate import RawRecord
from driftline.pipeline import local
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import Outcomes
from driftline.pipeline.shard import ShardProcessor
from driftline.pipeline.state import dump_delta
from driftline.streams import runner

if TYPE_CHECKING:
    import bench_join_state

CLOCK = time.process_time


def checkpoint_cpu(settings: Settings, raw: Sequence[RawRecord], profiles: list[bytes], every: int,
                   floor: int) -> dict[str, tuple[int, float, int]]:
    """{"base"/"delta": (how many, CPU seconds, bytes)} of a run with ``RATIO_FLOOR_BYTES = floor``;
    "parts": the last delta's parts (count 0, CPU 0, bytes) for :func:`delta_parts`."""
    saved = runner.RATIO_FLOOR_BYTES
    runner.RATIO_FLOOR_BYTES = floor
    try:
        pipeline = local.InProcessPipeline(settings, profiles=profiles)
        for shard in pipeline.shards:
            shard.track_changes()
        chains: dict[int, runner.ChainLength] = {}
        out = {"base": [0, 0.0, 0], "delta": [0, 0.0, 0]}
        worker, batch = settings.worker, settings.worker.batch_max_records
        for k, i in enumerate(range(0, len(raw), batch)):
            pipeline.feed(raw[i : i + batch])
            if (k + 1) % every:
                continue
            for index, shard in enumerate(pipeline.shards):
                chain = chains.get(index)
                changed = shard.changed_records()
                base = chain is None or chain.base_due(
                    worker.checkpoint_deltas_per_base, worker.checkpoint_delta_ratio, worker.restore_target_s,
                    runner.RestoreCosts(), changed, elapsed_s=float("inf"))
                t0 = CLOCK()
                if base:
                    copy = shard.base_copy()
                    blob = copy.dump()
                    copy.release()
                else:
                    blob = shard.checkpoint(False)
                kind = "base" if base else "delta"
                out[kind][0] += 1
                out[kind][1] += CLOCK() - t0
                out[kind][2] += len(blob)
                if base:
                    chains[index] = runner.ChainLength(len(blob))
                elif chain is not None:
                    chain.deltas += 1
                    chain.delta_bytes += len(blob)
                    chain.changed += changed
        return {kind: (int(n), float(s), int(b)) for kind, (n, s, b) in out.items()}
    finally:
        runner.RATIO_FLOOR_BYTES = saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="prediction events (each with a label)")
    parser.add_argument("--every", type=int, default=4, help="batches between two checkpoints")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--issue19", action="store_true", help="restate issue 19's bytes figure (minutes)")
    parser.add_argument("--baseline", help="--issue19: an older join module (git show <commit>:src/driftline/"
                        "operators/join.py > FILE) whose apply_changes to alternate with today's")
    parser.add_argument("--read-mb-per-s", type=float, nargs="*", default=[],
                        help="--issue19: broker read speeds (MB/s) for the deltas, beside the default")
    parser.add_argument("--time-read", type=int, default=0,
                        help="--issue19: time N reads of 64 MiB of deltas (embedded broker), use the median")
    parser.add_argument("--cpu-scale", type=float, nargs="*", default=[],
                        help="--issue19: also price each shard's chain, bounded per shard and per worker, "
                        "at this run's CPU costs times each of these")
    parser.add_argument("--closings", action="store_true",
                        help="deltas as format 4 wrote them against closings (format 5), alternating")
    parser.add_argument("--models", type=int, default=0, help="N models under Zipf traffic: the items A/B")
    parser.add_argument("--zipf", type=float, default=1.0, help="--models: model k's share ~ 1/(k+1)^zipf")
    parser.add_argument("--stage2-outcomes", type=int, default=0,
                        help="stage 2's checkpoints holding N outcomes in one metrics interval (docstring)")
    args = parser.parse_args(argv)
    settings = bench_settings("127.0.0.1:9", "bc")
    if args.stage2_outcomes:
        return print_stage2(settings, args.stage2_outcomes, args.rounds)
    if args.models:
        return items_ab(settings, args.n, args.models, args.zipf, args.every, args.rounds)
    scenario = bench_scenario(args.n, 0)
    raw = raw_records(settings, scenario)
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        scenario, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)]
    print(f"load {os.getloadavg()[0]:.1f}; {args.n:,} predictions + labels, 4 shards, a checkpoint every "
          f"{args.every} batches of {settings.worker.batch_max_records}")
    if args.closings:
        return closings_ab(settings, raw, profiles, args.every, args.rounds)
    totals: dict[int, list[float]] = {}
    for _ in range(args.rounds):
        for floor in (0, runner.RATIO_FLOOR_BYTES):
            got = checkpoint_cpu(settings, raw, profiles, args.every, floor)
            total = got["base"][1] + got["delta"][1]
            totals.setdefault(floor, []).append(total)
            deltas = max(1, got["delta"][0])
            print(f"  RATIO_FLOOR_BYTES {floor >> 20:>3} MiB: {got['base'][0]} bases "
                  f"({got['base'][1]:.2f} CPU-s), {got['delta'][0]} deltas ({got['delta'][1]:.2f} CPU-s, "
                  f"{got['delta'][1] / deltas * 1000:.1f} ms and {got['delta'][2] / deltas / 1e6:.3f} MB "
                  "a delta): "
                  f"{total:.2f} CPU-s")
    before, after = min(totals[0]), min(totals[runner.RATIO_FLOOR_BYTES])
    print(f"checkpoint CPU, best of {args.rounds}: {before:.2f} -> {after:.2f} CPU-s "
          f"({after / before:.2f}x); load {os.getloadavg()[0]:.1f}")
    rest = delta_parts(settings, raw, profiles, args.every)
    print(f"input: {input_bytes_per_prediction(settings, raw):.0f} bytes a prediction, its label included")
    if args.issue19:
        issue19(rest, shards=settings.topics.partitions, rounds=args.rounds, baseline=args.baseline,
                read_speeds=args.read_mb_per_s, time_reads=args.time_read, cpu_scales=args.cpu_scale)
    return 0


@dataclasses.dataclass
class Stage2Checkpoints:
    """Stage 2's checkpoints of one model holding ``held`` outcomes (:func:`measure_stage2`):
    bytes, CPU seconds (best of the rounds) and the rates a second of traffic."""

    held: int
    rss_grown: int
    base_bytes: int
    base_s: float
    copy_s: float
    restore_s: float
    per_delta: int  # outcomes a delta carries: one checkpoint interval's at the rate
    delta_bytes: int
    delta_s: float
    apply_s: float  # a delta's, restoring
    rate: float  # predictions a second that hold ``held`` in one metrics interval
    every_s: float  # worker.checkpoint_interval_s
    input_bytes_per_s: float
    deltas_per_base: int  # as worker.checkpoint_delta_ratio cuts the chain
    chain_bytes_per_s: float
    chain_core: float  # share of a core the chain's checkpoints take

    @property
    def snapshot_bytes_per_s(self) -> float:
        """A base at every checkpoint (what stage 2 wrote before its deltas)."""
        return self.base_bytes / self.every_s


def measure_stage2(settings: Settings, n: int, rounds: int) -> Stage2Checkpoints:
    """Stage 2's checkpoints of one model holding ``n`` outcomes in its open metrics interval: a
    base (the whole shard) and its copy, and the delta of one checkpoint interval's outcomes at the
    rate that holds ``n`` in one interval, each best of ``rounds``; a chain of them restored."""
    rng = random.Random(0)
    interval_ms = settings.windows.metrics_interval_s * 1000
    start = 1_700_000_100_000 // interval_ms * interval_ms
    rate = n / settings.windows.metrics_interval_s
    every = settings.worker.checkpoint_interval_s
    per_delta = max(1, round(rate * every))
    rounds = max(1, rounds)

    def add(processor: ModelProcessor, first: int, count: int) -> None:
        ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(count)]
        times = [start + (first + i) * (interval_ms - 1) // (n + per_delta * rounds) for i in range(count)]
        processor.outcomes.add_outcomes(Outcomes(
            0, "m", "1", ids, [""] * count, times, [rng.randrange(60_000) for _ in range(count)],
            [rng.randrange(2) for _ in range(count)], [None] * count, [0] * count))

    before = rss_bytes()
    processor = ModelProcessor(0, settings, "bench")
    chunk = 5_000
    for first in range(0, n, chunk):
        add(processor, first, min(chunk, n - first))
    held = sum(len(bucket.outcomes) for buckets in processor.outcomes.buckets.values()
               for bucket in buckets.values())
    grown = rss_bytes() - before
    best, size, copy_s = float("inf"), 0, float("inf")
    for _ in range(rounds):
        started = time.process_time()
        size = len(processor.snapshot())
        best = min(best, time.process_time() - started)
        started = time.process_time()
        processor.base_copy().release()  # what holds batches out for a base written beside them
        copy_s = min(copy_s, time.process_time() - started)
    delta_s, delta_size, added = float("inf"), 0, n
    chain = [processor.checkpoint(base=True)]
    for _ in range(rounds):
        add(processor, added, per_delta)
        added += per_delta
        started = time.process_time()
        chain.append(processor.checkpoint(base=False))
        delta_s = min(delta_s, time.process_time() - started)
        delta_size = len(chain[-1])
    del processor
    started = time.process_time()
    restored = ModelProcessor.restore(chain[0], settings)
    restore_s = time.process_time() - started
    for delta in chain[1:]:
        restored._apply_delta(delta, "bench")
    apply_s = (time.process_time() - started - restore_s) / (len(chain) - 1)
    per_prediction = input_bytes_per_prediction(settings, raw_records(settings, bench_scenario(2_000, 0)))
    # the runner's byte bound (worker.checkpoint_delta_ratio) writes a base once the deltas' bytes pass it
    ratio = settings.worker.checkpoint_delta_ratio
    deltas_per_base = max(1, min(settings.worker.checkpoint_deltas_per_base, int(ratio * size / delta_size)))
    links_s = (deltas_per_base + 1) * every
    return Stage2Checkpoints(
        held, grown, size, best, copy_s, restore_s, per_delta, delta_size, delta_s, apply_s, rate, every,
        rate * per_prediction, deltas_per_base, (size + deltas_per_base * delta_size) / links_s,
        (best + deltas_per_base * delta_s) / links_s)


def print_stage2(settings: Settings, n: int, rounds: int) -> int:
    """Print :func:`measure_stage2`."""
    m = measure_stage2(settings, n, rounds)
    interval_s = settings.windows.metrics_interval_s
    print(f"stage 2, one model holding {m.held:,} outcomes of one {interval_s} s interval: RSS "
          f"+{m.rss_grown / 1e6:,.0f} MB ({m.rss_grown / m.held:.0f} B an outcome); a base "
          f"{m.base_bytes / 1e6:,.1f} MB ({m.base_bytes / m.held:.0f} B an outcome) in {m.base_s:.2f} CPU-s, "
          f"its copy (batches held) {m.copy_s * 1e3:.0f} CPU-ms (best of {rounds}); restored in "
          f"{m.restore_s:.2f} CPU-s")
    print(f"at {m.rate:,.0f} predictions/s and a checkpoint every {m.every_s:g} s: a delta of "
          f"{m.per_delta:,} outcomes {m.delta_bytes / 1e6:.2f} MB in {m.delta_s * 1e3:.0f} CPU-ms, "
          f"applied in {m.apply_s * 1e3:.0f} CPU-ms ({m.apply_s / m.per_delta * 1e6:.2f} us an outcome); "
          f"input {m.input_bytes_per_s / 1e6:,.1f} MB/s ({m.input_bytes_per_s / m.rate:.0f} B a prediction "
          f"with its label)")
    print(f"  a base at every checkpoint: {m.snapshot_bytes_per_s / 1e6:,.1f} MB/s, "
          f"{m.snapshot_bytes_per_s / m.input_bytes_per_s:.1f}x the input, "
          f"{m.base_s / m.every_s:.0%} of a core")
    print(f"  a base and {m.deltas_per_base} deltas (checkpoint_delta_ratio "
          f"{settings.worker.checkpoint_delta_ratio:g}): {m.chain_bytes_per_s / 1e6:,.2f} MB/s, "
          f"{m.chain_bytes_per_s / m.input_bytes_per_s:.2f}x the input, {m.chain_core:.1%} of a core")
    return 0


def closings_ab(settings: Settings, raw: Sequence[RawRecord], profiles: list[bytes], every: int,
                rounds: int) -> int:
    """The join's changes as delta format 4 wrote them (:func:`format_4_changes`) against closings
    (format 5), alternating in this process: CPU and bytes a shard's delta."""
    take = LabelJoin.take_changes
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for form in ("format 4", "closings"):
            if form == "format 4":
                LabelJoin.take_changes = format_4_changes  # type: ignore[method-assign]
            try:
                got = checkpoint_cpu(settings, raw, profiles, every, runner.RATIO_FLOOR_BYTES)
            finally:
                LabelJoin.take_changes = take  # type: ignore[method-assign]
            count, cpu, size = got["delta"]
            ms, mb = cpu / max(count, 1) * 1000, size / max(count, 1) / 1e6
            print(f"  {form:>8}: {got['delta'][0]} deltas: {ms:.1f} ms and {mb:.3f} MB a delta of a shard")
            low = best.get(form, (ms, mb))
            best[form] = (min(low[0], ms), mb)
    (ms0, mb0), (ms1, mb1) = best["format 4"], best["closings"]
    print(f"a shard's delta, best of {rounds}: {ms0:.1f} -> {ms1:.1f} ms CPU, {mb0:.3f} -> {mb1:.3f} MB; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0


def items_ab(settings: Settings, n: int, models: int, zipf: float, every: int, rounds: int) -> int:
    """Deltas with every model's items against only the moved ones', alternating in one process."""
    base = bench_scenario(n, 0)
    spec = base.models[0]
    scenario = base.model_copy(update={"models": [
        spec.model_copy(update={"model_id": f"m{k:04d}", "traffic_share": 1 / (k + 1) ** zipf})
        for k in range(models)]})
    raw = raw_records(settings, scenario)
    even = scenario.model_copy(update={"models": [  # each model's profile from as many rows (a tail
        m.model_copy(update={"traffic_share": 1.0}) for m in scenario.models]})  # model's would be tiny)
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        even, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)]
    shards = settings.topics.partitions
    print(f"load {os.getloadavg()[0]:.1f}; {n:,} predictions + labels of {models} models (Zipf {zipf:g}), "
          f"{shards} shards, a checkpoint every {every} batches of {settings.worker.batch_max_records}")
    items = ShardProcessor._changed_items
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for mode in ("every model", "moved models"):
            if mode == "every model":
                ShardProcessor._changed_items = lambda self, rest: rest  # type: ignore[method-assign]
            try:
                got = checkpoint_cpu(settings, raw, profiles, every, runner.RATIO_FLOOR_BYTES)
            finally:
                ShardProcessor._changed_items = items  # type: ignore[method-assign]
            count, cpu, size = got["delta"]
            count = max(count, 1)
            ms, mb = cpu / count * 1000, size / count / 1e6
            print(f"  {mode:>12}: {got['base'][0]} bases ({got['base'][1]:.2f} CPU-s), "
                  f"{got['delta'][0]} deltas: {ms:.1f} ms and {mb:.3f} MB a delta of a shard")
            low = best.get(mode, (ms, mb))
            best[mode] = (min(low[0], ms), mb)
    (ms0, mb0), (ms1, mb1) = best["every model"], best["moved models"]
    print(f"a shard's delta, best of {rounds}: {ms0:.1f} -> {ms1:.1f} ms CPU, {mb0:.3f} -> {mb1:.3f} MB; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0


def issue19(rest_bytes: int, shards: int, rounds: int = 2, baseline: str | None = None,
            read_speeds: Sequence[float] = (), time_reads: int = 0, cpu_scales: Sequence[float] = ()) -> None:
    """Checkpoint bytes over input at 10M pending: the join alone, and with ``shards`` x
    ``rest_bytes`` more a delta interval. One run of ``bench_join_state``'s join (300,000 pending, 16
    MB budget); its base restored and deltas applied ``rounds`` times by today's
    ``apply_changes`` and, with ``baseline`` (an older join module's file), by that one's,
    alternating in this process (the same table left, checked): the chain each allows, its deltas
    read at the default speed and at each of ``read_speeds`` (MB/s), and with ``time_reads`` at
    the median of that many timed reads of deltas of this run's size a shard (an embedded broker)."""
    import bench_join_state  # its imports only for this row

    appliers: dict[str, bench_join_state.Applier] = {}
    if baseline:
        appliers["baseline"] = bench_join_state.baseline_applier(baseline)
    appliers["today"] = LabelJoin.apply_changes
    run = bench_join_state.measure_spill(300_000, 16, appliers=appliers, ab_rounds=rounds)
    base_mb = run.base_bytes / 1e6
    print(f"issue 19 (10M pending, {run.interval_s:g} s intervals, bases from their local copy): input "
          f"{run.input_bytes_per_s / 1e6:.2f} MB/s, the join's delta {run.delta_bytes / 1e6:.2f} MB an "
          f"interval ({run.delta_changed_all:,.0f} changed records: added, closings, gone); best of "
          f"{rounds}: the base restored in {run.base_ab_cpu_s:.2f} CPU-s "
          f"({run.base_ab_cpu_s / base_mb * 1e3:.2f} ms a MB of {base_mb:.0f} MB), a delta unpickled in "
          f"{run.delta_load_cpu_s:.3f} CPU-s")
    speeds = [runner.RestoreCosts().read_mb_per_s, *read_speeds]
    if time_reads:
        import statistics

        from bench_restore_read import timed_delta_reads

        shard_delta_mb = (run.delta_bytes + shards * rest_bytes) / shards / 1e6
        count = int(runner.MIN_READ_BYTES / 1e6 / shard_delta_mb) + 1
        timed = timed_delta_reads(shard_delta_mb, count, time_reads)
        speeds.append(statistics.median(timed))
        print(f"  {count} deltas of {shard_delta_mb:.2f} MB (a shard's) read back by time_delta_read: "
              f"{', '.join(f'{s:.0f}' for s in timed)} MB/s; load {os.getloadavg()[0]:.1f}")
    for name, apply_s in run.apply_ab_cpu_s.items():
        print(f"  {name}: a delta applied in {apply_s:.3f} CPU-s "
              f"({apply_s / run.delta_changed_all * 1e6:.2f} us a changed record)")
        for extra in (0, shards * rest_bytes):
            more = dataclasses.replace(run, delta_bytes=run.delta_bytes + extra,
                                       delta_apply_cpu_s=apply_s + run.delta_load_cpu_s,
                                       base_load_cpu_s=run.base_ab_cpu_s)
            for speed in speeds:
                chain = bench_join_state.bounded_chain(more, local_base=True, stall=False,
                                                       read_mb_per_s=speed)
                share = chain.checkpoint_bytes_per_s / run.input_bytes_per_s
                print(f"    + {extra / 1e6:.2f} MB of {shards} shards' non-join parts an interval, deltas "
                      f"read at {speed:.0f} MB/s: a base every {chain.deltas} deltas, {share:.2f}x the "
                      f"input's bytes (target 2x); restore estimate {chain.restore_cpu_s:.1f} s CPU + "
                      f"reading, {chain.restore_wall_s:.1f} s this run's wall + reading (target 60 s)")
                if extra:
                    per_shard(more, run, shards, speed, (1.0, *cpu_scales))
    if baseline:
        old, new = run.apply_ab_cpu_s["baseline"], run.apply_ab_cpu_s["today"]
        print(f"issue 19: a delta's apply {old:.3f} -> {new:.3f} CPU-s ({new / old:.2f}x), same table")


def per_shard(whole: bench_join_state.SpillRun, run: bench_join_state.SpillRun, shards: int,
              speed: float, cpu_scales: Sequence[float] = (1.0,), target_s: float = 60.0) -> None:
    """The chain each of ``shards`` shards keeps as the runner bounds it: ``worker.restore_target_s``
    a shard's chain (1/``shards`` of the pending, the delta, its changes and its apply), not the
    worker's; the worker's restore is then up to ``shards`` x one shard's (rebuilt one after the
    other; the first takes batches after its own). Beside it, the worker bounded instead: each
    shard's chain at ``target_s / shards``, so all of them rebuilt in turn fit the target. Each
    with this run's CPU costs times each of ``cpu_scales`` (the live 10M worker's restart measured
    6.6-6.8 ms a MB of base and 8.5 us a changed record: ~1.25-1.6x this bench's)."""
    import bench_join_state

    one = dataclasses.replace(whole, delta_bytes=whole.delta_bytes / shards,
                              delta_changes=whole.delta_changes / shards,
                              delta_apply_cpu_s=whole.delta_apply_cpu_s / shards,
                              delta_apply_s=whole.delta_apply_s / shards)
    for scale in cpu_scales:
        scaled = dataclasses.replace(one, delta_apply_cpu_s=one.delta_apply_cpu_s * scale,
                                     base_load_cpu_s=one.base_load_cpu_s * scale)
        base_ms = scaled.base_load_cpu_s / (scaled.base_bytes / 1e6) * 1e3
        cpu = f" (CPU costs x {scale:g}: the base {base_ms:.1f} ms a MB)"
        for bound, what in ((target_s, "as the runner bounds it, a shard's chain"),
                            (target_s / shards, "the worker bounded, target/shards a shard's chain")):
            chain = bench_join_state.bounded_chain(scaled, pending=10_000_000 // shards, target_s=bound,
                                                   local_base=True, stall=False, read_mb_per_s=speed)
            share = chain.checkpoint_bytes_per_s / (run.input_bytes_per_s / shards)
            print(f"      {what} ({bound:g} s, 1/{shards}){cpu if scale != 1.0 else ''}: a base every "
                  f"{chain.deltas} deltas, {share:.2f}x the input's bytes; restore estimate "
                  f"{chain.restore_cpu_s:.1f} s a shard, {shards * chain.restore_cpu_s:.0f} s the worker's "
                  f"{shards}")


def format_4_changes(join: LabelJoin) -> JoinChanges:
    """:meth:`LabelJoin.take_changes` as delta format 4 wrote them: every record added or closed
    since the last checkpoint whole (or gone, if forgotten since), in (id key, time) order."""
    touched = set(join.added_keys()) | set(_closing_keys(b"".join(join._closings)))
    join.reset_changes()
    records, gone = join.current_records(sorted(touched))
    return JoinChanges(b"".join(records), gone, join._outside_table())


def delta_parts(settings: Settings, raw: Sequence[RawRecord], profiles: list[bytes], every: int) -> int:
    """What shard 0's delta after the run's last ``every`` batches is made of, in MB: the shard
    but its join (the reference profiles named: ``ShardProcessor._rest``), by attribute, and the
    join's changes, pickled. Returns the non-join part's bytes as a delta stores it (compressed)."""
    pipeline = local.InProcessPipeline(settings, profiles=profiles)
    shard = pipeline.shards[0]
    batch = settings.worker.batch_max_records
    last = (len(raw) - 1) // batch // every * every  # the first batch of the last delta
    for k, i in enumerate(range(0, len(raw), batch)):
        if k == last:
            shard.checkpoint(True)
            shard.track_changes()
        pipeline.feed(raw[i : i + batch])
    shared = shard._shared_profiles
    parts = {name: len(shared.dumps(value)[0]) for name, value in shard._rest().items()}
    body = shared.dumps(shard._rest())[0]
    rest, stored = len(body), len(dump_delta(body))
    join = len(pickle.dumps(shard.join.take_changes(), pickle.HIGHEST_PROTOCOL))
    shard.join.track_changes()
    big = ", ".join(f"{name} {size / 1e6:.3f}" for name, size in sorted(parts.items(), key=lambda kv: -kv[1])
                    if size > 20_000)
    print(f"a delta of shard 0 (after {len(raw) - last * batch:,} records of every shard): "
          f"the rest {rest / 1e6:.3f} MB pickled ({big}; {stored / 1e6:.3f} MB stored), "
          f"the join's changes {join / 1e6:.3f} MB pickled")
    return stored


if __name__ == "__main__":
    raise SystemExit(main())
