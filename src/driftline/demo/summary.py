"""The demo summary: what was injected (the simulator's ground truth) against what was detected.

``fetch_rows`` runs the queries (through the worker's /query endpoint while it owns the embedded
engine); everything else is a pure function of those rows, unit-tested without a pipeline.
Times in rows are epoch milliseconds (``toUnixTimestamp64Milli``), counts may arrive as strings
(ClickHouse's JSON format quotes 64-bit integers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

Row = dict[str, Any]
Rows = dict[str, list[Row]]

_REQUEST = "replaceRegexpOne(prediction_id, '-v[^-]*$', '')"  # the simulator's request id


def query_parameters(window_s: int, interval_s: int, challenged: list[str]) -> dict[str, Any]:
    """Values bound to the queries' ``{name:Type}`` placeholders (never spliced into the SQL)."""
    return {"window_s": int(window_s), "interval_s": int(interval_s), "models": list(challenged)}


def queries() -> dict[str, str]:
    """The summary's queries by name (live pipeline only: ``run_id = ''``), see query_parameters."""
    return {
        "drift": (
            "SELECT model_id, model_version, feature, toUnixTimestamp64Milli(window_start) AS start_ms, "
            "toUnixTimestamp64Milli(window_end) AS end_ms, psi, drifted FROM drift_scores FINAL "
            "WHERE run_id = '' AND segment = '' AND window_size_s = {window_s:UInt32} "
            "AND feature_kind IN ('numeric', 'categorical') "
            "ORDER BY model_id, model_version, feature, start_ms"
        ),
        "metrics": (
            "SELECT model_id, model_version, row_kind, toUnixTimestamp64Milli(time) AS time_ms, n_outcomes, "
            "accuracy FROM model_metrics FINAL WHERE run_id = '' AND segment = '' "
            "ORDER BY model_id, model_version, time_ms"
        ),
        "triggers": (
            "SELECT model_id, model_version, trigger_id, reason, "
            "toUnixTimestamp64Milli(triggered_at) AS time_ms FROM retrain_triggers FINAL "
            "WHERE run_id = '' ORDER BY time_ms"
        ),
        "jobs": (
            "SELECT trigger_id, attempt, model_id, model_version, status FROM retrain_jobs FINAL "
            "WHERE run_id = '' ORDER BY trigger_id, attempt"
        ),
        "episodes": (
            "SELECT model_id, model_version, feature, source, status, escalations, "
            "toUnixTimestamp64Milli(opened_at) AS time_ms "
            "FROM drift_episodes FINAL WHERE run_id = '' ORDER BY model_id, model_version, time_ms"
        ),
        "dead_letters": (
            "SELECT error_kind, count() AS n FROM dead_letters FINAL WHERE run_id = '' "
            "GROUP BY error_kind ORDER BY error_kind"
        ),
        "late_events": (
            "SELECT event_type, count() AS n FROM late_events FINAL WHERE run_id = '' "
            "GROUP BY event_type ORDER BY event_type"
        ),
        # events the join did not turn into an outcome, a row each (unjoined_events), by reason; a
        # label of an evicted prediction is an 'evicted' row too, counted apart from the predictions
        "unjoined": (
            "SELECT if(event_type = 'label' AND reason = 'evicted', 'evicted_label', reason) AS reason, "
            "count() AS n FROM unjoined_events FINAL WHERE run_id = '' GROUP BY reason ORDER BY reason"
        ),
        # Champion and challenger scored the same requests: accuracy per interval on the requests
        # that have a labeled outcome for more than one version.
        "head_to_head": (
            "SELECT model_id, model_version, toUnixTimestamp(toStartOfInterval(prediction_time, "
            "toIntervalSecond({interval_s:UInt32}))) * 1000 AS time_ms, "
            "avg(correct) AS accuracy, count() AS n "
            "FROM outcomes FINAL WHERE run_id = '' AND has({models:Array(String)}, model_id) "
            f"AND correct IS NOT NULL AND ({_REQUEST}, model_id) IN (SELECT {_REQUEST} AS request, model_id "
            "FROM outcomes FINAL WHERE run_id = '' AND has({models:Array(String)}, model_id) "
            "AND correct IS NOT NULL "
            "GROUP BY request, model_id HAVING uniqExact(model_version) > 1) "
            "GROUP BY model_id, model_version, time_ms ORDER BY model_id, model_version, time_ms"
        ),
    }


def fetch_rows(query: Callable[[str], str], sql: dict[str, str]) -> Rows:
    """Run every query; ``query(sql)`` binds the parameters and returns ClickHouse JSON text."""
    return {name: orjson.loads(query(statement))["data"] for name, statement in sql.items()}


# -- pure functions on rows -------------------------------------------------------------------------


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp.

    >>> rfc3339(1_700_000_000_000)
    '2023-11-14T22:13:20Z'
    >>> rfc3339(None) is None
    True
    """
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(row: Row) -> tuple[str, str]:
    return str(row["model_id"]), str(row["model_version"])


def versions(truth: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model_id, version, role) of every simulated model version, in scenario order."""
    out = []
    for model_id, model in truth["models"].items():
        out.append((model_id, str(model["champion"]), "champion"))
        if model.get("challenger"):
            out.append((model_id, str(model["challenger"]), "challenger"))
    return out


def injected_features(model: dict[str, Any]) -> list[str]:
    return sorted({str(d["feature"]) for d in model.get("covariate_drift", [])})


def injection_ms(model: dict[str, Any]) -> int | None:
    """Earliest event time of the model's injected drift (covariate or concept), None if clean."""
    times = [int(d["start_ms"]) for d in model.get("covariate_drift", [])]
    if model.get("concept_drift"):
        times.append(int(model["concept_drift"]["start_ms"]))
    return min(times) if times else None


def detections(drift_rows: Iterable[Row]) -> dict[tuple[str, str], dict[str, list[int]]]:
    """Per model version: feature -> end times of the windows in which it drifted."""
    found: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in drift_rows:
        if int(row["drifted"]):
            found[_key(row)][str(row["feature"])].append(int(row["end_ms"]))
    return found


def weighted_accuracy(
    metric_rows: Iterable[Row], key: tuple[str, str], after: int, before: int
) -> float | None:
    """Outcome-weighted accuracy of the interval rows ending in ``(after, before]``."""
    n = hits = 0.0
    for row in metric_rows:
        if row["row_kind"] != "interval" or _key(row) != key or row["accuracy"] is None:
            continue
        if after < int(row["time_ms"]) <= before:
            weight = float(row["n_outcomes"])
            n += weight
            hits += weight * float(row["accuracy"])
    return round(hits / n, 4) if n else None


def succeeded_jobs(job_rows: Iterable[Row]) -> dict[tuple[str, str], int]:
    """Triggers with a succeeded retrain job, per model version."""
    done: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in job_rows:
        if row["status"] == "succeeded":
            done[_key(row)].add(str(row["trigger_id"]))
    return {key: len(ids) for key, ids in done.items()}


def model_summary(truth: dict[str, Any], rows: Rows, split_ms: int) -> list[Row]:
    """One entry per model version: injected vs detected drift, accuracy, alarms, triggers, jobs.

    ``split_ms`` divides "before" from "after" for every model (the demo injects all drift then).
    """
    found = detections(rows["drift"])
    succeeded = succeeded_jobs(rows["jobs"])
    out = []
    for model_id, version, role in versions(truth):
        model = truth["models"][model_id]
        key = (model_id, version)
        injected = injected_features(model)
        detected = found.get(key, {})
        first = min((min(ends) for ends in detected.values()), default=None)
        concept = model.get("concept_drift")
        episodes = [r for r in rows.get("episodes", []) if _key(r) == key]
        feature_episodes = [r for r in episodes if r["source"] == "features"]
        first_episode = min((int(r["time_ms"]) for r in feature_episodes), default=None)
        out.append(
            {
                "model_id": model_id,
                "model_version": version,
                "role": role,
                "injected_drift": injected,
                "concept_drift": rfc3339(int(concept["start_ms"])) if concept else None,
                "injection_time": rfc3339(injection_ms(model)),
                "detected_drift": sorted(detected),
                "false_detections": sorted(set(detected) - set(injected)),
                "missed": sorted(set(injected) - set(detected)),
                "drifted_windows": {feature: len(ends) for feature, ends in sorted(detected.items())},
                "first_detection": rfc3339(first),
                "drift_episodes": len(feature_episodes),
                "episode_features": sorted({str(r["feature"]) for r in feature_episodes}),
                "first_episode": rfc3339(first_episode),
                "escalations": sum(int(r["escalations"]) for r in feature_episodes),
                "error_episodes": len(episodes) - len(feature_episodes),
                "accuracy_before": weighted_accuracy(rows["metrics"], key, 0, split_ms),
                "accuracy_after": weighted_accuracy(rows["metrics"], key, split_ms, 2**63),
                "expected_accuracy": model["expected_accuracy"].get(version),
                "detector_alarms": sum(
                    1 for r in rows["metrics"] if r["row_kind"] == "alarm" and _key(r) == key
                ),
                "retrain_triggers": sum(1 for r in rows["triggers"] if _key(r) == key),
                "trigger_reasons": sorted({str(r["reason"]) for r in rows["triggers"] if _key(r) == key}),
                "retrain_jobs_succeeded": succeeded.get(key, 0),
            }
        )
    return out


def counts_by(rows: Iterable[Row], key: str) -> dict[str, int]:
    """``{row[key]: int(row['n'])}`` of a GROUP BY result."""
    return {str(r[key]): int(r["n"]) for r in rows}


def build_summary(truth: dict[str, Any], rows: Rows, split_ms: int) -> dict[str, Any]:
    """The whole summary (JSON-ready, without the run's own facts such as the report path)."""
    late = counts_by(rows["late_events"], "event_type")
    return {
        "models": model_summary(truth, rows, split_ms),
        "injection_time": rfc3339(split_ms),
        "dead_letters": counts_by(rows["dead_letters"], "error_kind"),
        "late_events": sum(late.values()),
        "late_events_by_type": late,
        "unjoined_events": counts_by(rows.get("unjoined", []), "reason"),
    }
