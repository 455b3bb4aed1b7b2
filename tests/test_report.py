"""`driftline report`: the page's numbers against the tables, scopes, one-line errors, and the page
drawn by a headless Chromium where one is installed.

The tables come from a real run: simulated traffic (covariate and concept drift on a champion and
its challenger, malformed records, exact re-sends) replayed through the pipeline into an embedded
ClickHouse directory by `driftline replay`, in a subprocess as a user would run it.
"""

from __future__ import annotations

import html.parser
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.demo.training import training_profiles
from driftline.report.page import drift_heatmap
from driftline.report.svg import MAX_COLUMNS
from driftline.simulate import Scenario, write_jsonl
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec

START = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday 00:00 UTC: inside the tables' TTL
MIN = 60_000
RUN = "report-test"
DUPLICATES = 5


def _scenario() -> Scenario:
    return Scenario(
        seed=5, start=START, duration_s=1200, rate=20,
        models=[ModelSpec(model_id="churn", n_numeric=4, n_categorical=2, challenger=True, score="positive",
                          covariate_drift=[CovariateDrift(feature="x1", at_s=600, magnitude=1.5)],
                          concept_drift=ConceptDrift(at_s=600, magnitude=0.5))],
        label_delay=LabelDelay(median_s=5, max_s=60), malformed_rate=0.01,
    )


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_HOME=str(home / "home"), DRIFTLINE_CLICKHOUSE_URL=f"chdb://{home / 'ch'}",
               DRIFTLINE_WINDOWS_SIZES_S="[60]", DRIFTLINE_WINDOWS_METRICS_INTERVAL_S="60",
               DRIFTLINE_JOIN_LABEL_HORIZON_S="120", DRIFTLINE_TOPICS_PARTITIONS="2")
    env.update(extra)
    return env


def driftline(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli.main", *args], env=_env(home, **env),
                          capture_output=True, text=True, timeout=300)


def _well_formed(line: bytes) -> bool:
    """Not one of the simulator's malformed kinds (bad JSON, wrong types, NaN latency, schema)."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return (event.get("schema_version") == 1 and isinstance(event.get("features"), dict)
            and isinstance(event.get("timestamp"), int) and isinstance(event.get("latency_ms"), float)
            and not str(event.get("prediction_id")).endswith("-bad"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded ClickHouse directory holding run RUN (no process keeps it open)."""
    home = tmp_path_factory.mktemp("report")
    scenario = _scenario()
    write_jsonl(scenario, home)
    predictions = home / "predictions.jsonl"
    lines = predictions.read_bytes().splitlines()
    valid = [line for line in lines if _well_formed(line)]
    # exact re-sends of accepted predictions (an at-least-once producer): counted as duplicates
    predictions.write_bytes(b"\n".join(lines + valid[100 : 100 + DUPLICATES]) + b"\n")
    profiles = home / "profiles.jsonl"
    built = training_profiles(scenario, 10, 20, START)
    profiles.write_text("".join(p.model_dump_json() + "\n" for p in built))
    # champion and challenger score the same requests (prediction ids end in -v<version>)
    comparison = {"DRIFTLINE_COMPARISON_PAIRS": '[{"model_id": "churn", "champion": "1", "challenger": "2", '
                  '"mode": "shadow"}]', "DRIFTLINE_COMPARISON_REQUEST_SEPARATOR": "-v",
                  "DRIFTLINE_COMPARISON_TRIGGERS": "true"}
    for args in (("db", "migrate"),
                 ("replay", "--run-id", RUN, "--no-progress", "--predictions", str(predictions),
                  "--labels", str(home / "labels.jsonl"), "--profiles", str(profiles))):
        done = driftline(home, *args, **comparison)
        assert done.returncode == 0, done.stdout + done.stderr
    return home


QUERIES = textwrap.dedent("""
    import sys, orjson
    from driftline.config import Settings
    from driftline.store.query import run_query
    settings = Settings()
    rows = [orjson.loads(run_query(settings, sql))["data"] for sql in sys.argv[1:]]
    sys.stdout.buffer.write(orjson.dumps(rows))
""")


def queries(home: Path, *sqls: str) -> list[list[dict[str, Any]]]:
    """The rows of each statement, as `query` reads them (`driftline query`'s own run_query), in
    one process: a process per statement cost more than the statements."""
    spliced = [sql.replace("{run}", f"'{RUN}'") for sql in sqls]
    done = subprocess.run([sys.executable, "-c", QUERIES, *spliced], env=_env(home), capture_output=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rows: list[list[dict[str, Any]]] = orjson.loads(done.stdout)
    return rows


IN_ONE_PROCESS = textwrap.dedent("""
    import contextlib, io, sys, orjson
    from driftline.cli.main import main
    done = []
    for argv in orjson.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
        done.append([code, out.getvalue(), err.getvalue()])
    sys.stdout.buffer.write(orjson.dumps(done))
""")


def commands(home: Path, *argvs: list[str]) -> list[tuple[int, str, str]]:
    """Exit code, stdout and stderr of each `driftline` command line, run one after the other by the
    CLI's main in ONE process: each process start cost more than its command. A real process per
    command stays where the process is the point (the page of churn_page, the unreachable store)."""
    done = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, orjson.dumps(argvs).decode()],
                          env=_env(home), capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return [(code, out, err) for code, out, err in orjson.loads(done.stdout)]


class _Page(html.parser.HTMLParser):
    """The embedded numbers and the heat map cells of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}
        self.cells: list[dict[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if values.get("id") == "driftline-report-data":
            self.data = orjson.loads(values["data-report"])
        if tag == "rect" and values.get("class") == "cell":
            self.cells.append(values)


def report_argv(out: Path, *args: str) -> list[str]:
    return ["report", "--model", "churn", "--run-id", RUN, "--out", str(out), *args]


def drawn(out: Path, code: int, stdout: str, stderr: str) -> _Page:
    """The page a successful `driftline report --out OUT` wrote."""
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}")
    parser = _Page()
    parser.feed(out.read_text(encoding="utf-8"))
    return parser


def report(home: Path, out: Path, *args: str) -> _Page:
    """The page of `driftline report` run as its own process."""
    done = driftline(home, *report_argv(out, *args))
    return drawn(out, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def churn_page(store: Path) -> tuple[Path, _Page]:
    """The default page of run RUN's churn (every version, whole run), drawn once for the tests
    that read it."""
    out = store / "churn.html"
    return out, report(store, out)


@pytest.mark.integration
def test_page_numbers_are_the_tables_numbers(store: Path, churn_page: tuple[Path, _Page]) -> None:
    page = churn_page[1]
    numbers = page.data["models"][0]
    versions = numbers["versions"]
    assert list(versions) == ["1", "2"] and numbers["window_s"] == 60 and numbers["run_id"] == RUN

    drift_rows, outcome_rows, counted_rows, [compared], dead_rows = queries(
        store,
        "SELECT model_version, uniqExact(window_start) AS windows, uniqExact(feature) AS features, "
        "countIf(drifted = 1) AS n_drifted, groupUniqArrayIf(feature, drifted = 1) AS drifted_features "
        "FROM drift_scores FINAL WHERE run_id = {run} AND model_id = 'churn' AND segment = '' "
        "GROUP BY model_version",
        "SELECT model_version, count() AS n, avg(correct) AS accuracy FROM outcomes FINAL "
        "WHERE run_id = {run} AND model_id = 'churn' GROUP BY model_version",
        "SELECT model_version, 'alarms' AS what, count() AS n FROM model_metrics FINAL WHERE run_id = {run} "
        "AND row_kind = 'alarm' GROUP BY model_version UNION ALL "
        "SELECT model_version, 'triggers', count() FROM retrain_triggers FINAL WHERE run_id = {run} "
        "GROUP BY model_version UNION ALL "
        "SELECT model_version, 'episodes', count() FROM drift_episodes FINAL WHERE run_id = {run} "
        "GROUP BY model_version UNION ALL "
        "SELECT model_version, 'duplicates', sum(n_duplicate_predictions) FROM model_metrics FINAL "
        "WHERE run_id = {run} AND row_kind = 'duplicates' GROUP BY model_version",
        # champion vs challenger (all traffic)
        "SELECT count() AS intervals, "
        "groupArrayIf((toUnixTimestamp64Milli(time), decision), decided_now = 1) AS decisions, "
        "sum(n_unpaired) AS unpaired FROM version_comparison FINAL WHERE run_id = {run} "
        "AND model_id = 'churn' AND segment = '' AND champion_version = '1' AND challenger_version = '2'",
        "SELECT error_kind, countIf(model_id = 'churn') AS model, countIf(model_id = '') AS anonymous "
        "FROM dead_letters FINAL WHERE run_id = {run} GROUP BY error_kind")
    drift = {r["model_version"]: r for r in drift_rows}
    outcomes = {r["model_version"]: r for r in outcome_rows}
    counted = {(r["model_version"], r["what"]): int(r["n"]) for r in counted_rows}
    for version, shown in versions.items():
        assert shown["windows"] == int(drift[version]["windows"]) == 20
        assert shown["features"] == int(drift[version]["features"])
        assert shown["drifted_cells"] == int(drift[version]["n_drifted"]) > 0
        assert set(shown["drifted_features"]) == set(drift[version]["drifted_features"]) == {"x1"}
        # outcome-weighted accuracy over the intervals = the share of correct outcomes: a replay's
        # intervals count every outcome row it wrote (the one the input ends in included)
        assert shown["outcomes"] == int(outcomes[version]["n"])
        assert shown["accuracy"] == pytest.approx(float(outcomes[version]["accuracy"]), abs=1e-4)
        for key in ("alarms", "triggers", "episodes"):
            assert shown[key] == counted.get((version, key), 0), key
        assert shown["duplicate_predictions"] == counted.get((version, "duplicates"), 0)
    assert versions["1"]["accuracy"] < versions["2"]["accuracy"]  # the champion lost its concept
    assert versions["1"]["triggers"] >= 1 and "__error__" in versions["1"]["episode_features"]
    assert sum(v["duplicate_predictions"] for v in versions.values()) == DUPLICATES

    # champion vs challenger: the page's pair is the table's
    [pair] = numbers["comparisons"]
    assert (pair["champion"], pair["challenger"], pair["mode"], pair["paired"]) == ("1", "2", "shadow", True)
    assert pair["intervals"] == int(compared["intervals"]) >= 19 and int(compared["unpaired"]) == 0
    assert pair["decisions"] == sorted([int(t), d] for t, d in compared["decisions"])
    # the champion lost its concept half-way: the challenger ends up decided better
    assert pair["decision"] == "challenger_better" and pair["decisions"][-1][0] >= START + 10 * MIN

    dead = {r["error_kind"]: (int(r["model"]), int(r["anonymous"])) for r in dead_rows}
    assert {k: (v["model"], v["unattributed"]) for k, v in numbers["dead_letters"].items()} == dead
    assert sum(sum(v) for v in dead.values()) > 0

    # the drawn heat map is the table: a cell per feature and window, a dot per drifted verdict
    assert len(page.cells) == sum(int(d["features"]) * int(d["windows"]) for d in drift.values())
    assert sum(int(c["data-drifted"]) for c in page.cells) == sum(int(d["n_drifted"]) for d in drift.values())
    assert all(c["data-feature"] == "x1" for c in page.cells if c["data-drifted"] != "0")
    assert "script" not in page.tags


@pytest.mark.integration
def test_multivariate_series_are_the_tables(store: Path, churn_page: tuple[Path, _Page]) -> None:
    """The four multivariate series of the page (the training profiles carry the section and the
    CBPE calibration) are the rows of multivariate_drift, outlier_rate and estimated_vs_realized."""
    shown = churn_page[1].data["models"][0]["multivariate"]
    assert list(shown) == ["1", "2"]
    scope = "WHERE run_id = {run} AND model_id = 'churn'"
    drift, outliers, estimated = queries(
        store,
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS t, share_above_p99, auc, "
        f"auc_threshold, drifted FROM multivariate_drift FINAL {scope} AND segment = '' "
        "ORDER BY model_version, t",
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS t, rate, p_value "
        f"FROM outlier_rate FINAL {scope} AND segment = '' ORDER BY model_version, t",
        "SELECT model_version, toUnixTimestamp64Milli(window_start) AS t, estimated_accuracy, estimated_low, "
        f"estimated_high, realized_accuracy FROM estimated_vs_realized {scope} ORDER BY model_version, t")
    shift_ms = START + 10 * MIN
    for version, series in shown.items():
        assert series["auc"] == [[int(r["t"]), r["auc"], r["auc_threshold"], int(r["drifted"])]
                                 for r in drift if r["model_version"] == version and r["auc"] is not None]
        assert series["share_above_p99"] == [[int(r["t"]), r["share_above_p99"]]
                                             for r in drift if r["model_version"] == version]
        assert series["outlier_rate"] == [[int(r["t"]), r["rate"], r["p_value"]]
                                          for r in outliers if r["model_version"] == version]
        assert series["estimated_accuracy"] == [
            [int(r["t"]), r["estimated_accuracy"], r["estimated_low"], r["estimated_high"],
             r["realized_accuracy"]] for r in estimated if r["model_version"] == version]
        assert len(series["auc"]) == len(series["estimated_accuracy"]) == 20
        # x1 shifts at minute 10: the classifier tells every later window from the reference, no earlier one
        drifted = [t for t, _, _, verdict in series["auc"] if verdict]
        assert drifted == [t for t, *_ in series["auc"] if t >= shift_ms]
        assert series["auc_drifted_windows"] == 10
        assert series["auc_missing"] == {}  # every policy window has its 200 sampled rows
        assert all(p > 0.001 for t, _, p in series["outlier_rate"] if t < shift_ms)
        # before the concept drift, the estimate from scores alone is the labels' accuracy
        assert all(abs(est - realized) <= 0.04 for t, est, _, _, realized in series["estimated_accuracy"]
                   if t < shift_ms), series["estimated_accuracy"]
    # the champion keeps its old concept: after the drift its labels fall below the estimate's band
    assert all(realized < low for t, _, low, _, realized in shown["1"]["estimated_accuracy"] if t >= shift_ms)


@pytest.mark.integration
def test_version_and_time_range_narrow_the_page(store: Path, tmp_path: Path) -> None:
    narrowed, last_5m = tmp_path / "v2.html", tmp_path / "last.html"
    by_version, by_last = commands(
        store,
        report_argv(narrowed, "--version", "2", "--from", str(START + 5 * MIN),
                    "--to", str(START + 15 * MIN)),
        report_argv(last_5m, "--last", "5m"))
    page = drawn(narrowed, *by_version)
    numbers = page.data["models"][0]
    assert list(numbers["versions"]) == ["2"] and numbers["from_ms"] == START + 5 * MIN
    assert numbers["versions"]["2"]["windows"] == 10
    assert {int(c["data-start"]) for c in page.cells} == {START + m * MIN for m in range(5, 15)}

    # --last ends at the newest time of a window of the heat map's size (the smallest) or of an
    # interval (the replay's last outcome interval holds the labels of its last minute: it ends
    # after the last drift window). Not a larger size's newer window: with sizes that do not divide
    # into each other it ends past the smallest's last one (tests/test_report_last.py).
    last = drawn(last_5m, *by_last).data["models"][0]
    ends, starts = queries(
        store,
        "SELECT toUnixTimestamp64Milli(max(window_end)) AS end FROM drift_scores WHERE run_id = {run} "
        "AND window_size_s = 60 "
        "UNION ALL SELECT toUnixTimestamp64Milli(max(time)) FROM model_metrics WHERE run_id = {run} "
        "AND model_version != ''",
        "SELECT DISTINCT toUnixTimestamp64Milli(window_start) AS start FROM drift_scores "
        "WHERE run_id = {run} AND model_version = '1'")
    newest = max(int(r["end"]) for r in ends)
    windows = sum(int(r["start"]) >= newest - 5 * MIN for r in starts)
    assert last["from_ms"] == newest - 5 * MIN and last["versions"]["1"]["windows"] == windows >= 4


@pytest.mark.integration
def test_errors_are_one_line_and_exit_2(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    cases = {
        ("--model", "nope", "--run-id", RUN):
            "unknown model 'nope' in run 'report-test'; models with data: churn",
        ("--model", "churn", "--run-id", RUN, "--version", "9"):
            "model 'churn' has no version '9' (versions: 1, 2)",
        ("--model", "churn", "--run-id", RUN, "--from", str(START + 86_400_000)): "has no drift scores",
        ("--model", "churn"): "unknown model 'churn' in the live pipeline",
        ("--model", "churn", "--last", "1h", "--from", "0"): "--last replaces --from/--to",
    }
    outcomes = commands(store, *(["report", *args, "--out", str(out)] for args in cases))
    for (args, message), (code, _, stderr) in zip(cases.items(), outcomes, strict=True):
        assert code == 2, (args, stderr)
        assert stderr.count("\n") == 1 and message in stderr, (args, stderr)
    # ... and as a process of its own: exit status 2, one line on stderr
    unreachable = driftline(store, "report", "--model", "churn", "--out", str(out),
                            DRIFTLINE_CLICKHOUSE_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 2 and unreachable.stderr.count("\n") == 1, unreachable.stderr
    assert "cannot reach ClickHouse at http://127.0.0.1:9" in unreachable.stderr
    assert not out.exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed")
def test_page_draws_in_headless_chromium(churn_page: tuple[Path, _Page], tmp_path: Path) -> None:
    page_path = churn_page[0]
    assert CHROMIUM is not None
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*base, "--dump-dom", page_path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr
    drawn = _Page()
    drawn.feed(dom.stdout)
    # the browser parsed every chart: two heat maps, three line charts (v2 against its champion v1
    # too), five multivariate charts, the episode timeline
    assert drawn.tags.count("svg") == 11 and len(drawn.cells) == 2 * 7 * 20
    assert drawn.data["models"][0]["model_id"] == "churn"
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr
    shot = tmp_path / "churn.png"
    done = subprocess.run([*base, f"--screenshot={shot}", page_path.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


def test_heat_map_merges_windows_beyond_its_width() -> None:
    """A week of minute windows: columns of consecutive windows, every verdict still counted."""
    n = 7 * 24 * 60
    rows: dict[str, list[dict[str, Any]]] = {"model_drift": [], "drift": [
        {"model_version": "1", "feature": "x1", "feature_kind": "numeric", "start_ms": START + i * MIN,
         "end_ms": START + (i + 1) * MIN, "count": 100, "psi": i / n, "js_distance": None,
         "ks_pvalue_adj": None, "chi2_pvalue_adj": None, "drifted": int(i % 7 == 0),
         "drifted_by": ["psi"] if i % 7 == 0 else []}
        for i in range(n)]}
    parser = _Page()
    parser.feed(drift_heatmap(rows, "1", 60))
    assert len(parser.cells) <= MAX_COLUMNS
    assert sum(int(c["data-drifted"]) for c in parser.cells) == sum(r["drifted"] for r in rows["drift"])
    assert sum(int(c["data-windows"]) for c in parser.cells) == n
