"""An under-filled window's rows from templates made once per reference profile.

A window of fewer events than ``drift.min_count`` tests no feature: each feature's drift_scores row
is the reference's kind with the window's count, no statistic and the verdict 'not drifted'
(``drift.min_drifted_features`` >= 1, so the model is not drifted either). With many small models
most windows are that small, and the scorer's :meth:`~driftline.operators.scorer.DriftScorer.count_stats`
report plus a row built field by field for each of its ~26 features was most of closing one. The
templates are ``count_stats``' own results for an empty window, turned into rows by
:func:`~driftline.pipeline.to_rows.drift_score_row` and ``feature_window_row``: only the counts
(and a feature's moments, if it has values) differ from window to window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.operators.drift import FeatureScore, compared_count
from driftline.operators.scorer import DriftScorer
from driftline.operators.window_stats import FeatureStats
from driftline.pipeline.to_rows import drift_score_row, feature_window_row, value_columns

_LIST_COLUMNS = ("bin_edges", "bin_labels", "histogram", "reference_histogram")


class UnderFilledRows:
    """A profile's under-filled window rows (one per profile and configuration: see module docstring):
    its features' feature_windows and drift_scores rows, and its prediction's drift_scores row.

    ``scores[name]`` is a feature's count score of an empty window (its kind, bins and reference
    shares); ``prediction`` the prediction's, None without one."""

    def __init__(self, scorer: DriftScorer, prediction_name: str, reference_id: str,
                 config_hash: str) -> None:
        report = scorer.count_stats({}, n_rows=0, prediction=FeatureStats())
        self.scores: dict[str, FeatureScore] = {r.feature: r.score for r in report}
        self.names = sorted(self.scores)
        self._tails = {name: _tail(name, self.scores[name], reference_id, config_hash) for name in self.names}
        self._window_tails = {
            name: feature_window_row({}, name, score.kind, FeatureStats(), score, reference_id)
            for name, score in self.scores.items()
        }
        self.prediction = report.prediction.score if report.prediction is not None else None
        self._prediction_tail = (None if self.prediction is None
                                 else _tail(prediction_name, self.prediction, reference_id, config_hash))

    def window_row(self, window: Mapping[str, Any], name: str, stats: FeatureStats) -> dict[str, Any]:
        """A profile feature's feature_windows row."""
        row = {**window, **self._window_tails[name]}
        row["count"], row["missing"], row["invalid"] = stats.count, stats.missing, stats.invalid
        if stats.n:
            (row["mean"], row["variance"], row["min"], row["max"],
             row["p50"], row["p90"], row["p99"]) = value_columns(stats)
        for column in _LIST_COLUMNS:  # lists of its own per row, as feature_window_row makes
            row[column] = list(row[column])
        return row

    def drift_rows(self, window: Mapping[str, Any],
                   features: Mapping[str, FeatureStats]) -> list[dict[str, Any]]:
        """Every profile feature's drift_scores row (sorted by name), ``features`` the window's."""
        rows = []
        for name in self.names:
            row = {**window, **self._tails[name]}
            stats = features.get(name)
            if stats is not None:
                row["count"] = compared_count(self.scores[name].kind, stats)
            row["drifted_by"] = []  # a list of its own per row, as drift_score_row makes
            rows.append(row)
        return rows

    def prediction_row(self, window: Mapping[str, Any], stats: FeatureStats) -> dict[str, Any]:
        assert self.prediction is not None and self._prediction_tail is not None, "a profile with one"
        row = {**window, **self._prediction_tail}
        row["count"] = compared_count(self.prediction.kind, stats)
        row["drifted_by"] = []
        return row


def _tail(name: str, score: FeatureScore, reference_id: str, config_hash: str) -> dict[str, Any]:
    """The row of ``score`` (count 0, not tested) without the window's columns, in drift_score_row's order."""
    return drift_score_row({}, name, score, False, (), None, reference_id, config_hash)

