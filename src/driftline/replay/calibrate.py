"""Thresholds that would have kept false alarms at a target rate over quiet periods.

Per (model, feature) and per score (PSI, JS distance): with ``E`` the events of the feature's
quiet windows (windows overlapping no incident of the model that affects the feature; every
window without incidents) and ``F`` the target false alarms per million events, at most
``k = floor(F * E / 10^6)`` quiet windows may alarm. The pipeline flags a score when it is
``>= threshold``, so the calibrated threshold is the smallest value on a grid (``resolution``,
default 1e-4) strictly above the (k+1)-th largest quiet score: at most k quiet windows reach it
(when every quiet window may alarm, the grid minimum). A feature also needs a significant
KS/chi-squared test to be flagged, so real false alarms are at most these counts.

The TOML snippet sets ``[drift] psi_threshold`` / ``js_threshold`` to the maximum over features
(each feature then stays within the target on its own) and lists per-model and per-feature values
as comments: ``driftline`` reads one threshold per score, and its settings reject unknown keys.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from driftline.replay.incidents import Incident, quiet

DEFAULT_RESOLUTION = 1e-4


@dataclass(frozen=True)
class ScoreRow:
    model_id: str
    feature: str
    window_start: int
    window_end: int
    n_events: int
    psi: float | None
    js: float | None


@dataclass(frozen=True)
class Calibrated:
    threshold: float
    quiet_alarms: int  # quiet windows with score >= threshold
    far: float | None  # quiet_alarms per million quiet events


@dataclass(frozen=True)
class FeatureThresholds:
    model_id: str
    feature: str
    quiet_windows: int
    quiet_events: int
    allowed: int  # quiet windows allowed to alarm at the target rate
    psi: Calibrated | None
    js: Calibrated | None


def smallest_threshold(
    scores: Sequence[float], allowed: int, resolution: float = DEFAULT_RESOLUTION
) -> float:
    """Smallest grid value t with at most ``allowed`` scores >= t.

    >>> smallest_threshold([0.05, 0.3, 0.12, 0.3], allowed=1)
    0.3001
    >>> smallest_threshold([0.05, 0.3, 0.12], allowed=1)
    0.1201
    >>> smallest_threshold([0.05], allowed=3)
    0.0001
    """
    ranked = sorted(scores, reverse=True)
    bound = ranked[allowed] if allowed < len(ranked) else 0.0
    steps = math.floor(bound / resolution) + 1
    threshold = round(steps * resolution, 12)
    while threshold <= bound:  # float rounding at a grid point
        steps += 1
        threshold = round(steps * resolution, 12)
    return threshold


def _calibrate(scores: list[float], allowed: int, events: int, resolution: float) -> Calibrated | None:
    if not events:
        return None
    threshold = smallest_threshold(scores, allowed, resolution)
    hits = sum(1 for s in scores if s >= threshold)
    return Calibrated(threshold, hits, hits / events * 1e6)


def calibrate(rows: Sequence[ScoreRow], incidents: Sequence[Incident], target_far: float,
              resolution: float = DEFAULT_RESOLUTION) -> list[FeatureThresholds]:
    """Per (model, feature) thresholds for at most ``target_far`` false alarms per million events."""
    if target_far < 0:
        raise ValueError("the target false alarm rate must not be negative")
    by_feature: dict[tuple[str, str], list[ScoreRow]] = defaultdict(list)
    for row in rows:
        by_feature[(row.model_id, row.feature)].append(row)
    out = []
    for (model_id, feature), feature_rows in sorted(by_feature.items()):
        quiet_rows = [r for r in feature_rows
                      if quiet(incidents, model_id, r.window_start, r.window_end, feature)]
        events = sum(r.n_events for r in quiet_rows)
        allowed = math.floor(target_far * events / 1e6 + 1e-9)
        psi = [r.psi for r in quiet_rows if r.psi is not None]
        js = [r.js for r in quiet_rows if r.js is not None]
        out.append(FeatureThresholds(
            model_id, feature, len(quiet_rows), events, allowed,
            _calibrate(psi, allowed, events, resolution) if psi else None,
            _calibrate(js, allowed, events, resolution) if js else None,
        ))
    return out


def _max(results: Sequence[FeatureThresholds], score: str) -> tuple[float, str] | None:
    values = [(getattr(r, score).threshold, f"{r.model_id}/{r.feature}") for r in results
              if getattr(r, score) is not None]
    return max(values) if values else None


def toml_snippet(results: Sequence[FeatureThresholds], run_id: str, target_far: float,
                 quiet_basis: str) -> str:
    """A config snippet loadable by driftline (see the module docstring)."""
    lines = [
        f"# driftline calibrate --run-id {run_id} --target-far {target_far:g}",
        f"# quiet periods: {quiet_basis}",
        "# A feature drifts when its score >= threshold and its KS/chi2 test is significant.",
        "[drift]",
    ]
    psi, js = _max(results, "psi"), _max(results, "js")
    if psi is not None:
        lines.append(f"psi_threshold = {psi[0]:.6g}  # max over features: {psi[1]}")
    if js is not None:
        lines.append(f"js_threshold = {min(js[0], 1.0):.6g}  # max over features: {js[1]}")
    models = sorted({r.model_id for r in results})
    lines.append("")
    lines.append("# Per model (max over its features) and per feature (driftline reads one threshold")
    lines.append("# per score; kept as comments):")
    for model_id in models:
        mine = [r for r in results if r.model_id == model_id]
        lines.append(f"# [drift.per_model.\"{model_id}\"]")
        lines.extend(_threshold_comments(_max(mine, "psi"), _max(mine, "js")))
    for r in results:
        lines.append(f"# [drift.per_feature.\"{r.model_id}/{r.feature}\"]  # {r.quiet_windows} quiet "
                     f"windows, {r.quiet_events} events, {r.allowed} alarms allowed")
        lines.extend(_threshold_comments(
            (r.psi.threshold, "") if r.psi else None, (r.js.threshold, "") if r.js else None))
    return "\n".join(lines) + "\n"


def _threshold_comments(psi: tuple[float, str] | None, js: tuple[float, str] | None) -> list[str]:
    out = []
    if psi is not None:
        out.append(f"# psi_threshold = {psi[0]:.6g}")
    if js is not None:
        out.append(f"# js_threshold = {min(js[0], 1.0):.6g}")
    return out
