"""A replay under a run id that already has windows says so: it adds to them, so a second replay of
another range or config under the same id read back mixed with the first, unsaid."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "driftline.cli.main"]


def test_a_second_replay_under_the_same_run_id_notes_the_windows_there(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
           "DRIFTLINE_HOME": str(tmp_path / "home"),
           "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    run("simulate", "--model", "m", "--version", "1", "--rate", "2", "--duration", "900", "--seed", "1",
        "--start", "2026-12-01T00:00:00Z", "--out", str(tmp_path / "sim"))  # files only: no broker
    run("db", "migrate")
    replay = ["replay", "--run-id", "a", "--predictions", str(tmp_path / "sim" / "predictions.jsonl"),
              "--labels", str(tmp_path / "sim" / "labels.jsonl"), "--no-progress"]
    first = run(*replay)
    assert "already has" not in first.stderr
    found = re.search(r"│ model_drift\s+│\s+(\d+) │", first.stdout)
    assert found and int(found.group(1)) > 0, first.stdout
    second = run(*replay)
    note = (rf"run id 'a' already has {found.group(1)} model_drift windows \(2026-12-01T00:\d\d:00.000Z \.\. "
            r"2026-12-01T00:\d\d:00.000Z\): this replay replaces the windows it writes again and leaves the "
            r"others; use a new --run-id to compare settings or ranges\n")
    assert re.search(note, second.stderr), second.stderr
