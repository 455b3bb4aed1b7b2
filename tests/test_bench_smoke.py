"""Smoke test of the benchmarks: each bench module's main runs with --quick and prints its figures.

No timing assertions: benchmarks report figures, they do not pass or fail on them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import orjson
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_detection_quick_prints_every_detector(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_detection").main(["--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("driftline verdict", "KS per window", "River ADWIN", "River KSWIN", "River PageHinkley",
                 "driftline ADWIN (outcomes)", "Elec2"):
        assert name in out
    assert "false alarms" in out and "delay" in out


@pytest.mark.integration
def test_pipeline_quick_prints_worker_and_operator_rates(bench_path: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_pipeline").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "(1) full pipeline" in out and "(4) pure operators" in out and "pred events/s" in out


@pytest.mark.integration
def test_broker_quick_prints_raw_and_faust_rates(bench_path: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_broker").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "(2) raw aiokafka getmany" in out and "(3) trivial Faust counting agent" in out


@pytest.mark.integration
def test_window_latency_quick_prints_percentiles(bench_path: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_window_latency").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "p50" in out and "p99" in out and "3 windows" in out


@pytest.mark.integration
def test_run_all_quick_prints_one_table_and_writes_json(bench_path: None, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "bench.json"
    assert _module("run_all").main(["--quick", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "driftline benchmarks" in out and "python" in out
    data = orjson.loads(report.read_bytes())
    keys = {f["key"] for f in data["figures"]}
    for key in ("worker_events_per_s", "raw_consume_decode_per_s", "faust_agent_per_s",
                "operators_events_per_s", "client_p99_us", "window_row_p99_s", "join_bytes_per_pending",
                "worker_share_of_raw", "stage_breakdown_us", "scaleout_speedup"):
        assert key in keys
    assert any(k.startswith("detect_") for k in keys)
    assert any(k.startswith("seq_") for k in keys) and "w1_seeds_met" in keys
    assert any(k.startswith("episodes_") for k in keys)
    assert data["environment"]["cores"] >= 1
    # the scale-out row (13) runs here only (its own --quick run doubled the suite's longest file)
    scaleout = next(f for f in data["figures"] if f["key"] == "scaleout_speedup")
    assert scaleout["label"].startswith("(13) scale-out")
    for run in ("one", "two"):
        assert scaleout["extra"][run]["predictions"] > 0, scaleout["extra"][run]
    assert "cpu_efficiency" in scaleout["extra"] and "saturated" in scaleout["extra"]


def test_sequential_quick_prints_every_detector_and_target(bench_path: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_sequential").main(["--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("driftline", "River ADWIN", "River PageHinkley", "River KSWIN", "River DDM", "abrupt",
                 "gradual", "error"):
        assert name in out, name
    assert "false alarms per million quiet samples" in out and "identical to update_many: True" in out


def test_episodes_quick_prints_every_part_and_target(bench_path: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_episodes").main(["--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("driftline episodes", "River ADWIN", "River PageHinkley", "River KSWIN", "elec2",
                 "noaa_weather", "abrupt", "gradual", "error rate", "A further change", "Two-phase"):
        assert name in out, name
    assert "episodes opened per 10,000 rows vs River ADWIN alarms" in out and "min effect default" in out


def test_scorer_quick_prints_the_w1_case(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_scorer").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "W1 batch scoring" in out and "significance only" in out


@pytest.mark.integration
def test_delivery_quick_compares_batches_with_per_message_send(bench_path: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_delivery").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "per-message send()" in out and "deliver() batches" in out and "deliver() / per-message" in out


def test_stages_quick_names_every_stage(bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_stages").main(["--quick"]) == 0
    out = capsys.readouterr().out
    for stage in ("decode + validate", "join", "windows", "detectors", "routing", "produce"):
        assert f"  {stage} " in out
    assert "not timed (absent)" not in out
