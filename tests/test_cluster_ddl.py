"""`driftline db migrate --cluster`: the ON CLUSTER rewrite of every migration file.

chDB has no cluster (no remote_servers, no Keeper), so the rewrite is checked as text: every
statement it emits must parse (ClickHouse's own parser, through formatQuery), keep each file's
columns and keys, and shard by the sorting key the single-server migration gives. It is run for
real only against a server cluster named by DRIFTLINE_TEST_CLICKHOUSE_CLUSTER (external or
testcontainers backend).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from driftline.config import Settings
from driftline.store.client import connect
from driftline.store.cluster_ddl import REPLICATION_PATH, ClusterDDLError, ClusterRewriter, table_names
from driftline.store.migrate import MigrationError, discover, migrate, plan_sql, statements
from driftline.streams.worker import WorkerRuntime

pytestmark = pytest.mark.integration

CLUSTER = "analytics"


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = connect(settings)
    yield c
    c.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse.database}`")
    c.close()


def _formatted(client: Client, sql: str) -> str:
    return str(client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0])


def test_every_statement_of_every_file_parses_as_cluster_ddl(client: Client, settings: Settings) -> None:
    migrate(client, settings)  # single-server, for the sorting keys to compare with
    db = settings.clickhouse.database
    sorting_keys = dict(
        client.query(
            "SELECT name, sorting_key FROM system.tables"
            " WHERE database = {db:String} AND engine LIKE '%MergeTree'",
            parameters={"db": db},
        ).result_rows
    )
    migrations = discover()
    rewritten = statements(migrations, settings, CLUSTER)
    assert list(rewritten) == [m.label for m in migrations]
    distributed: dict[str, str] = {}
    for label, sqls in rewritten.items():
        assert sqls, label
        for sql in sqls:
            text = _formatted(client, sql)
            assert f"ON CLUSTER {CLUSTER}" in text, (label, text[:120])
            first = text.splitlines()[0]
            if first.startswith("CREATE TABLE") and "_local ON CLUSTER" in first:
                assert f"ENGINE = ReplicatedReplacingMergeTree('{REPLICATION_PATH}', '{{replica}}'" in text
            elif first.startswith("CREATE TABLE"):
                name = first.split()[5].split(".")[1]
                assert f"AS {db}.{name}_local" in text
                distributed[name] = text
    assert set(distributed) == set(sorting_keys) - {"schema_migrations"}
    for name, text in distributed.items():
        engine = f"Distributed('{CLUSTER}', '{db}', '{name}_local', cityHash64({sorting_keys[name]}))"
        assert f"ENGINE = {engine}" in text, name
    # retrain_jobs keeps its version column after the replication arguments.
    jobs = next(s for s in rewritten["009_retrain_jobs"] if "retrain_jobs_local" in s)
    assert "'{replica}', updated_at)" in jobs


def test_views_and_column_alters_reach_both_layers(settings: Settings) -> None:
    rewritten = statements(discover(), settings, CLUSTER)
    view = rewritten["011_latest_drift"]
    assert len(view) == 1 and f"latest_drift ON CLUSTER `{CLUSTER}` AS" in view[0]
    assert "drift_scores FINAL" in view[0]  # the Distributed public name, so FINAL runs per shard
    # a view recreated with more columns: replaced in one statement on every node
    [replaced] = rewritten["020_accuracy_over_time_failed_joins"]
    assert replaced.startswith("CREATE OR REPLACE VIEW")
    assert f"accuracy_over_time ON CLUSTER `{CLUSTER}` AS" in replaced
    assert "n_evicted" in replaced and "model_metrics FINAL" in replaced
    alters = rewritten["016_join_coverage"]
    db = settings.clickhouse.database
    assert [sql.split()[2] for sql in alters] == [
        f"{db}.model_metrics_local", f"{db}.model_metrics", f"{db}.outcomes_local", f"{db}.outcomes",
    ]


def test_materialized_views_and_non_column_alters() -> None:
    rewriter = ClusterRewriter(CLUSTER, "db", known_tables={"src", "dst"})
    [view] = rewriter.rewrite(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv TO db.dst AS SELECT a, 'db.src' AS s FROM db.src"
    )
    assert view == (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv ON CLUSTER `{CLUSTER}` TO db.dst_local"
        " AS SELECT a, 'db.src' AS s FROM db.src_local"
    )
    with pytest.raises(ClusterDDLError, match="needs TO"):
        rewriter.rewrite("CREATE MATERIALIZED VIEW db.v ENGINE = MergeTree ORDER BY a AS SELECT a FROM db.s")
    assert rewriter.rewrite("ALTER TABLE db.src MODIFY TTL toDateTime(t) + INTERVAL 1 DAY") == [
        f"ALTER TABLE db.src_local ON CLUSTER `{CLUSTER}` MODIFY TTL toDateTime(t) + INTERVAL 1 DAY"
    ]
    dropped = rewriter.rewrite("DROP VIEW IF EXISTS db.v")
    assert dropped == [f"DROP VIEW IF EXISTS db.v ON CLUSTER `{CLUSTER}`"]
    assert rewriter.rewrite("drop view db.v sync") == [f"drop view db.v ON CLUSTER `{CLUSTER}` sync"]
    with pytest.raises(ClusterDDLError, match="no cluster form"):
        rewriter.rewrite("INSERT INTO db.src VALUES (1)")
    with pytest.raises(ClusterDDLError, match="no cluster form"):
        rewriter.rewrite("DROP TABLE db.src")
    with pytest.raises(ClusterDDLError, match="no replicated form"):
        rewriter.rewrite("CREATE TABLE db.m (a UInt8) ENGINE = Memory")
    created = "-- why\nCREATE TABLE IF NOT EXISTS db.x (a UInt8) ENGINE = MergeTree ORDER BY a"
    assert table_names([created]) == {"x"}


def test_embedded_engine_refuses_a_cluster_with_a_reason(client: Client, settings: Settings) -> None:
    with pytest.raises(MigrationError, match=r"CLUSTER_DOESNT_EXIST|not found") as refused:
        migrate(client, settings, cluster=CLUSTER)
    assert "the embedded engine has none" in str(refused.value)


def test_the_cluster_setting_reaches_db_migrate_and_the_sink(client: Client, settings: Settings,
                                                             tmp_path: os.PathLike[str]) -> None:
    """clickhouse.cluster is what a sink migrating at start uses (it has no --cluster flag), and
    what `db migrate` uses without the flag."""
    clustered = settings.model_copy(
        update={"clickhouse": settings.clickhouse.model_copy(update={"cluster": CLUSTER})})
    assert f"ON CLUSTER `{CLUSTER}`" in plan_sql(clustered)
    sink = WorkerRuntime(clustered, role="sink")
    with pytest.raises(MigrationError, match="the embedded engine has none"):
        sink.prepare_store()
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path), "DRIFTLINE_CLICKHOUSE_URL": "http://127.0.0.1:9",
           "DRIFTLINE_CLICKHOUSE_CLUSTER": CLUSTER}
    run = subprocess.run([sys.executable, "-m", "driftline.cli.main", "db", "migrate", "--print"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"driftline.outcomes ON CLUSTER `{CLUSTER}` AS driftline.outcomes_local" in run.stdout
    refused = subprocess.run([sys.executable, "-m", "driftline.cli.main", "db", "migrate", "--print"],
                             capture_output=True, text=True, timeout=120,
                             env={**env, "DRIFTLINE_CLICKHOUSE_CLUSTER": "c`; DROP TABLE x"})
    assert refused.returncode == 2 and "DRIFTLINE_CLICKHOUSE_CLUSTER" in refused.stderr, refused.stderr


def test_cli_prints_the_cluster_ddl_without_a_server(tmp_path: os.PathLike[str]) -> None:
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path), "DRIFTLINE_CLICKHOUSE_URL": "http://127.0.0.1:9"}
    run = subprocess.run(
        [sys.executable, "-m", "driftline.cli.main", "db", "migrate", "--cluster", CLUSTER, "--print"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("-- bookkeeping\n")
    distributed = f"TABLE IF NOT EXISTS driftline.outcomes ON CLUSTER `{CLUSTER}` AS driftline.outcomes_local"
    assert distributed in run.stdout
    assert run.stdout.count(f"ON CLUSTER `{CLUSTER}`") > 2 * len(discover())


@pytest.mark.skipif(
    not os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_CLUSTER"),
    reason="set DRIFTLINE_TEST_CLICKHOUSE_CLUSTER to a cluster of the external/testcontainers ClickHouse",
)
def test_migrate_on_a_real_cluster(settings: Settings) -> None:
    cluster = os.environ["DRIFTLINE_TEST_CLICKHOUSE_CLUSTER"]
    db = settings.clickhouse.database
    c = connect(settings)
    try:
        assert migrate(c, settings, cluster=cluster) == [m.label for m in discover()]
        assert migrate(c, settings, cluster=cluster) == []
        engines = dict(c.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": db}
        ).result_rows)
        for table in table_names(s for m in discover() for s in m.statements(settings)):
            assert engines[table] == "Distributed"
            assert engines[f"{table}_local"].startswith("Replicated")
        assert engines["latest_drift"] == "View"
    finally:
        c.command(f"DROP DATABASE IF EXISTS `{db}` ON CLUSTER `{cluster}` SYNC")
        c.close()


def test_a_cluster_name_that_is_not_an_identifier_is_refused_before_any_sql() -> None:
    from driftline.store.migrate import MigrationError, _migrations_table_ddl

    with pytest.raises(MigrationError, match="cluster name"):
        _migrations_table_ddl("driftline", "c`; DROP TABLE x; --")
    assert "ON CLUSTER `prod-1`" in _migrations_table_ddl("driftline", "prod-1")[0]
