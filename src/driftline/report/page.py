"""The report page: per-version numbers from the rows (pure functions), and the HTML around the charts.

The numbers the page shows are also embedded as JSON in a ``data-report`` attribute of the element
``#driftline-report-data``, so a test or a script can read them back without scraping tables.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from driftline.report.data import ReportScope, Row, Rows, version_order
from driftline.report.svg import (
    MAX_COLUMNS,
    HeatCell,
    Series,
    Span,
    esc,
    heatmap,
    line_chart,
    timeline,
    version_colour,
)

KIND_ORDER = {"numeric": 0, "categorical": 1, "prediction": 2, "latency": 3}
EPISODE_COLOURS = {"features": "#0b63c4", "errors": "#7b2cbf"}


def stamp(ms: int | None) -> str:
    """Epoch milliseconds as a short UTC time for tables.

    >>> stamp(1_700_000_000_000), stamp(None)
    ('2023-11-14 22:13:20', '-')
    """
    if ms is None:
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def natural(name: str) -> tuple[str, int, str]:
    """x2 before x10: names sort by prefix, then number.

    >>> sorted(["x10", "x2", "c1"], key=natural)
    ['c1', 'x2', 'x10']
    """
    digits = name[len(name.rstrip("0123456789")) :]
    return name[: len(name) - len(digits)], int(digits) if digits else -1, name


def weighted_mean(pairs: Iterable[tuple[float | None, int]]) -> float | None:
    """The mean of values weighted by counts, over the values present.

    >>> weighted_mean([(1.0, 1), (0.5, 3), (None, 10)])
    0.625
    >>> weighted_mean([]) is None
    True
    """
    total = weight = 0.0
    for value, n in pairs:
        if value is not None and n > 0:
            total += float(value) * n
            weight += n
    return total / weight if weight else None


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def version_summary(rows: Rows, version: str) -> dict[str, Any]:
    """The numbers of one version the page shows (JSON-ready)."""
    drift = [r for r in rows["drift"] if r["model_version"] == version]
    metrics = [r for r in rows["metrics"] if r["model_version"] == version]
    outcomes = sum(_int(r["n_outcomes"]) for r in metrics)
    expired = sum(_int(r["n_expired"]) for r in metrics)
    evicted = sum(_int(r["n_evicted"]) for r in metrics)  # dropped at join.max_pending: never labeled
    triggers = [r for r in rows["triggers"] if r["model_version"] == version]
    episodes = [r for r in rows["episodes"] if r["model_version"] == version]
    duplicates = next((r for r in rows["duplicates"] if r["model_version"] == version), {})
    return {
        "windows": len({int(r["start_ms"]) for r in drift}),
        "features": len({r["feature"] for r in drift}),
        "drifted_cells": sum(_int(r["drifted"]) for r in drift),
        "drifted_features": sorted({str(r["feature"]) for r in drift if _int(r["drifted"])}, key=natural),
        "model_drift_windows": sum(
            _int(r["drifted"]) for r in rows["model_drift"] if r["model_version"] == version
        ),
        "outcomes": outcomes,
        "expired": expired,
        "evicted": evicted,
        "accuracy": _round(weighted_mean((r["accuracy"], _int(r["n_outcomes"])) for r in metrics)),
        "mae": _round(weighted_mean((r["mae"], _int(r["n_outcomes"])) for r in metrics)),
        "label_coverage": _round(outcomes / (outcomes + expired + evicted)) if outcomes + expired + evicted
        else None,
        "alarms": sum(1 for r in rows["alarms"] if r["model_version"] == version),
        "triggers": len(triggers),
        "trigger_reasons": dict(sorted(Counter(str(r["reason"]) for r in triggers).items())),
        "episodes": len(episodes),
        "open_episodes": sum(1 for r in episodes if r["status"] == "open"),
        "episode_features": sorted({str(r["feature"]) for r in episodes}, key=natural),
        "alerts": sum(_int(r["n"]) for r in rows["alerts"] if r["model_version"] == version),
        "duplicate_predictions": _int(duplicates.get("predictions")),
        "duplicate_labels": _int(duplicates.get("labels")),
        "late_events": sum(_int(r["n"]) for r in rows["late_events"] if r["model_version"] == version),
    }


def model_summary(scope: ReportScope, versions: Sequence[str], window_s: int, rows: Rows) -> dict[str, Any]:
    """Everything the page states in numbers (embedded in the page as JSON)."""
    return {
        "model_id": scope.model_id,
        "run_id": scope.run_id,
        "from_ms": scope.from_ms,
        "to_ms": scope.to_ms,
        "window_s": window_s,
        "versions": {v: version_summary(rows, v) for v in versions},
        "dead_letters": {
            str(r["error_kind"]): {"model": _int(r["model"]), "unattributed": _int(r["unattributed"])}
            for r in rows["dead_letters"]
        },
        "late_events": dict(sorted(_sum_by(rows["late_events"], "event_type").items())),
        "orphan_labels": sum(_int(r["n"]) for r in rows["orphans"]),
    }


def _sum_by(rows: Iterable[Row], key: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in rows:
        counts[str(r[key])] += _int(r["n"])
    return counts


# -- charts from rows --------------------------------------------------------------------------------


def drift_heatmap(rows: Rows, version: str, window_s: int, marks: Sequence[tuple[int, str]] = ()) -> str:
    drift = [r for r in rows["drift"] if r["model_version"] == version]
    if not drift:
        return ""
    kinds = {str(r["feature"]): str(r["feature_kind"]) for r in drift}
    features = sorted(kinds, key=lambda f: (KIND_ORDER.get(kinds[f], 9), natural(f)))
    step = window_s * 1000
    first = min(int(r["start_ms"]) for r in drift)
    last_end = max(int(r["end_ms"]) for r in drift)
    n_windows = max(1, math.ceil((last_end - first) / step))
    merge = math.ceil(n_windows / MAX_COLUMNS)
    width = merge * step
    columns = [
        (first + i * width, min(first + (i + 1) * width, last_end))
        for i in range(math.ceil(n_windows / merge))
    ]
    grouped: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in drift:
        grouped[(str(r["feature"]), first + (int(r["start_ms"]) - first) // width * width)].append(r)
    cells = [_cell(feature, start, start + width, members) for (feature, start), members in grouped.items()]
    model_cols = [0] * len(columns)
    for r in rows["model_drift"]:
        if r["model_version"] == version and int(r["start_ms"]) >= first:
            index = (int(r["start_ms"]) - first) // width
            if index < len(columns):
                model_cols[index] += _int(r["drifted"])
    merged = f", {merge} windows a column" if merge > 1 else ""
    title = f"v{version}: drift per feature and {window_s} s window{merged}"
    return heatmap(title, features, columns, cells, model_cols if rows["model_drift"] else None, marks)


def _cell(feature: str, start: int, end: int, members: list[Row]) -> HeatCell:
    psis = [float(r["psi"]) for r in members if r["psi"] is not None]
    drifted = sum(_int(r["drifted"]) for r in members)
    psi = max(psis) if psis else None
    psi_text = "no PSI" if psi is None else f"PSI {psi:.3f}"
    if len(members) == 1:
        r = members[0]
        by = ", ".join(r["drifted_by"] or [])
        tests = [
            f"{name} {float(r[col]):.3g}"
            for name, col in (
                ("JS", "js_distance"),
                ("KS p adj", "ks_pvalue_adj"),
                ("chi2 p adj", "chi2_pvalue_adj"),
            )
            if r[col] is not None
        ]
        verdict = f"drifted ({by})" if drifted else "not drifted"
        detail = (
            f"{feature} {stamp(start)}: {psi_text}, {', '.join(tests) or 'no tests'}; {verdict}; "
            f"{_int(r['count'])} values"
        )
    else:
        detail = f"{feature}, {len(members)} windows from {stamp(start)}: max {psi_text}; {drifted} drifted"
    return HeatCell(feature, start, end, psi, drifted, len(members), detail)


def performance_charts(rows: Rows, versions: Sequence[str], marks: Sequence[tuple[int, str]] = ()) -> str:
    metrics = rows["metrics"]
    metric = "accuracy" if any(r["accuracy"] is not None for r in metrics) else "mae"
    colours = {v: version_colour(i) for i, v in enumerate(versions)}
    alarms: dict[str, list[int]] = defaultdict(list)
    for r in rows["alarms"]:
        alarms[str(r["model_version"])].append(int(r["time_ms"]))

    def series(column: str, with_alarms: bool) -> list[Series]:
        return [
            Series(
                f"v{v}",
                colours[v],
                [
                    (int(r["time_ms"]), float(r[column]))
                    for r in metrics
                    if r["model_version"] == v and r[column] is not None
                ],
                alarms.get(v, []) if with_alarms else [],
            )
            for v in versions
        ]

    fired: dict[int, list[str]] = defaultdict(list)  # one label per time: triggers often fire together
    for r in rows["triggers"]:
        fired[int(r["time_ms"])].append(f"{r['reason']} v{r['model_version']}")
    triggers = [(at, ", ".join(names)) for at, names in sorted(fired.items())]
    main = series(metric, True)
    top = max((value for s in main for _, value in s.points), default=1.0) if metric == "mae" else 1.0
    charts = [
        line_chart(
            f"{metric} per interval (label time), detector alarms and retrain triggers",
            metric,
            main,
            triggers,
            marks,
            y_max=top or 1.0,
        ),
        line_chart(
            "label coverage per interval: outcomes / (outcomes + predictions whose label never came)",
            "label coverage",
            series("label_coverage", False),
            triggers,
            marks,
        ),
    ]
    return "".join(c for c in charts if c)


def episode_timeline(rows: Rows, lo: int, hi: int) -> str:
    spans = [
        Span(
            f"v{r['model_version']} {r['feature']}",
            int(r["opened_ms"]),
            int(r["closed_ms"] if r["closed_ms"] is not None else r["last_seen_ms"]),
            r["status"] == "open",
            EPISODE_COLOURS.get(str(r["source"]), "#555"),
            f"{r['feature']} ({r['source']}) opened {stamp(r['opened_ms'])} by {r['opened_component']}; "
            f"{r['status']}; magnitude {float(r['magnitude']):.3g} {r['unit']}, "
            f"{r['escalations']} escalation(s)",
        )
        for r in sorted(
            rows["episodes"],
            key=lambda r: (version_order(str(r["model_version"])), natural(str(r["feature"]))),
        )
    ]
    return timeline(
        "sequential drift episodes (blue: features, purple: error stream; pale: still open)", spans, lo, hi
    )


# -- HTML ---------------------------------------------------------------------------------------------


def table(headers: Sequence[str], body: Iterable[Sequence[Any]], css: str = "", caption: str = "") -> str:
    """An HTML table, or a line saying there is nothing of ``caption``.

    >>> table(["kind", "n"], [], caption="late events")
    '<p class="none">late events: none</p>'
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = ["<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in body]
    if not lines:
        return f'<p class="none">{esc(caption or headers[0])}: none</p>'
    title = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table class="{css}">{title}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table></div>"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    if isinstance(value, list | tuple):
        return esc(", ".join(map(str, value)) or "-")
    return esc(value)


COMPARISON_ROWS = (
    ("drift windows scored", "windows"),
    ("features", "features"),
    ("drifted feature-windows", "drifted_cells"),
    ("drifted features", "drifted_features"),
    ("model-level drifted windows", "model_drift_windows"),
    ("labeled outcomes", "outcomes"),
    ("accuracy (outcome-weighted)", "accuracy"),
    ("MAE", "mae"),
    ("label coverage", "label_coverage"),
    ("predictions never labeled", "expired"),
    ("predictions evicted unlabeled (join.max_pending)", "evicted"),
    ("detector alarms", "alarms"),
    ("retrain triggers", "triggers"),
    ("trigger reasons", "trigger_reasons"),
    ("sequential episodes", "episodes"),
    ("still open", "open_episodes"),
    ("episode features", "episode_features"),
    ("sequential alert events", "alerts"),
    ("duplicate predictions", "duplicate_predictions"),
    ("duplicate labels", "duplicate_labels"),
    ("late events", "late_events"),
)


def _reasons(value: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in value.items()) or "-"


def comparison_table(summary: dict[str, Any]) -> str:
    versions = summary["versions"]
    body = []
    for label, key in COMPARISON_ROWS:
        values = [versions[v][key] for v in versions]
        if key == "mae" and all(v is None for v in values):
            continue
        body.append([label, *(_reasons(v) if key == "trigger_reasons" else v for v in values)])
    return table(["", *(f"v{v}" for v in versions)], body, "compare")


def comparison_summary(rows: Rows) -> list[dict[str, Any]]:
    """Per champion/challenger pair: each version's outcome-weighted accuracy or MAE over the
    intervals, and the sequential test's decisions in time order (JSON-ready)."""
    pairs: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows["comparisons"]:
        pairs[(str(r["champion_version"]), str(r["challenger_version"]))].append(r)
    out = []
    for (champion, challenger), intervals in sorted(pairs.items(),
                                                     key=lambda kv: tuple(map(version_order, kv[0]))):
        last = intervals[-1]
        out.append({
            "champion": champion,
            "challenger": challenger,
            "mode": str(last["mode"]),
            "paired": bool(_int(last["paired"])),
            "metric": str(last["metric"]),
            "intervals": len(intervals),
            "champion_value": _round(weighted_mean((r["champion_value"], _int(r["n_champion"]))
                                                   for r in intervals)),
            "challenger_value": _round(weighted_mean((r["challenger_value"], _int(r["n_challenger"]))
                                                     for r in intervals)),
            "decision": str(last["decision"]),
            "decisions": [[int(r["time_ms"]), str(r["decision"])]
                          for r in intervals if _int(r["decided_now"])],
        })
    return out


def comparison_charts(rows: Rows, summary: list[dict[str, Any]],
                      marks: Sequence[tuple[int, str]] = ()) -> str:
    """One chart per pair: both versions' metric per interval, decisions as verticals; a table of
    the pairs."""
    parts = []
    for pair in summary:
        champion, challenger = pair["champion"], pair["challenger"]
        intervals = [r for r in rows["comparisons"]
                     if r["champion_version"] == champion and r["challenger_version"] == challenger]

        def points(column: str, intervals: list[Row] = intervals) -> list[tuple[int, float]]:
            return [(int(r["time_ms"]), float(r[column])) for r in intervals if r[column] is not None]

        series = [Series(f"v{champion} (champion)", version_colour(0), points("champion_value")),
                  Series(f"v{challenger} (challenger)", version_colour(1), points("challenger_value"))]
        top = 1.0
        if pair["metric"] == "mae":
            top = max((v for s in series for _, v in s.points), default=1.0) or 1.0
        decisions = [(at, f"{decision.replace('_', ' ')}") for at, decision in pair["decisions"]]
        parts.append(line_chart(
            f"v{challenger} against champion v{champion}: {pair['metric']} per interval (label time), "
            "and the sequential test's decisions", pair["metric"], series, decisions, marks, y_max=top))
    parts.append(table(
        ["champion", "challenger", "mode", "metric", "intervals", "champion", "challenger", "decisions",
         "standing"],
        [[f"v{p['champion']}", f"v{p['challenger']}",
          p["mode"] + (" (paired by request)" if p["paired"] else ""), p["metric"], p["intervals"],
          p["champion_value"], p["challenger_value"],
          "; ".join(f"{d.replace('_', ' ')} at {stamp(at)}" for at, d in p["decisions"]) or "-",
          p["decision"].replace("_", " ") or "undecided"]
         for p in summary],
        "comparisons",
        caption="champion vs challenger (version_comparison, all traffic)",
    ))
    return "".join(parts)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def multivariate_summary(rows: Rows, versions: Sequence[str], window_s: int) -> dict[str, Any]:
    """Per version, the four multivariate series the page draws (JSON-ready; times are window starts):
    domain classifier ``[start, auc, threshold, drifted]`` (on the window size it ran on, the retrain
    policy's), reconstruction error share above q99 ``[start, share]``, outlier rate
    ``[start, rate, p_value]`` and CBPE ``[start, estimated, low, high, realized]`` (realized None
    while no label arrived). Versions without multivariate rows are left out."""
    out: dict[str, Any] = {}
    for v in versions:
        mv = [r for r in rows["multivariate"] if r["model_version"] == v]
        classified = [r for r in mv if r["auc"] is not None]
        outliers = [r for r in rows["outliers"] if r["model_version"] == v]
        estimated = [r for r in rows["estimated"] if r["model_version"] == v]
        if not (mv or outliers or estimated):
            continue
        out[v] = {
            "auc_window_s": int(classified[0]["window_size_s"]) if classified else None,
            "auc": [[int(r["start_ms"]), float(r["auc"]), _float(r["auc_threshold"]), _int(r["drifted"])]
                    for r in classified],
            "auc_drifted_windows": sum(_int(r["drifted"]) for r in classified),
            # the classifier's own window size without an AUC, and why (a low-traffic model's
            # windows all say too_few_rows; other window sizes are expected not to have one)
            "auc_missing": dict(sorted(Counter(
                str(r["domain_status"] or "before_migration_021") for r in mv
                if r["auc"] is None and r["domain_status"] != "other_window_size").items())),
            "share_above_p99": [[int(r["start_ms"]), float(r["share_above_p99"])] for r in mv
                                if int(r["window_size_s"]) == window_s and r["share_above_p99"] is not None],
            "outlier_rate": [[int(r["start_ms"]), float(r["rate"]), _float(r["p_value"])]
                             for r in outliers if r["rate"] is not None],
            "significant_outlier_windows": sum(_int(r["significant"]) for r in outliers),
            "estimated_accuracy": [[int(r["start_ms"]), float(r["estimated_accuracy"]),
                                    _float(r["estimated_low"]), _float(r["estimated_high"]),
                                    _float(r["realized_accuracy"])]
                                   for r in estimated if r["estimated_accuracy"] is not None],
        }
    return out


def _neg_log10(p: float | None) -> float | None:
    """A p-value as -log10 (0 -> 300, the smallest double's order)."""
    return None if p is None else -math.log10(max(p, 1e-300))


def multivariate_charts(summary: dict[str, Any], versions: Sequence[str], window_s: int,
                        marks: Sequence[tuple[int, str]] = ()) -> str:
    """Four charts, every version in each (its colour; dashed: thresholds and bands)."""
    colours = {v: version_colour(i) for i, v in enumerate(versions)}
    shown = [v for v in versions if v in summary]

    def points(v: str, key: str, column: int, transform: Any = None) -> list[tuple[int, float]]:
        out = []
        for row in summary[v][key]:
            value = row[column] if transform is None else transform(row[column])
            if value is not None:
                out.append((int(row[0]), float(value)))
        return out

    def expected(level: float, key: str) -> list[Series]:
        times = [row[0] for v in shown for row in summary[v][key]]
        if not times:
            return []
        line = [(min(times), level), (max(times), level)]
        return [Series(f"expected {level:g}", "#888", line, style="dashed")]

    auc_sizes = sorted({s["auc_window_s"] for s in summary.values() if s["auc_window_s"] is not None})
    auc = [Series(f"v{v}", colours[v], points(v, "auc", 1)) for v in shown]
    auc += [Series(f"v{v} threshold", colours[v], points(v, "auc", 2), style="dashed") for v in shown]
    shares = [Series(f"v{v}", colours[v], points(v, "share_above_p99", 1)) for v in shown]
    share_top = max([0.02] + [value for s in shares for _, value in s.points])
    rates = [Series(f"v{v}", colours[v], points(v, "outlier_rate", 1)) for v in shown]
    rate_top = max([0.002] + [value for s in rates for _, value in s.points])
    pvalues = [Series(f"v{v}", colours[v], points(v, "outlier_rate", 2, _neg_log10)) for v in shown]
    p_top = max([4.0] + [value for s in pvalues for _, value in s.points])
    estimated = []
    for v in shown:
        estimated += [
            Series(f"v{v} estimated", colours[v], points(v, "estimated_accuracy", 1)),
            Series(f"v{v} low", colours[v], points(v, "estimated_accuracy", 2), style="dashed"),
            Series(f"v{v} high", colours[v], points(v, "estimated_accuracy", 3), style="dashed"),
            Series(f"v{v} realized", colours[v], points(v, "estimated_accuracy", 4), style="dotted"),
        ]
    sizes = ", ".join(f"{s} s" for s in auc_sizes)
    charts = [
        line_chart(f"domain classifier ROC-AUC per {sizes} window, window vs reference (dashed: drift "
                   "threshold)", "AUC", auc, (), marks)
        if any(s.points for s in auc) else "",
        line_chart(f"share of events whose reconstruction error exceeds the reference's q99, per "
                   f"{window_s} s window (1 % expected)", "share above q99",
                   shares + expected(0.01, "share_above_p99"), (), marks, y_max=share_top * 1.1),
        line_chart(f"outlier rate per {window_s} s window: robust Mahalanobis distance above the reference's "
                   "q99.9 (0.1 % expected)", "outlier rate", rates + expected(0.001, "outlier_rate"), (),
                   marks, y_max=rate_top * 1.1),
        line_chart("outlier rate's binomial p-value as -log10 p (above 3: p < 0.001, significant)",
                   "-log10 p", pvalues + expected(3.0, "outlier_rate"), (), marks, y_max=p_top * 1.1),
        line_chart(f"accuracy per {window_s} s window: CBPE estimate before labels, its 95 % band (dashed), "
                   "realized (dotted)", "accuracy", estimated, (), marks)
        if any(s.points for s in estimated) else "",
    ]
    drawn = "".join(c for c in charts if c)
    return drawn + table(
        ["version", "domain classifier drifted windows", "windows without an AUC (why)",
         "outlier rate significant windows", "estimated accuracy (last)", "realized (last)"],
        [[f"v{v}", summary[v]["auc_drifted_windows"],
          ", ".join(f"{n} {why}" for why, n in summary[v]["auc_missing"].items()) or "none",
          summary[v]["significant_outlier_windows"],
          summary[v]["estimated_accuracy"][-1][1] if summary[v]["estimated_accuracy"] else None,
          summary[v]["estimated_accuracy"][-1][4] if summary[v]["estimated_accuracy"] else None]
         for v in shown],
        "multivariate",
        caption="multivariate drift, outliers and estimated accuracy",
    )


def _job_status(rows: Rows, trigger_id: str) -> str:
    attempts = [r for r in rows["jobs"] if r["trigger_id"] == trigger_id]
    if not attempts:
        return "no job"
    last = max(attempts, key=lambda r: int(r["attempt"]))
    return f"{last['status']} (attempt {last['attempt']})"


def model_section(
    scope: ReportScope,
    versions: Sequence[str],
    window_s: int,
    rows: Rows,
    marks: Sequence[tuple[int, str]] = (),
    heading_level: int = 2,
) -> tuple[str, dict[str, Any]]:
    """The HTML of one model's report and its numbers."""
    summary = model_summary(scope, versions, window_s, rows)
    h = f"h{heading_level}"
    sub = f"h{heading_level + 1}"
    times = [int(r["start_ms"]) for r in rows["drift"]] + [int(r["time_ms"]) for r in rows["metrics"]]
    times += [int(r["opened_ms"]) for r in rows["episodes"]]
    lo, hi = (min(times), max(times)) if times else (0, 1)
    several = len(versions) > 1
    parts = [
        f'<section class="model" data-model="{esc(scope.model_id)}">',
        f"<{h}>{esc(scope.model_id)}</{h}>",
        f"<{sub}>{'versions side by side' if several else 'version ' + esc(versions[0])}</{sub}>",
        comparison_table(summary),
        f"<{sub}>drift per feature and window</{sub}>",
        '<p class="explain">PSI of each feature against its reference profile per tumbling window; the dot '
        "is the window's verdict (any configured test fired). Hover a cell for its statistics.</p>",
    ]
    parts.extend(
        drift_heatmap(rows, v, window_s, marks) or f'<p class="none">v{esc(v)}: no drift scores</p>'
        for v in versions
    )
    parts.append(f"<{sub}>accuracy, label coverage, alarms and retrain triggers</{sub}>")
    parts.append(
        performance_charts(rows, versions, marks)
        if rows["metrics"]
        else '<p class="none">no performance intervals (no labeled outcomes)</p>'
    )
    parts.append(
        table(
            [
                "triggered at",
                "version",
                "reason",
                "message",
                "evidence from",
                "evidence until",
                "retrain job",
            ],
            [
                [
                    stamp(r["time_ms"]),
                    r["model_version"],
                    r["reason"],
                    r["message"],
                    stamp(r["from_ms"]),
                    stamp(r["to_ms"]),
                    _job_status(rows, str(r["trigger_id"])),
                ]
                for r in rows["triggers"]
            ],
            "triggers",
            caption="retrain triggers",
        )
    )
    comparisons = comparison_summary(rows)
    summary["comparisons"] = comparisons
    if comparisons:
        parts.append(f"<{sub}>champion vs challenger</{sub}>")
        parts.append(
            '<p class="explain">Each pair of versions the comparison settings name, on all traffic: both '
            "versions' accuracy (or MAE) per outcome interval, and when the always-valid sequential test "
            "decided that the challenger is better (promote) or worse (roll back). Values are "
            "outcome-weighted means over the intervals.</p>"
        )
        parts.append(comparison_charts(rows, comparisons, marks))
    multivariate = multivariate_summary(rows, versions, window_s)
    summary["multivariate"] = multivariate
    if multivariate:
        parts.append(f"<{sub}>multivariate drift, outliers and accuracy before labels</{sub}>")
        parts.append(
            '<p class="explain">From the training profile\'s multivariate section: a domain classifier '
            "telling each window from the reference (0.5 = alike), the share of events off the reference's "
            "principal subspace (a change in correlations no single feature shows), the share of outliers "
            "with its binomial test, and, for binary classifiers sending scores, the accuracy estimated "
            "from the calibrated scores before any label beside the accuracy the labels realized.</p>"
        )
        parts.append(multivariate_charts(multivariate, versions, window_s, marks))
    parts.append(f"<{sub}>sequential alerts and episodes</{sub}>")
    parts.append(episode_timeline(rows, lo, hi))
    parts.append(
        table(
            [
                "version",
                "feature",
                "source",
                "status",
                "opened",
                "closed / last seen",
                "close reason",
                "magnitude",
                "peak",
                "unit",
                "escalations",
            ],
            [
                [
                    r["model_version"],
                    r["feature"],
                    r["source"],
                    r["status"],
                    stamp(r["opened_ms"]),
                    stamp(r["closed_ms"] if r["closed_ms"] is not None else r["last_seen_ms"]),
                    r["close_reason"] or "-",
                    float(r["magnitude"]),
                    float(r["peak_magnitude"]),
                    r["unit"],
                    _int(r["escalations"]),
                ]
                for r in rows["episodes"]
            ],
            "episodes",
            caption="drift episodes (one row per lasting shift)",
        )
    )
    parts.append(
        table(
            ["version", "feature", "source", "event", "count", "first"],
            [
                [r["model_version"], r["feature"], r["source"], r["kind"], _int(r["n"]), stamp(r["first_ms"])]
                for r in rows["alerts"]
            ],
            "alerts",
            caption="sequential detector events (drift_alerts)",
        )
    )
    parts.append(f"<{sub}>events that did not count</{sub}>")
    dead = summary["dead_letters"]
    parts.append(
        table(
            ["error kind", f"naming {scope.model_id}", "naming no model"],
            [[kind, n["model"], n["unattributed"]] for kind, n in dead.items()],
            "dead-letters",
            caption="dead letters by error kind",
        )
    )
    parts.append(
        table(
            ["event type", "version", "count"],
            [[r["event_type"], r["model_version"] or "(none)", _int(r["n"])] for r in rows["late_events"]],
            "late-events",
            caption="late events (behind the watermark) by type",
        )
    )
    duplicates = [
        [f"v{v}", s["duplicate_predictions"], s["duplicate_labels"]] for v, s in summary["versions"].items()
    ]
    parts.append(
        table(
            ["version", "predictions", "labels"],
            duplicates,
            "duplicates",
            caption="exact re-sends (duplicates)",
        )
    )
    parts.append(f"<p>Labels no prediction joined (orphan labels): {summary['orphan_labels']}.</p>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p), summary


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4em; font-size: 1.1em; }
.meta, .explain, .none { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding: 0 0 0.3em; }
th, td { border: 1px solid #d5d5d5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.compare td:not(:first-child) { text-align: right; }
svg.chart { width: 100%; height: auto; display: block; margin: 0.6em 0 1.2em; }
svg .title { font-size: 14px; font-weight: 600; fill: #222; }
svg .note { font-size: 11px; fill: #666; } svg .label { font-size: 11px; fill: #333; }
svg .tick { font-size: 10px; fill: #444; }
svg .axis { stroke: #888; stroke-width: 1; } svg .grid { stroke: #e5e5e5; stroke-width: 1; }
svg .series { fill: none; stroke-width: 1.8; }
svg .series.dashed { stroke-width: 1; stroke-dasharray: 6 4; } svg .series.dotted { stroke-dasharray: 2 3; }
svg .trigger { stroke: #d62728; stroke-width: 1.4; stroke-dasharray: 5 3; }
svg .trigger-label { font-size: 10px; fill: #d62728; }
svg .mark { stroke: #2ca02c; stroke-width: 1.4; stroke-dasharray: 2 2; }
svg .mark-label { font-size: 10px; fill: #2ca02c; }
svg rect.cell { stroke: #fff; stroke-width: 0.5; }
"""


@dataclass
class Page:
    """A whole report page: a title, an introduction, sections, and the numbers to embed."""

    title: str
    intro: str = ""
    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        blob = esc(orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS).decode())
        body = "\n".join([f"<h1>{esc(self.title)}</h1>", self.intro, *self.sections])
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>\n{body}\n"
            f'<div id="driftline-report-data" hidden data-report="{blob}"></div>\n</body></html>\n'
        )


def scope_line(scope: ReportScope, window_s: int) -> str:
    run = f"run {scope.run_id!r}" if scope.run_id else "live pipeline"
    return (
        f'<p class="meta">{esc(run)}; event times {esc(scope.describe_range())}; drift windows of '
        f"{window_s} s, all traffic (no segment); generated "
        f"{esc(stamp(int(datetime.now(UTC).timestamp() * 1000)))} UTC by driftline report.</p>"
    )
