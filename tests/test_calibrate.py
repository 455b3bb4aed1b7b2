"""calibrate: the smallest threshold meeting the false alarm target on quiet windows; incidents
(per feature) define what is quiet; the TOML snippet loads as driftline settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import load_settings
from driftline.replay.calibrate import ScoreRow, calibrate, smallest_threshold, toml_snippet
from driftline.replay.incidents import Incident

MIN = 60_000
T0 = 1_767_225_600_000


def _rows(feature: str, psis: list[float], events: int = 1000) -> list[ScoreRow]:
    return [ScoreRow("m", feature, T0 + i * MIN, T0 + (i + 1) * MIN, events, p, p / 10)
            for i, p in enumerate(psis)]


@pytest.mark.parametrize("allowed", [0, 1, 2, 5])
def test_smallest_threshold_allows_exactly_the_budget(allowed: int) -> None:
    scores = [0.01, 0.2, 0.05, 0.2, 0.31, 0.07]
    t = smallest_threshold(scores, allowed)
    assert sum(s >= t for s in scores) <= allowed
    lower = round(t - 1e-4, 12)
    assert lower <= 0 or sum(s >= lower for s in scores) > allowed  # one grid step lower breaks it


def test_threshold_per_feature_meets_the_target_on_quiet_windows() -> None:
    # 10 windows x 1000 events; x drifts (psi 0.9) in windows 6..9; y is quiet throughout
    x = _rows("x", [0.01, 0.02, 0.15, 0.03, 0.04, 0.05, 0.9, 0.9, 0.9, 0.9])
    y = _rows("y", [0.02, 0.01, 0.03, 0.02, 0.25, 0.01, 0.02, 0.03, 0.01, 0.02])
    incident = Incident("m", T0 + 6 * MIN, features=frozenset({"x"}))
    by_feature = {r.feature: r for r in calibrate(x + y, [incident], target_far=100)}
    tx, ty = by_feature["x"], by_feature["y"]
    # x: 6 quiet windows, 6000 events, 100/M -> 0 alarms allowed: just above the 0.15 outlier
    assert (tx.quiet_windows, tx.quiet_events, tx.allowed) == (6, 6000, 0)
    assert tx.psi is not None and tx.psi.threshold == pytest.approx(0.1501) and tx.psi.quiet_alarms == 0
    # y is not affected by the incident: all 10 windows quiet, 1 alarm allowed -> above the 2nd largest
    assert (ty.quiet_windows, ty.allowed) == (10, 1)
    assert ty.psi is not None and ty.psi.threshold == pytest.approx(0.0301)
    assert ty.psi.far is not None and ty.psi.far <= 100
    assert ty.js is not None and ty.js.threshold == pytest.approx(0.0031)
    # without incidents the drifted windows are "quiet" too and the threshold must exceed them
    everything = {r.feature: r for r in calibrate(x + y, [], target_far=100)}["x"]
    assert everything.psi is not None and everything.psi.threshold == pytest.approx(0.9001)


def test_snippet_loads_as_settings(tmp_path: Path) -> None:
    x = _rows("x", [0.01, 0.02, 0.15, 0.03])
    y = _rows("y", [0.02, 0.3, 0.03, 0.02])
    results = calibrate(x + y, [], target_far=0)
    snippet = toml_snippet(results, "r1", 0, "all windows")
    path = tmp_path / "snippet.toml"
    path.write_text(snippet)
    settings = load_settings(path)
    assert settings.drift.psi_threshold == pytest.approx(0.3001)
    assert settings.drift.js_threshold == pytest.approx(0.0301)
    assert '# [drift.per_feature."m/x"]' in snippet and "# psi_threshold = 0.1501" in snippet
    assert '# [drift.per_model."m"]' in snippet


def test_negative_target_is_refused() -> None:
    with pytest.raises(ValueError):
        calibrate(_rows("x", [0.1]), [], target_far=-1)
