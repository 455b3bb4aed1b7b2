"""Multivariate drift, outlier rate and CBPE through the pure pipeline (issue 16 parts 1-3).

Two models with training profiles that carry a multivariate section:

- ``rot``: five numeric features, ``a`` and ``b`` correlated at 0.8; from minute 20 the pair is
  rotated by 90 degrees (``(a, b) -> (-b, a)``): every marginal stays N(0, 1), the correlation
  becomes -0.8. The univariate tests must stay quiet; the reconstruction detector opens a
  ``__reconstruction__`` episode and the domain classifier's AUC crosses its threshold.
- ``cov``: a binary classifier whose inputs move (covariate shift, the concept fixed): CBPE's
  estimated accuracy per window within 0.03 of the realized one, computed from scores alone (the
  labels arrive two minutes later; in ClickHouse, ``estimated_vs_realized`` puts them side by side).

Rows are a function of the logs alone: another batching, and crash/restore, give identical rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import rankdata

from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate.traffic import SimEvent
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

pytest.importorskip("sklearn")

START = 1_767_225_600_000
WINDOW_S = 300
DURATION_S = 2400
ROTATE_S = 1200
RATE = 5  # events per second and model
LABEL_DELAY_MS = 120_000
FEATURES = ("a", "b", "c", "d", "e")



def _settings() -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": WINDOW_S},
        topics={"partitions": 2},
    )


def _rot_rows(rng: np.random.Generator, n: int, rotated: bool) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    b = 0.8 * a + 0.6 * rng.normal(size=n)
    if rotated:
        a, b = -b, a
    return {"a": a, "b": b, **{f: rng.normal(size=n) for f in FEATURES[2:]}}


def _cov_rows(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    x = rng.normal(shift, 1.0, n)
    return {"x": x, "w": rng.normal(size=n)}


def _cov_outputs(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concept P(y | x) is fixed; the model's score is over-confident."""
    labels = rng.random(x.size) < 1 / (1 + np.exp(-2 * x))
    return 1 / (1 + np.exp(-4 * x)), labels


@pytest.fixture(scope="module")
def profiles() -> list[bytes]:
    rng = np.random.default_rng(5)
    settings = _settings()
    rot = {k: v.tolist() for k, v in _rot_rows(rng, 20_000, False).items()}
    cov = {k: v.tolist() for k, v in _cov_rows(rng, 20_000, 0.0).items()}
    scores, labels = _cov_outputs(rng, np.asarray(cov["x"]))
    made = [
        build_profile("rot", "1", rot, label_column=None, prediction_column=None, bins=settings.drift.bins,
                      top_k=settings.drift.top_k, created_at_ms=0, multivariate=multivariate_section(rot)),
        build_profile("cov", "1", cov, label_column=None, prediction_column=None, bins=settings.drift.bins,
                      top_k=settings.drift.top_k, created_at_ms=0,
                      multivariate=multivariate_section(cov, scores=scores.tolist(), labels=labels.tolist())),
    ]
    return [p.model_dump_json().encode() for p in made]


@pytest.fixture(scope="module")
def generated() -> tuple[list[RawRecord], dict[int, float]]:
    """The stream, and the realized accuracy of ``cov`` per window start (never sent as labels)."""
    rng = np.random.default_rng(9)
    n = DURATION_S * RATE
    times = START + np.sort(rng.integers(0, DURATION_S * 1000, n))
    rotated = times >= START + ROTATE_S * 1000
    rot = _rot_rows(rng, n, False)
    turned = _rot_rows(rng, n, True)
    rot = {k: np.where(rotated, turned[k], v) for k, v in rot.items()}
    shift = np.clip((times - START) / (DURATION_S * 1000) * 1.5, 0, None)  # the inputs drift
    cov = _cov_rows(rng, n, 0.0)
    cov["x"] = cov["x"] + shift
    scores, labels = _cov_outputs(rng, cov["x"])
    events: list[SimEvent] = []
    correct: dict[int, list[bool]] = {}
    for i, t in enumerate(times.tolist()):
        for model, row, prediction in (
            ("rot", {k: float(v[i]) for k, v in rot.items()}, {"label": "x"}),
            ("cov", {k: float(v[i]) for k, v in cov.items()},
             {"label": bool(scores[i] >= 0.5), "score": float(scores[i])}),
        ):
            pid = f"{model}-{i}"
            value = orjson.dumps({"prediction_id": pid, "model_id": model, "timestamp": t,
                                  "features": row, "prediction": prediction})
            events.append(SimEvent("predictions", pid.encode(), value, t))
        label = orjson.dumps({"prediction_id": f"cov-{i}", "model_id": "cov", "label": bool(labels[i]),
                              "timestamp": t + LABEL_DELAY_MS})
        events.append(SimEvent("labels", f"cov-{i}".encode(), label, t + LABEL_DELAY_MS))
        correct.setdefault(t - (t - START) % (WINDOW_S * 1000), []).append(
            bool(scores[i] >= 0.5) == bool(labels[i]))
    realized = {start: float(np.mean(c)) for start, c in correct.items()}
    events.sort(key=lambda e: e.timestamp_ms)  # labels in their time order among the predictions
    return logged_records(events, _settings()), realized


def _run(stream: list[RawRecord], profiles: list[bytes], batch: int) -> InProcessPipeline:
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    for i in range(0, len(stream), batch):
        pipeline.feed(stream[i : i + batch])
    pipeline.finish(START + DURATION_S * 1000 + LABEL_DELAY_MS)
    return pipeline


@pytest.fixture(scope="module")
def baseline(generated: tuple[list[RawRecord], dict[int, float]], profiles: list[bytes]) -> InProcessPipeline:
    return _run(generated[0], profiles, 2000)


def _canonical(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {t: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs) for t, rs in rows.items()}


def _for(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["model_id"] == model), key=lambda r: r["window_start"])


def test_profile_message_stays_small(profiles: list[bytes]) -> None:
    # 5 features here; 25 features measured at about 450 kB (docs/multivariate.md), the broker's
    # default max message is 1 MiB
    assert all(len(p) < 200_000 for p in profiles)


def test_rotation_is_caught_by_both_multivariate_signals_and_no_univariate_test(
    baseline: InProcessPipeline,
) -> None:
    rotate_ms = START + ROTATE_S * 1000
    drift = _for(baseline.rows["drift_scores"], "rot")
    assert drift and not any(r["drifted"] for r in drift), [r for r in drift if r["drifted"]]
    windows = _for(baseline.rows["multivariate_drift"], "rot")
    assert len(windows) == DURATION_S // WINDOW_S
    for r in windows:
        assert r["auc"] is not None and r["n_sample"] >= 200, r
        if r["window_start"] >= rotate_ms:
            assert r["drifted"] == 1 and r["auc"] > r["auc_threshold"], r
            assert set(r["top_features"][:2]) == {"a", "b"}, r
            assert r["share_above_p99"] > 0.05 and r["mean_error"] > r["reference_mean_error"], r
        else:
            assert r["drifted"] == 0, r
            assert r["share_above_p99"] < 0.03, r
    episodes = [r for r in baseline.rows["drift_episodes"]
                if r["model_id"] == "rot" and r["feature"] == "__reconstruction__"]
    assert len({r["episode_id"] for r in episodes}) == 1, episodes
    opened = min(r["opened_at"] for r in episodes)
    assert rotate_ms <= opened < rotate_ms + 120_000, opened
    other = [r for r in baseline.rows["drift_episodes"] if r["model_id"] == "rot"
             and r["feature"] != "__reconstruction__"]
    assert not other, other


def test_outlier_rate_per_window(baseline: InProcessPipeline) -> None:
    rotate_ms = START + ROTATE_S * 1000
    rows = _for(baseline.rows["outlier_rate"], "rot")
    assert len(rows) == DURATION_S // WINDOW_S
    for r in rows:
        assert r["expected_rate"] == pytest.approx(0.001)
        assert r["significant"] == int(r["window_start"] >= rotate_ms), r


def test_cbpe_tracks_realized_accuracy_before_any_label(
    baseline: InProcessPipeline, generated: tuple[list[RawRecord], dict[int, float]]
) -> None:
    realized = generated[1]
    rows = _for(baseline.rows["estimated_performance"], "cov")
    assert len(rows) == DURATION_S // WINDOW_S
    errors = [abs(r["accuracy"] - realized[r["window_start"]]) for r in rows]
    assert max(errors) <= 0.03, errors
    for r in rows:
        assert r["accuracy_low"] < r["accuracy"] < r["accuracy_high"] and 0 < r["f1"] <= 1, r
    # the shift is real: accuracy moves across the run
    assert max(realized.values()) - min(realized.values()) > 0.03
    assert not _for(baseline.rows["estimated_performance"], "rot")  # no scores: no estimate
    # ROC-AUC from the merged segment counts tracks the realized AUC of the labels sent later
    realized_auc = _realized_auc(generated[0])
    auc_errors = [abs(r["roc_auc"] - realized_auc[r["window_start"]]) for r in rows]
    assert max(auc_errors) <= 0.03, auc_errors


def _realized_auc(stream: list[RawRecord]) -> dict[int, float]:
    """``cov``'s realized ROC-AUC per window start, from the stream's scores and labels
    (Mann-Whitney, ties 1/2)."""
    scored: dict[str, tuple[int, float]] = {}
    labels: dict[str, bool] = {}
    labels_topic = _settings().topics.labels
    for record in stream:
        message = orjson.loads(record.value or b"{}")
        if message.get("model_id") != "cov":
            continue
        if record.topic == labels_topic:
            labels[message["prediction_id"]] = bool(message["label"])
        else:
            t = int(message["timestamp"])
            scored[message["prediction_id"]] = (t - (t - START) % (WINDOW_S * 1000),
                                                float(message["prediction"]["score"]))
    by_window: dict[int, list[tuple[float, bool]]] = {}
    for pid, (start, score) in scored.items():
        by_window.setdefault(start, []).append((score, labels[pid]))
    out = {}
    for start, pairs in by_window.items():
        s = np.asarray([p[0] for p in pairs])
        y = np.asarray([p[1] for p in pairs])
        ranks = rankdata(s)  # ties share their mean rank
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        out[start] = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return out


def test_rows_do_not_depend_on_batching(
    baseline: InProcessPipeline, generated: tuple[list[RawRecord], dict[int, float]], profiles: list[bytes]
) -> None:
    other = _run(generated[0], profiles, 777)
    for table in ("multivariate_drift", "outlier_rate", "estimated_performance", "drift_episodes"):
        assert _canonical(other.rows)[table] == _canonical(baseline.rows)[table], table


def test_crash_and_restore_reproduce_the_rows(
    baseline: InProcessPipeline, generated: tuple[list[RawRecord], dict[int, float]], profiles: list[bytes],
    feed_with_crashes: Any,
) -> None:
    stream = generated[0]
    batches = [stream[i : i + 1500] for i in range(0, len(stream), 1500)]
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    deduped = feed_with_crashes(pipeline, batches, {len(batches) // 2 + 1}, every=4)
    pipeline.finish(START + DURATION_S * 1000 + LABEL_DELAY_MS)
    final = {t: list({orjson.dumps(r, option=orjson.OPT_SORT_KEYS): r for r in rs}.values())
             for t, rs in pipeline.rows.items()}
    assert deduped  # fed through the crash
    for table in ("multivariate_drift", "outlier_rate", "estimated_performance"):
        assert _canonical(final)[table] == _canonical(baseline.rows)[table], table


def test_estimated_beside_realized_in_clickhouse(
    baseline: InProcessPipeline, generated: tuple[list[RawRecord], dict[int, float]], clickhouse_url: str,
    tmp_path: Any,
) -> None:
    # TTLs of ten years: the simulated event times must not expire whatever today is (a century
    # would overflow DateTime, whose range ends in 2106, and expire everything at once)
    settings = Settings(home=tmp_path / "home",
                        clickhouse={"url": clickhouse_url, "database": f"dl_mv_{uuid.uuid4().hex[:8]}",
                                    "ttl_days": 3_650, "aggregate_ttl_days": 3_650})
    client = connect(settings)
    try:
        migrate(client, settings)
        writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
        for table in ("multivariate_drift", "outlier_rate", "estimated_performance", "outcomes"):
            writer.write(table, baseline.rows[table])
        writer.flush()
        db = database_name(settings)
        rows = client.query(f"SELECT toUnixTimestamp64Milli(window_start), estimated_accuracy, n_labeled, "
                            f"realized_accuracy FROM {db}.estimated_vs_realized WHERE model_id = 'cov' "
                            "ORDER BY window_start").result_rows
        realized = generated[1]
        assert len(rows) == DURATION_S // WINDOW_S
        for start, estimated, n_labeled, accuracy in rows:
            assert n_labeled > 0
            assert accuracy == pytest.approx(realized[start]) and abs(estimated - accuracy) <= 0.03
        with_auc = client.query(f"SELECT count() FROM {db}.estimated_performance FINAL "
                                "WHERE model_id = 'cov' AND roc_auc > 0.5").result_rows[0][0]
        assert with_auc == DURATION_S // WINDOW_S
        drifted = client.query(f"SELECT count() FROM {db}.multivariate_drift FINAL WHERE model_id = 'rot' "
                               "AND drifted = 1").result_rows[0][0]
        assert drifted == (DURATION_S - ROTATE_S) // WINDOW_S
    finally:
        client.close()


def test_a_trigger_carries_the_multivariate_evidence(baseline: InProcessPipeline) -> None:
    triggers = [orjson.loads(t) for t in baseline.triggers]
    rot = [t for t in triggers if t["model_id"] == "rot"]
    # univariate quiet: the reconstruction episode is the drift evidence, the windows' multivariate
    # verdicts travel with it
    assert rot, triggers
    evidence = rot[0]["evidence"]
    assert any(e["feature"] == "__reconstruction__" for e in evidence["episode_events"])
    drifted = [w["evidence"]["multivariate"] for w in evidence["windows"] if w["drifted"]]
    assert drifted and all(m["domain_drifted"] and m["outliers_significant"] for m in drifted), drifted
    assert all(set(m["top_features"][:2]) == {"a", "b"} for m in drifted)
