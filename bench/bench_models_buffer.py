"""Stage 1's window buffers with many models: parts joined as they arrive vs one part per append.

With many models a batch holds a few events of each, so each open window's :class:`WindowBuffer`
gets an append of 1-3 events per batch and holds it until 2,048 events or the window closes.
Joined (``window_stats.MERGE_PARTS`` = 8, what runs) it holds a few parts; unjoined (the limit set
past any buffer) one part, and a block's arrays per column, per append, as before 97d5edd.

Runs bench_models' pipeline (``--models`` models x 25 features, each its own profile, a warm-up
of 24 predictions per model, then ``--n`` Zipf predictions, 4 shards) once per form and round in
this process, alternating the forms (order flipped each round), and prints for each form:

- stage 1's CPU per prediction (thread CPU inside the shards' ``process``, the timed part after
  the warm-up) and the whole pipeline's, best of ``--rounds``;
- the bytes the shards' window buffers hold at the end (deep size, see bench_model_memory), KB a
  model;
- a SHA-256 of every output row (stage 2's windows' statistics): equal for both forms.

    .venv/bin/python bench/bench_models_buffer.py [--models 300] [--n 30000] [--rounds 3] [--baseline FILE]
        [--staging]

``--staging``: the forms are ``staged`` (what runs: a shard stages up to ``shard.STAGE_EVENTS``
counted predictions, several batches, before sorting them into window buffers) and ``unstaged``
(each batch's events buffered as it is processed, as before staging), both joined.

``--baseline FILE`` (an earlier window_stats.py: ``git show REV:src/driftline/operators/window_stats.py
> FILE``) adds a third form, ``joined before``: the shards buffer, join and add with that file's
classes (its ``MERGE_PARTS``), the rest as today; its rows must equal the others'.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_models as bm
import orjson
from bench_model_memory import DeepSizes
from common import bench_settings, module_from_file

from driftline.config import Settings
from driftline.operators import calibration, window_stats
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline

FORMS = {"joined": window_stats.MERGE_PARTS, "unjoined": 1 << 62}
STAGING = {"staged": shard_module.STAGE_EVENTS, "unstaged": 0}  # --staging's forms
BUFFER_NAMES = ("EventColumns", "WindowAccumulator", "WindowBuffer", "values_partial")  # what shards use


def load_baseline(path: Path) -> ModuleType:
    """An earlier window_stats.py as a module of its own."""
    return module_from_file(path, "window_stats_baseline")


@contextmanager
def buffers_of(module: ModuleType | None) -> Iterator[None]:
    """The shards buffer and add events with ``module``'s classes meanwhile (None: today's)."""
    saved = {name: getattr(shard_module, name) for name in BUFFER_NAMES}
    for name in BUFFER_NAMES if module is not None else ():
        setattr(shard_module, name, getattr(module, name))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(shard_module, name, value)


def _timed(process: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return process(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - t
    return timed


def timed_feed(pipeline: InProcessPipeline, records: list[RawRecord], warm: int, batch: int,
               on_timed: Callable[[], None] = lambda: None) -> tuple[float, float, str]:
    """Feed ``records`` in batches of ``batch``, every output row digested; after the first ``warm``
    (``on_timed`` called then) the shards' CPU (stage 1) and the whole feed's: (stage 1 seconds,
    total seconds, the rows' digest)."""
    digest = hashlib.sha256()

    def sink() -> None:
        for table in sorted(pipeline.rows):
            for row in pipeline.rows[table]:
                digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY,
                                           default=repr))
        pipeline.rows.clear()

    for i in range(0, warm, batch):
        pipeline.feed(records[i : min(i + batch, warm)])
        sink()
    spent = [0.0]
    for shard in pipeline.shards:
        shard.process = _timed(shard.process, spent)  # type: ignore[method-assign]
    on_timed()
    t = time.thread_time()
    for i in range(warm, len(records), batch):
        pipeline.feed(records[i : i + batch])
        sink()
    return spent[0], time.thread_time() - t, digest.hexdigest()


def run_once(settings: Settings, blobs: list[bytes], records: list[RawRecord], warm: int,
             merge_parts: int, stage_events: int = STAGING["staged"]) -> dict[str, Any]:
    """One run with ``merge_parts`` and ``stage_events``: stage 1's and the pipeline's CPU a
    prediction (after the warm-up), the buffers' bytes at the end, the rows' digest."""
    window_stats.MERGE_PARTS = merge_parts
    shard_module.STAGE_EVENTS = stage_events
    pipeline = InProcessPipeline(settings, profiles=blobs)
    stage1, total, digest = timed_feed(pipeline, records, warm, settings.worker.batch_max_records)
    for shard in pipeline.shards:  # what a checkpoint would hold
        shard._buffer_staged()
    predictions = sum(1 for r in records[warm:] if r.topic == settings.topics.predictions)
    buffered = DeepSizes()([shard.buffered for shard in pipeline.shards])
    parts = sum(len(b.parts) for shard in pipeline.shards for b in shard.buffered.values())
    windows = sum(len(shard.buffered) for shard in pipeline.shards)
    return {"stage1_us": stage1 / predictions * 1e6, "total_us": total / predictions * 1e6,
            "buffered_bytes": buffered, "parts": parts, "windows": windows, "digest": digest}


def workload(models: int, n: int) -> tuple[Settings, list[bytes], list[RawRecord], int]:
    """bench_models' settings, ``models`` profiles (as records' values), its traffic of ``n``
    predictions and the records of its warm-up."""
    calibration.share_calibrations(bm.CALIBRATIONS)
    settings = bench_settings("127.0.0.1:9", "bm")
    specs = bm.model_specs(models)
    blobs = [p.model_dump_json().encode() for p in bm.profiles_of(specs, 1000, settings)]
    records, warm = bm.traffic(specs, n, settings)
    return settings, blobs, records, warm


def alternate(forms: Sequence[str], run: Callable[[str], dict[str, Any]], models: int,
              rounds: int) -> dict[str, dict[str, Any]]:
    """Each form run ``rounds`` times, alternating (order flipped each round), each run printed;
    the best CPU figures of each form (its rows may not change between rounds)."""
    best: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        for form in forms if r % 2 == 0 else list(reversed(forms)):
            got = run(form)
            print(f"round {r} {form}: stage 1 {got['stage1_us']:.1f} us, pipeline {got['total_us']:.1f} us a "
                  f"prediction; buffers {got['buffered_bytes'] / models / 1024:.1f} KB a model "
                  f"({got['parts']:,} parts in {got['windows']:,} windows); rows {got['digest'][:16]}",
                  flush=True)
            if form in best:
                assert got["digest"] == best[form]["digest"], "a form's rows changed between rounds"
                for key in ("stage1_us", "total_us"):
                    best[form][key] = min(best[form][key], got[key])
            else:
                best[form] = got
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--n", type=int, default=30_000, help="Zipf predictions after the warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="an earlier window_stats.py: the 'joined before' form")
    parser.add_argument("--staging", action="store_true", help="staged vs unstaged window buffering")
    args = parser.parse_args(argv)
    if args.staging:
        return staging(args.models, args.n, args.rounds)
    baseline = load_baseline(args.baseline) if args.baseline is not None else None
    forms: dict[str, tuple[int, ModuleType | None]] = {name: (parts, None) for name, parts in FORMS.items()}
    if baseline is not None:
        forms["joined before"] = (baseline.MERGE_PARTS, baseline)
    settings, blobs, records, warm = workload(args.models, args.n)

    def run_form(form: str) -> dict[str, Any]:
        merge_parts, module = forms[form]
        with buffers_of(module):
            return run_once(settings, blobs, records, warm, merge_parts)

    best = alternate(list(forms), run_form, args.models, args.rounds)
    window_stats.MERGE_PARTS = FORMS["joined"]
    joined, unjoined = best["joined"], best["unjoined"]
    print(f"{args.models} models, {args.n:,} predictions, best of {args.rounds}: stage 1 "
          f"{unjoined['stage1_us']:.1f} -> {joined['stage1_us']:.1f} us a prediction "
          f"({joined['stage1_us'] / unjoined['stage1_us']:.2f}x), pipeline {unjoined['total_us']:.1f} -> "
          f"{joined['total_us']:.1f} ({joined['total_us'] / unjoined['total_us']:.2f}x); window buffers "
          f"{unjoined['buffered_bytes'] / args.models / 1024:.1f} -> "
          f"{joined['buffered_bytes'] / args.models / 1024:.1f} KB a model; rows "
          f"{'identical' if joined['digest'] == unjoined['digest'] else 'DIFFER'}")
    same = joined["digest"] == unjoined["digest"]
    if "joined before" in best:
        before = best["joined before"]
        same = same and before["digest"] == joined["digest"]
        print(f"joined before -> now: stage 1 {before['stage1_us']:.1f} -> {joined['stage1_us']:.1f} us a "
              f"prediction ({joined['stage1_us'] / before['stage1_us']:.2f}x; before/unjoined "
              f"{before['stage1_us'] / unjoined['stage1_us']:.2f}x), pipeline {before['total_us']:.1f} -> "
              f"{joined['total_us']:.1f}; window buffers "
              f"{before['buffered_bytes'] / args.models / 1024:.1f} -> "
              f"{joined['buffered_bytes'] / args.models / 1024:.1f} KB a model; rows "
              f"{'identical' if before['digest'] == joined['digest'] else 'DIFFER'}")
    return 0 if same else 1


def staging(models: int, n: int, rounds: int) -> int:
    """``--staging``: the staged and unstaged forms, alternating (order flipped each round)."""
    settings, blobs, records, warm = workload(models, n)
    best = alternate(list(STAGING), lambda form: run_once(settings, blobs, records, warm, FORMS["joined"],
                                                          STAGING[form]), models, rounds)
    shard_module.STAGE_EVENTS = STAGING["staged"]
    staged, unstaged = best["staged"], best["unstaged"]
    same = staged["digest"] == unstaged["digest"]
    print(f"{models} models, {n:,} predictions, best of {rounds}: stage 1 {unstaged['stage1_us']:.1f} -> "
          f"{staged['stage1_us']:.1f} us a prediction ({staged['stage1_us'] / unstaged['stage1_us']:.2f}x), "
          f"pipeline {unstaged['total_us']:.1f} -> {staged['total_us']:.1f} "
          f"({staged['total_us'] / unstaged['total_us']:.2f}x); window buffers "
          f"{unstaged['buffered_bytes'] / models / 1024:.1f} -> "
          f"{staged['buffered_bytes'] / models / 1024:.1f} KB a model; rows "
          f"{'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
