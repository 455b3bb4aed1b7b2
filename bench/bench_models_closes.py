"""Stage 1's window closes with many models: the close as of a commit against today's, in one process.

With many models every shard holds a few events of each model's windows, and at each window end it
makes and sends a partial per model (``ShardProcessor._close_windows``: the values form,
``window_stats.values_partial``, for a window under ``drift.min_count`` events), every one of them
time-driven (docs/scaling.md, "Why trimming calls cannot reach 1.2x").

Runs bench_models' pipeline (``--models`` models x 25 features, each its own profile, a warm-up
of 24 predictions per model, then ``--n`` Zipf predictions, 4 shards) once per side and round in
this process, the shards closing windows with ``--baseline``'s ``_close_windows``, ``values_partial``
and model-events records (shard.py, window_stats.py and records.py as of that commit, loaded beside
today's) or today's, alternating (order flipped each round), and prints for each: the closes' CPU per window
closed (thread CPU inside ``_close_windows``, the timed part after the warm-up), stage 1's and the
pipeline's CPU per prediction, best of ``--rounds``, and SHA-256s of every partial sent and of
every output row, which must be equal for both sides.

    .venv/bin/python bench/bench_models_closes.py [--models 1000] [--n 30000] [--rounds 3] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_models as bm
from bench_models_buffer import load_baseline, timed_feed
from common import bench_settings, module_from_file

from driftline.config import Settings
from driftline.operators import calibration
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline
from driftline.runtime import tune_gc

ROOT = Path(__file__).resolve().parent.parent


def baseline_close(commit: str, into: Path) -> Callable[..., int]:
    """``ShardProcessor._close_windows`` as of ``commit``, making its values form with that commit's
    ``values_partial`` and its model-events records with that commit's ``records`` (the files copied
    with ``git show``, loaded as modules of their own)."""
    files = {}
    for name, path in (("shard", "src/driftline/pipeline/shard.py"),
                       ("window_stats", "src/driftline/operators/window_stats.py"),
                       ("records", "src/driftline/pipeline/records.py")):
        files[name] = into / f"base_{name}.py"
        files[name].write_text(subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                                              capture_output=True, text=True).stdout)
    stats, shard = load_baseline(files["window_stats"]), module_from_file(files["shard"], "shard_baseline")
    shard.values_partial = stats.values_partial  # type: ignore[attr-defined]
    # the close encodes each partial (records.Partial, to_model_event): that commit's encoding too
    shard.records = module_from_file(files["records"], "records_baseline")  # type: ignore[attr-defined]
    close: Callable[..., int] = shard.ShardProcessor._close_windows  # type: ignore[attr-defined]
    return close


@contextmanager
def closing_with(close: Callable[..., int], seen: dict[str, Any]) -> Iterator[None]:
    """The shards close windows with ``close`` meanwhile, its thread CPU and windows closed added up
    in ``seen`` (``cpu``, ``closed``) and every partial it sends digested (``partials``)."""
    saved = shard_module.ShardProcessor._close_windows

    def timed(self: Any, out: list[Any]) -> int:
        start, t = len(out), time.thread_time()
        closed = close(self, out)
        seen["cpu"] += time.thread_time() - t
        seen["closed"] += closed
        for message in out[start:]:
            seen["partials"].update(message.value)
        return closed

    shard_module.ShardProcessor._close_windows = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        shard_module.ShardProcessor._close_windows = saved  # type: ignore[method-assign]


def run_once(settings: Settings, blobs: list[bytes], records: list[RawRecord], warm: int,
             close: Callable[..., int]) -> dict[str, Any]:
    """One run: the closes' CPU per window closed, stage 1's and the pipeline's per prediction (after
    the warm-up), the partials' and the rows' digests. The collector as a worker tunes it."""
    tune_gc()
    seen: dict[str, Any] = {"cpu": 0.0, "closed": 0, "partials": hashlib.sha256()}

    def reset() -> None:
        seen["cpu"], seen["closed"] = 0.0, 0

    with closing_with(close, seen):
        pipeline = InProcessPipeline(settings, profiles=blobs)
        stage1, total, digest = timed_feed(pipeline, records, warm, settings.worker.batch_max_records, reset)
    predictions = sum(1 for r in records[warm:] if r.topic == settings.topics.predictions)
    return {"close_us": seen["cpu"] / max(seen["closed"], 1) * 1e6, "closed": seen["closed"],
            "stage1_us": stage1 / predictions * 1e6, "total_us": total / predictions * 1e6,
            "partials": seen["partials"].hexdigest(), "digest": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--n", type=int, default=30_000, help="Zipf predictions after the warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="HEAD", help="the commit whose close is the 'before' side")
    args = parser.parse_args(argv)
    calibration.share_calibrations(bm.CALIBRATIONS)
    settings = bench_settings("127.0.0.1:9", "bm")
    specs = bm.model_specs(args.models)
    blobs = [p.model_dump_json().encode() for p in bm.profiles_of(specs, 1000, settings)]
    records, warm = bm.traffic(specs, args.n, settings)
    with tempfile.TemporaryDirectory() as tmp:  # the baseline's modules, kept while they run
        sides = {"before": baseline_close(args.baseline, Path(tmp)),
                 "now": shard_module.ShardProcessor._close_windows}
        best: dict[str, dict[str, Any]] = {}
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else reversed(sides):
                got = run_once(settings, blobs, records, warm, sides[side])
                print(f"round {r} {side}: {got['close_us']:.1f} CPU-us a window closed ({got['closed']:,}); "
                      f"stage 1 {got['stage1_us']:.1f} us, pipeline {got['total_us']:.1f} us a prediction; "
                      f"partials {got['partials'][:16]}, rows {got['digest'][:16]}", flush=True)
                seen = best.setdefault(side, got)
                for key in ("close_us", "stage1_us", "total_us"):
                    seen[key] = min(seen[key], got[key])
    before, now = best["before"], best["now"]
    same = before["partials"] == now["partials"] and before["digest"] == now["digest"]
    print(f"{args.models} models, {args.n:,} predictions, best of {args.rounds} ({args.baseline} -> today): "
          f"{before['close_us']:.1f} -> {now['close_us']:.1f} CPU-us a window closed "
          f"({now['close_us'] / before['close_us']:.2f}x); stage 1 {before['stage1_us']:.1f} -> "
          f"{now['stage1_us']:.1f}, pipeline {before['total_us']:.1f} -> {now['total_us']:.1f} us a "
          f"prediction; "
          f"partials and rows {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
