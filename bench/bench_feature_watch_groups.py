"""FeatureWatch on real streams cut into a model's few events per call, as many models make it.

Elec2 and NOAA weather (``/work/shared/data``, read in place; their first 5,000 rows are the
training profile, the next 10,000 the traffic, half-hourly): the same stream fed to
``FeatureWatch.observe`` in one call and in groups of 1-7 events (the list path a group under
``PER_VALUE_BELOW`` takes). Prints whether the reports are equal, feature by feature (they must be:
episodes open, escalate and close on these streams), and the CPU time per event of each.

    .venv/bin/python bench/bench_feature_watch_groups.py

``--zipf MODELS``: instead, bench_models' profiles of MODELS models (20 numeric + 5 categorical
features) and Zipf traffic over them in shard batches of 120 events (~4 events a model and batch),
fed to one FeatureWatch as a shard feeds it (float columns and value lists sliced per group);
prints CPU per group and per event; ``--zipf MODELS --ab COMMIT``: FeatureWatch (with its
episodes and sequential modules) as of COMMIT against today's on that traffic in one process,
alternating, best of 9 CPU per event, and whether their reports are equal; ``--zipf MODELS
--batched N [N ...]``: today's FeatureWatch holding a model's events until N make a batch
(``batch_events``, flushed as a shard flushes it: ``flush_due`` after each shard batch, the
watermark its last event time) against the same watch feeding every group at once, on that
traffic in one process, alternating, best of 7 CPU per event, and whether each one's reports
equal, per model and feature, those fed at once; ``--pipeline MODELS N``: bench_models' whole
pipeline (stage 1 and 2 in process, windows of 10 and 60 s) on N predictions over MODELS models,
the shards' watches holding events (``BATCH_EVENTS``) against feeding them at once, alternating
runs, best of 3 CPU us a prediction. ``--grouped MODELS``: the watch fed a shard's batches (as
``--shard`` makes them, held until ``BATCH_EVENTS``) a call a model against each batch grouped by
model (``observe_grouped``, what a shard calls), alternating, best of 5; ``--grouped MODELS --ab
COMMIT``: the batches grouped to FeatureWatch as of COMMIT and to today's, alternating, best of 7,
and whether their reports are equal. ``--shard MODELS N [N ...]``: the watch as a shard of a worker
at 5,000 predictions/s on 4 shards feeds it (batches of 1,250 events over 1 s of event time, a
model's floats a :class:`FloatBlock` taken from the batch's matrix, ``flush_due`` before each
batch), MODELS models' Zipf traffic held until each N make a batch, against one model's own traffic
(as many events, all of model 0, drawn from its training rows), alternating, best of 5 CPU us an
event: what many models cost the watch per event, which bench_models' ratio holds with the rest of
the pipeline's noise; then, for the last N, a bank's batch's CPU by its size. ``--build MODELS``:
CPU to build a model's bank in a fresh process, with no calibration shared and then with a
calibration directory another process filled (``calibration.share_calibrations``, what
``worker.state_dir`` gives a worker's processes). ``--monitors COMMIT``: the sequential part alone,
less noisy: a model's 25 episode monitors (20 numeric on normal, lognormal and discrete references,
5 categorical on 8 categories, arl 2.5e7 each) fed no-drift values in groups of 1-7 through
``EpisodeMonitor.update_each``, as of COMMIT against today's, alternating, best of 9 CPU per value
of a monitor, and whether their events are equal; ``--settles COMMIT``: how many values a numeric
and a categorical monitor of those count per settle of their CUSUMs (``_settle``), then and now;
``--lanes``: today's monitors with the per-value bound kept per group of CUSUMs against the same
code with one bound per bank (each kind's ``_group_keys`` made one group), alternating, best of 10.
"""

from __future__ import annotations

import csv
import gc
import math
import pickle
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from driftline.operators import calibration
from driftline.operators.feature_watch import BATCH_EVENTS, FeatureWatch, GroupedEvents
from driftline.operators.float_block import FloatBlock
from driftline.operators.profile import ReferenceProfile, build_profile

DATA = Path("/work/shared/data")
STREAMS = {"elec2.csv": {"class", "date"}, "noaa_weather.csv": set()}  # columns that are not features
TRAINING, TRAFFIC, STEP_MS = 5000, 10_000, 1_800_000


def _numeric_columns(path: Path, skip: set[str]) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for name in rows[0]:
        if name in skip:
            continue
        try:
            out[name] = np.array([float(r[name]) for r in rows], dtype=np.float64)
        except ValueError:
            continue  # a text column
    return out


def _watch(profile: ReferenceProfile) -> FeatureWatch:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=86_400_000)
    watch.add_profile(profile)
    return watch


def _by_feature(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        out.setdefault(str(report["feature"]), []).append(report)
    return out


def measure(path: Path, skip: set[str]) -> tuple[bool, int, float, float]:
    """(reports equal, reports, CPU us/event in one call, in groups of 1-7)."""
    columns = _numeric_columns(path, skip)
    profile = build_profile("m", "1", {n: c[:TRAINING] for n, c in columns.items()}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0, source="training")
    names = list(columns)
    traffic = np.column_stack([columns[n][TRAINING:TRAINING + TRAFFIC] for n in names]).tolist()
    features = [dict(zip(names, row, strict=True)) for row in traffic]
    times = [i * STEP_MS for i in range(len(features))]
    ids = [f"p{i}" for i in range(len(features))]
    _watch(profile).observe("m", "1", times[:1], ids[:1], features[:1])  # the process's bank cache warm
    started = time.process_time()
    whole = _watch(profile).observe("m", "1", times, ids, features)
    whole_s = time.process_time() - started
    rng, watch, grouped, lo = np.random.default_rng(0), _watch(profile), [], 0
    cuts = []
    while lo < len(features):
        cuts.append((lo, hi := min(len(features), lo + int(rng.integers(1, 8)))))
        lo = hi
    started = time.process_time()
    for lo, hi in cuts:
        grouped += watch.observe("m", "1", times[lo:hi], ids[lo:hi], features[lo:hi])
    grouped_s = time.process_time() - started
    n = len(features)
    return _by_feature(grouped) == _by_feature(whole), len(whole), whole_s / n * 1e6, grouped_s / n * 1e6


def _zipf_profiles(models: int, rows: int = 1000) -> tuple[list[ReferenceProfile], list[dict[str, Any]]]:
    """bench_models' profiles of ``models`` models, and each one's training columns (drift-free)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_models import START_MS, model_specs
    from common import bench_settings

    from driftline.demo.training import LABEL, PREDICTION, SCORE, training_columns, training_scenario
    from driftline.simulate import Scenario
    settings = bench_settings("127.0.0.1:9", "bm")
    even = [s.model_copy(update={"traffic_share": 1.0}) for s in model_specs(models)]
    base = Scenario(seed=0, start=START_MS, duration_s=1.0, rate=100.0, models=even)
    columns = sorted(training_columns(training_scenario(base, rows * models)).items())
    # the score is the model's output, not a feature no event carries (as bench_models' profiles)
    columns = [(key, {n: v for n, v in cols.items() if n != SCORE}) for key, cols in columns]
    profiles = [build_profile(model_id, version, cols, label_column=LABEL, prediction_column=PREDICTION,
                              bins=settings.drift.bins, top_k=settings.drift.top_k, effective_from_ms=0,
                              source="training", task="classification", created_at_ms=0)
                for (model_id, version), cols in columns]
    return profiles, [cols for _, cols in columns]


Fed = list[tuple[Any, ...]]


def _zipf_traffic(models: int, batches: int, batch: int) -> tuple[list[ReferenceProfile], list[Any], Fed]:
    """Profiles, training columns and ``batches + 5`` shard batches of Zipf traffic (no drift)."""
    profiles, training = _zipf_profiles(models)
    rng = np.random.default_rng(0)
    share = np.arange(1, models + 1) ** -1.1
    share /= share.sum()
    names = sorted(profiles[0].features)
    numeric = [n for n in names if profiles[0].features[n].kind == "numeric"]
    categorical = [n for n in names if n not in numeric]
    fed = []
    for b in range(batches + 5):  # each event a training row of its model: no drift
        model = rng.choice(models, size=batch, p=share)
        row = [int(u * len(training[m][names[0]])) for m, u in zip(model, rng.random(batch), strict=True)]
        floats = {n: np.array([training[m][n][r] for m, r in zip(model, row, strict=True)], dtype=np.float64)
                  for n in numeric}
        others = {n: [training[m][n][r] for m, r in zip(model, row, strict=True)] for n in categorical}
        maps = [{n: others[n][i] for n in categorical} for i in range(batch)]
        times = list(range(b * batch * 10, (b + 1) * batch * 10, 10))
        fed.append((model, floats, others, maps, times, [f"p{b}-{i}" for i in range(batch)]))
    return profiles, training, fed


def _zipf_feed(watch: Any, profiles: list[ReferenceProfile], part: Fed,
               reports: list[dict[str, Any]] | None = None, flush: bool = False) -> tuple[int, int]:
    """Feed shard batches to ``watch`` a model's group at a time: (groups, events); ``flush``:
    after each batch, the held events a shard would feed (``flush_due``), and all at the end."""
    groups = events = 0
    for model, floats, others, maps, times, ids in part:
        if flush:  # the previous batch's progress, as a shard feeds what it holds before announcing it
            for got in watch.flush_due(times[0] - 1).values():
                if reports is not None:
                    reports.extend(got)
        for m in np.unique(model).tolist():
            rows = np.flatnonzero(model == m)
            p = profiles[m]
            got = watch.observe(p.model_id, p.model_version, [times[i] for i in rows], [ids[i] for i in rows],
                                [maps[i] for i in rows], {n: c[rows] for n, c in floats.items()},
                                {n: [c[i] for i in rows] for n, c in others.items()})
            if reports is not None:
                reports.extend(got)
            groups, events = groups + 1, events + rows.size
    if flush:
        for got in watch.flush().values():
            if reports is not None:
                reports.extend(got)
    return groups, events


def _zipf_watch(watch_class: Any, profiles: list[ReferenceProfile], training: list[Any], warm: Fed) -> Any:
    """A FeatureWatch with every model's bank built and ``warm`` fed (not timed)."""
    watch = watch_class(false_alarms_per_million=1.0, status_grid_ms=60_000)
    for profile in profiles:
        watch.add_profile(profile)
    _zipf_feed(watch, profiles, warm)
    names = sorted(profiles[0].features)
    for m, p in enumerate(profiles):  # every bank built (a rare model may be missing from the first batches)
        first = {n: training[m][n][0] for n in names}
        watch.observe(p.model_id, p.model_version, [0], ["warm"], [first])
    return watch


def zipf_groups(models: int, batches: int = 200, batch: int = 120) -> tuple[int, float, float]:
    """(groups, CPU us a group, CPU us an event) of FeatureWatch.observe under Zipf traffic."""
    profiles, training, fed = _zipf_traffic(models, batches, batch)
    watch = _zipf_watch(FeatureWatch, profiles, training, fed[:5])
    started = time.process_time()
    groups, events = _zipf_feed(watch, profiles, fed[5:])
    spent = time.process_time() - started
    return groups, spent / groups * 1e6, spent / events * 1e6


_BASE_MODULES = ("sequential", "episodes", "feature_watch")


def _baseline_watch_class(commit: str, into: Path) -> Any:
    """FeatureWatch as of ``commit``: its sequential, episodes and feature_watch modules copied
    (``git show``) under their own names, importing one another, beside today's in this process."""
    import importlib
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(into))
    for name in _BASE_MODULES:
        text = subprocess.run(["git", "show", f"{commit}:src/driftline/operators/{name}.py"], cwd=root,
                              check=True, capture_output=True, text=True).stdout
        for other in _BASE_MODULES:
            text = text.replace(f"driftline.operators.{other} ", f"base_{other} ")
        (into / f"base_{name}.py").write_text(text)
    return importlib.import_module("base_feature_watch").FeatureWatch


def zipf_ab(models: int, commit: str, rounds: int = 9, batches: int = 40,
            batch: int = 120) -> tuple[bool, int, int, float, float]:
    """FeatureWatch as of ``commit`` against today's on the same Zipf traffic, in one process:
    (reports equal, groups, events, best-of-``rounds`` CPU us an event old, new). Each round
    feeds the same batches to a fresh copy (unpickled) of either warmed watch, alternating
    which goes first, with the garbage collector off while timed (as timeit)."""
    profiles, training, fed = _zipf_traffic(models, batches, batch)
    with tempfile.TemporaryDirectory() as tmp:
        old_class = _baseline_watch_class(commit, Path(tmp))
        frozen = [pickle.dumps(_zipf_watch(cls, profiles, training, fed[:5]), pickle.HIGHEST_PROTOCOL)
                  for cls in (old_class, FeatureWatch)]
    best = [math.inf, math.inf]
    reports: list[list[dict[str, Any]]] = [[], []]
    groups = events = 0
    for r in range(rounds):
        for side in (r % 2, 1 - r % 2):
            watch = pickle.loads(frozen[side])
            got: list[dict[str, Any]] = []
            gc.collect()
            gc.disable()
            started = time.process_time()
            groups, events = _zipf_feed(watch, profiles, fed[5:], got)
            best[side] = min(best[side], time.process_time() - started)
            gc.enable()
            reports[side] = got
    return reports[0] == reports[1], groups, events, best[0] / events * 1e6, best[1] / events * 1e6


def _per_model_feature(reports: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Reports per (reference, feature): the order a watch holding events keeps (across models
    they come in another order)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in reports:
        out.setdefault((str(report["reference_id"]), str(report["feature"])), []).append(report)
    return out


def zipf_batched(models: int, sizes: list[int], rounds: int = 7, batches: int = 100,
                 batch: int = 120) -> list[tuple[int, bool, float]]:
    """Today's FeatureWatch feeding every group at once (``batch_events`` 0) and holding events
    until each of ``sizes`` make a batch, on the same Zipf traffic in one process, the order of
    the sides rotated each round: per side (batch_events, reports equal to 0's per reference and
    feature, best-of-``rounds`` CPU us an event)."""
    profiles, training, fed = _zipf_traffic(models, batches, batch)
    sides = [0, *sizes]
    frozen = []
    for size in sides:
        watch = _zipf_watch(FeatureWatch, profiles, training, fed[:5])
        watch.flush()
        watch.batch_events = size
        frozen.append(pickle.dumps(watch, pickle.HIGHEST_PROTOCOL))
    best = [math.inf] * len(sides)
    reports: list[list[dict[str, Any]]] = [[] for _ in sides]
    events = 0
    for r in range(rounds):
        for k in range(len(sides)):
            side = (k + r) % len(sides)
            watch = pickle.loads(frozen[side])
            got: list[dict[str, Any]] = []
            gc.collect()
            gc.disable()
            started = time.process_time()
            _, events = _zipf_feed(watch, profiles, fed[5:], got, flush=True)
            best[side] = min(best[side], time.process_time() - started)
            gc.enable()
            reports[side] = got
    want = _per_model_feature(reports[0])
    return [(size, _per_model_feature(reports[k]) == want, best[k] / events * 1e6)
            for k, size in enumerate(sides)]


SHARD_BATCH, SHARD_SPAN_MS = 1250, 1000
"""A shard's batch at 5,000 predictions/s over a worker's 4 shards (batches of 5,000 records)."""
CALIBRATIONS = Path(tempfile.gettempdir()) / "driftline-bench-calibrations"  # as bench_models'


def _shard_times(fed: Fed) -> Fed:
    """``fed`` with each batch's events spread over :data:`SHARD_SPAN_MS`, batch after batch."""
    return [(model, floats, others, maps,
             [b * SHARD_SPAN_MS + i * SHARD_SPAN_MS // len(times) for i in range(len(times))], ids)
            for b, (model, floats, others, maps, times, ids) in enumerate(fed)]


def _one_model(fed: Fed, profiles: list[ReferenceProfile], training: list[Any]) -> Fed:
    """``fed``'s batches, every event model 0's (a row of its own training traffic: no drift)."""
    rng = np.random.default_rng(1)
    names = sorted(profiles[0].features)
    numeric = [n for n in names if profiles[0].features[n].kind == "numeric"]
    own = training[0]
    out = []
    for model, _, _, _, times, ids in fed:
        rows = (rng.random(len(model)) * len(own[names[0]])).astype(np.int64)
        floats = {n: np.asarray(own[n], dtype=np.float64)[rows] for n in numeric}
        others = {n: [own[n][r] for r in rows] for n in names if n not in numeric}
        maps = [{n: values[i] for n, values in others.items()} for i in range(len(model))]
        out.append((np.zeros_like(model), floats, others, maps, times, ids))
    return out


def _shard_feed(watch: Any, profiles: list[ReferenceProfile], part: Fed) -> int:
    """Feed batches as a shard does (a model's floats a block taken from the batch's matrix, the
    held events due fed before each batch, all at the end); the events fed."""
    events = 0
    for model, floats, others, _, times, ids in part:
        watch.flush_due(times[0] - 1)
        names = tuple(floats)
        matrix = np.stack([floats[n] for n in names])
        for m in np.unique(model).tolist():
            rows = np.flatnonzero(model == m)
            p = profiles[m]
            watch.observe(p.model_id, p.model_version, [times[i] for i in rows], [ids[i] for i in rows],
                          [{}] * rows.size, FloatBlock(names, matrix.take(rows, axis=1)),
                          {n: [c[i] for i in rows] for n, c in others.items()})
            events += rows.size
    watch.flush()
    return events


def shard_sizes(models: int, sizes: list[int], rounds: int = 5, batches: int = 100
                ) -> tuple[float, list[tuple[int, float]], list[tuple[int, int, int, float]]]:
    """:func:`_shard_feed` of one model's traffic and of ``models`` models' held until each of
    ``sizes``, in one process, the sides' order rotated each round, the collector off while timed:
    (best CPU us an event of one model, [(size, best CPU us an event of many models)])."""
    calibration.share_calibrations(CALIBRATIONS)
    profiles, training, fed = _zipf_traffic(models, batches, SHARD_BATCH)
    many = _shard_times(fed)
    one = _one_model(many, profiles, training)
    sides = [(one, 0), *((many, size) for size in sizes)]
    frozen = []
    for traffic, size in sides:
        watch = _zipf_watch(FeatureWatch, profiles, training, traffic[:5])
        watch.flush()
        watch.batch_events = size
        frozen.append(pickle.dumps(watch, pickle.HIGHEST_PROTOCOL))
    best = [math.inf] * len(sides)
    for r in range(rounds):
        for k in range(len(sides)):
            side = (k + r) % len(sides)
            watch = pickle.loads(frozen[side])
            gc.collect()
            gc.disable()
            started = time.process_time()
            events = _shard_feed(watch, profiles, sides[side][0][5:])
            best[side] = min(best[side], (time.process_time() - started) / events * 1e6)
            gc.enable()
    return best[0], list(zip(sizes, best[1:], strict=True)), _batch_costs(frozen[-1], profiles, many[5:])


def _grouped_feed(watch: Any, profiles: list[ReferenceProfile], part: Fed, per_model: bool,
                  reports: list[dict[str, Any]]) -> int:
    """Feed batches as a shard does, each model's held events until ``BATCH_EVENTS``: a call a model
    (``per_model``: floats a block taken from the batch's matrix, value lists picked) or the batch's
    events grouped by model once (:meth:`FeatureWatch.observe_grouped`); the events fed."""
    events = 0
    for model, floats, others, _, times, ids in part:
        reports.extend(chain.from_iterable(watch.flush_due(times[0] - 1).values()))
        names = tuple(floats)
        matrix = np.stack([floats[n] for n in names])
        if per_model:
            for m in np.unique(model).tolist():
                rows = np.flatnonzero(model == m).tolist()
                p = profiles[m]
                reports.extend(watch.observe(
                    p.model_id, p.model_version, [times[i] for i in rows], [ids[i] for i in rows],
                    [{}] * len(rows), FloatBlock(names, matrix.take(rows, axis=1)),
                    {n: [c[i] for i in rows] for n, c in others.items()}))
        else:
            order = np.argsort(model, kind="stable")
            kept, starts = np.unique(model[order], return_index=True)
            keys = [(profiles[m].model_id, profiles[m].model_version) for m in kept.tolist()]
            listed = order.tolist()
            grouped = GroupedEvents(keys, [*starts.tolist(), len(listed)], [times[i] for i in listed],
                                    [ids[i] for i in listed], FloatBlock(names, matrix.take(order, axis=1)),
                                    {n: [c[i] for i in listed] for n, c in others.items()})
            reports.extend(chain.from_iterable(watch.observe_grouped(grouped).values()))
        events += len(model)
    reports.extend(chain.from_iterable(watch.flush().values()))
    return events


def _shard_watch(watch_class: Any, models: int, batches: int) -> tuple[bytes, list[ReferenceProfile], Fed]:
    """A pickled warmed ``watch_class`` holding until ``BATCH_EVENTS``, ``models`` models' profiles,
    and the Zipf traffic after the warm-up in a shard's batches."""
    calibration.share_calibrations(CALIBRATIONS)
    profiles, training, fed = _zipf_traffic(models, batches, SHARD_BATCH)
    many = _shard_times(fed)
    watch = _zipf_watch(watch_class, profiles, training, many[:5])
    watch.flush()
    watch.batch_events = BATCH_EVENTS
    return pickle.dumps(watch, pickle.HIGHEST_PROTOCOL), profiles, many[5:]


def _grouped_rounds(sides: list[tuple[bytes, bool]], profiles: list[ReferenceProfile], part: Fed,
                    rounds: int) -> tuple[list[float], bool]:
    """:func:`_grouped_feed` of ``part`` to a fresh copy of each side's pickled watch (a call a model
    where its flag says so, else grouped), alternating, the collector off while timed: (best CPU us
    an event per side, whether all sides' reports are equal, per model and feature)."""
    best = [math.inf] * len(sides)
    got: list[list[dict[str, Any]]] = [[] for _ in sides]
    for r in range(rounds):
        for k in range(len(sides)):
            side = (k + r) % len(sides)
            frozen, per_model = sides[side]
            fresh, reports = pickle.loads(frozen), []
            gc.collect()
            gc.disable()
            started = time.process_time()
            events = _grouped_feed(fresh, profiles, part, per_model, reports)
            best[side] = min(best[side], (time.process_time() - started) / events * 1e6)
            gc.enable()
            got[side] = reports
    return best, all(_by_feature(reports) == _by_feature(got[0]) for reports in got[1:])


def shard_grouped(models: int, rounds: int = 5, batches: int = 100) -> tuple[float, float, bool]:
    """:func:`_grouped_feed` a call a model against grouped, on ``models`` models' Zipf traffic in a
    shard's batches, in one process, alternating, the collector off while timed: (best CPU us an
    event a call a model, grouped, whether the reports are equal, per model and feature)."""
    frozen, profiles, part = _shard_watch(FeatureWatch, models, batches)
    (each, grouped), equal = _grouped_rounds([(frozen, True), (frozen, False)], profiles, part, rounds)
    return each, grouped, equal


def grouped_ab(models: int, commit: str, rounds: int = 7, batches: int = 100) -> tuple[float, float, bool]:
    """The batch grouped (as a shard feeds it) to FeatureWatch as of ``commit`` and to today's, on
    ``models`` models' Zipf traffic in a shard's batches, in one process, alternating: (best CPU us
    an event then, now, whether the reports are equal, per model and feature)."""
    with tempfile.TemporaryDirectory() as tmp:
        old, profiles, part = _shard_watch(_baseline_watch_class(commit, Path(tmp)), models, batches)
    new, _, _ = _shard_watch(FeatureWatch, models, batches)
    (then, now), equal = _grouped_rounds([(old, False), (new, False)], profiles, part, rounds)
    return then, now, equal


BATCH_BINS = ((1, 64), (64, 256), (256, 1 << 30))


def _batch_costs(frozen: bytes, profiles: list[ReferenceProfile],
                 part: Fed) -> list[tuple[int, int, int, float]]:
    """A pass of ``part`` through the pickled watch with each bank's vectorised batch
    (``FeatureWatch._feed``) timed apart: per :data:`BATCH_BINS` bin of events a batch (low, high,
    batches, mean CPU us a batch). What a model's batch costs whatever its size when hundreds of
    banks take turns (their objects cold)."""
    watch = pickle.loads(frozen)
    feed = watch._feed
    timed: list[tuple[int, float]] = []

    def timed_feed(*args: Any) -> Any:
        started = time.process_time()
        result = feed(*args)
        timed.append((len(args[1]), time.process_time() - started))  # args[1]: the batch's times
        return result

    watch._feed = timed_feed
    gc.collect()
    gc.disable()
    try:
        _shard_feed(watch, profiles, part)
    finally:
        gc.enable()
    out = []
    for low, high in BATCH_BINS:
        costs = [cpu for events, cpu in timed if low <= events < high]
        out.append((low, high, len(costs), sum(costs) / max(len(costs), 1) * 1e6))
    return out


def pipeline_batched(models: int, n: int, rounds: int = 3) -> tuple[list[float], list[float]]:
    """bench_models' run (CPU us a prediction) with the shards' watches feeding every group at once
    and holding events (:data:`~driftline.operators.feature_watch.BATCH_EVENTS`), alternating runs
    in this process, the order flipped each round: (at once, held) per round."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_models import model_specs, profiles_of, run, traffic
    from common import bench_settings

    from driftline.operators.feature_watch import BATCH_EVENTS
    from driftline.pipeline import shard
    settings = bench_settings("127.0.0.1:9", "bm", windows={"sizes_s": [10, 60]})
    specs = model_specs(models)
    profiles = profiles_of(specs, 1000, settings)
    records, warm = traffic(specs, n, settings)
    seen: dict[int, list[float]] = {0: [], BATCH_EVENTS: []}
    for r in range(rounds):
        for size in (0, BATCH_EVENTS) if r % 2 == 0 else (BATCH_EVENTS, 0):
            shard.BATCH_EVENTS = size  # read by each shard as it is made
            seen[size].append(run(settings, profiles, records, warm)["cpu_per_prediction_us"])
    shard.BATCH_EVENTS = BATCH_EVENTS
    return seen[0], seen[BATCH_EVENTS]


def _monitor_streams(values: int) -> tuple[list[tuple[str, list[Any]]], list[list[Any]]]:
    """25 features' references (kind, values) and no-drift streams of ``values`` each."""
    rng = np.random.default_rng(7)
    draws = [lambda n: rng.normal(size=n), lambda n: rng.lognormal(0.0, 1.0, n),
             lambda n: rng.poisson(4.0, n).astype(np.float64), lambda n: rng.gamma(2.0, 1.0, n)]
    references: list[tuple[str, list[Any]]] = []
    streams: list[list[Any]] = []
    for f in range(20):
        draw = draws[f % len(draws)]
        references.append(("numeric", draw(5_000).tolist()))
        streams.append(draw(values).tolist())
    shares = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    for _ in range(5):
        names = list("abcdefgh")
        references.append(("categorical", rng.choice(names, 5_000, p=shares).tolist()))
        streams.append(rng.choice(names, values, p=shares).tolist())
    return references, streams


def monitors_ab(commit: str, rounds: int = 9, values: int = 20_000) -> tuple[bool, float, float]:
    """A model's 25 episode monitors fed in groups of 1-7 (update_each) as of ``commit`` and
    today, in one process alternating: (events equal, best CPU us a value of a monitor old, new)."""
    from driftline.operators.episodes import EpisodeMonitor
    from driftline.operators.sequential import feature_arl
    references, streams = _monitor_streams(values)
    arl = feature_arl(1e6, len(references))
    with tempfile.TemporaryDirectory() as tmp:
        _baseline_watch_class(commit, Path(tmp))
        import base_episodes  # written by _baseline_watch_class
    frozen = []
    for cls in (base_episodes.EpisodeMonitor, EpisodeMonitor):
        monitors = [cls.from_reference(ref, arl=arl) if kind == "numeric"
                    else cls.from_categories(ref, arl=arl) for kind, ref in references]
        frozen.append(pickle.dumps(monitors, pickle.HIGHEST_PROTOCOL))
    rng, cuts, lo = np.random.default_rng(0), [], 0
    while lo < values:
        cuts.append((lo, hi := min(values, lo + int(rng.integers(1, 8)))))
        lo = hi
    best = [math.inf, math.inf]
    events: list[list[Any]] = [[], []]
    for r in range(rounds):
        for side in (r % 2, 1 - r % 2):
            monitors = pickle.loads(frozen[side])
            got: list[Any] = []
            gc.collect()
            gc.disable()
            started = time.process_time()
            for lo, hi in cuts:
                for monitor, stream in zip(monitors, streams, strict=True):
                    got += monitor.update_each(stream[lo:hi])
            best[side] = min(best[side], time.process_time() - started)
            gc.enable()
            events[side] = [(i, e.kind, e.index, e.component, e.statistic, e.magnitude) for i, e in got]
    per = values * len(streams) / 1e6
    return events[0] == events[1], best[0] / per, best[1] / per


def settle_intervals(commit: str, values: int = 20_000) -> dict[str, tuple[float, float]]:
    """Per feature kind, the mean values between two settles of the opener's queue, as of
    ``commit`` and today (same monitors and values as :func:`monitors_ab`, groups of 1-7)."""
    from driftline.operators.episodes import EpisodeMonitor
    from driftline.operators.sequential import feature_arl
    references, streams = _monitor_streams(values)
    arl = feature_arl(1e6, len(references))
    with tempfile.TemporaryDirectory() as tmp:
        _baseline_watch_class(commit, Path(tmp))
        import base_episodes  # written by _baseline_watch_class
    rng, cuts, lo = np.random.default_rng(0), [], 0
    while lo < values:
        cuts.append((lo, hi := min(values, lo + int(rng.integers(1, 8)))))
        lo = hi
    out: dict[str, tuple[float, float]] = {}
    for kind in ("numeric", "categorical"):
        found = []
        for cls in (base_episodes.EpisodeMonitor, EpisodeMonitor):
            settles = counted = 0
            for k, (ref_kind, ref) in enumerate(references):
                if ref_kind != kind:
                    continue
                monitor = (cls.from_reference(ref, arl=arl) if kind == "numeric"
                           else cls.from_categories(ref, arl=arl))
                opener, tally = monitor._opener, [0]
                settle = opener._settle

                def counting(settle: Any = settle, tally: list[int] = tally) -> Any:
                    tally[0] += 1
                    return settle()
                opener._settle = counting
                for lo, hi in cuts:
                    monitor.update_each(streams[k][lo:hi])
                settles, counted = settles + tally[0], counted + values
            found.append(counted / max(settles, 1))
        out[kind] = (found[0], found[1])
    return out


def lanes_on_off(values: int = 12_000, rounds: int = 10) -> dict[str, tuple[float, float]]:
    """Per feature kind, best CPU us a value of a monitor through update_each in groups of 1-7
    with the bounds per group of CUSUMs and with one bound per bank, alternating in this process."""
    from driftline.operators import sequential
    from driftline.operators.episodes import EpisodeMonitor
    references, streams = _monitor_streams(values)
    arl = sequential.feature_arl(1e6, len(references))
    rng, cuts, lo = np.random.default_rng(0), [], 0
    while lo < values:
        cuts.append((lo, hi := min(values, lo + int(rng.integers(1, 8)))))
        lo = hi
    out: dict[str, tuple[float, float]] = {}
    kinds: list[tuple[str, Any]] = [("numeric", sequential.NumericDetector),
                                    ("categorical", sequential.CategoricalDetector)]
    for kind, cls in kinds:
        grouped = cls._group_keys
        picked = [k for k, (ref_kind, _) in enumerate(references) if ref_kind == kind]
        best = {True: math.inf, False: math.inf}
        for r in range(rounds):
            for on in ((True, False) if r % 2 else (False, True)):
                cls._group_keys = grouped if on else sequential.SequentialDetector._group_keys
                sequential._TABLES.clear()  # the lanes are built per reference: again, as set now
                monitors = [EpisodeMonitor.from_reference(references[k][1], arl=arl) if kind == "numeric"
                            else EpisodeMonitor.from_categories(references[k][1], arl=arl) for k in picked]
                gc.collect()
                gc.disable()
                started = time.process_time()
                for lo, hi in cuts:
                    for k, monitor in zip(picked, monitors, strict=True):
                        monitor.update_each(streams[k][lo:hi])
                best[on] = min(best[on], time.process_time() - started)
                gc.enable()
        cls._group_keys = grouped
        per = values * len(picked) / 1e6
        out[kind] = (best[True] / per, best[False] / per)
    return out


def build_banks(models: int, shared: Path | None) -> float:
    """CPU seconds a model's bank costs to build in this process (``shared``: calibrations there)."""
    from driftline.operators import calibration
    profiles, _ = _zipf_profiles(models)
    calibration.share_calibrations(shared)
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=60_000)
    started = time.process_time()
    for profile in profiles:
        watch.add_profile(profile)
        watch.observe(profile.model_id, profile.model_version, [0], ["p"], [{}])  # builds the bank
    return (time.process_time() - started) / len(profiles)


def _build_in_child(models: int, shared: Path | None) -> float:
    args = [sys.executable, __file__, "--build-child", str(models), *([str(shared)] if shared else [])]
    return float(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--build-child"]:
        print(build_banks(int(argv[1]), Path(argv[2]) if len(argv) > 2 else None))
        return 0
    if argv[:1] == ["--build"]:
        models = int(argv[1])
        with tempfile.TemporaryDirectory() as tmp:
            cold = _build_in_child(models, None)
            _build_in_child(models, Path(tmp))  # fills the directory
            warm = _build_in_child(models, Path(tmp))
        print(f"{models} banks (25 features): {cold:.3f} CPU-s a bank alone, {warm:.3f} with the "
              f"calibrations another process shared ({cold / warm:.0f}x)")
        return 0
    if argv[:1] == ["--lanes"]:
        for kind, (on, off) in lanes_on_off().items():
            print(f"{kind}: CPU us a value of a monitor (best of 10, alternating) {on:.3f} with a bound per "
                  f"group of CUSUMs, {off:.3f} with one per bank ({on / off:.2f}x)")
        return 0
    if argv[:1] == ["--settles"]:
        for kind, (old, new) in settle_intervals(argv[1]).items():
            print(f"{kind}: a settle every {old:.1f} values at {argv[1]}, every {new:.1f} now")
        return 0
    if argv[:1] == ["--monitors"]:
        equal, old_us, new_us = monitors_ab(argv[1])
        print(f"25 monitors in groups of 1-7 (update_each): CPU us a value of a monitor (best of 9, "
              f"alternating) {old_us:.3f} at {argv[1]}, {new_us:.3f} now ({new_us / old_us:.2f}x); "
              f"events equal: {equal}")
        return 0 if equal else 1
    if argv[:1] == ["--pipeline"]:
        at_once, held = pipeline_batched(int(argv[1]), int(argv[2]))
        print(f"{argv[1]} models, {int(argv[2]):,} predictions, whole pipeline: CPU us a prediction (best of "
              f"{len(held)}, alternating) fed at once {min(at_once):.1f}, held {min(held):.1f} "
              f"({min(held) / min(at_once):.2f}x); rounds {' '.join(f'{v:.0f}' for v in at_once)} vs "
              f"{' '.join(f'{v:.0f}' for v in held)}")
        return 0
    if argv[:1] == ["--grouped"] and argv[2:3] == ["--ab"]:
        then, now, equal = grouped_ab(int(argv[1]), argv[3])
        print(f"{argv[1]} models (Zipf), a shard's batches of {SHARD_BATCH:,} events a second grouped, held "
              f"until {BATCH_EVENTS}: CPU us an event (best of 7, alternating) {then:.2f} at {argv[3]}, "
              f"{now:.2f} now ({now / then:.3f}x); reports equal: {equal}")
        return 0 if equal else 1
    if argv[:1] == ["--grouped"]:
        each, grouped, equal = shard_grouped(int(argv[1]))
        print(f"{argv[1]} models (Zipf), a shard's batches of {SHARD_BATCH:,} events a second, held until "
              f"{BATCH_EVENTS}: CPU us an event (best of 5, alternating) a call a model {each:.2f}, the "
              f"batch grouped {grouped:.2f} ({each / grouped:.2f}x); reports equal: {equal}")
        return 0 if equal else 1
    if argv[:1] == ["--shard"]:
        one, held, batches = shard_sizes(int(argv[1]), [int(n) for n in argv[2:]])
        print(f"a shard's batches of {SHARD_BATCH:,} events a second: CPU us an event (best of 5, "
              f"alternating) one model {one:.2f}")
        for size, per_event in held:
            print(f"  {argv[1]} models (Zipf), held until {size} events: {per_event:.2f} "
                  f"({per_event / one:.1f}x)")
        bins = "; ".join(f"{low}-{high - 1 if high < 1 << 30 else ''} events {mean:.0f} ({count:,} batches)"
                         for low, high, count, mean in batches if count)
        print(f"  a bank's batch held until {held[-1][0]}, CPU us a batch (one pass, timed apart): {bins}")
        return 0
    if argv[:1] == ["--zipf"] and argv[2:3] == ["--batched"]:
        found = zipf_batched(int(argv[1]), [int(n) for n in argv[3:]])
        at_once = found[0][2]
        print(f"Zipf traffic over {argv[1]} models, shard batches of 120: CPU us an event (best of 7, "
              f"alternating) fed at once {at_once:.1f}")
        for size, equal, per_event in found[1:]:
            print(f"  held until {size} events: {per_event:.1f} ({per_event / at_once:.2f}x); "
                  f"reports equal: {equal}")
        return 0 if all(equal for _, equal, _ in found) else 1
    if argv[:1] == ["--zipf"] and argv[2:3] == ["--ab"]:
        equal, groups, events, old_us, new_us = zipf_ab(int(argv[1]), argv[3])
        print(f"{groups} groups, {events} events under Zipf traffic over {argv[1]} models: CPU us an event "
              f"(best of 9, alternating) {old_us:.1f} at {argv[3]}, {new_us:.1f} now "
              f"({new_us / old_us:.2f}x); reports equal: {equal}")
        return 0 if equal else 1
    if argv[:1] == ["--zipf"]:
        groups, per_group, per_event = zipf_groups(int(argv[1]))
        print(f"{groups} groups under Zipf traffic over {argv[1]} models: {per_group:.0f} CPU-us a group, "
              f"{per_event:.1f} an event")
        return 0
    missing = [str(DATA / f) for f in STREAMS if not (DATA / f).is_file()]
    if missing:
        print(f"data not found: {missing}")
        return 1
    ok = True
    for file, skip in STREAMS.items():
        equal, n_reports, whole_us, grouped_us = measure(DATA / file, skip)
        ok &= equal
        print(f"{file}: {n_reports} reports, equal in groups of 1-7: {equal}; CPU {whole_us:.1f} us/event "
              f"in one call, {grouped_us:.1f} in groups ({grouped_us / whole_us:.1f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
