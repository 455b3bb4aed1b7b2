"""What reading a profiles-topic message costs a worker: one profile parsed and checked, and a
process's stages reading the same messages.

Every stage-1 shard of a process and its stage 2 read each profiles-topic message. A parse checks
what the monitors will decode (each quantile sketch, a ``multivariate`` section run on a row), so
it costs more than the JSON alone; ``parse_profile`` keeps one parsed object per message while a
stage holds it. Prints, best of ``--rounds``, CPU ms: a 25-feature profile parsed (without and
with a multivariate section), its sketches checked alone, and ``--models`` distinct profiles read
by ``--readers`` stages, through ``ReferenceProfile.model_validate_json`` each time and through
``parse_profile``.

``--baseline REV`` also parses the same two profiles with REV's ``profile.py`` (loaded beside
today's, its imports today's), in turns with today's: what the checks added to a parse.

    .venv/bin/python bench/bench_profile_parse.py [--models 100] [--readers 6] [--rounds 5] [--baseline REV]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from common import module_at_revision

from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import ReferenceProfile, build_profile, parse_profile
from driftline.operators.sketch import QuantileSketch

FEATURES = 25
TRAINING_ROWS = 2_000


def _best_ms(call: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best * 1e3


def _profile(seed: int, multivariate: bool) -> bytes:
    rng = np.random.default_rng(seed)
    # centred on 0, as standardised features are: the sketches' buckets on both signs (~1,700 a
    # sketch), the size of a profile a worker reads; distinct per seed
    columns = {f"f{i}": rng.normal(size=TRAINING_ROWS).tolist() for i in range(FEATURES)}
    section = multivariate_section(columns) if multivariate else None
    made = build_profile(f"m{seed}", "1", columns, label_column=None, prediction_column=None, bins=10,
                         top_k=5, created_at_ms=0, multivariate=section)
    return made.model_dump_json().encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="distinct profiles the stages read")
    parser.add_argument("--readers", type=int, default=6,
                        help="stages of one process reading each (4 shards, stage 2, the sink)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also parse with REV's profile.py, in turns")
    args = parser.parse_args(argv)
    plain, with_section = _profile(0, False), _profile(1, True)
    sketches = [f.sketch for f in ReferenceProfile.model_validate_json(plain).features.values()]
    print(f"a {FEATURES}-feature profile ({len(plain):,} bytes), CPU ms, best of {args.rounds}:")
    parsed = _best_ms(lambda: ReferenceProfile.model_validate_json(plain), args.rounds)
    print(f"  parsed and checked: {parsed:.2f}")
    print(f"  its {len(sketches)} sketches checked alone: "
          f"{_best_ms(lambda: [QuantileSketch.checked(s) for s in sketches], args.rounds):.2f}")
    print(f"  with a multivariate section ({len(with_section):,} bytes): "
          f"{_best_ms(lambda: ReferenceProfile.model_validate_json(with_section), args.rounds):.2f}")
    if args.baseline:
        _against_baseline(args.baseline, {"plain": plain, "with a section": with_section}, args.rounds)
    blobs = [_profile(seed, False) for seed in range(2, 2 + args.models)]
    held: list[ReferenceProfile] = []  # the stages hold what they read (parse_profile's cache is weak)

    def each_time() -> None:
        held[:] = [ReferenceProfile.model_validate_json(b) for b in blobs for _ in range(args.readers)]

    def once() -> None:
        held[:] = [parse_profile(b) for b in blobs for _ in range(args.readers)]

    every, shared = _best_ms(each_time, args.rounds), _best_ms(once, args.rounds)
    # parse_profile's objects live while held: each round after the first finds them (the stages
    # of a running process keep theirs), so the figure is a second read's; the first is one parse
    held.clear()
    first = _best_ms(once, 1)
    print(f"{args.models} profiles read by {args.readers} stages: parsed each time {every:.0f} ms, "
          f"parse_profile {first:.0f} ms when new ({every / first:.1f}x), {shared:.0f} ms once held")
    return 0


def _against_baseline(revision: str, blobs: dict[str, bytes], rounds: int) -> None:
    old = module_at_revision(revision, "src/driftline/operators/profile.py", "baseline_profile")
    for label, blob in blobs.items():
        best = {"baseline": float("inf"), "this": float("inf")}
        for _ in range(rounds):  # in turns: a change of the box's load weighs on both alike
            for side, cls in (("baseline", old.ReferenceProfile), ("this", ReferenceProfile)):
                parse = functools.partial(cls.model_validate_json, blob)
                best[side] = min(best[side], _best_ms(parse, 1))
        print(f"  {label}: {revision}'s parse {best['baseline']:.2f} ms, this one's {best['this']:.2f} ms "
              f"({best['this'] / best['baseline']:.1f}x)")


if __name__ == "__main__":
    raise SystemExit(main())
