"""All benchmarks in one run, one table: every figure beside its target, plus reports/bench.json.

    .venv/bin/python bench/run_all.py [--quick] [--n 100000] [--json reports/bench.json]
                                      [--part all|broker|in-process]

Order: one embedded broker serves (1) the worker, (2) raw consume + decode and (3) the Faust agent
over the *same* produced messages, then (5) the client SDK and (6) window-close latency on fresh
topics; then the in-process figures (4) operators, (7) join state and (7d) stage 2's checkpoints
at a sustained rate, (8) detection (windows vs River
detectors), (9) sequential detectors vs River on 1M-sample streams, (10) W1 batch scoring and (11) drift
episodes vs River on real and synthetic streams, (12) the operators' per-stage breakdown, (14) 1,000
models on one worker, (15) the multivariate section's cost per event, (16) CBPE on elec2 and NOAA under
covariate shift; (13) 1 vs 2 processor workers
(scale-out) runs on the same broker after (6). Everything
runs sequentially so no figure shares the two cores with another benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0] already; make imports explicit
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_broker
import bench_detection
import bench_episodes
import bench_pipeline
import bench_scaleout
import bench_scorer
import bench_sequential
import bench_stages
import bench_window_latency
import numpy as np
from common import (
    REPO,
    Figure,
    at_least,
    at_most,
    bench_settings,
    environment,
    environment_line,
    fmt_value,
    sibling,
)
from rich.console import Console
from rich.table import Table

from driftline.client import DriftlineClient
from driftline.kafka.admin import ensure_topics
from driftline.local.broker import running_broker

CLIENT_TARGET_US = 50.0
JOIN_TARGET_BYTES = 300.0
RAW_SHARE_TARGET = 0.5
PARTS = ("all", "broker", "in-process")  # --part: all rows, those on the embedded broker, those without


def client_latency(bootstrap: str, calls: int) -> Figure:
    """(5): bench_client's measurement, paced at 10k calls/s (headline), 1k/s and unpaced."""
    bc = sibling("bench_client")
    settings = bench_settings(bootstrap, "rc")
    ensure_topics(settings)
    with DriftlineClient(settings) as client:
        bc.run(client, "warmup", min(2000, calls), None)
        client.flush(30)
        before = dict(client.stats)
        runs = {
            "1k/s": bc.run(client, "1k", max(calls // 10, 100), 1000.0),
            "10k/s": bc.run(client, "10k", calls, 10_000.0),
            "unpaced": bc.run(client, "max", calls, None),
        }
        delivered = client.flush(60)
        after = dict(client.stats)
    p = {name: np.percentile(lat, [50, 99]) / 1000 for name, lat in runs.items()}
    p99 = float(p["10k/s"][1])
    detail = ("; ".join(f"{name}: p50 {v[0]:.1f} / p99 {v[1]:.1f} us" for name, v in p.items())
              + f"; dropped {after['dropped'] - before['dropped']}, all delivered: {delivered}")
    return Figure("client_p99_us", "(5) client SDK log_prediction added latency, p99 @ 10k calls/s", p99,
                  "us",
                  f"<= {CLIENT_TARGET_US:g}", at_most(p99, CLIENT_TARGET_US), detail,
                  {name: {"p50_us": float(v[0]), "p99_us": float(v[1]), "calls": len(runs[name])}
                   for name, v in p.items()})


def join_state(n: int) -> Figure:
    """(7): bench_join_state's tracemalloc measurement (25 features: 20 floats, 3 ints, 2 strings)."""
    bjs = sibling("bench_join_state")
    per_pending = float(bjs.measure_memory(n, bjs.mixed))
    floats = float(bjs.measure_memory(max(n // 4, 1000), bjs.floats))
    return Figure("join_bytes_per_pending", "(7) join state per pending prediction", per_pending, "bytes",
                  f"<= {JOIN_TARGET_BYTES:g}", at_most(per_pending, JOIN_TARGET_BYTES),
                  f"{n:,} pending, 'mixed' profile (UUID ids); 25-float profile: {floats:.0f} bytes")


def join_checkpoints(n: int) -> list[Figure]:
    """(7b): bench_join_state's checkpoint traffic at 5,000 predictions/s with n pending (incremental
    chains vs a full snapshot per 5 s; the issue's targets are for 10M pending). Shorter intervals
    for a small n (--quick), as in (7c): 5 s of traffic would be five times the pending."""
    t = sibling("bench_join_state").measure_checkpoints(n, interval_s=min(5.0, n / 25_000))
    share, full = t.incremental_bytes_per_s / t.input_bytes_per_s, t.full_bytes_per_s / t.input_bytes_per_s
    return [Figure("join_checkpoint_share", "(7b) checkpoint bytes/s over input bytes/s", share, "x", "<= 2",
                   at_most(share, 2.0), f"{n:,} pending, 5,000 pred/s; full snapshots: {full:.1f}x"),
            Figure("join_restore_s", "(7b) restore: base + deltas", t.restore_s, "s", "<= 60",
                   at_most(t.restore_s, 60.0),
                   f"{n:,} pending, {t.restore_deltas} deltas, RSS {t.rss_mb:.0f} MB")]


def stage2_checkpoints(n: int, quick: bool) -> Figure:
    """(7d): stage 2's checkpoint traffic at a sustained rate: one model holding ``n`` outcomes in
    its open metrics interval (1,500,000: 5,000 predictions/s over the default 300 s), a base and
    deltas as the runner's byte bound cuts the chain, against the input's bytes."""
    bc = sibling("bench_checkpoints")
    m = bc.measure_stage2(bench_settings("127.0.0.1:9", "ra"), n, 1 if quick else 2)
    share = m.chain_bytes_per_s / m.input_bytes_per_s
    return Figure("stage2_checkpoint_share", "(7d) stage-2 checkpoint bytes/s over input bytes/s", share, "x",
                  "<= 2", at_most(share, 2.0),
                  f"{m.held:,} outcomes held ({m.rate:,.0f} pred/s over a {m.held / m.rate:.0f} s interval); "
                  f"a delta {m.delta_bytes / 1e6:.2f} MB in {m.delta_s * 1e3:.0f} CPU-ms, a base "
                  f"{m.base_bytes / 1e6:.1f} MB every {m.deltas_per_base} deltas; a base at every checkpoint "
                  f"(before session 50): {m.snapshot_bytes_per_s / m.input_bytes_per_s:.1f}x")


def join_spill(n: int) -> list[Figure]:
    """(7c): bench_join_state --pending: n pending under a 64 MB join.memory_budget_mb against all in
    memory (the issue's targets are for 10M pending: RSS and restore extrapolated linearly)."""
    bjs = sibling("bench_join_state")
    # Deltas every 5 s of traffic; shorter intervals for a small n (--quick), where 5 s would be
    # most of the run.
    memory, spill = bjs.measure_spill_pair(n, 64, intervals=2, interval_s=min(5.0, n / 25_000))
    scale = 10_000_000 / n
    # the table grows linearly (bench_join_state); trimmed, as the runner trims after a base
    rss = spill.rss_trimmed_mb + spill.table_mb * (scale - 1)
    # CPU time, both joins taking turns in one process: wall time, and two processes' CPU time,
    # move with the others' load
    event_cost = bjs.measure_event_cost_spawned(n, 64, steady=min(100_000, n))
    cost = event_cost.pct
    detail = f"{n:,} pending measured, {spill.spilled:,} spilled ({spill.store_mb:.0f} MB on disk)"
    chain = bjs.bounded_chain(spill)
    return [Figure("join_spill_rss_10m_mb", "(7c) RSS at 10M pending, 64 MB budget", rss, "MB", "<= 2048",
                   at_most(rss, 2048.0), detail),
            Figure("join_spill_event_cost_pct", "(7c) per-event CPU cost over in-memory", cost, "%", "<= 25",
                   at_most(cost, 25.0), f"{event_cost.budget_us:.1f} vs {event_cost.memory_us:.1f} us CPU "
                   f"taking turns; one run each: {spill.event_cpu_us:.1f} vs {memory.event_cpu_us:.1f} us "
                   f"CPU, {spill.event_us:.1f} vs {memory.event_us:.1f} us wall"),
            Figure("join_spill_restore_10m_s", "(7c) join restore at 10M (scaled; no process start)",
                   chain.restore_wall_s, "s", "<= 60", at_most(chain.restore_wall_s, 60.0),
                   f"worker.restore_target_s 60: a base every {chain.deltas} deltas, worst restore "
                   f"{chain.restore_cpu_s:.0f} s CPU + reading, {chain.restore_wall_s:.0f} s at this load; "
                   f"checkpoints {chain.checkpoint_bytes_per_s / spill.input_bytes_per_s:.1f}x input; "
                   f"a base stalls batches {chain.base_stall_s:.0f} s (scaled from {n:,})")]


def sequential_figures(quick: bool, seeds: int, tmp: Path) -> list[Figure]:
    """(9): bench_sequential's targets (driftline's CUSUM banks vs River ADWIN, same streams)."""
    path = tmp / "sequential.json"
    bench_sequential.main([*(["--quick"] if quick else ["--seeds", str(seeds)]), "--json", str(path)])
    out = []
    for check in json.loads(path.read_text())["targets"]:  # stdlib json: the file may hold NaN
        if "issue" in check["figure"] or "quiet samples vs" in check["figure"]:
            continue  # the table keeps the same-run comparison; bench_sequential prints the rest
        higher = check["figure"].startswith("updates")
        unit = "updates/s" if higher else ("per M" if "false" in check["figure"] else "samples")
        unit = "us" if check["figure"].endswith(" us") else unit
        sign = ">=" if higher else "<="
        out.append(Figure(f"seq_{check['stream']}_{check['figure'].split()[0]}",
                          f"(9) sequential, {check['stream']}: {check['figure']}", check["measured"], unit,
                          f"{sign} {fmt_value(check['target'])}", bool(check["met"]), check["verdict"]))
    return out


def episodes_figures(quick: bool, tmp: Path) -> list[Figure]:
    """(11): bench_episodes' targets (drift episodes vs River ADWIN on the same rows)."""
    path = tmp / "episodes.json"
    bench_episodes.main([*(["--quick"] if quick else []), "--json", str(path)])
    out = []
    for check in json.loads(path.read_text())["targets"]:  # stdlib json: the file may hold NaN
        words = f"{check['part']} {check['figure'].split(' vs ')[0]}".lower()
        key = "episodes_" + "_".join("".join(c if c.isalnum() else " " for c in words).split()[:8])
        sign = ">=" if check["higher_is_better"] else "<="
        detail = check["verdict"] + (f"; {check['note']}" if check["note"] else "")
        out.append(Figure(key, f"(11) episodes, {check['part']}: {check['figure']}", check["measured"],
                          check["unit"], f"{sign} {fmt_value(check['target'])}", bool(check["met"]), detail))
    return out


def w1_figures(quick: bool, tmp: Path) -> list[Figure]:
    """(10): bench_scorer's W1 case: detection at the default, score/fit speed vs scipy, memory added."""
    path = tmp / "w1.json"
    bench_scorer.main([*(["--quick"] if quick else []), "--json", str(path)])
    summary = orjson.loads(path.read_bytes())["summary"]
    default, pipeline = summary["configs"]["default"], summary["configs"]["pipeline [drift]"]
    seeds = default["of"] // 6
    scipy_ms, score_ms = summary["scipy_score_s_median"] * 1e3, summary["score_s_median"] * 1e3
    fit_ms, memory = summary["build_s_median"] * 1e3, summary["memory_added_mb_max"]
    speedup = summary["score_speedup_vs_scipy"]
    return [
        Figure("w1_seeds_met", "(10) W1 batch scorer: seeds with 6/6 drifts and 0 false flags (default)",
               default["seeds_meeting_target"], "seeds", f"{seeds} of {seeds}", bool(default["target_met"]),
               f"{default['detected']}/{default['of']} found, {default['false_flags']} false (BH q=0.01 and "
               f"effect >= 0.05 sd); the pipeline's [drift] floors (PSI 0.2 / JS 0.1 only): "
               f"{pipeline['detected']}/{pipeline['of']} found"),
        Figure("w1_score_vs_scipy", "(10) W1 batch scorer: score speed over scipy's per-column tests",
               speedup, "x", f">= {bench_scorer.SCORE_SPEEDUP_TARGET:g} x",
               at_least(speedup, bench_scorer.SCORE_SPEEDUP_TARGET),
               f"score {score_ms:.1f} ms vs scipy ks_2samp/chi2_contingency {scipy_ms:.1f} ms "
               "(medians, same run)"),
        Figure("w1_fit_ms", "(10) W1 batch scorer: fit (from_reference, 50k rows)", fit_ms, "ms",
               f"<= {scipy_ms:.1f} ms (scipy fit + score)", at_most(fit_ms, scipy_ms)),
        Figure("w1_memory_mb", "(10) W1 batch scorer: memory added during fit + score", memory, "MB",
               f"<= {bench_scorer.MEMORY_TARGET_MB:g} MB", at_most(memory, bench_scorer.MEMORY_TARGET_MB),
               "tracemalloc peak, numpy included"),
    ]


def ratio_figures(worker: Figure, raw: Figure, faust: Figure) -> list[Figure]:
    out = []
    share = worker.value / raw.value if worker.value and raw.value else None
    out.append(Figure("worker_share_of_raw", "(1)/(2) worker rate as a share of raw consume + decode",
                      None if share is None else share * 100, "%", f">= {RAW_SHARE_TARGET * 100:g} %",
                      at_least(share, RAW_SHARE_TARGET),
                      f"{fmt_value(worker.value)} vs {fmt_value(raw.value)} pred events/s (the worker also "
                      "consumes the labels and runs stage 2 and the sink in the same process)"))
    beat = worker.value / faust.value if worker.value and faust.value else None
    out.append(Figure("worker_over_faust", "(1)/(3) worker rate over the trivial Faust agent", beat, "x",
                      "> 1 x", None if beat is None else beat > 1.0,
                      f"{fmt_value(worker.value)} vs {fmt_value(faust.value)} pred events/s"))
    return out


def render(figures: Sequence[Figure], env: dict[str, Any], seconds: float) -> None:
    width = max(190, shutil.get_terminal_size((190, 40)).columns)
    console = Console(width=width)
    table = Table(title=f"driftline benchmarks ({seconds:.0f}s)", show_lines=False, expand=False)
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("met", no_wrap=True)
    table.add_column("detail", overflow="fold")
    last_section = ""
    for f in figures:
        section = f.label.split(")")[0]
        if last_section and section != last_section and not (section[:3] in ("(8", "(9") and
                                                             section[:3] == last_section[:3]):
            table.add_section()
        last_section = section
        met = "—" if f.met is None else ("[green]yes[/]" if f.met else "[red]NO[/]")
        table.add_row(f.label, fmt_value(f.value), f.unit, f.target or "—", met, f.detail)
    console.print(environment_line(env))
    console.print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, ~1 minute)")
    parser.add_argument("--n", type=int, default=100_000, help="prediction events for (1)-(4)")
    parser.add_argument("--windows", type=int, default=25, help="windows timed for (6)")
    parser.add_argument("--client-calls", type=int, default=30_000, help="calls per run for (5)")
    parser.add_argument("--join-n", type=int, default=100_000, help="pending predictions for (7)")
    parser.add_argument("--chain-n", type=int, default=None,
                        help="pending predictions for (7b) and (7c) (default: 10 x --join-n)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per stream kind for (8)")
    parser.add_argument("--seq-seeds", type=int, default=10, help="seeds per stream for (9)")
    parser.add_argument("--json", type=Path, default=REPO / "reports" / "bench.json", help="JSON output")
    parser.add_argument("--part", choices=PARTS, default="all",
                        help="the rows on the embedded broker, those without one, or all (the smoke tests "
                             "run the two parts in two files, so two test workers share them)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.windows, args.client_calls, args.join_n, args.seeds = 2_000, 3, 2_000, 2_000, 1
        # (7b) and (7c) at 2,000 pending, not 20,000: the smoke run checks they run (base, four deltas,
        # restore), a tenth of the pending does so with a fifth of the CPU (37 -> 7 CPU-s)
        args.chain_n = 2_000
    elif args.chain_n is None:
        args.chain_n = 10 * args.join_n
    return args


def broker_figures(args: argparse.Namespace, note: Callable[[str], None]) -> list[Figure]:
    """The rows on one embedded broker: (1)-(3) over the same produced messages, (5), (6) and (13)."""
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, running_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers, "ra", Path(tmp) / "home")
        produced, seconds = bench_pipeline.produce_workload(settings, args.n)
        note(f"produced {produced} with the simulator in {seconds:.1f}s "
             f"({sum(produced.values()) / seconds:,.0f} records/s)")
        worker = bench_pipeline.measure_worker(settings, args.n, produced)
        note("(1) worker done")
        raw = bench_broker.measure_raw(settings, args.n)
        note("(2) raw consume done")
        faust = bench_broker.measure_faust(settings, args.n)
        note("(3) Faust agent done")
        client = client_latency(broker.bootstrap_servers, args.client_calls)
        note("(5) client done")
        latency = bench_window_latency.measure(broker.bootstrap_servers, Path(tmp) / "latency-home",
                                               args.windows)
        note("(6) window latency done")
        scaleout = bench_scaleout.measure(broker.bootstrap_servers, broker.pid, Path(tmp) / "so", args.n)
        note("(13) scale-out done")
    return [worker, raw, faust, *ratio_figures(worker, raw, faust), client, *latency, scaleout]


def in_process_figures(args: argparse.Namespace, note: Callable[[str], None]) -> list[Figure]:
    """The rows without a broker: (4), (7)-(12), (14)-(16)."""
    figures: list[Figure] = []
    for with_profile in (False, True):
        figures.append(bench_pipeline.measure_operators(bench_settings("127.0.0.1:9", "ra"), args.n,
                                                        repeat=1 if args.quick else 2,
                                                        with_profile=with_profile))
    note("(4) operators done")
    figures.append(bench_stages.measure(args.n))
    note("(12) per-stage breakdown done")
    figures += [join_state(args.join_n), *join_checkpoints(args.chain_n), *join_spill(args.chain_n)]
    figures.append(stage2_checkpoints(3_000 if args.quick else 1_500_000, args.quick))
    note("(7) join state and stage 2's checkpoints done")
    if args.quick:
        figures += bench_detection.measure(1, 1.0, 2400.0, elec2_rows=3_600)
    else:
        figures += bench_detection.measure(args.seeds, 4.0, 7200.0)
    note("(8) detection done")
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        figures += sequential_figures(args.quick, args.seq_seeds, Path(tmp))
        note("(9) sequential detection done")
        figures += w1_figures(args.quick, Path(tmp))
        note("(10) W1 batch scoring done")
        figures += episodes_figures(args.quick, Path(tmp))
        note("(11) drift episodes done")
    bench_models = sibling("bench_models")
    figures += (bench_models.measure(bench_models.QUICK_MODELS, bench_models.QUICK_N, price_scored=False)
                if args.quick
                else bench_models.measure(1000, 200_000))
    note("(14) many models on one worker done")
    figures.append(sibling("bench_multivariate").measure(args.quick))
    note("(15) multivariate cost done")
    figures.append(sibling("bench_cbpe_real").measure(args.quick))
    note("(16) CBPE on real streams done")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    print(environment_line(env), flush=True)
    started = time.perf_counter()

    def note(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {what}", flush=True)

    figures: list[Figure] = []
    if args.part in ("all", "broker"):
        figures += broker_figures(args, note)
    if args.part in ("all", "in-process"):
        figures += in_process_figures(args, note)

    order = ["worker_events_per_s", "raw_consume_decode_per_s", "faust_agent_per_s", "worker_share_of_raw",
             "worker_over_faust", "operators_events_per_s", "operators_seq_events_per_s", "client_p99_us",
             "window_row_p50_s", "window_row_p99_s", "join_bytes_per_pending"]
    figures.sort(key=lambda f: order.index(f.key) if f.key in order else len(order))
    total = time.perf_counter() - started
    render(figures, env, total)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "part": args.part,
        "seconds": total,
        "environment": env,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "figures": [f.as_dict() for f in figures],
        "missed": [f.key for f in figures if f.met is False],
    }
    args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
