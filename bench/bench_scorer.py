"""The batch drift scorer on the W1 case: detection of six moderate drifts, false flags, and speed.

W1: a reference table of 50,000 rows and a window of 10,000 rows (dicts of numpy arrays), 20
numeric + 5 categorical features, fresh data per seed. Features (reference distributions):

- x0..x9 normal, mean 10*i, sd 1 + i/5; x10..x14 lognormal (log-mean 3, log-sd 0.5);
  x15..x17 Poisson (means 3, 8, 20: discrete, heavy ties); x18, x19 uniform(0, 100);
- c0 four categories (shares .50 .30 .15 .05), c1 six, c2 ten, c3 thirty (Zipf-like shares, c3
  beyond top_k=20 so part of it is "other"), c4 two-valued (bool, 70/30).

The window draws the same distributions except for six moderate drifts:

- x1: mean +0.10 sd; x4: mean +0.20 sd; x12: log-mean +0.15 log-sd (a 16 % multiplicative shift);
- x7: scale x1.15 (same mean);
- c0: the rarest category doubles (.05 -> .10, taken from the most frequent: .50 -> .45);
- c2: five points of share move from the most frequent category to the third.

Every seed is scored under three settings (the same reference profile, bins=10, top_k=20):

- ``default``: ``DriftScorer``'s default (``default_settings()``): BH at fdr_q=0.01 AND (effect
  >= 0.05 reference sd, or PSI >= 0.2, or JS distance >= 0.1);
- ``pipeline [drift]``: ``DriftSettings()``, the window pipeline's default: no effect floor;
- ``significance only``: the significance test and Benjamini-Hochberg alone (floors 0).

Target: 6/6 drifted features flagged and no clean feature flagged, on every seed, at the default.

Speed, against scipy in the same run on the same tables: scipy's per-column tests (``ks_2samp``
for numeric columns, ``chi2_contingency`` on the category counts of both tables for categorical
ones) have no fit; driftline builds the scorer once (``from_reference``, "fit") and scores the
window (``score``). Each is the best of 3 calls per seed (scipy's and the scorer's calls
alternate), then the median over seeds; targets:
score >= 10x faster than scipy, fit <= scipy's fit + score. Memory added: the peak of
``tracemalloc`` (numpy allocations included) over fit + score, beyond the tables already built,
in a separate untimed pass; target <= 10 MB.

    .venv/bin/python bench/bench_scorer.py [--seeds 10] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy import stats as sps

from driftline.config import DriftSettings
from driftline.operators.scorer import DriftScorer, ScoreReport, default_settings

REFERENCE_ROWS = 50_000
WINDOW_ROWS = 10_000
DRIFTED = ("x1", "x4", "x7", "x12", "c0", "c2")
DRIFTS = {
    "x1": "mean +0.10 sd",
    "x4": "mean +0.20 sd",
    "x7": "scale x1.15",
    "x12": "log-mean +0.15 log-sd",
    "c0": "rarest share .05 -> .10",
    "c2": "5 points of share: 1st -> 3rd category",
}
CONFIGS: dict[str, DriftSettings] = {
    "default": default_settings(),
    "pipeline [drift]": DriftSettings(),
    "significance only": DriftSettings(psi_threshold=0.0, js_threshold=0.0),
}
REPEATS = 3
SCORE_SPEEDUP_TARGET = 10.0
MEMORY_TARGET_MB = 10.0


def _zipf(k: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1) ** s
    return p / p.sum()


C0 = np.array([0.50, 0.30, 0.15, 0.05])
C0_DRIFT = np.array([0.45, 0.30, 0.15, 0.10])
C2 = _zipf(10)
C2_DRIFT = C2 + np.array([-0.05, 0.0, 0.05, *([0.0] * 7)])


def make_table(rng: np.random.Generator, n: int, *, drift: bool) -> dict[str, Any]:
    """One table of ``n`` rows; ``drift`` applies the six drifts listed in the module docstring."""
    t: dict[str, Any] = {}
    for i in range(10):
        mean, sd = 10.0 * i, 1.0 + i / 5
        if drift and i == 1:
            mean += 0.10 * sd
        if drift and i == 4:
            mean += 0.20 * sd
        if drift and i == 7:
            sd *= 1.15
        t[f"x{i}"] = rng.normal(mean, sd, n)
    for i in range(10, 15):
        t[f"x{i}"] = rng.lognormal(3.0 + (0.15 * 0.5 if drift and i == 12 else 0.0), 0.5, n)
    for i, lam in zip(range(15, 18), (3.0, 8.0, 20.0), strict=True):
        t[f"x{i}"] = rng.poisson(lam, n)
    for i in (18, 19):
        t[f"x{i}"] = rng.uniform(0.0, 100.0, n)
    t["c0"] = rng.choice([f"a{j}" for j in range(4)], n, p=C0_DRIFT if drift else C0)
    t["c1"] = rng.choice([f"b{j}" for j in range(6)], n, p=_zipf(6))
    t["c2"] = rng.choice([f"c{j}" for j in range(10)], n, p=C2_DRIFT if drift else C2)
    t["c3"] = rng.choice([f"d{j}" for j in range(30)], n, p=_zipf(30))
    t["c4"] = rng.random(n) < 0.7
    return t


def scipy_score(reference: dict[str, Any], window: dict[str, Any]) -> dict[str, float]:
    """The per-column baseline: ``ks_2samp`` for numbers, ``chi2_contingency`` for categories."""
    pvalues = {}
    for name, ref in reference.items():
        win = window[name]
        if ref.dtype.kind in "fiu":
            pvalues[name] = float(sps.ks_2samp(ref, win).pvalue)
        else:
            _, codes = np.unique(np.concatenate((ref, win)), return_inverse=True)
            table = np.vstack((np.bincount(codes[: ref.size]), np.bincount(codes[ref.size :],
                                                                              minlength=codes.max() + 1)))
            pvalues[name] = float(sps.chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue)
    return pvalues


def _best(fn: Any, repeats: int = REPEATS) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _fit(reference: dict[str, Any]) -> DriftScorer:
    with warnings.catch_warnings():  # x15..x17 are few-valued Poisson counts: numeric on purpose
        warnings.simplefilter("ignore", UserWarning)
        return DriftScorer.from_reference(reference)


def memory_added(reference: dict[str, Any], window: dict[str, Any]) -> float:
    """Peak bytes allocated (Python and numpy) during fit + score, beyond what existed before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        _fit(reference).score(window)
        return float(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def run_seed(seed: int, reference_rows: int, window_rows: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    reference = make_table(rng, reference_rows, drift=False)
    window = make_table(rng, window_rows, drift=True)
    build_s, scorer = _best(lambda: _fit(reference))
    # scipy and the default scorer alternate, so a busy machine slows both alike.
    default = DriftScorer(scorer.profile, drift=CONFIGS["default"])
    scipy_s = score_s = float("inf")
    for _ in range(REPEATS):
        scipy_t, pvalues = _best(lambda: scipy_score(reference, window), 1)
        score_t, report = _best(lambda: default.score(window), 1)
        scipy_s, score_s = min(scipy_s, scipy_t), min(score_s, score_t)
    drifted = set(DRIFTED)
    flagged = {n for n, p in zip(pvalues, sps.false_discovery_control(list(pvalues.values())), strict=True)
               if p < 0.01}
    out: dict[str, Any] = {
        "seed": seed,
        "build_s": build_s,
        "scipy_score_s": scipy_s,
        "scipy_bh": {"detected": sorted(flagged & drifted), "false_flags": sorted(flagged - drifted)},
        "memory_added_bytes": memory_added(reference, window),
        "configs": {},
    }
    out["configs"]["default"] = _outcome(report, score_s)
    for name, cfg in CONFIGS.items():
        if name != "default":
            configured = DriftScorer(scorer.profile, drift=cfg)
            config_s, config_report = _best(lambda c=configured: c.score(window))
            out["configs"][name] = _outcome(config_report, config_s)
    return out


def _outcome(report: ScoreReport, score_s: float) -> dict[str, Any]:
    flagged = set(report.drifted_features)
    return {
        "score_s": score_s,
        "detected": sorted(flagged & set(DRIFTED)),
        "missed": sorted(set(DRIFTED) - flagged),
        "false_flags": sorted(flagged - set(DRIFTED)),
        "drifted_stats": {
            f: {"psi": report[f].psi, "js": report[f].js, "effect": report[f].effect,
                "p_adj": report[f].p_adj}
            for f in DRIFTED
        },
        "clean_max_js": max(r.js or 0.0 for r in report if r.feature not in DRIFTED),
        "clean_max_effect": max(r.effect or 0.0 for r in report if r.feature not in DRIFTED),
        "clean_min_p_adj": min(
            (r.p_adj for r in report if r.feature not in DRIFTED and r.p_adj is not None), default=None
        ),
    }


def _environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(results: list[dict[str, Any]], reference_rows: int, window_rows: int) -> dict[str, Any]:
    names = list(CONFIGS)
    head = ["seed", "scipy ms", "fit ms", "score ms", "x scipy", "MB added",
            *(f"{n}: found / false" for n in names)]
    rows: list[list[str]] = []
    for r in results:
        score_s = r["configs"]["default"]["score_s"]
        cells = [str(r["seed"]), f"{r['scipy_score_s'] * 1e3:.1f}", f"{r['build_s'] * 1e3:.1f}",
                 f"{score_s * 1e3:.1f}", f"{r['scipy_score_s'] / score_s:.1f}",
                 f"{r['memory_added_bytes'] / 1e6:.1f}"]
        for n in names:
            c = r["configs"][n]
            cells.append(f"{len(c['detected'])}/6  {len(c['false_flags'])}")
        rows.append(cells)
    scipy_s = statistics.median(r["scipy_score_s"] for r in results)
    score_s = statistics.median(r["configs"]["default"]["score_s"] for r in results)
    build_s = statistics.median(r["build_s"] for r in results)
    memory = max(r["memory_added_bytes"] for r in results)
    summary: dict[str, Any] = {
        "build_s_median": build_s,
        "score_s_median": score_s,
        "scipy_score_s_median": scipy_s,
        "score_speedup_vs_scipy": scipy_s / score_s,
        "fit_over_scipy": build_s / scipy_s,
        "memory_added_mb_max": memory / 1e6,
        "scipy_bh": {
            "detected": sum(len(r["scipy_bh"]["detected"]) for r in results),
            "false_flags": sum(len(r["scipy_bh"]["false_flags"]) for r in results),
        },
        "configs": {},
    }
    total = ["all", f"{scipy_s * 1e3:.1f}", f"{build_s * 1e3:.1f}", f"{score_s * 1e3:.1f}",
             f"{scipy_s / score_s:.1f}", f"{memory / 1e6:.1f}"]
    for n in names:
        found = sum(len(r["configs"][n]["detected"]) for r in results)
        false = sum(len(r["configs"][n]["false_flags"]) for r in results)
        perfect = sum(not r["configs"][n]["missed"] and not r["configs"][n]["false_flags"] for r in results)
        summary["configs"][n] = {
            "detected": found,
            "of": 6 * len(results),
            "false_flags": false,
            "seeds_meeting_target": perfect,
            "target_met": perfect == len(results),
        }
        total.append(f"{found}/{6 * len(results)}  {false}")
    rows.append(total)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    print(f"W1 batch scoring: reference {reference_rows:,} rows, window {window_rows:,} rows, "
          f"20 numeric + 5 categorical features, 6 drifted; times best of {REPEATS}, 'all' = medians "
          "(memory: max)")
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            print("  ".join("-" * w for w in widths))
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    speed_ok = scipy_s / score_s >= SCORE_SPEEDUP_TARGET
    fit_ok = build_s <= scipy_s
    memory_ok = memory / 1e6 <= MEMORY_TARGET_MB
    print(f"  score {score_s * 1e3:.1f} ms = {scipy_s / score_s:.1f}x faster than scipy's "
          f"{scipy_s * 1e3:.1f} ms "
          f"[{'met' if speed_ok else 'MISSED'}: >= {SCORE_SPEEDUP_TARGET:g}x]; fit {build_s * 1e3:.1f} ms "
          f"[{'met' if fit_ok else 'MISSED'}: <= scipy's fit + score]; memory added "
          f"{memory / 1e6:.1f} MB [{'met' if memory_ok else 'MISSED'}: <= {MEMORY_TARGET_MB:g} MB]")
    print(f"  scipy per-column tests with BH at q=0.01: {summary['scipy_bh']['detected']}/{6 * len(results)} "
          f"found, {summary['scipy_bh']['false_flags']} false")
    for n in names:
        st = summary["configs"][n]
        verdict = "met" if st["target_met"] else "MISSED"
        print(f"  {n:<17} 6/6 found and 0 false flags on {st['seeds_meeting_target']}/{len(results)} seeds "
              f"[{verdict}]")
    print("drifted features, median over seeds (default settings' statistics):")
    for f in DRIFTED:
        stats = [r["configs"]["default"]["drifted_stats"][f] for r in results]
        psi = statistics.median(x["psi"] for x in stats)
        js = statistics.median(x["js"] for x in stats)
        effect = min(x["effect"] for x in stats)
        p = max(x["p_adj"] for x in stats)
        print(f"  {f:<4} {DRIFTS[f]:<40} psi {psi:.4f}  js {js:.4f}  min effect {effect:.3f}  "
              f"max p_adj {p:.1e}")
    clean_js = max(r["configs"]["default"]["clean_max_js"] for r in results)
    clean_effect = max(r["configs"]["default"]["clean_max_effect"] for r in results)
    clean_p = [r["configs"]["default"]["clean_min_p_adj"] for r in results]
    low_p = min((p for p in clean_p if p is not None), default=float("nan"))
    print(f"  clean features: max js {clean_js:.4f}, max effect {clean_effect:.3f}, min p_adj {low_p:.3g}")
    summary["clean_max_js"] = clean_js
    summary["clean_max_effect"] = clean_effect
    summary["clean_min_p_adj"] = low_p
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds (fresh reference and window each)")
    parser.add_argument("--reference-rows", type=int, default=REFERENCE_ROWS)
    parser.add_argument("--window-rows", type=int, default=WINDOW_ROWS)
    parser.add_argument("--quick", action="store_true", help="2 seeds (the W1 table sizes are kept)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    results = [run_seed(seed, args.reference_rows, args.window_rows) for seed in range(seeds)]
    summary = print_table(results, args.reference_rows, args.window_rows)
    if args.json is not None:
        payload = {
            "case": "W1",
            "reference_rows": args.reference_rows,
            "window_rows": args.window_rows,
            "drifts": DRIFTS,
            "configs": {n: c.model_dump() for n, c in CONFIGS.items()},
            "summary": summary,
            "seeds": results,
            "environment": _environment(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
