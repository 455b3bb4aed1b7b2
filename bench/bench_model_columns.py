"""Stage 1's decoder columns for the feature watch, per model of a batch of many models: a commit vs today.

With many models each decoded batch holds a few events of each, and the shard hands the feature
watch each model's float64 columns and other features' values (``columns_of`` in
``ShardProcessor._apply_prediction_batch``). This times that alone: ``--batches`` batches of
``--size`` events (20 float features, 5 categorical ones, as bench_models' models) over ``--models``
models in Zipf shares, every model's columns of each batch picked, with ``--base``'s way (shard.py
as of that commit: its ``_GroupedColumns`` where it has one, else a gather per model and column,
``_picked_features``) or today's (``_GroupedColumns``: the batch gathered once in the models'
order, a model's floats a copied slice), alternating (order flipped each round), thread
CPU, best of ``--rounds``. Both sides' columns (values, dtypes, names in order) must be equal, or
the run fails.

    .venv/bin/python bench/bench_model_columns.py [--base 0e6673d] [--models 1000] [--batches 60] [--size 250]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from common import environment, environment_line, module_at_revision

from driftline.operators.columns import FeatureColumns
from driftline.pipeline import shard

NUMERIC = [f"x{i}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]

Groups = dict[tuple[str, str], list[int]]


def batches(args: argparse.Namespace) -> list[tuple[FeatureColumns, Groups]]:
    """Decoded batches' feature columns and each model's rows in each (log order)."""
    rng = random.Random(1)
    shares = [(i + 1) ** -1.1 for i in range(args.models)]
    out = []
    for _ in range(args.batches):
        floats = [[rng.gauss(0.0, 1.0) for _ in range(args.size)] for _ in NUMERIC]
        others = [[rng.choice("abcde") for _ in range(args.size)] for _ in CATEGORICAL]
        features = FeatureColumns((*NUMERIC, *CATEGORICAL), [*floats, *others],
                                  [*(np.array(c) for c in floats), *[None] * len(others)])
        groups: Groups = {}
        for i, model in enumerate(rng.choices(range(args.models), shares, k=args.size)):
            groups.setdefault((f"m{model:04d}", "1"), []).append(i)
        out.append((features, groups))
    return out


def picked_before(module: Any) -> Callable[[FeatureColumns, Groups], dict[tuple[str, str], Any]]:
    """The base's way: its ``_GroupedColumns`` where it has one, else a gather per model and column."""
    grouped = getattr(module, "_GroupedColumns", None)

    def picked(features: FeatureColumns, groups: Groups) -> dict[tuple[str, str], Any]:
        if grouped is not None:
            made = grouped(features, groups)
            return {key: made.of(key) for key in groups}
        return {key: module._split_columns(module._picked_features(features, rows, False))
                for key, rows in groups.items()}
    return picked


def picked_now(features: FeatureColumns, groups: Groups) -> dict[tuple[str, str], Any]:
    grouped = shard._GroupedColumns(features, groups)
    return {key: grouped.of(key) for key in groups}


def _plain(columns: dict[tuple[str, str], Any]) -> list[Any]:
    return [(key, [(name, a.tolist(), str(a.dtype)) for name, a in floats.items()], list(others.items()))
            for key, (floats, others) in columns.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default="0e6673d", help="the commit whose shard.py is the base")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=250, help="events a batch (a shard's share)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(environment_line(environment()))
    sides = {"base": picked_before(module_at_revision(args.base, "src/driftline/pipeline/shard.py",
                                                      "shard_base")), "now": picked_now}
    work = batches(args)
    results = {side: [_plain(pick(f, g)) for f, g in work] for side, pick in sides.items()}
    if results["base"] != results["now"]:
        raise SystemExit("the columns differ")
    best = dict.fromkeys(sides, float("inf"))
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else reversed(list(sides)):
            pick = sides[side]
            t = time.thread_time()
            for features, groups in work:
                pick(features, groups)
            best[side] = min(best[side], time.thread_time() - t)
    events = args.batches * args.size
    groups = sum(len(g) for _, g in work)
    print(f"{args.models} models, {args.batches} batches of {args.size} "
          f"({groups / args.batches:.0f} models a batch), best of {args.rounds}: "
          f"{args.base} {best['base'] / events * 1e6:.2f} -> now "
          f"{best['now'] / events * 1e6:.2f} us an event ({best['base'] / best['now']:.2f}x); columns equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
