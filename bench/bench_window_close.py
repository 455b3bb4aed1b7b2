"""Stage 2's CPU per closed window (issue 19: 1,000 models close a window every ~27 predictions,
most of them under-filled), today's code against a base commit's, in one process.

Stage 2's window code (``window_stats``, ``drift``, ``scorer``, ``to_rows``, ``windows``) as of
``--base`` is loaded beside the checkout's (``git show``, each base module importing the base
versions of the ones before it), and each side's :class:`~driftline.pipeline.windows.WindowClock`
takes the same shards' partials (the values form a shard sends for fewer than ``drift.min_count``
events, a sketch partial for more) against one of bench_models' 25-feature profiles: every window's
partials arrive (``add_partial``: parsed and checked), every shard's progress passes its end and
the clock closes it (merge, score, rows, the retrain policy). Three cases, alternating sides each
round, thread CPU, best of ``--rounds``:

- **under-filled**: windows of 1-26 events over 4 shards (bench_models' ``partial_windows``), the
  model's scorer already built (a model's later windows);
- **filled**: windows of 100-400 events over 4 shards (scored: sketches merged, KS and the rest);
- **first window**: the under-filled windows again, each on a fresh clock, so each one's close
  builds the model's :class:`~driftline.operators.scorer.DriftScorer` (once per model and process;
  at 1,000 models, ~1,000 of them in the first minutes).

Both sides' rows and triggers are compared (orjson bytes, every table, every window; the run
fails unless equal).

    .venv/bin/python bench/bench_window_close.py [--base COMMIT] [--now COMMIT] [--n 150] [--rounds 21]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import bench_models as bm
import orjson
from common import START_MS, bench_settings, environment, module_at_revision

from driftline.config import Settings
from driftline.demo.training import LABEL, PREDICTION, training_columns, training_scenario
from driftline.operators import drift, scorer, window_stats
from driftline.operators.profile import ReferenceProfile
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.window_stats import EventColumns
from driftline.pipeline import to_rows, windows
from driftline.pipeline.records import Partial
from driftline.pipeline.references import ProfileBook
from driftline.schemas.events import Prediction
from driftline.simulate import Scenario

BASE = "4aabba7"  # before this bench's changes
# in import order: each base module imports the base versions of those before it
MODULES = {"driftline.operators.window_stats": window_stats, "driftline.operators.drift": drift,
           "driftline.operators.scorer": scorer, "driftline.pipeline.to_rows": to_rows,
           "driftline.pipeline.windows": windows}
SIZE_S = 300  # bench_settings' smallest window: the retrain policy's window too


def modules_at(commit: str) -> dict[str, ModuleType]:
    """Stage 2's window modules as of ``commit``, each importing that commit's versions of those
    before it (today's package otherwise); sys.modules is left as it was."""
    saved = dict(MODULES)
    loaded: dict[str, ModuleType] = {}
    try:
        for name in MODULES:
            path = "src/" + name.replace(".", "/") + ".py"
            loaded[name] = sys.modules[name] = module_at_revision(commit, path, f"{commit}_{name}")
    finally:
        sys.modules.update(saved)
    return loaded


def shard_partials(events: int, n: int, settings: Settings, seed_offset: int = 0) -> list[list[Partial]]:
    """``n`` windows of model 0, window ``w`` holding ``events + w % 26`` (under-filled) or
    ``events + 11 * w % 301`` events over 4 shards, as the shards send them: the values form for
    fewer than ``drift.min_count`` events, a partial with sketches for more."""
    under = events < settings.drift.min_count
    sizes = [events + (w % 26 if under else 11 * w % 301) for w in range(n)]
    parts = _shard_parts(sizes)
    out = []
    for w, shards in enumerate(parts):
        start = START_MS + (w + seed_offset) * SIZE_S * 1000
        out.append([Partial(s, "m0000", "1", "", SIZE_S, start, start + SIZE_S * 1000,
                            window_stats.values_partial(p) if sum(e.n for e in p) < settings.drift.min_count
                            else bm.with_sketches(p))
                    for s, p in enumerate(shards) if p])
    return out


def _shard_parts(sizes: list[int]) -> list[list[list[EventColumns]]]:
    """Windows of model 0's own traffic, ``sizes[w]`` events in window ``w``, dealt to 4 shards as
    each buffered them: a column part per event (as bench_models' ``partial_windows``)."""
    spec = bm.model_specs(1)[0].model_copy(update={"traffic_share": 1.0})
    base = Scenario(seed=1, start=START_MS, duration_s=1.0, rate=bm.RATE, models=[spec])
    # a Poisson number of events near the count asked for: room for more
    columns = next(iter(training_columns(training_scenario(base, sum(sizes) * 11 // 10 + 100)).values()))
    names = [c for c in columns if c not in (LABEL, PREDICTION) and not c.startswith("__")]
    windows, i = [], 0
    for size in sizes:
        shards: list[list[EventColumns]] = [[] for _ in range(4)]
        for j in range(i, i + size):
            prediction = Prediction(label=str(columns[PREDICTION][j]))
            shards[j % 4].append(EventColumns.of([{c: columns[c][j] for c in names}], [prediction], [5.0]))
        windows.append(shards)
        i += size
    return windows


class Side:
    """One side's window clock, fed and closed."""

    def __init__(self, modules: dict[str, ModuleType], settings: Settings, profile: ReferenceProfile) -> None:
        self.windows = modules["driftline.pipeline.windows"]
        self.scorer = modules["driftline.operators.scorer"]
        self.settings, self.profile = settings, profile

    def clock(self, scorer_built: bool) -> Any:
        book = ProfileBook()
        book.add(self.profile)
        policy = RetrainPolicy(self.settings.triggers, self.settings.config_hash(), "run")
        clock = self.windows.WindowClock(4, self.settings, "run", book, policy)
        if scorer_built:
            built = self.scorer.DriftScorer(self.profile, drift=self.settings.drift)
            clock.scorers[self.profile.profile_id] = built
        return clock

    def close(self, sent: list[list[Partial]], fresh: bool) -> tuple[float, list[bytes]]:
        """Thread CPU of every window's arrival and close, and each window's rows and triggers."""
        clocks = ([self.clock(scorer_built=False) for _ in sent] if fresh
                  else [self.clock(scorer_built=True)] * len(sent))
        out = []
        cpu = 0.0
        gc.collect()
        gc.disable()  # a collection's cost falls on whichever side it lands in: noise here
        for clock, partials in zip(clocks, sent, strict=True):
            t = time.thread_time()
            for partial in partials:
                clock.add_partial(partial)
            for shard in range(4):
                clock.advance(shard, partials[0].window_end)
            rows, triggers = clock.close()
            cpu += time.thread_time() - t
            out.append(orjson.dumps([sorted(rows.items()), [t.model_dump() for t in triggers]]))
        gc.enable()
        return cpu, out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", default=BASE, help="the commit whose stage-2 window code is the baseline")
    parser.add_argument("--now", help="a commit whose code is timed instead of the checkout's")
    parser.add_argument("--n", type=int, default=150, help="windows a case")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    now = args.now or "the checkout's code"
    settings = bench_settings("127.0.0.1:9", "bm")
    profile = bm.profiles_of(bm.model_specs(1), 1000, settings)[0]
    cases = {"under-filled": (shard_partials(1, args.n, settings), False),
             "filled": (shard_partials(100, args.n // 3, settings), False),
             "first window": (shard_partials(1, args.n, settings), True)}
    sides = {"base": Side(modules_at(args.base), settings, profile),
             "now": Side(modules_at(args.now) if args.now else MODULES, settings, profile)}
    best: dict[tuple[str, str], float] = {}
    spread: dict[tuple[str, str], list[float]] = {}
    load = [environment()["loadavg_1m_5m_15m"]]
    for r in range(args.rounds):
        for case, (sent, fresh) in cases.items():
            seen = {}
            for name in (sides if r % 2 == 0 else reversed(list(sides))):
                cpu, rows = sides[name].close(sent, fresh)
                ms = cpu / len(sent) * 1e3
                best[(case, name)] = min(best.get((case, name), float("inf")), ms)
                spread.setdefault((case, name), []).append(ms)
                seen[name] = rows
            if seen["base"] != seen["now"]:
                raise SystemExit(f"{case}: rows or triggers differ between {args.base} and {now}")
    load.append(environment()["loadavg_1m_5m_15m"])
    print(f"stage 2's CPU a closed window (add_partial + close), {args.base} vs {now}, thread CPU, "
          f"best of {args.rounds} (alternating; median in brackets), rows and triggers identical; "
          f"load {load[0]} -> {load[1]}")
    for case, (sent, _) in cases.items():
        old, new = best[(case, "base")], best[(case, "now")]
        med = {s: sorted(spread[(case, s)])[len(spread[(case, s)]) // 2] for s in sides}
        print(f"  {case:13s} ({len(sent)} windows): {old:.3f} -> {new:.3f} ms ({new / old:.2f}x) "
              f"[{med['base']:.3f} -> {med['now']:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
