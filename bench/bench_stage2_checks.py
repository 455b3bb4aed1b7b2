"""What stage 2's checks of stage 1's records cost: a stacked outcomes record decoded, and a window
partial with sketches checked (``windows.check_partial``), each against another revision's module.

Stage 2 checks each model-events record where it decodes it (every column's values of the column's
kind, an episode report's fields, a partial's counts, moments and sketch parameters; a value of
another type used to raise where a window or interval closed). Prints, best of ``--rounds``, the
two sides alternating in one process (process CPU, the collector off): ns an outcome to decode a
stacked outcomes record of 1,250 rows of 200 models, and us a partial to check 25-feature partials
with sketches (4 shards' of windows of 1-26 events of bench_models' first model), with
``--baseline``'s ``records.py`` and ``windows.py`` (loaded beside today's, their imports today's)
and today's.

    .venv/bin/python bench/bench_stage2_checks.py [--baseline d5ce13e] [--rounds 9]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from contextlib import nullcontext

from bench_models import under_filled_windows
from bench_stage_steps import best_of
from common import module_at_revision

from driftline.pipeline import records, windows

OUTCOMES, MODELS = 1_250, 200


def stacked_outcomes() -> bytes:
    """A shard's outcomes of one batch for ``MODELS`` models as one stacked record, encoded."""
    rnd = random.Random(1)
    rows = [OUTCOMES // MODELS] * MODELS
    rows[-1] += OUTCOMES - sum(rows)
    columns = {
        "prediction_id": [f"{rnd.getrandbits(64):016x}-{i}" for i in range(OUTCOMES)],
        "segment": [""] * OUTCOMES,
        "label_time": [1_767_225_600_000 + i for i in range(OUTCOMES)],
        "label_delay_ms": [rnd.randrange(10**6) for _ in range(OUTCOMES)],
        "correct": [rnd.randrange(2) for _ in range(OUTCOMES)],
        "abs_error": [None] * OUTCOMES,
        "rerouted": [0] * OUTCOMES,
    }
    record = records.Stacked(0, records.OUTCOMES, [f"m{i:04d}" for i in range(MODELS)], ["1"] * MODELS, rows,
                             columns)
    return records.encode_model_event(record)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", default="d5ce13e",
                        help="the revision whose records.py and windows.py the checks are timed against")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    old_records = module_at_revision(args.baseline, "src/driftline/pipeline/records.py", "baseline_records")
    old_windows = module_at_revision(args.baseline, "src/driftline/pipeline/windows.py", "baseline_windows")
    message = stacked_outcomes()
    calls = 50
    per_outcome = {name: us * 1e3 for name, us in best_of(args.rounds, {
        name: (lambda module=module: [module.decode_model_event(message) for _ in range(calls)], nullcontext)
        for name, module in (("baseline", old_records), ("today", records))}, calls * OUTCOMES).items()}
    partials = [shard.to_partial() for window in under_filled_windows(40) for shard in window]
    per_partial = best_of(args.rounds, {
        name: (lambda module=module: [module.check_partial(p) for p in partials], nullcontext)
        for name, module in (("baseline", old_windows), ("today", windows))}, len(partials))
    print(f"stage 2's checks, best of {args.rounds}, alternating with {args.baseline}'s modules:")
    print(f"  a stacked outcomes record ({OUTCOMES:,} rows, {MODELS} models) decoded: "
          f"{per_outcome['baseline']:.0f} -> {per_outcome['today']:.0f} ns an outcome "
          f"({per_outcome['today'] / per_outcome['baseline']:.2f}x)")
    print(f"  a 25-feature partial with sketches checked ({len(partials)} partials): "
          f"{per_partial['baseline']:.0f} -> {per_partial['today']:.0f} us a partial "
          f"({per_partial['today'] / per_partial['baseline']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
