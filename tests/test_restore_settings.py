"""Checkpoints hold state, not configuration: a restored stage runs with today's settings."""

from __future__ import annotations

import logging
import pickle
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings, load_settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.model import ModelFactory, ModelProcessor
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.pipeline.state import STATE_FORMAT, StateRestoreError, dump_state
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

START = (int(time.time()) // 86_400 - 1) * 86_400_000
DRIFT_AT_S = 600


def _base(**env_like: Any) -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=120),
        **env_like,
    )


@pytest.fixture(scope="module")
def records() -> list[RawRecord]:
    scenario = Scenario(
        seed=5, start=START, duration_s=1200, rate=20,
        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1,
                          covariate_drift=[CovariateDrift(feature="x1", at_s=DRIFT_AT_S, magnitude=2.0)])],
        label_delay=LabelDelay(median_s=5, max_s=60),
    )
    return logged_records(generate(scenario), _base())


def _run(settings: Settings, records: list[RawRecord], restart: tuple[int, Settings] | None = None,
         ) -> InProcessPipeline:
    """Feed in batches of 1000; at record index ``restart[0]`` checkpoint every processor and
    restore it (as the runner does, through the factories) with the settings ``restart[1]``."""
    pipeline = InProcessPipeline(settings, "r")
    for i in range(0, len(records), 1000):
        if restart is not None and i == restart[0]:
            today = restart[1]
            shards, models = ShardFactory(today, "r"), ModelFactory(today, "r")
            pipeline.shards = [shards.restore(p, s.snapshot()) for p, s in enumerate(pipeline.shards)]
            pipeline.models = [models.restore(q, m.snapshot()) for q, m in enumerate(pipeline.models)]
        pipeline.feed(records[i : i + 1000])
    return pipeline


def _drift_triggers(pipeline: InProcessPipeline) -> list[int]:
    return [t["window_end"] for t in map(orjson.loads, pipeline.triggers) if t["reason"] == "drift"]


def test_restart_applies_changed_fdr_and_drift_k_from_the_environment(
    records: list[RawRecord], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    yesterday = _base(drift={"fdr_q": 0.01}, triggers={"drift_k": 4, "drift_n": 4})
    monkeypatch.setenv("DRIFTLINE_DRIFT_FDR_Q", "0.2")
    monkeypatch.setenv("DRIFTLINE_TRIGGERS_DRIFT_K", "1")
    monkeypatch.setenv("DRIFTLINE_TRIGGERS_DRIFT_N", "4")
    from_env = load_settings()
    today = _base(drift=from_env.drift, triggers=from_env.triggers)
    assert (today.drift.fdr_q, today.triggers.drift_k) == (0.2, 1)
    restart_at = 12_000  # ~ 300 s of traffic: before the drift
    assert records[restart_at].timestamp_ms < START + DRIFT_AT_S * 1000

    with caplog.at_level(logging.WARNING, logger="driftline.pipeline.state"):
        restarted = _run(yesterday, records, (restart_at, today))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4  # one per restored shard of each stage
    assert all("drift.fdr_q 0.01 -> 0.2" in w and "triggers.drift_k 4 -> 1" in w for w in warnings)
    assert all(today.config_hash() in w for w in warnings)

    for model in restarted.models:
        assert model.settings.drift.fdr_q == 0.2 and model.policy.cfg.drift_k == 1
    # the first drifted window fires at once (k = 1), as a run with today's settings throughout,
    # not three windows later as yesterday's settings would
    throughout = _run(today, records)
    assert _drift_triggers(restarted) == _drift_triggers(throughout) != []
    assert _drift_triggers(restarted)[0] < _drift_triggers(_run(yesterday, records))[0]
    # every window closed after the restart is scored with today's FDR and carries today's hash
    cut = records[restart_at].timestamp_ms
    after = [r for r in restarted.rows["drift_scores"] if r["window_end"] > cut]
    assert after and {r["config_hash"] for r in after} == {today.config_hash()}
    expected = [r for r in throughout.rows["drift_scores"] if r["window_end"] > cut]
    key = lambda r: (r["window_start"], r["feature"])  # noqa: E731
    assert sorted(after, key=key) == sorted(expected, key=key)


def test_unchanged_settings_restore_silently_and_checkpoints_hold_no_settings(
    records: list[RawRecord], caplog: pytest.LogCaptureFixture
) -> None:
    settings = _base(kafka={"sasl_password": "s3cret-in-settings"})
    with caplog.at_level(logging.WARNING, logger="driftline.pipeline.state"):
        _run(settings, records[:6000], (3000, settings))
    assert caplog.records == []
    model = ModelProcessor(0, settings)
    blob = model.snapshot()
    assert blob[:6] == b"DLST" + bytes([STATE_FORMAT]) + b"z"  # small: zlib
    assert b"s3cret-in-settings" not in zlib.decompress(blob[6:])
    assert "settings" not in pickle.loads(zlib.decompress(blob[6:])).__dict__


def test_state_format_1_restores_and_unknown_formats_fail_with_one_line() -> None:
    yesterday = _base(drift={"fdr_q": 0.01})
    today = _base(drift={"fdr_q": 0.05})
    legacy_model = ModelProcessor(1, yesterday)
    legacy_model.__dict__.pop("settings_record")  # format 1 had no record, but its settings
    legacy_blob = zlib.compress(pickle.dumps(_Format1(legacy_model), protocol=5))
    restored = ModelFactory(today).restore(1, legacy_blob)
    assert restored.settings.drift.fdr_q == 0.05 and restored.config_hash == today.config_hash()

    shard = ShardProcessor(0, today)
    newer = b"DLST" + bytes([STATE_FORMAT + 1]) + dump_state(shard)[5:]
    cases = ((newer, f"state format {STATE_FORMAT + 1}, newer than this driftline's"),
             (b"DLST" + bytes([STATE_FORMAT]) + b"garbage", "cannot restore its checkpoint"),
             (ModelProcessor(0, today).snapshot(), "holds a ModelProcessor, not a ShardProcessor"))
    for blob, expected in cases:
        with pytest.raises(StateRestoreError) as err:
            ShardFactory(today).restore(0, blob)
        message = str(err.value)
        assert expected in message and "\n" not in message and message.startswith("stage-1 shard 0: ")
    with pytest.raises(StateRestoreError, match=r"topics\.partitions is 3"):
        ModelFactory(today.model_copy(update={"topics": TopicSettings(partitions=3)})).restore(
            0, ModelProcessor(0, today).snapshot())


class _Format1:
    """Pickles as a ModelProcessor the way state format 1 did: every attribute, settings included."""

    def __init__(self, processor: ModelProcessor) -> None:
        self.state = dict(processor.__dict__)

    def __reduce__(self) -> tuple[Any, ...]:
        return (object.__new__, (ModelProcessor,), self.state)


FLAT_BLOB = Path(__file__).parent / "data" / "model_state_flat_v2.bin"
IDENTITY = ("model_id", "model_version", "segment", "window_size_s", "window_start", "feature", "row_kind",
            "time", "profile_id", "episode_id")


def test_a_stage2_checkpoint_from_before_the_clocks_were_split_restores_and_carries_on() -> None:
    """tests/data/model_state_flat_v2.bin is stage-2 shard 0 checkpointed (state format 2) by the
    driftline whose ModelProcessor kept both clocks in one flat ``__dict__`` with windows keyed in
    seconds, after the first 1,500 records below. Restored, it carries on: the rows written after it
    are the rows (by identity: which windows, features, intervals) of a run never interrupted."""
    settings = Settings(topics=TopicSettings(partitions=2, model_events_partitions=1),
                        windows=WindowSettings(sizes_s=[300], allowed_lateness_s=30, metrics_interval_s=300,
                                               segment_keys=["region"]),
                        join=JoinSettings(label_horizon_s=600))
    drift = CovariateDrift(feature="x1", at_s=900, magnitude=2.0)
    scenario = Scenario(seed=3, start=1_767_225_600_000, duration_s=1800, rate=2,
                        models=[ModelSpec(model_id="churn", n_numeric=2, n_categorical=1,
                                          covariate_drift=[drift])],
                        label_delay=LabelDelay(median_s=20, max_s=300))
    log = logged_records(generate(scenario), settings)
    cut = 1500

    def identities(pipeline: InProcessPipeline) -> set[tuple[Any, ...]]:
        return {(table, *(row.get(c) for c in IDENTITY))
                for table, rows in pipeline.rows.items() for row in rows}

    throughout, restarted = InProcessPipeline(settings, "r"), InProcessPipeline(settings, "r")
    for pipeline in (throughout, restarted):
        for i in range(0, cut, 500):
            pipeline.feed(log[i : i + 500])
    restored = ModelFactory(settings, "r").restore(0, FLAT_BLOB.read_bytes())
    fresh = restarted.models[0]
    assert restored.windows.progress == fresh.windows.progress
    assert restored.outcomes.closed_until == fresh.outcomes.closed_until
    assert sorted(restored.outcomes.buckets["churn", "1"]) == sorted(fresh.outcomes.buckets["churn", "1"])
    assert [p.profile_id for p in restored.profiles.by_model["churn", "1"]] == [
        p.profile_id for p in fresh.profiles.by_model["churn", "1"]]
    before = identities(restarted)
    restarted.models = [restored]
    restored.track_changes()  # the upgraded stage carries its old base on with deltas
    deltas = []
    for pipeline in (throughout, restarted):
        for i in range(cut, len(log), 500):
            pipeline.feed(log[i : i + 500])
            if pipeline is restarted:  # the old base and today's deltas restore what the stage holds
                deltas.append(restored.checkpoint(base=False))
                chained = ModelFactory(settings, "r").restore(0, FLAT_BLOB.read_bytes(), deltas)
                assert chained.outcomes.buckets == restored.outcomes.buckets
                assert chained.outcomes.outcomes_total == restored.outcomes.outcomes_total
                assert (chained.windows.progress, chained.outcomes.closed_until) == (
                    restored.windows.progress, restored.outcomes.closed_until)
    assert len(deltas) > 2
    after = identities(restarted) - before
    assert after and after == identities(throughout) - before
    assert any(row[0] == "model_drift" for row in after) and any(row[0] == "model_metrics" for row in after)
