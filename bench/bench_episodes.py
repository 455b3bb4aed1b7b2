"""Drift episodes (issue 12): driftline's EpisodeMonitor beside River's detectors on the same rows.

Four parts, one run:

1. **Real streams** (``/work/shared/data``): elec2 (7 features, ``date`` left out) and noaa_weather
   (8 features); the reference is the first 5,000 rows, every later row is fed in order. Per
   feature an :class:`~driftline.operators.episodes.EpisodeMonitor` (``arl =
   feature_arl(1e6, n_features)``, default minimum effect 0.1 sd, micro-batches of 1,000), the raw
   calibrated bank (``NumericDetector``, no minimum effect: the issue's "3,734 vs 182" figure) and
   River ADWIN / PageHinkley / KSWIN at their defaults on the raw values. Counts per 10,000 rows,
   summed over features: episodes opened (the rows a user sees), escalations and closes reported
   apart, alarms of the others. Target: opened <= ADWIN's alarms.
2. **Synthetic W2** (``bench_sequential``'s streams: 1,000,000 samples, change at 500,000; abrupt
   +0.3 sd, a 0 -> 0.3 sd ramp over 50,000, error rate 0.10 -> 0.15; reference 50,000 values):
   the monitor at ``min_effect=0`` and at the default minimum effect (0.1 sd; error rate x1.1),
   ADWIN / PageHinkley / KSWIN beside. Delay = first opening (or escalation, if a false opening
   was still open) at or after the change; false alarms = openings before it, per million quiet
   samples. Targets: <= 1 per million; delay <= ADWIN's.
   A minimum effect costs delay by construction: a shift ``d`` accrues evidence at the rate of
   ``d - min_effect``, and a ramp is seen only once it has passed the minimum effect.
   "events after the change" shows what a lasting shift costs a user: one episode (plus any
   escalation) against one alarm per renewal of a raw detector.
3. **A further change**: 0 -> d at 5,000, then d -> 2d at 13,000 (after the regime is learned),
   d = 0.3 and 0.5 sd. Target (issue): delay on the second change <= 2x the delay on the first.
4. **Two-phase scenario**: 12 features (normal, lognormal, Poisson and uniform marginals), 60,000
   rows; features 0-3 move +0.3 sd at 1/3, features 4-7 move +0.6 sd at 2/3, both lasting,
   features 8-11 stay clean. Target: exactly one episode per shifted feature in its phase, none on
   clean features, in every seed (ADWIN's alarms on the same rows beside).

    .venv/bin/python bench/bench_episodes.py [--seeds 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_sequential as seqb
import numpy as np
from river import drift as river_drift

from driftline.operators.episodes import DEFAULT_MIN_EFFECT_SD, DEFAULT_MIN_RATE_RATIO, EpisodeMonitor
from driftline.operators.sequential import NumericDetector, feature_arl

DATA = Path("/work/shared/data")
REAL = {"elec2": ("elec2.csv", ("date", "class")), "noaa_weather": ("noaa_weather.csv", ("target",))}
REFERENCE_ROWS = 5_000
MODEL_ARL = 1_000_000.0
RIVER: dict[str, Callable[[], Any]] = {
    "River ADWIN": river_drift.ADWIN,
    "River PageHinkley": river_drift.PageHinkley,
    "River KSWIN": river_drift.KSWIN,
}
OURS = "driftline episodes"
RAW = "driftline raw bank (no episodes)"
TWO_PHASE_N, TWO_PHASE_FEATURES = 60_000, 12


def feed(mon: EpisodeMonitor, x: np.ndarray, batch: int = seqb.BATCH) -> list[Any]:
    return [e for i in range(0, x.size, batch) for e in mon.update_many(x[i : i + batch])]


def river_alarms(make: Callable[[], Any], values: list[float]) -> int:
    det = make()
    count = 0
    for v in values:
        det.update(v)
        count += det.drift_detected
    return count


# -- 1. real streams ---------------------------------------------------------------------------------


def load(name: str, rows: int | None) -> dict[str, np.ndarray]:
    file, dropped = REAL[name]
    with (DATA / file).open(newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        table = [row for _, row in zip(range(rows or 10**9), reader, strict=False)]
    return {c: np.array([float(r[k]) for r in table]) for k, c in enumerate(head) if c not in dropped}


def real_streams(quick: bool) -> list[dict[str, Any]]:
    out = []
    for name in REAL:
        data = load(name, 7_000 if quick else None)  # quick: 2,000 rows after the reference
        arl = feature_arl(MODEL_ARL, len(data))
        counts: dict[str, float] = {"opened": 0, "escalated": 0, "closed": 0, RAW: 0}
        counts |= dict.fromkeys(RIVER, 0)
        per_feature: dict[str, dict[str, int]] = {}
        rows = 0
        for col, x in data.items():
            ref, rest = x[:REFERENCE_ROWS], x[REFERENCE_ROWS:]
            rows = rest.size
            events = feed(EpisodeMonitor.from_reference(ref, arl=arl), rest)
            raw = NumericDetector.from_reference(ref, arl=arl)
            raw_alarms = sum(len(raw.update_many(rest[i : i + seqb.BATCH]))
                             for i in range(0, rest.size, seqb.BATCH))
            row = {kind: sum(e.kind == kind for e in events) for kind in ("opened", "escalated", "closed")}
            row[RAW] = raw_alarms
            values = rest.tolist()
            for det, make in RIVER.items():
                row[det] = river_alarms(make, values)
            per_feature[col] = row
            for k, v in row.items():
                counts[k] += v
        per_10k = {k: 1e4 * v / rows for k, v in counts.items()}
        out.append({"stream": name, "features": len(data), "rows": rows, "arl": arl, "per_10k_rows": per_10k,
                    "per_feature": per_feature})
    return out


# -- 2. W2 ------------------------------------------------------------------------------------------


@dataclass
class W2Row(seqb.Row):
    after_change: list[int] = field(default_factory=list)  # events (or alarms) from the change on


def monitor_for(kind: str, seed: int, default_effect: bool) -> EpisodeMonitor:
    ref = seqb.reference(kind, seed)
    if kind == "error rate":
        ratio = DEFAULT_MIN_RATE_RATIO if default_effect else 1.0
        return EpisodeMonitor.from_rate(float(ref.mean()), arl=seqb.ARL, n_reference=ref.size,
                                        min_ratio=ratio)
    effect = DEFAULT_MIN_EFFECT_SD if default_effect else 0.0
    return EpisodeMonitor.from_reference(ref, arl=seqb.ARL, min_effect=effect)


def w2(seeds: int, n: int, change: int, kswin_span: int) -> list[W2Row]:
    rows: list[W2Row] = []
    for kind in seqb.STREAMS:
        by_name: dict[str, W2Row] = {}
        for seed in range(seeds):
            x = seqb.stream(kind, seed, n, change)
            for default_effect in (False, True):
                label = f"{OURS}, min effect {'default' if default_effect else '0'}"
                row = by_name.setdefault(label, W2Row(kind, label))
                mon = monitor_for(kind, seed, default_effect)
                t = [time.process_time()]
                quiet = feed(mon, x[:change])
                t.append(time.process_time())
                after = feed(mon, x[change:])
                t.append(time.process_time())
                # a false opening before the change may still be open at it: then the change is an
                # escalation, which a user sees as well
                alarms = [e.index for e in quiet if e.kind == "opened"]
                alarms += [e.index for e in after if e.kind in ("opened", "escalated")]
                seqb.score(row, alarms, change, 0, (t[1] - t[0], t[2] - t[1]), x.size)
                row.after_change.append(len(after))
                row.note = "events after the change: " + ", ".join(map(str, row.after_change))
            for name, make in RIVER.items():
                row = by_name.setdefault(name, W2Row(kind, name))
                if name == "River KSWIN":
                    if seed >= seqb.KSWIN_SEEDS:
                        continue
                    lo, hi = max(0, change - kswin_span), min(x.size, change + kswin_span)
                    got, seconds = seqb.run_river(x[lo:hi], make, change, offset=lo)
                    seqb.score(row, got, change, lo, seconds, hi - lo)
                    row.note = f"segment [{lo:,}, {hi:,}), {min(seeds, seqb.KSWIN_SEEDS)} seed(s)"
                    continue
                got, seconds = seqb.run_river(x, make, change)
                seqb.score(row, got, change, 0, seconds, x.size)
                row.after_change.append(sum(1 for a in got if a >= change))
                row.note = "alarms after the change: " + ", ".join(map(str, row.after_change))
        for row in by_name.values():
            runs = max(len(row.delays) + row.missed, 1)
            row.updates_per_s /= runs
            row.quiet_updates_per_s /= runs
        rows.extend(by_name.values())
    return rows


# -- 3. a further change -----------------------------------------------------------------------------


def further_change(seeds: int) -> list[dict[str, Any]]:
    out = []
    for shift in (0.3, 0.5):
        first: list[int] = []
        second: list[int] = []
        missed = 0
        for seed in range(seeds):
            rng = np.random.default_rng(500 + seed)
            mon = EpisodeMonitor.from_reference(rng.normal(size=seqb.REFERENCE), arl=seqb.ARL)
            x = np.concatenate([rng.normal(0, 1, 5_000), rng.normal(shift, 1, 8_000),
                                rng.normal(2 * shift, 1, 8_000)])
            events = feed(mon, x)
            opened = [e.index - 5_000 for e in events if e.kind == "opened" and e.index >= 5_000]
            larger = [e.index - 13_000 for e in events if e.kind == "escalated" and e.index >= 13_000]
            if opened and larger:
                first.append(opened[0])
                second.append(larger[0])
            else:
                missed += 1
        ratio = float(np.mean(second) / np.mean(first)) if first else float("nan")
        out.append({"shift": shift, "first_delays": first, "second_delays": second, "missed": missed,
                    "mean_first": float(np.mean(first)) if first else None,
                    "mean_second": float(np.mean(second)) if second else None, "ratio": ratio})
    return out


# -- 4. two-phase scenario ---------------------------------------------------------------------------


def _marginal(f: int, rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """Values of feature ``f`` and its population sd (marginals cycle over four families)."""
    family = f % 4
    if family == 0:
        return rng.normal(size=n), 1.0
    if family == 1:
        return rng.lognormal(0.0, 0.5, n), float(np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)))
    if family == 2:
        return rng.poisson(4.0, n).astype(np.float64), 2.0
    return rng.uniform(0.0, 1.0, n), float(np.sqrt(1 / 12))


def two_phase(seeds: int, n: int = TWO_PHASE_N) -> dict[str, Any]:
    arl = feature_arl(MODEL_ARL, TWO_PHASE_FEATURES)
    exact = 0
    groups = {"moderate (+0.3 sd at 1/3)": range(0, 4), "larger (+0.6 sd at 2/3)": range(4, 8),
              "clean": range(8, 12)}
    totals = {g: {"opened": 0, "escalated": 0, "closed": 0, "River ADWIN": 0} for g in groups}
    for seed in range(seeds):
        rng = np.random.default_rng(900 + seed)
        ok = True
        for group, feats in groups.items():
            for f in feats:
                ref, sd = _marginal(f, rng, 20_000)
                x, _ = _marginal(f, rng, n)
                start = {0: n // 3, 1: 2 * n // 3}.get(f // 4)
                if start is not None:
                    x[start:] += (0.3 if f < 4 else 0.6) * sd
                events = feed(EpisodeMonitor.from_reference(ref, arl=arl), x, batch=500)
                for kind in ("opened", "escalated", "closed"):
                    totals[group][kind] += sum(e.kind == kind for e in events)
                totals[group]["River ADWIN"] += river_alarms(river_drift.ADWIN, x.tolist())
                if start is None:
                    ok &= not events
                else:
                    ok &= [e.kind for e in events] == ["opened"] and start <= events[0].index
        exact += ok
    return {"seeds": seeds, "seeds_exact": exact, "rows": n, "features": TWO_PHASE_FEATURES, "arl": arl,
            "totals": totals}


# -- report -----------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 0) -> str:
    return seqb.fmt(v, digits)


def check(checks: list[dict[str, Any]], part: str, figure: str, measured: float | None, target: float,
          unit: str, higher_is_better: bool = False, note: str = "") -> None:
    ok = measured is not None and measured == measured and (
        measured >= target if higher_is_better else measured <= target)
    word = "met" if ok else ("not measured" if measured is None else
                             seqb.verdict(False, measured, target, higher_is_better))
    sign = ">=" if higher_is_better else "<="
    print(f"  {part:14s} {figure:58s} {fmt(measured, 1):>10s}  target {sign} {fmt(target, 1):>9s}  "
          f"{word}{'  (' + note + ')' if note else ''}")
    checks.append({"part": part, "figure": figure, "measured": measured, "target": target, "met": ok,
                   "verdict": word, "note": note, "unit": unit, "higher_is_better": higher_is_better})


def report(real: list[dict[str, Any]], rows: list[W2Row], further: list[dict[str, Any]],
           phases: dict[str, Any], n: int, change: int, seeds: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    print("\n1. Real streams: reference = first 5,000 rows, counts per 10,000 later rows (all features)")
    names = ["opened", "escalated", "closed", RAW, *RIVER]
    print(f"{'stream':13s} " + " ".join(f"{k[:26]:>26s}" for k in names))
    for r in real:
        print(f"{r['stream']:13s} " + " ".join(f"{fmt(r['per_10k_rows'][k], 1):>26s}" for k in names)
              + f"   ({r['features']} features, {r['rows']:,} rows)")
    print(f"\n2. Synthetic W2: {n:,} samples, change at {change:,}, {seeds} seed(s), arl {seqb.ARL:g}")
    head = f"{'stream':11s} {'detector':42s} {'mean delay':>11s} {'missed':>7s} {'FA/M quiet':>11s}  note"
    print(head)
    print("-" * len(head))
    for row in rows:
        missed = f"{row.missed}/{len(row.delays) + row.missed}"
        print(f"{row.stream:11s} {row.detector:42s} {fmt(row.mean_delay):>11s} {missed:>7s} "
              f"{fmt(row.fa_per_million, 1):>11s}  {row.note}")
    print("\n3. A further change inside an episode (0 -> d at 5,000, d -> 2d at 13,000)")
    for f in further:
        print(f"  d = {f['shift']}: first change {fmt(f['mean_first'])} samples, "
              f"second {fmt(f['mean_second'])} (ratio {f['ratio']:.2f}; missed {f['missed']})")
    print(f"\n4. Two-phase scenario: {phases['features']} features, {phases['rows']:,} rows, "
          f"{phases['seeds']} seed(s)")
    for group, t in phases["totals"].items():
        print(f"  {group:28s} opened {t['opened']:3d}  escalated {t['escalated']:3d}  closed {t['closed']:3d}"
              f"   River ADWIN alarms {t['River ADWIN']:4d}")

    print("\nTargets (driftline vs target)")
    for r in real:
        p = r["per_10k_rows"]
        check(checks, r["stream"], "episodes opened per 10,000 rows vs River ADWIN alarms", p["opened"],
              p["River ADWIN"], "per 10k rows",
              note=f"escalations {p['escalated']:.1f}, raw bank {p[RAW]:,.0f}")
    for kind in seqb.STREAMS:
        adwin = next(r for r in rows if r.stream == kind and r.detector == "River ADWIN")
        for variant in ("0", "default"):
            ours = next(r for r in rows if r.stream == kind and r.detector.endswith(f"min effect {variant}"))
            tag = f"{kind}, effect {variant}"
            check(checks, tag, "false alarms (openings) per million quiet samples", ours.fa_per_million, 1.0,
                  "per M")
            delay = ours.mean_delay if not ours.missed else None
            target = adwin.mean_delay if adwin.mean_delay is not None else seqb.ISSUE_ADWIN_DELAY[kind]
            note = f"missed {ours.missed}" if ours.missed else ""
            if variant == "default":
                note = (note + "; " if note else "") + "a minimum effect delays by construction"
            check(checks, tag, "mean delay vs River ADWIN (this run)", delay, target, "samples", note=note)
    for f in further:
        check(checks, f"further, d={f['shift']}", "delay on a 2nd change / delay on a 1st of the same size",
              f["ratio"] if not f["missed"] else None, 2.0, "ratio")
    check(checks, "two-phase", "seeds with exactly one episode per shifted feature, none clean",
          float(phases["seeds_exact"]), float(phases["seeds"]), "seeds", higher_is_better=True)
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the synthetic parts")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 7,000 real rows, 1 seed, W2 on 20,000 samples (change at 10,000)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    seeds, n, change, kswin = args.seeds, seqb.N, seqb.CHANGE, seqb.KSWIN_QUIET
    if args.quick:
        seeds, n, change, kswin = 1, 20_000, 10_000, seqb.QUICK_KSWIN
    t0 = time.perf_counter()
    real = real_streams(args.quick)
    rows = w2(seeds, n, change, kswin)
    further = further_change(max(seeds, 2) * (1 if args.quick else 2))
    phases = two_phase(seeds, 15_000 if args.quick else TWO_PHASE_N)
    checks = report(real, rows, further, phases, n, change, seeds)
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    if args.json is not None:
        settings = {"n": n, "change": change, "seeds": seeds, "arl": seqb.ARL, "model_arl_real": MODEL_ARL,
                    "reference_rows_real": REFERENCE_ROWS, "min_effect_sd": DEFAULT_MIN_EFFECT_SD,
                    "min_rate_ratio": DEFAULT_MIN_RATE_RATIO}
        w2_rows = [asdict(r) | {"mean_delay": r.mean_delay, "fa_per_million": r.fa_per_million} for r in rows]
        payload = {"settings": settings, "real": real, "w2": w2_rows, "further_change": further,
                   "two_phase": phases, "targets": checks}
        args.json.write_text(json.dumps(payload, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
