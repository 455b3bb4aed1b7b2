"""A published reference profile either is refused where it is parsed (the sink's one
``invalid_profile`` dead letter; every stage skips it) or the pipeline runs on it: never an
exception in the middle of a batch, which a worker would meet again at every restart (the profiles
topic is read from its start).

Found by mutating a profile's JSON: a malformed ``multivariate`` section or quantile sketch passed
the parse and raised later (IndexError, KeyError, TypeError, OverflowError); so did real training
tables, with no mutation: a sparse column (one value, or two equal ones) and a model that errs on
most predictions (a many-class model's error rate near 0.9).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from driftline.cli.replay import summary_lines
from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.multivariate import pack_array
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.seasonal import Season, fit_season
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.replay.engine import Replayer
from driftline.simulate.traffic import SimEvent
from driftline.store.writer import MemoryRowWriter

pytest.importorskip("sklearn")

START = 1_767_225_600_000
TRAINING_ROWS = 2_000
PREDICTIONS = 900
STEP_MS = 150  # 135 s of traffic: two 60-s windows close


def _settings() -> Settings:
    return Settings(windows={"sizes_s": [60], "allowed_lateness_s": 5, "metrics_interval_s": 60},
                    topics={"partitions": 2})


def _profile(columns: dict[str, list[Any]], *, multivariate: bool = True) -> dict[str, Any]:
    settings = _settings()
    numeric = {f: columns[f] for f in ("a", "b", "c")}
    section = multivariate_section(numeric, scores=columns["score"], labels=columns["y"]) if multivariate \
        else None
    made = build_profile("m", "1", columns, label_column="y", prediction_column="pred",
                         bins=settings.drift.bins, top_k=settings.drift.top_k, created_at_ms=0,
                         multivariate=section)
    parsed: dict[str, Any] = orjson.loads(made.model_dump_json())
    return parsed


def _training(rng: np.random.Generator, accuracy: float = 0.5) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {f: rng.normal(size=TRAINING_ROWS).tolist() for f in ("a", "b", "c")}
    columns["k"] = [str(v) for v in rng.integers(0, 4, TRAINING_ROWS)]
    columns["score"] = rng.random(TRAINING_ROWS).tolist()
    columns["pred"] = [s >= 0.5 for s in columns["score"]]
    right = rng.random(TRAINING_ROWS) < accuracy
    columns["y"] = [p if r else not p for p, r in zip(columns["pred"], right.tolist(), strict=True)]
    return columns


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return _profile(_training(np.random.default_rng(1)))


@pytest.fixture(scope="module")
def stream() -> list[RawRecord]:
    """Predictions of model m (three numeric features, a categorical one, a scored binary label)
    and their labels two seconds later; the label is the prediction half the time."""
    rng = np.random.default_rng(2)
    events = []
    for i in range(PREDICTIONS):
        t = START + i * STEP_MS
        score = float(rng.random())
        features = {**{f: float(rng.normal()) for f in ("a", "b", "c")}, "k": str(i % 5)}
        value = orjson.dumps({"prediction_id": f"p{i}", "model_id": "m", "timestamp": t, "features": features,
                              "prediction": {"label": score >= 0.5, "score": score}})
        events.append(SimEvent("predictions", f"p{i}".encode(), value, t))
        label = orjson.dumps({"prediction_id": f"p{i}", "model_id": "m", "label": bool(i % 2),
                              "timestamp": t + 2_000})
        events.append(SimEvent("labels", f"p{i}".encode(), label, t + 2_000))
    events.sort(key=lambda e: e.timestamp_ms)
    return logged_records(events, _settings())


def _run(stream: list[RawRecord], profile: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    pipeline = InProcessPipeline(_settings(), profiles=[orjson.dumps(profile)])
    for i in range(0, len(stream), 500):
        pipeline.feed(stream[i : i + 500])
    pipeline.finish(START + PREDICTIONS * STEP_MS + 120_000)
    return pipeline.rows


def _changed(profile: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``profile`` with the value at ``path`` replaced (``_DELETE``: removed)."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(profile))
    parent: Any = copy
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "reason"), [
    (("multivariate", "scores", "sorted", 0), pack_array(np.array([1.0])),
     "at least 2 sorted reference values"),
    (("multivariate", "reconstruction"), _DELETE, "KeyError: 'reconstruction'"),
    (("multivariate",), {"x": 1}, "multivariate section: KeyError"),
    (("multivariate", "sample", "b64"), -3, "multivariate section: TypeError"),
    (("multivariate", "sample", "shape"), [7], "multivariate section"),
    (("multivariate", "outliers", "quantile"), 1.5, "outlier quantile is not in (0, 1)"),
    (("multivariate", "features", 0), 0.5, "features are not distinct names"),
    (("multivariate", "seed"), -3, "seed is not in [0, 2**32)"),
    (("multivariate", "performance", "calibrations", 0, "values", 0), 1e300, "not probabilities"),
    (("features", "a", "sketch", "pos"), [3, 1, None], "sketch: TypeError"),
    (("features", "a", "sketch", "zero"), 1e300, "zero is not a non-negative integer"),
    (("features", "a", "sketch", "max_buckets"), -3, "max_buckets is not a non-negative integer"),
    (("features", "a", "sketch", "zero"), 2**63, "zero is not a non-negative integer (below 2**62)"),
    (("features", "b", "sketch", "alpha"), 0.5, "alpha must be the windows'"),
    (("prediction", "ref_counts", 0), -3, "none may be negative"),
])
def test_a_malformed_section_or_sketch_is_refused_with_its_reason(
        profile: dict[str, Any], path: tuple[str | int, ...], value: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ReferenceProfile.model_validate_json(orjson.dumps(_changed(profile, path, value)))
    assert reason in str(refused.value), str(refused.value)


def _paths(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every dict key's path in ``node`` and, of a list, its first and last item's."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*path, key)
            yield from _paths(child, (*path, key))
    elif isinstance(node, list) and node:
        for index in sorted({0, len(node) - 1}):
            yield (*path, index)
            yield from _paths(node[index], (*path, index))


_VALUES = [_DELETE, None, "x", -3, 0, 0.5, 1e300, {}, []]


def test_every_profile_the_checks_accept_runs_through_the_pipeline(
        profile: dict[str, Any], stream: list[RawRecord]) -> None:
    """Random one-value changes anywhere in the profile but its identity (seeded): those the parse
    accepts run through the whole pipeline without an exception. Longer draws of the same kind
    (the soak run below) found the failures the tests above pin."""
    _accepted_run(profile, stream, seed=11, runs=10)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("which", ["profile", "seasonal_profile"])
def test_many_changed_profiles_either_refused_or_run(
        request: pytest.FixtureRequest, stream: list[RawRecord], which: str, seed: int) -> None:
    """The CI draw, 30 times longer a seed, on a profile with a multivariate section and on a
    seasonal one."""
    _accepted_run(request.getfixturevalue(which), stream, seed=seed, runs=300)


def _accepted_run(profile: dict[str, Any], stream: list[RawRecord], *, seed: int, runs: int) -> None:
    draws = random.Random(seed)
    paths = [p for p in _paths(profile) if p[0] not in ("model_id", "model_version", "profile_id")]
    accepted = refused = 0
    while accepted < runs:
        path, value = draws.choice(paths), draws.choice(_VALUES)
        changed = _changed(profile, path, value)
        try:
            ReferenceProfile.model_validate_json(orjson.dumps(changed))
        except ValidationError:
            refused += 1
            continue
        accepted += 1
        try:
            rows = _run(stream, changed)
        except Exception as err:  # which change the checks let through, not only where it raised
            raise AssertionError(f"{path} = {value!r} passed the checks; the pipeline raised "
                                 f"{type(err).__name__}: {err}") from err
        assert rows["outcomes"]
    assert refused  # the draw reached the checks


@pytest.mark.parametrize("column", [
    [1.0] + [None] * (TRAINING_ROWS - 1),  # a sparse feature: one value in training
    [2.0, 2.0] + [None] * (TRAINING_ROWS - 2),  # two equal values: no change can be resolved
])
def test_a_sparse_training_column_keeps_its_window_scores_without_a_sequential_monitor(
        stream: list[RawRecord], column: list[float | None]) -> None:
    training = _training(np.random.default_rng(3))
    training["a"] = column
    rows = _run(stream, _profile(training, multivariate=False))
    assert {r["feature"] for r in rows["drift_scores"]} >= {"a", "b", "c", "k"}
    assert "a" not in {r["feature"] for r in rows.get("drift_alerts", [])}


def test_a_model_that_errs_on_most_predictions_is_monitored(stream: list[RawRecord]) -> None:
    """Training accuracy 5 % (a many-class model, say): the error-rate monitor's reference rate
    0.95 left its design no higher rate, and stage 2 raised at the model's first labelled interval."""
    profile = _profile(_training(np.random.default_rng(4), accuracy=0.05), multivariate=False)
    assert profile["baseline"]["accuracy"] < 0.1
    rows = _run(stream, profile)
    assert rows["model_metrics"] and rows["outcomes"]


@pytest.fixture(scope="module")
def seasonal_profile() -> dict[str, Any]:
    """A profile whose feature ``a`` follows a daily cycle (24 hourly slots)."""
    rng = np.random.default_rng(5)
    columns = _training(rng)
    times = [START - 14 * 86_400_000 + i * 600_000 for i in range(TRAINING_ROWS)]
    columns["a"] = [3 * float(np.sin(2 * np.pi * (t // 1000 % 86_400) / 86_400)) + float(rng.normal())
                    for t in times]
    season = fit_season({"a": columns["a"]}, times, Season(period_s=86_400, slots=24), bins=10)
    settings = _settings()
    made = build_profile("m", "1", columns, label_column="y", prediction_column="pred",
                         bins=settings.drift.bins, top_k=settings.drift.top_k, created_at_ms=0, season=season)
    parsed: dict[str, Any] = orjson.loads(made.model_dump_json())
    assert set(parsed["season"]["features"]) == {"a"}
    return parsed


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("mean", [0.0] * 23, "one value per slot"),
    ("std", [1.0], "one value per slot"),
    ("std", [0.0] * 24, "every slot needs a positive std"),
    ("n", [0] * 24, "every slot needs a positive std and training values"),
    ("residual", {"kind": "categorical", "categories": [], "ref_counts": [0], "n": 0},
     "residual profile needs 2 numbers"),
])
def test_a_seasonal_feature_needs_a_positive_scale_in_every_slot(
        seasonal_profile: dict[str, Any], field: str, value: Any, reason: str) -> None:
    """Standardising reads a level and a scale per slot: a short list raised an IndexError in the
    middle of a batch, a zero scale made every value infinite; a window's reference is drawn from
    the residual profile in proportion to the slots' counts (none: no array to draw)."""
    changed = _changed(seasonal_profile, ("season", "features", "a", field), value)
    with pytest.raises(ValidationError) as refused:
        ReferenceProfile.model_validate_json(orjson.dumps(changed))
    assert reason in str(refused.value), str(refused.value)


def test_a_replay_given_a_malformed_profile_says_why_in_a_dead_letter(
        profile: dict[str, Any], stream: list[RawRecord]) -> None:
    """The worker's sink writes a profile every stage skips to dead_letters; a replay (an
    in-process pipeline, no sink) skipped it silently, and its summary only said the model had no
    training profile. Now its rows and summary carry the same invalid_profile dead letter."""
    bad = _changed(profile, ("multivariate", "outliers", "quantile"), 1.5)
    writer = MemoryRowWriter()
    replayer = Replayer(_settings(), "bad-profile", writer,
                        profiles=[orjson.dumps(bad), orjson.dumps(profile)])
    replayer.feed(stream[:400])
    result = replayer.finish()
    [letter] = writer.rows["dead_letters"]
    assert letter["error_kind"] == "invalid_profile" and letter["model_id"] == "m"
    assert letter["source_topic"] == _settings().topics.profiles and letter["source_offset"] == 0
    assert "outlier quantile is not in (0, 1)" in letter["error_message"]
    assert result.dead_letters == {"invalid_profile": 1}
    assert any("invalid_profile 1" in line for line in summary_lines(result)), summary_lines(result)


def test_a_process_parses_a_profile_once_however_many_stages_read_it(
        profile: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Four stage-1 shards and stage 2 read the profile (and the pipeline checks it first, as the
    sink does): with the checks a parse costs milliseconds, so the process parses it once."""
    parses = []
    parse = ReferenceProfile.model_validate_json

    def counted(value: bytes) -> ReferenceProfile:
        parses.append(value)
        return parse(value)

    # bytes no other test parses: an object another test's pipeline still holds would be found
    # (in the suite, one was: no parse at all)
    blob = orjson.dumps(_changed(profile, ("created_at_ms",), 1_234_567))
    monkeypatch.setattr(ReferenceProfile, "model_validate_json", counted)
    settings = Settings(windows={"sizes_s": [60]}, topics={"partitions": 4})
    pipeline = InProcessPipeline(settings, profiles=[blob])
    assert len(pipeline.shards) == 4 and len(parses) == 1
