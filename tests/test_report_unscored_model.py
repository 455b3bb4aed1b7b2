"""`driftline report` on a model that has events but nothing scored (no reference profile, too few
events a window to take one, no labels) says so; it said "unknown model" while the model's events
were in feature_windows (found replaying NOAA with 30 events of an unprofiled model)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from driftline.cli.main import main

START = 1_767_225_600_000


def test_report_of_a_model_with_events_but_no_reference_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    events = [{"schema_version": 1, "prediction_id": f"g{i}", "model_id": "ghost", "model_version": "1",
               "timestamp": START + i * 20_000, "features": {"x": float(i)},
               "prediction": {"label": "a", "score": 0.5}} for i in range(30)]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", f"chdb://{tmp_path / 'ch'}")
    assert main(["db", "migrate"]) == 0
    assert main(["replay", "--run-id", "r", "--no-progress", "--predictions", str(predictions)]) == 0
    capsys.readouterr()
    assert main(["report", "--model", "ghost", "--run-id", "r", "--out", str(tmp_path / "g.html")]) == 2
    err = capsys.readouterr().err
    assert "model 'ghost' has events in run 'r' (feature_windows) but nothing scored and no outcomes" in err
    assert not (tmp_path / "g.html").exists()
