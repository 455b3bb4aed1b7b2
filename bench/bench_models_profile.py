"""Where many models' CPU goes: bench_models' pipeline under cProfile, split by what drives it.

Runs bench_models' workload (``--models`` models x 25 features, each its own profile, Zipf traffic
at ``--rate`` predictions/s in all (100), after the warm-up) in process under cProfile and prints the share of
the profiled CPU in each part that is paid per model per window or grid line, whatever the
model's traffic (time-driven), against the rest (event-driven):

- stage 2's window and outcome work (``ModelProcessor.process``: merge, score, rows), of it the
  scorers built on each model's first scored window;
- stage 1's window closes (partials made and sent);
- the grid line's flush of held events (``FeatureWatch.flush_due``).

    .venv/bin/python bench/bench_models_profile.py [--models 1000] [--n 30000] [--rate 100] [--top 0]
        [--young 0]

The time-driven parts' share per prediction falls as the rate rises (their work is paid per second
of event time); ``--top N`` also lists the N functions with the most CPU of their own, to find
what the event-driven rest spends. ``--young N`` runs the same traffic without the profiler and
prints, at each of the first N generation-0 collections after the warm-up, how many tracked objects
the collector found young, by type: the state it scans (docs/scaling.md, the collector's part).

Shares under cProfile, not absolute costs (the profiler adds a fixed cost per call); the
calibrations are read from bench_models' cache directory (a first run calibrates, ~0.8 CPU-s a
model).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import bench_models as bm
from common import bench_settings

from driftline.operators import calibration
from driftline.pipeline.local import InProcessPipeline
from driftline.runtime import tune_gc

PARTS = {  # (file suffix, line's function name): what it is
    "stage 2: windows and outcomes (ModelProcessor.process)": ("pipeline/model.py", "process"),
    "  of it: scorers built on a model's first scored window": ("operators/scorer.py", "__init__"),
    "stage 1: window closes (_close_windows)": ("pipeline/shard.py", "_close_windows"),
    "stage 1: grid line's flush of held events (flush_due)": ("operators/feature_watch.py", "flush_due"),
}
TIME_DRIVEN = ("stage 2: windows and outcomes (ModelProcessor.process)",
               "stage 1: window closes (_close_windows)",
               "stage 1: grid line's flush of held events (flush_due)")


class YoungCensus:
    """While installed (``with``), counts the young tracked objects by type at each of the first
    ``collections`` generation-0 collections (``gc.callbacks``; each census walks generation 0)."""

    def __init__(self, collections: int) -> None:
        self.collections = collections
        self.counts: list[Counter[str]] = []

    def __enter__(self) -> YoungCensus:
        gc.callbacks.append(self._on_collection)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 0 and len(self.counts) < self.collections:
            self.counts.append(Counter(type(obj).__name__ for obj in gc.get_objects(0)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--n", type=int, default=30_000, help="Zipf predictions after the warm-up")
    parser.add_argument("--rate", type=float, default=bm.RATE, help="predictions per second over all models")
    parser.add_argument("--top", type=int, default=0, help="also list the N functions with most own CPU")
    parser.add_argument("--young", type=int, default=0,
                        help="no profile: the young objects by type at the first N gen-0 collections")
    args = parser.parse_args(argv)
    calibration.share_calibrations(bm.CALIBRATIONS)
    settings = bench_settings("127.0.0.1:9", "bm")
    specs = bm.model_specs(args.models)
    profiles = bm.profiles_of(specs, 1000, settings)
    records, warm = bm.traffic(specs, args.n, settings, args.rate)
    tune_gc()
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    batch = settings.worker.batch_max_records
    for i in range(0, warm, batch):
        pipeline.feed(records[i: min(i + batch, warm)])
        pipeline.rows.clear()  # a worker's sink writes them
    if args.young:
        with YoungCensus(args.young) as census:
            for i in range(warm, len(records), batch):
                pipeline.feed(records[i: i + batch])
                pipeline.rows.clear()
        if not census.counts:
            print("no generation-0 collection after the warm-up (raise --n or --models)")
        for k, counts in enumerate(census.counts):
            print(f"generation-0 collection {k + 1} after the warm-up: {sum(counts.values()):,} young "
                  "tracked objects; " + ", ".join(f"{name} {c:,}" for name, c in counts.most_common(12)))
        return 0
    profiler = cProfile.Profile()
    cpu = time.process_time()
    profiler.enable()
    for i in range(warm, len(records), batch):
        pipeline.feed(records[i: i + batch])
        pipeline.rows.clear()
    profiler.disable()
    cpu = time.process_time() - cpu
    predictions = sum(1 for r in records[warm:] if r.topic == settings.topics.predictions)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in stats.values())
    shares = {}
    for label, (suffix, name) in PARTS.items():
        shares[label] = sum(ct for (path, _, func), (_, _, _, ct, _) in stats.items()
                            if path.endswith(suffix) and func == name) / total
    print(f"{args.models} models, {predictions:,} predictions at {args.rate:,.0f}/s after the warm-up: "
          f"{cpu / predictions * 1e6:.1f} CPU-us a prediction under cProfile")
    for label, share in shares.items():
        print(f"  {share:6.1%}  {label}")
    driven = sum(shares[label] for label in TIME_DRIVEN)
    print(f"  {driven:6.1%}  time-driven in all; {1 - driven:.1%} the rest (decode, join, buffers, routing, "
          "the watch's own batches)")
    if args.top:
        print("functions with the most own CPU (share of the profiled CPU; calls per prediction):")
        ranked = sorted(stats.items(), key=lambda item: -item[1][2])[: args.top]
        for (path, line, func), (_, calls, tt, _, _) in ranked:
            where = "/".join(path.split("/")[-2:])
            print(f"  {tt / total:6.1%}  {calls / predictions:8.2f}  {func} ({where}:{line})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
