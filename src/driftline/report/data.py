"""What a model report reads: one model (optionally one version) of one run, in an event-time range.

Every query is constant text with ``{name:Type}`` placeholders; the values travel as ClickHouse
query parameters (see ``ReportScope.parameters``). Times come back as epoch milliseconds
(``toUnixTimestamp64Milli``); 64-bit counts may arrive as strings (ClickHouse's JSON quotes them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

Row = dict[str, Any]
Rows = dict[str, list[Row]]
# ``query(sql, parameters)`` returns ClickHouse JSON-format text (driftline.store.query.run_query).
QueryFn = Callable[[str, Mapping[str, Any]], str]

NO_LOWER_MS = -(2**62)
NO_UPPER_MS = 2**62

_MODEL = "model_id = {model:String} AND run_id = {run_id:String}"
_VERSION = " AND ({version:String} = '' OR model_version = {version:String})"
_SCOPE = _MODEL + _VERSION


def _in_range(column: str) -> str:
    """``column`` (a DateTime64) within ``[from_ms, to_ms)``."""
    return (
        " AND toUnixTimestamp64Milli(" + column + ") >= {from_ms:Int64}"
        " AND toUnixTimestamp64Milli(" + column + ") < {to_ms:Int64}"
    )


@dataclass(frozen=True)
class ReportScope:
    """Which rows a report shows.

    >>> scope = ReportScope("churn", version="3", from_ms=1000)
    >>> scope.parameters(60)["to_ms"] == NO_UPPER_MS, scope.parameters(60)["version"]
    (True, '3')
    >>> scope.describe_range()
    'from 1970-01-01T00:00:01.000Z'
    """

    model_id: str
    version: str | None = None
    run_id: str = ""
    from_ms: int | None = None
    to_ms: int | None = None

    def parameters(self, window_s: int = 0) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "run_id": self.run_id,
            "version": self.version or "",
            "from_ms": NO_LOWER_MS if self.from_ms is None else self.from_ms,
            "to_ms": NO_UPPER_MS if self.to_ms is None else self.to_ms,
            "window_s": int(window_s),
        }

    def describe_range(self) -> str:
        from driftline.replay.times import format_time

        parts = []
        if self.from_ms is not None:
            parts.append(f"from {format_time(self.from_ms)}")
        if self.to_ms is not None:
            parts.append(f"until {format_time(self.to_ms)} (exclusive)")
        return " ".join(parts) or "all event times"


# Where the model has rows at all (no time bounds): versions, window sizes, the newest event time
# (of each drift window size, and of the outcome intervals as size 0).
EXTENT_SQL = (
    "SELECT model_version, window_size_s AS window_s, "
    "toUnixTimestamp64Milli(min(window_start)) AS first_ms, "
    "toUnixTimestamp64Milli(max(window_end)) AS last_ms "
    "FROM drift_scores WHERE " + _SCOPE + " GROUP BY model_version, window_size_s "
    "UNION ALL SELECT model_version, 0 AS window_s, toUnixTimestamp64Milli(min(time)) AS first_ms, "
    "toUnixTimestamp64Milli(max(time)) AS last_ms FROM model_metrics WHERE "
    + _SCOPE
    + " AND model_version != '' GROUP BY model_version"
)

# Windows of a model that has events but nothing scored or measured (no reference, no outcomes).
SEEN_SQL = "SELECT count() AS n FROM feature_windows WHERE " + _SCOPE

# The models of the run, for the message about an unknown one.
MODELS_SQL = (
    "SELECT DISTINCT model_id FROM (SELECT model_id FROM model_drift WHERE run_id = {run_id:String} "
    "UNION ALL SELECT model_id FROM model_metrics WHERE run_id = {run_id:String} AND model_id != '') "
    "ORDER BY model_id"
)

QUERIES: dict[str, str] = {
    # The heat map: every feature of the smallest window size, all traffic (no segment).
    "drift": (
        "SELECT model_version, feature, feature_kind, toUnixTimestamp64Milli(window_start) AS start_ms, "
        "toUnixTimestamp64Milli(window_end) AS end_ms, count, psi, js_distance, ks_pvalue_adj, "
        "chi2_pvalue_adj, drifted, drifted_by FROM drift_scores FINAL WHERE "
        + _SCOPE
        + " AND segment = '' AND window_size_s = {window_s:UInt32}"
        + _in_range("window_start")
        + " ORDER BY model_version, feature, start_ms"
    ),
    "model_drift": (
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS start_ms, n_events, n_features, "
        "n_drifted, drifted, drifted_features FROM model_drift FINAL WHERE "
        + _SCOPE
        + " AND segment = '' AND window_size_s = {window_s:UInt32}"
        + _in_range("window_start")
        + " ORDER BY model_version, start_ms"
    ),
    "metrics": (
        "SELECT model_version, toUnixTimestamp64Milli(time) AS time_ms, interval_s, n_outcomes, n_expired, "
        "n_evicted, label_coverage, accuracy, mae, rmse, baseline, alarm FROM model_metrics FINAL WHERE "
        + _SCOPE
        + " AND segment = '' AND row_kind = 'interval' AND model_version != ''"
        + _in_range("time")
        + " ORDER BY model_version, time_ms"
    ),
    "alarms": (
        "SELECT model_version, toUnixTimestamp64Milli(time) AS time_ms, detector FROM model_metrics FINAL "
        "WHERE "
        + _SCOPE
        + " AND segment = '' AND row_kind = 'alarm'"
        + _in_range("time")
        + " ORDER BY model_version, time_ms"
    ),
    # Labels no prediction joined are attributed to the model with version '' (they name none).
    "orphans": (
        "SELECT sum(n_orphan_labels) AS n FROM model_metrics FINAL WHERE "
        + _MODEL
        + " AND row_kind = 'interval'"
        + _in_range("time")
    ),
    "duplicates": (
        "SELECT model_version, sum(n_duplicate_predictions) AS predictions, "
        "sum(n_duplicate_labels) AS labels "
        "FROM model_metrics FINAL WHERE "
        + _SCOPE
        + " AND row_kind = 'duplicates'"
        + _in_range("time")
        + " GROUP BY model_version ORDER BY model_version"
    ),
    "triggers": (
        "SELECT model_version, trigger_id, reason, message, toUnixTimestamp64Milli(triggered_at) AS time_ms, "
        "toUnixTimestamp64Milli(window_start) AS from_ms, toUnixTimestamp64Milli(window_end) AS to_ms "
        "FROM retrain_triggers FINAL WHERE "
        + _SCOPE
        + _in_range("triggered_at")
        + " ORDER BY time_ms, model_version"
    ),
    "jobs": (
        "SELECT trigger_id, attempt, status, message FROM retrain_jobs FINAL WHERE "
        + _SCOPE
        + " ORDER BY trigger_id, attempt"
    ),
    # Episodes overlapping the range: opened before its end, closed (or last seen) after its start.
    "episodes": (
        "SELECT model_version, episode_id, feature, source, status, "
        "toUnixTimestamp64Milli(opened_at) AS opened_ms, "
        "toUnixTimestamp64Milli(last_seen) AS last_seen_ms, toUnixTimestamp64Milli(closed_at) AS closed_ms, "
        "close_reason, magnitude, peak_magnitude, unit, escalations, opened_component "
        "FROM drift_episodes FINAL WHERE "
        + _SCOPE
        + " AND toUnixTimestamp64Milli(opened_at) < {to_ms:Int64} "
        "AND toUnixTimestamp64Milli(ifNull(closed_at, last_seen)) >= {from_ms:Int64} "
        "ORDER BY model_version, opened_ms, feature"
    ),
    "alerts": (
        "SELECT model_version, feature, source, if(event_kind = '', 'alarm', event_kind) AS kind, "
        "count() AS n, "
        "toUnixTimestamp64Milli(min(event_time)) AS first_ms FROM drift_alerts FINAL WHERE "
        + _SCOPE
        + _in_range("event_time")
        + " GROUP BY model_version, feature, source, kind "
        "ORDER BY model_version, first_ms, feature, kind"
    ),
    # Champion/challenger pairs on all traffic, per outcome interval; a version scope keeps the
    # pairs it takes part in.
    "comparisons": (
        "SELECT champion_version, challenger_version, mode, paired, metric, "
        "toUnixTimestamp64Milli(time) AS time_ms, n_champion, n_challenger, champion_value, "
        "challenger_value, difference, difference_low, difference_high, decision, decided_now, p_value "
        "FROM version_comparison FINAL WHERE "
        + _MODEL
        + " AND ({version:String} = '' OR {version:String} IN (champion_version, challenger_version))"
        " AND segment = ''"
        + _in_range("time")
        + " ORDER BY champion_version, challenger_version, time_ms"
    ),
    # Multivariate rows (models whose training profile has the section): every window size, since
    # the domain classifier runs on the retrain policy's size only, which may not be the smallest.
    "multivariate": (
        "SELECT model_version, window_size_s, toUnixTimestamp64Milli(window_start) AS start_ms, n_events, "
        "share_above_p99, n_sample, auc, auc_threshold, drifted, top_features, domain_status "
        "FROM multivariate_drift FINAL WHERE "
        + _SCOPE
        + " AND segment = ''"
        + _in_range("window_start")
        + " ORDER BY model_version, window_size_s, start_ms"
    ),
    "outliers": (
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS start_ms, n_events, outliers, rate, "
        "expected_rate, p_value, significant FROM outlier_rate FINAL WHERE "
        + _SCOPE
        + " AND segment = '' AND window_size_s = {window_s:UInt32}"
        + _in_range("window_start")
        + " ORDER BY model_version, start_ms"
    ),
    # CBPE (binary classifiers calibrated in their training profile) beside the labels' accuracy.
    "estimated": (
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS start_ms, n_scored, "
        "estimated_accuracy, estimated_low, estimated_high, n_labeled, realized_accuracy "
        "FROM estimated_vs_realized WHERE "
        + _SCOPE
        + " AND window_size_s = {window_s:UInt32}"
        + _in_range("window_start")
        + " ORDER BY model_version, start_ms"
    ),
    # Dead letters name a model only when their record was readable far enough ('' otherwise).
    "dead_letters": (
        "SELECT error_kind, countIf(model_id = {model:String}) AS model, "
        "countIf(model_id = '') AS unattributed "
        "FROM dead_letters FINAL WHERE run_id = {run_id:String} AND model_id IN ({model:String}, '')"
        + _in_range("source_timestamp")
        + " GROUP BY error_kind ORDER BY error_kind"
    ),
    "late_events": (
        "SELECT event_type, model_version, count() AS n FROM late_events FINAL WHERE "
        + _MODEL
        + " AND ({version:String} = '' OR model_version IN ({version:String}, ''))"
        + _in_range("event_time")
        + " GROUP BY event_type, model_version ORDER BY event_type, model_version"
    ),
}


def _rows(query: QueryFn, sql: str, parameters: Mapping[str, Any]) -> list[Row]:
    return list(orjson.loads(query(sql, parameters))["data"])


@dataclass(frozen=True)
class Extent:
    """The model's versions, its smallest drift window size (the heat map's) and the newest event
    time the page draws (all times): the end of its newest window of that size, or its newest
    outcome interval if later."""

    versions: list[str]
    window_s: int
    last_ms: int | None


def read_extent(query: QueryFn, scope: ReportScope) -> Extent:
    rows = _rows(query, EXTENT_SQL, scope.parameters())
    window_s = min((int(r["window_s"]) for r in rows if int(r["window_s"])), default=0)
    # Not a larger size's newer window: one that does not divide into the smallest (900 s against
    # 600 s) can end past the smallest's newest, and `--last` would start after its last window.
    ends = [int(r["last_ms"]) for r in rows
            if r["last_ms"] is not None and int(r["window_s"]) in (0, window_s)]
    versions = sorted({str(r["model_version"]) for r in rows}, key=version_order)
    return Extent(versions, window_s, max(ends, default=None))


def has_events(query: QueryFn, scope: ReportScope) -> bool:
    """True if the model has feature_windows rows in ``scope``'s run (whatever else it lacks)."""
    rows = _rows(query, SEEN_SQL, scope.parameters())
    return bool(rows) and int(rows[0]["n"]) > 0


def known_models(query: QueryFn, run_id: str) -> list[str]:
    return [str(r["model_id"]) for r in _rows(query, MODELS_SQL, {"run_id": run_id})]


def fetch(query: QueryFn, scope: ReportScope, window_s: int) -> Rows:
    """Every query of the report, bound to ``scope``."""
    parameters = scope.parameters(window_s)
    return {name: _rows(query, sql, parameters) for name, sql in QUERIES.items()}


def version_order(version: str) -> tuple[int, str]:
    """Numeric versions by number (2 before 10), others after them by name.

    >>> sorted(["10", "2", "beta"], key=version_order)
    ['2', '10', 'beta']
    """
    return (int(version), "") if version.isdigit() else (2**63, version)
