"""`driftline simulate`: seeded model traffic with known drift, to Kafka or JSONL files.

The scenario comes from --scenario FILE (YAML or TOML, see driftline.simulate.Scenario) and/or
the flags below; flags override the file. The ground truth is printed as JSON on stdout.

Prediction ids are namespaced per run: without a seed (--seed or in the scenario file) the
traffic is seed 0's and each run draws a fresh namespace, so two runs never share ids; with a seed
the ids are the seed's, and a run repeats an earlier one exactly (sent twice, its records are
duplicates). The ground truth names the seed and the namespace; stderr the flags that repeat a run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from driftline.cli.common import one_line, require_broker, settings_from_args
from driftline.demo.training import write_training_table
from driftline.kafka.admin import ensure_topics
from driftline.replay.times import format_time
from driftline.simulate import (
    ConceptDrift,
    CovariateDrift,
    ProduceStats,
    Scenario,
    ground_truth,
    produce,
    write_jsonl,
)


def _speed(text: str) -> float | str:
    if text in ("max", "realtime"):
        return "max" if text == "max" else 1.0
    return float(text)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate", help="produce seeded model traffic with known drift (Kafka or JSONL)",
        description="Simulated predictions and delayed labels for several models, with covariate and "
                    "concept drift, champion/challenger and malformed events. Prints the ground truth.",
    )
    p.add_argument("--scenario", type=Path, help="scenario file (YAML or TOML)")
    p.add_argument("--seed", type=int, help="reproducible run: same traffic and prediction ids as any "
                   "run with this seed (default 0, the same traffic, with prediction ids of the run's own: "
                   "the ground truth's id_namespace)")
    p.add_argument("--id-namespace", metavar="NAME",
                   help="middle part of the prediction ids (default: the seed with --seed, else drawn "
                        "afresh); with --seed and --start, repeats a run exactly")
    p.add_argument("--start", help="event time of the first request (RFC 3339 or epoch ms; default: "
                   "the run ends now)")
    p.add_argument("--duration", type=float, help="simulated seconds (default 3600)")
    p.add_argument("--rate", type=float, help="requests per simulated second (default 50)")
    p.add_argument("--speed", type=_speed, help="'max' (default: back-fills history, never future "
                   "event times), 'realtime', or simulated s per wall s")
    p.add_argument("--models", type=int, help="number of models (model-1..N) when no scenario file")
    p.add_argument("--model", metavar="MODEL_ID", help="simulate one model of this id (instead of --models)")
    p.add_argument("--version", metavar="VERSION", help="model version of the simulated models (default 1)")
    p.add_argument("--training-table", type=Path, metavar="FILE",
                   help="write a drift-free training table (Parquet, or CSV by suffix) of the simulated "
                        "model for `driftline profile build` (label column 'label') and produce nothing")
    p.add_argument("--source", choices=["gaussian", "agrawal", "hyperplane", "sea", "csv"],
                   help="feature rows: gaussian (default; numeric and categorical features, a noisy "
                        "linear label), River's agrawal, hyperplane or sea generators, or csv (--csv)")
    p.add_argument("--csv", type=Path, help="feature rows from this CSV (implies --source csv)")
    p.add_argument("--label-column", help="label column of --csv")
    p.add_argument("--challenger", action="store_true", help="score each request with a challenger too")
    p.add_argument("--drift-features", help="comma-separated features with covariate drift")
    p.add_argument("--drift-at", type=float, help="covariate drift start, seconds after start")
    p.add_argument("--drift-magnitude", type=float, default=1.0,
                   help="mean shift in std units / re-draw probability (default 1)")
    p.add_argument("--concept-drift-at", type=float, help="concept drift start, seconds after start")
    p.add_argument("--concept-drift-magnitude", type=float, default=0.3,
                   help="share of traffic whose label flips (default 0.3)")
    p.add_argument("--label-delay-median", type=float, help="median label delay in seconds (lognormal)")
    p.add_argument("--label-delay-sigma", type=float, help="lognormal shape of the label delay")
    p.add_argument("--label-coverage", type=float, help="fraction of predictions labelled")
    p.add_argument("--malformed-rate", type=float, help="share of malformed prediction messages")
    p.add_argument("--out", type=Path, help="write predictions.jsonl/labels.jsonl here instead of Kafka")
    p.add_argument("--ground-truth", type=Path, help="also write the ground truth JSON to this file")
    p.set_defaults(handler=handle)


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if args.csv is not None:
        update.update(source="csv", csv_path=args.csv, label_column=args.label_column)
    elif args.source is not None:
        update["source"] = args.source
    if args.challenger:
        update["challenger"] = True
    if args.drift_features:
        if args.drift_at is None:
            raise ValueError("--drift-features needs --drift-at")
        update["covariate_drift"] = [
            CovariateDrift(feature=f.strip(), at_s=args.drift_at, magnitude=args.drift_magnitude)
            for f in args.drift_features.split(",") if f.strip()
        ]
    if args.concept_drift_at is not None:
        update["concept_drift"] = ConceptDrift(at_s=args.concept_drift_at,
                                               magnitude=args.concept_drift_magnitude)
    return update


def build_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario file (or defaults) with the command-line knobs applied."""
    base = Scenario.from_file(args.scenario) if args.scenario else Scenario()
    data = base.model_dump()
    if args.models is not None and not args.scenario:
        data["models"] = [{"model_id": f"model-{i + 1}"} for i in range(args.models)]
    if args.model is not None:
        data["models"] = [{**data["models"][0], "model_id": args.model}]
    if args.version is not None:
        data["models"] = [{**m, "version": args.version} for m in data["models"]]
    overrides = _model_overrides(args)
    data["models"] = [{**m, **overrides} for m in data["models"]]
    for flag, field in (("seed", "seed"), ("start", "start"), ("duration", "duration_s"), ("rate", "rate"),
                        ("speed", "speed"), ("label_coverage", "label_coverage"),
                        ("malformed_rate", "malformed_rate")):
        value = getattr(args, flag)
        if value is not None:
            data[field] = int(value) if flag == "start" and value.isdigit() else value
    if args.id_namespace is not None:
        data["id_namespace"] = args.id_namespace
    if args.seed is None and "seed" not in base.model_fields_set and data.get("id_namespace") is None:
        data["id_namespace"] = secrets.token_hex(4)  # a fresh namespace: this run's ids are its own
    if args.label_delay_median is not None:
        data["label_delay"]["median_s"] = args.label_delay_median
    if args.label_delay_sigma is not None:
        data["label_delay"]["sigma"] = args.label_delay_sigma
    return Scenario.model_validate(data).resolved()


def _progress(t0: float) -> Any:
    last = [0.0]

    def report(counts: Counter[str]) -> None:
        now = time.monotonic()
        if now - last[0] >= 2:
            last[0] = now
            total = sum(counts.values())
            print(f"driftline simulate: {total} records ({total / (now - t0):.0f}/s)", file=sys.stderr)

    return report


def _repeat_flags(scenario: Scenario) -> str:
    """What makes another run of the same options produce this one's records: the seed (also the
    default 0), the start the run resolved (by default "now") and, unless the seed is the ids'
    namespace, the namespace."""
    flags = f"--seed {scenario.seed} --start {format_time(scenario.start_ms())}"
    if scenario.id_namespace is not None:
        flags += f" --id-namespace {scenario.id_namespace}"
    return flags


def handle(args: argparse.Namespace) -> int:
    try:
        scenario = build_scenario(args)
        truth = ground_truth(scenario)
    except (ValidationError, ValueError, OSError) as err:
        print(f"driftline simulate: invalid scenario: {one_line(err)}", file=sys.stderr)
        return 2
    if args.training_table is not None:
        try:
            rows = write_training_table(scenario, args.training_table)
        except (ValueError, OSError) as err:
            print(f"driftline simulate: {one_line(err)}", file=sys.stderr)
            return 2
        print(f"driftline simulate: {rows} drift-free training rows to {args.training_table}",
              file=sys.stderr)
        return 0
    t0 = time.monotonic()
    stats = ProduceStats()
    if args.out is not None:
        counts = write_jsonl(scenario, args.out, stats)
        where = str(args.out)
    else:
        settings = settings_from_args(args)
        require_broker(settings)
        try:
            ensure_topics(settings)  # co-partitioned predictions/labels before anything is produced
            counts = asyncio.run(produce(scenario, settings, progress=_progress(t0), stats=stats))
        except ValueError as err:
            print(f"driftline simulate: {err}", file=sys.stderr)
            return 2
        where = f"{settings.topics.predictions} / {settings.topics.labels}"
    elapsed = time.monotonic() - t0
    total = sum(counts.values())
    rate = total / max(elapsed, 1e-9)
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"driftline simulate: {total} records to {where} in {elapsed:.1f}s ({rate:.0f}/s): {kinds}",
          file=sys.stderr)
    print(f"driftline simulate: {counts.get('predictions', 0)} prediction ids "
          f"<model>-{scenario.namespace}-<n>-v<version>"
          + (" (this run's own namespace)" if scenario.id_namespace else ""),
          file=sys.stderr)
    print(f"driftline simulate: seed {scenario.seed}; the same options with {_repeat_flags(scenario)} "
          "repeat this run", file=sys.stderr)
    if stats.first_ms is not None and stats.last_ms is not None:
        left_out = f"; {stats.labels_not_due} labels not due yet left out" if stats.labels_not_due else ""
        print(f"driftline simulate: event times {format_time(stats.first_ms)} .. "
              f"{format_time(stats.last_ms)}{left_out}", file=sys.stderr)
    text = orjson.dumps(truth, option=orjson.OPT_INDENT_2)
    if args.ground_truth is not None:
        args.ground_truth.write_bytes(text)
    sys.stdout.write(text.decode() + "\n")
    return 0
