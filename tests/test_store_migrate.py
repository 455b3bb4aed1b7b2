"""Migrations: every contract table and view, idempotent in one process and across processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from driftline.config import MAX_TTL_DAYS, Settings
from driftline.store.client import StoreError, connect
from driftline.store.migrate import MigrationError, discover, migrate, status

pytestmark = pytest.mark.integration

# Column lists of docs/architecture.md, the contract the pipeline codes against.
CONTRACT = {
    "dead_letters": (
        "run_id source_topic source_partition source_offset source_timestamp error_kind "
        "error_message payload payload_size model_id"
    ),
    "late_events": (
        "run_id source_topic source_partition source_offset event_type prediction_id model_id "
        "model_version event_time watermark_time"
    ),
    "unjoined_events": (
        "run_id model_id model_version event_type reason prediction_id segment time metrics_time "
        "source_partition source_offset"
    ),
    "outcomes": (
        "run_id model_id model_version prediction_id segment prediction_time label_time "
        "label_delay_ms predicted_label predicted_score predicted_value label label_value correct "
        "abs_error features"
    ),
    "feature_windows": (
        "run_id model_id model_version window_size_s segment feature window_start window_end "
        "feature_kind count missing invalid out_of_range mean variance min max p50 p90 p99 "
        "bin_edges bin_labels histogram reference_histogram reference_id"
    ),
    "drift_scores": (
        "run_id model_id model_version window_size_s segment feature window_start window_end "
        "feature_kind count psi ks_stat ks_pvalue ks_pvalue_adj js_distance wasserstein chi2_stat "
        "chi2_pvalue chi2_pvalue_adj drifted drifted_by reference_id config_hash"
    ),
    "model_drift": (
        "run_id model_id model_version window_size_s segment window_start window_end n_events "
        "n_features n_drifted drifted drifted_features reference_id config_hash"
    ),
    "model_metrics": (
        "run_id model_id model_version segment row_kind time interval_s n_outcomes n_outcomes_total "
        "n_expired label_coverage accuracy accuracy_ew mae mae_ew rmse rmse_ew baseline "
        "label_delay_p50_ms label_delay_p90_ms label_delay_p99_ms detector alarm alarms_total "
        "n_orphan_labels n_rerouted rerouted_share n_duplicate_predictions n_duplicate_labels n_evicted"
    ),
    "retrain_triggers": (
        "run_id model_id model_version trigger_id reason message window_start window_end "
        "triggered_at evidence config_hash"
    ),
    "retrain_jobs": (
        "run_id trigger_id attempt model_id model_version status started_at finished_at duration_s "
        "exit_code log_path message updated_at"
    ),
    "reference_profiles": (
        "run_id model_id model_version profile_id created_at effective_from source profile"
    ),
    "drift_alerts": (
        "run_id alert_id model_id model_version feature feature_kind source shard component "
        "event_time prediction_id observation_index statistic threshold arl reference_id config_hash "
        "episode_id event_kind reason magnitude unit"
    ),
    "drift_episodes": (
        "run_id episode_id model_id model_version feature feature_kind source status opened_at "
        "last_seen closed_at close_reason events_seen magnitude peak_magnitude unit escalations shards "
        "open_shards opened_component opened_statistic opened_threshold opened_prediction_id "
        "escalated_at escalation_reason escalated_component escalated_statistic escalated_threshold "
        "arl reference_id config_hash version"
    ),
    "version_comparison": (
        "run_id model_id champion_version challenger_version segment time interval_s mode paired metric "
        "n_champion n_challenger n_unpaired champion_value challenger_value difference difference_low "
        "difference_high n_tested cumulative_difference likelihood_ratio p_value decision decided_now "
        "decided_at"
    ),
}
SORTING_KEYS = {
    "dead_letters": "run_id, source_topic, source_partition, source_offset",
    "late_events": "run_id, source_topic, source_partition, source_offset",
    "outcomes": "run_id, model_id, model_version, prediction_id",
    "unjoined_events": ("run_id, model_id, model_version, event_type, reason, prediction_id, time, "
                        "source_partition, source_offset"),
    "feature_windows": "run_id, model_id, model_version, window_size_s, segment, feature, window_start",
    "drift_scores": "run_id, model_id, model_version, window_size_s, segment, feature, window_start",
    "model_drift": "run_id, model_id, model_version, window_size_s, segment, window_start",
    "model_metrics": "run_id, model_id, model_version, segment, row_kind, time",
    "retrain_triggers": "run_id, model_id, model_version, trigger_id",
    "retrain_jobs": "trigger_id, attempt",
    "reference_profiles": "run_id, model_id, model_version, profile_id",
    "drift_alerts": "run_id, model_id, model_version, alert_id",
    "drift_episodes": "run_id, model_id, model_version, episode_id",
    "version_comparison": "run_id, model_id, champion_version, challenger_version, segment, time",
}


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = connect(settings)
    yield c
    c.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse.database}`")
    c.close()


def test_migrate_twice_in_one_process(client: Client, settings: Settings) -> None:
    first = migrate(client, settings)
    assert first == [m.label for m in discover()]
    assert migrate(client, settings) == []
    assert all(s.state == "applied" for s in status(client, settings))

    db = settings.clickhouse.database
    tables = {name: engine for name, engine in client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": db}
    ).result_rows}
    assert tables["latest_drift"] == tables["accuracy_over_time"] == "View"
    for table, columns in CONTRACT.items():
        assert tables[table] == "ReplacingMergeTree"
        described = client.query(
            "SELECT name, type, comment FROM system.columns"
            " WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": db, "t": table},
        ).result_rows
        names = {name for name, _, _ in described}
        assert set(columns.split()) <= names, (table, set(columns.split()) - names)
        assert all(comment for _, _, comment in described), f"{table}: a column lacks a COMMENT"
        assert all(t in ("DateTime64(3, 'UTC')", "Nullable(DateTime64(3, 'UTC'))")
                   for name, t, _ in described if "time" in name or name.endswith("_at")
                   or name in ("window_start", "window_end", "effective_from")), table
        sorting_key, comment = client.query(
            "SELECT sorting_key, comment FROM system.tables"
            " WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": db, "t": table},
        ).result_rows[0]
        assert sorting_key == SORTING_KEYS[table]
        assert comment


def test_ttl_comes_from_settings(client: Client, settings: Settings) -> None:
    custom = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
        update={"ttl_days": 7, "aggregate_ttl_days": 400})})
    migrate(client, custom)
    db = settings.clickhouse.database
    outcomes = client.command(f"SHOW CREATE TABLE `{db}`.outcomes")
    drift = client.command(f"SHOW CREATE TABLE `{db}`.drift_scores")
    assert "toIntervalDay(7)" in str(outcomes)
    assert "toIntervalDay(400)" in str(drift)


def test_longest_ttl_keeps_rows(client: Client, settings: Settings) -> None:
    """The largest TTL settings accept keeps today's rows through a merge; one past 2106 (as the
    settings refuse) would have dropped them at once: DateTime wraps around."""
    db = settings.clickhouse.database
    client.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    kept = {}
    for days in (MAX_TTL_DAYS, 36_500):
        table = f"`{db}`.ttl_{days}"
        client.command(f"CREATE TABLE {table} (t DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY t "
                       f"TTL toDateTime(t) + INTERVAL {days} DAY")
        client.command(f"INSERT INTO {table} VALUES (now64(3))")
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        kept[days] = client.command(f"SELECT count() FROM {table}")
    assert kept == {MAX_TTL_DAYS: 1, 36_500: 0}
    with pytest.raises(ValidationError, match="2106"):
        Settings(clickhouse={"ttl_days": 36_500})
    with pytest.raises(ValidationError, match="2106"):
        Settings(clickhouse={"aggregate_ttl_days": MAX_TTL_DAYS + 1})


def test_edited_migration_is_refused(client: Client, settings: Settings, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(discover()[0].path.parent, sql_dir)
    migrate(client, settings, sql_dir)
    (sql_dir / "999_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {database}.extra (run_id LowCardinality(String) COMMENT 'x')\n"
        "ENGINE = ReplacingMergeTree ORDER BY run_id COMMENT 'x';\n"
    )
    assert migrate(client, settings, sql_dir) == ["999_extra"]
    with (sql_dir / "003_outcomes.sql").open("a") as f:
        f.write("\n-- edited\n")
    with pytest.raises(MigrationError, match="003_outcomes"):
        migrate(client, settings, sql_dir)
    assert {s.name: s.state for s in status(client, settings, sql_dir)}["outcomes"] == "changed"


def test_bad_database_name_is_refused(settings: Settings) -> None:
    section = settings.clickhouse.model_copy(update={"database": "x; DROP"})
    bad = settings.model_copy(update={"clickhouse": section})
    with pytest.raises(StoreError, match="plain identifier"):
        connect(bad)


def _cli_env(settings: Settings, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DRIFTLINE_HOME=str(settings.home), DRIFTLINE_CLICKHOUSE_URL=url,
               DRIFTLINE_CLICKHOUSE_DATABASE=settings.clickhouse.database,
               DRIFTLINE_CLICKHOUSE_USERNAME=settings.clickhouse.username,
               DRIFTLINE_CLICKHOUSE_PASSWORD=settings.clickhouse.password.get_secret_value())
    return env


def test_migrate_from_two_sequential_processes(settings: Settings, worker_clickhouse_url: str) -> None:
    env = _cli_env(settings, worker_clickhouse_url)
    cmd = [sys.executable, "-m", "driftline.cli.main", "db"]
    first = subprocess.run([*cmd, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"applied {len(discover())} migration(s)" in first.stdout
    second = subprocess.run([*cmd, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stdout
    shown = subprocess.run([*cmd, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "pending" not in shown.stdout and "outcomes" in shown.stdout
