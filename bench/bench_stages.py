"""Where stage 1's time goes: microseconds per prediction event, stage by stage (figure 12), for
the columnar stage 1 (the default) and the row path (its reference, an event at a time) in one run.

The pure operators (InProcessPipeline, no Kafka) run the bench workload (20 numeric + 5
categorical features, every prediction labelled, a training profile so the sequential detectors
watch all 25 features) in micro-batches of ``worker.batch_max_records``, with a timer around each
stage's entry points. The stages are not separate passes in the shard (the join goes through the
events in log order), so the timers wrap the operators the shard calls;
time is *exclusive* (a stage called inside another counts for itself only), and what the shard's
own loop spends between calls is its own row:

- decode + validate: ``BatchDecoder.predictions/labels`` (columnar: the C pass, ``_decode.c``, or
  msgspec parse a batch of the common shape into checked columns, orjson and shape checks any
  other, no event object; pydantic for unusual records) or ``Decoder.predictions/labels`` (row
  path: pydantic ``model_validate_json`` parses and validates in one pass). "orjson parse alone"
  is ``orjson.loads`` of the same values: a reference, a parse into dicts the columnar path no
  longer makes for such a batch;
- join: ``LabelJoin`` calls (per event on the row path: ``on_prediction``/``on_label``; per batch:
  ``on_predictions``/``on_labels`` on the decoded columns, ``advance``, orphans, duplicates) and the
  payload digests the shard hands it (``ShardProcessor._digests``; per event on the row path, inside
  the shard loop);
- windows: ``WindowAccumulator.add/add_chunk/to_partial``, the batch's column blocks
  (``EventColumns.of``) and the shard's grouping and buffering (``_window_batch``, ``_accumulate``,
  ``_close_windows``, ``_buffer_staged``);
- detectors: ``FeatureWatch.observe`` and ``observe_grouped`` (a batch of many models: stage-1
  sequential detectors, on the decoder's columns on the columnar path; each run's new shards build
  their banks of monitors in it, from the process's fresh copy after the first);
- multivariate: ``MultivariateWatch.observe`` (the stage-1 multivariate detectors: the bench's training
  profiles carry a multivariate section);
- routing: ``reroute`` forwarding, the join-shard choice (``_join_shard`` per event on the row path,
  ``_join_shards`` per batch on the columnar one), and the in-process transport
  (``InProcessPipeline._route``: partitioning outbound records to stage 2 / shards);
- produce: building outbound records (outcome rows, model-events records, progress, sink rows);
- shard loop: the rest of ``ShardProcessor.process`` (lateness, segments, window keys);
- stage 2 and sink rows: ``ModelProcessor.process`` and the sink's row mapping, for completeness.
  Both paths hand stage 2 the same records (same bytes, same batches, in order) and it emits the
  same messages, so its two figures differ by the box's noise only: one instrumented run gave
  stage 2 6.3 to 10.2 us/pred (8 alternating runs per path, load ~3.5). Each stage is the best of
  ``--rounds`` alternating instrumented runs (one run each read 6.71 vs 8.82 as a columnar cost).

Each wrapped call costs a timer pair; that cost is measured on a no-op and subtracted per call,
each part from the stage it lands in: the part between the two clock reads from the callee's stage,
the part around them (the wrapper's call and bookkeeping, ~60 % of it here) from its caller's.
(Until this split, all of it came off the callee, which left that part in the caller's stage: in
routing, whose ``_route`` calls the sink's row mapping once per outcome, ~2 us per prediction.)
The un-instrumented run of the same workload is reported beside the sum. Every figure is this
process's CPU time (``time.process_time``), not wall time: on the shared 2-core box other processes'
load stretched wall-time figures 2-3x from one run to the next, CPU time moves far less.

The join is the largest stage, and its figure above moves with the rest of the pipeline. Figure
(12b) times it alone: every ``LabelJoin`` call the columnar run made, shard by shard, is replayed
on fresh joins (best of ``--rounds``). ``--join-baseline DIR`` (another revision's join package, e.g.
``src/driftline/operators/join`` of a ``git worktree add /tmp/rev REV``) replays the same calls on that
module too, in alternating rounds of one process, checks that both give the same results and end
states, and reports the ratio: an A/B of a join change on the box's load of the moment.

Figure (12c), with ``--shard-baseline FILE`` (another revision's ``pipeline/shard.py``) and
optionally ``--local-baseline FILE`` (its ``pipeline/local.py``, the in-process transport): the
columnar run on this revision's shard and transport beside the baseline's, in alternating
instrumented rounds of one process (best of ``--rounds`` per stage), with a digest of every message
either emits (topic, key, value, partition, in order) and of the rows they write: an A/B of a change
around the operators (routing, produce, shard loop), which must leave every output as it was.

Figure (12d), with ``--outcome-encoding``: the outcomes topic's messages (one per outcome, its row's
JSON) of every batch of the columnar run, built as the shard builds them (``orjson.dumps`` per row)
and from one ``dumps`` of the batch's rows split at each row's first key; same bytes, CPU time best
of ``--rounds`` alternating, the columnar Outcomes record added to both. The batch's one call is
no cheaper (1.01x and 1.13x the per-row figure in two runs at load ~14): the split copies every
row's text once more, and the rows still are one dict each.

Figure (12e), with ``--eager-outputs``: the columnar run with the decoder's outputs as columns
(``OutputColumns``, read as columns by the join, the windows and the multivariate scores) beside the
same run with a ``Prediction`` object built per output (the decoder before), alternating rounds of one
process, per stage and un-instrumented, with a digest of every message and row both emit.

Figure (12f), with ``--feature-rows``: the columnar run with the compiled pass reading the feature
objects of a batch of one layout as value rows (``FeatureRows``: no dict per event; the join packs
its records from the float columns) beside the same run reading a dict per event (the decoder
before), alternating rounds of one process, per stage and un-instrumented, outputs digested.

Figure (12g), with ``--join-native``: the columnar run with the join's C paths
(``operators/join/_native.c``) beside the same run on the join's Python loops alone (what an install
without a compiler runs), alternating rounds of one process, per stage and un-instrumented, outputs
digested.

    .venv/bin/python bench/bench_stages.py [--n 100000] [--quick] [--rounds 7] [--join-baseline DIR]
        [--join-only] [--shard-baseline FILE [--local-baseline FILE]] [--outcome-encoding] [--eager-outputs]
        [--feature-rows] [--join-native]
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import orjson
from common import (
    Figure,
    at_most,
    bench_scenario,
    bench_settings,
    module_from_file,
    print_figures,
    raw_records,
)
from pydantic import BaseModel

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators import (
    columns,
    feature_watch,
    join,
    model_watch,
    struct_decode,
    validate,
    window_stats,
)
from driftline.operators.join import native as join_native
from driftline.pipeline import local, model, records, reroute, shard, to_rows
from driftline.runtime import tune_gc

CLOCK = time.process_time  # see the module docstring: CPU time, steady under the box's other load
# Issue 15's target for the pure operators with 25 sequential detectors: 120,000 pred/s per core.
TARGET_US = 1e6 / 120_000

# (stage, owner, attribute): owner is a class or a module; missing attributes are reported, not fatal
# (the pipeline's internals move; the breakdown names what it could not time).
STAGES: list[tuple[str, Any, str]] = [
    ("decode + validate", validate.Decoder, "predictions"),
    ("decode + validate", validate.Decoder, "labels"),
    ("decode + validate", columns.BatchDecoder, "predictions"),
    ("decode + validate", columns.BatchDecoder, "labels"),
    ("join", join.LabelJoin, "on_prediction"),
    ("join", join.LabelJoin, "on_label"),
    ("join", join.LabelJoin, "on_predictions"),
    ("join", join.LabelJoin, "on_labels"),
    ("join", join.LabelJoin, "advance"),
    ("join", join.LabelJoin, "take_orphans"),
    ("join", join.LabelJoin, "take_duplicates"),
    ("windows", window_stats.WindowAccumulator, "add"),
    ("windows", window_stats.WindowAccumulator, "add_chunk"),
    ("windows", window_stats.EventColumns, "of"),
    ("windows", window_stats.WindowAccumulator, "to_partial"),
    ("windows", shard.ShardProcessor, "_accumulate"),
    ("windows", shard.ShardProcessor, "_window_batch"),
    ("windows", shard.ShardProcessor, "_close_windows"),
    ("windows", shard.ShardProcessor, "_buffer_staged"),  # (also at a checkpoint and a finished input)
    ("detectors", feature_watch.FeatureWatch, "observe"),
    ("detectors", feature_watch.FeatureWatch, "observe_grouped"),  # (a batch of many models)
    ("multivariate", model_watch.MultivariateWatch, "observe"),
    ("join", shard.ShardProcessor, "_digests"),
    ("routing", reroute.Forwarder, "forward"),
    ("routing", shard.ShardProcessor, "_join_shard"),
    ("routing", shard.ShardProcessor, "_join_shards"),
    ("routing", local.InProcessPipeline, "_route"),
    ("produce", shard.ShardProcessor, "_emit_outcomes"),
    ("produce", shard.ShardProcessor, "_emit_progress"),
    ("produce", shard.ShardProcessor, "_emit_episode_reports"),
    ("produce", shard.ShardProcessor, "_emit_source_watermarks"),
    ("produce", records, "sink_rows"),
    ("produce", shard, "late_event_row"),
    ("shard loop", shard.ShardProcessor, "process"),
    ("stage 2", model.ModelProcessor, "process"),
    ("sink rows", to_rows.RowMapper, "rows"),
]
ORDER = ["decode + validate", "join", "windows", "detectors", "multivariate", "routing", "produce",
         "shard loop", "stage 2", "sink rows"]
STAGE1 = ORDER[: ORDER.index("stage 2")]


class TimerCost(NamedTuple):
    """What one wrapped call adds: ``inside`` the callee's timed interval, ``outside`` it (in the
    caller's), in seconds."""

    inside: float
    outside: float

    @property
    def total(self) -> float:
        return self.inside + self.outside


class StageClock:
    """Exclusive CPU time and call counts per stage, for functions wrapped by :meth:`wrap`; a wrapped
    call's ``outside`` cost (:class:`TimerCost`) is taken off its caller's stage."""

    def __init__(self, outside_s: float = 0.0) -> None:
        self.outside_s = outside_s
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[float] = []  # time spent in wrapped callees of each open call

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock, stack, seconds, calls, outside = CLOCK, self._stack, self.seconds, self.calls, self.outside_s

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(0.0)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - t0
                seconds[stage] += elapsed - stack.pop()
                calls[stage] += 1
                if stack:
                    stack[-1] += elapsed + outside

        return timed


@contextmanager
def instrumented(clock: StageClock, stages: Sequence[tuple[str, Any, str]] = STAGES) -> Iterator[list[str]]:
    """Wrap every entry point of ``stages`` for the duration; yields the ones that do not exist."""
    saved: list[tuple[Any, str, Any]] = []
    missing = []
    for stage, owner, name in stages:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            continue
        if isinstance(original, staticmethod):
            setattr(owner, name, staticmethod(clock.wrap(stage, original.__func__)))
        elif isinstance(original, classmethod):
            setattr(owner, name, classmethod(clock.wrap(stage, original.__func__)))
        else:
            setattr(owner, name, clock.wrap(stage, original))
        saved.append((owner, name, original))
    try:
        yield missing
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def timer_cost(calls: int = 200_000) -> TimerCost:
    """What one wrapped call adds, measured on a no-op: between its clock reads (the no-op's
    recorded time less its bare call) and around them (the rest)."""
    clock = StageClock()

    def noop() -> None:
        return None

    timed = clock.wrap("noop", noop)
    t0 = CLOCK()
    for _ in range(calls):
        noop()
    bare = (CLOCK() - t0) / calls
    t0 = CLOCK()
    for _ in range(calls):
        timed()
    total = max((CLOCK() - t0) / calls - bare, 0.0)
    inside = min(max(clock.seconds["noop"] / calls - bare, 0.0), total)
    return TimerCost(inside, total - inside)


def _workload(settings: Settings, n: int, seed: int) -> tuple[list[validate.RawRecord], list[bytes], int]:
    scenario = bench_scenario(n, seed)
    raw = raw_records(settings, scenario)
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        scenario, settings.drift.bins, settings.drift.top_k, effective_from_ms=0)]
    return raw, profiles, sum(1 for r in raw if r.topic == settings.topics.predictions)


def _run(
    settings: Settings, raw: Sequence[validate.RawRecord], profiles: list[bytes], columnar: bool,
    pipeline_class: type[local.InProcessPipeline] = local.InProcessPipeline,
) -> float:
    pipeline = pipeline_class(settings, profiles=profiles)
    for processor in pipeline.shards:
        processor.columnar = columnar
    batch = settings.worker.batch_max_records
    t0 = CLOCK()
    for i in range(0, len(raw), batch):
        pipeline.feed(raw[i : i + batch])
    return CLOCK() - t0


def _breakdowns(settings: Settings, raw: Sequence[validate.RawRecord], profiles: list[bytes], n_pred: int,
                cost: TimerCost, rounds: int = 1) -> dict[bool, dict[str, Any]]:
    """Per path (False: row, True: columnar): per-stage microseconds per prediction (best of ``rounds``
    instrumented runs, stage by stage), the un-instrumented figure (best of two runs around the timed
    ones) and what could not be timed. The two paths' runs alternate, their order flipped each round,
    so a load that changes during the bench weighs on both alike."""
    paths = (False, True)
    for columnar in paths:  # warm-up: imports, caches, calibration paths
        _run(settings, raw[: min(len(raw), 20_000)], profiles, columnar)
    plain = {columnar: _run(settings, raw, profiles, columnar) for columnar in paths}
    out: dict[bool, dict[str, Any]] = {}
    for r in range(rounds):
        for columnar in paths if r % 2 == 0 else paths[::-1]:
            clock = StageClock(cost.outside)
            with instrumented(clock) as missing:
                timed_s = _run(settings, raw, profiles, columnar)
            spent = {stage: max(clock.seconds[stage] - clock.calls[stage] * cost.inside, 0.0) / n_pred * 1e6
                     for stage in ORDER}
            seen = out.setdefault(columnar, {"us_per_event": spent, "instrumented_s": timed_s,
                                             "calls": dict(clock.calls), "missing": missing})
            seen["us_per_event"] = {stage: min(seen["us_per_event"][stage], spent[stage]) for stage in ORDER}
            seen["instrumented_s"] = min(seen["instrumented_s"], timed_s)
    for columnar in paths:
        out[columnar]["stage1_us"] = sum(out[columnar]["us_per_event"][s] for s in STAGE1)
        out[columnar]["uninstrumented_us"] = min(plain[columnar], _run(settings, raw, profiles, columnar)) \
            / n_pred * 1e6
    return out


def measure(n: int, seed: int = 0, rounds: int = 1) -> Figure:
    """Figure (12): total and per-stage microseconds per prediction event on one core, columnar stage 1
    (the default) beside the row path, measured in the same run (best of ``rounds`` per stage)."""
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, n, seed)
    cost = timer_cost()
    both = _breakdowns(settings, raw, profiles, n_pred, cost, rounds)
    row, col = both[False], both[True]
    t0 = CLOCK()
    for r in raw:
        if r.value:
            orjson.loads(r.value)
    parse_us = (CLOCK() - t0) / n_pred * 1e6
    per_event = col["us_per_event"]
    plain_us = col["uninstrumented_us"]
    row_us = row["uninstrumented_us"]
    detail = (", ".join(f"{stage} {per_event[stage]:.2f}" for stage in ORDER)
              + f" us/pred event (orjson parse alone {parse_us:.2f}, for reference); stage 1 sum "
              f"{col['stage1_us']:.2f} (row path {row['stage1_us']:.2f}); un-instrumented total "
              f"{plain_us:.2f} us/pred event ({1e6 / plain_us:,.0f} pred/s; row path {row_us:.2f}, "
              f"{1e6 / row_us:,.0f} pred/s: {row_us / plain_us:.2f}x), instrumented "
              f"{col['instrumented_s'] / n_pred * 1e6:.2f} less {cost.total * 1e9:.0f} ns per timed call "
              f"({cost.inside * 1e9:.0f} of it off the callee's stage); "
              f"{n_pred:,} predictions + labels, batches of {settings.worker.batch_max_records}, "
              f"25 sequential feature detectors; best of {rounds} alternating rounds")
    missing = sorted(set(row["missing"]) | set(col["missing"]))
    if missing:
        detail += f"; not timed (absent): {', '.join(missing)} (their time is in the caller's row)"
    met = at_most(col["stage1_us"], TARGET_US)
    if not met:
        detail = f"missed by {col['stage1_us'] / TARGET_US:.1f}x; " + detail
    return Figure("stage_breakdown_us", "(12) per-stage breakdown, pure operators (stage 1 sum)",
                  col["stage1_us"], "us/pred event", f"<= {TARGET_US:.2f} (120,000 pred/s/core)", met, detail,
                  {"us_per_event": per_event, "row_us_per_event": row["us_per_event"],
                   "json_parse_us": parse_us, "uninstrumented_us": plain_us, "row_uninstrumented_us": row_us,
                   "instrumented_s": col["instrumented_s"], "timer_overhead_ns": cost.total * 1e9,
                   "calls": col["calls"], "row_calls": row["calls"], "missing": missing,
                   "predictions": n_pred})


# LabelJoin's entry points the shard calls that change it (read-only ones need no replay)
JOIN_CALLS = ("on_prediction", "on_predictions", "on_label", "on_labels", "advance", "take_orphans",
              "take_duplicates", "set_memory_budget", "track_changes", "reset_changes", "take_changes")
# One join's life: its bounds at its first call, then each call (name, args, kwargs) in order.
JoinLog = tuple[tuple[int, int, int], list[tuple[str, tuple[Any, ...], dict[str, Any]]]]


def _join_logs(settings: Settings, raw: Sequence[validate.RawRecord], profiles: list[bytes]) -> list[JoinLog]:
    """Every LabelJoin call of a columnar run of the workload, per join."""
    logs: dict[int, JoinLog] = {}
    # (some inherited: the join package layers LabelJoin)
    saved = {name: getattr(join.LabelJoin, name) for name in JOIN_CALLS}

    def logged(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: join.LabelJoin, *args: Any, **kwargs: Any) -> Any:
            if id(self) not in logs:
                logs[id(self)] = ((self.horizon_ms, self.max_pending, self.max_held), [])
            logs[id(self)][1].append((name, args, kwargs))
            return fn(self, *args, **kwargs)
        return call

    for name, fn in saved.items():
        setattr(join.LabelJoin, name, logged(name, fn))
    try:
        _run(settings, raw, profiles, True)
    finally:
        for name, fn in saved.items():
            setattr(join.LabelJoin, name, fn)
    return list(logs.values())


def _replay(module: ModuleType, logs: Sequence[JoinLog]) -> tuple[defaultdict[str, float], list[Any]]:
    """CPU seconds per call name of replaying ``logs`` on fresh joins of ``module``, and what the calls
    returned (as text) with each join's end state."""
    seconds: defaultdict[str, float] = defaultdict(float)
    results: list[Any] = []
    for bounds, calls in logs:
        replayed = module.LabelJoin(*bounds)
        for name, args, kwargs in calls:
            fn = getattr(replayed, name)
            t0 = CLOCK()
            out = fn(*args, **kwargs)
            seconds[name] += CLOCK() - t0
            results.append(repr(out))
        results.append(pickle.dumps((replayed._groups, replayed.counters, replayed._held, replayed._ctx)))
    return seconds, results



def measure_join(n: int, rounds: int, baseline: Path | None = None, seed: int = 0) -> Figure:
    """Figure (12b): the join's calls of a columnar run, replayed alone (best of ``rounds``), in us per
    prediction event (its label included); with ``baseline``, beside that join module's."""
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, n, seed)
    logs = _join_logs(settings, raw, profiles)
    modules: dict[str, ModuleType] = {"this": join}
    if baseline is not None:
        modules["baseline"] = module_from_file(baseline, "join_baseline")
    results = {label: _replay(module, logs)[1] for label, module in modules.items()}  # also a warm-up
    best: dict[str, dict[str, float]] = {label: {} for label in modules}
    order = list(modules)
    for r in range(rounds):  # alternating, so a load that changes meanwhile weighs on both alike
        for label in order if r % 2 == 0 else order[::-1]:
            for name, spent in _replay(modules[label], logs)[0].items():
                best[label][name] = min(best[label].get(name, spent), spent)

    def us(label: str, *names: str) -> float:
        return sum(v for k, v in best[label].items() if not names or k in names) / n_pred * 1e6

    value = us("this")
    calls = sum(len(log) for _, log in logs)
    detail = (f"on_predictions {us('this', 'on_predictions'):.2f}, on_labels {us('this', 'on_labels'):.2f}, "
              f"the rest {value - us('this', 'on_predictions', 'on_labels'):.2f} us/pred event; best of "
              f"{rounds} rounds of {calls:,} replayed calls on {len(logs)} shards' joins, {n_pred:,} "
              "predictions + labels")
    extra: dict[str, Any] = {"us_per_event": {k: v / n_pred * 1e6 for k, v in best["this"].items()}}
    if baseline is not None:
        same = results["baseline"] == results["this"]
        base = us("baseline")
        detail += (f"; baseline {baseline.name} {base:.2f} (on_predictions "
                   f"{us('baseline', 'on_predictions'):.2f}, on_labels {us('baseline', 'on_labels'):.2f}): "
                   f"{value / base:.3f}x, rounds alternating, "
                   f"results and end states {'identical' if same else 'DIFFERENT'}")
        extra.update(baseline_us=base, ratio=value / base, identical=same)
    return Figure("join_replayed_us", "(12b) join calls replayed alone", value, "us/pred event", "", None,
                  detail, extra)


def _recording(pipeline_class: type[local.InProcessPipeline], digest: Any) -> type[local.InProcessPipeline]:
    """``pipeline_class`` feeding every message it routes into ``digest``, and its rows at the end."""

    class Recording(pipeline_class):  # type: ignore[misc,valid-type]
        def _route(self, messages: list[Any]) -> None:
            for m in messages:
                digest.update(pickle.dumps((m.topic, m.key, m.value, m.partition)))
            super()._route(messages)

    return Recording


def _outputs_digest(settings: Settings, raw: Sequence[validate.RawRecord], profiles: list[bytes],
                    pipeline_class: type[local.InProcessPipeline]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    recording = _recording(pipeline_class, digest)
    pipeline = recording(settings, profiles=profiles)
    batch = settings.worker.batch_max_records
    for i in range(0, len(raw), batch):
        pipeline.feed(raw[i : i + batch])
    digest.update(pickle.dumps(sorted((table, orjson.dumps(rows, option=orjson.OPT_SORT_KEYS))
                                      for table, rows in pipeline.rows.items())))
    return digest.hexdigest()


def measure_shard_baseline(n: int, rounds: int, shard_file: Path, local_file: Path | None,
                           seed: int = 0) -> Figure:
    """Figure (12c): stage 1 around the operators on this revision's shard (and transport) beside a
    baseline's, per stage, alternating instrumented rounds (best of ``rounds``); outputs digested."""
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, n, seed)
    base_shard = module_from_file(shard_file, "shard_baseline")
    base_local = module_from_file(local_file, "local_baseline") if local_file is not None else None
    if base_local is not None:
        base_local.ShardProcessor = base_shard.ShardProcessor  # type: ignore[attr-defined]
        base_class: type[local.InProcessPipeline] = base_local.InProcessPipeline
    else:
        class BaseShards(local.InProcessPipeline):
            def __init__(self, settings: Settings, run_id: str = "", profiles: Any = ()) -> None:
                saved = local.ShardProcessor
                local.ShardProcessor = base_shard.ShardProcessor  # type: ignore[misc]
                try:
                    super().__init__(settings, run_id, profiles)
                finally:
                    local.ShardProcessor = saved  # type: ignore[misc]
        base_class = BaseShards
    swaps: dict[Any, Any] = {shard.ShardProcessor: base_shard.ShardProcessor, shard: base_shard}
    if base_local is not None:
        swaps[local.InProcessPipeline] = base_class
    variants: dict[str, tuple[type[local.InProcessPipeline], list[tuple[str, Any, str]]]] = {
        "this": (local.InProcessPipeline, STAGES),
        "baseline": (base_class, [(stage, swaps.get(owner, owner), name) for stage, owner, name in STAGES]),
    }
    digests = {label: _outputs_digest(settings, raw, profiles, cls) for label, (cls, _) in variants.items()}
    cost = timer_cost()
    best: dict[str, dict[str, float]] = {label: {} for label in variants}
    plain: dict[str, float] = {}
    order = list(variants)
    for r in range(rounds):  # alternating, so a load that changes meanwhile weighs on both alike
        for label in order if r % 2 == 0 else order[::-1]:
            cls, stages = variants[label]
            plain[label] = min(plain.get(label, float("inf")), _run(settings, raw, profiles, True, cls))
            clock = StageClock(cost.outside)
            with instrumented(clock, stages):
                _run(settings, raw, profiles, True, cls)
            for stage in ORDER:
                spent = max(clock.seconds[stage] - clock.calls[stage] * cost.inside, 0.0) / n_pred * 1e6
                best[label][stage] = min(best[label].get(stage, spent), spent)
    same = digests["this"] == digests["baseline"]
    around = ("routing", "produce", "shard loop")
    this_us, base_us = (sum(best[label][s] for s in around) for label in ("this", "baseline"))
    this, base = best["this"], best["baseline"]
    stage1 = {label: sum(best[label][s] for s in STAGE1) for label in variants}
    plain_us = {label: seconds / n_pred * 1e6 for label, seconds in plain.items()}
    detail = (", ".join(f"{s} {base[s]:.2f} -> {this[s]:.2f} ({this[s] / base[s]:.2f}x)"
                        for s in around if base[s])
              + f" us/pred event; the three {base_us:.2f} -> {this_us:.2f} ({this_us / base_us:.2f}x); "
              f"stage 1 sum {stage1['baseline']:.2f} -> {stage1['this']:.2f}; "
              f"un-instrumented {plain_us['baseline']:.2f} -> {plain_us['this']:.2f}; "
              f"best of {rounds} alternating rounds, {n_pred:,} predictions + labels; outputs "
              f"{'identical' if same else 'DIFFERENT'} (digest {digests['this'][:12]})")
    return Figure("around_operators_us", "(12c) routing + produce + shard loop, this vs baseline", this_us,
                  "us/pred event", "", None, detail,
                  {"this": best["this"], "baseline": best["baseline"], "identical": same,
                   "plain_s": plain})


def _outcome_batches(settings: Settings, raw: Sequence[validate.RawRecord],
                     profiles: list[bytes]) -> list[list[Any]]:
    """The outcomes each shard emitted, call by call, in a columnar run."""
    batches: list[list[Any]] = []
    emit = shard.ShardProcessor._emit_outcomes

    def kept(self: shard.ShardProcessor, outcomes: list[Any], expired: list[Any], orphans: list[Any],
             duplicates: list[Any], out: list[Any]) -> None:
        batches.append(list(outcomes))
        emit(self, outcomes, expired, orphans, duplicates, out)

    shard.ShardProcessor._emit_outcomes = kept  # type: ignore[method-assign]
    try:
        _run(settings, raw, profiles, True)
    finally:
        shard.ShardProcessor._emit_outcomes = emit  # type: ignore[method-assign]
    return [b for b in batches if b]


def _outcome_messages_split(processor: shard.ShardProcessor, outcomes: list[Any]) -> list[Any]:
    """The outcome messages ``_emit_outcomes`` builds, from one dumps of the rows split per row."""
    rows = [to_rows.outcome_row(o, processor.run_id) for o in outcomes]
    if len(rows) < 2:
        values = [orjson.dumps(row) for row in rows]
    else:  # flat rows, run_id first: a bare '},{"run_id":' only ever ends one row and starts the next
        head = b'{"run_id":'
        parts = orjson.dumps(rows)[1:-1].split(b"}," + head)
        values = [head + part + b"}" for part in parts]
        values[0], values[-1] = parts[0] + b"}", head + parts[-1]
    return [shard.OutboundMessage(processor.outcomes_topic, o.prediction_id.encode(), value)
            for o, value in zip(outcomes, values, strict=True)]


def measure_outcome_encoding(n: int, rounds: int, seed: int = 0) -> Figure:
    """Figure (12d): the outcome messages of a columnar run, per row (the shard's) vs one dumps per batch."""
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, n, seed)
    batches = _outcome_batches(settings, raw, profiles)
    processor = shard.ShardProcessor(0, settings, run_id="bench-run")

    def per_row(outcomes: list[Any]) -> list[Any]:
        out: list[Any] = []
        processor._emit_outcomes(outcomes, [], [], [], out)
        return out

    def split(outcomes: list[Any]) -> list[Any]:
        out = _outcome_messages_split(processor, outcomes)
        out.extend(processor._model_events(outcomes, [], [], []))  # stage 2's columns, as the shard adds
        return out

    variants = {"per row": per_row, "per batch": split}
    same = all(per_row(b) == split(b) for b in batches)
    best: dict[str, float] = {}
    order = list(variants)
    for r in range(rounds):
        for label in order if r % 2 == 0 else order[::-1]:
            build = variants[label]
            t0 = CLOCK()
            for outcomes in batches:
                build(outcomes)
            best[label] = min(best.get(label, float("inf")), CLOCK() - t0)
    us = {label: seconds / n_pred * 1e6 for label, seconds in best.items()}
    count = sum(map(len, batches))
    detail = (f"one dumps per batch, split {us['per batch']:.2f} us/pred event "
              f"({us['per batch'] / us['per row']:.2f}x); {count:,} outcomes in {len(batches)} batches, best "
              f"of {rounds} alternating rounds; messages {'identical' if same else 'DIFFERENT'}")
    return Figure("outcome_messages_us", "(12d) outcome messages, orjson.dumps per row", us["per row"],
                  "us/pred event", "", None, detail, {"us": us, "identical": same})


def _eager_outputs(column: Sequence[Any]) -> Sequence[Any]:
    """``columns._prediction_outputs`` before the outputs stayed columns (f10e243's decoder): the
    common column's :class:`Prediction` objects built at once, each a C-level map over the column."""
    made = _OUTPUTS_AS_COLUMNS(column)
    if not isinstance(made, columns.OutputColumns):
        return made
    n = len(made)
    out = list(map(object.__new__, repeat(columns.Prediction, n)))
    values_of = [{"label": label, "score": score, "probabilities": None, "value": value}
                 for label, score, value in zip(made.labels, made.scores, made.values, strict=True)]
    fields = BaseModel.__dict__  # pydantic's per-instance slots and __dict__, set directly
    deque(map(fields["__dict__"].__set__, out, values_of), maxlen=0)
    deque(map(fields["__pydantic_fields_set__"].__set__, out, map(set, repeat(made.present, n))), maxlen=0)
    deque(map(fields["__pydantic_extra__"].__set__, out, repeat(None)), maxlen=0)
    deque(map(fields["__pydantic_private__"].__set__, out, repeat(None)), maxlen=0)
    return out


_OUTPUTS_AS_COLUMNS = columns._prediction_outputs
_COMPILED_PASS = struct_decode.prediction_columns


def _no_compiled_pass(values: Sequence[bytes | None], max_bytes: int) -> None:
    return None


@contextmanager
def _outputs(eager: bool) -> Iterator[None]:
    """The batch decoder making an object per output (``eager``) or keeping its columns, both on the
    orjson path (the compiled pass, which came after, makes its columns itself)."""
    columns._prediction_outputs = _eager_outputs if eager else _OUTPUTS_AS_COLUMNS  # type: ignore[assignment]
    struct_decode.prediction_columns = _no_compiled_pass  # type: ignore[assignment]
    try:
        yield
    finally:
        columns._prediction_outputs = _OUTPUTS_AS_COLUMNS  # type: ignore[assignment]
        struct_decode.prediction_columns = _COMPILED_PASS


def _alternating(
    n: int, rounds: int, variants: dict[str, Callable[[], Any]], seed: int = 0
) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, str], int]:
    """The columnar run under each of ``variants`` (a label: a context manager factory), in
    alternating rounds of one process: per variant the best per-stage microseconds a prediction
    (instrumented), the best un-instrumented figure, the digest of every message and row, and the
    predictions counted."""
    tune_gc()
    settings = bench_settings("127.0.0.1:9", "bs")
    raw, profiles, n_pred = _workload(settings, n, seed)
    digests: dict[str, str] = {}
    for label, variant in variants.items():
        with variant():
            digests[label] = _outputs_digest(settings, raw, profiles, local.InProcessPipeline)
    cost = timer_cost()
    best: dict[str, dict[str, float]] = {label: {} for label in variants}
    plain: dict[str, float] = {}
    order = list(best)
    for r in range(rounds):  # alternating, so a load that changes meanwhile weighs on both alike
        for label in order if r % 2 == 0 else order[::-1]:
            with variants[label]():
                plain[label] = min(plain.get(label, float("inf")), _run(settings, raw, profiles, True))
                clock = StageClock(cost.outside)
                with instrumented(clock):
                    _run(settings, raw, profiles, True)
            for stage in ORDER:
                spent = max(clock.seconds[stage] - clock.calls[stage] * cost.inside, 0.0) / n_pred * 1e6
                best[label][stage] = min(best[label].get(stage, spent), spent)
    return best, {label: seconds / n_pred * 1e6 for label, seconds in plain.items()}, digests, n_pred


def _ab_detail(old_label: str, new_label: str, best: dict[str, dict[str, float]], plain_us: dict[str, float],
               digests: dict[str, str], rounds: int, n_pred: int) -> tuple[str, bool]:
    """The A/B's detail line (per stage old -> new, stage 1 and un-instrumented ratios) and whether
    both variants emitted the same messages and rows."""
    same = len(set(digests.values())) == 1
    old, new = best[old_label], best[new_label]
    stage1 = {label: sum(best[label][s] for s in STAGE1) for label in best}
    detail = (", ".join(f"{s} {old[s]:.2f} -> {new[s]:.2f}" for s in STAGE1 if old[s])
              + f" us/pred event; stage 1 sum {stage1[old_label]:.2f} -> {stage1[new_label]:.2f} "
              f"({stage1[new_label] / stage1[old_label]:.2f}x); un-instrumented {plain_us[old_label]:.2f} "
              f"-> {plain_us[new_label]:.2f} ({plain_us[new_label] / plain_us[old_label]:.2f}x); best of "
              f"{rounds} alternating rounds, {n_pred:,} predictions + labels; outputs "
              f"{'identical' if same else 'DIFFERENT'} (digest {digests[new_label][:12]})")
    return detail, same


def _ab_figure(name: str, title: str, n: int, rounds: int, old: tuple[str, Callable[[], Any]],
               new: tuple[str, Callable[[], Any]], seed: int = 0) -> Figure:
    """An A/B figure of stage 1: the columnar run under ``old`` and ``new`` (a label and a context
    manager factory each) in alternating rounds (:func:`_alternating`), the new one's un-instrumented
    figure as its value; per-stage bests, both digests' agreement and the plain figures as extras."""
    best, plain_us, digests, n_pred = _alternating(n, rounds, dict((old, new)), seed)
    detail, same = _ab_detail(old[0], new[0], best, plain_us, digests, rounds, n_pred)
    return Figure(name, title, plain_us[new[0]], "us/pred event", "", None, detail,
                  {old[0]: best[old[0]], new[0]: best[new[0]], "identical": same, "plain_us": plain_us})


def measure_eager_outputs(n: int, rounds: int, seed: int = 0) -> Figure:
    """Figure (12e): the columnar run with the decoder's outputs as columns (this revision) beside the
    same run with a :class:`Prediction` object built per output (before), alternating rounds of one
    process (best of ``rounds`` per stage, instrumented, and un-instrumented); outputs digested."""
    return _ab_figure("outputs_as_columns_us", "(12e) stage 1, outputs as columns vs an object per output",
                      n, rounds, ("objects", lambda: _outputs(True)), ("columns", lambda: _outputs(False)),
                      seed)


_ROWS_DECODE = struct_decode._PREDICTION_DECODE if struct_decode.msgspec is not None else None
_FEATURE_MAPS = struct_decode._feature_maps


def _dict_decoder() -> Callable[[bytes], Any]:
    """The compiled pass's prediction decoder before feature rows: ``features`` read as a dict."""
    import msgspec  # (only with --feature-rows, which needs it)

    fields = []
    for field in msgspec.structs.fields(struct_decode._Prediction):
        kind = dict[str, Any] | msgspec.UnsetType if field.name == "features" else field.type
        fields.append((field.name, kind) if field.required else (field.name, kind, field.default))
    kept = msgspec.defstruct("_Prediction", fields, forbid_unknown_fields=True, gc=False)
    return msgspec.json.Decoder(kept).decode


@contextmanager
def _features(as_dicts: bool) -> Iterator[None]:
    """The compiled pass reading each event's feature object into a dict (``as_dicts``: the decoder
    before) or a batch of one layout into value rows (:class:`FeatureRows`, this revision)."""
    if as_dicts:
        struct_decode._PREDICTION_DECODE = _dict_decoder()
        struct_decode._feature_maps = lambda maps: maps  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        struct_decode._PREDICTION_DECODE = _ROWS_DECODE  # type: ignore[assignment]
        struct_decode._feature_maps = _FEATURE_MAPS


def measure_feature_rows(n: int, rounds: int, seed: int = 0) -> Figure:
    """Figure (12f): the columnar run with the compiled pass reading feature objects of one layout
    as value rows (no dict per event; the join packs its records from the columns) beside the same
    run with a dict per event (before), alternating rounds of one process; outputs digested."""
    return _ab_figure("feature_rows_us", "(12f) stage 1, feature rows vs a feature dict per event",
                      n, rounds, ("dicts", lambda: _features(True)), ("rows", lambda: _features(False)), seed)


@contextmanager
def _join_native(on: bool) -> Iterator[None]:
    """The join with its C paths (``on``, where this install built them) or its Python loops alone."""
    saved = join_native.NATIVE
    join_native.NATIVE = saved if on else None
    try:
        yield
    finally:
        join_native.NATIVE = saved


def measure_join_native(n: int, rounds: int, seed: int = 0) -> Figure:
    """Figure (12g): the columnar run with the join's C paths (``operators/join/_native.c``) beside the
    same run on its Python loops alone, alternating rounds of one process; outputs digested."""
    if join_native.NATIVE is None:
        raise SystemExit("--join-native: this install has no join C extension (no compiler at install?)")
    return _ab_figure("join_native_us", "(12g) stage 1, the join's C paths vs its Python loops", n, rounds,
                      ("python", lambda: _join_native(False)), ("c", lambda: _join_native(True)), seed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="prediction events (each with a label)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="instrumented runs of each path (12) and replays of the join's calls (12b), "
                             "best of")
    parser.add_argument("--join-baseline", type=Path, default=None,
                        help="another revision's operators/join package (its directory; or a one-file "
                             "join.py of before the package): its replayed calls beside this one's")
    parser.add_argument("--join-only", action="store_true",
                        help="the join's replayed calls (12b) alone (with --join-baseline: an A/B of a join "
                             "change)")
    parser.add_argument("--shard-baseline", type=Path, default=None,
                        help="another revision's pipeline/shard.py: stage 1 on it beside this one's (12c)")
    parser.add_argument("--outcome-encoding", action="store_true",
                        help="the outcome messages per row vs one dumps per batch (12d), alone")
    parser.add_argument("--eager-outputs", action="store_true",
                        help="stage 1 with the decoder's outputs as columns vs an object per output (12e)")
    parser.add_argument("--feature-rows", action="store_true",
                        help="stage 1 with feature objects read as value rows vs a dict per event (12f)")
    parser.add_argument("--join-native", action="store_true",
                        help="stage 1 with the join's C paths vs its Python loops alone (12g)")
    parser.add_argument("--local-baseline", type=Path, default=None,
                        help="with --shard-baseline: that revision's pipeline/local.py (the transport)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2_000)
        args.rounds = min(args.rounds, 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.outcome_encoding:
        encoded = measure_outcome_encoding(args.n, args.rounds)
        print_figures([encoded], "outcome messages")
        return 0 if encoded.extra["identical"] else 1
    if args.eager_outputs:
        outputs = measure_eager_outputs(args.n, args.rounds)
        print_figures([outputs], "outputs as columns, A/B")
        return 0 if outputs.extra["identical"] else 1
    if args.join_native:
        compiled = measure_join_native(args.n, args.rounds)
        print_figures([compiled], "the join in C, A/B")
        return 0 if compiled.extra["identical"] else 1
    if args.feature_rows:
        rows = measure_feature_rows(args.n, args.rounds)
        print_figures([rows], "feature rows, A/B")
        return 0 if rows.extra["identical"] else 1
    if args.shard_baseline is not None:  # the A/B alone
        compared = measure_shard_baseline(args.n, args.rounds, args.shard_baseline, args.local_baseline)
        print_figures([compared], "around the operators, A/B")
        return 0 if compared.extra["identical"] else 1
    if args.join_only:
        alone = measure_join(args.n, args.rounds, args.join_baseline)
        print_figures([alone], "join alone")
        return 0 if alone.extra.get("identical", True) else 1
    figure = measure(args.n, rounds=args.rounds)
    print_figures([figure], "per-stage breakdown")
    row, col = figure.extra["row_us_per_event"], figure.extra["us_per_event"]
    print(f"  {'stage':<18} {'row path':>10} {'columnar':>10}  (us/pred event; columnar/row)")
    for stage in ORDER:
        ratio = col[stage] / row[stage] if row[stage] else float("nan")
        print(f"  {stage:<18} {row[stage]:10.2f} {col[stage]:10.2f}  {ratio:.2f}")
    print(f"  {'un-instrumented':<18} {figure.extra['row_uninstrumented_us']:10.2f} "
          f"{figure.extra['uninstrumented_us']:10.2f}")
    replayed = measure_join(args.n, args.rounds, args.join_baseline)
    print_figures([replayed], "join alone")
    return 0 if replayed.extra.get("identical", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
