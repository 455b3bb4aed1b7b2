"""Many models on one worker: 1,000 models x 25 features with Zipf traffic, sequential detection on.

The pure stage-1 + stage-2 operators (``InProcessPipeline``, the processors the worker runs; as
row (4b) of bench_pipeline.py) over simulated events of ``--models`` models (20 numeric + 5
categorical features each, every prediction labelled), model ``i`` (0-based) drawing a share of the
traffic proportional to ``(i + 1) ** -s`` (Zipf, ``s`` = 1.1). Every model has its own training
profile (built from its own drift-free training traffic, ``--training`` rows each), so every
feature of every model is a distinct reference: nothing is shared between models, only between
the shards that see the same model. The worker's default 4 partitions; predictions are keyed by
their id, so every shard watches every model.

Two figures, measured in one process:

- **RSS** after the run (``/proc/self/statm``; the events fed are held too), target <= 2 GB, with
  the pipeline's share (RSS after minus before building it) and the monitors it holds. The output
  rows go to the sink after each batch (counted, not held), as a worker writes them.
- **Per-event cost**, CPU seconds per prediction (``time.process_time``) over the Zipf traffic,
  after a warm-up of :data:`WARM_EACH` predictions per model (even shares) in which every shard
  built every model's monitors and stage 2 closed each model's first window (building its scorer
  and under-filled rows; that one-off cost, mostly calibration, is reported apart), against
  the same run with all traffic on one model (the first model's own events, as many), run once
  before and once after the many models' run and taken as their mean (a load that changes
  meanwhile weighs on both sides alike). Target: within 20 %, at a steady state: the cost in the
  feeds in which no window and no metrics interval closed (no partials, merges, window rows,
  grid-line flushes or bucket rows; what many models add per event inside a batch, which neither a
  higher rate nor coarser windows would dilute) plus each close's measured cost weighed at the
  rate sustained traffic brings it. The timed run itself holds every model's window close in a
  few seconds of event time, ~14x the closes sustained traffic at 5,000/s brings: its ratio is in
  the detail, and the figure where a run closed no window (no close to weigh). Those closes are
  the warm-up's under-filled windows; a close that sustained traffic fills is priced with what
  scoring adds to it in stage 2, timed on windows of the models' own sizes (their 10th-90th
  percentiles) drawn from model 0's drift-free traffic (so its tests' p-values are computed as a
  steady state's are), the mean over those sizes.

The cost figure also says what of it the cyclic garbage collector took in each run (its CPU per
prediction and collections by generation): state made of many small tracked objects that lives a
window (buffered columns, partials) is scanned as it ages, which no function's profile shows.

    .venv/bin/python bench/bench_models.py [--models 1000] [--n 200000] [--rate 100] [--quick] [--json PATH]

``--rate`` (default :data:`RATE`, 100) is the predictions per second over all models after the
warm-up, so it sets how many predictions a window holds: the per-model work of each window close
and grid line is paid per second of event time, whatever the traffic, and its share of the cost
per prediction falls as the rate rises (docs/scaling.md, many models). The event time a run
covers is ``--n / --rate`` seconds: keep it several of the smallest window (300 s) long, or the
run sees too few window closes to stand for a steady state.

Below 1,000 models the verdicts are about 1,000: the RSS is extrapolated linearly in models (the
run's per-model increment over the one-model run) and the cost ratio, which grows with models, is
the run's; either can only miss (over the target already) or stay without a verdict.

``--batch-records N`` (default 5,000, the worker's ``worker.batch_max_records``): the records a
batch, both runs. With many models a batch holds a few events of each model per shard, and what a
model costs per group of its events (buffered, held, watched) is paid per batch: larger batches
make fewer, larger groups (docs/scaling.md, session 26).

``--no-sequential``: both runs with the sequential detectors off (``sequential.enabled``), no
target: against a default run, what the feature watch costs each side (at 5,000 predictions/s,
between closes, ~26 of the ~30 CPU-us a prediction 1,000 models add; without it 1.14x;
docs/scaling.md, session 28). The cost figure also says the output rows a prediction of each
run, by the many models' largest tables: at 100/s 1,000 models write ~3 rows a prediction, one
model 1.

``--quick`` (``make bench``'s smoke run, row 14 of bench/run_all.py): 8 models, 3,000 events.

``--rounds N`` (default 1): N many-model runs, each between two one-model runs (one, many, one,
many, ..., one: N + 1 of one model), each round a ratio with its bracketing pair; the figures are
the median round's and the detail lists every round's (two runs of the same code on this box,
minutes apart, read 27.7 and 50.9 CPU-us a prediction between closes: one round is one draw of its
load).

``--data DIR``: the generated workload (profiles, both runs' records, the filled windows; ~4 of
the ~5.5 minutes of a 1,000-model run) is kept in ``DIR`` and a later run with the same parameters
reads it instead (``workload.json`` there records them). Two revisions can then run on the same
events: the same command with ``PYTHONPATH=TREE/src`` (a worktree whose C extensions
``bench_revisions.build_extensions`` built) and without it, in turn. Delete ``DIR`` when the
workload's code (simulate, this bench's ``traffic`` and ``filled_windows``) changed.

``--calibrations DIR`` (default ``driftline-bench-calibrations`` in the temp directory; ``none``: in
the process only): the sequential detectors' calibrations are shared through ``DIR`` as a worker's
``worker.state_dir/calibrations`` shares them, so only the first run calibrates (~0.8 CPU-s a model,
~13 CPU-minutes at 1,000) and later runs' warm-ups read the thresholds (the same either way: the
sampling is seeded from the reference). The warm-up figure says which it was. A model's profile
does not depend on how many models run (see :func:`profiles_of`), so a run of more models than an
earlier one calibrates only the models past those (a 1,000-model run after a 300-model one: 700).

``--under-filled`` (no targets; ``--n`` windows, default 300 with it): stage 2's cost of closing
an under-filled window (fewer events than ``drift.min_count``, 1-26 here, over 4 shards'
partials, against one of this bench's 25-feature profiles) as it was (sketches merged, every
feature scored) and as it is (counts and moments merged,
:meth:`~driftline.operators.scorer.DriftScorer.count_stats`), with the window's rows built either
way; in one process, alternating rounds, process CPU, best of 5.

``--scored-close`` (no targets): what the steady state prices a scored close at, alone: stage 2's
extra CPU on a window it scores over one it finds under-filled, on windows of ``--models`` models'
sizes at ``--rate`` (:func:`steady_window_events`, :func:`filled_windows`, 10 a size), with the
compiled paths on and off (the KS p-values then scipy's), alternating in one process, best of 3,
the p-value cache emptied each round; per size and the mean.

``--partials`` (no targets; ``--n`` windows, default 300 with it): a window of 1-26 events over 4
shards, each shard's partial made and encoded (stage 1) and decoded and parsed (stage 2) with
quantile sketches, with a :class:`SketchValues` per column (values in place of sketches: what a
shard holding fewer than ``drift.min_count`` events of a window sent before the values form) and
in the values form (counts and values only, :func:`values_partial`: what it sends now),
alternating in one process, thread CPU, best of 5; then ``--models`` (default 50 with it) models'
run of ``--n`` x 50 predictions (default 20,000), windows of 10 and 60 s (about as many windows per
prediction as 1,000 models' default windows), with shards sending the per-column values vs the
values form, alternating runs (order flipped each round), best of 3.

``--shard-baseline REV`` (no targets): the many-model workload only, fed to two in-process
pipelines in one process, one whose shards are REV's ``shard.py`` (its imports today's), the same
batches in turn (which goes first flips each batch): each one's CPU per prediction in the feeds
that close no window nor interval, and whether both wrote as many rows to each table. Whole runs
in separate processes move more between runs of the same code than one shard change does; this
puts both sides under the same load.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from common import START_MS, Figure, GcClock, at_most, bench_settings, module_at_revision, print_figures

from driftline import runtime
from driftline.config import Settings
from driftline.demo.training import LABEL, PREDICTION, SCORE, training_columns, training_scenario
from driftline.operators import calibration
from driftline.operators import drift as drift_module
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.scorer import DriftScorer
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import (
    EventColumns,
    SketchValues,
    WindowAccumulator,
    WindowBuffer,
    merge_accumulators,
    values_partial,
)
from driftline.pipeline import local as local_module
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline, LoggedEvent, logged_records
from driftline.pipeline.records import Partial, WindowKey, decode_model_event, encode_model_event
from driftline.pipeline.shard import ACCUMULATE_CHUNK
from driftline.pipeline.to_rows import drift_score_row, feature_window_row, model_drift_row, window_columns
from driftline.pipeline.windows import check_partial
from driftline.runtime import tune_gc
from driftline.schemas.events import Prediction
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec

ZIPF_S = 1.1
TARGET_MODELS = 1000  # the models the targets are set for
RSS_TARGET_GB = 2.0
COST_TARGET = 1.20  # many models' per-event cost over one model's
RATE = 100.0  # simulated predictions per second (all models)
# warm-up predictions per model, drawn at random (so Poisson-like, mean 40): a shard misses a model's
# warm-up with probability ~exp(-40 / 4), ~0.2 of 1,000 models x 4 shards; at 24 it was ~10, each
# building its bank (~8 ms) in the timed feeds, ~0.8 CPU-us a prediction no steady state pays
WARM_EACH = 40
QUICK_MODELS, QUICK_N = 8, 3_000  # smoke sizes: building 200 references' monitors takes ~8 CPU-s
CALIBRATIONS = Path(tempfile.gettempdir()) / "driftline-bench-calibrations"  # shared across runs


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def model_specs(models: int) -> list[ModelSpec]:
    """``models`` gaussian models, 20 numeric + 5 categorical features, Zipf traffic shares."""
    return [ModelSpec(model_id=f"m{i:04d}", n_numeric=20, n_categorical=5, traffic_share=(i + 1) ** -ZIPF_S)
            for i in range(models)]


def profiles_of(specs: list[ModelSpec], rows_each: int, settings: Settings) -> list[ReferenceProfile]:
    """One training profile per model, each from the first ``rows_each`` rows of its own drift-free
    traffic.

    Model ``i``'s rows come from its own source (seeded by its index) in its own order, so its first
    ``rows_each`` rows, and so its profile and its detectors' calibrations, are the same whatever the
    number of models: a 1,000-model run reads the calibrations a 300-model run shared for its first
    300 models. (Cut from even traffic with room to spare: every model gets ``rows_each``.)"""
    even = [s.model_copy(update={"traffic_share": 1.0}) for s in specs]  # same sources: same order
    base = Scenario(seed=0, start=START_MS, duration_s=1.0, rate=RATE, models=even)
    columns = training_columns(training_scenario(base, _with_room(rows_each, len(specs))))
    profiles = []
    for (model_id, version), cols in sorted(columns.items()):
        if len(cols[LABEL]) < rows_each:
            raise RuntimeError(f"{model_id} drew {len(cols[LABEL])} training rows, fewer than {rows_each}")
        # the score is the model's output, not a feature (as `driftline profile build` reads a
        # training table): a profile of it would watch a 26th feature no event carries
        first = {name: values[:rows_each] for name, values in cols.items() if name != SCORE}
        profiles.append(build_profile(
            model_id, version, first, label_column=LABEL, prediction_column=PREDICTION,
            bins=settings.drift.bins, top_k=settings.drift.top_k, effective_from_ms=0,
            source="training", task="classification", created_at_ms=0))
    return profiles


def _with_room(rows_each: int, models: int) -> int:
    """Even traffic over ``models`` long enough that each draws ``rows_each`` rows (a model's draws
    are binomial: the mean less 8 standard deviations still clears it)."""
    total = rows_each * models
    while (total / models) - 8 * (total / models) ** 0.5 < rows_each:
        total = int(total * 1.05) + models
    return total


PARTITIONS = bench_settings("127.0.0.1:9", "bm").topics.partitions
"""The default predictions and labels partitions (4): stage-1 shards on the one worker."""
KEYS = ("prediction_id", "model_id")
"""What producers key predictions by (labels are keyed by their prediction id either way)."""


@dataclass(frozen=True, slots=True)
class KeyedEvent:
    """A simulated event under another Kafka key (see :func:`traffic`)."""

    kind: str
    key: bytes
    value: bytes
    timestamp_ms: int


def keyed_by_model(event: LoggedEvent) -> LoggedEvent:
    """A prediction keyed by its model id, as a producer keying by model would send it (so a
    model's predictions share one partition); a label as it is."""
    if event.kind == "labels":
        return event
    return KeyedEvent(event.kind, orjson.loads(event.value)["model_id"].encode(), event.value,
                      event.timestamp_ms)


def traffic(specs: list[ModelSpec], n: int, settings: Settings,
            rate: float = RATE, key_by: str = "prediction_id") -> tuple[list[RawRecord], int]:
    """As the topics would hold them: a warm-up of :data:`WARM_EACH` predictions per model (even
    shares, so every shard has built every model's monitors, at :data:`RATE` or less: it spans the
    smallest window and its lateness, so each model's first window closes in it), then ``n``
    predictions over ``specs`` in their Zipf shares at ``rate`` predictions/s in all, each
    labelled; (records, records of the warm-up). ``key_by`` ``model_id``: the predictions keyed
    by model (:func:`keyed_by_model`), so each model's are one shard's and re-routed to the shards
    that join them; the warm-up then builds each model's monitors on its shard only."""
    delay = LabelDelay(median_s=30, max_s=600)
    warm_n = WARM_EACH * len(specs)
    even = [s.model_copy(update={"traffic_share": 1.0}) for s in specs]
    # At most RATE, over whole smallest windows, past the first one's end by its lateness: each
    # model's first window closes in the warm-up (every shard's watermark past it), so stage 2's
    # scorer and under-filled rows of its profile (built once a model, as the monitors) are not
    # timed; the warm-up's last window closes in the timed part, as its one window did before.
    smallest = min(settings.windows.sizes_s)
    spanned = max(warm_n / RATE, smallest + settings.windows.allowed_lateness_s)
    warm_s = smallest * math.ceil(spanned / smallest)
    warm = Scenario(seed=0, id_namespace="warm", start=START_MS, duration_s=warm_s, rate=warm_n / warm_s,
                    models=even, label_delay=delay, malformed_rate=0.0)
    main = Scenario(seed=0, start=START_MS + int(warm_s * 1000) + delay.max_s * 1000,
                    duration_s=n / rate, rate=rate, models=specs, label_delay=delay, malformed_rate=0.0)
    warm_events = list(generate(warm))
    events: list[LoggedEvent] = [*warm_events, *generate(main)]
    if key_by not in KEYS:
        raise ValueError(f"key_by is {key_by!r}, not one of {KEYS}")
    if key_by == "model_id":
        events = list(map(keyed_by_model, events))
    records = logged_records(events, settings)
    return records, len(warm_events)


def run(settings: Settings, profiles: list[ReferenceProfile], records: list[RawRecord],
        warm: int, values_below: int | None = None) -> dict[str, Any]:
    """Feed the first ``warm`` records, then the rest timed (CPU per prediction); RSS and monitors
    after. ``values_below``: the shards' threshold for a partial of values (0: sketches always)."""
    tune_gc()
    gc.collect()
    before = rss_bytes()
    cpu0 = time.process_time()
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    for shard in pipeline.shards if values_below is not None else ():
        shard.values_below = values_below
    batch = settings.worker.batch_max_records
    written = 0
    with GcClock() as warm_collector:  # (its collections' pauses: the pacing raises the threshold here)
        for i in range(0, warm, batch):
            pipeline.feed(records[i : min(i + batch, warm)])
            written += _sink(pipeline)
    warm_cpu = time.process_time() - cpu0
    watches = [s.watch for s in pipeline.shards if s.watch is not None]
    warm_monitors = sum(w.monitor_count() for w in watches)
    closed = first_closed = _windows_closed(pipeline)
    under_filled = 0
    between_cpu, between_predictions = 0.0, 0  # feeds in which no window or interval closed (_between)
    interval_cpu, interval_predictions, intervals = 0.0, 0, 0  # feeds that closed metrics intervals only
    timed_rows: Counter[str] = Counter()  # rows written after the warm-up, by table
    predictions_topic = settings.topics.predictions
    sent = pipeline.model_events_sent
    cpu1 = time.process_time()
    with GcClock() as collector:
        for i in range(warm, len(records), batch):
            chunk = records[i : i + batch]
            fed = time.process_time()
            pipeline.feed(chunk)
            fed = time.process_time() - fed
            fed_predictions = sum(1 for r in chunk if r.topic == predictions_topic)
            closing = _intervals_closed(pipeline)
            # a feed that closed windows is a window close's, with any intervals it closed (_steady)
            if _windows_closed(pipeline) == closed and closing:
                interval_cpu += fed
                interval_predictions += fed_predictions
                intervals += closing
            elif _windows_closed(pipeline) == closed:
                between_cpu += fed
                between_predictions += fed_predictions
            closed = _windows_closed(pipeline)
            under_filled += _under_filled(pipeline)
            timed_rows.update({table: len(rows) for table, rows in pipeline.rows.items()})
            written += _sink(pipeline)
    cpu = time.process_time() - cpu1
    closed = _windows_closed(pipeline) - first_closed
    predictions = sum(1 for r in records[warm:] if r.topic == settings.topics.predictions)
    gc.collect()
    after = rss_bytes()
    monitors = sum(w.monitor_count() for w in watches)
    return {
        "cpu_per_prediction_us": cpu / predictions * 1e6, "predictions_timed": predictions,
        "warmup_cpu_s": warm_cpu, "rss_bytes": after, "pipeline_rss_bytes": after - before,
        "monitors": monitors, "monitors_built_timed": monitors - warm_monitors,
        "models_watched": len({m for w in watches for m in w.models}), "rows_written": written,
        "windows_closed": closed, "windows_under_filled": under_filled,
        "gc_cpu_per_prediction_us": collector.cpu_s / predictions * 1e6,
        "gc_collections": collector.collections,
        "gc_longest_pause": max(warm_collector.longest, collector.longest),
        "gc_cpu_per_prediction_us_by_generation": [
            spent / predictions * 1e6 for spent in collector.cpu_s_by_generation],
        "between_closes_cpu_per_prediction_us": between_cpu / max(between_predictions, 1) * 1e6,
        "between_closes_predictions": between_predictions,
        "interval_feeds_cpu_s": interval_cpu, "interval_feeds_predictions": interval_predictions,
        "intervals_closed": intervals,
        "timed_rows": dict(timed_rows),
        "model_events_per_prediction": (pipeline.model_events_sent - sent) / max(predictions, 1),
    }


def warmed_from(data: Path, which: str) -> tuple[InProcessPipeline, list[RawRecord], int]:
    """A kept workload's run (``which``: one or many, of ``--data`` ``data``) through its warm-up, as
    :func:`run` feeds it (the collector tuned, the rows sunk): the pipeline, the records, the
    warm-up's count of them (the timed part follows)."""
    with (data / f"{which}.pickle").open("rb") as f:
        profiles, (records, warm) = pickle.load(f)
    settings = settings_for(PARTITIONS)
    tune_gc()
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    batch = settings.worker.batch_max_records
    for i in range(0, warm, batch):
        pipeline.feed(records[i : min(i + batch, warm)])
        _sink(pipeline)
    return pipeline, records, warm


def _windows_closed(pipeline: InProcessPipeline) -> int:
    """Windows stage 2 has closed (merged and scored) so far: the per-window work (each shard's
    partial, its merge, 25 features scored and written) is the same for a window of 3 events as
    for one of 30,000, so with many models it is paid every few predictions."""
    return sum(model.windows.totals["windows_closed"] for model in pipeline.models)


def _intervals_closed(pipeline: InProcessPipeline) -> int:
    """Metrics intervals of a model stage 2 closed in the rows not yet sunk (its overall bucket's
    row: one a model an interval), a per-interval cost like a window's close."""
    return sum(1 for row in pipeline.rows.get("model_metrics", ())
               if row.get("row_kind") == "interval" and row.get("segment") == "")


def _under_filled(pipeline: InProcessPipeline) -> int:
    """Windows of the rows not yet sunk that had fewer than ``drift.min_count`` events: written
    with counts only, no distribution statistics (``model_drift.score_status``)."""
    return sum(1 for row in pipeline.rows.get("model_drift", ()) if row.get("score_status") == "under_filled")


def _sink(pipeline: InProcessPipeline) -> int:
    """Hand the rows a batch produced to the sink, as a worker writes them to ClickHouse: the
    in-process pipeline would otherwise hold every output row (~1.8 KB per prediction at 30
    models), which no worker does. The rows it wrote."""
    written = sum(len(rows) for rows in pipeline.rows.values())
    pipeline.rows.clear()
    return written


FILLED_WINDOWS = 10
"""Windows of each steady-state size stage 2's scored close is timed on (:func:`scored_close_extra_us`)."""
FILLED_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Where among the models (by events a window) those sizes are taken: each stands for a fifth of them."""
BATCH_RECORDS = bench_settings("127.0.0.1:9", "bm").worker.batch_max_records
"""Records a fetch hands stage 1 (the worker's default ``worker.batch_max_records``, 5,000)."""


def settings_for(partitions: int, batch_records: int = BATCH_RECORDS, sequential: bool = True) -> Settings:
    """The bench's settings with ``partitions`` predictions and labels partitions (stage-1 shards),
    ``batch_records`` records a batch and the sequential detectors on or off."""
    return bench_settings("127.0.0.1:9", "bm", topics={"partitions": partitions},
                          worker={"batch_max_records": batch_records}, sequential={"enabled": sequential})


def child(which: str, data: Path, calibrations: Path | None, partitions: int,
          batch_records: int = BATCH_RECORDS, sequential: bool = True) -> None:
    """One run in this fresh process (its RSS is the run's alone): prints its figures as JSON.

    ``input_rss_bytes`` is what loading the events and profiles added (a worker does not hold them)."""
    start = rss_bytes()
    with (data / f"{which}.pickle").open("rb") as f:
        profiles, (records, warm) = pickle.load(f)
    gc.collect()
    loaded = rss_bytes()
    shared_before = _calibrations_shared(calibrations)
    result = run(settings_for(partitions, batch_records, sequential), profiles, records, warm)
    result["input_rss_bytes"] = loaded - start
    result["calibrations_found"] = shared_before  # banks' thresholds earlier runs left in the directory
    result["calibrations_added"] = _calibrations_shared(calibrations) - shared_before
    filled = data / "filled.pickle"
    if which == "many" and filled.exists():  # what a window sustained traffic fills costs stage 2 more
        with filled.open("rb") as f:
            sized: list[tuple[int, list[list[dict[str, Any]]]]] = pickle.load(f)
        settings = settings_for(partitions)
        extras = [scored_close_extra_us(profiles[0], settings, windows) for _, windows in sized]
        result["scored_close_extra_us"] = sum(extras) / len(extras)
        result["scored_close_events"] = [events for events, _ in sized]
    print(json.dumps(result))


def scored_close_extra_us(profile: ReferenceProfile, settings: Settings,
                          windows: list[list[dict[str, Any]]], rounds: int = 3) -> float:
    """Stage 2's extra CPU-us on a window it scores (4 shards' sketches merged, every feature
    scored, its p-values too where it holds ``drift.min_count`` values, its rows) over one it finds
    under-filled (counts and moments merged, count rows), on ``windows`` of ``profile``'s model
    (:func:`filled_windows`); in this process, best of ``rounds``, each scored round with the KS
    p-values' cache emptied (a steady state's windows rarely repeat a (statistic, size) pair: a
    round that found the last round's would price the dearest step at nothing). The stage-1 side
    of a filled window (a sketch per column where a shard holds ``drift.min_count`` events) is not
    in it."""
    best = close_costs(profile, settings, windows, rounds)
    return (best[True] - best[False]) * 1e6


def close_costs(profile: ReferenceProfile, settings: Settings, windows: list[list[dict[str, Any]]],
                rounds: int) -> dict[bool, float]:
    """Stage 2's CPU-s a window of ``windows`` (each 4 shards' partials, as sent) of ``profile``'s
    model, scored (True: sketches merged, every feature scored) and under-filled (False), rows made
    either way; in this process, the two alternating, best of ``rounds``."""
    scorer = DriftScorer(profile, drift=settings.drift)
    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for scored in (True, False):
            drift_module.clear_pvalue_cache()
            # parsed afresh each round, as stage 2 parses them on arrival (not timed): a merge that
            # built a values-form part's sketch in place (before 335906b) would price later rounds low
            parsed = [[check_partial(partial) for partial in window] for window in windows]
            started = time.process_time()
            close_under_filled(parsed, scorer, scored=scored)
            best[scored] = min(best[scored], time.process_time() - started)
    return {scored: spent / len(windows) for scored, spent in best.items()}


def steady_window_events(models: int, rate: float, size_s: int, min_count: int,
                         quantiles: Sequence[float] = FILLED_QUANTILES) -> list[int]:
    """The events a window of ``size_s`` holds in sustained traffic at ``rate`` at each of
    ``quantiles`` of the models whose windows hold ``min_count`` or more ([]: none does). A close's
    cost turns on its size: through scipy, the KS p-value's branch for an effective size up to 140
    (Pomeranz's recursion) cost ~3x the larger sizes' (``--scored-close``: ~10 ms against ~3.4-4.6
    with the C paths off; ~2.3-3.0 at every size with them).

    >>> steady_window_events(3, 100.0, 10, 100, (0.0, 0.5, 0.9))  # Zipf shares ~0.57, ~0.26, ~0.17
    [169, 264, 567]
    """
    held = sorted(round(rate * size_s * share) for share in _shares(models))
    filled = [events for events in held if events >= min_count]
    return [filled[min(int(q * len(filled)), len(filled) - 1)] for q in quantiles] if filled else []


def _calibrations_shared(directory: Path | None) -> int:
    return sum(1 for _ in directory.glob("*.f8")) if directory is not None and directory.is_dir() else 0


def run_in_child(which: str, data: Path, calibrations: Path | None, partitions: int,
                 batch_records: int = BATCH_RECORDS, sequential: bool = True,
                 gc_threshold0: int | None = None) -> dict[str, Any]:
    shared = ["--calibrations", str(calibrations) if calibrations is not None else "none",
              "--partitions", str(partitions), "--batch-records", str(batch_records),
              *([] if sequential else ["--no-sequential"]),
              *([] if gc_threshold0 is None else ["--gc-threshold0", str(gc_threshold0)])]
    out = subprocess.run([sys.executable, __file__, *shared, "--child", which, str(data)], check=True,
                         capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--n", type=int, default=200_000, help="prediction events (each with a label)")
    parser.add_argument("--training", type=int, default=1000, help="training rows per model")
    parser.add_argument("--rate", type=float, default=RATE,
                        help="predictions per second over all models, after the warm-up (module docstring)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS} models, {QUICK_N:,} events")
    parser.add_argument("--key-by", choices=KEYS, default="prediction_id",
                        help="what the many models' predictions are keyed by (module docstring)")
    parser.add_argument("--batch-records", type=int, default=BATCH_RECORDS,
                        help="records a batch (worker.batch_max_records) of both runs (module docstring)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS,
                        help="predictions and labels partitions, so stage-1 shards (both runs)")
    parser.add_argument("--no-sequential", dest="sequential", action="store_false",
                        help="both runs without the sequential detectors (module docstring)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="N many-model runs, each between two one-model runs; the median round's "
                             "figures (module docstring)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="keep the generated workload in DIR and reuse it when the parameters match "
                             "(module docstring)")
    parser.add_argument("--calibrations", type=_directory, default=CALIBRATIONS,
                        help="share the detectors' calibrations across runs here ('none': this process only)")
    parser.add_argument("--baseline", type=Path,
                        help="--partials: an earlier window_stats.py (git show REV:src/driftline/operators/"
                             "window_stats.py > FILE) makes and reads the per-column values")
    parser.add_argument("--partials", action="store_true",
                        help="a small window's partial, sketches vs values (module docstring)")
    parser.add_argument("--scored-close", action="store_true",
                        help="stage 2's extra cost of a filled window, C paths on and off (module docstring)")
    parser.add_argument("--under-filled", action="store_true",
                        help="stage 2's cost of an under-filled window, before vs now (module docstring)")
    parser.add_argument("--shard-baseline", metavar="REV",
                        help="the many-model run only, this revision's pipeline against one on REV's "
                             "shard.py, in one process (module docstring)")
    parser.add_argument("--gc-threshold0", type=int, metavar="N",
                        help="both runs' collector generation-0 threshold, fixed (default: the worker's "
                             "pacing, driftline.runtime.CollectorPacing)")
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.n = min(args.models, QUICK_MODELS), min(args.n, QUICK_N)
    return args


def _directory(text: str) -> Path | None:
    return None if text == "none" else Path(text)


def figures_for(models: int, n: int, one: dict[str, Any], many: dict[str, Any],
                rate: float = RATE, key_by: str = "prediction_id",
                partitions: int = PARTITIONS, batch_records: int = BATCH_RECORDS,
                sequential: bool = True) -> list[Figure]:
    run_ratio = many["cpu_per_prediction_us"] / one["cpu_per_prediction_us"]
    windows = settings_for(partitions).windows
    # The target is a worker's cost in sustained traffic: the timed run weighs closes ~14x more
    # than that (steady_costs), so its steady state is the figure; the run's own ratio without one.
    min_count = settings_for(partitions).drift.min_count
    steady = steady_costs(many, one, models, rate, windows.sizes_s, windows.metrics_interval_s, min_count)
    ratio = round_ratio(many, one, models, rate, partitions)
    cost_label = (f"(14b) per-event cost{' at a steady state' if steady is not None else ''}, {models:,} "
                  f"models / 1 model at {rate:,.0f} pred/s")
    measured_gb = (many["rss_bytes"] - many["input_rss_bytes"]) / 1e9
    per_model_bytes = (many["pipeline_rss_bytes"] - one["pipeline_rss_bytes"]) / max(models - 1, 1)
    short = max(TARGET_MODELS - models, 0)
    worker_gb = measured_gb + per_model_bytes * short / 1e9
    rss_label = f"(14a) RSS, {models:,} models on one worker"
    cost_met = at_most(ratio, COST_TARGET)
    rss_met = at_most(worker_gb, RSS_TARGET_GB)
    if short:
        # the per-model increment moves with models and events (measured 1.5, 2.9, 1.9 MB at 8, 30, 300;
        # 1.55 MB measured at 1,000 models and 100,000 predictions, rows sunk, rings grown as needed):
        # an extrapolation under the target is no verdict, one over it is a miss
        rss_met = False if rss_met is False else None
        rss_label = f"(14a) RSS, {TARGET_MODELS:,} models on one worker (extrapolated from {models:,})"
        cost_met = False if cost_met is False else None  # fewer models cost less: only a miss is known
    detail = (f"{models:,} models x 25 features, Zipf s={ZIPF_S}, {n:,} predictions at {rate:,.0f}/s; "
              f"predictions keyed by {key_by}, batches of {batch_records:,} records; "
              f"{'' if sequential else 'sequential detection off; '}"
              f"{many['monitors']:,} monitors over {partitions} shards; "
              f"process RSS {many['rss_bytes'] / 1e9:.2f} GB "
              f"less the events fed ({many['input_rss_bytes'] / 1e9:.2f} GB); the pipeline's own share "
              f"{many['pipeline_rss_bytes'] / 1e9:.2f} GB "
              f"(one model: {one['pipeline_rss_bytes'] / 1e6:.0f} MB), {per_model_bytes / 1e6:.2f} MB per "
              f"further model; measured {measured_gb:.2f} GB")
    steady_text = _steady(many, one, models, rate, windows.sizes_s, windows.metrics_interval_s, min_count)
    cost = (f"{_rounds(many)}{steady_text}; "
            f"{_between(many, one)}; over the timed run (every model's window closing in its "
            f"{n / rate:,.0f} s of event time) {many['cpu_per_prediction_us']:.1f} vs "
            f"{one['cpu_per_prediction_us']:.1f} CPU-us per prediction ({run_ratio:.2f}x{_one_runs(one)}; "
            f"after a warm-up that built the monitors and scorers: {many['warmup_cpu_s']:.0f} vs "
            f"{one['warmup_cpu_s']:.0f} CPU-s, {_calibrated(many)}); windows closed "
            f"{many['windows_closed']:,} vs {one['windows_closed']:,}, one per {_per(many)} vs {_per(one)} "
            f"predictions; {many.get('windows_under_filled', 0):,} under-filled (< drift.min_count events: "
            f"not scored); {_rows_written(many, one)}; {_model_events(many, one)}; of the CPU per "
            f"prediction, cyclic GC {_gc(many)} vs {_gc(one)}")
    return [
        Figure("models_rss_gb", rss_label, worker_gb, "GB", f"<= {RSS_TARGET_GB:g}",
               rss_met, detail, {**many, "measured_gb": measured_gb}),
        Figure("models_cost_ratio", cost_label, ratio, "x",
               f"<= {COST_TARGET:g} at {TARGET_MODELS:,}", cost_met, cost, {"one": one, "many": many}),
    ]


def _rounds(many: dict[str, Any]) -> str:
    """Every round's ratio, where there were several (the figure is the median round's).

    >>> _rounds({"round_ratios": [1.41, 1.3, 1.62]}), _rounds({})
    ('the median of 3 rounds (1.41x, 1.30x, 1.62x), ', '')
    """
    ratios = many.get("round_ratios")
    if not ratios:
        return ""
    return f"the median of {len(ratios)} rounds ({', '.join(f'{r:.2f}x' for r in ratios)}), "


def bracketed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One model's run made of two, timed before and after the many models' run (so a load that
    changes meanwhile weighs on both sides alike): the CPU figures the ratios read their means, the
    rest (the collector's too) the first's.

    >>> bracketed({"cpu_per_prediction_us": 20.0, "rss_bytes": 5},
    ...           {"cpu_per_prediction_us": 24.0, "rss_bytes": 6})
    {'cpu_per_prediction_us': 22.0, 'rss_bytes': 5, 'runs_cpu_per_prediction_us': [20.0, 24.0]}
    """
    merged = dict(before)
    for key in _CPU_FIGURES:
        if key in before and key in after:
            merged[key] = (before[key] + after[key]) / 2
    merged["runs_cpu_per_prediction_us"] = [before["cpu_per_prediction_us"], after["cpu_per_prediction_us"]]
    return merged


# the CPU figures the cost ratios read (bracketed takes their means; the collector's stay the first
# run's, beside its collections)
_CPU_FIGURES = ("cpu_per_prediction_us", "between_closes_cpu_per_prediction_us", "interval_feeds_cpu_s",
                "warmup_cpu_s")


def _one_runs(one: dict[str, Any]) -> str:
    """The two runs a bracketed one-model figure is the mean of (its spread is the box's)."""
    runs = one.get("runs_cpu_per_prediction_us")
    if not runs:
        return ""
    return f"; one model's the mean of a run before and one after: {runs[0]:.1f} and {runs[1]:.1f}"


def _rows_written(many: dict[str, Any], one: dict[str, Any]) -> str:
    """Output rows a timed prediction, many models against one, with the many models' largest
    tables: the per-window rows many small models write are most of their time-driven work."""
    if "timed_rows" not in many or "timed_rows" not in one:
        return "rows written a prediction: -"
    n_many, n_one = max(many["predictions_timed"], 1), max(one["predictions_timed"], 1)
    largest = sorted(many["timed_rows"].items(), key=lambda item: -item[1])[:3]
    tables = ", ".join(f"{table} {rows / n_many:.2f}" for table, rows in largest)
    return (f"rows written a prediction {sum(many['timed_rows'].values()) / n_many:.2f} vs "
            f"{sum(one['timed_rows'].values()) / n_one:.2f} ({tables})")


def _model_events(many: dict[str, Any], one: dict[str, Any]) -> str:
    """Messages stage 1 sent stage 2 a timed prediction, many models against one (each is a
    produce and a consume in a worker, beyond what the in-process pipeline's CPU shows)."""
    if "model_events_per_prediction" not in many or "model_events_per_prediction" not in one:
        return "model-events messages a prediction: -"
    return (f"model-events messages a prediction {many['model_events_per_prediction']:.3f} vs "
            f"{one['model_events_per_prediction']:.3f}")


def _calibrated(run: dict[str, Any]) -> str:
    """Whether the warm-up calibrated the banks or read what an earlier run shared."""
    added, found = run.get("calibrations_added", 0), run.get("calibrations_found", 0)
    late = run.get("monitors_built_timed", 0)
    # a shard that saw none of a model's warm-up builds its bank in the timed feeds: a steady state does not
    built = f"; {late:,} monitors built after it, timed" if late else ""
    return f"{added:,} calibrations made, {found:,} read from earlier runs{built}"


def _gc(run: dict[str, Any]) -> str:
    """The garbage collector's share of a run's timed CPU (runs from before it was timed: '-')."""
    if "gc_cpu_per_prediction_us" not in run:
        return "-"
    young, middle, old = run["gc_collections"]
    text = f"{run['gc_cpu_per_prediction_us']:.1f} us ({young}/{middle}/{old} collections by generation"
    by_generation = run.get("gc_cpu_per_prediction_us_by_generation")
    if by_generation is not None:  # runs from before it was split: the total only
        text += ", " + "/".join(f"{us:.1f}" for us in by_generation) + " us"
    longest = run.get("gc_longest_pause")
    if longest is not None and longest[0] > 0:
        text += f"; longest collection, warm-up included, {longest[0] * 1e3:.0f} CPU-ms at a generation-0 " \
                f"threshold of {longest[1]:,}"
    return text + ")"


def _between(many: dict[str, Any], one: dict[str, Any]) -> str:
    """The cost in the feeds in which no window and no metrics interval closed (no window's
    partials, merge or rows, no grid line's flush, no bucket's rows), many models against one: the
    per-model work inside a batch (a few events of each model's per shard, buffered and watched as
    a group of its own), which the rate does not dilute (a batch holds as many records whatever the
    rate) and coarser windows would not remove."""
    key = "between_closes_cpu_per_prediction_us"
    if key not in many or key not in one:
        return "feeds between closes: -"
    if not many["between_closes_predictions"] or not one["between_closes_predictions"]:
        return "every feed closed a window or interval (no figure between closes: raise --n)"
    a, b = many[key], one[key]
    return (f"in the feeds in which no window or metrics interval closed {a:.1f} vs {b:.1f} CPU-us per "
            f"prediction ({a / b:.2f}x; {many['between_closes_predictions']:,} and "
            f"{one['between_closes_predictions']:,} predictions)")


def _steady(many: dict[str, Any], one: dict[str, Any], models: int, rate: float, sizes_s: list[int],
            interval_s: int, min_count: int = 0) -> str:
    """:func:`steady_costs` as the figure's detail says it."""
    costs = steady_costs(many, one, models, rate, sizes_s, interval_s, min_count)
    if costs is None:
        return "at a steady state: -"
    a, b = costs
    per_second = sum(1 / size for size in sizes_s)
    filled = filled_closes_per_second(_shares(models), rate, sizes_s, min_count) / (models * per_second)
    extra = many.get("scored_close_extra_us")
    events = many.get("scored_close_events")
    timed_on = (f" (the mean over windows of {', '.join(f'{e:,}' for e in events)} events, the models' "
                f"{'/'.join(f'{100 * q:.0f}' for q in FILLED_QUANTILES)}th percentiles)" if events else "")
    priced = (f"; the {100 * filled:.0f} % of its closes that hold >= {min_count} events priced as scored, "
              f"+{extra / 1e3:.2f} ms each{timed_on} over the run's under-filled ones"
              if extra is not None and min_count else "; the run's closes, under-filled, priced as they cost "
              "it: a lower bound")
    return (f"at a steady state (each model's {' and '.join(map(str, sizes_s))} s windows closing once "
            f"per their length and its {interval_s} s metrics intervals once per theirs: one window close "
            f"per {rate / (models * per_second):,.0f} vs {rate / per_second:,.0f} predictions{priced}) "
            f"~{a:.1f} vs ~{b:.1f} CPU-us per prediction ({a / b:.2f}x)")


def _shares(models: int) -> list[float]:
    """Each model's share of the predictions (the bench's Zipf traffic)."""
    weights = [spec.traffic_share for spec in model_specs(models)]
    return [w / sum(weights) for w in weights]


def filled_closes_per_second(shares: Sequence[float], rate: float, sizes_s: Sequence[int],
                             min_count: int) -> float:
    """Window closes a second, over the models of ``shares`` at ``rate`` predictions/s, of windows
    that hold ``min_count`` events or more in sustained traffic (stage 2 scores them).

    >>> # 270 and 30 events in 300 s, 3,240 and 360 in 3,600 s: 3 of the 4 windows filled, 14 closes an hour
    >>> round(filled_closes_per_second([0.9, 0.1], 1.0, [300, 3600], 100) * 3600, 9)
    14.0
    """
    return sum(1 / size for size in sizes_s for share in shares if rate * size * share >= min_count)


def steady_costs(many: dict[str, Any], one: dict[str, Any], models: int, rate: float, sizes_s: list[int],
                 interval_s: int, min_count: int = 0) -> tuple[float, float] | None:
    """What a steady state at ``rate`` would cost, many models against one (CPU-us a prediction;
    None without a close in both runs): the cost between closes plus each close's measured cost at
    the rate closes come in sustained traffic, every model's window of each size closing once per
    its length and its metrics interval once per ``interval_s``. A window close's cost is the
    excess over the between-closes rate of the feeds that closed windows (with any intervals they
    closed too), an interval's that of the feeds that closed intervals only. The timed part holds
    one close of each model's shortest window in a few seconds of event time, so the whole run
    weighs the closes ~14x more than sustained traffic at 5,000/s does (docs/scaling.md, session 33).

    The windows that close in the run are the warm-up's, under-filled (fewer than ``min_count``
    events: counts and moments, not scored), where sustained traffic fills most: with the many
    models' ``scored_close_extra_us`` (stage 2's extra CPU on a window it scores) and ``min_count``
    a close that would hold ``min_count`` events or more is priced as scored, for the share of
    the run's closes that were under-filled; without them the figure is a lower bound."""
    key = "between_closes_cpu_per_prediction_us"
    if key not in many or key not in one or not many.get("windows_closed") or not one.get("windows_closed"):
        return None
    if not many.get("between_closes_predictions", 1) or not one.get("between_closes_predictions", 1):
        return None
    per_second = sum(1 / size for size in sizes_s)  # closes a second of one model's windows
    extra = many.get("scored_close_extra_us", 0.0) if min_count else 0.0

    def steady(run: dict[str, Any], shares: list[float]) -> float:
        between = run[key]
        intervals_us = (run.get("interval_feeds_cpu_s", 0.0) * 1e6
                        - between * run.get("interval_feeds_predictions", 0))
        windows_us = run["predictions_timed"] * (run["cpu_per_prediction_us"] - between) - intervals_us
        close_us = windows_us / run["windows_closed"]
        interval_us = intervals_us / run["intervals_closed"] if run.get("intervals_closed") else 0.0
        under = run.get("windows_under_filled", 0) / run["windows_closed"]
        scored = extra * under * filled_closes_per_second(shares, rate, sizes_s, min_count) if extra else 0.0
        return float(between + (max(close_us, 0.0) * len(shares) * per_second + scored) / rate
                     + max(interval_us, 0.0) * len(shares) / interval_s / rate)

    return steady(many, _shares(models)), steady(one, [1.0])


def _per(run: dict[str, Any]) -> str:
    closed = run.get("windows_closed", 0)
    return f"{run['predictions_timed'] / closed:,.0f}" if closed else "-"


def measure(models: int, n: int, training: int = 1000,
            calibrations: Path | None = CALIBRATIONS, rate: float = RATE,
            key_by: str = "prediction_id", partitions: int = PARTITIONS,
            batch_records: int = BATCH_RECORDS, sequential: bool = True,
            gc_threshold0: int | None = None, price_scored: bool = True,
            data_dir: Path | None = None, rounds: int = 1) -> list[Figure]:
    """Both figures for ``models`` models and ``n`` predictions at ``rate`` predictions/s (each
    run in a fresh process; ``calibrations``: the directory the runs share calibrations through,
    None: none); ``key_by``: what the many models' predictions are keyed by (see :func:`traffic`;
    one model's are keyed by prediction id either way: keyed by its model id they would all be one
    shard's, the other shards idle and no window closing in process); ``partitions``: the
    predictions and labels partitions, so stage-1 shards, of both runs; ``batch_records``: the records
    a batch of both runs; ``sequential``: the sequential detectors on (else both runs without them);
    ``gc_threshold0``: both runs' collector generation-0 threshold (None: the worker's);
    ``price_scored``: time stage 2's scored close on windows a steady state fills (off for
    ``--quick``: its runs close too few windows to give a steady state, and drawing the windows of
    its few busy models' sizes took longer than the runs); ``data_dir``: keep the generated workload
    there and reuse it on a later run of the same parameters (:func:`workload_in`; None: a temporary
    directory); ``rounds``: many models' runs, each between two of one model's, the figures those of
    the round whose ratio is the median (every round's in the detail)."""
    settings = settings_for(partitions, batch_records, sequential)
    specs = model_specs(models)

    def make(data: Path) -> None:
        started = time.perf_counter()
        profiles = profiles_of(specs, training, settings)
        records = traffic(specs, n, settings, rate, key_by)
        single = traffic(specs[:1], n, settings, rate)  # one model: as many events, all model 0's
        print(f"{len(profiles)} profiles and {len(records[0]):,} records generated in "
              f"{time.perf_counter() - started:.0f}s", flush=True)
        for which, inputs in (("one", (profiles[:1], single)), ("many", (profiles, records))):
            with (data / f"{which}.pickle").open("wb") as f:
                pickle.dump(inputs, f)
        # the shortest windows' sizes across the models: 300-s windows close 12x as often as 3,600-s
        sizes = steady_window_events(models, rate, min(settings.windows.sizes_s), settings.drift.min_count)
        if sizes and price_scored:
            with (data / "filled.pickle").open("wb") as f:
                pickle.dump([(events, filled_windows(specs[0], training, events, FILLED_WINDOWS,
                                                     settings.drift.min_count))
                             for events in sizes], f)

    workload = {"models": models, "n": n, "training": training, "rate": rate, "key_by": key_by,
                "partitions": partitions, "batch_records": batch_records, "sequential": sequential,
                "price_scored": price_scored}
    with nullcontext(data_dir) if data_dir is not None else tempfile.TemporaryDirectory(
            prefix="driftline-bench-models-") as kept:
        data = Path(kept)
        if workload_in(data, workload, make):
            print(f"the workload in {data} reused", flush=True)
        ones = [run_in_child("one", data, calibrations, partitions, batch_records, sequential, gc_threshold0)]
        manys = []
        for _ in range(rounds):  # one, many, one, many, ..., one: each many run between two of one
            manys.append(run_in_child("many", data, calibrations, partitions, batch_records, sequential,
                                      gc_threshold0))
            ones.append(run_in_child("one", data, calibrations, partitions, batch_records, sequential,
                                     gc_threshold0))
    one, many = median_round(ones, manys, models, rate, partitions)
    return figures_for(models, n, one, many, rate, key_by, partitions, batch_records, sequential)


def median_round(ones: list[dict[str, Any]], manys: list[dict[str, Any]], models: int, rate: float,
                 partitions: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The round whose ratio is the median (the lower one of an even count): its one-model figures
    (:func:`bracketed`, the runs before and after it) and its many-model run, which lists every
    round's ratio in ``round_ratios`` where there were several. ``ones`` are one model's runs, one
    more than ``manys``, the many models' runs between them."""
    pairs = [(bracketed(before, after), many)
             for before, after, many in zip(ones[:-1], ones[1:], manys, strict=True)]
    ratios = [round_ratio(many, one, models, rate, partitions) for one, many in pairs]
    median = sorted(range(len(pairs)), key=ratios.__getitem__)[(len(pairs) - 1) // 2]
    one, many = pairs[median]
    return one, {**many, "round_ratios": ratios} if len(pairs) > 1 else many


def round_ratio(many: dict[str, Any], one: dict[str, Any], models: int, rate: float,
                partitions: int) -> float:
    """The cost ratio the figure reads: at a steady state where both runs closed a window (see
    :func:`steady_costs`), else over the timed run."""
    settings = settings_for(partitions)
    steady = steady_costs(many, one, models, rate, settings.windows.sizes_s,
                          settings.windows.metrics_interval_s, settings.drift.min_count)
    if steady is None:
        return float(many["cpu_per_prediction_us"] / one["cpu_per_prediction_us"])
    return steady[0] / steady[1]


def workload_in(data: Path, parameters: dict[str, Any], make: Callable[[Path], None]) -> bool:
    """Whether ``data`` already holds the workload of ``parameters`` (its ``workload.json`` says so:
    True, nothing made); else ``make(data)`` writes it there and the parameters are recorded after it
    (a run stopped while making leaves no record: the next one makes it again).

    >>> import tempfile
    >>> made = []
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     runs = [workload_in(Path(tmp), {"n": n}, made.append) for n in (10, 10, 20)]
    >>> runs, len(made)
    ([False, True, False], 2)
    """
    stamp = data / "workload.json"
    if stamp.exists() and json.loads(stamp.read_text()) == parameters:
        return True
    data.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    make(data)
    stamp.write_text(json.dumps(parameters))
    return False


def interleaved(settings: Settings, profiles: list[ReferenceProfile], records: list[RawRecord], warm: int,
                baseline: Any) -> dict[str, Any]:
    """Two pipelines in this process, one whose shards are ``baseline``'s (a shard module of another
    revision, its imports today's), fed the same batches in turn (which goes first flips each batch,
    so a load that changes meanwhile weighs on both alike): each one's CPU us a prediction in the
    feeds that closed no window nor interval (in this revision's pipeline), its CPU-s over every
    timed feed, and whether they wrote as many rows to each table."""
    tune_gc()
    blobs = [p.model_dump_json().encode() for p in profiles]
    this = InProcessPipeline(settings, profiles=blobs)
    saved = local_module.ShardProcessor
    try:
        local_module.ShardProcessor = baseline.ShardProcessor  # the pipeline makes its shards with it
        base = InProcessPipeline(settings, profiles=blobs)
    finally:
        local_module.ShardProcessor = saved
    sides = {"baseline": base, "this": this}
    rows: dict[str, Counter[str]] = {side: Counter() for side in sides}

    def sink(side: str) -> None:
        rows[side].update({table: len(made) for table, made in sides[side].rows.items()})
        sides[side].rows.clear()

    batch = settings.worker.batch_max_records
    for i in range(0, warm, batch):
        for side in sides:
            sides[side].feed(records[i : min(i + batch, warm)])
            sink(side)
    between = {side: 0.0 for side in sides}
    timed = {side: 0.0 for side in sides}
    predictions = 0
    for k, i in enumerate(range(warm, len(records), batch)):
        chunk = records[i : i + batch]
        closed = (_windows_closed(this), sum(rows["this"].values()))
        spent, quiet = {}, False
        for side in list(sides) if k % 2 == 0 else list(sides)[::-1]:
            started = time.process_time()
            sides[side].feed(chunk)
            spent[side] = time.process_time() - started
            if side == "this":
                quiet = _windows_closed(this) == closed[0] and not _intervals_closed(this)
            sink(side)
        for side in sides:
            timed[side] += spent[side]
            between[side] += spent[side] if quiet else 0.0
        predictions += sum(1 for r in chunk if r.topic == settings.topics.predictions) if quiet else 0
    return {"between_us": {side: cpu / max(predictions, 1) * 1e6 for side, cpu in between.items()},
            "timed_cpu_s": timed, "between_predictions": predictions,
            "rows_equal": rows["baseline"] == rows["this"], "rows": dict(rows["this"])}


def measure_interleaved(models: int, n: int, baseline: str, training: int = 1000, rate: float = RATE,
                        partitions: int = PARTITIONS, batch_records: int = BATCH_RECORDS) -> dict[str, Any]:
    """:func:`interleaved` on the bench's ``models``-model workload, against ``baseline``'s shard.py."""
    settings = settings_for(partitions, batch_records)
    specs = model_specs(models)
    profiles = profiles_of(specs, training, settings)
    records, warm = traffic(specs, n, settings, rate)
    gc.collect()
    return interleaved(settings, profiles, records, warm,
                       module_at_revision(baseline, "src/driftline/pipeline/shard.py", "baseline_shard"))


def under_filled_windows(n: int) -> list[list[WindowAccumulator]]:
    """``n`` windows of 1-26 events of model 0 (its own traffic), each as 4 shards' partials."""
    spec = model_specs(1)[0].model_copy(update={"traffic_share": 1.0})
    base = Scenario(seed=1, start=START_MS, duration_s=1.0, rate=RATE, models=[spec])
    columns = next(iter(training_columns(training_scenario(base, 26 * n)).values()))
    names = [c for c in columns if c not in (LABEL, PREDICTION) and not c.startswith("__")]
    rows = [{c: columns[c][i] for c in names} for i in range(26 * n)]
    windows = []
    for w in range(n):
        size = 1 + w % 26
        shards = [WindowAccumulator() for _ in range(4)]
        for i in range(size):
            row = rows[w * 26 + i]
            shards[i % 4].add([row], [Prediction(label=str(columns[PREDICTION][w * 26 + i]))], [5.0])
        windows.append(shards)
    return windows


def filled_windows(spec: ModelSpec, rows_each: int, events: int, n: int,
                   values_below: int) -> list[list[dict[str, Any]]]:
    """``n`` windows of ``events`` events of ``spec``'s model, each as 4 shards' partials as a shard
    sends them (the values form where it holds fewer than ``values_below`` events, the worker's
    ``drift.min_count``, else sketches; decoded from JSON, for :func:`check_partial`), from
    its drift-free traffic after the ``rows_each`` rows :func:`profiles_of` builds its profile
    from: windows a steady state fills, drawn as its profile was (scored against it, their KS
    p-values come from the exact small-sample branch as a steady state's do, not the shortcut a
    drifted window takes). At 5,000/s most of 1,000 models' 300 s windows reach stage 2 as four
    values-form partials, whose sketches stage 2 builds: priced as sketches, that close was low."""
    base = Scenario(seed=0, start=START_MS, duration_s=1.0, rate=RATE,
                    models=[spec.model_copy(update={"traffic_share": 1.0})])
    drawn = training_columns(training_scenario(base, _with_room(rows_each + events * n, 1)))
    columns = next(iter(drawn.values()))
    names = [c for c in columns if c not in (LABEL, PREDICTION, SCORE) and not c.startswith("__")]
    windows = []
    for w in range(n):
        shards = []
        first = rows_each + w * events
        for k in range(4):
            rows = range(first + k, first + events, 4)
            part = EventColumns.of([{c: columns[c][i] for c in names} for i in rows],
                                   [Prediction(label=str(columns[PREDICTION][i])) for i in rows],
                                   [5.0] * len(rows))
            if len(rows) < values_below:
                partial = values_partial([part])
            else:
                accumulator = WindowAccumulator()
                accumulator.add_chunk([part])
                partial = accumulator.to_partial()
            shards.append(orjson.loads(orjson.dumps(partial)))
        windows.append(shards)
    return windows


def close_under_filled(windows: list[list[WindowAccumulator]], scorer: DriftScorer, *, scored: bool) -> int:
    """Stage 2's work on each window (merge, score, rows) as before (``scored``) or now; rows built."""
    rows = 0
    for w, shards in enumerate(windows):
        merged = merge_accumulators(shards, sketches=scored)
        observed = {n: s for n, s in merged.features.items() if n in scorer.profile.features}
        score = scorer.score_stats if scored else scorer.count_stats
        report = score(observed, n_rows=merged.n_events, prediction=merged.prediction_label)
        window = window_columns("", WindowKey(60_000, START_MS + w * 60_000, "m0000", "1", ""))
        out = [feature_window_row(window, r.feature, r.kind, merged.features[r.feature], r.score, "p")
               for r in report if r.feature in merged.features]
        out += [drift_score_row(window, r.feature, r.score, r.drifted, r.drifted_by, r.p_adj, "p", "h")
                for r in report]
        out.append(model_drift_row(window, merged.n_events, len(report), report.drifted,
                                   report.drifted_features, "p", "h"))
        rows += len(out)
    return rows


def measure_scored_close(models: int, rate: float, training: int, rounds: int = 3) -> None:
    """Print stage 2's extra CPU on a scored close over an under-filled one, on windows of the
    models' sizes at ``rate``, the compiled paths on and off (see module docstring)."""
    settings = settings_for(PARTITIONS)
    spec = model_specs(1)[0]
    profile = profiles_of([spec], training, settings)[0]
    sizes = steady_window_events(models, rate, min(settings.windows.sizes_s), settings.drift.min_count)
    if not sizes:
        print(f"no model's window holds drift.min_count events at {rate:,.0f}/s: nothing is scored")
        return
    extras: dict[bool, list[float]] = {True: [], False: []}
    for events in sizes:
        windows = filled_windows(spec, training, events, FILLED_WINDOWS, settings.drift.min_count)
        found: dict[bool, float] = {}
        for _ in range(rounds):
            for compiled in (True, False):
                with nullcontext() if compiled else reference_paths():
                    found[compiled] = min(found.get(compiled, float("inf")),
                                          scored_close_extra_us(profile, settings, windows, rounds=1))
        for compiled, us in found.items():
            extras[compiled].append(us)
        print(f"windows of {events:,} events: a scored close {found[True] / 1e3:.2f} ms more than an "
              f"under-filled one, {found[False] / 1e3:.2f} with the C paths off", flush=True)
    on, off = (sum(extras[c]) / len(sizes) / 1e3 for c in (True, False))
    print(f"mean over the {models:,} models' 10th-90th percentile sizes at {rate:,.0f}/s: {on:.2f} ms, "
          f"{off:.2f} with the C paths off ({on / off:.2f}x)")


def measure_under_filled(n: int, rounds: int = 5) -> None:
    """Print the per-window stage-2 CPU of under-filled windows, before vs now (see module docstring)."""
    settings = bench_settings("127.0.0.1:9", "bm")
    profile = profiles_of(model_specs(1), 1000, settings)[0]
    windows = [[shard.to_partial() for shard in window] for window in under_filled_windows(n)]
    best = close_costs(profile, settings, windows, rounds)
    before, now = (best[s] * 1e3 for s in (True, False))
    print(f"under-filled window (1-26 events, 4 shards, 25 features), stage 2 merge + score + rows: "
          f"{before:.2f} ms before, {now:.2f} ms now ({now / before:.2f}x), best of {rounds}, {n} windows")


def partial_windows(n: int) -> list[list[list[EventColumns]]]:
    """``n`` windows of 1-26 events of model 0 over 4 shards, as each shard buffered them: one
    column part per event (with many models a batch rarely holds two events of one model)."""
    spec = model_specs(1)[0].model_copy(update={"traffic_share": 1.0})
    base = Scenario(seed=1, start=START_MS, duration_s=1.0, rate=RATE, models=[spec])
    columns = next(iter(training_columns(training_scenario(base, 26 * n)).values()))
    names = [c for c in columns if c not in (LABEL, PREDICTION) and not c.startswith("__")]
    windows = []
    for w in range(n):
        shards: list[list[EventColumns]] = [[] for _ in range(4)]
        for i in range(w * 26, w * 26 + 1 + w % 26):
            prediction = Prediction(label=str(columns[PREDICTION][i]))
            shards[i % 4].append(EventColumns.of([{c: columns[c][i] for c in names}], [prediction], [5.0]))
        windows.append(shards)
    return windows


class PerColumnValues(WindowAccumulator):
    """The values partial as shards sent it before ``values_partial`` (8b4c91b..): a
    :class:`SketchValues` per column, its counts and moments computed and its values in place of a
    sketch. Stage 2 still reads it; here it is the baseline."""

    __slots__ = ()
    stats_type = SketchValues


def with_sketches(parts: list[EventColumns]) -> dict[str, Any]:
    """A shard's partial of ``parts`` with sketches (any window it holds min_count events of)."""
    return _accumulated(parts, WindowAccumulator(), WindowBuffer())


def per_column_values(parts: list[EventColumns]) -> dict[str, Any]:
    """A shard's partial of few events before the values form (the baseline: see PerColumnValues)."""
    return _accumulated(parts, PerColumnValues(), WindowBuffer())


def _accumulated(parts: list[EventColumns], accumulator: Any, buffered: Any) -> dict[str, Any]:
    for part in parts:
        buffered.append(part)
    buffered.drain(accumulator, ACCUMULATE_CHUNK, final=True)
    partial: dict[str, Any] = accumulator.to_partial()
    return partial


Form = tuple[Callable[[list[EventColumns]], dict[str, Any]], Callable[[Mapping[str, Any]], Any]]


def partial_forms(baseline: Path | None) -> dict[str, Form]:
    """Each form's stage 1 (a shard's partial of its events) and stage 2 (:func:`check_partial`);
    with ``baseline`` (a copy of an earlier ``window_stats.py``), the per-column values made and
    parsed by that code, both stages as they were."""
    forms: dict[str, Form] = {"sketches": (with_sketches, check_partial),
                              "per-column values": (per_column_values, check_partial),
                              "values form": (values_partial, check_partial)}
    if baseline is not None:
        spec = importlib.util.spec_from_file_location("window_stats_baseline", baseline)
        assert spec is not None and spec.loader is not None
        base = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # (its dataclasses look it up)
        spec.loader.exec_module(base)
        base_values = getattr(base, "ValuesWindow", None) or type(
            "PerColumnValues", (base.WindowAccumulator,), {"__slots__": (), "stats_type": base.SketchValues})
        forms["per-column values"] = (lambda parts: _accumulated(parts, base_values(), base.WindowBuffer()),
                                      base.WindowAccumulator.from_partial)
    return forms


def stage1_partials(windows: list[list[list[EventColumns]]],
                    form: Callable[[list[EventColumns]], dict[str, Any]]) -> list[bytes]:
    """Each shard's close of each window (its buffered events made into a partial of ``form``,
    encoded): the model-events records stage 1 sends."""
    out = []
    for w, shards in enumerate(windows):
        for shard, parts in enumerate(shards):
            if not parts:
                continue
            start = START_MS + w * 60_000
            out.append(encode_model_event(Partial(shard, "m0000", "1", "", 60, start, start + 60_000,
                                                  form(parts))))
    return out


def stage2_parse(sent: list[bytes], parse: Callable[[Mapping[str, Any]], Any] = check_partial) -> int:
    """Stage 2's arrival of each partial: decoded and parsed (``parse``, :func:`check_partial`)."""
    events = 0
    for value in sent:
        record = decode_model_event(value)
        assert isinstance(record, Partial)
        events += int(parse(record.partial).n_events)
    return events


def measure_partials(n: int, rounds: int = 5, baseline: Path | None = None) -> None:
    """Print stage 1's CPU a window of 1-26 events (4 shards' partials made and encoded) and stage
    2's (decoded and parsed) in each of :func:`partial_forms`, alternating in one process, thread
    CPU, best of ``rounds``; the ratios are the values form's to the per-column values (before it)."""
    windows = partial_windows(n)
    forms = partial_forms(baseline)
    best: dict[tuple[str, str], float] = {}
    sizes: dict[str, int] = {}
    for r in range(rounds):
        for name, (make, parse) in forms.items() if r % 2 == 0 else reversed(forms.items()):
            t = time.thread_time()
            sent = stage1_partials(windows, make)
            t1 = time.thread_time()
            stage2_parse(sent, parse)
            t2 = time.thread_time()
            best[(name, "1")] = min(best.get((name, "1"), float("inf")), t1 - t)
            best[(name, "2")] = min(best.get((name, "2"), float("inf")), t2 - t1)
            sizes[name] = sum(map(len, sent))
    made_by = f"the code in {baseline}" if baseline is not None else "today's code"
    print(f"per-column values made and read by {made_by}")
    for stage, what in (("1", "add + partial + encode"), ("2", "decode + parse")):
        ms = {name: best[(name, stage)] / n * 1e3 for name in forms}
        old, new = ms["per-column values"], ms["values form"]
        print(f"window of 1-26 events (4 shards, 25 features), stage {stage} {what}: "
              + ", ".join(f"{v:.3f} ms {k}" for k, v in ms.items())
              + f" ({new / old:.2f}x), best of {rounds}, {n} windows")
    print("partial bytes a window: " + ", ".join(f"{v / n:,.0f} {k}" for k, v in sizes.items()))


@contextmanager
def few_events_form(form: Callable[[list[EventColumns]], dict[str, Any]]) -> Iterator[None]:
    """Shards send the partial of a window they hold few events of in ``form`` meanwhile."""
    saved = shard_module.values_partial
    shard_module.values_partial = form
    try:
        yield
    finally:
        shard_module.values_partial = saved


def measure_values_ab(models: int, n: int, rounds: int = 3) -> None:
    """Print the many-model run's CPU per prediction with shards sending few events' partials in
    the per-column values (before) vs the values form (today), alternating runs in one process
    (the order flips each round), best of ``rounds``. Windows of 10 and 60 s: with fewer models
    than issue 19's 1,000, windows close about as often per prediction as there (one per ~26 at
    1,000 models)."""
    settings = bench_settings("127.0.0.1:9", "bm", windows={"sizes_s": [10, 60]})
    specs = model_specs(models)
    profiles = profiles_of(specs, 1000, settings)
    records, warm = traffic(specs, n, settings)
    forms = [("per-column values", per_column_values), ("values form", values_partial)]
    seen: dict[str, list[float]] = {name: [] for name, _ in forms}
    for r in range(rounds):
        for name, form in forms if r % 2 == 0 else forms[::-1]:
            with few_events_form(form):
                result = run(settings, profiles, records, warm)
            seen[name].append(result["cpu_per_prediction_us"])
    old, new = (min(seen[name]) for name, _ in forms)
    rounds_seen = ", ".join(f"{k} {' '.join(f'{v:.0f}' for v in vs)}" for k, vs in seen.items())
    print(f"{models} models, {n:,} predictions: {old:.1f} CPU-us a prediction with per-column values, "
          f"{new:.1f} with the values form ({new / old:.2f}x), best of {rounds} alternating, "
          f"{result['windows_closed']:,} windows closed; every round: {rounds_seen}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    calibration.share_calibrations(args.calibrations)
    if args.gc_threshold0 is not None:  # tune_gc (each run's start) reads the module's settings:
        runtime.GC_THRESHOLDS = (args.gc_threshold0, *runtime.GC_THRESHOLDS[1:])
        runtime.GC_THRESHOLD0_CEILING = args.gc_threshold0  # a pacing that cannot move: fixed
    if args.child:
        child(args.child[0], Path(args.child[1]), args.calibrations, args.partitions, args.batch_records,
              args.sequential)
        return 0
    if args.shard_baseline:
        found = measure_interleaved(args.models, args.n, args.shard_baseline, args.training, args.rate,
                                    args.partitions, args.batch_records)
        us, cpu = found["between_us"], found["timed_cpu_s"]
        print(f"{args.models:,} models, {args.n:,} predictions at {args.rate:,.0f}/s, two pipelines in one "
              f"process fed the same batches in turn: between closes {us['baseline']:.1f} CPU-us a "
              f"prediction on {args.shard_baseline}'s shard.py vs {us['this']:.1f} on this one "
              f"({us['baseline'] / max(us['this'], 1e-9):.2f}x, {found['between_predictions']:,} "
              f"predictions); every "
              f"timed feed {cpu['baseline']:.2f} vs {cpu['this']:.2f} CPU-s; rows a table equal: "
              f"{found['rows_equal']}")
        return 0 if found["rows_equal"] else 1
    if args.under_filled:
        measure_under_filled(args.n if args.n != 200_000 else 300)
        return 0
    if args.scored_close:
        measure_scored_close(args.models, args.rate, args.training)
        return 0
    if args.partials:
        measure_partials(args.n if args.n != 200_000 else 300, baseline=args.baseline)
        measure_values_ab(args.models if args.models != TARGET_MODELS else 50,
                          20_000 if args.n == 200_000 else args.n * 50)
        return 0
    figures = measure(args.models, args.n, args.training, args.calibrations, args.rate, args.key_by,
                      args.partitions, args.batch_records, args.sequential, args.gc_threshold0,
                      price_scored=not args.quick, data_dir=args.data, rounds=args.rounds)
    print_figures(figures, "many models on one worker")
    if args.json:
        args.json.write_text(json.dumps([f.as_dict() for f in figures], indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
