"""`driftline report`: one self-contained HTML page of a model's drift, read from the ClickHouse tables.

``build_model_report(query, scope)`` reads (through any ``query(sql, parameters)`` that returns
ClickHouse JSON: the worker's /query endpoint, a server, or the embedded directory, see
driftline.store.query.run_query) and returns the page; the demo draws its models with the same
``model_section``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driftline.report.data import QueryFn, ReportScope, fetch, has_events, known_models, read_extent
from driftline.report.page import Page, model_section, scope_line

__all__ = ["ModelReport", "NoReportData", "ReportScope", "build_model_report", "read_model_report"]


class NoReportData(LookupError):
    """The model is unknown in the run, or has no rows in the range; the message says which."""


@dataclass(frozen=True)
class ModelReport:
    """One model's rows, read for ``scope``: what ``model_section`` draws."""

    scope: ReportScope
    versions: list[str]
    window_s: int
    rows: dict[str, Any]

    def section(
        self, marks: list[tuple[int, str]] | None = None, heading_level: int = 2
    ) -> tuple[str, dict[str, Any]]:
        return model_section(self.scope, self.versions, self.window_s, self.rows, marks or [], heading_level)


def read_model_report(query: QueryFn, scope: ReportScope, last_ms: int | None = None) -> ModelReport:
    """The rows of ``scope``; ``last_ms`` (a duration) narrows it to that much before the model's
    newest event time. Raises NoReportData for an unknown model or an empty range."""
    extent = read_extent(query, scope)
    if not extent.versions:
        if scope.version:
            whole = read_extent(query, ReportScope(scope.model_id, run_id=scope.run_id))
            if whole.versions:
                raise NoReportData(
                    f"model {scope.model_id!r} has no version {scope.version!r} "
                    f"(versions: {', '.join(whole.versions)})"
                )
        run = f"run {scope.run_id!r}" if scope.run_id else "the live pipeline (run id '')"
        if has_events(query, scope):
            raise NoReportData(
                f"model {scope.model_id!r} has events in {run} (feature_windows) but nothing scored and "
                "no outcomes: no reference profile (build one with `driftline profile build`; without "
                "one, a window needs drift.min_count events to become the reference) and no labels joined"
            )
        models = known_models(query, scope.run_id)
        known = f"models with data: {', '.join(models)}" if models else "no model has data there"
        raise NoReportData(f"unknown model {scope.model_id!r} in {run}; {known}")
    if last_ms is not None and extent.last_ms is not None:
        scope = ReportScope(
            scope.model_id, scope.version, scope.run_id, extent.last_ms - last_ms, scope.to_ms
        )
    rows = fetch(query, scope, extent.window_s)
    if not (rows["drift"] or rows["metrics"] or rows["episodes"] or rows["triggers"]):
        raise NoReportData(
            f"model {scope.model_id!r} has no drift scores, metrics, episodes or triggers "
            f"with event times {scope.describe_range()}"
        )
    return ModelReport(scope, extent.versions, extent.window_s, rows)


def build_model_report(report: ModelReport) -> str:
    """The page of one model."""
    section, numbers = report.section()
    version = f" v{report.scope.version}" if report.scope.version else ""
    page = Page(
        f"driftline report: {report.scope.model_id}{version}",
        scope_line(report.scope, report.window_s),
        [section],
        {"models": [numbers]},
    )
    return page.render()
