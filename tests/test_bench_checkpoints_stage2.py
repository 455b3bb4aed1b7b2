"""bench/bench_checkpoints.py --stage2-outcomes: stage 2's checkpoints priced against the input
(stage 2 keeps every outcome of an open metrics interval): a base at every checkpoint against a
chain of a base and deltas of what the buckets gained."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest


def test_stage2_checkpoints_price_the_outcomes_an_interval_holds(
        bench_module: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_module("bench_checkpoints").main(["--stage2-outcomes", "3000", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    held = re.search(r"one model holding ([\d,]+) outcomes of one 300 s interval: RSS \+\d+ MB", out)
    assert held and held.group(1) == "3,000", out
    delta = re.search(r"at 10 predictions/s and a checkpoint every 5 s: a delta of ([\d,]+) outcomes", out)
    assert delta and delta.group(1) == "50", out
    every = re.search(r"a base at every checkpoint: [\d.]+ MB/s, ([\d.]+)x the input", out)
    chain = re.search(r"a base and (\d+) deltas \(checkpoint_delta_ratio 1\): [\d.]+ MB/s, "
                      r"([\d.]+)x the input", out)
    assert every and chain and int(chain.group(1)) > 1, out
    assert 0 < float(chain.group(2)) < float(every.group(1)) / 2, out
