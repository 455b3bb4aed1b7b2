"""bench/bench_checkpoints.py --stage2-outcomes: stage 2's whole snapshot priced against the input
(stage 2 keeps every outcome of an open metrics interval; its checkpoints have no deltas)."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest


def test_stage2_snapshot_prices_the_outcomes_an_interval_holds(
        bench_module: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_module("bench_checkpoints").main(["--stage2-outcomes", "3000", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    held = re.search(r"one model holding ([\d,]+) outcomes of one 300 s interval: RSS \+\d+ MB", out)
    assert held and held.group(1) == "3,000", out
    ratio = re.search(r"at 10 predictions/s and a checkpoint every 5 s: [\d.]+ MB/s of stage-2 snapshots "
                      r"against [\d.]+ MB/s of input \(([\d.]+)x", out)
    assert ratio and float(ratio.group(1)) > 0, out
