"""Example retrain job: train a new model version on recent labeled outcomes.

Run by the retrain listener (the default ``retrain.entrypoint``) or by hand:
``driftline jobs example-retrain < trigger.json``. Steps:

1. Read the trigger JSON from ``DRIFTLINE_TRIGGER_JSON`` or, when that is unset, stdin.
2. Read the newest ``MAX_ROWS`` labeled outcomes of the model (every version, the trigger's
   ``run_id``) with ``label_time <= triggered_at`` from ClickHouse (``run_query``, so it works while
   the worker owns the embedded engine), oldest first.
3. Train a River model on the outcomes' features: one-vs-rest logistic regression for
   classification, linear regression when the labels are numeric; numbers are scaled, strings
   one-hot encoded, a few passes in time order. The reported metrics come from a candidate fit
   without the newest 20%, scored on them; the saved model is then fit on everything.
4. Write ``model.pkl`` (a River pipeline: ``model.predict_one(featurize(features))``) and
   ``metrics.json`` to ``retrain.artifacts_dir/<model>/<new version>/``.
5. Build the new version's reference profile from those outcomes' features (and the new
   model's predictions and the labels), publish it to ``topics.profiles`` (key = model_id) and
   write it to ``reference_profiles``.

New version rule: ``V`` becomes ``V-r1`` and ``V-rN`` becomes ``V-r(N+1)`` — a function of the
triggering version only, so re-running a trigger rewrites the same version. The training data
and model are deterministic for a given ClickHouse content and trigger.

Exit codes: 0 success, 2 bad trigger input, 3 too few labeled outcomes.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from river import compose, linear_model, metrics, multiclass, preprocessing

from driftline.config import Settings, load_settings_or_exit
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.schemas.events import RetrainTrigger
from driftline.store.client import database_name
from driftline.store.profiles import PublishError, publish_profile
from driftline.store.query import run_query

MAX_ROWS = 50_000
MIN_ROWS = 20
HOLDOUT_SHARE = 0.2
EPOCHS = 5
LABEL_COLUMN = "__label__"
PREDICTION_COLUMN = "__prediction__"


class JobError(Exception):
    """The job cannot run; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def read_trigger(stdin_text: str | None = None) -> RetrainTrigger:
    """The trigger from ``DRIFTLINE_TRIGGER_JSON``, else from ``stdin_text`` (default: stdin)."""
    text = os.environ.get("DRIFTLINE_TRIGGER_JSON")
    if not text:
        text = sys.stdin.read() if stdin_text is None else stdin_text
    try:
        return RetrainTrigger.model_validate_json(text)
    except ValueError as err:
        raise JobError(f"bad trigger JSON: {str(err).splitlines()[0]}", 2) from None


def new_version(old: str) -> str:
    """The version a retrain of ``old`` produces.

    >>> new_version("1"), new_version("1-r1"), new_version("2024-09-r9")
    ('1-r1', '1-r2', '2024-09-r10')
    """
    match = re.fullmatch(r"(.*)-r(\d+)", old)
    if match:
        return f"{match.group(1)}-r{int(match.group(2)) + 1}"
    return f"{old}-r1"


@dataclass(frozen=True)
class Example:
    """One labeled outcome: raw features and the label (a class, or a number for regression)."""

    features: dict[str, Any]
    label: str | float


def fetch_outcomes(settings: Settings, trigger: RetrainTrigger, limit: int = MAX_ROWS) -> list[Example]:
    """The newest ``limit`` labeled outcomes of the model up to the trigger, oldest first."""
    sql = (
        "SELECT prediction_id, toUnixTimestamp64Milli(label_time) AS label_ms, label, label_value, features "
        f"FROM {database_name(settings)}.outcomes FINAL "
        "WHERE run_id = {run_id:String} AND model_id = {model_id:String} "
        "AND label_time <= fromUnixTimestamp64Milli({until:Int64}) "
        "ORDER BY label_time DESC, prediction_id DESC LIMIT {limit:UInt32}"
    )
    parameters = {"run_id": trigger.run_id, "model_id": trigger.model_id,
                  "until": int(trigger.triggered_at), "limit": int(limit)}
    data = orjson.loads(run_query(settings, sql, "json", parameters=parameters))["data"]
    data.sort(key=lambda r: (int(r["label_ms"]), r["prediction_id"]))
    examples = []
    for row in data:
        features = orjson.loads(row["features"]) if row["features"] else {}
        label: str | float = float(row["label_value"]) if row["label_value"] is not None else row["label"]
        examples.append(Example(features if isinstance(features, dict) else {}, label))
    return examples


def featurize(features: dict[str, Any]) -> dict[str, float | str]:
    """Model inputs: finite numbers as floats, bools as 0/1, strings as is (one-hot encoded later).

    >>> featurize({"x": 1, "ok": True, "c": "a", "n": None, "bad": float("nan")})
    {'x': 1.0, 'ok': 1.0, 'c': 'a'}
    """
    x: dict[str, float | str] = {}
    for name, value in features.items():
        if isinstance(value, bool | int | float):
            if math.isfinite(value):
                x[name] = float(value)
        elif isinstance(value, str):
            x[name] = value
    return x


@dataclass
class Trained:
    model: compose.Pipeline
    task: str
    metrics: dict[str, Any]
    predictions: list[Any]


def _new_model(regression: bool) -> compose.Pipeline:
    # Numbers are scaled; strings one-hot encoded. A one-hot input is absent (0) when off, so it
    # must not go through the online scaler, which would only ever see it on and scale it to 0.
    features = compose.TransformerUnion(
        compose.SelectType(numbers.Number) | preprocessing.StandardScaler(),
        compose.SelectType(str) | preprocessing.OneHotEncoder(),
    )
    if regression:
        return compose.Pipeline(features, preprocessing.TargetStandardScaler(
            regressor=linear_model.LinearRegression(intercept_lr=0.1)))
    return compose.Pipeline(features, multiclass.OneVsRestClassifier(linear_model.LogisticRegression()))


def _fit(model: compose.Pipeline, inputs: list[dict[str, float | str]], labels: list[Any]) -> None:
    for _ in range(EPOCHS):
        for x, y in zip(inputs, labels, strict=True):
            model.learn_one(x, y)


def train(examples: list[Example]) -> Trained:
    """Fit on all but the newest share and score that share; then fit the final model on all.

    ``EPOCHS`` passes in time order; deterministic (River's SGD has no randomness).
    """
    regression = all(isinstance(e.label, float) for e in examples)
    labels = [e.label if regression else str(e.label) for e in examples]
    inputs = [featurize(e.features) for e in examples]
    n_test = max(1, int(len(examples) * HOLDOUT_SHARE))
    n_train = len(examples) - n_test
    scores: dict[str, metrics.base.Metric] = (
        {"mae": metrics.MAE(), "rmse": metrics.RMSE()} if regression else {"accuracy": metrics.Accuracy()})
    candidate = _new_model(regression)
    _fit(candidate, inputs[:n_train], labels[:n_train])
    for x, y in zip(inputs[n_train:], labels[n_train:], strict=True):
        predicted = candidate.predict_one(x)
        if predicted is not None:
            for metric in scores.values():
                metric.update(y, predicted)
    model = _new_model(regression)
    _fit(model, inputs, labels)
    predictions = [model.predict_one(x) for x in inputs]
    report: dict[str, Any] = {"task": "regression" if regression else "classification", "n_train": n_train,
                              "n_holdout": n_test, "n_total": len(examples), "epochs": EPOCHS,
                              "holdout": {name: metric.get() for name, metric in scores.items()}}
    if not regression:
        report["classes"] = sorted(set(labels), key=str)
    return Trained(model, report["task"], report, predictions)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_artifacts(settings: Settings, trigger: RetrainTrigger, version: str, trained: Trained,
                    profile: ReferenceProfile) -> Path:
    """Write model.pkl and metrics.json; returns their directory."""
    safe_model = re.sub(r"[^A-Za-z0-9._-]", "_", trigger.model_id)
    out = settings.retrain.artifacts_dir / safe_model / re.sub(r"[^A-Za-z0-9._-]", "_", version)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "model.pkl", pickle.dumps(trained.model))
    summary = {"model_id": trigger.model_id, "model_version": version,
               "previous_version": trigger.model_version, "trigger_id": trigger.trigger_id,
               "reason": str(trigger.reason), "profile_id": profile.profile_id, **trained.metrics}
    _write_atomic(out / "metrics.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return out


def profile_columns(examples: list[Example], predictions: list[Any]) -> dict[str, list[Any]]:
    """Columns for ``build_profile``: every feature seen (None where a row lacks it), label, prediction."""
    names = sorted({name for e in examples for name in e.features} - {LABEL_COLUMN, PREDICTION_COLUMN})
    columns: dict[str, list[Any]] = {name: [e.features.get(name) for e in examples] for name in names}
    columns[LABEL_COLUMN] = [e.label for e in examples]
    columns[PREDICTION_COLUMN] = list(predictions)
    return columns


def retrain(settings: Settings, trigger: RetrainTrigger) -> Path:
    """The whole job; returns the artifact directory."""
    examples = fetch_outcomes(settings, trigger)
    if len(examples) < MIN_ROWS:
        raise JobError(f"only {len(examples)} labeled outcomes of {trigger.model_id} (need {MIN_ROWS})", 3)
    trained = train(examples)
    version = new_version(trigger.model_version)
    profile = build_profile(
        trigger.model_id, version, profile_columns(examples, trained.predictions),
        label_column=LABEL_COLUMN, prediction_column=PREDICTION_COLUMN,
        bins=settings.drift.bins, top_k=settings.drift.top_k,
        task="regression" if trained.task == "regression" else "classification",
    )
    out = write_artifacts(settings, trigger, version, trained, profile)
    publish_profile(settings, profile, trigger.run_id)
    return out


def main() -> int:
    """Entry point: settings from the environment / ``DRIFTLINE_CONFIG``; returns the exit code."""
    settings = load_settings_or_exit()
    try:
        out = retrain(settings, read_trigger())
    except JobError as err:
        print(f"example_retrain: {err}", file=sys.stderr)
        return err.code
    except PublishError as err:  # the model is written; the listener retries the publishing job
        print(f"example_retrain: {err}", file=sys.stderr)
        return 1
    print(f"example_retrain: new model version in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
