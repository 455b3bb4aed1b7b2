"""bench_models' kept workload fed as its timed part is, the feeds that close no window apart, for a
sampling profiler: where many models' per-event cost goes between closes.

bench_models' timed run holds every model's window close in one feed (a third of its CPU at 1,000
models), which a profile of the whole run mixes with the steady cost between closes. This feeds the
kept workload (``--data DIR`` of bench_models) after its warm-up, each timed feed through one of two
functions, ``feed_between`` (no window closed) or ``feed_closing``, so a profile's stacks tell them
apart; which feeds close a window is found by a first run in a child process (the same every run:
the workload is fixed) and kept in ``DIR/closing-WHICH.json``. It prints the between-close CPU per
prediction, the scale for ``profile_diff.py``:

    py-spy record -r 1000 -f raw -o one.raw -- .venv/bin/python bench/bench_models_feeds.py --data DIR one
    py-spy record -r 1000 -f raw -o many.raw -- .venv/bin/python bench/bench_models_feeds.py --data DIR many
    .venv/bin/python bench/profile_diff.py many.raw one.raw --under feed_between --per-item US_MANY

(py-spy is not a dependency of the project: ``pip download py-spy`` gives its binary.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_models import CALIBRATIONS, _sink, _windows_closed, warmed_from

from driftline.operators import calibration
from driftline.pipeline.local import InProcessPipeline


def feed_between(pipeline: InProcessPipeline, chunk: list[object]) -> None:
    pipeline.feed(chunk)  # type: ignore[arg-type]


def feed_closing(pipeline: InProcessPipeline, chunk: list[object]) -> None:
    pipeline.feed(chunk)  # type: ignore[arg-type]


def run(data: Path, which: str, closing: set[int] | None) -> tuple[list[int], float, int]:
    """Feed ``which`` (one or many) of ``data``: the timed feeds that closed a window (their index),
    and the CPU-us a prediction and predictions of the others."""
    pipeline, records, warm = warmed_from(data, which)
    settings = pipeline.settings
    batch = settings.worker.batch_max_records
    closed, found, spent, predictions = _windows_closed(pipeline), [], 0.0, 0
    for k, i in enumerate(range(warm, len(records), batch)):
        chunk = records[i : i + batch]
        started = time.process_time()
        (feed_closing if closing is None or k in closing else feed_between)(pipeline, chunk)
        cpu = time.process_time() - started
        _sink(pipeline)
        if _windows_closed(pipeline) != closed:
            found.append(k)
        else:
            spent += cpu
            predictions += sum(1 for r in chunk if r.topic == settings.topics.predictions)
        closed = _windows_closed(pipeline)
    if closing is not None and set(found) != closing:
        raise SystemExit(f"the feeds that closed a window moved: {found} against {sorted(closing)}")
    return found, spent / max(predictions, 1) * 1e6, predictions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="bench_models' --data DIR")
    parser.add_argument("which", choices=("one", "many"))
    parser.add_argument("--find", action="store_true", help=argparse.SUPPRESS)  # the child's first run
    args = parser.parse_args(argv)
    calibration.share_calibrations(CALIBRATIONS)
    kept = args.data / f"closing-{args.which}.json"
    if args.find:
        kept.write_text(json.dumps(run(args.data, args.which, None)[0]))
        return 0
    if not kept.exists():
        subprocess.run([sys.executable, __file__, "--data", str(args.data), args.which, "--find"], check=True)
    _, us, predictions = run(args.data, args.which, set(json.loads(kept.read_text())))
    print(f"{args.which}: {us:.2f} CPU-us a prediction in the feeds that close no window "
          f"({predictions:,} predictions); profile_diff.py --under feed_between --per-item {us:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
