"""The feature watch's own cost on bench_models' many-model workload, old code against new.

bench_models' figures hold the whole pipeline, whose runs on this box move more from one to the next
than a change to one operator does. This records what each stage-1 shard's ``FeatureWatch`` is
asked during the timed part of bench_models' kept 1,000-model workload (its state after the
warm-up, then every ``observe_grouped``, ``flush_due``, ``observe`` and ``flush`` call with its
arguments) and replays those calls to FeatureWatch as of ``--ab REV`` (its feature_watch, episodes
and sequential modules, as bench_feature_watch_groups loads them) and to today's, in one process,
alternating which goes first, the collector off while timed.

By default one recorded batch (shard 0's first ``observe_grouped``: ~300 models' groups of a few
events) is fed ``--repeat`` times to a fresh watch of each side, best of ``--rounds``, CPU per
group: what the grouped loop costs with the models' state at hand (the same models every time),
which resolves a change of a few percent in it. ``--whole`` replays every recorded call of
``--shards`` instead, each round from freshly unpickled state and arguments (calls loaded once
favoured the side whose objects were allocated first), and prints the best round's CPU per
method and whether both sides returned the same reports: the cost with the models' state read
cold, as in the pipeline, but its rounds move with where the unpickled objects land (two runs
against a revision with the same ``flush_due`` read it at 0.81x and 1.07x): it resolves only
changes of more than ~20 %.

    .venv/bin/python bench/bench_models.py --models 1000 --n 100000 --rate 5000 --data DIR   # once
    .venv/bin/python bench/bench_watch_replay.py --data DIR --ab REV [--repeat 6] [--rounds 8]
    .venv/bin/python bench/bench_watch_replay.py --data DIR --ab REV --whole [--shards 0,1] [--rounds 6]

The first run records ``DIR/watch-calls.pickle`` (~0.7 GB for 4 shards, ~2 minutes); delete it when
the pipeline's code before the watch (what it is asked) or the watch's pickled form changed. The
recording is today's: a REV whose FeatureWatch pickles differently cannot read it. A shard's timed
part ends with the grid line at which every model's held events are fed (``flush_due``), which is
a window close's cost in bench_models' terms; ``observe_grouped`` is the cost between closes.
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_feature_watch_groups import _BASE_MODULES, _baseline_watch_class
from bench_models import CALIBRATIONS, _sink, warmed_from

from driftline.operators import calibration

RECORDED = ("observe_grouped", "flush_due", "observe", "flush")
Recording = dict[int, tuple[bytes, list[bytes]]]  # shard -> (its watch pickled, its calls pickled)


def record(data: Path) -> Recording:
    """Each shard's watch after bench_models' warm-up of the kept many-model workload, and the calls
    it gets in the timed part (each pickled as it is made: later batches cannot change it)."""
    pipeline, records, warm = warmed_from(data, "many")
    batch = pipeline.settings.worker.batch_max_records
    recording: Recording = {}
    for s, shard in enumerate(pipeline.shards):
        watch = shard.watch
        assert watch is not None, "bench_models' settings watch features"
        calls: list[bytes] = []
        recording[s] = (pickle.dumps(watch, pickle.HIGHEST_PROTOCOL), calls)
        for name in RECORDED:
            setattr(watch, name, _recorded(getattr(watch, name), name, calls))
    for i in range(warm, len(records), batch):
        pipeline.feed(records[i : i + batch])
        _sink(pipeline)
    return recording


def _recorded(method: Callable[..., Any], name: str, calls: list[bytes]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(pickle.dumps((name, args, kwargs), pickle.HIGHEST_PROTOCOL))
        return method(*args, **kwargs)
    return call


class _AsOf(pickle.Unpickler):
    """Unpickles the watch's classes as the REV copies of their modules (``base_<name>``)."""

    def find_class(self, module: str, name: str) -> Any:
        for base in _BASE_MODULES:
            if module == f"driftline.operators.{base}":
                module = f"base_{base}"
        return super().find_class(module, name)


def _loads(data: bytes, old: bool) -> Any:
    return (_AsOf if old else pickle.Unpickler)(io.BytesIO(data)).load()


def replay(recording: Recording, rounds: int) -> tuple[dict[tuple[bool, str], float], bool]:
    """Best CPU-s a round per (old?, method) and whether both sides' results are equal."""
    best: dict[tuple[bool, str], float] = {}
    results: dict[bool, str] = {}
    for r in range(rounds):
        for old in (True, False) if r % 2 else (False, True):
            calls = {s: [_loads(c, old) for c in cs] for s, (_, cs) in recording.items()}
            watches = {s: _loads(w, old) for s, (w, _) in recording.items()}
            for watch in watches.values():  # what a shard's watch has at hand after the warm-up
                watch._held_models()
                for model in watch._models.values():
                    if model.bank is not None:
                        model.bank.numeric, model.bank.others  # noqa: B018 (cached on first use)
            spent: dict[str, float] = dict.fromkeys(RECORDED, 0.0)
            got = []
            gc.collect()
            gc.disable()
            try:
                for s, watch in watches.items():
                    for name, args, kwargs in calls[s]:
                        started = time.process_time()
                        got.append(getattr(watch, name)(*args, **kwargs))
                        spent[name] += time.process_time() - started
            finally:
                gc.enable()
            for name, cpu in spent.items():
                best[(old, name)] = min(best.get((old, name), math.inf), cpu)
            results[old] = repr(got)
            del calls, watches, got
    return best, results[True] == results[False]


def repeated_batch(recording: Recording, repeat: int, rounds: int) -> tuple[float, float, int]:
    """Shard 0's first grouped batch fed ``repeat`` times to a fresh watch of each side (after one
    untimed feed), alternating: (best CPU-us a group then, now, groups a batch)."""
    state, calls = recording[0]
    first = next(call for call in calls if pickle.loads(call)[0] == "observe_grouped")
    best = {True: math.inf, False: math.inf}
    groups = 0
    for r in range(rounds):
        for old in (True, False) if r % 2 else (False, True):
            watch = _loads(state, old)
            grouped = _loads(first, old)[1][0]
            groups = len(grouped.keys)
            watch.observe_grouped(grouped)
            gc.disable()
            try:
                started = time.process_time()
                for _ in range(repeat):
                    watch.observe_grouped(grouped)
                spent = time.process_time() - started
            finally:
                gc.enable()
            best[old] = min(best[old], spent / repeat / groups * 1e6)
            del watch
    return best[True], best[False], groups


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="bench_models' kept workload (its --data DIR)")
    parser.add_argument("--ab", required=True, metavar="REV", help="the revision to compare with")
    parser.add_argument("--whole", action="store_true", help="replay every recorded call (cold state)")
    parser.add_argument("--shards", default="0,1", help="with --whole: the shards replayed (default 0,1)")
    parser.add_argument("--repeat", type=int, default=6, help="feeds of the batch a round (default 6)")
    parser.add_argument("--rounds", type=int, default=None, help="best of (default 8; 6 with --whole)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "many.pickle").exists():
        sys.exit(f"no workload in {args.data}: run bench/bench_models.py --models 1000 --n 100000 "
                 f"--rate 5000 --data {args.data} first")
    calibration.share_calibrations(CALIBRATIONS)
    kept = args.data / "watch-calls.pickle"
    if not kept.exists():
        with kept.open("wb") as f:
            pickle.dump(record(args.data), f, pickle.HIGHEST_PROTOCOL)
    with kept.open("rb") as f:
        recording: Recording = pickle.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        _baseline_watch_class(args.ab, Path(tmp))
        if not args.whole:
            then, now, groups = repeated_batch(recording, args.repeat, args.rounds or 8)
            print(f"FeatureWatch.observe_grouped, shard 0's first batch of {args.data} ({groups} groups) "
                  f"fed {args.repeat} times, best of {args.rounds or 8}: {then:.2f} CPU-us a group as of "
                  f"{args.ab} vs {now:.2f} today ({now / then:.3f}x)")
            return 0
        shards = [int(s) for s in args.shards.split(",")]
        best, equal = replay({s: recording[s] for s in shards}, args.rounds or 6)
    print(f"FeatureWatch replayed, shards {args.shards} of {args.data}, best of {args.rounds or 6} CPU-ms a "
          f"round, {args.ab} vs today's; results equal: {equal}")
    for name in RECORDED:
        then, now = best[(True, name)], best[(False, name)]
        if then or now:
            print(f"  {name}: {then * 1e3:.1f} vs {now * 1e3:.1f} ({now / max(then, 1e-12):.3f}x)")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
