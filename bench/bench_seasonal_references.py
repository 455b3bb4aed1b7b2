"""How often a worker with several seasonal models makes a window reference again (the cache of
:class:`driftline.operators.seasonal.WindowReferences`), and that the references do not depend on it.

    .venv/bin/python bench/bench_seasonal_references.py [--models 4] [--features 10] [--days 2]
        [--budget-entries 256]

Each model is a daily seasonal profile of ``--features`` numeric features (a distinct profile id);
the worker closes 300 s and 3600 s windows of every model in event time, as windows.py does. A
second day finds every reference of the first one in a cache that holds the models' day; one that
does not (the old 256 entries, given with ``--budget-entries``: the byte budget of that many of
these references) makes one a window. Prints references made, seconds, and a digest of every
reference used (equal in both runs: the cache changes the cost, never a row).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np

from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.scorer import DriftScorer
from driftline.operators.seasonal import DAILY, REFERENCES_BUDGET_BYTES, WindowReferences, fit_season

START = 1_767_225_600_000
DAY_MS = 86_400_000


def seasonal_profile(model: int, features: int) -> ReferenceProfile:
    rng = np.random.default_rng(model)
    t = np.arange(0, 14 * 86_400, 120)
    columns = {f"f{i}": 10 + 3 * np.sin(2 * np.pi * (t + 3600 * i) / 86_400) + rng.normal(size=t.size)
               for i in range(features)}
    times = START - 14 * DAY_MS + t * 1000
    season = fit_season(columns, times, DAILY, bins=10)
    return build_profile(f"m{model}", "1", columns, label_column=None, prediction_column=None, bins=10,
                         top_k=10, created_at_ms=0, season=season)


def run(profiles: list[ReferenceProfile], days: int, budget_bytes: int) -> tuple[int, float, str, int]:
    references: WindowReferences[DriftScorer] = WindowReferences(DriftScorer, budget_bytes=budget_bytes)
    digest = hashlib.sha256()
    seen: dict[int, tuple[DriftScorer, bytes]] = {}  # the scorer kept: an evicted one's id is reused
    began = time.perf_counter()
    for start in range(START, START + days * DAY_MS, 300_000):
        for size in (300_000, 3_600_000):
            if (start + 300_000) % size:
                continue  # an hour window closes on the hour
            for profile in profiles:
                scorer = references.get(profile, start + 300_000 - size, start + 300_000)
                if id(scorer) not in seen:  # a digest per reference made (its features' JSON)
                    seen[id(scorer)] = scorer, hashlib.sha256(b"".join(
                        f.model_dump_json().encode() for f in scorer.profile.features.values())).digest()
                digest.update(seen[id(scorer)][1])
    return references.made, time.perf_counter() - began, digest.hexdigest()[:16], references.held_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--budget-entries", type=int, default=256,
                        help="the 'before' run: a cache of this many references (default: 256, the old size)")
    args = parser.parse_args()
    profiles = [seasonal_profile(m, args.features) for m in range(args.models)]
    probe: WindowReferences[DriftScorer] = WindowReferences(DriftScorer)
    probe.get(profiles[0], START, START + 300_000)
    residuals = probe.held_bytes  # the first reference of a profile brings its residuals: not an entry's cost
    probe.get(profiles[0], START + 3_600_000, START + 3_900_000)
    entry = probe.held_bytes - residuals
    windows = args.days * (288 + 24) * args.models
    print(f"{args.models} models x {args.features} features, {args.days} days: {windows} windows; "
          f"a reference counts {entry / 1024:.0f} kB")
    for name, budget in ((f"{args.budget_entries} entries", args.budget_entries * entry),
                         (f"{REFERENCES_BUDGET_BYTES >> 20} MiB", REFERENCES_BUDGET_BYTES)):
        made, seconds, digest, held = run(profiles, args.days, budget)
        print(f"{name:12}  references made {made:5d}  {seconds:6.1f} s  held {held >> 20} MiB  "
              f"references digest {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
