"""Example retrain job: outcomes in ClickHouse -> new model version, artifacts and profile."""

from __future__ import annotations

import pickle
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from driftline.config import Settings
from driftline.jobs.example_retrain import featurize, main, new_version, read_trigger, retrain
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import kafka_python_kwargs
from driftline.operators.profile import ReferenceProfile
from driftline.operators.triggers import trigger_id
from driftline.schemas.events import RetrainTrigger, TriggerReason
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.writer import open_row_writer


def test_read_trigger_from_env_or_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    t = RetrainTrigger(trigger_id="t1", model_id="m", model_version="3", reason=TriggerReason.MANUAL,
                       window_start=0, window_end=60_000, triggered_at=1)
    monkeypatch.delenv("DRIFTLINE_TRIGGER_JSON", raising=False)
    assert read_trigger(t.model_dump_json()) == t
    monkeypatch.setenv("DRIFTLINE_TRIGGER_JSON", t.model_dump_json())
    assert read_trigger("ignored") == t
    assert new_version(t.model_version) == "3-r1"


def _outcomes(model_id: str, n: int, base_ms: int, regression: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        x, c = rng.random(), rng.choice(["a", "b"])
        signal = x + (0.5 if c == "a" else 0.0)
        row: dict[str, Any] = {
            "run_id": "", "model_id": model_id, "model_version": "1", "prediction_id": f"p{i:04d}",
            "segment": "", "prediction_time": base_ms + i * 1000, "label_time": base_ms + i * 1000 + 500,
            "label_delay_ms": 500, "features": orjson.dumps({"x": x, "c": c, "flag": i % 3 == 0}).decode(),
        }
        if regression:
            row.update(predicted_label="", predicted_value=signal, label="", label_value=3 * signal + 1)
        else:
            row.update(predicted_label="yes", label="yes" if signal > 0.75 else "no")
        rows.append(row)
    return rows


def set_env(monkeypatch: pytest.MonkeyPatch, s: Settings, **extra: object) -> None:
    """The settings main() reads from the environment, as the listener's job would get them."""
    values = {"HOME": s.home, "KAFKA_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
              "CLICKHOUSE_URL": s.clickhouse.url, "CLICKHOUSE_DATABASE": s.clickhouse.database, **extra}
    for key, value in values.items():
        monkeypatch.setenv(f"DRIFTLINE_{key}", str(value))


def _trigger(model_id: str, at_ms: int) -> RetrainTrigger:
    return RetrainTrigger(
        trigger_id=trigger_id(model_id, "1", TriggerReason.DRIFT, at_ms - 3_600_000, at_ms),
        model_id=model_id, model_version="1", reason=TriggerReason.DRIFT,
        window_start=at_ms - 3_600_000, window_end=at_ms, triggered_at=at_ms,
    )


def _profiles_on_topic(settings: Settings) -> list[ReferenceProfile]:
    consumer = KafkaConsumer(**kafka_python_kwargs(settings), enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        tp = TopicPartition(settings.topics.profiles, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        return [ReferenceProfile.model_validate_json(r.value) for r in consumer]
    finally:
        consumer.close()


@pytest.mark.integration
def test_retrain_classification_and_regression(settings: Settings, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings.model_copy(update={"retrain": settings.retrain.model_copy(
        update={"artifacts_dir": tmp_path / "artifacts"})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    base = int(time.time() * 1000) - 3_600_000
    writer = open_row_writer(s)
    writer.write("outcomes", _outcomes("clf", 400, base) + _outcomes("reg", 300, base, regression=True))
    writer.close()

    # classification, through main() as the listener runs it (settings from the environment)
    clf = _trigger("clf", base + 400_000)  # 400 s: only the first ~400 outcomes are labeled by then
    set_env(monkeypatch, s, TOPICS_PROFILES=s.topics.profiles, TOPICS_SINK=s.topics.sink,
            RETRAIN_ARTIFACTS_DIR=s.retrain.artifacts_dir, TRIGGER_JSON=clf.model_dump_json())
    assert main() == 0

    out = tmp_path / "artifacts" / "clf" / "1-r1"
    summary = orjson.loads((out / "metrics.json").read_bytes())
    assert summary["model_version"] == "1-r1" and summary["previous_version"] == "1"
    assert summary["trigger_id"] == clf.trigger_id and summary["task"] == "classification"
    assert summary["n_total"] == 400 and summary["n_holdout"] == 80
    assert summary["holdout"]["accuracy"] > 0.8
    model = pickle.loads((out / "model.pkl").read_bytes())
    assert model.predict_one(featurize({"x": 0.95, "c": "a", "flag": False})) == "yes"
    assert model.predict_one(featurize({"x": 0.05, "c": "b", "flag": False})) == "no"

    # regression, in-process; a second run of the same trigger is idempotent
    reg = _trigger("reg", base + 10_000_000)
    first = retrain(s, reg)
    again = retrain(s, reg)
    assert first == again == tmp_path / "artifacts" / "reg" / "1-r1"
    reg_summary = orjson.loads((first / "metrics.json").read_bytes())
    assert reg_summary["task"] == "regression" and reg_summary["holdout"]["mae"] < 0.5

    profiles = _profiles_on_topic(s)
    assert [(p.model_id, p.model_version) for p in profiles] == [("clf", "1-r1")] + [("reg", "1-r1")] * 2
    clf_profile, reg_profile, reg_again = profiles
    assert reg_profile.profile_id == reg_again.profile_id
    assert set(clf_profile.features) == {"x", "c", "flag"}
    assert clf_profile.source == "training" and clf_profile.task == "classification"
    assert clf_profile.baseline["accuracy"] > 0.8 and clf_profile.prediction is not None
    assert reg_profile.task == "regression" and "mae" in reg_profile.baseline
    assert summary["profile_id"] == clf_profile.profile_id

    rows = client.query("SELECT model_id, model_version, profile_id, source FROM reference_profiles FINAL "
                        "ORDER BY model_id").result_rows
    assert rows == [("clf", "1-r1", clf_profile.profile_id, "training"),
                    ("reg", "1-r1", reg_profile.profile_id, "training")]
    client.close()


@pytest.mark.integration
def test_too_few_outcomes_exit_code(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    client = connect(settings)
    migrate(client, settings)
    client.close()
    trig = _trigger("nobody", int(time.time() * 1000))
    set_env(monkeypatch, settings, TRIGGER_JSON=trig.model_dump_json())
    assert main() == 3
