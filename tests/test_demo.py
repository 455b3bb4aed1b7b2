"""`driftline demo`: pure summary functions, the report, and the whole demo as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.demo.plan import DRIFTING_MODEL, demo_scenario, pace
from driftline.demo.report import render_html
from driftline.demo.run import DemoError, prepare_home
from driftline.demo.summary import build_summary, detections, queries, query_parameters, weighted_accuracy
from driftline.demo.training import training_profiles
from driftline.local.state import pid_alive

MIN = 60_000
T0 = 1_790_000_000_000

TRUTH: dict[str, Any] = {"models": {
    "churn": {"champion": "1", "challenger": "2",
              "covariate_drift": [{"feature": "x3", "start_ms": T0 + 10 * MIN},
                                  {"feature": "c1", "start_ms": T0 + 10 * MIN}],
              "concept_drift": {"start_ms": T0 + 10 * MIN},
              "expected_accuracy": {"1": {"before": 0.9, "after": 0.6},
                                    "2": {"before": 0.85, "after": 0.85}}},
    "fraud": {"champion": "1", "challenger": None, "covariate_drift": [], "concept_drift": None,
              "expected_accuracy": {"1": {"before": 0.95, "after": 0.95}}},
}}


def _drift(model: str, version: str, feature: str, minute: int, drifted: bool,
           psi: float = 0.5) -> dict[str, Any]:
    start = T0 + minute * MIN
    return {"model_id": model, "model_version": version, "feature": feature, "start_ms": str(start),
            "end_ms": str(start + MIN), "psi": psi, "drifted": int(drifted)}


def _metric(version: str, minute: int, accuracy: float | None, n: int = 100,
            kind: str = "interval") -> dict[str, Any]:
    return {"model_id": "churn", "model_version": version, "row_kind": kind,
            "time_ms": str(T0 + minute * MIN), "n_outcomes": str(n), "accuracy": accuracy}


def _job(trigger_id: str, attempt: int, status: str) -> dict[str, Any]:
    return {"trigger_id": trigger_id, "attempt": attempt, "model_id": "churn", "model_version": "1",
            "status": status}


ROWS: dict[str, list[dict[str, Any]]] = {
    "drift": [
        _drift("churn", "1", "x3", 9, False, 0.01), _drift("churn", "1", "x3", 10, True),
        _drift("churn", "1", "x3", 11, True), _drift("churn", "1", "c1", 11, True),
        _drift("churn", "1", "x5", 12, True), _drift("churn", "2", "x3", 12, True),
        _drift("fraud", "1", "x0", 10, False, 0.02),
    ],
    "metrics": [_metric("1", 9, 0.9), _metric("1", 10, 0.8, n=300), _metric("1", 11, 0.6, n=100),
                _metric("1", 12, 0.5), _metric("1", 11, None, kind="alarm"), _metric("2", 12, 0.85)],
    "triggers": [{"model_id": "churn", "model_version": "1", "trigger_id": "t1", "reason": "drift",
                  "time_ms": str(T0 + 13 * MIN)},
                 {"model_id": "churn", "model_version": "1", "trigger_id": "t2", "reason": "performance",
                  "time_ms": str(T0 + 14 * MIN)}],
    "jobs": [_job("t1", 1, "failed"), _job("t1", 2, "succeeded"), _job("t2", 1, "started")],
    "dead_letters": [{"error_kind": "decode_error", "n": "3"}, {"error_kind": "validation_error", "n": "2"}],
    "late_events": [{"event_type": "label", "n": "4"}],
    "unjoined": [{"reason": "exact_resend", "n": "2"}, {"reason": "no_label", "n": "7"}],
    "episodes": [{"model_id": "churn", "model_version": "1", "feature": f, "source": src, "status": "open",
                  "escalations": esc, "time_ms": str(T0 + ms)}
                 for f, src, esc, ms in (("x3", "features", 1, 10 * MIN + 7000),
                                         ("c1", "features", 0, 10 * MIN + 9000),
                                         ("__error__", "errors", 0, 10 * MIN + 30_000))],
    "head_to_head": [{"model_id": "churn", "model_version": v, "time_ms": str(T0 + m * MIN), "accuracy": a,
                      "n": "50"}
                     for v, m, a in (("1", 9, 0.9), ("2", 9, 0.85), ("1", 11, 0.6), ("2", 11, 0.86))],
}


def test_summary_compares_injected_and_detected_drift_per_model_version() -> None:
    summary = build_summary(TRUTH, ROWS, split_ms=T0 + 10 * MIN)
    churn1, churn2, fraud = summary["models"]
    assert (churn1["model_id"], churn1["model_version"], churn1["role"]) == ("churn", "1", "champion")
    assert churn1["injected_drift"] == ["c1", "x3"]
    assert churn1["detected_drift"] == ["c1", "x3", "x5"]
    assert churn1["false_detections"] == ["x5"] and churn1["missed"] == []
    assert churn1["drifted_windows"] == {"c1": 1, "x3": 2, "x5": 1}
    assert churn1["first_detection"] == "2026-09-21T14:24:20Z"  # end of minute 10's window
    assert churn1["accuracy_before"] == pytest.approx(0.825) and churn1["detector_alarms"] == 1
    # intervals ending up to the split count as before: (0.9 * 100 + 0.8 * 300) / 400, then (60 + 50) / 200
    assert churn1["accuracy_after"] == pytest.approx(0.55)
    assert churn1["retrain_triggers"] == 2 and churn1["trigger_reasons"] == ["drift", "performance"]
    assert churn1["retrain_jobs_succeeded"] == 1
    assert churn1["episode_features"] == ["c1", "x3"] and churn1["drift_episodes"] == 2
    assert churn1["escalations"] == 1
    assert churn1["first_episode"] == "2026-09-21T14:23:27Z" and churn1["error_episodes"] == 1
    assert churn2["episode_features"] == [] and churn2["first_episode"] is None
    assert churn2["role"] == "challenger" and churn2["detected_drift"] == ["x3"]
    assert churn2["missed"] == ["c1"]
    assert churn2["retrain_triggers"] == 0 and churn2["accuracy_before"] is None
    assert fraud["detected_drift"] == [] and fraud["first_detection"] is None
    assert fraud["injection_time"] is None
    assert summary["dead_letters"] == {"decode_error": 3, "validation_error": 2}
    assert summary["late_events"] == 4
    assert summary["unjoined_events"] == {"exact_resend": 2, "no_label": 7}


def test_detections_and_accuracy_helpers() -> None:
    found = detections(ROWS["drift"])
    assert found[("churn", "1")]["x3"] == [T0 + 11 * MIN, T0 + 12 * MIN]
    assert ("fraud", "1") not in found
    before = weighted_accuracy(ROWS["metrics"], ("churn", "1"), 0, T0 + 10 * MIN)
    assert before == pytest.approx((90 + 240) / 400)
    assert weighted_accuracy(ROWS["metrics"], ("churn", "9"), 0, T0) is None


def test_queries_read_the_live_run_with_final_and_bound_values() -> None:
    sql = queries()
    assert set(sql) == {"drift", "metrics", "triggers", "jobs", "dead_letters", "late_events", "head_to_head",
                        "episodes", "unjoined"}
    assert all("FINAL" in q and "run_id = ''" in q for q in sql.values())
    assert "{window_s:UInt32}" in sql["drift"] and "{models:Array(String)}" in sql["head_to_head"]
    assert query_parameters(60, 30, ["ch'urn"]) == {"window_s": 60, "interval_s": 30, "models": ["ch'urn"]}


def test_report_embeds_charts_and_the_summary_table() -> None:
    summary = build_summary(TRUTH, ROWS, split_ms=T0 + 10 * MIN)
    page = render_html(summary, TRUTH, ROWS)
    assert page.startswith("<!doctype html>") and "<script" not in page
    # without the models' reports (tests/test_report.py draws those): churn's head-to-head chart
    assert page.count("<svg") == 1
    assert "decode_error" in page and "x5" in page


def test_demo_scenario_injects_halfway_on_window_boundaries() -> None:
    now = 1_790_000_123_456
    scenario, injection = demo_scenario(pace(None, fast=True), now)
    start = scenario.start_ms()
    assert start % MIN == 0 and start <= now and injection % MIN == 0
    assert injection - start == scenario.duration_s * 500
    churn = scenario.models[0]
    assert churn.model_id == DRIFTING_MODEL and churn.challenger and churn.concept_drift is not None
    assert sorted(d.feature for d in churn.covariate_drift) == ["c1", "x3", "x7"]
    assert all(not m.covariate_drift and m.concept_drift is None for m in scenario.models[1:])


def test_training_profiles_cover_every_model_version() -> None:
    scenario, _ = demo_scenario(pace(None, fast=True), T0)
    profiles = training_profiles(scenario.model_copy(update={"rate": 40.0}), bins=10, top_k=20,
                                 effective_from_ms=scenario.start_ms())
    versions = {(p.model_id, p.model_version) for p in profiles}
    assert versions == {("churn", "1"), ("churn", "2"), ("fraud", "1"), ("credit", "1")}
    churn = next(p for p in profiles if (p.model_id, p.model_version) == ("churn", "1"))
    assert churn.source == "training" and churn.effective_from_ms == scenario.start_ms()
    assert len(churn.features) == 20 and 0.85 < churn.baseline["accuracy"] < 0.97


def test_prepare_home_refuses_to_wipe_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="refusing"):
        prepare_home(tmp_path)
    home = prepare_home(tmp_path / "demo")
    (home / "leftover").write_text("x")
    assert not (prepare_home(home) / "leftover").exists()


# -- the whole demo ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(660)
def test_fast_demo_detects_the_injected_drift_and_retrains(tmp_path: Path) -> None:
    # No wall-clock bound here (a busy machine doubles the run time): how long the demo takes is
    # in its summary's timings_s. 30 s of traffic instead of --fast's 40: 22 one-minute windows, 11
    # after the injection, where the checks below need 5 (one run at load ~18 drifted 9-10 windows
    # per injected feature, accuracy 0.92 -> 0.59, 3 triggers and jobs); the demo's CPU 107 -> 85 s.
    home = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    proc = subprocess.run([sys.executable, "-m", "driftline.cli.main", "demo", "--json", "--fast",
                           "--duration", "30", "--home", str(home)],
                          capture_output=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    progress = [line for line in proc.stderr.decode().splitlines() if " sent, " in line]
    assert progress and all(len(line) <= 80 for line in progress), proc.stderr.decode()[-4000:]
    summary = orjson.loads(proc.stdout)  # exactly one JSON document on stdout

    drifting = [m for m in summary["models"] if m["model_id"] == DRIFTING_MODEL]
    assert [m["role"] for m in drifting] == ["champion", "challenger"]
    injected_at = datetime.fromisoformat(summary["injection_time"])
    for model in drifting:
        injected = set(model["injected_drift"])
        assert injected == {"c1", "x3", "x7"}
        assert injected <= set(model["detected_drift"]), model
        # Tolerance: BH at q=0.01 may let a clean feature through in an isolated window; a clean
        # feature flagged in two or more windows counts as a false detection.
        windows = model["drifted_windows"]
        assert all(windows[f] >= 5 for f in injected), windows
        assert all(n <= 1 for f, n in windows.items() if f not in injected), windows
        assert datetime.fromisoformat(model["first_detection"]) > injected_at
        # Episode monitors watch the training profile: each drifted feature opens one episode (the
        # drift lasts), clean ones none, and the first opens before the first window that shows
        # the drift closes.
        assert sorted(model["episode_features"]) == sorted(injected), model
        assert model["drift_episodes"] == len(injected), model
        first_episode = datetime.fromisoformat(model["first_episode"])
        assert injected_at <= first_episode < datetime.fromisoformat(model["first_detection"]), model
    champion = drifting[0]
    assert champion["retrain_triggers"] >= 1 and champion["retrain_jobs_succeeded"] >= 1
    assert champion["accuracy_after"] < champion["accuracy_before"] - 0.15
    for clean in (m for m in summary["models"] if m["model_id"] != DRIFTING_MODEL):
        assert clean["injected_drift"] == [] and clean["retrain_triggers"] == 0, clean
        assert all(n <= 1 for n in clean["drifted_windows"].values()), clean
        assert clean["episode_features"] == [], clean
    assert sum(summary["dead_letters"].values()) == summary["events"]["malformed-predictions"]

    report = Path(summary["report"])
    assert report == (home / "report.html").resolve()
    page = report.read_text()
    # every model's heat map per version, accuracy and coverage; churn's head-to-head
    assert page.count('class="chart heatmap"') >= 3 and page.count('class="chart lines"') >= 5
    assert summary["exit_codes"] == {"retrain-listener": 0, "worker": 0}
    for name, pid in summary["pids"].items():
        assert not pid_alive(pid), f"{name} (pid {pid}) is still running"


def test_summary_and_progress_read_whole_in_an_80_column_log() -> None:
    """`make demo` piped into a log: progress as lines (no live table), a summary nothing cut off."""
    import io

    from rich.console import Console

    from driftline.cli.demo import print_summary
    from driftline.demo.progress import Progress, progress_display

    summary = build_summary(TRUTH, ROWS, split_ms=T0 + 10 * MIN)
    summary.update(report="/home/user/driftline/.driftline/demo/report.html",
                   events={"predictions": 123_456, "labels": 120_000}, simulated_seconds=3600.0, speed=30.0,
                   timings_s={"startup": 5.2, "traffic": 120.1, "summary_and_report": 3.3, "shutdown": 2.0})
    log = io.StringIO()
    print_summary(Console(file=log, width=80), summary)
    text = log.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    summary["dead_letters"] = {}  # a table narrower than its title: rich wrapped it, "by" / "kind"
    log = io.StringIO()
    print_summary(Console(file=log, width=80), summary)
    assert "dead letters by kind" in log.getvalue(), log.getvalue()
    assert "c1, x3, x5 (x5 not injected)" in text and "missed" in text and "challenger" in text
    assert "not joined (a row each in unjoined_events): exact_resend 2, no_label 7" in text, text
    # the drift episodes the shift opened, not only the windows it drifted
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
    assert ["drift episodes", "2: c1, x3; first 14:23:27; 1 escalation"] in rows, text
    assert ["error episodes", "1"] in rows and ["drift episodes", "0"] in rows, text

    progress = Progress(phase="producing", produced=1_234_567, processed=1_200_000, lag=34_567,
                        windows_closed=120, drift_detections=42, alarms=3, triggers=2, jobs_succeeded=1)
    assert max(len(line) for line in progress.line().splitlines()) <= 80, progress.line()
    log = io.StringIO()
    console = Console(file=log, width=80)
    assert not console.is_terminal
    with progress_display(console, progress, interval_s=0.05):
        deadline = time.monotonic() + 30
        while log.getvalue().count("\n") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 6 and all("producing: 1,234,567 sent, 1,200,000 processed" in line
                                   for line in lines[::2])
