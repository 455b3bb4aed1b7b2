"""``triggers.use_estimated_performance``: CBPE's estimated accuracy may fire the retrain policy's
``performance`` trigger before any label arrives (issue 16 part 3).

One binary classifier whose profile has a baseline accuracy and a CBPE calibration; from minute
10 its inputs crowd around the decision boundary (the concept P(y | x) unchanged), so the
accuracy it can reach falls by about 0.2. No label is ever sent: only the estimate can see it.
The same stream checks ``multivariate.domain_every`` (the domain classifier on every k-th policy
window).
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
from driftline.pipeline.local import InProcessPipeline

START = 1_767_225_600_000
WINDOW_S = 300
DURATION_S = 1500
NARROW_S = 600
RATE = 5  # events per second


def _settings(use_estimate: bool, domain_every: int = 1) -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": WINDOW_S},
        topics={"partitions": 2},
        triggers={"use_estimated_performance": use_estimate, "performance_duration_s": 0},
        multivariate={"domain_every": domain_every},
    )


def _outputs(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concept P(y | x) is fixed; the model's score is over-confident."""
    return 1 / (1 + np.exp(-4 * x)), rng.random(x.size) < 1 / (1 + np.exp(-2 * x))


@pytest.fixture(scope="module")
def profile() -> bytes:
    rng = np.random.default_rng(5)
    table = {"x": rng.normal(size=20_000), "w": rng.normal(size=20_000)}
    scores, labels = _outputs(rng, table["x"])
    columns: dict[str, list[Any]] = {k: v.tolist() for k, v in table.items()}
    settings = _settings(False)
    made = build_profile(
        "cbpe", "1", {**columns, "label": labels.tolist(), "prediction": (scores >= 0.5).tolist()},
        label_column="label", prediction_column="prediction", bins=settings.drift.bins,
        top_k=settings.drift.top_k, created_at_ms=0,
        multivariate=multivariate_section(columns, scores=scores.tolist(), labels=labels.tolist()),
    )
    assert made.baseline["accuracy"] > 0.7
    return made.model_dump_json().encode()


@pytest.fixture(scope="module")
def stream() -> list[RawRecord]:
    rng = np.random.default_rng(9)
    n = DURATION_S * RATE
    times = START + np.sort(rng.integers(0, DURATION_S * 1000, n))
    narrow = times >= START + NARROW_S * 1000
    x = np.where(narrow, 0.2, 1.0) * rng.normal(size=n)
    w = rng.normal(size=n)
    scores, _ = _outputs(rng, x)
    settings = _settings(False)
    records = []
    for i, t in enumerate(times.tolist()):
        value = orjson.dumps({"prediction_id": f"p{i}", "model_id": "cbpe", "timestamp": t,
                              "features": {"x": float(x[i]), "w": float(w[i])},
                              "prediction": {"label": bool(scores[i] >= 0.5), "score": float(scores[i])}})
        records.append(RawRecord(settings.topics.predictions, i % 2, i // 2, t, f"p{i}".encode(), value))
    return records


def _run(stream: list[RawRecord], profile: bytes, use_estimate: bool,
         domain_every: int = 1) -> InProcessPipeline:
    pipeline = InProcessPipeline(_settings(use_estimate, domain_every), profiles=[profile])
    for i in range(0, len(stream), 2000):
        pipeline.feed(stream[i : i + 2000])
    pipeline.finish(START + DURATION_S * 1000)
    return pipeline


def _performance(pipeline: InProcessPipeline) -> list[dict[str, Any]]:
    return [t for t in map(orjson.loads, pipeline.triggers) if t["reason"] == "performance"]


def test_an_estimated_drop_triggers_before_any_label(stream: list[RawRecord], profile: bytes) -> None:
    pipeline = _run(stream, profile, True)
    assert not pipeline.rows.get("outcomes")  # no label was ever sent
    estimated = {r["window_start"]: r["accuracy"] for r in pipeline.rows["estimated_performance"]}
    assert len(estimated) == DURATION_S // WINDOW_S
    fired = _performance(pipeline)
    assert len(fired) == 1, fired  # one trigger for the drop: hysteresis holds it while it lasts
    trigger = fired[0]
    narrow_ms = START + NARROW_S * 1000
    assert trigger["window_start"] == narrow_ms and trigger["window_end"] == narrow_ms + WINDOW_S * 1000
    evidence = trigger["evidence"]
    assert evidence["source"] == "estimated" and "estimated" in trigger["message"]
    assert evidence["metric"]["worse_by"] >= 0.1
    assert evidence["metric"]["value"] == pytest.approx(estimated[narrow_ms])
    assert evidence["observation"]["estimated_accuracy"] == pytest.approx(estimated[narrow_ms])


def test_off_by_default_nothing_fires(stream: list[RawRecord], profile: bytes) -> None:
    assert Settings().triggers.use_estimated_performance is False
    pipeline = _run(stream, profile, False)
    assert pipeline.rows["estimated_performance"]  # estimated all the same
    assert _performance(pipeline) == []


def test_crash_and_restore_fire_the_same_trigger(stream: list[RawRecord], profile: bytes,
                                                 feed_with_crashes: Any) -> None:
    expected = _performance(_run(stream, profile, True))
    batches = [stream[i : i + 1500] for i in range(0, len(stream), 1500)]
    pipeline = InProcessPipeline(_settings(True), profiles=[profile])
    feed_with_crashes(pipeline, batches, {len(batches) // 2}, every=2)
    pipeline.finish(START + DURATION_S * 1000)
    again = {t["trigger_id"]: t for t in _performance(pipeline)}  # a re-sent trigger keeps its id
    assert list(again.values()) == expected


def test_domain_every_skips_the_classifier_on_the_other_windows(stream: list[RawRecord],
                                                                profile: bytes) -> None:
    rows = _run(stream, profile, False, domain_every=2).rows["multivariate_drift"]
    fitted = {r["window_start"]: r["auc"] is not None for r in rows}
    assert len(fitted) == DURATION_S // WINDOW_S
    assert fitted == {start: (start // (WINDOW_S * 1000)) % 2 == 0 for start in fitted}
    every = {r["window_start"]: r["auc"] for r in _run(stream, profile, False).rows["multivariate_drift"]}
    assert all(every[r["window_start"]] == r["auc"] for r in rows if r["auc"] is not None)  # same fits
