"""A run's results read back from ClickHouse (with FINAL), as the rows backtest/calibrate take.

Reads go through :func:`driftline.store.query.run_query`, so they work while a worker owns the
embedded engine. Only all-traffic rows (segment '') of one window size are read; the default
size is the smallest the runs have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from driftline.config import Settings
from driftline.replay.backtest import Alarm, WindowRow
from driftline.replay.calibrate import ScoreRow
from driftline.store.query import run_query

_WIDE_INT = re.compile(r"^(Nullable\()?U?Int(64|128|256)")



def select(settings: Settings, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query as dicts (64-bit integers, quoted in JSON, as ints); values are
    bound to the SQL's ``{name:Type}`` placeholders by ClickHouse."""
    result = orjson.loads(run_query(settings, sql, "json", parameters=parameters))
    wide = [c["name"] for c in result["meta"] if _WIDE_INT.match(c["type"])]
    rows: list[dict[str, Any]] = result["data"]
    for row in rows:
        for name in wide:
            if isinstance(row[name], str):
                row[name] = int(row[name])
    return rows


def stored_runs(settings: Settings) -> str:
    """The replay runs with model_drift windows, for a message naming a run that has none: a
    mistyped run id was left out of a comparison without a word."""
    runs = [r["run_id"] for r in select(settings, "SELECT DISTINCT run_id FROM model_drift "
                                                  "WHERE run_id != '' ORDER BY run_id LIMIT 21")]
    if not runs:
        return "no replay run has windows yet (`driftline replay --run-id RUN ...`)"
    return "runs with windows: " + ", ".join(runs[:20]) + (", ..." if len(runs) > 20 else "")


def window_size(settings: Settings, run_ids: Sequence[str], requested: int | None) -> int | None:
    """The window size to read: ``requested``, else the smallest in the runs' model_drift rows."""
    if requested is not None:
        return requested
    rows = select(settings, "SELECT min(window_size_s) AS s, count() AS n FROM model_drift "
                            "WHERE run_id IN {runs:Array(String)}", runs=list(run_ids))
    return int(rows[0]["s"]) if rows and int(rows[0]["n"]) else None


def load_windows(settings: Settings, run_ids: Sequence[str], size_s: int) -> list[WindowRow]:
    """model_drift rows, each with the max PSI over its features (pseudo-features excluded)."""
    where = "run_id IN {runs:Array(String)} AND segment = '' AND window_size_s = {size:UInt32}"
    bound = {"runs": list(run_ids), "size": int(size_s)}
    windows = select(settings, f"""
        SELECT run_id, model_id, model_version, toUnixTimestamp64Milli(window_start) AS ws,
               toUnixTimestamp64Milli(window_end) AS we, n_events, n_drifted, drifted
        FROM model_drift FINAL WHERE {where} ORDER BY run_id, model_id, model_version, ws""", **bound)
    psi = select(settings, f"""
        SELECT run_id, model_id, model_version, toUnixTimestamp64Milli(window_start) AS ws, max(psi) AS psi
        FROM drift_scores FINAL WHERE {where} AND NOT startsWith(feature, '__')
        GROUP BY run_id, model_id, model_version, ws""", **bound)
    max_psi = {(r["run_id"], r["model_id"], r["model_version"], r["ws"]): r["psi"] for r in psi}
    return [
        WindowRow(w["run_id"], w["model_id"], w["model_version"], w["ws"], w["we"], int(w["n_events"]),
                  int(w["n_drifted"]), bool(w["drifted"]),
                  max_psi.get((w["run_id"], w["model_id"], w["model_version"], w["ws"])))
        for w in windows
    ]


def load_point_alarms(settings: Settings, run_ids: Sequence[str]) -> list[Alarm]:
    """Concept-drift detector alarms (all traffic) and retrain triggers of the runs."""
    metrics = select(settings, """
        SELECT run_id, model_id, model_version, toUnixTimestamp64Milli(time) AS t FROM model_metrics FINAL
        WHERE run_id IN {runs:Array(String)} AND segment = '' AND row_kind = 'alarm' ORDER BY t""",
        runs=list(run_ids))
    triggers = select(settings, """
        SELECT run_id, model_id, model_version, toUnixTimestamp64Milli(triggered_at) AS t
        FROM retrain_triggers FINAL WHERE run_id IN {runs:Array(String)} ORDER BY t""", runs=list(run_ids))
    return [
        Alarm(r["run_id"], r["model_id"], r["model_version"], kind, r["t"], r["t"])
        for kind, rows in (("performance", metrics), ("trigger", triggers))
        for r in rows
    ]


def load_scores(settings: Settings, run_id: str, size_s: int) -> list[ScoreRow]:
    """Per-feature PSI and JS distance of every window, with the window's event count."""
    where = "run_id = {run_id:String} AND segment = '' AND window_size_s = {size:UInt32}"
    bound = {"run_id": run_id, "size": int(size_s)}
    events = select(settings, f"""
        SELECT model_id, model_version, toUnixTimestamp64Milli(window_start) AS ws, n_events
        FROM model_drift FINAL WHERE {where}""", **bound)
    n_events = {(r["model_id"], r["model_version"], r["ws"]): int(r["n_events"]) for r in events}
    scores = select(settings, f"""
        SELECT model_id, model_version, feature, toUnixTimestamp64Milli(window_start) AS ws,
               toUnixTimestamp64Milli(window_end) AS we, count, psi, js_distance
        FROM drift_scores FINAL WHERE {where} AND NOT startsWith(feature, '__')
        ORDER BY model_id, feature, ws""", **bound)
    return [
        ScoreRow(r["model_id"], r["feature"], r["ws"], r["we"],
                 n_events.get((r["model_id"], r["model_version"], r["ws"]), int(r["count"])),
                 r["psi"], r["js_distance"])
        for r in scores
    ]
