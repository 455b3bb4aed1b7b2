"""FeatureWatch with ``batch_events``: a model's few events are held and fed later as one batch.

Many models under Zipf traffic, cut into random shard batches, with newer profiles taking over
mid-stream (some known from the start, some arriving while events are held) and the watch pickled
and restored mid-stream: the reports, per model and feature, and the monitors' states at the end
equal those of a watch that feeds every event at once, and no report comes after the shard's
progress passed its grid line (where stage 2 would take it for a re-sent duplicate). In the
pipeline, where stage 1 feeds what it holds before its progress passes it: every table's rows
(and the monitors' states) equal a run that feeds each event at once, for ten models under Zipf
traffic, shifts opening episodes, crashes restored from delta chains, and the end of the input."""

from __future__ import annotations

import csv
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.demo.training import training_profiles
from driftline.operators import feature_watch, watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.episodes import RING_FIRST
from driftline.operators.feature_watch import (
    HELD_PER_VALUE_BELOW,
    PER_VALUE_BELOW,
    FeatureWatch,
    GroupedEvents,
)
from driftline.operators.float_block import FloatBlock
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import ShardFactory
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

FeatureMaps = Callable[[list[Any], list[Any], list[Any], list[Any]], list[dict[str, Any]]]  # conftest's
MODELS = 6
EVENTS = 5000
GRID_MS = 20_000
LATENESS_MS = 3000
STEP_MS = 200  # ~ 5 events a second over all models
SWITCH_MS = EVENTS * STEP_MS // 2  # the newer profiles' effective_from
LATE_PROFILE_AT = 0.6  # share of the stream after which models 0 and 1 get a newer profile
SPLITS: tuple[bool | str, ...] = (False, True, "block")  # maps; dicts of columns; a FloatBlock (conftest)


def _profile(model: int, seed: int, effective_from_ms: int) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    table = {"x": rng.normal(size=3000), "y": rng.exponential(size=3000),
             "c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]).tolist()}
    return build_profile(f"m{model}", "1", table, label_column=None, prediction_column=None, bins=10,
                         top_k=5, created_at_ms=seed, effective_from_ms=effective_from_ms, source="training")


def _stream(feature_maps: FeatureMaps) -> tuple[list[int], list[int], list[str], list[dict[str, Any]]]:
    """(model, time, id, features) of each event: Zipf over models, times out of order by less
    than the lateness, a shift in x on models 0, 2 and 4 for the second half, odd values."""
    rng = np.random.default_rng(3)
    share = np.arange(1, MODELS + 1) ** -1.2
    models = rng.choice(MODELS, size=EVENTS, p=share / share.sum()).tolist()
    times = (np.arange(EVENTS) * STEP_MS + rng.integers(0, LATENESS_MS // 2, EVENTS)).tolist()
    shifted = (np.arange(EVENTS) > EVENTS // 2) & (np.asarray(models) % 2 == 0)
    x = rng.normal(np.where(shifted, 1.5, 0.0)).tolist()
    y = rng.exponential(size=EVENTS).tolist()
    c = rng.choice(["a", "b", "c", "zz"], EVENTS, p=[0.4, 0.3, 0.1, 0.2]).tolist()
    odd: list[Any] = [None, float("nan"), float("inf"), 1e101, "3.5", True, 2**1100]
    return models, times, [f"p{i}" for i in range(EVENTS)], feature_maps(x, y, c, odd)


def _state(watch: FeatureWatch) -> dict[tuple[str, str], Any]:
    """Each model's active profile, last time and monitors' state (what pickling keeps)."""
    out = {}
    for key, model in watch._models.items():
        bank = model.bank
        assert model.held is None
        out[key] = (model.last_time, None if bank is None else bank.profile_index,
                    None if bank is None else _plain(bank.monitors))
    return out


def _plain(x: Any) -> Any:
    """``x``'s state as plain values, arrays by dtype and bytes (their pickles differ in which
    dtype objects they share, not in what they hold)."""
    if isinstance(x, np.ndarray | np.generic):
        return ("array", x.dtype.str, np.shape(x), x.tobytes())
    if isinstance(x, float) and x != x:
        return "nan"
    if x is None or isinstance(x, str | bytes | int | float):
        return x
    if isinstance(x, dict):
        return ("dict", tuple((_plain(k), _plain(v)) for k, v in x.items()))
    if isinstance(x, list | tuple):
        return (type(x).__name__, tuple(map(_plain, x)))
    if isinstance(x, set | frozenset):
        return ("set", tuple(sorted(map(repr, map(_plain, x)))))
    return (type(x).__qualname__, _plain(x.__getstate__()))


Reports = list[tuple[str, dict[str, Any]]]  # (model, report)


def _by_model_feature(reports: Reports) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for model, report in reports:
        out.setdefault((model, report["feature"]), []).append(report)
    return out


def _watches_with_profiles(
        batch_events: dict[bool, int]) -> tuple[dict[bool, FeatureWatch], list[ReferenceProfile]]:
    """A watch per side with every model's first profile and models 2 and 3's newer one (known from
    the start), and the newer profiles of models 0 and 1 that arrive mid-stream (see
    :func:`_shard_batches`)."""
    early = [_profile(m, 10 + m, 0) for m in range(MODELS)]
    newer = [_profile(m, 20 + m, SWITCH_MS) for m in (2, 3)]
    late = [_profile(m, 30 + m, SWITCH_MS + m * 40_000) for m in (0, 1)]
    watches = {side: FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=GRID_MS, batch_events=n)
               for side, n in batch_events.items()}
    for watch in watches.values():
        for profile in early + newer:
            watch.add_profile(profile)
    return watches, late


def _shard_batches(models: list[int], times: list[int], watches: dict[bool, FeatureWatch],
                   late: list[ReferenceProfile],
                   rng: np.random.Generator) -> Iterator[tuple[dict[int, list[int]], int]]:
    """The stream cut into random batches as a shard sees them: each batch's events by model (a late
    one left out: a shard does not watch it) and the watermark after it; ``late`` added to every
    watch of ``watches`` (as it is then) once the stream is :data:`LATE_PROFILE_AT` through."""
    watermark, lo, fed_late = -(2**62), 0, False
    while lo < EVENTS:
        hi = min(EVENTS, lo + int(rng.choice([1, 3, 12, 40, 150])))
        if not fed_late and lo >= EVENTS * LATE_PROFILE_AT:
            fed_late = True
            for watch in watches.values():
                for profile in late:
                    watch.add_profile(profile)
        by_model: dict[int, list[int]] = {}
        for i in range(lo, hi):
            if times[i] >= watermark:
                by_model.setdefault(models[i], []).append(i)
            watermark = max(watermark, times[i] - LATENESS_MS)
        yield by_model, watermark
        lo = hi


@pytest.mark.parametrize("seed", [1, 2])
def test_held_events_give_the_reports_and_states_of_events_fed_at_once(
        seed: int, watch_feature_maps: FeatureMaps, shard_feature_split: Callable[..., Any]) -> None:
    models, times, ids, features = _stream(watch_feature_maps)
    watches, late = _watches_with_profiles({False: 0, True: 24})
    got: dict[bool, Reports] = {False: [], True: []}
    rng = np.random.default_rng(seed)
    announced, restores, most_held = -(2**62), 0, 0
    for by_model, watermark in _shard_batches(models, times, watches, late, rng):
        as_columns = SPLITS[int(rng.integers(len(SPLITS)))]
        for held, watch in watches.items():
            out: Reports = []
            for m, rows in sorted(by_model.items()):
                group, columns, values = shard_feature_split([features[i] for i in rows], as_columns)
                reports = watch.observe(f"m{m}", "1", [times[i] for i in rows], [ids[i] for i in rows],
                                        group, columns, values)
                out += [(f"m{m}", r) for r in reports]
            if held:
                for (model, _), reports in watch.flush_due(watermark).items():
                    out += [(model, r) for r in reports]
                boundary = announced - announced % GRID_MS
                late_reports = [r for _, r in out if r["event_time"] < boundary]
                assert not late_reports, "a report after the progress passed its grid line"
                most_held = max(most_held, watch.held_events())
            got[held] += out
        announced = watermark  # the shard's progress after this batch
        if rng.random() < 0.1:  # a checkpoint restored: what is held travels with it
            watches[True] = pickle.loads(pickle.dumps(watches[True], pickle.HIGHEST_PROTOCOL))
            restores += 1
    for (model, _), reports in watches[True].flush().items():
        got[True] += [(model, r) for r in reports]
    assert restores >= 3 and most_held >= 24  # held up to a batch
    whole = _by_model_feature(got[False])
    kinds = {r["kind"] for reports in whole.values() for r in reports}
    assert {"opened", "status", "closed"} <= kinds, kinds  # every kind of report, a profile switch closing
    assert any(r["reason"] == "new_profile" for reports in whole.values() for r in reports)
    assert _by_model_feature(got[True]) == whole
    assert _state(watches[True]) == _state(watches[False])


def _grouped(by_model: dict[int, list[int]], times: list[int], ids: list[str],
             features: list[dict[str, Any]]) -> GroupedEvents:
    """A shard batch's events of many models as a shard groups them: each model's a run (models in
    order), float64 rows for the features all of whose values are floats, value lists for the rest."""
    keys = sorted(by_model)
    order = [i for m in keys for i in by_model[m]]
    starts = [0]
    for m in keys:
        starts.append(starts[-1] + len(by_model[m]))
    floats: dict[str, list[float]] = {}
    values: dict[str, list[Any]] = {}
    for name in ("x", "y", "c"):
        column = [features[i].get(name) for i in order]
        (floats if all(type(v) is float for v in column) else values)[name] = column
    block = FloatBlock(tuple(floats), np.array(list(floats.values()), dtype=np.float64)) if floats else None
    return GroupedEvents([(f"m{m}", "1") for m in keys], starts, [times[i] for i in order],
                         [ids[i] for i in order], block, values)


@pytest.mark.parametrize("seed", [1, 2])
def test_grouped_batches_give_the_reports_and_states_of_a_call_a_model(
        seed: int, monkeypatch: pytest.MonkeyPatch, watch_feature_maps: FeatureMaps,
        shard_feature_split: Callable[..., Any]) -> None:
    """``observe_grouped`` (a model's events held as rows of the batch, every run copied out each
    ``RUN_EVENTS`` events of batches, and when pickled) against ``observe`` a model at a time: the
    same reports per model and feature, the same states, newer profiles taking over mid-stream."""
    monkeypatch.setattr(feature_watch, "RUN_EVENTS", 150)
    models, times, ids, features = _stream(watch_feature_maps)
    watches, late = _watches_with_profiles({False: 24, True: 24})
    got: dict[bool, Reports] = {False: [], True: []}
    rng = np.random.default_rng(seed)
    most_batches = 0
    for by_model, watermark in _shard_batches(models, times, watches, late, rng):
        for grouped, watch in watches.items():
            if grouped:
                batch = _grouped(by_model, times, ids, features)
                for (model, _), reports in watch.observe_grouped(batch).items():
                    got[True] += [(model, r) for r in reports]
                most_batches = max([most_batches, *(len({id(run[0]) for run in m.held.runs})
                                                     for m in watch._models.values() if m.held)])
            else:
                for m, rows in sorted(by_model.items()):
                    group, columns, values = shard_feature_split([features[i] for i in rows], "block")
                    got[False] += [(f"m{m}", r) for r in watch.observe(
                        f"m{m}", "1", [times[i] for i in rows], [ids[i] for i in rows], group, columns,
                        values)]
            for (model, _), reports in watch.flush_due(watermark).items():
                got[grouped] += [(model, r) for r in reports]
        if rng.random() < 0.05:  # a checkpoint restored: the runs held are pickled as values
            watches[True] = pickle.loads(pickle.dumps(watches[True], pickle.HIGHEST_PROTOCOL))
    for grouped, watch in watches.items():
        got[grouped] += [(model, r) for (model, _), reports in watch.flush().items() for r in reports]
    assert most_batches >= 3  # a model held rows of several batches at once
    whole = _by_model_feature(got[False])
    assert {"opened", "status", "closed"} <= {r["kind"] for reports in whole.values() for r in reports}
    assert _by_model_feature(got[True]) == whole
    assert _state(watches[True]) == _state(watches[False])


def test_held_runs_pickle_alike_whenever_they_were_copied_out(watch_feature_maps: FeatureMaps) -> None:
    """What a model holds pickles to the same parts whether its runs were copied out as they came
    or all at the pickle (a restored shard's state equals an uninterrupted one's)."""
    models, times, ids, features = _stream(watch_feature_maps)
    watches = [FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**9, batch_events=10**6)
               for _ in range(2)]
    for watch in watches:
        watch.add_profile(_profile(0, 10, 0))
        watch.observe("m0", "1", [0], ["first"], [{"x": 0.0, "y": 1.0, "c": "a"}])  # builds the bank
    rows = [i for i in range(400) if models[i] == 0]
    for k in range(0, len(rows), 7):
        batch = {0: rows[k:k + 7]}
        for n, watch in enumerate(watches):
            watch.observe_grouped(_grouped(batch, times, ids, features))
            if n == 0:  # copied out at once
                held = watch._models[("m0", "1")].held
                assert held is not None
                held.settle()
    assert watches[0]._models[("m0", "1")].held.runs == []  # type: ignore[union-attr]
    assert len(watches[1]._models[("m0", "1")].held.runs) > 10  # type: ignore[union-attr]
    held = [pickle.loads(pickle.dumps(watch._models[("m0", "1")].held)) for watch in watches]
    assert len(held[0].numbers) > 1  # the layout changes (an odd value): parts of each layout
    assert _plain(held[0].__getstate__()) == _plain(held[1].__getstate__())


def test_a_newer_profile_effective_at_the_next_events_feeds_what_is_held_first() -> None:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=GRID_MS, batch_events=100)
    watch.add_profile(_profile(0, 1, 0))
    assert watch.observe("m0", "1", [0, 10], ["a", "b"], [{"x": 0.1}, {"x": 0.2}]) == []
    assert watch.observe("m0", "1", [20], ["c"], [{"x": 0.3}]) == []  # the bank is built: held
    assert watch.held_events() == 1
    watch.add_profile(_profile(0, 2, 30))
    assert watch.held_events() == 1  # held for the active bank: a profile arriving changes nothing
    watch.observe("m0", "1", [40], ["d"], [{"x": 0.4}])  # the newer profile applies: fed at once
    model = watch._models[("m0", "1")]
    assert watch.held_events() == 0 and model.bank is not None and model.bank.profile_index == 1
    assert model.last_time == 40


def test_flush_due_feeds_the_models_held_before_the_watermarks_grid_line() -> None:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000, batch_events=100)
    for m in range(3):
        watch.add_profile(_profile(m, 1, 0))
        watch.observe(f"m{m}", "1", [0], ["first"], [{"x": 0.0}])  # builds the bank
    for m, t in enumerate([900, 1000, 1999]):
        watch.observe(f"m{m}", "1", [t], [f"p{m}"], [{"x": 0.0}])
    assert watch.flush_due(999) == {} and watch.held_events() == 3
    assert list(watch.flush_due(1500)) == [("m0", "1")] and watch.held_events() == 2
    assert list(pickle.loads(pickle.dumps(watch)).flush_due(2000)) == [("m1", "1"), ("m2", "1")]


def test_a_flush_feeds_held_runs_value_by_value_as_a_batch_would(
        monkeypatch: pytest.MonkeyPatch, watch_feature_maps: FeatureMaps,
        shard_feature_split: Callable[..., Any]) -> None:
    """Held runs of :data:`PER_VALUE_BELOW` up to :data:`HELD_PER_VALUE_BELOW` events go value by
    value at a flush: the same reports, in the same order, and the same monitor states (their
    rings' sizes too: the monitors are new, so they grow) as feeding them as a batch."""
    models, times, ids, features = _stream(watch_feature_maps)
    sides = {below: FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=GRID_MS // 4,
                                 batch_events=64) for below in (PER_VALUE_BELOW, HELD_PER_VALUE_BELOW)}
    for watch in sides.values():
        for m in range(MODELS):
            watch.add_profile(_profile(m, 10 + m, 0))
    got: dict[int, list[Any]] = {below: [] for below in sides}
    fed_few: list[int] = []  # held counts a flush fed value by value that a batch fed before
    rng = np.random.default_rng(5)
    lo = 0
    while lo < EVENTS:
        hi = min(EVENTS, lo + int(rng.choice([1, 2, 5, 9])))
        by_model: dict[int, list[int]] = {}
        for i in range(lo, hi):
            by_model.setdefault(models[i], []).append(i)
        as_columns = SPLITS[int(rng.integers(len(SPLITS)))]
        for below, watch in sides.items():
            monkeypatch.setattr(feature_watch, "HELD_PER_VALUE_BELOW", below)
            for m, rows in sorted(by_model.items()):
                group, columns, values = shard_feature_split([features[i] for i in rows], as_columns)
                got[below] += watch.observe(f"m{m}", "1", [times[i] for i in rows],
                                            [ids[i] for i in rows], group, columns, values)
            held = {key: len(model.held.times) for key, model in watch._models.items() if model.held}
            due = watch.flush_due(times[hi - 1] - LATENESS_MS)
            if below == PER_VALUE_BELOW:
                fed_few += [held[key] for key in due if PER_VALUE_BELOW <= held[key] < HELD_PER_VALUE_BELOW]
            got[below] += [r for reports in due.values() for r in reports]
        lo = hi
    for below, watch in sides.items():
        monkeypatch.setattr(feature_watch, "HELD_PER_VALUE_BELOW", below)
        got[below] += [r for reports in watch.flush().values() for r in reports]
    assert len(fed_few) >= 50 and max(fed_few) >= HELD_PER_VALUE_BELOW - 4
    # a run this short grows a ring by one doubling at most, as a batch's does (not so beyond)
    assert HELD_PER_VALUE_BELOW <= RING_FIRST
    assert {"opened", "status"} <= {r["kind"] for r in got[PER_VALUE_BELOW]}
    assert got[HELD_PER_VALUE_BELOW] == got[PER_VALUE_BELOW]
    assert _state(sides[HELD_PER_VALUE_BELOW]) == _state(sides[PER_VALUE_BELOW])


# -- in the pipeline ------------------------------------------------------------------------

PIPELINE_START = (int(time.time()) // 86_400 - 1) * 86_400_000
PIPELINE_BATCH = 300
PIPELINE_MODELS = 10


def _pipeline_settings() -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=600),
    )


def _pipeline_scenario() -> Scenario:
    drift = [CovariateDrift(feature="x1", at_s=200, magnitude=2.0)]
    return Scenario(
        seed=8, start=PIPELINE_START, duration_s=480, rate=10,
        models=[ModelSpec(model_id=f"m{i}", traffic_share=1.0 / (i + 1) ** 1.3, n_numeric=2, n_categorical=1,
                          covariate_drift=drift if i % 2 == 0 else [])
                for i in range(PIPELINE_MODELS)],
        label_delay=LabelDelay(median_s=60, max_s=300),
    )


@pytest.fixture(scope="module")
def inputs() -> tuple[list[list[RawRecord]], list[bytes]]:
    settings = _pipeline_settings()
    scenario = _pipeline_scenario()
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        scenario, settings.drift.bins, settings.drift.top_k, 0, multivariate=False)]
    records = logged_records(generate(scenario), settings)
    return [records[i : i + PIPELINE_BATCH] for i in range(0, len(records), PIPELINE_BATCH)], profiles


def _rows(pipeline: InProcessPipeline) -> dict[str, list[str]]:
    return {table: sorted(map(repr, rows)) for table, rows in pipeline.rows.items() if rows}


def test_held_events_leave_every_row_as_events_fed_at_once(
    inputs: tuple[list[list[RawRecord]], list[bytes]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches, profiles = inputs
    settings = _pipeline_settings()
    end = PIPELINE_START + 480_000 - 30_000  # windows after it stay open: what they hold stays held
    monkeypatch.setattr(shard_module, "BATCH_EVENTS", 0)
    at_once = InProcessPipeline(settings, "r", profiles=profiles)
    for batch in batches:
        at_once.feed(batch)
    at_once.finish(end)
    monkeypatch.undo()

    run = InProcessPipeline(settings, "r", profiles=profiles)
    for shard in run.shards:
        shard.track_changes()
    factory = ShardFactory(settings, "r")
    chains: list[list[bytes]] = [[] for _ in run.shards]
    most_held = 0
    for n, batch in enumerate(batches):
        run.feed(batch)
        most_held = max(most_held, *(s.watch.held_events() for s in run.shards if s.watch is not None))
        for p, shard in enumerate(run.shards):  # a base every 8th checkpoint, deltas between
            chains[p] = [shard.checkpoint(base=True)] if n % 8 == 0 else [*chains[p], shard.checkpoint(False)]
        # a crash right after each checkpoint: every shard from its chain, holding what it held (a
        # model whose held events were fed without an event of its own in the batch is in the delta)
        live = [_held(shard.watch) for shard in run.shards]
        run.shards = [factory.restore(p, chain[0], chain[1:]) for p, chain in enumerate(chains)]
        assert [_held(shard.watch) for shard in run.shards] == live
        for shard in run.shards:
            shard.track_changes()
    run.finish(end)
    assert most_held >= 20
    rows = _rows(at_once)
    assert len(rows["drift_episodes"]) >= 3 and rows["drift_alerts"], sorted(rows)
    assert _rows(run) == rows
    for shard, other in zip(run.shards, at_once.shards, strict=True):  # the monitors' states too
        assert shard.watch is not None and other.watch is not None
        shard.watch.flush()  # what the windows still open hold
        assert _monitors(shard.watch) == _monitors(other.watch)


def _held(watch: FeatureWatch | None) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """Each model's last time fed and the ids of the events it holds."""
    assert watch is not None
    return {key: (model.last_time, model.held.ids if model.held else [])
            for key, model in watch._models.items()}


def _monitors(watch: FeatureWatch) -> dict[tuple[str, str], Any]:
    return {key: (model.last_time, _plain(model.bank.monitors) if model.bank else None)
            for key, model in watch._models.items()}


@pytest.mark.parametrize("held", [0, 64])
def test_a_block_of_floats_counts_only_its_valid_numbers_as_columns_do(held: int) -> None:
    """A model's floats given as one block (what a shard of many models hands the watch) count
    the values a dict of columns counts: NaN, infinities and values beyond the bound are not
    watched, whichever rows hold them, fed at once or held and fed as one batch."""
    rng = np.random.default_rng(7)
    n = 80
    x, y = rng.normal(size=n), rng.exponential(size=n)
    y[[3, 40, 77]] = [np.nan, np.inf, 1e101]  # only y has invalid values
    states = []
    for as_block in (False, True):
        watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=GRID_MS, batch_events=held)
        watch.add_profile(_profile(0, 10, 0))
        columns: Any = FloatBlock(("x", "y"), np.vstack([x, y])) if as_block else {"x": x, "y": y}
        for lo in range(0, n, 40):  # two groups of 40 (held: fed as one batch of 80 by the flush)
            part = FloatBlock(("x", "y"), columns.matrix[:, lo:lo + 40]) if as_block \
                else {name: column[lo:lo + 40] for name, column in columns.items()}
            watch.observe("m0", "1", list(range(lo, lo + 40)), [f"p{i}" for i in range(lo, lo + 40)],
                          [{"c": "a"}] * 40, part)
        watch.flush()
        monitors = watch._models[("m0", "1")].bank.monitors  # type: ignore[union-attr]
        assert (monitors["x"].n, monitors["y"].n) == (n, n - 3)
        states.append(_plain(monitors))
    assert states[0] == states[1]


def _held_blocks(profile: ReferenceProfile, names: tuple[str, ...],
                 blocks: list[np.ndarray]) -> tuple[list[tuple[str, str, int]], Any]:
    """A watch holding until 64 events fed model m's ``blocks`` of 16 events each (rows ``names``),
    as a shard of many models hands them, then flushed: (kind, feature, time) of its reports, and
    its monitors' state."""
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**9, batch_events=64)
    watch.add_profile(profile)
    reports = []
    for g, matrix in enumerate(blocks):
        times = list(range(g * 16, g * 16 + matrix.shape[1]))
        reports += watch.observe("m", "1", times, [f"p{t}" for t in times], [{}] * len(times),
                                 FloatBlock(names, matrix))
    for found in watch.flush().values():
        reports += found
    bank = watch._models[("m", "1")].bank
    assert bank is not None
    return [(r["kind"], r["feature"], r["event_time"]) for r in reports], _plain(bank.monitors)


@pytest.mark.skipif(watch_native._watch is None, reason="the C watch was not built")
def test_a_held_block_s_numeric_symbols_are_searched_in_one_call_leaving_the_same_monitors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's held block (as a shard of many models hands it) fed to FeatureWatch: the bank's
    numeric detectors' symbols are searched in one ``cells_rows`` call a batch, and the reports and
    monitors are those of the Python paths, with a feature holding a NaN left to its own search
    and a shift in one feature raising its episode."""
    rng = np.random.default_rng(21)
    names = ("d", "b", "a", "c")  # the block's rows in the events' order, the monitors' in names'
    profile = build_profile("m", "1", {n: rng.normal(size=3000) for n in names}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0, source="training")
    blocks = []
    for g in range(60):  # groups of 16 events, held until 64
        matrix = rng.normal(size=(len(names), 16))
        if g % 7 == 3:
            matrix[1, 5] = np.nan  # "b" is then no whole row of valid numbers: searched on its own
        if g >= 30:
            matrix[3] += 2.5  # "c" shifts: its monitor alarms and leaves the batch step
        blocks.append(matrix)

    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            calls.append(name)
            return getattr(watch_native._watch, name)

    monkeypatch.setattr(watch_native, "NATIVE", Counting())
    with_c = _held_blocks(profile, names, blocks)
    monkeypatch.setattr(watch_native, "NATIVE", watch_native._watch)
    with reference_paths():
        without = _held_blocks(profile, names, blocks)
    assert with_c == without
    assert ("opened", "c", with_c[0][0][2]) == with_c[0][0]  # the shift opened an episode
    assert calls.count("cells_rows") >= 10  # most batches' numeric symbols in one call


REAL_STREAMS = [("elec2.csv", ("nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")),
                ("noaa_weather.csv", tuple(f"feat_{i}" for i in range(1, 9)))]


@pytest.mark.skipif(watch_native._watch is None, reason="the C watch was not built")
@pytest.mark.parametrize(("name", "columns"), REAL_STREAMS)
def test_real_streams_held_as_blocks_give_the_reports_of_the_python_paths(
        name: str, columns: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Real streams that drift slowly, cycle daily and stay drifted (Elec2, NOAA weather; the first
    5,000 rows the training profile, the next 8,000 the traffic) handed to the watch as a shard of
    many models hands them, blocks of 16 events held until 64: the same reports and monitors with
    the C paths as with the Python ones, and episodes among them."""
    path = Path("/work/shared/data") / name
    if not path.exists():
        pytest.skip(f"needs {path}")
    with path.open() as f:
        rows = list(csv.DictReader(f))[:13_000]
    table = np.array([[float(row[c]) for c in columns] for row in rows]).T
    profile = build_profile("m", "1", {c: table[j, :5000] for j, c in enumerate(columns)}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0, source="training")
    traffic = table[:, 5000:]
    blocks = [np.ascontiguousarray(traffic[:, lo:lo + 16]) for lo in range(0, traffic.shape[1], 16)]

    searched: list[int] = []
    search = watch_native._watch.cells_rows

    def counted(edges: list[Any], matrix: Any, rows: list[int], out: Any) -> bool:
        searched.append(len(edges))
        return search(edges, matrix, rows, out)

    monkeypatch.setattr(watch_native._watch, "cells_rows", counted)
    with_c = _held_blocks(profile, columns, blocks)
    monkeypatch.undo()
    with reference_paths():
        without = _held_blocks(profile, columns, blocks)
    assert with_c == without
    assert any(kind == "opened" for kind, _, _ in with_c[0])
    assert len(searched) >= 10  # quiet stretches' batches took the one-call search


@pytest.mark.parametrize("odd_values", [False, True])
def test_runs_copied_out_together_are_the_parts_each_model_copies_out_alone(
        odd_values: bool, monkeypatch: pytest.MonkeyPatch, watch_feature_maps: FeatureMaps) -> None:
    """``settle_together`` (every held run at a ``RUN_EVENTS`` round, in one gather where the
    batches share a layout) leaves each model the parts its own ``settle`` would: the same values,
    in order, whatever models were fed between. With odd values the batches' layouts differ (a
    feature's value not a float moves it to the value lists), and each model settles alone."""
    models, times, ids, features = _stream(watch_feature_maps)
    if not odd_values:  # every x and y a float: one layout for every batch
        features = [{**f, "x": float(i % 7), "y": float(i % 5) / 3} for i, f in enumerate(features)]
    watches = [FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**9, batch_events=40)
               for _ in range(2)]
    for watch in watches:
        for m in range(MODELS):
            watch.add_profile(_profile(m, 10 + m, 0))
            watch.observe(f"m{m}", "1", [0], ["first"], [{"x": 0.0, "y": 1.0, "c": "a"}])  # its bank
    rng = np.random.default_rng(5)
    lo = 0
    while lo < 1500:
        hi = lo + int(rng.integers(1, 30))
        by_model: dict[int, list[int]] = {}
        for i in range(lo, hi):
            by_model.setdefault(models[i], []).append(i)
        for watch in watches:
            watch.observe_grouped(_grouped(by_model, times, ids, features))
        lo = hi
    helds = [[model.held for _, model in sorted(watch._models.items()) if model.held is not None]
             for watch in watches]
    assert len(helds[0]) >= 3 and sum(len(h.runs) > 3 for h in helds[0]) >= 2  # runs of many batches
    layouts = {(None if b.floats is None else b.floats.names, tuple(b.values))
               for h in helds[0] for b, _, _ in h.runs}
    assert (len(layouts) > 1) is odd_values
    counts = [held.count for held in helds[0]]  # the runs' events counted before they settle
    assert counts == [held.count for held in helds[1]]
    assert all(held.run_rows for held in helds[0])
    for held in helds[0]:
        held.settle()
    with monkeypatch.context() as patched:
        if not odd_values:  # the gather: no model settles alone
            patched.setattr(feature_watch._Held, "settle", lambda self: pytest.fail("settled alone"))
        feature_watch.settle_together(helds[1])
    assert all(not h.runs for h in helds[1])
    assert [len(h.times) for h in helds[0]] == [len(h.ids) for h in helds[1]] == counts
    assert [_plain(h.__getstate__()) for h in helds[0]] == [_plain(h.__getstate__()) for h in helds[1]]
    assert [[_plain(dict(part)) for part in h.numbers] for h in helds[0]] == \
        [[_plain(dict(part)) for part in h.numbers] for h in helds[1]]
