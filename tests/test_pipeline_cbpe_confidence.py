"""CBPE through the pure pipeline for a multiclass model sending its predicted class's confidence.

A 3-class model over-confident about a fixed concept; its inputs move (covariate shift), so its
accuracy moves. The training profile calibrates confidence -> P(prediction correct)
(``score_kind="confidence"``); per window the estimated accuracy, from the scores alone, is
within 0.03 of the realized one (the labels arrive two minutes later), F1 and ROC-AUC are NULL,
and another batching gives identical rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate.traffic import SimEvent

START = 1_767_225_600_000
WINDOW_S = 300
DURATION_S = 1800
RATE = 10
LABEL_DELAY_MS = 120_000



def _settings() -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": WINDOW_S},
        topics={"partitions": 2},
    )


def _model(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, confidence and label: the concept P(y | x) is fixed, the model over-confident."""
    logits = np.column_stack([2 * x, np.zeros(x.size), -2 * x])
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(x.size)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    model = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return model.argmax(axis=1), model.max(axis=1), labels


@pytest.fixture(scope="module")
def profiles() -> list[bytes]:
    rng = np.random.default_rng(11)
    x = rng.normal(size=20_000)
    table = {"x": x.tolist(), "w": rng.normal(size=x.size).tolist()}
    predicted, confidence, labels = _model(rng, x)
    section = multivariate_section(table, scores=confidence.tolist(), labels=[f"c{y}" for y in labels],
                                   predictions=[f"c{p}" for p in predicted], score_kind="confidence")
    settings = _settings()
    made = build_profile("mc", "1", table, label_column=None, prediction_column=None,
                         bins=settings.drift.bins, top_k=settings.drift.top_k, created_at_ms=0,
                         multivariate=section)
    return [made.model_dump_json().encode()]


@pytest.fixture(scope="module")
def generated() -> tuple[list[RawRecord], dict[int, float]]:
    """The stream, and the realized accuracy per window start."""
    rng = np.random.default_rng(12)
    n = DURATION_S * RATE
    times = START + np.sort(rng.integers(0, DURATION_S * 1000, n))
    x = rng.normal(size=n) + np.clip((times - START) / (DURATION_S * 1000) * 1.5, 0, None)
    w = rng.normal(size=n)
    predicted, confidence, labels = _model(rng, x)
    events: list[SimEvent] = []
    correct: dict[int, list[bool]] = {}
    for i, t in enumerate(times.tolist()):
        pid = f"mc-{i}"
        value = orjson.dumps({"prediction_id": pid, "model_id": "mc", "timestamp": t,
                              "features": {"x": float(x[i]), "w": float(w[i])},
                              "prediction": {"label": f"c{predicted[i]}", "score": float(confidence[i])}})
        events.append(SimEvent("predictions", pid.encode(), value, t))
        label = orjson.dumps({"prediction_id": pid, "model_id": "mc", "label": f"c{labels[i]}",
                              "timestamp": t + LABEL_DELAY_MS})
        events.append(SimEvent("labels", pid.encode(), label, t + LABEL_DELAY_MS))
        correct.setdefault(t - (t - START) % (WINDOW_S * 1000), []).append(bool(predicted[i] == labels[i]))
    events.sort(key=lambda e: e.timestamp_ms)
    return logged_records(events, _settings()), {s: float(np.mean(c)) for s, c in correct.items()}


def _rows(stream: list[RawRecord], profiles: list[bytes], batch: int) -> list[dict[str, Any]]:
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    for i in range(0, len(stream), batch):
        pipeline.feed(stream[i : i + batch])
    pipeline.finish(START + DURATION_S * 1000 + LABEL_DELAY_MS)
    return sorted((r for r in pipeline.rows["estimated_performance"] if r["model_id"] == "mc"),
                  key=lambda r: str(r["window_start"]))


def test_multiclass_confidence_estimates_accuracy_per_window_before_labels(
    profiles: list[bytes], generated: tuple[list[RawRecord], dict[int, float]]
) -> None:
    stream, realized = generated
    rows = _rows(stream, profiles, 1500)
    assert len(rows) == DURATION_S // WINDOW_S
    errors = [abs(r["accuracy"] - realized[r["window_start"]]) for r in rows]
    assert max(errors) <= 0.03, errors
    print(f"max |estimated - realized| accuracy over {len(rows)} windows: {max(errors):.4f}")
    for r in rows:
        assert r["f1"] is None and r["roc_auc"] is None, r  # accuracy only for confidence scores
        assert r["accuracy_low"] < r["accuracy"] < r["accuracy_high"], r
    assert max(realized.values()) - min(realized.values()) > 0.05  # the shift moved the accuracy
    assert _rows(stream, profiles, 397) == rows  # another batching: identical rows
