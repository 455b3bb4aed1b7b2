"""Where a model's memory goes on one worker: every part the pipeline holds, in bytes per model.

Runs bench_models' pipeline (``--models`` models x 25 features, each its own profile, a warm-up of
24 predictions per model, then ``--n`` Zipf predictions, 4 shards) in this process, then walks
what it holds: each part's deep size (``sys.getsizeof`` of every object reached through
``gc.get_referents``, arrays by their buffers; each object counted once, in the first part that
reaches it, so what is shared is counted where it is held first: the profiles, then the
detectors' tables shared per reference, then each shard's state by attribute, a bank's monitors
and detectors by attribute, then stage 2's by attribute). Also the RSS the pipeline added, before
and after ``malloc_trim``. Sizes, not timings: a loaded machine changes nothing but the wait.

    .venv/bin/python bench/bench_model_memory.py [--models 60] [--n 12000] [--top 30]

The sequential detectors' calibrations are read from (and added to) bench_models' directory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import types
from collections import defaultdict
from collections.abc import Sequence

import bench_models as bm
import numpy as np
from common import bench_settings

from driftline.operators import calibration, feature_watch, sequential
from driftline.pipeline.local import InProcessPipeline

_NOT_STATE = (type, types.ModuleType, types.BuiltinFunctionType, types.FunctionType, types.MethodType,
              types.CodeType)  # reached through functions and classes: the program, not its state


class DeepSizes:
    """Deep sizes of objects, each object counted once over every call."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, root: object) -> int:
        total, stack = 0, [root]
        while stack:
            obj = stack.pop()
            if id(obj) in self.seen or isinstance(obj, _NOT_STATE):
                continue
            self.seen.add(id(obj))
            total += sys.getsizeof(obj)
            if isinstance(obj, np.ndarray):  # getsizeof counts the buffer it owns; a view's base
                if obj.base is not None:
                    stack.append(obj.base)
                continue
            stack.extend(gc.get_referents(obj))
        return total


def parts_of(pipeline: InProcessPipeline, skip: object) -> dict[str, int]:
    """Bytes by part (see the module docstring); ``skip``: held elsewhere, not counted."""
    size = DeepSizes()
    size(skip)
    parts: dict[str, int] = defaultdict(int)
    for model in pipeline.models:
        parts["profiles (stage 2's, shared)"] += size(model.profiles)
    parts["detector tables (shared per reference)"] = size(dict(sequential._TABLES))
    parts["fresh bank templates (32 at most)"] = size(feature_watch._FRESH_BANKS)
    for shard in pipeline.shards:
        watch = shard.watch  # first: other attributes (a checkpoint's marks) reach its banks too
        for model_watch in watch._models.values() if watch is not None else ():
            bank = model_watch.bank
            for monitor in bank.monitors.values() if bank is not None else ():
                for name, value in vars(monitor).items():
                    if name == "_opener":
                        for attribute, held in vars(value).items():
                            parts[f"bank: detector {attribute}"] += size(held)
                    parts[f"bank: monitor {name}"] += size(value)
            parts["stage 1 watch (held events, rest)"] += size(model_watch)
        parts["stage 1 watch (held events, rest)"] += size(watch)
        for name, value in vars(shard).items():
            parts[f"stage 1 {name}"] += size(value)
    for model in pipeline.models:
        for name, value in vars(model).items():
            if name == "windows":
                for part, held in vars(value).items():
                    parts[f"stage 2 windows.{part}"] += size(held)
            else:
                parts[f"stage 2 {name}"] += size(value)
    return parts


def measure(models: int, n: int, top: int) -> None:
    settings = bench_settings("127.0.0.1:9", "bm")
    specs = bm.model_specs(models)
    profiles = bm.profiles_of(specs, 1000, settings)
    records, warm = bm.traffic(specs, n, settings)
    blobs = [p.model_dump_json().encode() for p in profiles]
    del profiles
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.malloc_trim(0)
    before = bm.rss_bytes()
    pipeline = InProcessPipeline(settings, profiles=blobs)
    batch = settings.worker.batch_max_records
    for i in range(0, len(records), batch):
        pipeline.feed(records[i : i + batch])
        bm._sink(pipeline)
    gc.collect()
    grown = bm.rss_bytes() - before
    libc.malloc_trim(0)
    trimmed = bm.rss_bytes() - before
    print(f"{models} models, {n:,} predictions after a warm-up of {warm:,} records: the pipeline added "
          f"{grown / 2**20:.1f} MB RSS ({grown / models / 1024:.0f} KB a model), "
          f"{trimmed / 2**20:.1f} MB after malloc_trim ({trimmed / models / 1024:.0f} KB a model)")
    parts = parts_of(pipeline, (settings, records, blobs))
    print(f"live objects {sum(parts.values()) / 2**20:.1f} MB; the {top} largest parts, KB a model:")
    for name, held in sorted(parts.items(), key=lambda item: -item[1])[:top]:
        print(f"{held / models / 1024:9.1f}  {name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=60)
    parser.add_argument("--n", type=int, default=12_000, help="Zipf predictions after the warm-up")
    parser.add_argument("--top", type=int, default=30, help="parts printed")
    args = parser.parse_args(argv)
    calibration.share_calibrations(bm.CALIBRATIONS)
    measure(args.models, args.n, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
