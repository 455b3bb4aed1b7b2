"""Soak: 10 minutes of paced traffic through the real worker (bench/soak.py): RSS flat after
warm-up and processor state bounded by the label horizon. Skipped unless DRIFTLINE_SOAK=1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.soak]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.timeout(1200)
def test_ten_minute_soak_keeps_memory_and_state_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "soak",
            "--duration",
            "600",
            "--rate",
            "100",
            "--sample",
            "10",
            "--json",
            str(out),
        ],
        capture_output=True,
        timeout=1100,
    )
    assert out.exists(), result.stderr.decode()[-3000:]
    report = orjson.loads(out.read_bytes())
    print({k: v for k, v in report.items() if k != "series"})
    assert report["ok"], {k: v for k, v in report.items() if k != "series"}
    assert result.returncode == 0
