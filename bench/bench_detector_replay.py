"""Stage-1 detectors replayed alone, beside a baseline revision's modules (an A/B on the load of the moment).

bench_stages' workload (20 numeric + 5 categorical features, every prediction labelled, a training
profile with a multivariate section) runs once through the pure operators while three kinds of call
are recorded with their inputs:

- ``SequentialDetector.run_symbols`` (the CUSUM step of every feature's monitor), each with the
  detector as it stood before the call (pickled: a checkpoint's state);
- ``NumericDetector._symbols_at`` (a numeric feature's values to cell symbols), likewise;
- ``NormalScores.scores_by_feature`` (the multivariate section's normal scores, on the batch's
  (n, d) matrix).

Each is then replayed on fresh copies, alternating rounds between the current modules and the
baseline's (``--sequential FILE``, ``--multivariate FILE``: that revision's files, e.g. ``git show
REV:src/driftline/operators/sequential.py > /tmp/sequential_rev.py``; a baseline detector is the
same pickle loaded into the baseline's classes). The figures are CPU microseconds per prediction
event (``time.process_time``, best of ``--rounds``); the replay checks that both give the same
alarms (index, CUSUM, statistic), end statistics, symbols and scores, bit for bit, and exits 1 if
not.

    .venv/bin/python bench/bench_detector_replay.py [--n 30000] [--rounds 4] \
        [--sequential /tmp/sequential_rev.py] [--multivariate /tmp/multivariate_rev.py]
"""

from __future__ import annotations

import argparse
import io
import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from bench_stages import _run, _workload
from common import bench_settings, module_from_file

from driftline.operators import multivariate, sequential
from driftline.runtime import tune_gc

CLOCK = time.process_time



class _Recorder:
    """The recorded calls: (pickled detector, symbols, first_only), (pickled detector, values),
    (the reference's sorted points, the (n, d) matrix)."""

    def __init__(self) -> None:
        self.runs: list[tuple[bytes, np.ndarray, bool]] = []
        self.symbols: list[tuple[bytes, np.ndarray]] = []
        self.scores: list[tuple[list[str], list[np.ndarray], np.ndarray]] = []

    def record(self, settings: Any, raw: Sequence[Any], profiles: list[bytes]) -> None:
        run, symbols = sequential.SequentialDetector.run_symbols, sequential.NumericDetector._symbols_at
        scores = multivariate.NormalScores.scores_by_feature

        def on_run(det: Any, syms: np.ndarray, first_only: bool = False) -> Any:
            self.runs.append((pickle.dumps(det), syms.copy(), first_only))
            return run(det, syms, first_only)

        def on_symbols(det: Any, xs: Any) -> Any:
            self.symbols.append((pickle.dumps(det), np.array(xs, copy=True)))
            return symbols(det, xs)

        def on_scores(ns: Any, x: np.ndarray) -> Any:
            self.scores.append((ns.features, ns.sorted_reference, x.copy(order="K")))
            return scores(ns, x)

        patches: list[tuple[Any, str, Callable[..., Any]]] = [
            (sequential.SequentialDetector, "run_symbols", on_run),
            (sequential.NumericDetector, "_symbols_at", on_symbols),
            (multivariate.NormalScores, "scores_by_feature", on_scores),
        ]
        saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        try:
            _run(settings, raw, profiles, True)
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)


def _loader(module: ModuleType) -> Callable[[bytes], Any]:
    """Unpickles a detector into ``module``'s classes (the same state, another revision's code)."""
    if module is sequential:
        return pickle.loads

    class Unpickler(pickle.Unpickler):
        def find_class(self, owner: str, name: str) -> Any:
            if owner == sequential.__name__:
                return getattr(module, name)
            return super().find_class(owner, name)

    return lambda blob: Unpickler(io.BytesIO(blob)).load()


def _replay(rec: _Recorder, seq: ModuleType, mv: ModuleType) -> tuple[dict[str, float], list[Any]]:
    """One round on ``seq``/``mv``: CPU seconds per kind of call, and what the calls gave."""
    load = _loader(seq)
    seconds: dict[str, float] = {}
    dets = [load(blob) for blob, _, _ in rec.runs]  # unpickling is not timed
    t0 = CLOCK()
    runs = [det.run_symbols(syms, first_only)
            for det, (_, syms, first_only) in zip(dets, rec.runs, strict=True)]
    seconds["CUSUM step (run_symbols)"] = CLOCK() - t0
    results: list[Any] = [([(a.index, a.component, a.statistic, a.threshold) for a in alarms], used,
                           det._S.tolist()) for det, (alarms, used) in zip(dets, runs, strict=True)]
    dets = [load(blob) for blob, _ in rec.symbols]
    t0 = CLOCK()
    symbols = [det._symbols_at(xs) for det, (_, xs) in zip(dets, rec.symbols, strict=True)]
    seconds["numeric symbols (_symbols_at)"] = CLOCK() - t0
    results += [(s.tolist(), None if at is None else at.tolist()) for s, at in symbols]
    transforms = [(mv.NormalScores(features, points), x) for features, points, x in rec.scores]
    for ns, _ in transforms:
        ns.scores_by_feature(np.zeros((1, len(ns.features))))  # the flat arrays, built once per reference
    t0 = CLOCK()
    scores = [ns.scores_by_feature(x) for ns, x in transforms]
    seconds["multivariate scores (scores_by_feature)"] = CLOCK() - t0
    results += [u.tobytes() for u in scores]
    return seconds, results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="prediction events (each with a label)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sequential", type=Path, help="a baseline revision's operators/sequential.py")
    parser.add_argument("--multivariate", type=Path, help="a baseline revision's operators/multivariate.py")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, args.n, 0)
    rec = _Recorder()
    rec.record(settings, raw, profiles)
    sides = {"current": (sequential, multivariate)}
    if args.sequential or args.multivariate:
        sides["baseline"] = (
            module_from_file(args.sequential, "sequential_baseline") if args.sequential else sequential,
            module_from_file(args.multivariate, "multivariate_baseline") if args.multivariate
            else multivariate)
    best: dict[str, dict[str, float]] = {side: {} for side in sides}
    results: dict[str, list[Any]] = {}
    for _ in range(args.rounds):
        for side, (seq, mv) in sides.items():  # alternating: a load that changes weighs on both alike
            seconds, results[side] = _replay(rec, seq, mv)
            for kind, s in seconds.items():
                best[side][kind] = min(best[side].get(kind, s), s)
    print(f"{n_pred:,} predictions: {len(rec.runs):,} CUSUM steps, {len(rec.symbols):,} symbol lookups, "
          f"{len(rec.scores):,} multivariate batches; CPU us per prediction event, best of {args.rounds}")
    for kind in best["current"]:
        line = f"  {kind:<42} {best['current'][kind] / n_pred * 1e6:8.3f}"
        if "baseline" in best:
            old, new = best["baseline"][kind], best["current"][kind]
            line += f"   baseline {old / n_pred * 1e6:8.3f}   current/baseline {new / old:.2f}"
        print(line)
    if "baseline" in results:
        same = results["baseline"] == results["current"]
        print(f"  same alarms, statistics, symbols and scores as the baseline: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
