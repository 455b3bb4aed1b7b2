"""Multivariate drift, outlier rate and CBPE (issue 16): cost per event and accuracy of the signals.

Four parts, one run (CPU time with ``time.process_time``, so other load on the machine does not
count; the domain classifier's scikit-learn may use both cores, which process time adds up):

1. **Outlier scorer**, 25 numeric features (5 correlated pairs, 15 independent, half lognormal),
   reference 20,000 rows: us per event of ``score(event)`` (one request, as in a model server) and
   of ``score_many`` (per row of a 100,000-row batch); outlier share on clean rows (0.1 % by design)
   and on rows whose first pair is rotated.
2. **Reconstruction drift**, same features: us per event of ``update_many``; false alarms over
   quiet rows at ``arl`` 1e6; delay (events) to the first alarm after the first pair is rotated
   by 90 degrees (marginals unchanged), per seed.
3. **Domain classifier**: seconds to build (null calibration) and per window (1,000 rows against
   1,000 reference rows, 3 folds), AUC on a clean and on a rotated window, the threshold.
4. **CBPE**: (a) simulated covariate shift keeping the concept, an over-confident logistic model,
   windows of 5,000 at input means -1 ... 1.5: |estimated - realized| accuracy per window; (b)
   ``/work/shared/data/elec2.csv`` (read in place): logistic regression (numpy Newton) on the first
   5,000 rows with ``day, period, nswprice, nswdemand`` (``vicprice``, ``vicdemand`` and
   ``transfer`` are constant there, see the data README; ``date`` is time), calibrated on the
   same rows, then every later window of 2,000 rows: estimated vs realized accuracy, beside the
   domain classifier's AUC of the window's inputs against the first 5,000 rows.
5. **Version comparison** (shadow, paired 0/1 errors, hard requests hard for both versions):
   runs with no difference (30 looks of 500 events, ``alpha`` 0.01) that decide anyway, and
   windows of 1,000 events until a 10 % vs 8 % challenger is declared better.
6. **Pipeline cost**: CPU per event of the in-process pipeline with a profile without and with the
   multivariate section, the domain classifier at the default settings (``multivariate.domain_*``)
   and, in the same run, at the first release's (3 folds, 60 iterations) (``--pipeline-only`` runs
   just this part). ``--against REV`` adds a fourth arm: all four on with the section's operator
   modules (``multivariate``, ``outliers``, ``cbpe``, ``model_watch``) of git revision REV swapped
   in, paired with the others in the same rounds: a one-process A/B of a change to them.

    .venv/bin/python bench/bench_multivariate.py [--seeds 3] [--quick] [--pipeline-only] [--windows N]
        [--rounds R] [--python-gc] [--against REV] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from driftline.operators.cbpe import PerformanceEstimator
from driftline.operators.comparison import SequentialComparison
from driftline.operators.multivariate import DomainClassifierDrift, ReconstructionDrift
from driftline.operators.outliers import OutlierScorer

ELEC2 = Path("/work/shared/data/elec2.csv")
ELEC2_FEATURES = ("day", "period", "nswprice", "nswdemand")
N_FEATURES = 25
PAIRS = 5
RHO = 0.8
REFERENCE = 20_000
ARL = 1_000_000.0
CBPE_TOLERANCE = 0.03


def features_table(rng: np.random.Generator, n: int, *, rotated: bool = False) -> dict[str, Any]:
    """25 features: 5 correlated pairs (the first rotated by 90 degrees if asked), 15 independent."""
    table: dict[str, Any] = {}
    for p in range(PAIRS):
        a = rng.normal(size=n)
        b = RHO * a + np.sqrt(1 - RHO**2) * rng.normal(size=n)
        if rotated and p == 0:
            a, b = -b, a
        table[f"pair{p}_a"], table[f"pair{p}_b"] = a, b
    for j in range(N_FEATURES - 2 * PAIRS):
        table[f"x{j}"] = rng.lognormal(size=n) if j % 2 else rng.normal(size=n)
    return table


def outliers(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(100)
    scorer = OutlierScorer.from_reference(features_table(rng, REFERENCE))
    batch = features_table(rng, 20_000 if quick else 100_000)
    events = [{k: float(v[i]) for k, v in batch.items()} for i in range(2_000 if quick else 20_000)]
    per_event = []
    for _ in range(3):
        t0 = time.process_time()
        for event in events:
            scorer.score(event)
        per_event.append((time.process_time() - t0) / len(events) * 1e6)
    t0 = time.process_time()
    scorer.score_many(batch)
    batch_us = (time.process_time() - t0) / len(batch["x0"]) * 1e6
    clean = scorer.window(batch)
    rotated = scorer.window(features_table(rng, 5_000, rotated=True))
    return {"score_us_per_event": min(per_event), "score_many_us_per_event": batch_us,
            "clean_share": clean.share, "clean_significant": clean.significant,
            "rotated_share": rotated.share, "rotated_p_value": rotated.p_value}


def reconstruction(seeds: int, quick: bool) -> dict[str, Any]:
    quiet_n = 20_000 if quick else 200_000
    delays, false_alarms, us = [], 0, []
    for seed in range(seeds):
        rng = np.random.default_rng(200 + seed)
        monitor = ReconstructionDrift.from_reference(features_table(rng, REFERENCE), arl=ARL)
        quiet = features_table(rng, quiet_n)
        t0 = time.process_time()
        for start in range(0, quiet_n, 1_000):
            false_alarms += len(monitor.update_many({k: v[start:start + 1_000] for k, v in quiet.items()}))
        us.append((time.process_time() - t0) / quiet_n * 1e6)
        monitor.reset()
        alarms = monitor.update_many(features_table(rng, 5_000, rotated=True))
        delays.append(alarms[0].offset if alarms else None)
    return {"us_per_event": min(us), "components": monitor.components, "quiet_events": quiet_n * seeds,
            "false_alarms": false_alarms, "delays": delays}


def domain(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(300)
    t0 = time.process_time()
    classifier = DomainClassifierDrift(features_table(rng, REFERENCE), sample_size=1_000,
                                       null_runs=3 if quick else 6, seed=1)
    build_s = time.process_time() - t0
    t0 = time.process_time()
    clean = classifier.score(features_table(rng, 1_000), ordinal=1)
    window_s = time.process_time() - t0
    rotated = classifier.score(features_table(rng, 1_000, rotated=True), ordinal=2)
    return {"build_s": build_s, "window_s": window_s, "inflation": classifier.inflation,
            "threshold": clean.threshold, "clean_auc": clean.auc, "clean_drifted": clean.drifted,
            "rotated_auc": rotated.auc, "rotated_drifted": rotated.drifted,
            "rotated_top": rotated.top_features[:3]}


def cbpe_simulated(seeds: int) -> dict[str, Any]:
    errors = []
    for seed in range(seeds):
        rng = np.random.default_rng(400 + seed)

        def events(mean: float, n: int, rng: np.random.Generator = rng) -> tuple[np.ndarray, np.ndarray]:
            x = rng.normal(mean, 1.0, n)
            labels = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x - 0.5)))
            return 1 / (1 + np.exp(-(4 * x - 1))), labels

        estimator = PerformanceEstimator.fit(*events(0.0, 20_000))
        for mean in (-1.0, -0.5, 0.0, 0.3, 0.6, 1.0, 1.5):
            scores, labels = events(mean, 5_000)
            realized = float(np.mean((scores >= 0.5) == labels))
            errors.append(abs(estimator.estimate(scores).accuracy - realized))
    return {"windows": len(errors), "max_abs_error": max(errors), "mean_abs_error": float(np.mean(errors)),
            "within": sum(e <= CBPE_TOLERANCE for e in errors)}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Weights (intercept first) of an L2-regularised logistic regression, by Newton steps."""
    xb = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ w))
        step = np.linalg.solve((xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(w.size),
                               xb.T @ (p - y) + l2 * w)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def cbpe_elec2(window: int = 2_000) -> dict[str, Any]:
    data = np.genfromtxt(ELEC2, delimiter=",", names=True, dtype=None, encoding="utf-8")
    x = np.column_stack([data[f].astype(np.float64) for f in ELEC2_FEATURES])
    y = (data["class"] == "UP").astype(np.float64)
    w = fit_logistic(x[:5_000], y[:5_000])
    scores = 1 / (1 + np.exp(-(np.column_stack([np.ones(len(x)), x]) @ w)))
    estimator = PerformanceEstimator.fit(scores[:5_000], y[:5_000])
    # Beside each window: can the domain classifier tell its inputs from the first 5,000 rows?
    domain = DomainClassifierDrift({f: x[:5_000, j] for j, f in enumerate(ELEC2_FEATURES)},
                                   null_runs=4, seed=0)
    rows = []
    for start in range(5_000, len(y), window):
        s, labels = scores[start:start + window], y[start:start + window]
        est = estimator.estimate(s)
        realized = float(np.mean((s >= 0.5) == labels))
        verdict = domain.score({f: x[start:start + window, j] for j, f in enumerate(ELEC2_FEATURES)},
                               ordinal=start)
        rows.append({"start": start, "estimated": est.accuracy, "low": est.low, "high": est.high,
                     "realized": realized, "domain_auc": verdict.auc,
                     "top_feature": verdict.top_features[0][0] if verdict.top_features else ""})
    errors = [abs(r["estimated"] - r["realized"]) for r in rows]
    return {"windows": rows, "within": sum(e <= CBPE_TOLERANCE for e in errors),
            "mean_abs_error": float(np.mean(errors)), "max_abs_error": max(errors)}


def comparison(runs: int) -> dict[str, Any]:
    rng = np.random.default_rng(500)

    def shadow(n: int, p_champion: float, p_challenger: float) -> tuple[np.ndarray, np.ndarray]:
        u, hard = rng.random(n), rng.random(n) < 0.2
        scale = np.where(hard, 3.0, 0.5)
        return (u < p_champion * scale).astype(float), (u < p_challenger * scale).astype(float)

    false_decisions = 0
    for _ in range(runs):
        test = SequentialComparison(paired=True, alpha=0.01)
        false_decisions += any(test.update(*shadow(500, 0.1, 0.1)) for _ in range(30))
    windows = []
    for _ in range(max(runs // 10, 5)):
        test = SequentialComparison(paired=True, alpha=0.01)
        windows.append(next((w + 1 for w in range(100) if test.update(*shadow(1_000, 0.10, 0.08))), None))
    return {"null_runs": runs, "false_decisions": false_decisions, "windows_to_decide": windows}


OPERATOR_MODULES = ("driftline.operators.multivariate", "driftline.operators.outliers",
                    "driftline.operators.cbpe", "driftline.operators.model_watch")
"""The multivariate section's operators, in import order (each imports only earlier ones of them)."""


def operators_at(revision: str) -> dict[str, ModuleType]:
    """The section's operator modules as of git ``revision``, loaded beside the current ones: while
    one loads, the revision's earlier ones stand under their usual names, so it imports those."""
    root = Path(__file__).resolve().parents[1]
    loaded: dict[str, ModuleType] = {}
    saved = {name: importlib.import_module(name) for name in OPERATOR_MODULES}
    try:
        for name in OPERATOR_MODULES:
            path = "src/" + name.replace(".", "/") + ".py"
            source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=root, check=True,
                                    capture_output=True, text=True).stdout
            module = ModuleType(name)  # its own name: dataclasses resolve annotations through it
            module.__file__ = f"{revision}:{path}"
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)  # the repository's own code
            loaded[name] = module
    finally:
        sys.modules.update(saved)
    return loaded


def swaps(modules: dict[str, ModuleType]) -> list[tuple[ModuleType, str, Any, Any]]:
    """(module, name, current, revision's) for every function and class a revision's operator
    module defines under a name the current one has, in every loaded driftline module holding the
    current object under that name (the operator module itself and those importing it by name;
    import the pipeline first)."""
    import driftline.pipeline.local  # noqa: F401 (shard and windows import the operators by name)

    holders = [m for n, m in sorted(sys.modules.items()) if n.startswith("driftline") and m is not None]
    out: list[tuple[ModuleType, str, Any, Any]] = []
    for name, old in modules.items():
        current = vars(sys.modules[name])
        for attr, value in vars(old).items():
            if not (inspect.isclass(value) or inspect.isfunction(value)) or value.__module__ != name:
                continue
            now = current.get(attr)
            if now is None:
                continue
            out.extend((holder, attr, now, value) for holder in holders if vars(holder).get(attr) is now)
    return out


@contextlib.contextmanager
def swapped(pairs: list[tuple[ModuleType, str, Any, Any]]) -> Iterator[None]:
    """The revision's objects in place of the current ones (:func:`swaps`) while the block runs."""
    for holder, attr, _, value in pairs:
        setattr(holder, attr, value)
    try:
        yield
    finally:
        for holder, attr, now, _ in pairs:
            setattr(holder, attr, now)


def pipeline_cost(quick: bool, per_window: int = 10_000, windows_n: int | None = None,
                  rounds: int | None = None, previous_too: bool = True,
                  worker_gc: bool = True, against: str | None = None) -> dict[str, Any]:
    """CPU per event of the in-process pipeline (stage 1 + stage 2, one shard) on one model with
    25 numeric features and scores, with a training profile without and with the multivariate
    section (reconstruction episodes, outlier rate, CBPE, the domain classifier on every 5-minute
    window of ``per_window`` events): ``on`` at the default ``multivariate`` settings, ``on_previous``
    at the first release's (3 folds, 60 iterations), ``no_classifier`` without it. The classifier's
    one-off calibration (per profile and process) is timed apart and left out of the per-event
    figure: each pipeline is handed the classifier built here (the same arguments stage 2 uses).

    Paired, in one process: after one warm-up round (not counted), ``rounds`` rounds each run every
    mode's pipeline on the same records, taking turns batch by batch (2,000 events) in an order
    rotated from round to round and reversed every other round, so a burst of load or a drift in
    the machine's speed lands on all modes alike; each round gives one ratio per mode against that
    round's ``off``. Reported: the median ratio and its quartiles. Each pipeline first takes one
    window closed on its own (its one-off set-up: the profile read, first calls; reported apart as
    ``*_first_window_us_per_event``), then the timed ``windows_n`` windows (default 1): the steady
    state a long-running worker pays, each window's close counted once.
    Best-of per mode across separate processes moved by +-10 points between processes at load < 1.
    ``worker_gc``: the collector tuned as the worker and replay tune it (``tune_gc``); with CPython's
    defaults the bench would pay collections over the input records that production never holds.
    Each timed run starts after a full collection, so one run's garbage is not charged to the next.
    ``against``: a git revision whose operator modules run a fourth arm, ``on_against`` (all four
    on, its pipelines built and fed with them swapped in: :func:`swapped`).
    """
    import gc

    from driftline.config import Settings
    from driftline.operators.model_watch import multivariate_section
    from driftline.operators.multivariate import unpack_array
    from driftline.operators.profile import build_profile
    from driftline.operators.validate import RawRecord
    from driftline.pipeline import windows
    from driftline.pipeline.local import InProcessPipeline
    from driftline.runtime import tune_gc

    rounds = rounds or (2 if quick else 15)
    rng = np.random.default_rng(3)
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        topics={"partitions": 1}, sequential={"enabled": True})
    previous = settings.model_copy(update={"multivariate": settings.multivariate.model_copy(
        update={"domain_folds": 3, "domain_max_iter": 60})})
    reference = {k: np.asarray(v).tolist() for k, v in features_table(rng, REFERENCE).items()}
    x0 = np.asarray(reference["x0"])
    scores = 1 / (1 + np.exp(-3 * x0))
    labels = rng.random(x0.size) < 1 / (1 + np.exp(-2 * x0))
    common = {"label_column": None, "prediction_column": None, "bins": settings.drift.bins,
              "top_k": settings.drift.top_k, "created_at_ms": 0}
    section = multivariate_section(reference, scores=scores.tolist(), labels=labels.tolist())
    assert section is not None
    profiles = {"off": build_profile("m", "1", reference, **common),
                "on": build_profile("m", "1", reference, **common, multivariate=section)}
    timed_windows = windows_n or 1
    n = (1 + timed_windows) * per_window  # the first window of each run warms the pipeline up
    start = 1_767_225_600_000
    times = start + np.sort(rng.integers(0, (1 + timed_windows) * 300_000, n))
    first_end = start + 300_000
    split = int(np.searchsorted(times, first_end))
    table = features_table(rng, n)
    names = list(table)
    columns = [np.asarray(table[k]).tolist() for k in names]
    event_scores = (1 / (1 + np.exp(-3 * np.asarray(table["x0"])))).tolist()
    records = []
    for i, t in enumerate(times.tolist()):
        value = json.dumps({"prediction_id": f"p{i}", "model_id": "m", "timestamp": t,
                            "features": {k: c[i] for k, c in zip(names, columns, strict=True)},
                            "prediction": {"label": event_scores[i] >= 0.5, "score": event_scores[i]}})
        records.append(RawRecord(settings.topics.predictions, 0, i, t, f"p{i}".encode(), value.encode()))
    out: dict[str, Any] = {"events": n - split, "per_window": per_window, "features": N_FEATURES,
                           "rounds": rounds, "worker_gc": worker_gc,
                           "domain_folds": settings.multivariate.domain_folds,
                           "domain_max_iter": settings.multivariate.domain_max_iter}
    sample = unpack_array(section["sample"])
    window_samples = [features_table(rng, 1_000) for _ in range(3)]
    classifiers: tuple[tuple[str, Settings], ...] = (
        (("on", settings), ("on_previous", previous)) if previous_too else (("on", settings),))
    revision_modules = operators_at(against) if against else {}
    revision = swaps(revision_modules)
    if against:
        classifiers += (("on_against", settings),)
    built: dict[str, DomainClassifierDrift] = {}
    for mode, run_settings in classifiers:
        began = time.process_time()
        domain_classifier = (revision_modules["driftline.operators.multivariate"].DomainClassifierDrift
                             if mode == "on_against" else DomainClassifierDrift)
        classifier = domain_classifier({k: sample[:, j] for j, k in enumerate(section["features"])},
                                           features=list(section["features"]), categorical=[],
                                           folds=run_settings.multivariate.domain_folds,
                                           max_iter=run_settings.multivariate.domain_max_iter,
                                           seed=int(section["seed"]), rank_quiet=False)
        built[mode] = classifier
        out[f"{mode}_domain_build_s"] = time.process_time() - began
        # one window's fit alone (the pipeline's difference of two noisy runs only bounds it)
        spent = []
        for ordinal, window_sample in enumerate(window_samples):
            began = time.process_time()
            classifier.score(window_sample, ordinal=ordinal)
            spent.append(time.process_time() - began)
        out[f"{mode}_domain_window_s"] = float(np.median(spent))
    out["domain_build_s"] = out["on_domain_build_s"]
    min_rows = windows.MIN_DOMAIN_ROWS
    runs = [("off", profiles["off"], settings), ("on", profiles["on"], settings),
            ("no_classifier", profiles["on"], settings)]
    if previous_too:
        runs.append(("on_previous", profiles["on"], previous))
    if against:
        runs.append(("on_against", profiles["on"], settings))

    def arm(mode: str) -> contextlib.AbstractContextManager[None]:
        """The revision's operators for its arm, the current ones for the others."""
        return swapped(revision) if mode == "on_against" else contextlib.nullcontext()

    # the classifier's CPU timed where it runs (a difference of two whole runs moves with the load)
    scored: dict[str, list[float]] = {mode: [] for mode in built}
    for mode, classifier in built.items():
        classifier.score = _timed(classifier.score, scored[mode])  # type: ignore[method-assign]
    thresholds = gc.get_threshold()
    if worker_gc:  # as the worker after start-up: the inputs and profiles built above are frozen
        tune_gc()

    def one_round(order: list[tuple[str, Any, Settings]]) -> dict[str, tuple[float, float]]:
        """Per mode, us/event of the first window (the pipeline's one-off set-up included) and of
        the windows after it (the steady state, the figure). The modes' pipelines take turns batch
        by batch, so a burst of load on the box lands on all of them alike."""
        pipelines = {}
        for mode, profile, run_settings in order:
            with arm(mode):
                pipeline = InProcessPipeline(run_settings, profiles=[profile.model_dump_json().encode()])
            if mode in built:  # built above as stage 2 builds it: its one-off calibration is not timed
                for model in pipeline.models:
                    model.windows.domain_classifiers[profile.profile_id] = built[mode]
            pipelines[mode] = pipeline
        spent = {mode: [0.0, 0.0] for mode in pipelines}
        parts = ((0, records[:split], first_end), (1, records[split:], start + (1 + timed_windows) * 300_000))
        for part, part_records, end_ms in parts:
            gc.collect()
            batches = [part_records[i : i + 2_000] for i in range(0, len(part_records), 2_000)]
            for step in [*batches, None]:  # None: close the part's windows
                for mode, pipeline in pipelines.items():
                    windows.MIN_DOMAIN_ROWS = 10**9 if mode == "no_classifier" else min_rows
                    with arm(mode):
                        began = time.process_time()
                        if step is None:
                            pipeline.finish(end_ms)
                        else:
                            pipeline.feed(step)
                        spent[mode][part] += time.process_time() - began
        for mode, pipeline in pipelines.items():
            out[f"{mode}_windows"] = len(pipeline.rows.get("multivariate_drift", []))
        if "on_against" in pipelines:  # a change meant to keep the outputs: every table the same
            same = dict(pipelines["on"].rows) == dict(pipelines["on_against"].rows)
            out["against_rows_identical"] = out.get("against_rows_identical", True) and same
        return {mode: (first_s / split * 1e6, steady_s / (n - split) * 1e6)
                for mode, (first_s, steady_s) in spent.items()}

    try:
        one_round(runs)  # warm-up: caches, lazy imports, first allocations
        for spent in scored.values():
            spent.clear()
        us: dict[str, list[float]] = {mode: [] for mode, _, _ in runs}
        first_us: dict[str, list[float]] = {mode: [] for mode, _, _ in runs}
        for r in range(rounds):
            # rotated, and reversed every other round: each mode follows each other as often (the
            # one before leaves its data in the caches; measured: an identical off arm read +4.5 %
            # when it always followed the all-on arm)
            k = r // 2 % len(runs)
            order = runs[k:] + runs[:k]
            for mode, (first, steady) in one_round(order[::-1] if r % 2 else order).items():
                first_us[mode].append(first)
                us[mode].append(steady)
    finally:
        windows.MIN_DOMAIN_ROWS = min_rows
        if worker_gc:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    off = np.asarray(us["off"])
    for mode, suffix in (("off", ""), ("on", ""), ("on_previous", "_previous"),
                         ("no_classifier", "_no_classifier"), ("on_against", "_against")):
        if mode not in us:
            continue
        out[f"{mode}_us_per_event"] = float(np.median(us[mode]))
        out[f"{mode}_us_runs"] = us[mode]
        out[f"{mode}_first_window_us_per_event"] = float(np.median(first_us[mode]))
        if mode != "off":
            ratios = np.asarray(us[mode]) / off - 1.0
            low, median, high = np.percentile(ratios, [25, 50, 75])
            out[f"overhead{suffix}"] = float(median)
            out[f"overhead{suffix}_iqr"] = (float(low), float(high))
            out[f"overhead{suffix}_runs"] = ratios.tolist()
    if against:  # per event, now against the revision, paired
        ratios = np.asarray(us["on"]) / np.asarray(us["on_against"]) - 1.0
        out["against"] = against
        out["now_vs_against_iqr"] = np.percentile(ratios, [25, 50, 75]).tolist()
    # CPU of one domain-classifier window (median over the timed rounds), and the window size
    # from which all on costs <= 25 %
    for mode in built:
        out[f"{mode}_classifier_s"] = float(np.median(scored[mode]))
    classifier_s = out["classifier_s_per_window"] = out["on_classifier_s"]
    if previous_too:
        out["classifier_s_per_window_previous"] = out["on_previous_classifier_s"]
    room_us = (COST_TARGET - out["overhead_no_classifier"]) * out["off_us_per_event"]
    out["events_per_window_for_25pct"] = classifier_s * 1e6 / room_us if room_us > 0 else None
    return out


def _timed(score: Any, spent: list[float]) -> Any:
    """``score`` that appends each call's CPU seconds to ``spent``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return score(*args, **kwargs)
        finally:
            spent.append(time.process_time() - began)

    return timed


COST_TARGET = 0.25
"""All four capabilities on: at most this much CPU per event over a profile without the section."""


def cost_verdict(overhead_iqr: tuple[float, float]) -> str:
    """"met" when the upper quartile of the paired overheads is within :data:`COST_TARGET`, else
    "missed" and by how many points the upper quartile is over (with 15 pairs it is an upper bound
    of the median overhead at about 94 % confidence by the sign test; see docs/multivariate.md).

    >>> cost_verdict((0.08, 0.21)), cost_verdict((0.18, 0.331))
    ('met', 'missed: upper quartile 8 points over')
    """
    over = 100 * (overhead_iqr[1] - COST_TARGET)
    return "met" if over <= 0 else f"missed: upper quartile {over:.0f} points over"


def overhead_text(p: dict[str, Any], suffix: str = "") -> str:
    """``+21 % (IQR +17 .. +24 %, 15 pairs)``: a paired overhead with its spread."""
    low, high = p[f"overhead{suffix}_iqr"]
    return (f"{100 * p[f'overhead{suffix}']:+.1f} % (IQR {100 * low:+.1f} .. {100 * high:+.1f} %, "
            f"{p['rounds']} pairs)")


def measure(quick: bool) -> Any:
    """bench/run_all.py's row (15): the pipeline's cost with everything on, beside the target: the
    median of 15 paired ratios and its quartiles, met only if the upper quartile is within the
    target (``quick``: 2 pairs of 4,000-event windows, no before: a smoke figure, ~4 CPU-s instead of
    ~13 at 10,000)."""
    from common import Figure

    p = pipeline_cost(quick, per_window=4_000 if quick else 10_000, previous_too=not quick)
    before = (f"; 3 x 60 before: {p['on_previous_domain_window_s']:.2f} s, all on "
              f"{overhead_text(p, '_previous')}" if "overhead_previous" in p else "")
    return Figure(
        "multivariate_cost_overhead", "(15) multivariate drift + outlier rate + CBPE + domain classifier: "
        "CPU per event over without, median of paired runs", p["overhead"] * 100, "%",
        f"upper quartile <= {COST_TARGET:.0%}", p["overhead_iqr"][1] <= COST_TARGET,
        f"{overhead_text(p)}, {cost_verdict(p['overhead_iqr'])}; {p['features']} features, windows of "
        f"{p['per_window']:,} events, the worker's GC settings: {p['off_us_per_event']:.1f} -> "
        f"{p['on_us_per_event']:.1f} us/event (medians); domain classifier {p['domain_folds']} folds x "
        f"{p['domain_max_iter']} iterations {p['on_domain_window_s']:.2f} s CPU per window{before}",
        extra=p,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller streams, 1 seed")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    parser.add_argument("--pipeline-only", action="store_true", help="only part 6, the pipeline's cost")
    parser.add_argument("--windows", type=int, default=None,
                        help="part 6: policy windows of 10,000 events per run (default 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="part 6: paired rounds, each mode once per round (default 15, 2 with --quick)")
    parser.add_argument("--python-gc", action="store_true",
                        help="part 6: CPython's default collector instead of the worker's tune_gc")
    parser.add_argument("--against", default=None, metavar="REV",
                        help="part 6: a fourth arm with the operator modules of git revision REV")
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    out: dict[str, Any] = {}
    if args.pipeline_only:
        print_pipeline_cost(out, args.quick, args.windows, args.rounds, not args.python_gc, args.against)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2, default=float))
        return 0

    o = out["outliers"] = outliers(args.quick)
    print("1. outlier scorer, 25 features")
    print(f"  score(event): {o['score_us_per_event']:.1f} us/event; score_many: "
          f"{o['score_many_us_per_event']:.2f} us/event")
    print(f"  clean share {o['clean_share']:.4%} (expected 0.1 %, significant: {o['clean_significant']}); "
          f"rotated pair: {o['rotated_share']:.2%}, p {o['rotated_p_value']:.2g}")

    r = out["reconstruction"] = reconstruction(seeds, args.quick)
    print(f"2. reconstruction drift ({r['components']} of {N_FEATURES} components, arl {ARL:g})")
    print(f"  update_many: {r['us_per_event']:.2f} us/event; false alarms {r['false_alarms']} over "
          f"{r['quiet_events']:,} quiet events; delay after rotating one pair: {r['delays']} events")

    d = out["domain"] = domain(args.quick)
    print("3. domain classifier (1,000 vs 1,000 rows, 3 folds)")
    print(f"  build {d['build_s']:.1f} s CPU, {d['window_s']:.2f} s CPU per window; inflation "
          f"{d['inflation']:.2f}, threshold {d['threshold']:.3f}")
    print(f"  clean AUC {d['clean_auc']:.3f} (drifted {d['clean_drifted']}); rotated AUC "
          f"{d['rotated_auc']:.3f} (drifted {d['rotated_drifted']}), top {d['rotated_top']}")

    c = out["cbpe_simulated"] = cbpe_simulated(seeds)
    print("4a. CBPE, simulated covariate shift (windows of 5,000)")
    print(f"  |estimated - realized| accuracy: max {c['max_abs_error']:.4f}, mean "
          f"{c['mean_abs_error']:.4f}; within +-{CBPE_TOLERANCE}: {c['within']}/{c['windows']}")

    if ELEC2.exists():
        e = out["cbpe_elec2"] = cbpe_elec2()
        print("4b. CBPE on elec2 (model and calibration on rows 0-4,999; windows of 2,000)")
        for row in e["windows"]:
            print(f"  rows {row['start']:>6,}: estimated {row['estimated']:.3f} "
                  f"[{row['low']:.3f}, {row['high']:.3f}]  realized {row['realized']:.3f}  "
                  f"diff {row['estimated'] - row['realized']:+.3f}  domain AUC {row['domain_auc']:.2f} "
                  f"({row['top_feature']})")
        print(f"  within +-{CBPE_TOLERANCE}: {e['within']}/{len(e['windows'])}; mean |diff| "
              f"{e['mean_abs_error']:.3f}, max {e['max_abs_error']:.3f}")
    v = out["comparison"] = comparison(100 if args.quick else 1_000)
    print("5. version comparison (shadow, paired errors)")
    print(f"  no difference: {v['false_decisions']}/{v['null_runs']} runs decided (alpha 0.01, 30 looks); "
          f"10 % vs 8 %: windows of 1,000 to decide: median "
          f"{np.median([w for w in v['windows_to_decide'] if w]):.0f}, max "
          f"{max((w for w in v['windows_to_decide'] if w), default=0)}, undecided "
          f"{v['windows_to_decide'].count(None)}/{len(v['windows_to_decide'])}")
    print_pipeline_cost(out, args.quick, args.windows, args.rounds, not args.python_gc, args.against)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


def print_pipeline_cost(out: dict[str, Any], quick: bool, windows_n: int | None = None,
                        rounds: int | None = None, worker_gc: bool = True,
                        against: str | None = None) -> None:
    p = out["pipeline"] = pipeline_cost(quick, windows_n=windows_n, rounds=rounds, worker_gc=worker_gc,
                                        against=against)
    print(f"6. pipeline cost, stage 1 + 2, {p['features']} features, {p['events']:,} events per run, "
          f"windows of {p['per_window']:,} events, {p['rounds']} paired rounds, "
          + ("the worker's GC settings" if worker_gc else "CPython's default GC"))
    print(f"  without the multivariate section {p['off_us_per_event']:.1f} us/event (median); with it "
          "(all on, "
          f"domain classifier {p['domain_folds']} folds x {p['domain_max_iter']} iterations) "
          f"{p['on_us_per_event']:.1f} us/event: {overhead_text(p)} ({p['on_windows']} windows per run; "
          f"domain classifier calibration {p['domain_build_s']:.1f} s once per profile, not counted)")
    print(f"  target all on <= {COST_TARGET:+.0%} (upper quartile): {cost_verdict(p['overhead_iqr'])} "
          "(make bench row 15)")
    print("  paired overheads: " + " ".join(f"{100 * r:+.0f}" for r in p["overhead_runs"]))
    print(f"  before (3 folds x 60 iterations): {p['on_previous_us_per_event']:.1f} us/event: "
          f"{overhead_text(p, '_previous')}, the classifier "
          f"{p['classifier_s_per_window_previous']:.3f} s CPU per window (calibration "
          f"{p['on_previous_domain_build_s']:.1f} s)")
    print(f"  one quiet window's fit alone: {p['on_domain_window_s']:.3f} s CPU now, "
          f"{p['on_previous_domain_window_s']:.3f} s before")
    needed = p["events_per_window_for_25pct"]
    print(f"  all but the domain classifier {p['no_classifier_us_per_event']:.1f} us/event: "
          f"{overhead_text(p, '_no_classifier')}; the classifier (timed in the pipeline) "
          f"{p['classifier_s_per_window']:.3f} s CPU per window: all on stays within +25 % from "
          + (f"{needed:,.0f} events per policy window" if needed else "no window size (the rest is over)"))
    if against:
        low, median, high = (100 * v for v in p["now_vs_against_iqr"])
        print(f"  all on with {against}'s operators {p['on_against_us_per_event']:.1f} us/event: "
              f"{overhead_text(p, '_against')}, its classifier {p['on_against_classifier_s']:.3f} s CPU per "
              f"window; per event now / {against}: {median:+.1f} % (IQR {low:+.1f} .. {high:+.1f} %); "
              "every table's rows " + ("identical" if p["against_rows_identical"] else "DIFFERENT"))


if __name__ == "__main__":
    raise SystemExit(main())
