"""What stage 1's checkpoints cost on the bench workload, under the runner's base/delta policy.

The pure operators (InProcessPipeline, 4 shards, the bench workload of bench_pipeline (4b): 20
numeric + 5 categorical features, every prediction labelled, a training profile) are fed in
batches of ``worker.batch_max_records``; every ``--every`` batches each shard is checkpointed as
the worker does (``streams.runner``): a base (``base_copy`` then its dump) when
``ChainLength.base_due`` says so, else a delta (``checkpoint(False)``). Reported: bases and deltas
written and their CPU time, with ``RATIO_FLOOR_BYTES`` at 0 (``worker.checkpoint_delta_ratio``
alone, as before it) and at its value, in alternating rounds of one process.

    .venv/bin/python bench/bench_checkpoints.py [--n 100000] [--every 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from common import bench_scenario, bench_settings, raw_records

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.validate import RawRecord
from driftline.pipeline import local
from driftline.streams import runner

CLOCK = time.process_time


def checkpoint_cpu(settings: Settings, raw: Sequence[RawRecord], profiles: list[bytes], every: int,
                   floor: int) -> dict[str, tuple[int, float]]:
    """{"base"/"delta": (how many, CPU seconds)} of a run with ``RATIO_FLOOR_BYTES = floor``."""
    saved = runner.RATIO_FLOOR_BYTES
    runner.RATIO_FLOOR_BYTES = floor
    try:
        pipeline = local.InProcessPipeline(settings, profiles=profiles)
        for shard in pipeline.shards:
            shard.track_changes()
        chains: dict[int, runner.ChainLength] = {}
        out = {"base": [0, 0.0], "delta": [0, 0.0]}
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
                if base:
                    chains[index] = runner.ChainLength(len(blob))
                elif chain is not None:
                    chain.deltas += 1
                    chain.delta_bytes += len(blob)
                    chain.changed += changed
        return {kind: (int(n), float(s)) for kind, (n, s) in out.items()}
    finally:
        runner.RATIO_FLOOR_BYTES = saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="prediction events (each with a label)")
    parser.add_argument("--every", type=int, default=4, help="batches between two checkpoints")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    settings = bench_settings("127.0.0.1:9", "bc")
    scenario = bench_scenario(args.n, 0)
    raw = raw_records(settings, scenario)
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        scenario, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)]
    print(f"load {os.getloadavg()[0]:.1f}; {args.n:,} predictions + labels, 4 shards, a checkpoint every "
          f"{args.every} batches of {settings.worker.batch_max_records}")
    totals: dict[int, list[float]] = {}
    for _ in range(args.rounds):
        for floor in (0, runner.RATIO_FLOOR_BYTES):
            got = checkpoint_cpu(settings, raw, profiles, args.every, floor)
            total = got["base"][1] + got["delta"][1]
            totals.setdefault(floor, []).append(total)
            print(f"  RATIO_FLOOR_BYTES {floor >> 20:>3} MiB: {got['base'][0]} bases "
                  f"({got['base'][1]:.2f} CPU-s), {got['delta'][0]} deltas ({got['delta'][1]:.2f} CPU-s): "
                  f"{total:.2f} CPU-s")
    before, after = min(totals[0]), min(totals[runner.RATIO_FLOOR_BYTES])
    print(f"checkpoint CPU, best of {args.rounds}: {before:.2f} -> {after:.2f} CPU-s "
          f"({after / before:.2f}x); load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
