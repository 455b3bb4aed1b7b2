"""Training reference profiles for the demo's model versions, as `driftline profile build` makes.

Without a training profile a model's first live window becomes its reference; with one window of
a few hundred events as the reference, sampling noise in the reference alone makes clean
categorical features look drifted now and then. A profile of a few thousand drift-free requests
of the same models is what a real deployment would publish, and it keeps the clean features
clean. (The simulator's feature rows are deterministic per seed, so the training requests share
their feature rows with the first live requests; their labels and predictions are drawn anew.)
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from driftline.operators.model_watch import ScoreKind, multivariate_section
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.simulate import Scenario, generate

LABEL = "__label__"
PREDICTION = "__prediction__"
SCORE = "__score__"
TRAINING_REQUESTS = 8000


def training_scenario(scenario: Scenario, requests: int = TRAINING_REQUESTS) -> Scenario:
    """The same models without drift, malformed events or missing labels, just before ``scenario``."""
    duration_s = requests / scenario.rate
    models = [m.model_copy(update={"covariate_drift": [], "concept_drift": None}) for m in scenario.models]
    return scenario.model_copy(update={
        "start": scenario.start_ms() - int(duration_s * 1000), "duration_s": duration_s, "speed": "max",
        "models": models, "malformed_rate": 0.0, "label_coverage": 1.0,
    })


def training_columns(scenario: Scenario) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """Per (model_id, version): feature columns plus the label and prediction (classes as strings)
    and the model's score."""
    predictions: dict[str, dict[str, Any]] = {}
    labels: dict[str, Any] = {}
    for event in generate(scenario):
        doc = orjson.loads(event.value)
        if event.kind == "predictions":
            predictions[doc["prediction_id"]] = doc
        elif event.kind == "labels":
            labels[doc["prediction_id"]] = doc["label"]
    columns: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for pid, doc in predictions.items():
        table = columns[(doc["model_id"], doc["model_version"])]
        for name, value in doc["features"].items():
            table[name].append(value)
        table[PREDICTION].append(str(doc["prediction"]["label"]))
        table[SCORE].append(doc["prediction"].get("score"))
        table[LABEL].append(str(labels[pid]) if pid in labels else None)
    return {key: dict(table) for key, table in columns.items()}


def training_profiles(scenario: Scenario, bins: int, top_k: int,
                      effective_from_ms: int, multivariate: bool = True,
                      confidence_scores: bool = False) -> list[ReferenceProfile]:
    """One training profile per model version of ``scenario`` (deterministic for a scenario), with
    the multivariate section as `driftline profile build` makes it (unless ``multivariate`` is
    False, as `--no-multivariate`); a model whose scenario sends positive-class scores
    (``ModelSpec.score``) also gets the CBPE calibration, and with ``confidence_scores`` one that
    sends the predicted class's confidence too (as `--score-kind confidence`)."""
    positive_scores = {m.model_id for m in scenario.models if m.score == "positive"}
    profiles = []
    for (model_id, version), columns in sorted(training_columns(training_scenario(scenario)).items()):
        scores = columns.pop(SCORE)
        features = {n: v for n, v in columns.items() if n not in (LABEL, PREDICTION)}
        kind: ScoreKind = "positive" if model_id in positive_scores else "confidence"
        calibrated = kind == "positive" or confidence_scores
        section = None if not multivariate else multivariate_section(
            features, scores=scores if calibrated else None, labels=columns[LABEL] if calibrated else None,
            predictions=columns[PREDICTION], score_kind=kind, bins=bins)
        profiles.append(build_profile(
            model_id, version, columns, label_column=LABEL, prediction_column=PREDICTION, bins=bins,
            top_k=top_k, effective_from_ms=effective_from_ms, source="training", task="classification",
            created_at_ms=effective_from_ms, multivariate=section,
        ))
    return profiles


def write_training_table(scenario: Scenario, path: Path, requests: int = TRAINING_REQUESTS) -> int:
    """Write the drift-free training table of the scenario's one model version (features, then
    ``prediction`` and ``label`` columns) as Parquet, or CSV for a ``.csv`` path; returns its rows."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    tables = training_columns(training_scenario(scenario, requests))
    if len(tables) != 1:
        raise ValueError(f"a training table describes one model version; the scenario has {len(tables)}")
    columns = dict(next(iter(tables.values())))
    columns["prediction"] = columns.pop(PREDICTION)
    columns["label"] = columns.pop(LABEL)
    del columns[SCORE]  # not a feature: `profile build` would read an unnamed extra column as one
    table = pa.table(columns)
    if path.suffix.lower() == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return table.num_rows
