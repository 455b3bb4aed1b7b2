"""The drift monitors' C paths against their Python / numpy reference, operator by operator, in
CPU nanoseconds per value (no targets: what each C path saves, to re-measure after a change).

- ``count_quiet``: a bank's batch as ``FeatureWatch._feed`` hands it to ``count_quiet`` (20 numeric
  detectors of a 5,000-value reference, arl 2.5e7: 8 CUSUM rows, 1,024 edges), symbols found and
  CUSUMs run, quiet values (none alarms), per value of one detector; at a busy model's batch size
  (1,250 values a detector: 5,000 records over 4 shards) and a quiet model's held group (30);
- ``codes``: a categorical detector's symbols of a list of 1,250 strings (7 categories, 10 values);
- ``reconstruction``: the multivariate watch's reconstruction errors (``rowwise_matmul`` twice and
  ``rowwise_dot``) of 1,250 events x 20 features, 9 components, per event;
- ``RawRecord``: making one (as ``kafka.records.to_raw`` does for every consumed record) against the
  frozen slots dataclass it was until session 30, per record;
- a held group's float step (``feature_watch._held_floats``, a quiet model's group of 3 events, 20
  numeric features): given all 20 as one block, as the shard gives a batch's float columns with
  missing values since session 30 (``shard._detector_floats``), against given 18 and reading the 2
  with a missing value from their value lists (before), per group;
- a held block fed (``FeatureWatch._feed``, 20 numeric monitors, 64 events): as one block, its
  bank's symbols found in one call (session 31), against the same values as a dict of columns.

Each pair runs in turns in one process (the C path on, then off through
``compiled_paths.reference_paths``; the frozen class beside the current one), best of ``--rounds``.

    .venv/bin/python bench/bench_watch_native.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, make_dataclass

import numpy as np
import numpy.typing as npt

from driftline.operators.compiled_paths import reference_paths
from driftline.operators.feature_watch import FeatureWatch, _held_floats
from driftline.operators.float_block import FloatBlock
from driftline.operators.multivariate import _reconstruction_errors
from driftline.operators.profile import build_profile
from driftline.operators.sequential import CategoricalDetector, NumericDetector, count_quiet
from driftline.operators.validate import RawRecord

FrozenRecord = make_dataclass("FrozenRecord", [(f.name, f.type) for f in fields(RawRecord)], frozen=True,
                              slots=True)
"""RawRecord's fields as a frozen slots dataclass, as it was until session 30: its figure's reference."""


def best_ns(run: Callable[[], object], count: int, rounds: int, repeat: int) -> float:
    """The best round's CPU nanoseconds per item (``count`` items a call, ``repeat`` calls a round)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            run()
        best = min(best, (time.process_time() - start) / repeat / count * 1e9)
    return best


def with_and_without(run: Callable[[], object], count: int, rounds: int, repeat: int) -> tuple[float, float]:
    """``run`` with the C paths on, then off, in turns: the best round of each."""
    on, off = float("inf"), float("inf")
    for _ in range(rounds):
        on = min(on, best_ns(run, count, 1, repeat))
        with reference_paths():
            off = min(off, best_ns(run, count, 1, repeat))
    return on, off


def count_quiet_figure(size: int, rounds: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    bank = pickle.dumps([NumericDetector.from_reference(rng.normal(size=5_000), arl=2.5e7)
                         for _ in range(20)])
    values = [rng.normal(size=size) for _ in range(20)]
    detectors: list[NumericDetector] = []

    def run() -> object:
        if not detectors or detectors[0].n > 10_000_000:  # fresh detectors now and then: n stays small
            detectors[:] = pickle.loads(bank)
        return count_quiet(detectors, [d._symbols(v) for d, v in zip(detectors, values, strict=True)])

    return with_and_without(run, size * 20, rounds, max(1, 40_000 // size))


def codes_figure(rounds: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    detector = CategoricalDetector.from_reference(rng.choice(list("abcdefg"), 5_000), arl=1e6)
    values = rng.choice(list("abcdefghij"), 1_250).tolist()
    return with_and_without(lambda: detector._symbols_at(values), len(values), rounds, 200)


def reconstruction_figure(rounds: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    z = np.asfortranarray(rng.normal(size=(1_250, 20)))  # feature-major, as the watch's scores
    mean = rng.normal(size=20)
    basis = np.ascontiguousarray(np.linalg.qr(rng.normal(size=(20, 20)))[0][:, :9])
    return with_and_without(lambda: _reconstruction_errors(z, mean, basis), z.shape[0], rounds, 100)


def record_figure(rounds: int) -> tuple[float, float]:
    def make(cls: type) -> Callable[[], object]:
        return lambda: [cls("driftline.predictions", 3, i, 1_767_225_600_000, b"k", b"v")
                        for i in range(1_000)]

    now, before = float("inf"), float("inf")
    for _ in range(rounds):
        now = min(now, best_ns(make(RawRecord), 1_000, 1, 100))
        before = min(before, best_ns(make(FrozenRecord), 1_000, 1, 100))
    return now, before


def held_group_figure(rounds: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(20)]
    whole = FloatBlock(tuple(names), rng.normal(size=(20, 3)))
    lacking = FloatBlock(tuple(names[:18]), rng.normal(size=(18, 3)))
    values: dict[str, list[float | None]] = {"f18": [1.0, None, 2.0], "f19": [None, 3.0, 4.0]}
    events: list[dict[str, float]] = [{}] * 3  # every value is in the block or the value lists
    now, before = float("inf"), float("inf")
    for _ in range(rounds):
        now = min(now, best_ns(lambda: _held_floats(events, names, whole, values), 1, 1, 20_000))
        before = min(before, best_ns(lambda: _held_floats(events, names, lacking, values), 1, 1, 20_000))
    return now, before


def held_block_figure(rounds: int) -> tuple[float, float]:
    """A bank of 20 numeric monitors fed a held batch of 64 events (``FeatureWatch._feed``, as a
    shard of many models feeds a model's held groups): given as one block (its valid rows found in
    one pass, the bank's symbols in one ``cells_rows`` call, session 31) against the same values as
    a dict of columns (a validity test and a symbol search per feature), per event."""
    rng = np.random.default_rng(2)
    names = tuple(f"f{i:02d}" for i in range(20))
    profile = build_profile("m", "1", {n: rng.normal(size=5_000) for n in names}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0, source="training")
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**12)
    watch.add_profile(profile)
    watch.observe("m", "1", [0], ["p"], [{}], {n: np.zeros(1) for n in names})  # builds the bank
    bank = watch._models[("m", "1")].bank
    assert bank is not None
    matrix = rng.normal(size=(len(names), 64))
    block = FloatBlock(names, matrix)
    columns = {name: matrix[i] for i, name in enumerate(names)}
    running, cuts = np.arange(64, dtype=np.int64), np.empty(0, dtype=np.int64)
    ids, events = ["p"] * 64, [{}] * 64
    def fed(given: Mapping[str, npt.NDArray[np.float64]]) -> Callable[[], object]:
        return lambda: watch._feed(bank, running, cuts, ids, events, given)

    now, before = float("inf"), float("inf")
    for _ in range(rounds):
        now = min(now, best_ns(fed(block), 64, 1, 300))
        before = min(before, best_ns(fed(columns), 64, 1, 300))
    return now, before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [
        ("count_quiet, 1,250 values a detector (ns a value)", count_quiet_figure(1_250, args.rounds)),
        ("count_quiet, 30 values a detector (ns a value)", count_quiet_figure(30, args.rounds)),
        ("codes, 1,250 strings (ns a value)", codes_figure(args.rounds)),
        ("reconstruction errors, 20 x 9 (ns an event)", reconstruction_figure(args.rounds)),
    ]
    print(f"{'':52} {'C':>8} {'reference':>10} {'ratio':>6}")
    for name, (on, off) in rows:
        print(f"{name:52} {on:8.1f} {off:10.1f} {on / off:6.2f}")
    against = [("RawRecord made (ns a record; reference: frozen)", record_figure(args.rounds)),
               ("held group's floats (ns a group; reference: 2 read)", held_group_figure(args.rounds)),
               ("held block fed, 20 x 64 (ns an event; reference: dict)", held_block_figure(args.rounds))]
    for name, (now, before) in against:
        print(f"{name:52} {now:8.1f} {before:10.1f} {now / before:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
