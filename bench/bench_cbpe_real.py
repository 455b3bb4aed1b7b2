"""CBPE (issue 16 part 3) on the real streams: covariate shifts that keep the concept, and the drift.

    .venv/bin/python bench/bench_cbpe_real.py [--quick] [--seeds 3] [--json PATH]

Target: estimated accuracy within +-0.03 of the realized accuracy in every window, before any label.
Per stream (``/work/shared/data``, read in place):

1. **Before: split calibration** (H2's design, kept for the comparison): a seeded scikit-learn
   ``HistGradientBoostingClassifier`` fitted on rows 0-2,499; rows 2,500-4,999 split by whole days
   (elec2: 48 half-hours; NOAA: 7-day weeks, its rows being days): in fold 0 the even days
   calibrate and the odd days form the **pool**, in fold 1 the other way round. The calibration is
   the pipeline's own: :func:`~driftline.operators.model_watch.multivariate_section` with the
   scores and labels (what ``driftline profile build --score-column --label-column`` stores), its
   estimator from :class:`~driftline.operators.model_watch.MultivariateReference`.
2. **After: cross-fitted** over all of rows 0-4,999, day ``d`` in fold ``d % 5``: fold ``k``'s
   model is fitted on the other 4 folds (about 4,000 rows) and scores fold ``k``; its calibration
   is fitted (same pipeline code) on the other folds' out-of-fold scores, each fold ``j`` scored by
   a model fitted on the folds other than ``j`` and ``k``, so no label of fold ``k`` reaches its
   calibration (about 4,000 calibration rows instead of 1,250). Windows are drawn (a) from one
   fold's rows (a single model per window; about 21 days) and (b) from all 5,000 rows, each row
   with its own fold's model and calibration (1,000 and 2,000 rows). What a user runs is the
   model fitted on all 5,000 rows with ``profile build --score-column`` holding every row's
   out-of-fold score; that production pair estimates the chronological contrast (4.).
3. **Why these pools** (the "pool check" lines): on elec2 the estimate is off by 0.05-0.07 on each
   unshifted 500-row block of rows 5,000-6,999 (the concept moves within days), so rows after
   5,000 are no concept-keeping pool; days interleaved with the calibration days share its period.
   Per day, though, elec2's estimate is off by far more than binomial noise (sd 0.15 against 0.05:
   the label is the price against its last 24 hours), so a pool of ~21 days carries sd ~0.03 of
   its own; the bench prints this figure per stream.
4. **Covariate shifts**: windows drawn with replacement from the pool with weights ``exp(a * z)``,
   ``z`` one feature standardised on the pool (elec2: ``nswdemand`` and ``period``; NOAA:
   temperature ``feat_1`` and visibility ``feat_4``), ``a`` from -1 to 1 (``a = +-1`` keeps about
   37 % effective rows and moves the feature's mean by about 1 sd), ``--seeds`` windows per
   strength and fold (5 x ``--seeds`` for the whole-period pool): estimated vs realized accuracy,
   ``max |diff|`` beside a window's own sampling sd, "met" or "missed by", and the largest
   ``|diff|`` beyond the pool's unshifted diff (what the shift itself adds).
5. **Contrast, chronological**: every later window of 1,000 rows in stream order, where the
   concept drifts (``P(y | x)`` moves, which CBPE assumes away): the same figures, no target.
6. **Noise floor and bias** (cross-fitted whole-period windows). A window's realized accuracy
   carries binomial noise, sd ``sqrt(p (1 - p) / n)`` (0.012 at 1,000 rows and p = 0.81) that no
   estimate made before labels can predict, so the max over 150 windows of ``|diff|`` has a floor
   even for a perfect estimator: per window size the bench draws each window's labels from the
   estimator's own probabilities (:data:`FLOOR_DRAWS` times) and prints that max (median, 95th
   percentile). The estimator's own part, its bias under each shift, is the weighted mean of
   ``expected - correct`` over the period (no window noise), with a standard error over days.
   Rows of one day (block) share more than binomial noise (elec2's label is the price against its
   last 24 hours), so a second floor adds a random effect per day, its sd the days' spread of
   ``estimated - realized`` beyond their binomial sd, drawn once per draw for all windows.
   **Acceptance size**, a rule of the reference alone: the smallest ``n`` at which the binomial sd
   is at most :data:`NOISE_SD` (+-0.03 is then 3 sd); the 1,000- and 2,000-row lines stay beside it.
7. **Calibrations**: the cross-fitted design runs twice, with the score-only (isotonic) calibration
   and with ``calibration="auto"`` (the feature-aware one where its cross-validated Brier score on
   the calibration rows is lower; what ``profile build --cbpe-calibration auto`` stores).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from driftline.operators.cbpe import Calibration
from driftline.operators.model_watch import MultivariateReference, multivariate_section

DATA = Path("/work/shared/data")
PERIOD_ROWS = 5_000
"""The model's period: the issue's "first 5,000 rows"."""
TRAIN_ROWS = 2_500
"""Rows 0 to this fit the model; the rest of the period is split into calibration and pool days."""
WINDOW = 1_000
TOLERANCE = 0.03
STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
FOLDS = 5
"""Cross-fitting folds: whole days of the period, day ``d`` in fold ``d % FOLDS``."""
PERIOD_WINDOWS = (1_000, 2_000)
"""Window sizes drawn from all the period's cross-fitted rows (the acceptance size is added)."""
NOISE_SD = 0.01
"""The acceptance rule: windows of the smallest n at which the realized accuracy's binomial sd,
sqrt(p (1 - p) / n) with p the period's accuracy, is at most this (so +-TOLERANCE is 3 sd). No
estimator made before labels can predict that noise; on smaller windows it alone breaks +-0.03."""
FLOOR_DRAWS = 200
"""Parametric bootstrap draws of the noise floor."""
CALIBRATIONS: tuple[Calibration, ...] = ("score", "auto")
"""Score-only (isotonic) calibration, then the profile builder's selection by cross-validated Brier
score between it and the feature-aware one."""


@dataclass(frozen=True)
class Stream:
    name: str
    file: str
    features: tuple[str, ...]
    label: str
    positive: str
    day_rows: int
    """Rows per calibration/pool day (block)."""
    shifted: tuple[str, ...]
    """Features the covariate shifts weight on."""


STREAMS = (
    # elec2: ``date`` is time; vicprice/vicdemand/transfer are constant in the period (data README).
    Stream("elec2", "elec2.csv", ("day", "period", "nswprice", "nswdemand"), "class", "UP", 48,
           ("nswdemand", "period")),
    Stream("noaa_weather", "noaa_weather.csv", tuple(f"feat_{i}" for i in range(1, 9)), "target", "1", 7,
           ("feat_1", "feat_4")),
)


def load(stream: Stream) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    with (DATA / stream.file).open(newline="") as f:
        reader = csv.reader(f)
        head = next(reader)
        rows = list(reader)
    columns = [head.index(c) for c in stream.features]
    x = np.array([[float(r[c]) for c in columns] for r in rows])
    label = head.index(stream.label)
    return x, np.array([r[label] == stream.positive for r in rows])


def model_scores(x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_], train: npt.NDArray[np.int64],
                 scored: slice | npt.NDArray[np.int64] = slice(None)) -> npt.NDArray[np.float64]:
    """Positive-class scores of the ``scored`` rows from a seeded classifier fitted on the ``train`` rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, max_leaf_nodes=15,
                                           random_state=0)
    # One thread: OpenMP threads spin on a loaded 2-core box (10 s instead of 0.7 s per fit).
    with threadpool_limits(limits=1):
        model.fit(x[train], y[train])
        return np.asarray(model.predict_proba(x[scored])[:, 1], dtype=np.float64)


def calibrate(stream: Stream, x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_],
              rows: npt.NDArray[np.int64], scores: npt.NDArray[np.float64],
              calibration: Calibration = "score") -> MultivariateReference:
    """The pipeline's own calibration of ``scores`` (one per row of ``rows``) against the rows' labels."""
    section = multivariate_section(
        {f: x[rows, j].tolist() for j, f in enumerate(stream.features)}, features=stream.features,
        scores=scores.tolist(), labels=[stream.positive if v else "other" for v in y[rows]],
        calibration=calibration)
    assert section is not None and section["performance"] is not None
    return MultivariateReference.from_section(section)


def accuracy_gap(ref: MultivariateReference, scores: npt.NDArray[np.float64],
                 labels: npt.NDArray[np.bool_], x: npt.NDArray[np.float64]) -> dict[str, float]:
    """The estimate before labels (scores, and features for a feature-aware calibration), beside the
    realized accuracy of the same rows."""
    assert ref.estimator is not None
    estimate = ref.estimator.estimate(scores, x)
    realized = float(np.mean((scores >= ref.estimator.threshold) == labels))
    return {"estimated": estimate.accuracy, "realized": realized, "diff": estimate.accuracy - realized,
            "sd": estimate.accuracy_sd, "in_band": estimate.low <= realized <= estimate.high}


Gap = Callable[[npt.NDArray[np.int64]], dict[str, Any]]
"""Estimated vs realized accuracy of a window, given its rows."""


def shifted_windows(stream: Stream, x: npt.NDArray[np.float64], pool: npt.NDArray[np.int64], gap_of: Gap,
                    pool_diff: float, fold: int | str, seeds: int, key: Sequence[int],
                    size: int = WINDOW) -> list[dict[str, Any]]:
    """Windows of ``size`` rows drawn from ``pool`` with weights ``exp(a z)`` per shifted feature,
    strength ``a`` and seed (``key`` is added to each window's seed)."""
    windows = []
    for feature in stream.shifted:
        values = x[pool, stream.features.index(feature)]
        z = (values - values.mean()) / values.std()
        for strength in STRENGTHS:
            weights = np.exp(strength * z)
            weights /= weights.sum()
            for seed in range(seeds):
                rng = np.random.default_rng(
                    [seed, int(strength * 10) + 100, stream.shifted.index(feature), *key])
                picks = rng.choice(pool.size, size, p=weights)
                gap = gap_of(pool[picks])
                windows.append({"fold": fold, "feature": feature, "strength": strength, "seed": seed,
                                "mean_shift_sd": float(np.mean(z[picks])),
                                "beyond_pool": gap["diff"] - pool_diff, **gap})
    return windows


def scores_gap(ref: MultivariateReference, scores: npt.NDArray[np.float64], y: npt.NDArray[np.bool_],
               x: npt.NDArray[np.float64]) -> Gap:
    return lambda rows: accuracy_gap(ref, scores[rows], y[rows], x[rows])


def measure_split(stream: Stream, x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_],
                  seeds: int, calibration: Calibration = "score") -> dict[str, Any]:
    """Before: one model on rows 0-2,499, calibration on half the days of rows 2,500-4,999 (2 folds)."""
    scores = model_scores(x, y, np.arange(TRAIN_ROWS))
    held_out = np.arange(TRAIN_ROWS, PERIOD_ROWS)
    odd_day = (held_out // stream.day_rows) % 2 == 1
    folds, shifted, chronological = [], [], []
    # Fold 0: even days calibrate, odd days are the pool; fold 1 the other way round.
    for fold, (calibration_rows, pool) in enumerate(((held_out[~odd_day], held_out[odd_day]),
                                                     (held_out[odd_day], held_out[~odd_day]))):
        ref = calibrate(stream, x, y, calibration_rows, scores[calibration_rows], calibration)
        pool_gap = accuracy_gap(ref, scores[pool], y[pool], x[pool])
        folds.append({
            "fold": fold, "calibration_rows": int(calibration_rows.size), "pool_rows": int(pool.size),
            "calibration_accuracy": float(np.mean((scores[calibration_rows] >= 0.5) == y[calibration_rows])),
            "pool": pool_gap,
            "after_period": [{"start": s, **accuracy_gap(ref, scores[s:s + 500], y[s:s + 500], x[s:s + 500])}
                             for s in range(PERIOD_ROWS, PERIOD_ROWS + 2_000, 500)]})
        shifted += shifted_windows(stream, x, pool, scores_gap(ref, scores, y, x), pool_gap["diff"], fold,
                                   seeds, [fold])
        chronological += [
            {"fold": fold, "start": s, **accuracy_gap(ref, scores[s:s + WINDOW], y[s:s + WINDOW],
                                                      x[s:s + WINDOW])}
            for s in range(PERIOD_ROWS, y.size, WINDOW) if y.size - s >= WINDOW // 2]
    return {"folds": folds, "shifted": shifted, "shifted_summary": summary(shifted),
            "chronological": chronological, "chronological_summary": summary(chronological)}


ScoreCache = dict[frozenset[int], npt.NDArray[np.float64]]
"""Period scores by the set of folds a model was fitted without (shared by the calibrations)."""


def measure_crossfit(stream: Stream, x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_],
                     seeds: int, calibration: Calibration = "score",
                     cache: ScoreCache | None = None) -> dict[str, Any]:
    """After: cross-fitting over FOLDS day-interleaved folds of rows 0-4,999.

    For fold ``k`` the model is fitted on the other folds and scores fold ``k`` (the pool); the
    calibration is fitted on out-of-fold scores of the other folds, each fold ``j`` scored by a
    model fitted on the folds other than ``j`` and ``k`` (so no label of fold ``k`` reaches its
    calibration, not even through a model). The production reading, what a user runs: the model
    fitted on all 5,000 rows, calibrated on every row's out-of-fold score (``profile build
    --score-column`` holding those), estimating the chronological windows after 5,000.
    """
    period = np.arange(PERIOD_ROWS)
    fold_of = (period // stream.day_rows) % FOLDS
    cache = {} if cache is None else cache

    def scores_without(*excluded: int) -> npt.NDArray[np.float64]:
        """Scores of the period's rows from the model fitted on the folds not ``excluded``."""
        key = frozenset(excluded)
        if key not in cache:
            cache[key] = model_scores(x, y, period[~np.isin(fold_of, list(key))], period)
        return cache[key]

    folds, shifted = [], []
    # Every period row's chance of a correct prediction (its fold's model and calibration), and the outcome.
    expected, correct = np.empty(PERIOD_ROWS), np.empty(PERIOD_ROWS)
    for k in range(FOLDS):
        pool, calibration_rows = period[fold_of == k], period[fold_of != k]
        calibration_scores = np.empty(calibration_rows.size)
        for j in range(FOLDS):
            if j != k:
                calibration_scores[fold_of[calibration_rows] == j] = scores_without(k, j)[calibration_rows][
                    fold_of[calibration_rows] == j]
        ref = calibrate(stream, x, y, calibration_rows, calibration_scores, calibration)
        scores = np.full(y.size, np.nan)
        scores[period] = scores_without(k)
        pool_gap = accuracy_gap(ref, scores[pool], y[pool], x[pool])
        assert ref.estimator is not None
        predicted = scores[pool] >= ref.estimator.threshold
        calibrated = ref.estimator.calibrated(scores[pool], x[pool])
        expected[pool] = np.where(predicted, calibrated, 1.0 - calibrated)
        correct[pool] = predicted == y[pool]
        folds.append({"fold": k, "calibration_rows": int(calibration_rows.size), "pool_rows": int(pool.size),
                      "pool": pool_gap, "calibration": ref.estimator.calibration,
                      "selection": ref.estimator.selection})
        shifted += shifted_windows(stream, x, pool, scores_gap(ref, scores, y, x), pool_gap["diff"], k, seeds,
                                   [k, 1])
    # Rows of one day share more than their scores: elec2's label is the price against its last
    # 24 hours, so a day's estimate is off by more than its binomial noise, in both directions.
    day = period // stream.day_rows
    rows_per_day = np.bincount(day)
    day_diff = np.bincount(day, expected - correct) / rows_per_day
    day_binomial = np.sqrt(np.bincount(day, expected * (1.0 - expected))) / rows_per_day
    # The days' own spread beyond their binomial noise: a random effect per day.
    day_sd = math.sqrt(max(0.0, float(day_diff.var() - np.mean(day_binomial**2))))
    # Labels drawn from the estimator's own probabilities: what a perfect estimator's windows read;
    # then with a day effect too, drawn once per draw (all windows share the period's days).
    noise_rng = np.random.default_rng([FLOOR_DRAWS, 0x6E6F])
    day_effects = noise_rng.normal(0.0, day_sd, (FLOOR_DRAWS, rows_per_day.size))

    def period_gap(rows: npt.NDArray[np.int64]) -> dict[str, Any]:
        estimated, realized = float(expected[rows].mean()), float(correct[rows].mean())
        sd = math.sqrt(float(np.sum(expected[rows] * (1.0 - expected[rows])))) / rows.size
        drawn = (noise_rng.random((FLOOR_DRAWS, rows.size)) < expected[rows]).mean(axis=1)
        with_days = np.clip(expected[rows] - day_effects[:, day[rows]], 0.0, 1.0)
        drawn_days = (noise_rng.random((FLOOR_DRAWS, rows.size)) < with_days).mean(axis=1)
        return {"estimated": estimated, "realized": realized, "diff": estimated - realized, "sd": sd,
                "in_band": abs(estimated - realized) <= 1.96 * sd, "null_diffs": estimated - drawn,
                "null_day_diffs": estimated - drawn_days}

    whole = period_gap(period)
    del whole["null_diffs"], whole["null_day_diffs"]
    # The acceptance size, by a rule of the reference's accuracy alone (no tuning to the stream).
    accuracy = float(correct.mean())
    acceptance = math.ceil(accuracy * (1.0 - accuracy) / NOISE_SD**2)
    sizes = sorted({*PERIOD_WINDOWS, acceptance})
    # FOLDS times the seeds: as many windows as the per-fold pools give, for a like-for-like max.
    period_windows = {size: shifted_windows(stream, x, period, period_gap, whole["diff"], "all",
                                            seeds * FOLDS, [size, 2], size) for size in sizes}
    floors = {size: noise_floor(windows) for size, windows in period_windows.items()}
    day_floors = {size: noise_floor(windows, "null_day_diffs") for size, windows in period_windows.items()}
    window_days = WINDOW / stream.day_rows
    day_noise = {"days": int(rows_per_day.size), "day_rows": stream.day_rows,
                 "day_diff_sd": float(day_diff.std()),
                 "day_binomial_sd": float(np.sqrt(np.mean(day_binomial ** 2))), "window_days": window_days,
                 "window_sd_from_days": float(day_diff.std() / math.sqrt(window_days)),
                 "day_effect_sd": day_sd}
    # A shift can only move the estimate's error if the error differs along the shifted feature:
    # P(y | score, feature) != P(y | score) means the score is not sufficient for that calibration.
    by_quintile = {}
    for feature in stream.shifted:
        values = x[period, stream.features.index(feature)]
        quintile = np.searchsorted(np.quantile(values, [0.2, 0.4, 0.6, 0.8]), values)
        by_quintile[feature] = [float(np.mean(expected[quintile == q] - correct[quintile == q]))
                                for q in range(5)]
    out_of_fold = np.empty(PERIOD_ROWS)
    for j in range(FOLDS):
        out_of_fold[fold_of == j] = scores_without(j)[fold_of == j]
    production = calibrate(stream, x, y, period, out_of_fold, calibration)
    later = np.arange(PERIOD_ROWS, y.size)
    scores = np.concatenate([np.full(PERIOD_ROWS, np.nan), model_scores(x, y, period, later)])
    chronological = [{"start": s, **accuracy_gap(production, scores[s:s + WINDOW], y[s:s + WINDOW],
                                                 x[s:s + WINDOW])}
                     for s in range(PERIOD_ROWS, y.size, WINDOW) if y.size - s >= WINDOW // 2]
    assert production.estimator is not None
    return {"calibration": calibration, "production_calibration": production.estimator.calibration,
            "production_selection": production.estimator.selection,
            "folds": folds, "shifted": shifted, "shifted_summary": summary(shifted),
            "period": whole, "day_noise": day_noise, "diff_by_quintile": by_quintile,
            "accuracy": accuracy, "acceptance_rows": acceptance,
            "bias": shift_bias(stream, x[period], expected - correct, day),
            "period_windows": {str(size): {"windows": w, "summary": summary(w), "floor": floors[size],
                                           "floor_days": day_floors[size]}
                               for size, w in period_windows.items()},
            "chronological": chronological, "chronological_summary": summary(chronological)}


def noise_floor(windows: list[dict[str, Any]], key: str = "null_diffs") -> dict[str, float]:
    """What a perfect estimator would read on these windows (their rows' labels drawn from the
    estimator's own probabilities, :data:`FLOOR_DRAWS` times; ``null_day_diffs``: with a random
    effect per day as well): the max ``|diff|`` over the windows (median and 95th percentile over
    the draws) and the windows within +-TOLERANCE (mean). Takes the draws out of the windows."""
    null = np.abs(np.vstack([w.pop(key) for w in windows]))  # (windows, draws)
    worst = null.max(axis=0)
    return {"max_abs_diff_median": float(np.median(worst)),
            "max_abs_diff_p95": float(np.quantile(worst, 0.95)),
            "within_mean": float(np.mean(np.sum(null <= TOLERANCE, axis=0))), "windows": len(windows)}


def shift_bias(stream: Stream, x: npt.NDArray[np.float64], error: npt.NDArray[np.float64],
               day: npt.NDArray[np.int64]) -> dict[str, Any]:
    """The estimator's bias under each shift: the mean ``estimated - realized`` of all windows a
    shift can draw, i.e. the ``exp(a z)``-weighted mean of the rows' ``expected - correct`` (no
    window noise), with its standard error over the period's days as clusters (the rows are one
    finite sample of days, whose errors share more than binomial noise)."""
    by_shift: list[dict[str, Any]] = []
    for feature in stream.shifted:
        values = x[:, stream.features.index(feature)]
        z = (values - values.mean()) / values.std()
        for strength in STRENGTHS:
            weights = np.exp(strength * z)
            bias = float(np.sum(weights * error) / weights.sum())
            by_day = np.bincount(day, weights * (error - bias))
            se = math.sqrt(float(np.sum(by_day**2))) / float(weights.sum())
            by_shift.append({"feature": feature, "strength": strength, "bias": bias, "se": se})
    worst = max(by_shift, key=lambda b: abs(b["bias"]))
    return {"by_shift": by_shift, "max_abs": abs(worst["bias"]), "worst": worst}


def measure_stream(stream: Stream, seeds: int) -> dict[str, Any]:
    x, y = load(stream)
    cache: ScoreCache = {}
    crossfit = {calibration: measure_crossfit(stream, x, y, seeds, calibration, cache)
                for calibration in CALIBRATIONS}
    return {"stream": stream.name, "rows": int(y.size), "split": measure_split(stream, x, y, seeds),
            "crossfit": crossfit["score"], "crossfit_auto": crossfit["auto"]}


def summary(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    diffs = np.abs([w["diff"] for w in windows])
    worst = float(diffs.max())
    beyond = [abs(w["beyond_pool"]) for w in windows if "beyond_pool" in w]
    return {"windows": len(windows), "max_abs_diff": worst, "mean_abs_diff": float(diffs.mean()),
            "max_abs_beyond_pool": max(beyond) if beyond else None,
            "mean_sd": float(np.mean([w["sd"] for w in windows])),
            "within": int(np.sum(diffs <= TOLERANCE)), "in_band": sum(bool(w["in_band"]) for w in windows),
            "met": worst <= TOLERANCE, "verdict": verdict(worst)}


def verdict(worst: float) -> str:
    return "met" if worst <= TOLERANCE else f"missed by {worst - TOLERANCE:.3f}"


def summary_line(label: str, s: dict[str, Any]) -> str:
    beyond = ("" if s["max_abs_beyond_pool"] is None else
              f"; beyond the unshifted pool's own diff: max {s['max_abs_beyond_pool']:.3f}")
    return (f"  {label}: max |diff| {s['max_abs_diff']:.3f}, mean {s['mean_abs_diff']:.3f} (a window's own "
            f"sampling sd {s['mean_sd']:.3f}); within +-{TOLERANCE}: {s['within']}/{s['windows']}; realized "
            f"inside the 95 % band: {s['in_band']}/{s['windows']}{beyond} -> {s['verdict']}")


def floor_line(floor: dict[str, Any], measured: float) -> str:
    noise = "inside" if measured <= floor["max_abs_diff_p95"] else "above"
    return (f"      noise floor (a perfect estimator: these windows' labels drawn from its own "
            f"probabilities, {FLOOR_DRAWS} draws): max |diff| {floor['max_abs_diff_median']:.3f} (median; "
            f"95 % of draws <= {floor['max_abs_diff_p95']:.3f}), within +-{TOLERANCE}: "
            f"{floor['within_mean']:.1f}/{floor['windows']} on average; the measured {measured:.3f} is "
            f"{noise} what noise alone gives")


def report_windows(windows: Sequence[dict[str, Any]]) -> None:
    print(f"  covariate shift keeping the concept (windows of {WINDOW:,} from the pool, weights exp(a z)):")
    for w in windows:
        print(f"    fold {w['fold']} {w['feature']:>9} a={w['strength']:+.1f} seed {w['seed']}: "
              f"mean z {w['mean_shift_sd']:+.2f}, estimated {w['estimated']:.3f} "
              f"realized {w['realized']:.3f} diff {w['diff']:+.3f}")


def report(result: dict[str, Any]) -> None:
    split, crossfit = result["split"], result["crossfit"]
    print(f"{result['stream']}, before (split): model on rows 0-{TRAIN_ROWS - 1:,}; rows "
          f"{TRAIN_ROWS:,}-{PERIOD_ROWS - 1:,} split by days: fold 0 calibrates on the even days (pool: odd "
          "days), fold 1 the other way")
    for f in split["folds"]:
        pool = f["pool"]
        blocks = ", ".join(f"{b['start']:,}: {b['estimated']:.2f}/{b['realized']:.2f}"
                           for b in f["after_period"])
        print(f"  fold {f['fold']} pool check: accuracy on the {f['calibration_rows']:,} calibration rows "
              f"{f['calibration_accuracy']:.3f}, on the {f['pool_rows']:,} pool rows {pool['realized']:.3f} "
              f"(estimated {pool['estimated']:.3f}, diff {pool['diff']:+.3f}); rows after {PERIOD_ROWS:,}, "
              f"500-row blocks, estimated/realized: {blocks}")
    report_windows(split["shifted"])
    print(f"{result['stream']}, after (cross-fitted): rows 0-{PERIOD_ROWS - 1:,} in {FOLDS} folds of whole "
          f"days (day d in fold d % {FOLDS}); fold k's model fitted on the other folds, its calibration on "
          "their out-of-fold scores")
    for f in crossfit["folds"]:
        pool = f["pool"]
        print(f"  fold {f['fold']} pool check: calibration on {f['calibration_rows']:,} out-of-fold rows; "
              f"accuracy on the {f['pool_rows']:,} pool rows {pool['realized']:.3f} (estimated "
              f"{pool['estimated']:.3f}, diff {pool['diff']:+.3f})")
    report_windows(crossfit["shifted"])
    noise = crossfit["day_noise"]
    whole = crossfit["period"]
    print(f"  all {PERIOD_ROWS:,} period rows, each by its fold's model and calibration: estimated "
          f"{whole['estimated']:.3f}, realized {whole['realized']:.3f} (diff {whole['diff']:+.3f}); per day "
          f"({noise['day_rows']} rows, {noise['days']} of them) estimated - realized has sd "
          f"{noise['day_diff_sd']:.3f} against a binomial {noise['day_binomial_sd']:.3f}: a window of "
          f"{WINDOW:,} rows from {noise['window_days']:.0f} days carries sd "
          f"{noise['window_sd_from_days']:.3f} from its days alone")
    quintiles = "; ".join(f"{feature} {', '.join(f'{d:+.3f}' for d in diffs)}"
                          for feature, diffs in crossfit["diff_by_quintile"].items())
    print(f"  estimated - realized by quintile of the shifted feature (low to high): {quintiles}")
    auto = result["crossfit_auto"]
    chosen = ", ".join(f"{f['calibration']} (Brier {f['selection']['brier']['score']:.4f} score-only, "
                       f"{f['selection']['brier']['features']:.4f} feature-aware)" for f in auto["folds"])
    print(f"  calibration: auto (cross-validated Brier score on each fold's calibration rows) chose: "
          f"{chosen}")
    quintiles = "; ".join(f"{feature} {', '.join(f'{d:+.3f}' for d in diffs)}"
                          for feature, diffs in auto["diff_by_quintile"].items())
    print(f"  auto: estimated - realized by quintile of the shifted feature (low to high): {quintiles}")
    print(f"{result['stream']} summary:")
    print(summary_line("before (split), covariate shift", split["shifted_summary"]))
    print(f"  acceptance window (rule: the smallest n whose realized accuracy has binomial sd "
          f"sqrt(p(1-p)/n) <= {NOISE_SD}, p = the period's accuracy {crossfit['accuracy']:.3f}; so "
          f"+-{TOLERANCE} is 3 sd): {crossfit['acceptance_rows']:,} rows")
    for name, run in (("score-only", crossfit), ("auto", auto)):
        bias = run["bias"]
        worst = bias["worst"]
        print(f"  cross-fitted, {name} calibration: bias under the shifts (exact weighted mean of "
              f"estimated - realized): max |bias| {bias['max_abs']:.3f} ({worst['feature']} "
              f"a={worst['strength']:+.1f}; its standard error over the {crossfit['day_noise']['days']} "
              f"days as clusters {worst['se']:.3f})")
        print(summary_line("  one fold's pool, covariate shift", run["shifted_summary"]))
        for size, w in run["period_windows"].items():
            accept = " (acceptance)" if int(size) == crossfit["acceptance_rows"] else ""
            print(summary_line(f"  windows of {int(size):,}{accept} from all the period's cross-fitted rows",
                               w["summary"]))
            print(floor_line(w["floor"], w["summary"]["max_abs_diff"]))
            days = w["floor_days"]
            print(f"      with a random effect per day (sd {run['day_noise']['day_effect_sd']:.3f}, the "
                  f"days' "
                  f"spread beyond binomial): a perfect estimator's max {days['max_abs_diff_median']:.3f} "
                  f"(median; 95 % <= {days['max_abs_diff_p95']:.3f}), within +-{TOLERANCE}: "
                  f"{days['within_mean']:.1f}/{days['windows']}")
    print(summary_line(f"before (split), chronological rows {PERIOD_ROWS:,}+ (concept drift, contrast)",
                       split["chronological_summary"]))
    print(summary_line(f"after (model on rows 0-{PERIOD_ROWS - 1:,}, out-of-fold calibration), chronological "
                       f"rows {PERIOD_ROWS:,}+ (concept drift, contrast)", crossfit["chronological_summary"]))


def calibration_cost(features: int = 25, events: int = 20_000, batch: int = 500) -> dict[str, float]:
    """CPU per event of the feature-aware calibration against the score-only one: the estimator's
    ``calibrated`` alone, and stage 1's whole :class:`MultivariateWatch` ``observe`` (reconstruction,
    outliers, CBPE, sample) on ``features`` numeric features in batches of ``batch`` events."""
    import time

    from driftline.operators.model_watch import MultivariateWatch
    from driftline.operators.profile import ReferenceProfile, build_profile

    rng = np.random.default_rng(9)
    names = [f"f{j}" for j in range(features)]

    def table(n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        x = rng.normal(size=(n, features))
        scores = 1 / (1 + np.exp(-2 * x[:, 0]))
        return x, scores, rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 0] + x[:, 1])))

    x, scores, labels = table(5_000)
    columns = {name: x[:, j].tolist() for j, name in enumerate(names)}
    x, scores, _ = table(events)
    rows = [dict(zip(names, r, strict=True)) for r in x.tolist()]
    ids = [f"p{i}" for i in range(events)]
    prepared = {}
    for calibration in ("score", "features"):
        section = multivariate_section(columns, scores=scores[:5_000].tolist(), labels=labels.tolist(),
                                       calibration=calibration)
        assert section is not None
        profile = ReferenceProfile.model_validate_json(build_profile(
            "m", "1", columns, label_column=None, prediction_column=None, bins=10, top_k=5, created_at_ms=0,
            multivariate=section).model_dump_json())
        estimator = MultivariateReference.from_section(section).estimator
        assert estimator is not None and estimator.calibration == calibration
        prepared[calibration] = (profile, estimator)
    cost: dict[str, float] = {}
    for _ in range(3):  # alternating rounds, the least CPU of each: a loaded box only adds
        for calibration, (profile, estimator) in prepared.items():
            watch = MultivariateWatch(1.0, status_grid_ms=10_000, min_effect_sd=0.0, learning=200)
            watch.add_profile(profile)
            start = time.process_time()
            for lo in range(0, events, batch):
                estimator.calibrated(scores[lo:lo + batch], x[lo:lo + batch])
            calibrated = (time.process_time() - start) / events * 1e6
            start = time.process_time()
            for lo in range(0, events, batch):
                watch.observe("m", "1", list(range(lo, lo + batch)), ids[lo:lo + batch], rows[lo:lo + batch],
                              scores[lo:lo + batch].tolist(), [60_000])
            observe = (time.process_time() - start) / events * 1e6
            for key, value in (("calibrated", calibrated), ("observe", observe)):
                name = f"{calibration}_{key}_us"
                cost[name] = min(cost.get(name, math.inf), value)
    return cost


def cost_line(cost: dict[str, float]) -> str:
    score, features = cost["score_observe_us"], cost["features_observe_us"]
    return (f"CBPE calibration cost per event (25 features, batches of 500, CPU, least of 3 rounds): "
            f"calibrated() {cost['score_calibrated_us']:.2f} us score-only, "
            f"{cost['features_calibrated_us']:.2f} us feature-aware; stage 1's whole "
            f"MultivariateWatch.observe {score:.1f} us -> {features:.1f} us ({features / score - 1:+.0%})")


def run(quick: bool, seeds: int) -> list[dict[str, Any]]:
    # --quick: elec2 alone (the row's target) with all its windows, so its figures are the full run's:
    # the cross-fitting's 16 model fits per stream are most of the cost, the windows little.
    return [measure_stream(stream, seeds) for stream in (STREAMS[:1] if quick else STREAMS)]


def measure(quick: bool) -> Any:
    """bench/run_all.py's row (16): elec2's covariate-shift max |diff| against +-0.03, cross-fitted
    windows of the acceptance size (the rule of :data:`NOISE_SD`) from the whole period; beside it
    the 1,000-row windows, each with what a perfect estimator would read (the noise floor), the
    shifts' bias, the feature-aware ("auto") calibration and the split design."""
    from common import Figure

    label = ("(16) CBPE on elec2, covariate shift keeping the concept: max |estimated - realized| "
             f"accuracy, windows of the acceptance size (binomial sd <= {NOISE_SD}), cross-fitted over the "
             f"first {PERIOD_ROWS:,} rows")
    missing = [str(DATA / s.file) for s in STREAMS if not (DATA / s.file).is_file()]
    if missing:
        return Figure("cbpe_real_max_abs_diff", label, None, "", f"<= {TOLERANCE}", None,
                      f"not measured: {', '.join(missing)} not present")
    results = {r["stream"]: r for r in run(quick, 3)}

    def sized(run: dict[str, Any], size: int) -> str:
        w = run["period_windows"][str(size)]
        s, floor = w["summary"], w["floor"]
        days = w["floor_days"]
        return (f"{s['max_abs_diff']:.3f} ({s['within']}/{s['windows']} within; a perfect estimator "
                f"{floor['max_abs_diff_median']:.3f}, 95 % <= {floor['max_abs_diff_p95']:.3f}; with the "
                f"days' own spread {days['max_abs_diff_median']:.3f}, 95 % <= "
                f"{days['max_abs_diff_p95']:.3f})")

    def figures(r: dict[str, Any]) -> str:
        crossfit, auto = r["crossfit"], r["crossfit_auto"]
        accept = crossfit["acceptance_rows"]
        before = r["split"]["shifted_summary"]
        bias = crossfit["bias"]

        def auto_max(size: int) -> float:
            return float(auto["period_windows"][str(size)]["summary"]["max_abs_diff"])

        return (f"windows of {accept:,} (acceptance) {sized(crossfit, accept)}; of {WINDOW:,} "
                f"{sized(crossfit, WINDOW)}; of {PERIOD_WINDOWS[1]:,} {sized(crossfit, PERIOD_WINDOWS[1])}; "
                f"shift bias max {bias['max_abs']:.3f} (se over days {bias['worst']['se']:.3f}); "
                f"calibration auto (chose {', '.join(f['calibration'] for f in auto['folds'])}): "
                f"{accept:,} {auto_max(accept):.3f}, {WINDOW:,} {auto_max(WINDOW):.3f}; before (split "
                f"calibration) {before['max_abs_diff']:.3f}; chronological (concept drift) "
                f"{crossfit['chronological_summary']['max_abs_diff']:.2f}")

    elec2 = results["elec2"]
    s = elec2["crossfit"]["period_windows"][str(elec2["crossfit"]["acceptance_rows"])]["summary"]
    noaa = results.get("noaa_weather")
    cost = calibration_cost()
    return Figure(
        "cbpe_real_max_abs_diff", label, s["max_abs_diff"], "", f"<= {TOLERANCE}", s["met"],
        f"elec2: {figures(elec2)}; NOAA: " + (figures(noaa) if noaa is not None else "not in --quick")
        + f"; {cost_line(cost)}",
        {name: {"split": r["split"]["shifted_summary"], "crossfit": r["crossfit"]["shifted_summary"],
                "acceptance_rows": r["crossfit"]["acceptance_rows"],
                **{f"{prefix}_period_{size}": {**w["summary"], "floor": w["floor"]}
                   for prefix, key in (("crossfit", "crossfit"), ("auto", "crossfit_auto"))
                   for size, w in r[key]["period_windows"].items()},
                "bias": {k: v for k, v in r["crossfit"]["bias"].items() if k != "by_shift"},
                "chronological": r["crossfit"]["chronological_summary"]}
         for name, r in results.items()} | {"calibration_cost": cost})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="elec2 only (the same figures as the full run)")
    parser.add_argument("--seeds", type=int, default=3, help="windows per shift strength")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.quick, args.seeds)
    for result in results:
        report(result)
    print(cost_line(calibration_cost()))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
