"""Stage 1's window buffers with many models, as of a commit against today's, in one process.

With many models each decoded batch holds a few events of each model, so each model's window buffer
(:class:`~driftline.operators.window_stats.WindowBuffer`) takes an append of 1-3 events a batch
(``_BatchColumns.take``), joining its small parts as they arrive (``EventColumns.concat``), and the
window's close lists them as the values form (``values_partial``). This times both, without the
rest of the pipeline: ``--batches`` batches of ``--size`` events (25 float features, a class label,
a score, a latency) spread over ``--models`` models at random, each model's events of a batch
appended to its buffer, then every buffer's values form, with ``window_stats`` as of ``--base``
(``git show``) or today's, alternating (order flipped each round), thread CPU, best of
``--rounds``. Both sides' values forms and buffered columns (every array's values and dtype, in
order, and the class each part pickles as) must be equal, or the run fails.

    .venv/bin/python bench/bench_buffer_joins.py [--base e7d6285] [--models 100] [--batches 60] [--size 300]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
from common import environment, module_at_revision

from driftline.operators import window_stats
from driftline.schemas.events import Prediction

NAMES = [f"f{i:02d}" for i in range(25)]


def batches(module: ModuleType, args: argparse.Namespace) -> list[tuple[Any, list[np.ndarray]]]:
    """Decoded batches (the decoder's float columns) and each model's rows in each."""
    rng = random.Random(1)
    out = []
    for _ in range(args.batches):
        columns = [[rng.gauss(0.0, 1.0) for _ in range(args.size)] for _ in NAMES]
        features = [dict(zip(NAMES, row, strict=True)) for row in zip(*columns, strict=True)]
        predictions = [Prediction(label=rng.choice(["0", "1", "2"]), score=rng.random())
                       for _ in range(args.size)]
        latencies = [rng.uniform(0.0, 9.0) for _ in range(args.size)]
        batch = module.EventColumns.of(features, predictions, latencies,
                                       (NAMES, columns, [np.array(c) for c in columns]))
        model_of = np.array([rng.randrange(args.models) for _ in range(args.size)])
        out.append((batch, [np.flatnonzero(model_of == m) for m in range(args.models)]))
    return out


def _block(block: Any) -> tuple[Any, ...]:
    arrays = (block.numbers, block.missing, block.codes, block.present)
    return block.n, [None if a is None else (a.tolist(), str(a.dtype)) for a in arrays], list(block.keys)


def _part(part: Any) -> tuple[Any, ...]:
    return (part.__reduce__()[0].__name__, part.n, [(name, _block(b)) for name, b in part.features.items()],
            _block(part.label), _block(part.value), _block(part.latency))


def run(module: ModuleType, sent: list[tuple[Any, list[np.ndarray]]]) -> tuple[float, float, str]:
    """Thread CPU of the appends and of the closes' values forms, and what both sides must equal."""
    buffers: dict[int, Any] = {}
    start = time.thread_time()
    for batch, groups in sent:
        for model, rows in enumerate(groups):
            if len(rows):
                buffers.setdefault(model, module.WindowBuffer()).append(batch.take(rows))
    appended = time.thread_time()
    partials = [module.values_partial(buffers[m].parts) for m in sorted(buffers)]
    closed = time.thread_time()
    return (appended - start, closed - appended,
            repr((partials, [[_part(p) for p in buffers[m].parts] for m in sorted(buffers)])))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default="e7d6285", help="the commit whose window_stats is the baseline")
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=300, help="events a batch")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    sides = {"base": module_at_revision(args.base, "src/driftline/operators/window_stats.py", "ws_base"),
             "now": window_stats}
    sent = {name: batches(module, args) for name, module in sides.items()}
    best: dict[str, tuple[float, float]] = {}
    load = [environment()["loadavg_1m_5m_15m"]]
    gc.disable()  # a collection's cost falls on whichever side it lands in: noise here
    for r in range(args.rounds):
        seen = {}
        for name in sides if r % 2 == 0 else reversed(list(sides)):
            appends, closes, seen[name] = run(sides[name], sent[name])
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], appends), min(old[1], closes))
        if seen["base"] != seen["now"]:
            raise SystemExit(f"values forms or buffered columns differ between {args.base} and today's")
    gc.enable()
    load.append(environment()["loadavg_1m_5m_15m"])
    events = args.batches * args.size
    print(f"{args.models} models' window buffers, {events} events in {args.batches} batches, {args.base} vs "
          f"today's window_stats, thread CPU, best of {args.rounds} (alternating), values forms and columns "
          f"identical; load {load[0]} -> {load[1]}")
    for i, what in enumerate(("appends (take and join)", "closes (values_partial)")):
        old, new = best["base"][i], best["now"][i]
        print(f"  {what:24s}: {old / events * 1e6:.2f} -> {new / events * 1e6:.2f} us an event "
              f"({new / old:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
