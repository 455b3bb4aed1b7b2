"""Smoke test of bench_detector_replay: the recorded calls replay on a baseline (here the same
modules, loaded from their files as another revision's would be) with the same results."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPERATORS = ROOT / "src" / "driftline" / "operators"


def test_replay_against_a_baseline_reports_and_compares(bench_path: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    replay = importlib.import_module("bench_detector_replay")
    code = replay.main(["--n", "3000", "--rounds", "1", "--sequential", str(OPERATORS / "sequential.py"),
                        "--multivariate", str(OPERATORS / "multivariate.py")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "CUSUM step" in out and "current/baseline" in out
    assert "same alarms, statistics, symbols and scores as the baseline: True" in out
