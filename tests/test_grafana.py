"""The Grafana provisioning and dashboard: every query runs against the real schema and returns data.

Panel, variable and annotation SQL is rendered the way Grafana and the ClickHouse plugin would
(template variables from the variable queries themselves, plugin macros as in its macros.go) and
executed on ClickHouse after `migrate`, with rows from a short simulated run of the real pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from clickhouse_connect.driver.client import Client
from harness import load_module
from pydantic import SecretStr

from driftline.config import Settings
from driftline.store.client import connect, database_name
from driftline.store.embedded_reader import EmbeddedReader
from driftline.store.writer import ClickHouseRowWriter
from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.http_security import secure_app

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "driftline-overview.json"
PLUGIN = "grafana-clickhouse-datasource"
VIEWS = {"latest_drift", "accuracy_over_time", "estimated_vs_realized"}
MULTIVARIATE = ("Domain classifier AUC vs threshold", "Reconstruction error share above q99", "Outlier rate",
                "Estimated vs realized accuracy")
INTERVAL_S = 60


def _load_seed_data() -> ModuleType:
    return load_module(REPO / "notebooks" / "seed_data.py", "seed_data")


seed_data = _load_seed_data()


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])


def _variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def _annotation_queries(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in dashboard["annotations"]["list"] if a.get("datasource", {}).get("type") == PLUGIN]


# -- Grafana / plugin rendering --------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(sql: str, variables: dict[str, list[str]], time_from: datetime, time_to: datetime) -> str:
    """SQL as the plugin sends it: variables interpolated by Grafana, then the plugin's macros."""

    def variable(match: re.Match[str]) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        values = variables[name]
        return ",".join(_quote(v) for v in values) if fmt == "singlequote" else ",".join(values)

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", variable, sql)
    start, end = int(time_from.timestamp()), int(time_to.timestamp())
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)",
                 lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {INTERVAL_S} second)", sql)
    sql = (sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
           .replace("$__interval_s", str(INTERVAL_S)))
    assert "$" not in sql, f"unrendered variable or macro in:\n{sql}"
    return sql


# -- static checks ---------------------------------------------------------------------------------


def test_provisioning_files_parse_and_point_at_the_dashboard() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    assert datasources["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert [d["uid"] for d in datasources["datasources"] if d.get("isDefault")] == ["driftline-clickhouse"]
    ports = {d["jsonData"]["protocol"]: d["jsonData"]["port"] for d in by_uid.values()}
    assert ports == {"native": 9000, "http": 8123}
    for ds in by_uid.values():
        assert ds["type"] == PLUGIN
        assert ds["jsonData"]["host"] == "clickhouse"
        assert ds["jsonData"]["defaultDatabase"] == "driftline"
        assert re.fullmatch(r"\$\{\w+\}", ds["jsonData"]["username"]), "user comes from the environment"
        assert re.fullmatch(r"\$\{\w+\}", ds["secureJsonData"]["password"])

    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "driftline.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"  # infra/grafana/dashboards, see compose

    dashboard = _dashboard()
    default_ds = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert default_ds["query"] == PLUGIN and default_ds["current"]["value"] in by_uid


def test_dashboard_has_the_panels_and_templated_sql_only() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "driftline-overview"
    panels = list(_panels(dashboard))
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    kinds = {p["title"]: p["type"] for p in panels}
    assert kinds["PSI per feature and window"] == "heatmap"
    assert kinds["Drifted features (latest window)"] == "table"
    assert kinds["Model drift verdict"] == "state-timeline"
    assert kinds["Retrain triggers and jobs"] == "table"
    assert kinds["Drift episodes"] == "table"
    assert {"Accuracy / MAE", "Label coverage", "Label delay p50 / p99",
            "Dead letters by error kind"} <= set(kinds)
    assert {kinds[title] for title in MULTIVARIATE} == {"timeseries"}
    assert {v["name"] for v in _variables(dashboard)} == {"model", "version", "window_size"}
    assert {a["name"] for a in _annotation_queries(dashboard)} == {"Concept-drift alarms", "Retrain triggers"}

    for panel in panels:
        for target in panel["targets"]:
            sql = target["rawSql"]
            assert target["editorType"] == "sql" and target["format"] in (0, 1)
            assert panel["datasource"]["type"] == target["datasource"]["type"] == PLUGIN
            assert "run_id = ''" in sql or "FROM latest_drift" in sql, panel["title"]
            if panel["title"] != "Dead letters by error kind":  # pipeline-wide
                assert "${model:singlequote}" in sql, panel["title"]
            if target["format"] == 0:  # time series: bounded by the time picker
                assert "$__timeFilter(" in sql, panel["title"]
            for table, final in re.findall(r"\bFROM\s+(\w+)(\s+FINAL)?", sql):
                assert final or table in VIEWS, f"{panel['title']}: read {table} with FINAL"


# -- every query against ClickHouse ----------------------------------------------------------------


@pytest.fixture
def seeded(settings: Settings) -> Iterator[tuple[Client, int]]:
    """Migrated database with a simulated run and one retrain job (queued, then succeeded)."""
    start_ms = seed_data.default_start_ms()
    rows = seed_data.simulate_rows(seed_data.demo_settings(settings), seed_data.demo_scenario(start_ms))
    assert rows["drift_scores"] and rows["retrain_triggers"] and rows["dead_letters"]
    seed_data.write_rows(settings, rows)
    client = connect(settings)
    try:
        trigger = rows["retrain_triggers"][0]
        job = {"run_id": "", "trigger_id": trigger["trigger_id"], "attempt": 1,
               "model_id": trigger["model_id"], "model_version": trigger["model_version"],
               "log_path": "/tmp/job.log"}
        writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
        writer.write("retrain_jobs", [
            {**job, "status": "queued", "message": "", "updated_at": start_ms + 3_600_000},
            {**job, "status": "succeeded", "message": "done", "started_at": start_ms + 3_601_000,
             "finished_at": start_ms + 3_661_000, "duration_s": 60.0, "exit_code": 0,
             "updated_at": start_ms + 3_661_000},
        ])
        writer.close()
        yield client, start_ms
    finally:
        client.close()


def _resolve_variables(client: Client, dashboard: dict[str, Any], time_from: datetime,
                       time_to: datetime) -> dict[str, list[str]]:
    """Run the variable queries in order: first value, or every value for include-All variables."""
    values: dict[str, list[str]] = {}
    for var in _variables(dashboard):
        rows = client.query(render(var["query"]["rawSql"], values, time_from, time_to)).result_rows
        options = [str(r[0]) for r in rows]
        assert options, f"variable ${var['name']} has no values"
        values[var["name"]] = options if var["includeAll"] else options[:1]
    return values


def test_every_query_runs_on_the_schema_and_returns_data(seeded: tuple[Client, int]) -> None:
    client, start_ms = seeded
    dashboard = _dashboard()
    time_from = datetime.fromtimestamp(start_ms / 1000 - 3600, UTC)
    time_to = datetime.fromtimestamp(start_ms / 1000 + 86_400, UTC)
    variables = _resolve_variables(client, dashboard, time_from, time_to)
    shift_start = datetime.fromtimestamp(start_ms / 1000 + seed_data.SHIFT_S, UTC)
    assert variables == {"model": ["churn"], "version": ["1", "2"], "window_size": ["300"]}

    results: dict[str, tuple[list[str], list[Sequence[Any]]]] = {}
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            result = client.query(render(target["rawSql"], variables, time_from, time_to))
            results[panel["title"]] = (list(result.column_names), list(result.result_rows))
    for annotation in _annotation_queries(dashboard):
        result = client.query(render(annotation["target"]["rawSql"], variables, time_from, time_to))
        assert set(result.column_names) == {"time", "title", "text", "tags"}, annotation["name"]
        results[annotation["name"]] = (list(result.column_names), list(result.result_rows))
    empty = [title for title, (_, rows) in results.items() if not rows]
    assert empty == []

    columns, heat = results["PSI per feature and window"]
    assert columns == ["time", "feature", "psi"]
    features = {row[1] for row in heat}
    assert {"x0", "x1", "x2", "x3", "c0"} <= features
    drifted_psi = [row[2] for row in heat if row[1] == seed_data.DRIFTED_FEATURE]
    assert max(drifted_psi) > 0.2

    columns, drifted = results["Drifted features (latest window)"]
    assert {row[columns.index("feature")] for row in drifted} == {seed_data.DRIFTED_FEATURE}

    columns, episodes = results["Drift episodes"]
    # The shifted feature, the joint distribution (reconstruction) and the error stream, after the shift.
    assert {row[columns.index("feature")] for row in episodes} == {
        seed_data.DRIFTED_FEATURE, "__reconstruction__", "__error__"}, episodes
    assert all(row[columns.index("opened_at")].replace(tzinfo=UTC) >= shift_start for row in episodes)
    _check_multivariate(results, shift_start)

    columns, jobs = results["Retrain triggers and jobs"]
    statuses = sorted(row[columns.index("status")] for row in jobs)
    # FINAL keeps the newest status of the one job (never "queued"); other triggers have none.
    assert statuses.count("succeeded") == 1 and set(statuses) == {"not started", "succeeded"}, statuses

    columns, accuracy = results["Accuracy / MAE"]
    assert all(0 <= row[columns.index("accuracy")] <= 1 for row in accuracy)
    _, alarms = results["Concept-drift alarms"]
    shift = datetime.fromtimestamp(start_ms / 1000 + seed_data.SHIFT_S - 60, UTC)
    assert all(row[0].replace(tzinfo=UTC) >= shift for row in alarms)  # alarms follow the concept drift


def _by_time(columns: list[str], rows: list[Sequence[Any]], shift_start: datetime,
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows as dicts, split into windows starting before and at or after the shift."""
    dicts = [dict(zip(columns, row, strict=True)) for row in rows]
    before = [r for r in dicts if r["time"].replace(tzinfo=UTC) < shift_start]
    return before, [r for r in dicts if r not in before]


def _check_multivariate(results: dict[str, tuple[list[str], list[Sequence[Any]]]],
                        shift_start: datetime) -> None:
    """Each multivariate panel shows both versions and tells the windows after x1's shift apart."""
    for title in MULTIVARIATE:
        columns, rows = results[title]
        assert {row[columns.index("model_version")] for row in rows} == {"1", "2"}, title
    before, after = _by_time(*results["Domain classifier AUC vs threshold"], shift_start)
    assert before and after
    assert all(r["auc"] < r["auc_threshold"] for r in before), before
    assert all(r["auc"] >= r["auc_threshold"] for r in after), after
    before, after = _by_time(*results["Reconstruction error share above q99"], shift_start)
    assert max(r["share_above_p99"] for r in before) < min(r["share_above_p99"] for r in after)
    before, after = _by_time(*results["Outlier rate"], shift_start)
    assert min(r["p_value"] for r in before) > 0.001 and max(r["p_value"] for r in after) < 0.001
    before, after = _by_time(*results["Estimated vs realized accuracy"], shift_start)
    # Before the concept drift the estimate from scores alone matches the labels; after it, the
    # champion's realized accuracy falls below the band (the concept moved, its scores did not).
    assert all(abs(r["estimated_accuracy"] - r["realized_accuracy"]) <= 0.03 for r in before), before
    assert all(r["estimated_low"] <= r["estimated_accuracy"] <= r["estimated_high"] for r in before + after)
    assert all(r["realized_accuracy"] < r["estimated_low"] for r in after if r["model_version"] == "1"), after


# -- the embedded mode: the plugin's requests to the worker's ClickHouse HTTP interface --------------

WORKER_TOKEN = "tok-grafana-0123456789"
# What grafana-clickhouse-datasource sends with protocol "http" (pkg/plugin/driver.go: gzip
# compression, basic auth, the default database) through clickhouse-go v2's HTTP transport
# (conn_http.go: POST to / with the SQL as body, default_format=Native, database=...).
PLUGIN_HEADERS = {
    "User-Agent": "clickhouse-go/2.34.0 (lv:go/1.24.1; os:linux) grafana/11.6.0 clickhouse-datasource/4.8.2",
    "Accept-Encoding": "gzip",
    "Content-Type": "text/plain; charset=utf-8",
}
PLUGIN_HANDSHAKE = ("SELECT timeZone()", "SELECT 1", "SELECT version()")  # connect, ping, health check


def test_worker_datasource_is_http_to_the_worker_port() -> None:
    path = GRAFANA / "provisioning" / "datasources" / "driftline-worker.yaml"
    provisioned = yaml.safe_load(path.read_text())
    (ds,) = provisioned["datasources"]
    assert (ds["uid"], ds["type"], ds.get("isDefault")) == ("driftline-worker", PLUGIN, False)
    assert ds["jsonData"]["protocol"] == "http" and ds["jsonData"]["port"] == Settings().worker.web_port
    assert ds["jsonData"]["defaultDatabase"] == Settings().clickhouse.database
    assert re.fullmatch(r"\$\{\w+\}", ds["secureJsonData"]["password"]), "the token: from the environment"


def test_plugin_requests_get_the_engines_answers_through_the_interface(
    seeded: tuple[Client, int], settings: Settings
) -> None:
    """Each request the plugin sends for the dashboard (handshake, variables, panels, annotations)
    is answered with exactly the bytes the engine itself produces for that SQL (Native, gzip)."""
    if not settings.clickhouse.embedded:
        pytest.skip("the ClickHouse HTTP interface serves the embedded engine")
    client, start_ms = seeded
    dashboard = _dashboard()
    time_from = datetime.fromtimestamp(start_ms / 1000 - 3600, UTC)
    time_to = datetime.fromtimestamp(start_ms / 1000 + 86_400, UTC)
    variables = _resolve_variables(client, dashboard, time_from, time_to)
    statements = list(PLUGIN_HANDSHAKE)
    statements += [render(v["query"]["rawSql"], variables, time_from, time_to) for v in _variables(dashboard)]
    statements += [render(t["rawSql"], variables, time_from, time_to)
                   for panel in _panels(dashboard) for t in panel["targets"]]
    statements += [render(a["target"]["rawSql"], variables, time_from, time_to)
                   for a in _annotation_queries(dashboard)]
    expected = [bytes(client.raw_query(sql, fmt="Native")) for sql in statements]
    worker = settings.worker.model_copy(update={"auth_tokens": [SecretStr(WORKER_TOKEN)]})
    query = {"database": settings.clickhouse.database, "default_format": "Native"}

    async def replay() -> list[tuple[int, dict[str, str], bytes]]:
        app = web.Application()
        secure_app(app, worker)
        add_clickhouse_interface(app, EmbeddedReader(settings))
        answers = []
        async with TestClient(TestServer(app), auto_decompress=False) as http:
            basic = base64.b64encode(f"grafana:{WORKER_TOKEN}".encode()).decode()
            headers = {**PLUGIN_HEADERS, "Authorization": f"Basic {basic}"}
            for sql in statements:
                response = await http.post("/", params=query, data=sql.encode(), headers=headers)
                answers.append((response.status, dict(response.headers), await response.read()))
        return answers

    for sql, want, (status, headers, body) in zip(statements, expected, asyncio.run(replay()), strict=True):
        assert status == 200, (sql, body[:300])
        assert (headers["X-ClickHouse-Format"], headers["Content-Encoding"]) == ("Native", "gzip"), sql
        assert gzip.decompress(body) == want, sql
