"""Smoke test of the benchmarks: `run_all --quick` runs every benchmark it lists once and prints
the figures each bench module's main would print; bench_delivery, not in run_all, runs on its own.

No timing assertions: benchmarks report figures, they do not pass or fail on them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


@pytest.mark.integration
@pytest.mark.timeout(900)  # ~140 s on an idle 2-core box; a busy one takes over the suite's 300 s
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
    for key in ("join_spill_rss_10m_mb", "join_spill_restore_10m_s", "models_rss_gb", "models_cost_ratio",
                "multivariate_cost_overhead", "cbpe_real_max_abs_diff"):  # rows (7c), (14), (15), (16)
        assert key in keys, key
    assert data["environment"]["cores"] >= 1
    # the scale-out row (13) runs here only (its own --quick run doubled the suite's longest file)
    scaleout = next(f for f in data["figures"] if f["key"] == "scaleout_speedup")
    assert scaleout["label"].startswith("(13) scale-out")
    for run in ("one", "two"):
        assert scaleout["extra"][run]["predictions"] > 0, scaleout["extra"][run]
    assert "cpu_efficiency" in scaleout["extra"] and "saturated" in scaleout["extra"]
    _assert_bench_listings(out, data["figures"], capsys)


def _assert_bench_listings(out: str, figures: list[dict[str, Any]],
                           capsys: pytest.CaptureFixture[str]) -> None:
    """What each bench module's main prints, checked in run_all's run (each ran once, not twice).

    bench_sequential, bench_scorer and bench_episodes: run_all calls their main, so their text is
    in its output. The others' main prints its figures with common.print_figures: printed here
    from run_all's JSON, the same figures."""
    for name in ("driftline", "River ADWIN", "River PageHinkley", "River KSWIN", "River DDM", "abrupt",
                 "gradual", "error"):
        assert name in out, name
    assert "false alarms per million quiet samples" in out and "identical to update_many: True" in out
    assert "W1 batch scoring" in out and "significance only" in out
    for name in ("driftline episodes", "elec2", "noaa_weather", "error rate", "A further change",
                 "Two-phase"):
        assert name in out, name
    assert "episodes opened per 10,000 rows vs River ADWIN alarms" in out and "min effect default" in out

    common = _module("common")
    common.print_figures([common.Figure(**f) for f in figures])
    listing = capsys.readouterr().out
    assert "(1) full pipeline" in listing and "(4) pure operators" in listing and "pred events/s" in listing
    assert "(2) raw aiokafka getmany" in listing and "(3) trivial Faust counting agent" in listing
    assert "p50" in listing and "p99" in listing and "3 windows" in listing
    for name in ("driftline verdict", "KS per window", "River ADWIN", "River KSWIN", "River PageHinkley",
                 "driftline ADWIN (outcomes)", "Elec2"):
        assert name in listing, name
    assert "false alarms" in listing and "delay" in listing
    stages = next(f for f in figures if f["key"] == "stage_breakdown_us")
    for stage in ("decode + validate", "join", "windows", "detectors", "routing", "produce"):
        assert stage in stages["extra"]["us_per_event"], stage
    assert "not timed (absent)" not in stages["detail"]


@pytest.mark.integration
def test_delivery_quick_compares_batches_with_per_message_send(bench_path: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _module("bench_delivery").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "per-message send()" in out and "deliver() batches" in out and "deliver() / per-message" in out


@pytest.mark.integration
def test_restart_quick_restores_every_pending_prediction(bench_path: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """bench_restart is not in run_all (minutes at 1M): its smoke run kills a worker at 10,000
    pending and restarts it; the restarted worker holds them all and joins fresh traffic."""
    assert _module("bench_restart").main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "10,000 pending at the kill (10,000 after the restore)" in out, out
    assert "first outcome" in out and "shard 3: " in out, out
