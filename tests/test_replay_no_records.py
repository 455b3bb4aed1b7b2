"""A replay that reads nothing says where it looked and how to widen it (the README's example dates
printed "no records in the range" alone), its lines into a log are not cut at 80 columns, and it
names the settings it ran with (the README's two runs compared by backtest can look alike)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from driftline.config import load_settings

CLI = [sys.executable, "-m", "driftline.cli.main"]


def test_a_file_replay_of_an_empty_range_names_the_file_the_range_and_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
           "DRIFTLINE_HOME": str(tmp_path / "home"),
           "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "COLUMNS": "40"}  # what rich takes for the width off a terminal
    migrated = subprocess.run([*CLI, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(orjson.dumps({
        "prediction_id": "p1", "model_id": "m", "model_version": "1", "timestamp": 1_796_400_000_000,
        "features": {"x": 1.0}, "prediction": {"label": "a"}}) + b"\n")
    strict = tmp_path / "strict.toml"
    strict.write_text("[drift]\npsi_threshold = 0.1\n")
    proc = subprocess.run([*CLI, "replay", "--run-id", "oct", "--config", str(strict),
                           "--predictions", str(predictions), "--from", "2026-10-01T00:00:00Z",
                           "--to", "2026-11-01T00:00:00Z", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        f"no records in {predictions} from 2026-10-01T00:00:00.000Z before 2026-11-01T00:00:00.000Z (by "
        "record timestamp): leave --from/--to out to replay all of them")
    for name in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(name)
    config_hash = load_settings(strict).config_hash()
    assert config_hash != load_settings().config_hash()
    assert (f"replaying 0 records from files, 0 reference profile(s), run id 'oct', settings config_hash "
            f"{config_hash} (from {strict})\n") in proc.stderr
