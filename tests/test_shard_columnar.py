"""The columnar stage 1 against the row path (its reference for one release): on the same logs, in the
same batches, every shard emits the same messages (topic, key, value, partition) in the same order,
and stage 2 writes the same rows; also across a snapshot/restore in mid-stream."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import ShardFactory
from driftline.pipeline.stage import OutboundMessage
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

T0 = 1_767_225_600_000
PARTITIONS = 2


def _settings(partitions: int = PARTITIONS) -> Settings:
    return Settings(
        topics={"partitions": partitions, "model_events_partitions": 2},
        windows={"sizes_s": [60, 300], "allowed_lateness_s": 5, "metrics_interval_s": 60,
                 "segment_keys": ["region", "tier"], "max_future_skew_s": 30},
        join={"label_horizon_s": 120},
    )


Shipped = list[tuple[str, bytes | None, bytes, int | None]]


class RecordingPipeline(InProcessPipeline):
    """Keeps every message a stage emits (both stages, in the order the pipeline routes them)."""

    shipped: Shipped

    def _route(self, messages: list[OutboundMessage]) -> None:
        self.shipped.extend((m.topic, m.key, m.value, m.partition) for m in messages)
        super()._route(messages)


class Run:
    """A pipeline whose shards take the row or the columnar path."""

    def __init__(self, settings: Settings, columnar: bool, profiles: Sequence[bytes] = ()) -> None:
        self.settings = settings
        self.columnar = columnar
        RecordingPipeline.shipped = []  # the profiles' messages, during __init__
        self.pipeline = RecordingPipeline(settings, profiles=profiles)
        self.pipeline.shipped = []
        for shard in self.pipeline.shards:
            shard.columnar = columnar

    @property
    def shipped(self) -> Shipped:
        return self.pipeline.shipped

    def restore(self, columnar: bool | None = None) -> None:
        """Every shard from its checkpoint, on the same path or on ``columnar``'s."""
        if columnar is not None:
            self.columnar = columnar
        factory = ShardFactory(self.settings, columnar=self.columnar)
        for p, shard in enumerate(self.pipeline.shards):
            self.pipeline.shards[p] = factory.restore(p, shard.snapshot())

    def feed(self, records: Sequence[RawRecord]) -> None:
        self.pipeline.feed(records)


def _both(settings: Settings, batches: Sequence[Sequence[RawRecord]], restore_at: int | None,
          end_ms: int, profiles: Sequence[bytes] = ()) -> tuple[Run, Run]:
    runs = Run(settings, False, profiles), Run(settings, True, profiles)
    feed_runs(runs, batches, restore_at, end_ms)
    return runs


def feed_runs(runs: Sequence[Run], batches: Sequence[Sequence[RawRecord]], restore_at: int | None,
              end_ms: int) -> None:
    """Each run fed ``batches`` in turn, restored from its checkpoint before batch ``restore_at``,
    then finished at ``end_ms``."""
    for run in runs:
        for i, batch in enumerate(batches):
            if i == restore_at:
                run.restore()
            run.feed(batch)
        run.pipeline.finish(end_ms)


def assert_same(row: Run, columnar: Run) -> None:
    assert [s[0] for s in columnar.shipped] == [s[0] for s in row.shipped]  # topics first: a short diff
    for want, got in zip(row.shipped, columnar.shipped, strict=True):
        assert got == want
    assert dict(columnar.pipeline.rows) == dict(row.pipeline.rows)
    for a, b in zip(row.pipeline.shards, columnar.pipeline.shards, strict=True):
        assert a.totals == b.totals
        assert (a.pred_watermark, a.label_watermark) == (b.pred_watermark, b.label_watermark)
        assert (a.rerouted, a.join_inputs) == (b.rerouted, b.join_inputs)


# -- randomized logs ---------------------------------------------------------------------------------

VARIANTS = ["ok"] * 12 + ["malformed", "schema", "non_finite", "future", "late", "nan_feature", "rfc3339",
                          "huge_int"]


ODD_NUMBERS = ["3.5", True, False, None, 2, 2**60 + 1]
"""Values a numeric feature may hold that the decoder's float64 columns do not: a column holding one
is read from the feature maps (a string or a bool as NaN, None missing, ints as numbers)."""


UNIFORM_OUTPUTS = [("label", "score"), ("score",), ("value",), ("label",), ("label", "score", "value")]
"""Key sets of a log whose prediction outputs all have one (:func:`logs` ``uniform``): the batch
decoder keeps such a batch's outputs as columns (``OutputColumns``), read by the join, the windows
and the multivariate scores instead of an object per output."""


@st.composite
def _uniform_output(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any]:
    values = {"label": st.sampled_from(["yes", "no", 1, 0, True]),
              "score": st.one_of(st.floats(0, 1), st.sampled_from([0, 1, None])),
              "value": st.one_of(st.floats(-1e3, 1e3), st.integers(-5, 5), st.none())}
    return {name: draw(values[name]) for name in names}


SPECIAL_FLOATS = [-0.0, 0.0, 5e-324, -1.5e-310, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1]
"""Floats whose bits a packing could lose: signed zero, subnormals, the extremes."""
SPELLINGS = ["plain"] * 4 + ["reordered", "blank", "repeated", "escaped"]
"""How a feature object may be written (:func:`_spelled_features`): the decoder reads a batch of one
spelling as value rows only when every object names the same keys in the same order, once each."""
_FEATURES_AT = "@features@"  # where a log's prediction gets its spelled feature object


def _spelled_features(features: dict[str, Any], spelling: str) -> bytes:
    """``features`` as a JSON object: ``plain`` as orjson writes it; ``reordered`` the keys in the
    other order; ``blank`` a blank before each colon; ``repeated`` ``x`` twice (the last value counts,
    at the first one's place); ``escaped`` the key ``x`` written as an escape."""
    items = list(features.items())
    if spelling == "reordered":
        items.reverse()
    parts = [orjson.dumps(k) + (b" :" if spelling == "blank" else b":") + orjson.dumps(v) for k, v in items]
    if spelling == "repeated":
        parts.insert(0, b'"x":0.5')
    elif spelling == "escaped":
        parts = [b'"\\u0078":' + orjson.dumps(v) if k == "x" else part
                 for (k, v), part in zip(items, parts, strict=True)]
    return b"{" + b",".join(parts) + b"}"


@st.composite
def logs(draw: st.DrawFn, mixed: bool = False, uniform: bool = False,
         spelled: bool = False, missing: bool = False) -> tuple[list[RawRecord], int]:
    """Predictions and labels of two models (two versions, segments), ids from a small pool (exact and
    conflicting duplicates), times drifting forward with jitter (out of order, some late), and every
    kind of bad record, each on a random partition (so many are re-routed to the joining shard).
    ``mixed``: in some logs the numeric feature ``x`` sometimes holds a value of :data:`ODD_NUMBERS`;
    ``k`` is in every event, none or some (one layout per batch is what gives the decoder's columns).
    ``uniform``: every prediction's output has the key set of one of :data:`UNIFORM_OUTPUTS`.
    ``spelled``: no bad record, a long-named feature, ``k`` and a segment in every event,
    ``x`` often one of :data:`SPECIAL_FLOATS`, ``c`` a text with a colon or a quote in it, and the
    feature objects written one of :data:`SPELLINGS` ways (one spelling per log, or one per event:
    any, or in either key order). ``missing``: no bad record, ``k`` in every event, and ``x`` missing
    (None) in about one prediction in four: a float column with missing values."""
    n = draw(st.integers(1, 80))
    output_names = draw(st.sampled_from(UNIFORM_OUTPUTS)) if uniform else None
    with_k = draw(st.sampled_from(["always", "never", "some"])) if mixed else \
        "always" if spelled or missing else "some"
    spelling = draw(st.sampled_from([*SPELLINGS, "either order", "either order", "any"])) if spelled \
        else "plain"
    odd = mixed and draw(st.booleans())
    # clean logs: whole-batch columns
    variants = ["ok"] if spelled or missing or ((mixed or uniform) and draw(st.booleans())) else VARIANTS
    records: list[RawRecord] = []
    offsets = [[0, 0] for _ in range(PARTITIONS)]
    clock = T0
    for _ in range(n):
        clock += draw(st.integers(0, 20_000))
        is_label = draw(st.integers(0, 2)) == 0
        pid = f"p{draw(st.integers(0, 25))}"
        ts = clock + draw(st.integers(-8_000, 3_000))
        variant = draw(st.sampled_from(variants))
        record_ts = ts
        if variant == "late":
            ts -= draw(st.integers(6_000, 200_000))
            record_ts = ts
        elif variant == "future":
            record_ts = ts - 60_000
        model = draw(st.sampled_from(["m", "n"]))
        if is_label:
            body: dict[str, Any] = {"prediction_id": pid, "timestamp": ts,
                                    "label": draw(st.sampled_from(["yes", "no", 1, 0, True, 2.5]))}
            if draw(st.booleans()):
                body["model_id"] = model
        else:
            x: Any = draw(st.floats(-5, 5))
            if odd and draw(st.integers(0, 9)) == 0:
                x = draw(st.sampled_from(ODD_NUMBERS))
            if spelled and draw(st.booleans()):
                x = draw(st.sampled_from(SPECIAL_FLOATS))
            if missing and draw(st.integers(0, 3)) == 0:
                x = None
            texts = ["a", "b", True, "p: q", 'u","v'] if spelled else ["a", "b", True]
            features: dict[str, Any] = {"x": x, "c": draw(st.sampled_from(texts))}
            if spelled:  # first, a name past 8 bytes (the decoder reads key bytes a word at a time)
                features = {"a name past 8 bytes": draw(st.floats(-5, 5)), **features}
            if with_k == "always" or (with_k == "some" and draw(st.booleans())):
                features["k"] = draw(st.integers(-3, 3))
            output = draw(st.sampled_from([{"label": "yes", "score": 0.75}, {"label": "no"}, {"score": 0.25},
                                           3.5, "yes", {"probabilities": {"yes": 0.5, "no": 0.5}}])) \
                if output_names is None else draw(_uniform_output(output_names))
            body = {"prediction_id": pid, "model_id": model, "timestamp": ts,
                    "features": _FEATURES_AT if spelled else features,
                    "model_version": draw(st.sampled_from(["1", "2"])), "prediction": output,
                    "latency_ms": draw(st.sampled_from([None, 3, 12.5]))}
            segment = draw(st.sampled_from([{}, {"region": "eu"}, {"region": "us", "tier": "gold"},
                                            {"x": "y"}]))
            if segment or spelled:  # (spelled: in every event, so that batches keep one shape)
                body["segment"] = segment
        value = orjson.dumps(body)
        if spelled and not is_label:
            written = draw(st.sampled_from(SPELLINGS)) if spelling == "any" else \
                draw(st.sampled_from(["plain", "reordered"])) if spelling == "either order" else spelling
            value = value.replace(orjson.dumps(_FEATURES_AT), _spelled_features(features, written))
        if variant == "malformed":
            value = value[: len(value) // 2]
        elif variant == "schema":
            value = value.replace(b'"timestamp"', b'"time"')
        elif variant == "non_finite":
            value = value.replace(b'"timestamp"', b'"latency_ms":NaN,"timestamp"') if not is_label else \
                value.replace(b'"label":', b'"label":Infinity,"x":')
        elif variant == "nan_feature" and not is_label:
            value = value.replace(b'"features":{', b'"features":{"nan":NaN,')
        elif variant == "rfc3339":
            value = value.replace(f'"timestamp":{ts}'.encode(), b'"timestamp":"2026-01-01T00:10:00Z"')
        elif variant == "huge_int" and not is_label:
            value = value.replace(b'"features":{', b'"features":{"h":123456789012345678901234567890,')
        partition = draw(st.integers(0, PARTITIONS - 1))
        topic = f"driftline.{'labels' if is_label else 'predictions'}"
        if records and draw(st.integers(0, 7)) == 0:  # an exact re-send of an earlier record
            earlier = draw(st.sampled_from(records))
            topic, value, record_ts, pid = earlier.topic, earlier.value or b"", earlier.timestamp_ms, \
                (earlier.key or b"").decode()
            is_label = topic.endswith("labels")
        kind = 1 if is_label else 0
        records.append(RawRecord(topic, partition, offsets[partition][kind], record_ts, pid.encode(), value))
        offsets[partition][kind] += 1
    return records, clock + 400_000


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(), cuts=st.lists(st.integers(0, 80), max_size=6), restore=st.integers(-1, 6))
def test_columnar_path_emits_what_the_row_path_emits(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int
) -> None:
    records, end_ms = log
    settings_ = _settings()
    assert settings_.topics.predictions == "driftline.predictions"
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    row, columnar = _both(settings_, batches, restore if restore >= 0 else None, end_ms)
    assert_same(row, columnar)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(uniform=True), cuts=st.lists(st.integers(0, 80), max_size=6), restore=st.integers(-1, 6),
       partitions=st.sampled_from([1, PARTITIONS]))
def test_outputs_kept_as_columns_give_what_the_row_path_gives(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int, partitions: int
) -> None:
    """Outputs of one key set (class labels, scores, regression values as ints or floats, nulls): the
    columnar path reads them as the decoder's columns (the join's pending records, the windows'
    label and value columns, an output held until a label claims it), the row path as objects."""
    records, end_ms = log
    if partitions == 1:
        offsets: dict[str, int] = {}
        for i, record in enumerate(records):
            offsets[record.topic] = offsets.get(record.topic, -1) + 1
            records[i] = dataclasses.replace(record, partition=0, offset=offsets[record.topic])
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    row, columnar = _both(_settings(partitions), batches, restore if restore >= 0 else None, end_ms)
    assert_same(row, columnar)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(uniform=True, spelled=True), cuts=st.lists(st.integers(0, 80), max_size=6),
       restore=st.integers(-1, 6), partitions=st.sampled_from([1, PARTITIONS]), detectors=st.booleans())
def test_feature_rows_give_what_the_feature_maps_give(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int, partitions: int, detectors: bool
) -> None:
    """Feature objects of one layout are read as value rows, no dict per event (the join packs its
    records from the float columns; a late event's row, a held label's claim or a re-routed event
    reads an event's map): signed zeros, subnormals and extremes, texts with a colon or a quote,
    keys written in another order, with blanks, twice or escaped (then read as dicts), on one or
    two partitions (the joining shard takes part of a batch), with or without the detectors."""
    records, end_ms = log
    if partitions == 1:
        offsets: dict[str, int] = {}
        for i, record in enumerate(records):
            offsets[record.topic] = offsets.get(record.topic, -1) + 1
            records[i] = dataclasses.replace(record, partition=0, offset=offsets[record.topic])
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    settings_ = _settings(partitions)
    settings_.sequential.false_alarms_per_million, settings_.sequential.learning = 1e5, 100
    row, columnar = _both(settings_, batches, restore if restore >= 0 else None, end_ms,
                          _detector_profiles() if detectors else ())
    assert_same(row, columnar)


def _detector_profiles() -> list[bytes]:
    """Training profiles of both models and versions of :func:`logs`: ``x`` far off the logs'
    values (so the detectors alarm within a few events and report episodes), ``k`` and ``c`` near."""
    rng = np.random.default_rng(7)
    table = {"x": rng.normal(8.0, 0.5, 2000), "k": rng.integers(-3, 4, 2000).tolist(),
             "c": rng.choice(["a", "b", "true"], 2000, p=[0.8, 0.1, 0.1]).tolist()}
    return [build_profile(model, version, table, label_column=None, prediction_column=None, bins=10,
                          top_k=5, created_at_ms=0).model_dump_json().encode()
            for model in ("m", "n") for version in ("1", "2")]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(mixed=True), cuts=st.lists(st.integers(0, 80), max_size=6), restore=st.integers(-1, 6))
def test_detectors_read_the_decoder_columns_as_the_feature_maps(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int
) -> None:
    """The sequential detectors on: the columnar path hands them the decoder's float64 columns where
    a batch's numeric feature is all floats, the feature maps where a value is a string, a bool, None
    or an integer; the episode reports are the row path's."""
    row, columnar = _both_with_detectors(log, cuts, restore)
    assert all(shard.watch is not None and shard.watch.models for shard in columnar.pipeline.shards)
    assert_same(row, columnar)


def _both_with_detectors(log: tuple[list[RawRecord], int], cuts: list[int], restore: int) -> tuple[Run, Run]:
    """:func:`_both` of ``log`` cut at ``cuts`` (restored before batch ``restore``, if not negative)
    with :func:`_detector_profiles` and detectors that alarm within the few events a log holds per
    model: episodes open, report and learn."""
    records, end_ms = log
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    settings_ = _settings()
    settings_.sequential.false_alarms_per_million, settings_.sequential.learning = 1e5, 100
    return _both(settings_, batches, restore if restore >= 0 else None, end_ms, _detector_profiles())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(missing=True), cuts=st.lists(st.integers(0, 80), max_size=6), restore=st.integers(-1, 6))
def test_detectors_read_a_float_column_with_missing_values_as_the_feature_maps(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int
) -> None:
    """A numeric feature with a missing value (None) among floats: the columnar path hands both
    detectors its floats with NaN for the missing ones (shard._detector_floats; a batch of many
    models converts it once), where they read None as NaN themselves; the reports are the row path's."""
    assert_same(*_both_with_detectors(log, cuts, restore))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(), cuts=st.lists(st.integers(0, 80), max_size=6))
def test_one_partition_columnar_path_emits_what_the_row_path_emits(
    log: tuple[list[RawRecord], int], cuts: list[int]
) -> None:
    """One partition: nothing is re-routed, so the join's batch entries take the batch's whole
    columns (the path two partitions never reach)."""
    records, end_ms = log
    offsets: dict[str, int] = {}
    single = []
    for record in records:
        offsets[record.topic] = offsets.get(record.topic, -1) + 1
        single.append(dataclasses.replace(record, partition=0, offset=offsets[record.topic]))
    bounds = sorted({0, len(single), *(c for c in cuts if c < len(single))})
    batches = [single[a:b] for a, b in itertools.pairwise(bounds)]
    row, columnar = _both(_settings(1), batches, None, end_ms)
    assert_same(row, columnar)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(), cut=st.integers(0, 80))
def test_a_row_path_checkpoint_continues_on_the_columnar_path(
    log: tuple[list[RawRecord], int], cut: int
) -> None:
    """The upgrade: shards checkpointed by the row path restore into the columnar one and go on
    emitting exactly what the row path would have."""
    records, end_ms = log
    row, upgraded = Run(_settings(), False), Run(_settings(), False)
    for run in (row, upgraded):
        run.feed(records[:cut])
    row.restore()
    upgraded.restore(columnar=True)
    for run in (row, upgraded):
        run.feed(records[cut:])
        run.pipeline.finish(end_ms)
    assert all(shard.columnar for shard in upgraded.pipeline.shards)
    assert_same(row, upgraded)


# -- a simulated workload with sequential detectors watching -----------------------------------------


def test_simulated_drift_with_detectors_matches() -> None:
    """Two models (one with a challenger version), segments, drift, malformed records, late labels,
    full windows (several accumulation chunks), and the sequential detectors fed from both paths."""
    scenario = Scenario(
        seed=5, start=T0, duration_s=600, rate=20.0, malformed_rate=0.03, label_coverage=0.8,
        label_delay=LabelDelay(median_s=20, max_s=200),
        segments={"region": {"eu": 0.6, "us": 0.4}},
        models=[ModelSpec(model_id="a", n_numeric=4, n_categorical=2, challenger=True,
                          covariate_drift=[CovariateDrift(feature="x0", at_s=300, magnitude=2.0)]),
                ModelSpec(model_id="b", n_numeric=2, n_categorical=1)],
    )
    settings_ = _settings()
    settings_.windows.segment_keys = ["region"]
    records = logged_records(generate(scenario), settings_)
    train = scenario.model_copy(update={"seed": 6, "malformed_rate": 0.0})
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        train, settings_.drift.bins, settings_.drift.top_k, effective_from_ms=0)]
    batches = [records[i : i + 700] for i in range(0, len(records), 700)]
    row, columnar = _both(settings_, batches, 4, T0 + 900_000, profiles)
    assert_same(row, columnar)
    assert any(s[0] == settings_.topics.model_events for s in row.shipped)
    assert sum(shard.totals["episode_reports"] for shard in row.pipeline.shards) >= 0
    assert all(shard.watch is not None and shard.watch.models for shard in columnar.pipeline.shards)
    # the training profiles carry the multivariate section: its windows were compared too
    assert all(s.multivariate is not None and s.multivariate.models for s in columnar.pipeline.shards)
    assert row.pipeline.rows["multivariate_drift"] and row.pipeline.rows["outlier_rate"]


def test_models_of_one_layout_give_each_multivariate_watch_its_own_rows() -> None:
    """Two models with the same feature names: a batch holds both, its float64 columns are the
    decoder's, and each model's multivariate (and univariate) watch reads its own events' rows of them."""
    scenario = Scenario(
        seed=8, start=T0, duration_s=300, rate=20.0, malformed_rate=0.0, label_coverage=0.5,
        label_delay=LabelDelay(median_s=20, max_s=100),
        models=[ModelSpec(model_id="a", n_numeric=3, n_categorical=1,
                          covariate_drift=[CovariateDrift(feature="x0", at_s=150, magnitude=2.0)]),
                ModelSpec(model_id="b", n_numeric=3, n_categorical=1)],
    )
    settings_ = _settings()
    records = logged_records(generate(scenario), settings_)
    train = scenario.model_copy(update={"seed": 9})
    profiles = [p.model_dump_json().encode() for p in training_profiles(
        train, settings_.drift.bins, settings_.drift.top_k, effective_from_ms=0)]
    batches = [records[i : i + 500] for i in range(0, len(records), 500)]
    row, columnar = _both(settings_, batches, None, T0 + 600_000, profiles)
    assert_same(row, columnar)
    assert all(s.multivariate is not None and s.multivariate.models for s in columnar.pipeline.shards)
    assert row.pipeline.rows["multivariate_drift"]


def test_a_checkpoint_with_list_window_buffers_restores() -> None:
    """Checkpoints written before column blocks hold each window's buffered events as (features,
    predictions, latencies) lists: they restore into blocks that add up to the same statistics."""
    from driftline.operators.window_stats import WindowAccumulator, WindowBuffer
    from driftline.pipeline.records import WindowKey
    from driftline.pipeline.shard import ACCUMULATE_CHUNK, ShardProcessor
    from driftline.pipeline.state import dump_state
    from driftline.schemas.events import Prediction

    feats: list[dict[str, Any]] = [{"x": i / 3, "c": "ab"[i % 2]} if i % 5 else {"x": None}
                                   for i in range(50)]
    preds = [Prediction(label=i % 3, score=i / 50) for i in range(50)]
    lats: list[float | None] = [None if i % 4 else float(i) for i in range(50)]
    settings_ = _settings()
    shard = ShardProcessor(0, settings_)
    key = WindowKey(60_000, T0, "m", "1", "")
    shard.open[key] = WindowAccumulator()
    shard.buffered = {key: (list(feats), list(preds), list(lats))}  # type: ignore[dict-item]
    restored = ShardProcessor.restore(dump_state(shard), settings_)
    buffer = restored.buffered[key]
    assert isinstance(buffer, WindowBuffer) and len(buffer) == 50
    buffer.drain(restored.open[key], ACCUMULATE_CHUNK, final=True)
    want = WindowAccumulator()
    want.add(feats, preds, lats)
    assert repr(restored.open[key].to_partial()) == repr(want.to_partial())


# -- staging (shard.STAGE_EVENTS) ------------------------------------------------------------------


@contextmanager
def staging(events: int) -> Iterator[None]:
    saved = shard_module.STAGE_EVENTS
    shard_module.STAGE_EVENTS = events
    try:
        yield
    finally:
        shard_module.STAGE_EVENTS = saved


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs(), cuts=st.lists(st.integers(0, 80), max_size=8), restore=st.integers(-1, 8),
       stage=st.integers(1, 40))
def test_staged_batches_emit_what_the_row_path_emits(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int, stage: int
) -> None:
    """Any threshold (a flush mid-stream, at a close, at a checkpoint) and any batching: the
    columnar path's messages and rows are the row path's (which never stages)."""
    records, end_ms = log
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    settings_ = _settings()
    with staging(stage):
        runs = Run(settings_, False), Run(settings_, True)
        feed_runs(runs, batches, restore if restore >= 0 else None, end_ms)
    assert_same(*runs)


def _many_models_log() -> list[RawRecord]:
    models = [ModelSpec(model_id=f"m{k:02d}", traffic_share=1 / (k + 1), n_numeric=3, n_categorical=1)
              for k in range(12)]
    scenario = Scenario(seed=3, start=T0, duration_s=200, rate=20, models=models)
    return logged_records(generate(scenario), _settings())


def test_a_batch_is_staged_until_a_window_can_close_and_a_checkpoint_buffers_it() -> None:
    """Events no window closing now needs wait staged (a gauge says how many); a snapshot holds
    them in their windows, and a shard restored from it closes those windows as the live one."""
    records = [r for r in _many_models_log() if r.partition == 0]
    predictions = [r for r in records if r.topic == "driftline.predictions"]
    first_minute = [r for r in predictions if r.timestamp_ms < T0 + 50_000]
    settings_ = _settings()
    shard = InProcessPipeline(settings_, "r").shards[0]
    shard.process(first_minute[: len(first_minute) // 2])
    shard.process(first_minute[len(first_minute) // 2:])
    staged = {g.name: g.value for g in shard.gauges()}["staged_window_events"]
    assert staged == len(first_minute) and not shard.open  # two batches staged, no window yet
    restored = ShardFactory(settings_, "r").restore(0, shard.snapshot())
    assert {g.name: g.value for g in shard.gauges()}["staged_window_events"] == 0
    assert sorted(shard.open) == sorted(restored.open) and len(shard.open) > 4  # models x 2 sizes
    rest = [r for r in predictions if r.timestamp_ms >= T0 + 50_000]
    assert shard.process(rest) == restored.process(rest)  # the windows they held closed alike


def test_staged_events_past_the_threshold_go_to_their_windows() -> None:
    """The stage is bounded: past ``STAGE_EVENTS`` counted events the batches are buffered."""
    records = [r for r in _many_models_log() if r.partition == 0 and r.topic == "driftline.predictions"]
    batch = [r for r in records if r.timestamp_ms < T0 + 50_000][:40]
    with staging(len(batch) + 1):
        shard = InProcessPipeline(_settings(), "r").shards[0]
        shard.process(batch)
        assert shard._staged_events == len(batch) and not shard.open
        shard.process(records[len(batch): len(batch) + 1])
        assert shard._staged_events == 0 and shard.open



def test_a_finished_input_leaves_open_the_windows_the_row_path_leaves_open() -> None:
    """A bounded input's end (a replay lists the windows it leaves partial): windows whose events
    were still staged are open, as on the row path, whichever batch brought their events."""
    predictions = [r for r in _many_models_log() if r.topic == "driftline.predictions"]
    early = [r for r in predictions if r.timestamp_ms < T0 + 60_000]
    mid = [r for r in predictions if T0 + 60_000 <= r.timestamp_ms < T0 + 70_000]
    later = [r for r in predictions if T0 + 125_000 <= r.timestamp_ms < T0 + 130_000]
    runs = Run(_settings(), False), Run(_settings(), True)
    for run in runs:
        run.feed(early)
        run.feed(mid)  # the first minute's windows close: what was staged is buffered
        run.feed(later)  # windows that end after the input only: staged, no close due for them
        run.pipeline.finish(T0 + 130_000)
    row, columnar = (sorted(key for shard in run.pipeline.shards for key in shard.open) for run in runs)
    assert columnar == row and any(key.start == T0 + 120_000 for key in row)
    assert_same(*runs)
