"""Trust on a real stream: NOAA weather (/work/shared/data) replayed from files the way a user
would (`simulate --csv --out`, `profile build` on its first 3,000 rows, `replay --profiles`), with
faults a platform team meets: a sensor stuck from row 9,000, a feature gone for 1,000 events, one
sensor's variance tripled from row 14,000, exact re-sends, conflicting re-sends, invalid events,
labels no prediction had and a model nobody profiled. Checked: every event that did not count is
in a table (and in the replay's summary), episodes are few and close, the retrain policy keeps
firing after its first trigger (each trigger naming episodes, never two within the cooldown)."""

from __future__ import annotations

import csv
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from driftline.cli.replay import summary_lines
from driftline.config import Settings
from driftline.operators.profile import build_profile
from driftline.replay.run import replay_files
from driftline.simulate import Scenario, write_jsonl
from driftline.simulate.scenario import ModelSpec
from driftline.store.writer import MemoryRowWriter

NOAA = Path("/work/shared/data/noaa_weather.csv")
START = 1_767_225_600_000
ROWS = 18_159
COOLDOWN_S = 1800
pytestmark = pytest.mark.skipif(not NOAA.exists(), reason="needs /work/shared/data/noaa_weather.csv")


def _derive(src: Path, out: Path) -> None:
    """The faults of the module docstring, written as a user's export would hold them."""
    preds = [json.loads(line) for line in (src / "predictions.jsonl").read_text().splitlines()]
    labels = [json.loads(line) for line in (src / "labels.jsonl").read_text().splitlines()]
    assert len(preds) == ROWS
    mean_4 = sum(p["features"]["feat_4"] for p in preds[:5000]) / 5000
    for i, p in enumerate(preds):
        features = p["features"]
        if i >= 9000:
            features["feat_1"] = 55.5
        if 12_000 <= i < 13_000:
            del features["feat_3"]
        if i >= 14_000:
            features["feat_4"] = mean_4 + 3 * (features["feat_4"] - mean_4)
    extra = [dict(preds[i]) for i in range(1000, 1050)]  # exact re-sends
    for i in range(2000, 2020):  # same id, other content
        features = preds[i]["features"]
        extra.append({**preds[i], "features": {**features, "feat_2": features["feat_2"] + 1}})
    for i in range(3000, 3030):  # a model nobody profiled, too quiet to take a first window
        extra.append({**preds[i], "model_id": "ghost", "prediction_id": preds[i]["prediction_id"] + "-ghost"})
    for i in range(5010, 5020):  # not an event
        extra.append({**preds[i], "prediction_id": preds[i]["prediction_id"] + "-bad", "features": "oops"})
    orphans = [{"schema_version": 1, "prediction_id": f"nobody-{i}", "label": "1", "model_id": "noaa",
                "timestamp": preds[4000 + i]["timestamp"]} for i in range(30)]
    out.mkdir()
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds + extra))
    (out / "labels.jsonl").write_text("".join(json.dumps(lb) + "\n" for lb in labels + orphans))


def _profile() -> bytes:
    with NOAA.open() as f:
        rows = [row for _, row in zip(range(3000), csv.DictReader(f), strict=False)]
    columns = {name: [float(r[name]) for r in rows] for name in rows[0] if name != "target"}
    columns["target"] = [r["target"] for r in rows]
    return build_profile("noaa", "1", columns, label_column="target", prediction_column=None, bins=10,
                         top_k=10, created_at_ms=START).model_dump_json().encode()


def test_noaa_with_faults_every_event_accounted_episodes_few_policy_keeps_firing(tmp_path: Path) -> None:
    scenario = Scenario(seed=2, start=START, duration_s=ROWS, rate=1, models=[
        ModelSpec(model_id="noaa", source="csv", csv_path=NOAA, label_column="target")])
    write_jsonl(scenario, tmp_path / "noaa")
    _derive(tmp_path / "noaa", tmp_path / "derived")
    settings = Settings(triggers={"cooldown_s": COOLDOWN_S})
    writer = MemoryRowWriter()
    result = replay_files(settings, "noaa-faults", writer, tmp_path / "derived" / "predictions.jsonl",
                          tmp_path / "derived" / "labels.jsonl", profiles=[_profile()])
    rows = writer.rows
    stuck_at, variance_at = START + 9_000_000, START + 14_000_000
    gone = (START + 12_000_000, START + 13_000_000)

    # every event that did not count is a row with its reason, or counted where the docs say
    kinds = defaultdict(int)
    for row in rows["dead_letters"]:
        kinds[row["error_kind"]] += 1
    assert kinds == {"conflicting_duplicate": 20, "validation_error": 10}
    overall = [r for r in rows["model_metrics"] if r["segment"] == ""]
    assert sum(r.get("n_duplicate_predictions") or 0 for r in overall) == 50
    assert sum(r.get("n_orphan_labels") or 0 for r in overall) == 30
    unjoined = defaultdict(int)
    for row in rows["unjoined_events"]:
        unjoined[(row["event_type"], row["reason"])] += 1
    assert unjoined == {("prediction", "exact_resend"): 50, ("label", "no_prediction"): 30}
    assert result.models_never_scored == [("ghost", "1")]
    lines = summary_lines(result)
    assert ("dead letters: 30 (conflicting_duplicate 20, validation_error 10); a dead_letters row each, "
            "with its reason") in lines, lines
    assert any(line.startswith("never scored, no reference: ghost v1") for line in lines), lines

    # the feature gone for 1,000 events: every one of them counted missing, also in whole windows
    feat_3 = [r for r in rows["feature_windows"] if r["feature"] == "feat_3" and r["segment"] == ""
              and r["window_size_s"] == 300 and r["model_id"] == "noaa"]
    assert sum(r["missing"] for r in feat_3) == 1000
    assert any(r["missing"] == r["count"] == 300 for r in feat_3 if gone[0] <= r["window_start"] < gone[1])

    # episodes: one row per episode under FINAL, few of them, closed ones closed for a reason
    latest: dict[str, dict[str, Any]] = {}
    for row in rows["drift_episodes"]:
        if row["episode_id"] not in latest or row["version"] >= latest[row["episode_id"]]["version"]:
            latest[row["episode_id"]] = row
    episodes = list(latest.values())
    assert len(episodes) == len(result.episode_ids) < result.rows["drift_episodes"] / 10
    assert len(episodes) <= 2 * 9  # at most two a feature (8 and the reconstruction) over 5 hours
    for e in episodes:
        assert (e["status"] == "closed") == (e["closed_at"] is not None) == (e["close_reason"] != "")
    # the stuck sensor: its episode is open at the end, read as a scale change to ~0 (sd over the
    # reference's), and none of its episodes closed back_to_reference while it was stuck (one did,
    # at 06:30:47, and a new one read the collapse as a 0.08 sd mean shift: docs/real-data.md)
    feat_1 = [e for e in episodes if e["feature"] == "feat_1"]
    assert not [e for e in feat_1 if e["status"] == "closed" and e["closed_at"] >= stuck_at], feat_1
    stuck = [e for e in feat_1 if e["status"] == "open"]
    assert len(stuck) == 1 and stuck[0]["unit"] == "sd_ratio" and stuck[0]["magnitude"] < 0.05, feat_1
    # and the episode says the change became another: an escalation of kind (its alert, and a
    # trigger past the cooldown), not a unit changed silently
    assert stuck[0]["escalation_reason"] == "kind" and stuck[0]["escalated_at"] >= stuck_at, stuck
    # the tripled variance: an episode opening or escalating after it (feat_4 had drifted +1.2 sd,
    # so its regime bank's mean CUSUM fires: an escalation, read as a shift; each shard sees ~1,000
    # values after it, fewer than a learning period, so no learned sample reads its spread)
    assert any(e["feature"] == "feat_4" and (e["opened_at"] >= variance_at
                                            or (e["escalated_at"] or 0) >= variance_at) for e in episodes)

    # the retrain policy after its first trigger: more triggers, each naming episodes, cooldown kept
    triggers = sorted(rows["retrain_triggers"], key=lambda t: t["triggered_at"])
    assert len(triggers) >= 3, triggers
    for before, after in itertools.pairwise(triggers):
        assert after["triggered_at"] - before["triggered_at"] >= COOLDOWN_S * 1000
    for trigger in triggers:
        assert json.loads(trigger["evidence"])["episodes"], trigger
