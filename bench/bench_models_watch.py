"""Stage 1's feature watch with many models: the watch as of a commit against today's, in one process.

With many models a shard's batch holds a few events of each, and its :class:`FeatureWatch` holds
them until 64 make a batch or a grid line is due (``flush_due``); its per-model costs (holding a
group, feeding a model's few events to 25 monitors) are what issue 19's per-event ratio is partly
made of (docs/scaling.md, "Where many models' per-event cost goes").

Runs bench_models' pipeline (``--models`` models x 25 features, each its own profile, a warm-up
of 24 predictions per model, then ``--n`` Zipf predictions, 4 shards) and the same with all
traffic on one model (as bench_models' ratio), once per watch and round in this process, the
shards' ``FeatureWatch`` either today's or ``--baseline``'s (its sequential, episodes and
feature_watch modules as of that commit, see bench_feature_watch_groups), alternating (order
flipped each round), and prints for each: stage 1's, the watches' (``observe`` and ``flush_due``)
and the pipeline's CPU per prediction (thread CPU, the timed part after the warm-up), best of
``--rounds``, the many/one ratio, and a SHA-256 of every output row, which must be equal for both
watches. Each side holds as many events as its module's ``BATCH_EVENTS`` says.

    .venv/bin/python bench/bench_models_watch.py [--models 100] [--n 30000] [--rounds 3] [--baseline HEAD]

``--flush EVENTS PARTS``: the watch alone at a grid line, where a shard feeds every quiet model
it holds (``flush_due``): ``--models`` models (20 numeric + 5 categorical features, and a
profiled ``__score__`` no event carries, as bench_models' profiles), each holding EVENTS events
in PARTS groups handed over as a shard does (value rows, the float columns as one block, value
lists), then one flush; CPU per model fed, before vs now, alternating, best of ``--rounds``,
reports compared.
With ``--own-tables`` each model's monitors get calibration tables of their own (their
coefficients scaled by 1 + a few ulps, so no two models share memory), as bench_models' models,
each with its own profile, have: the flush then reads them cold, as a worker with 1,000 models does.

``--flush EVENTS PARTS --warm``: how much of that is the models' state read cold. Today's watch
only, each model with tables of its own, each model fed twice a round either way: cold, every
model held and fed at one flush, twice (a model's monitors last read ``--models`` models ago);
warm, model by model, its events held and fed, then held and fed again at once, the second feed
timed (its state read a moment before). The same code, values and state either way, alternating,
best of ``--rounds``: the difference is what reading the state cold costs (the warm side also
pays a flush call per model).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_models as bm
import numpy as np
from bench_feature_watch_groups import _baseline_watch_class
from bench_models_buffer import _timed, timed_feed
from common import bench_settings

from driftline.config import Settings
from driftline.operators import calibration
from driftline.operators.feature_rows import FeatureRows
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.float_block import FloatBlock
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline
from driftline.runtime import tune_gc


def timed_watch(cls: Any, spent: list[float]) -> Any:
    """``cls`` with the thread CPU of its observe and flush_due calls added to ``spent[0]``."""

    class Timed(cls):
        observe = _timed(cls.observe, spent)
        flush_due = _timed(cls.flush_due, spent)

    return Timed


@contextmanager
def watch_class(cls: Any, spent: list[float]) -> Iterator[None]:
    """The shards made meanwhile watch features with ``cls`` (timed into ``spent``), holding as
    many events as ``cls``'s module says (``BATCH_EVENTS``)."""
    saved = shard_module.FeatureWatch, shard_module.BATCH_EVENTS
    shard_module.FeatureWatch = timed_watch(cls, spent)
    shard_module.BATCH_EVENTS = sys.modules[cls.__module__].BATCH_EVENTS
    try:
        yield
    finally:
        shard_module.FeatureWatch, shard_module.BATCH_EVENTS = saved


def run_once(settings: Settings, blobs: list[bytes], records: list[RawRecord], warm: int,
             watch: list[float]) -> dict[str, Any]:
    """One run (bench_models_buffer's): stage 1's, the watches' (``watch``: their timer) and the
    pipeline's CPU a prediction after the warm-up, the rows' digest. The collector as a worker
    tunes it (as bench_models' run)."""
    tune_gc()
    pipeline = InProcessPipeline(settings, profiles=blobs)

    def reset_watch() -> None:
        watch[0] = 0.0

    stage1, total, digest = timed_feed(pipeline, records, warm, settings.worker.batch_max_records,
                                       reset_watch)
    predictions = sum(1 for r in records[warm:] if r.topic == settings.topics.predictions)
    return {"stage1_us": stage1 / predictions * 1e6, "total_us": total / predictions * 1e6,
            "watch_us": watch[0] / predictions * 1e6, "digest": digest}


def _flush_inputs(models: int, events: int, parts: int) -> tuple[list[Any], list[list[tuple[Any, ...]]]]:
    """Profiles and each model's groups (times, ids, value rows, float columns, value lists)."""
    rng = np.random.default_rng(0)
    numeric, categorical = [f"x{i}" for i in range(20)], [f"c{i}" for i in range(5)]
    table: dict[str, Any] = {name: rng.normal(size=1000) for name in [*numeric, "__score__"]}
    table.update({name: rng.choice(["a", "b", "c"], 1000).tolist() for name in categorical})
    profiles = [build_profile(f"m{i}", "1", table, label_column=None, prediction_column=None, bins=10,
                              top_k=5, created_at_ms=0, source="training") for i in range(models)]
    layout = (*categorical, *numeric)
    groups = []
    for _ in range(models):
        mine = []
        for part in range(parts):
            rows = [(*rng.choice(["a", "b", "c"], 5).tolist(), *rng.normal(size=20).tolist())
                    for _ in range(events)]
            # one block, as a shard hands a model of a many-model batch (shard._GroupedColumns)
            floats = FloatBlock(tuple(numeric), np.array([[row[5 + j] for row in rows] for j in range(20)]))
            others = {name: [row[j] for row in rows] for j, name in enumerate(categorical)}
            times = [1000 + part * 100 + i for i in range(events)]
            mine.append((times, [f"p{t}" for t in times], FeatureRows(layout, rows), floats, others))
        groups.append(mine)
    return profiles, groups


def _own_tables(watch: Any, model_id: str, index: int) -> None:
    """Give the model's monitors tables of their own (see the module docstring): the same
    thresholds to within a few ulps, the memory not shared with any other model's."""
    for monitor in watch._models[(model_id, "1")].bank.monitors.values():
        detector = monitor._opener
        detector._flush()
        scale = 1 + (index + 1) * 2e-16
        if detector.kind == "numeric":
            detector._coef = detector._coef * scale
        else:
            detector._a = detector._a * scale
        detector._derive()


def flush_ab(classes: dict[str, Any], models: int, events: int, parts: int, rounds: int,
             own_tables: bool = False) -> None:
    """Print the CPU a quiet model's held events cost to feed at a grid line, per side."""
    profiles, groups = _flush_inputs(models, events, parts)
    watches = {}
    for side, cls in classes.items():
        watch = cls(false_alarms_per_million=1.0, status_grid_ms=10**12, batch_events=64)
        for index, (profile, mine) in enumerate(zip(profiles, groups, strict=True)):  # banks built, settled
            watch.add_profile(profile)
            watch.observe(profile.model_id, "1", *mine[0][:2], mine[0][2], mine[0][3], mine[0][4])
            if own_tables:
                watch.flush()
                _own_tables(watch, profile.model_id, index)
        watch.flush()
        watches[side] = watch
    best = dict.fromkeys(classes, math.inf)
    fed: dict[str, Any] = {}
    for r in range(rounds):
        for side in classes if r % 2 == 0 else reversed(classes):
            watch = watches[side]
            for profile, mine in zip(profiles, groups, strict=True):
                for group in mine:
                    watch.observe(profile.model_id, "1", *group)
            gc.collect()
            gc.disable()
            t = time.process_time()
            fed[side] = watch.flush()
            best[side] = min(best[side], time.process_time() - t)
            gc.enable()
    before, now = (best[side] / models * 1e6 for side in classes)
    tables = " (own tables)" if own_tables else ""
    print(f"{models} models{tables} each holding {events} event(s) in {parts} part(s), one flush: "
          f"{before:.1f} -> {now:.1f} CPU-us a model fed ({now / before:.2f}x), best of {rounds}; reports "
          f"{'equal' if fed['before'] == fed['now'] else 'DIFFER'}")


def flush_cold_warm(models: int, events: int, parts: int, rounds: int) -> None:
    """Print the CPU a model fed costs with its state read cold and warm (see the module docstring)."""
    profiles, groups = _flush_inputs(models, events, parts)
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**12, batch_events=64)
    for index, (profile, mine) in enumerate(zip(profiles, groups, strict=True)):
        watch.add_profile(profile)
        watch.observe(profile.model_id, "1", *mine[0][:2], mine[0][2], mine[0][3], mine[0][4])
        watch.flush()
        _own_tables(watch, profile.model_id, index)
    pairs = list(zip(profiles, groups, strict=True))

    def hold(which: list[tuple[Any, Any]]) -> None:
        for profile, mine in which:
            for group in mine:
                watch.observe(profile.model_id, "1", *group)

    hold(pairs)  # once untimed: what the new tables' first feed builds (e.g. the lanes)
    watch.flush()
    spent: dict[str, list[float]] = {"cold": [], "warm": []}
    for r in range(rounds):
        for side in ("cold", "warm") if r % 2 == 0 else ("warm", "cold"):
            gc.collect()
            gc.disable()
            total = 0.0
            for fed in [pairs, pairs] if side == "cold" else [[pair] for pair in pairs]:
                if side == "warm":  # the same feed just before, untimed: its state in the caches
                    hold(fed)
                    watch.flush()
                hold(fed)
                t = time.process_time()
                watch.flush()
                total += time.process_time() - t
            gc.enable()
            spent[side].append(total / (2 * models if side == "cold" else models) * 1e6)
    cold, warm = min(spent["cold"]), min(spent["warm"])
    print(f"{models} models (own tables) each holding {events} event(s) in {parts} part(s), each fed twice "
          f"a round: cold {cold:.1f}, warm {warm:.1f} CPU-us a model fed ({warm / cold:.2f}x), best of "
          f"{rounds} (rounds {[round(x, 1) for x in spent['cold']]} and "
          f"{[round(x, 1) for x in spent['warm']]})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--n", type=int, default=30_000, help="Zipf predictions after the warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="HEAD", help="the commit whose watch is the 'before' side")
    parser.add_argument("--flush", nargs=2, type=int, metavar=("EVENTS", "PARTS"),
                        help="the watch alone: a grid line's flush of quiet models (module docstring)")
    parser.add_argument("--own-tables", action="store_true",
                        help="--flush: each model's monitors read tables of their own (module docstring)")
    parser.add_argument("--warm", action="store_true",
                        help="--flush: a model fed with its state read cold vs warm (module docstring)")
    args = parser.parse_args(argv)
    if args.flush and args.warm:
        flush_cold_warm(args.models, *args.flush, args.rounds)
        return 0
    if args.flush:
        with tempfile.TemporaryDirectory() as tmp:
            flush_ab({"before": _baseline_watch_class(args.baseline, Path(tmp)), "now": FeatureWatch},
                     args.models, *args.flush, args.rounds, args.own_tables)
        return 0
    calibration.share_calibrations(bm.CALIBRATIONS)
    settings = bench_settings("127.0.0.1:9", "bm")
    specs = bm.model_specs(args.models)
    blobs = [p.model_dump_json().encode() for p in bm.profiles_of(specs, 1000, settings)]
    inputs = {"many": (blobs, *bm.traffic(specs, args.n, settings)),
              "one": (blobs[:1], *bm.traffic(specs[:1], args.n, settings))}
    with tempfile.TemporaryDirectory() as tmp:  # the baseline's modules, kept while they run
        sides = {"before": _baseline_watch_class(args.baseline, Path(tmp)), "now": shard_module.FeatureWatch}
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else reversed(sides):
                for which, (profiles, records, warm) in inputs.items():
                    spent = [0.0]
                    with watch_class(sides[side], spent):
                        got = run_once(settings, profiles, records, warm, spent)
                    print(f"round {r} {side} {which}: stage 1 {got['stage1_us']:.1f} us, pipeline "
                          f"{got['total_us']:.1f} us, watch {got['watch_us']:.1f} us a prediction; rows "
                          f"{got['digest'][:16]}", flush=True)
                    seen = best.setdefault((side, which), got)
                    for key in ("stage1_us", "total_us", "watch_us"):
                        seen[key] = min(seen[key], got[key])
    same = all(best[("before", w)]["digest"] == best[("now", w)]["digest"] for w in inputs)
    for side in sides:
        many, one = best[(side, "many")], best[(side, "one")]
        print(f"{side} ({args.baseline if side == 'before' else 'today'}): {args.models} models "
              f"{many['total_us']:.1f} vs one model {one['total_us']:.1f} CPU-us a prediction "
              f"({many['total_us'] / one['total_us']:.2f}x); stage 1 {many['stage1_us']:.1f} vs "
              f"{one['stage1_us']:.1f}; the watch {many['watch_us']:.1f} vs {one['watch_us']:.1f}")
    print(f"best of {args.rounds}, {args.n:,} predictions; rows {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
