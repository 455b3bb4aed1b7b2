"""The demo's HTML report: what was injected against what was detected, then every model's page as
`driftline report` draws it (driftline.report), with the injection marked, and champion vs challenger
accuracy on the same requests. One self-contained file: inline CSS and SVG, no scripts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftline.demo.summary import Rows, injection_ms
from driftline.report import ModelReport, NoReportData, ReportScope, read_model_report
from driftline.report.data import QueryFn
from driftline.report.page import Page, table
from driftline.report.svg import Series, line_chart, version_colour


def head_to_head_chart(rows: Rows, model_id: str, roles: dict[str, str], injected_at: int | None) -> str:
    """Accuracy per interval of each version on the requests both scored (prediction time)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows["head_to_head"]:
        if r["model_id"] == model_id and r["accuracy"] is not None:
            series[str(r["model_version"])].append((int(r["time_ms"]), float(r["accuracy"])))
    if len(series) < 2:
        return ""
    lines = [Series(f"v{v} ({roles.get(v, '?')})", version_colour(i), points)
             for i, (v, points) in enumerate(sorted(series.items()))]
    marks = [(injected_at, "drift injected")] if injected_at is not None else []
    return line_chart(f"{model_id}: champion vs challenger on the same requests (prediction time)",
                      "accuracy, same requests", lines, marks=marks)


def render_html(summary: dict[str, Any], truth: dict[str, Any], rows: Rows,
                reports: Sequence[ModelReport] = ()) -> str:
    """The report page for a summary (``build_summary``), its ground truth, its rows and the
    models' reports (``read_reports``)."""
    models = summary["models"]
    overview = table(
        ["model", "version", "role", "injected drift", "detected drift (windows)", "first detection",
         "drift episodes (features)", "first episode", "error episodes", "accuracy before", "accuracy after",
         "alarms", "triggers", "jobs succeeded"],
        [[m["model_id"], m["model_version"], m["role"], ", ".join(m["injected_drift"]) or "-",
          ", ".join(m["detected_drift"]) or "-", m["first_detection"] or "-",
          ", ".join(m.get("episode_features", [])) or "-", m.get("first_episode") or "-",
          m.get("error_episodes", 0), m["accuracy_before"], m["accuracy_after"], m["detector_alarms"],
          m["retrain_triggers"], m["retrain_jobs_succeeded"]] for m in models],
    )
    dead = table(["kind", "dead letters"], [[k, n] for k, n in summary["dead_letters"].items()])
    intro = (f'<p class="meta">Drift injected at {summary["injection_time"]} (event time). '
             f"Late events: {summary['late_events']}. Not joined (a row each in unjoined_events): "
             f"{', '.join(f'{k} {n}' for k, n in summary.get('unjoined_events', {}).items()) or 'none'}.</p>")
    sections = ["<h2>injected against detected</h2>", overview, "<h2>dead letters</h2>", dead]
    numbers = []
    by_model = {report.scope.model_id: report for report in reports}
    for model_id, model in truth["models"].items():
        injected_at = injection_ms(model)
        marks = [(injected_at, "drift injected")] if injected_at is not None else []
        report = by_model.get(model_id)
        if report is not None:
            section, model_numbers = report.section(marks)
            sections.append(section)
            numbers.append(model_numbers)
        roles = {m["model_version"]: m["role"] for m in models if m["model_id"] == model_id}
        sections.append(head_to_head_chart(rows, model_id, roles, injected_at))
    return Page("driftline demo report", intro, [s for s in sections if s], {"models": numbers}).render()


def read_reports(query: QueryFn, model_ids: Sequence[str]) -> list[ModelReport]:
    """The live pipeline's rows of each model that has any."""
    reports = []
    for model_id in model_ids:
        try:
            reports.append(read_model_report(query, ReportScope(model_id)))
        except NoReportData:
            continue  # the summary table says what the model lacks
    return reports


def write_report(path: Path, summary: dict[str, Any], truth: dict[str, Any], rows: Rows,
                 query: QueryFn) -> Path:
    """Read every model's report through ``query`` and write the page."""
    page = render_html(summary, truth, rows, read_reports(query, list(truth["models"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
