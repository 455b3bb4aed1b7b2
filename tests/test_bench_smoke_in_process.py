"""Smoke test of the benchmarks without a broker: `run_all --quick --part in-process` runs each of
them once and prints the figures each bench module's main would print. The rows on the embedded
broker run in test_bench_smoke.py: one file is one xdist work unit, so two test workers share
run_all --quick. No timing assertions: benchmarks report figures, they do not pass or fail on them.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.timeout(900)  # ~120 s on an idle 2-core box; a busy one takes over the suite's 300 s
def test_run_all_quick_in_process_part_prints_one_table_and_writes_json(
        bench_path: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "bench.json"
    assert _module("run_all").main(["--quick", "--part", "in-process", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "driftline benchmarks" in out and "python" in out
    data = orjson.loads(report.read_bytes())
    assert data["part"] == "in-process"
    keys = {f["key"] for f in data["figures"]}
    for key in ("operators_events_per_s", "join_bytes_per_pending", "stage_breakdown_us",
                "stage2_checkpoint_share"):
        assert key in keys, key
    assert "worker_events_per_s" not in keys  # the broker part's
    stage2 = next(f for f in data["figures"] if f["key"] == "stage2_checkpoint_share")
    assert 0 < stage2["value"] < 2 and "a base at every checkpoint" in stage2["detail"], stage2
    assert any(k.startswith("detect_") for k in keys)
    assert any(k.startswith("seq_") for k in keys) and "w1_seeds_met" in keys
    assert any(k.startswith("episodes_") for k in keys)
    for key in ("join_spill_rss_10m_mb", "join_spill_restore_10m_s", "models_rss_gb", "models_cost_ratio",
                "multivariate_cost_overhead", "cbpe_real_max_abs_diff"):  # rows (7c), (14), (15), (16)
        assert key in keys, key
    assert data["environment"]["cores"] >= 1
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
    assert "(4) pure operators" in listing and "pred events/s" in listing
    for name in ("driftline verdict", "KS per window", "River ADWIN", "River KSWIN", "River PageHinkley",
                 "driftline ADWIN (outcomes)", "Elec2"):
        assert name in listing, name
    assert "false alarms" in listing and "delay" in listing
    stages = next(f for f in figures if f["key"] == "stage_breakdown_us")
    for stage in ("decode + validate", "join", "windows", "detectors", "routing", "produce"):
        assert stage in stages["extra"]["us_per_event"], stage
    assert "not timed (absent)" not in stages["detail"]


def test_run_all_without_part_runs_both_parts_into_one_table(bench_path: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The two smoke tests run a part each: the default run (no --part) must still run both, broker
    rows first, into one table and one JSON (the parts stubbed: they are what the smoke tests run)."""
    run_all, common = _module("run_all"), _module("common")
    ran: list[str] = []

    def part(name: str, key: str) -> Callable[[argparse.Namespace, Callable[[str], None]], list[Any]]:
        def figures(args: argparse.Namespace, note: Callable[[str], None]) -> list[Any]:
            ran.append(name)
            return [common.Figure(key, f"({name}) stub", 1.0, "x")]
        return figures

    monkeypatch.setattr(run_all, "broker_figures", part("broker", "stub_broker"))
    monkeypatch.setattr(run_all, "in_process_figures", part("in-process", "stub_in_process"))
    report = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--json", str(report)]) == 0
    assert ran == ["broker", "in-process"]
    data = orjson.loads(report.read_bytes())
    assert data["part"] == "all" and [f["key"] for f in data["figures"]] == ["stub_broker", "stub_in_process"]
    out = capsys.readouterr().out
    assert out.count("driftline benchmarks") == 1 and "(broker) stub" in out and "(in-process) stub" in out


def test_watch_native_bench_prints_each_c_path_beside_its_reference(
        bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_watch_native is not in run_all (operator figures, no targets): one round of each row."""
    assert _module("bench_watch_native").main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("count_quiet, 1,250", "count_quiet, 30", "codes", "reconstruction errors", "RawRecord made",
                "held group's floats", "held block fed"):
        assert row in out, row


def test_profile_diff_prints_each_function_s_cpu_in_both_runs(
        bench_path: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """profile_diff scales the samples under the timed frame to CPU per item and orders functions
    by what the first run spends beyond the second."""
    first, second = tmp_path / "many.raw", tmp_path / "one.raw"
    first.write_text("main (b.py:1);run (b.py:9);feed (p.py:3);watch (w.py:7) 60\n"
                     "main (b.py:1);run (b.py:9);feed (p.py:4);join (j.py:2) 20\n"
                     "main (b.py:1);setup (b.py:5) 500\n")
    second.write_text("main (b.py:1);run (b.py:9);feed (p.py:3);join (j.py:2) 20\n"
                      "main (b.py:1);run (b.py:9);feed (p.py:3) 10\n")
    assert _module("profile_diff").main([str(first), str(second), "--under", "run (b.py:",
                                         "--per-item", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("samples 80 and 30")
    assert [line.split() for line in lines[1:]] == [
        ["30.00", "0.00", "+30.00", "watch", "(w.py)"],  # 60 of the first run's 80 samples, 40 us an item
        ["40.00", "15.00", "+25.00", "feed", "(p.py)"],  # each line of a function counted as one
        ["10.00", "10.00", "+0.00", "join", "(j.py)"],
    ]


def test_feature_watch_shard_traffic_times_one_model_and_held_sizes(
        bench_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_feature_watch_groups --shard: one model's traffic and many models' held at each size,
    on the same shard-shaped batches (a batch's events spread over its second)."""
    bench = _module("bench_feature_watch_groups")
    monkeypatch.setattr(bench, "CALIBRATIONS", tmp_path)
    one, held, batches = bench.shard_sizes(3, [4, 16], rounds=1, batches=6)
    assert one > 0 and [size for size, _ in held] == [4, 16] and all(cost > 0 for _, cost in held)
    assert sum(count for _, _, count, _ in batches) > 0  # the held-until-16 side's batches timed
    assert all(mean > 0 for *_, count, mean in batches if count)
    spread = bench._shard_times([(None, {}, {}, [], [7, 8, 9, 10], [])] * 2)
    assert [times for *_, times, _ in spread] == [[0, 250, 500, 750], [1000, 1250, 1500, 1750]]


def test_feature_watch_grouped_times_a_call_a_model_and_the_batch_grouped(
        bench_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_feature_watch_groups --grouped: the same shard batches fed a call a model and grouped,
    both timed, their reports equal."""
    bench = _module("bench_feature_watch_groups")
    monkeypatch.setattr(bench, "CALIBRATIONS", tmp_path)
    each, grouped, equal = bench.shard_grouped(4, rounds=1, batches=6)
    assert each > 0 and grouped > 0 and equal
    then, now, equal = bench.grouped_ab(4, "HEAD", rounds=1, batches=6)  # --grouped --ab
    assert then > 0 and now > 0 and equal


def test_stage_steps_time_each_step_beside_its_reference(bench_path: None) -> None:
    """bench_stage_steps: the C normal scores, category codes, features packed, pending tails,
    digests and id keys, outcomes made, outcome messages, stage 2's record, the sample's id hashes,
    the column tally and a window's sketch buckets against their references,
    (``--baseline``) a revision's per-model records, bucket lookup, model-events records, window
    buffers, filled-window merge and partial check beside this one's (HEAD here), and held runs
    copied out model by model and together."""
    bench = _module("bench_stage_steps")
    lines = bench.measure(1, "HEAD")
    assert [line.split(",")[0] for line in lines] == [
        "normal scores", "category codes", "features packed", "pending tails", "digests and id keys",
        "outcomes made", "outcome messages", "stage 2's record", "sample id hashes",
        "bucket close", "sketch buckets", "columnar records", "bucket lookup", "model-events records",
        "window buffers", "filled window merged", "partial checked on arrival", "held runs copied out"]
    assert all(line.endswith("x)") for line in lines), lines
    assert all("of 202 models" in lines[i] for i in (11, 13, 14))  # the Zipf batch's models


@pytest.mark.timeout(600)
def test_revisions_time_a_revision_built_in_a_worktree_beside_this_tree(bench_path: None) -> None:
    """bench_revisions: HEAD checked out in a worktree with its C extensions compiled there, its
    children importing that tree (checked by the bench), alternating with this tree's; the
    worktree removed after."""
    bench = _module("bench_revisions")
    before = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True,
                            cwd=bench.ROOT).stdout
    old, new, line = bench.measure("HEAD", 2_000, 1, 1, full_precision=True)
    assert old > 0 and new > 0 and line.startswith("in-process pipeline, HEAD against this tree:"), line
    assert line.endswith("floats of 16-17 digits"), line
    assert subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True,
                          cwd=bench.ROOT).stdout == before


def test_decode_bench_writes_floats_with_all_their_digits(
        bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_decode --full-precision: the workload's floats printed with 16-17 digits (past the C
    pass's exact path), the same events decoded with the C pass on, off and HEAD's (built in a
    worktree, removed after)."""
    bench = _module("bench_decode")
    _, batches, _ = bench.workload_batches(200, full_precision=True)
    texts = [r.value for kind, records in batches if kind == "predictions" for r in records]
    floats = [v for text in texts for v in orjson.loads(text)["features"].values() if type(v) is float]
    digits = [len(repr(abs(v)).split("e")[0].replace(".", "").lstrip("0")) for v in floats]
    assert sum(d >= 16 for d in digits) > 0.85 * len(digits), digits
    before = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True,
                            cwd=Path(bench.__file__).parent).stdout
    assert bench.main(["--quick", "--full-precision", "--without-c", "--c-revision", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "floats of 16-17 digits" in out and "tree / without C" in out and "tree / HEAD's C pass" in out
    assert subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True,
                          cwd=Path(bench.__file__).parent).stdout == before


def test_profile_parse_prints_one_parse_and_the_shared_reads(
        bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_profile_parse: a profile parsed with and without a section, its sketches' checks, the
    same parses with a revision's profile.py (HEAD here), and distinct profiles read by several
    stages both ways."""
    assert _module("bench_profile_parse").main(["--models", "3", "--readers", "2", "--rounds", "1",
                                                "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "parsed and checked:" in out and "with a multivariate section" in out
    assert "plain: HEAD's parse" in out and "with a section: HEAD's parse" in out
    assert "3 profiles read by 2 stages: parsed each time" in out and "parse_profile" in out


def test_stage2_checks_print_the_decode_and_the_partial_check_against_a_revision(
        bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_stage2_checks: a stacked outcomes record decoded and partials checked, each with a
    revision's module (HEAD here) and today's."""
    assert _module("bench_stage2_checks").main(["--baseline", "HEAD", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "alternating with HEAD's modules" in lines[0], lines
    assert "ns an outcome" in lines[1] and "us a partial" in lines[2] and lines[2].endswith("x)"), lines


def test_watch_replay_records_a_workload_s_watch_calls_and_replays_them_to_both_sides(
        bench_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_watch_replay: the shards' watch calls of a kept bench_models workload recorded, then
    one batch fed again and again and (``--whole``) every call replayed to HEAD's FeatureWatch and
    today's, both timed, their results equal."""
    models = _module("bench_models")
    bench = _module("bench_watch_replay")
    monkeypatch.setattr(models, "CALIBRATIONS", tmp_path / "calibrations")
    settings = models.settings_for(4)
    specs = models.model_specs(3)
    profiles = models.profiles_of(specs, 300, settings)
    with (tmp_path / "many.pickle").open("wb") as f:
        pickle.dump((profiles, models.traffic(specs, 3_000, settings, rate=40.0)), f)
    recording = bench.record(tmp_path)
    assert sorted(recording) == [0, 1, 2, 3]
    named = [pickle.loads(call)[0] for _, calls in recording.values() for call in calls]
    assert "observe_grouped" in named
    bench._baseline_watch_class("HEAD", tmp_path)
    then, now, groups = bench.repeated_batch(recording, repeat=2, rounds=1)
    assert then > 0 and now > 0 and groups > 1
    best, equal = bench.replay({0: recording[0]}, rounds=1)
    assert equal and best[(True, "observe_grouped")] > 0 and best[(False, "observe_grouped")] > 0


def test_models_feeds_finds_the_closing_feeds_once_then_feeds_the_others_apart(
        bench_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """bench_models_feeds: a first run (a child) keeps which timed feeds close a window, then the
    workload is fed with the others through feed_between, their CPU a prediction printed."""
    models = _module("bench_models")
    bench = _module("bench_models_feeds")
    monkeypatch.setattr(bench, "CALIBRATIONS", tmp_path / "calibrations")
    settings = models.settings_for(4)
    specs = models.model_specs(2)
    # 12,000 predictions at 40/s: 300 s of event time, so a window closes in the timed part
    workload = (models.profiles_of(specs, 300, settings), models.traffic(specs, 12_000, settings, rate=40.0))
    with (tmp_path / "one.pickle").open("wb") as f:
        pickle.dump(workload, f)
    assert bench.main(["--data", str(tmp_path), "one"]) == 0  # the child's first run, then this one's
    closing = orjson.loads((tmp_path / "closing-one.json").read_text())
    assert closing and closing == bench.run(tmp_path, "one", set(closing))[0]
    out = capsys.readouterr().out
    assert out.startswith("one: ") and "--under feed_between --per-item" in out, out


def test_sink_outcomes_times_both_ways_and_checks_their_rows(
        bench_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_sink_outcomes writes the workload's outcome messages and sink messages row by row and
    through the C pass into an embedded ClickHouse (it fails where the tables differ) and prints
    both ways' CPU for each."""
    assert _module("bench_sink_outcomes").main(["--n", "600", "--batch", "200", "--rounds", "1",
                                                "--replay", "300"]) == 0
    out = capsys.readouterr().out
    assert out.count("row by row   stage") == out.count("C pass       stage") == 2, out
    assert "a replay of 300 predictions" in out, out
