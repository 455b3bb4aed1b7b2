"""Smoke test of the benchmarks: `run_all --quick --part broker` runs the benchmarks it lists on the
embedded broker once and prints the figures each bench module's main would print (the in-process
part: test_bench_smoke_in_process.py); bench_delivery and bench_restart, not in run_all, run on their own.

No timing assertions: benchmarks report figures, they do not pass or fail on them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import orjson
import pytest


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.integration
@pytest.mark.timeout(900)  # ~100 s on an idle 2-core box; a busy one takes over the suite's 300 s
def test_run_all_quick_broker_part_prints_one_table_and_writes_json(
        bench_path: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The rows on the embedded broker; test_bench_smoke_in_process.py runs the others, so two test
    workers share run_all --quick (one file is one xdist work unit)."""
    report = tmp_path / "bench.json"
    assert _module("run_all").main(["--quick", "--part", "broker", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "driftline benchmarks" in out and "python" in out
    data = orjson.loads(report.read_bytes())
    assert data["part"] == "broker"
    keys = {f["key"] for f in data["figures"]}
    for key in ("worker_events_per_s", "raw_consume_decode_per_s", "faust_agent_per_s", "client_p99_us",
                "window_row_p99_s", "worker_share_of_raw", "worker_over_faust", "scaleout_speedup"):
        assert key in keys, key
    assert "operators_events_per_s" not in keys  # the in-process part's
    assert data["environment"]["cores"] >= 1
    worker = next(f for f in data["figures"] if f["key"] == "worker_events_per_s")
    assert worker["extra"]["input_mb"] > 0 and "shard_delta" in worker["extra"]["checkpoint_bytes"], worker
    assert "stage 2 " in worker["detail"] and "the input's" in worker["detail"], worker["detail"]
    # the scale-out row (13) runs here only (its own --quick run doubled the suite's longest file)
    scaleout = next(f for f in data["figures"] if f["key"] == "scaleout_speedup")
    assert scaleout["label"].startswith("(13) scale-out")
    for run in ("one", "two"):
        assert scaleout["extra"][run]["predictions"] > 0, scaleout["extra"][run]
    assert "cpu_efficiency" in scaleout["extra"] and "saturated" in scaleout["extra"]

    # what bench_pipeline's, bench_broker's and bench_window_latency's main print (common.print_figures),
    # printed from run_all's JSON: the same figures
    common = _module("common")
    common.print_figures([common.Figure(**f) for f in data["figures"]])
    listing = capsys.readouterr().out
    assert "(1) full pipeline" in listing and "pred events/s" in listing
    assert "(2) raw aiokafka getmany" in listing and "(3) trivial Faust counting agent" in listing
    assert "p50" in listing and "p99" in listing and "3 windows" in listing


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
