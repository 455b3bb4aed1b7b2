"""backtest compare: alarms, detection delays and false alarm rates from rows; the CLI on a
replayed synthetic stream with a known drift point; the plot as PNG and HTML."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from driftline.cli.main import main
from driftline.config import DriftSettings, JoinSettings, Settings, WindowSettings, load_settings
from driftline.replay.backtest import Alarm, WindowRow, detections, drift_alarms, false_alarms
from driftline.replay.engine import Replayer
from driftline.replay.files import FileEvent, to_records
from driftline.replay.incidents import NEVER, Incident, load_incidents
from driftline.replay.plot import html_page, render_png
from driftline.replay.results import load_point_alarms, load_scores, load_windows, window_size
from driftline.replay.run import DEFAULT_BATCH
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.writer import open_row_writer

MIN = 60_000
T0 = 1_767_225_600_000


def _windows(run_id: str, drifted: set[int], n: int = 10) -> list[WindowRow]:
    return [WindowRow(run_id, "m", "1", T0 + i * MIN, T0 + (i + 1) * MIN, 1000, int(i in drifted),
                      i in drifted, 0.5 if i in drifted else 0.05) for i in range(n)]


def test_detection_delay_is_first_alarm_at_or_after_the_incident_start() -> None:
    windows = _windows("a", {2, 5, 6, 7}) + _windows("b", {8})
    point = [Alarm("a", "m", "1", "performance", T0 + 3 * MIN + 10, T0 + 3 * MIN + 10),
             Alarm("b", "m", "1", "trigger", T0 + 5 * MIN + 30_000, T0 + 5 * MIN + 30_000)]
    alarms = drift_alarms(windows) + point
    incident = Incident("m", T0 + 5 * MIN)
    a, b = detections(["a", "b"], alarms, [incident])
    assert (a.first is not None and a.first.kind, a.delay_ms) == ("drift", MIN)  # window [5, 6) ends at 6
    assert a.trigger_delay_ms is None
    assert b.first is not None and b.first.kind == "trigger"
    assert (b.delay_ms, b.trigger_delay_ms) == (30_000, 30_000)
    # run b's alarms (trigger at 5:30, drifted window [8, 9)) come after the incident [4, 5) ended: missed
    (missed,) = detections(["b"], alarms, [Incident("m", T0 + 4 * MIN, T0 + 5 * MIN)])
    assert missed.first is None and missed.delay_ms is None
    # run a's drifted window [5, 6) began after it too, but a drifted window straddling the end counts
    (straddled,) = detections(["a"], alarms, [Incident("m", T0 + 4 * MIN, T0 + 5 * MIN + 1)])
    assert straddled.first is not None and straddled.delay_ms == 2 * MIN


def test_false_alarms_per_million_quiet_events() -> None:
    windows = _windows("a", {2, 5, 6, 7})
    alarms = [
        *drift_alarms(windows),
        Alarm("a", "m", "1", "performance", T0 + 3 * MIN + 10, T0 + 3 * MIN + 10),  # quiet window 3
        Alarm("a", "m", "1", "performance", T0 + 5 * MIN - 1, T0 + 5 * MIN - 1),  # quiet window 4
        Alarm("a", "m", "1", "trigger", T0 + 6 * MIN, T0 + 6 * MIN),  # inside the incident
    ]
    incident = Incident("m", T0 + 5 * MIN, T0 + 8 * MIN)
    (summary,) = false_alarms(windows, alarms, [incident])
    assert (summary.windows, summary.quiet_windows, summary.quiet_events) == (10, 7, 7000)
    assert summary.alarms == {"drift": 4, "performance": 2, "trigger": 1}
    assert summary.false_alarms == 3  # drifted window 2 and the two detector alarms
    assert summary.per_million == pytest.approx(3 / 7000 * 1e6)
    (everything,) = false_alarms(windows, alarms, [])
    assert (everything.quiet_events, everything.false_alarms) == (10_000, 7)
    # incidents of another model do not make this model's windows busy
    (other,) = false_alarms(windows, alarms, [Incident("other", T0, NEVER)])
    assert other.false_alarms == 7


def test_incidents_csv(tmp_path: Path) -> None:
    path = tmp_path / "incidents.csv"
    path.write_text("model_id,start,end,features\n"
                    "m,2026-01-01T00:05:00Z,,x1;x2\n"
                    f"n,{T0},{T0 + MIN},\n")
    assert load_incidents(path) == [Incident("m", T0 + 5 * MIN, NEVER, frozenset({"x1", "x2"})),
                                    Incident("n", T0, T0 + MIN)]
    path.write_text("model_id,start,end\nm,5,4\n")
    with pytest.raises(ValueError, match=":2: end is not after start"):
        load_incidents(path)


def test_plot_png_and_html() -> None:
    windows = _windows("a", {5, 6})
    png = render_png(windows, drift_alarms(windows), [Incident("m", T0 + 5 * MIN)], ["a"], "n_drifted")
    assert png.startswith(b"\x89PNG")
    page = html_page(png, "a <b>")
    assert "data:image/png;base64," in page and "a &lt;b&gt;" in page


# -- integration: replayed synthetic stream with a known drift point ---------------------------------

START = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday: inside the tables' TTL
DRIFT_S = 600


def replay_synthetic(base: Settings, run_id: str) -> Settings:
    """Replay 20 minutes at 20 req/s with a shift of x1 at minute 10 into ClickHouse under ``run_id``."""
    settings = base.model_copy(update={
        "topics": base.topics.model_copy(update={"partitions": 2}),
        "windows": WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        "join": JoinSettings(label_horizon_s=120),
        "drift": DriftSettings(),
    })
    client = connect(settings)
    try:
        migrate(client, settings)
    finally:
        client.close()
    scenario = Scenario(seed=5, start=START, duration_s=1200, rate=20,
                        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=2, covariate_drift=[
                            CovariateDrift(feature="x1", at_s=DRIFT_S, magnitude=1.0)])],
                        label_delay=LabelDelay(median_s=5, max_s=60))
    preds = [FileEvent(e.key, e.timestamp_ms, e.value) for e in generate(scenario) if e.kind != "labels"]
    labels = [FileEvent(e.key, e.timestamp_ms, e.value) for e in generate(scenario) if e.kind == "labels"]
    records = to_records(settings, preds, labels)
    writer = open_row_writer(settings)
    try:
        replayer = Replayer(settings, run_id, writer)
        for i in range(0, len(records), DEFAULT_BATCH):
            replayer.feed(records[i : i + DEFAULT_BATCH])
        replayer.finish()
    finally:
        writer.close()
    return settings


@pytest.fixture(scope="module")
def replayed(module_settings: Settings) -> Settings:
    """One replay for the module's tests: they only read its rows (run id "bt")."""
    return replay_synthetic(module_settings, "bt")


def config_file(settings: Settings, path: Path) -> Path:
    path.write_text(f'home = "{settings.home}"\n[clickhouse]\nurl = "{settings.clickhouse.url}"\n'
                    f'database = "{settings.clickhouse.database}"\n')
    return path


@pytest.mark.integration
def test_compare_finds_the_known_drift_within_one_window(replayed: Settings, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    configured = replayed
    size = window_size(configured, ["bt"], None)
    assert size == 60
    windows = load_windows(configured, ["bt"], size)
    alarms = drift_alarms(windows) + load_point_alarms(configured, ["bt"])
    drift_ms = START + DRIFT_S * 1000
    (found,) = detections(["bt"], alarms, [Incident("m", drift_ms)])
    assert found.delay_ms is not None and 0 <= found.delay_ms <= 60_000
    (summary,) = false_alarms(windows, alarms, [Incident("m", drift_ms)])
    assert summary.quiet_events == sum(w.n_events for w in windows if w.window_end <= drift_ms)

    incidents = tmp_path / "incidents.csv"
    incidents.write_text(f"model_id,start,end\nm,{drift_ms},\n")
    cfg = config_file(configured, tmp_path / "c.toml")
    for plot in ("out.png", "out.html"):
        code = main(["--config", str(cfg), "backtest", "compare", "--run-id", "bt",
                     "--incidents", str(incidents), "--plot", str(tmp_path / plot)])
        assert code == 0
    out = capsys.readouterr().out
    assert "detection delay" in out and "false alarms" in out
    # the window size and which, not a total of windows over the runs
    assert out.splitlines()[0] == ("runs bt: 60s windows (the smallest; --window-size for another), "
                                   "1 incident(s)")
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
    assert "base64," in (tmp_path / "out.html").read_text()
    assert main(["--config", str(cfg), "backtest", "compare", "--run-id", "nope"]) == 1


@pytest.mark.integration
def test_calibrated_threshold_meets_the_target_on_the_quiet_part(replayed: Settings, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    configured = replayed
    drift_ms = START + DRIFT_S * 1000
    incidents = tmp_path / "incidents.csv"
    incidents.write_text(f"model_id,start,end,features\nm,{drift_ms},,x1\n")
    out = tmp_path / "snippet.toml"
    target = 100.0
    cfg = config_file(configured, tmp_path / "c.toml")
    code = main(["--config", str(cfg), "calibrate", "--run-id", "bt", "--target-far", str(target),
                 "--incidents", str(incidents), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out == out.read_text()
    snippet = load_settings(out).drift
    scores = load_scores(configured, "bt", 60)
    quiet = [s for s in scores if not (s.feature == "x1" and s.window_end > drift_ms)]
    events: dict[str, int] = {}
    for s in quiet:
        events[s.feature] = events.get(s.feature, 0) + s.n_events
    for feature, n in events.items():
        psis = [s.psi for s in quiet if s.feature == feature and s.psi is not None]
        assert sum(p >= snippet.psi_threshold for p in psis) / n * 1e6 <= target
    # the known drift stays detectable under the calibrated threshold
    drifted = [s.psi for s in scores
               if s.feature == "x1" and s.window_start >= drift_ms and s.psi is not None]
    assert drifted and min(drifted) > snippet.psi_threshold


@pytest.mark.integration
def test_a_run_without_windows_is_named_with_the_runs_there_are(replayed: Settings, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`backtest compare --run-id bt --run-id bt-typo` printed bt's table alone, the typo unsaid."""
    cfg = config_file(replayed, tmp_path / "c.toml")
    capsys.readouterr()
    assert main(["--config", str(cfg), "backtest", "compare", "--run-id", "bt", "--run-id", "bt-typo"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"driftline backtest: no 60s windows for run\(s\) bt-typo \(runs with windows: "
                        r"(.+, )?bt(, .+)?\)\n", captured.err), captured.err
    assert main(["--config", str(cfg), "calibrate", "--run-id", "bt-typo", "--target-far", "50"]) == 1
    assert re.fullmatch(r"driftline calibrate: no drift scores for run 'bt-typo' \(runs with windows: "
                        r"(.+, )?bt(, .+)?\)\n", capsys.readouterr().err)
