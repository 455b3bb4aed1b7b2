-- Status of retrain job attempts; every status change re-inserts the row with a newer updated_at.
CREATE TABLE IF NOT EXISTS {database}.retrain_jobs
(
    run_id LowCardinality(String) COMMENT 'run of the trigger; empty = live pipeline',
    trigger_id String COMMENT 'trigger the job runs for (retrain_triggers.trigger_id)',
    attempt UInt32 COMMENT 'attempt number, from 1',
    model_id LowCardinality(String) COMMENT 'model being retrained',
    model_version LowCardinality(String) COMMENT 'model version that triggered',
    status LowCardinality(String) COMMENT '''queued'', ''started'', ''succeeded'' or ''failed''',
    started_at Nullable(DateTime64(3, 'UTC')) COMMENT 'wall-clock start of the attempt (UTC); NULL while queued',
    finished_at Nullable(DateTime64(3, 'UTC')) COMMENT 'wall-clock end of the attempt (UTC); NULL until finished',
    duration_s Nullable(Float64) COMMENT 'run time in seconds; NULL until finished',
    exit_code Nullable(Int32) COMMENT 'process exit code; NULL until finished or for in-process jobs',
    log_path String COMMENT 'file with the job''s output',
    message String COMMENT 'last status detail, e.g. the error of a failed attempt',
    updated_at DateTime64(3, 'UTC') COMMENT 'wall-clock time of this status (UTC); the newest row wins'
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (trigger_id, attempt)
TTL toDateTime(updated_at) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Retrain job attempts and their latest status (version column updated_at). Read with FINAL.';
