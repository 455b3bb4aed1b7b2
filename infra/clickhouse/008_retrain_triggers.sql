-- Decisions of the retrain policy.
CREATE TABLE IF NOT EXISTS {database}.retrain_triggers
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'model to retrain',
    model_version LowCardinality(String) COMMENT 'model version that triggered',
    trigger_id String COMMENT 'deterministic id of the trigger (same input, same id)',
    reason LowCardinality(String) COMMENT 'policy rule that fired, e.g. data_drift, performance_drop, concept_drift, manual',
    message String COMMENT 'human-readable explanation',
    window_start DateTime64(3, 'UTC') COMMENT 'start of the evidence period (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'end of the evidence period (UTC event time)',
    triggered_at DateTime64(3, 'UTC') COMMENT 'event time at which the policy fired (UTC)',
    evidence String COMMENT 'JSON object with the windows, metrics and thresholds behind the decision',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results (thresholds, windows, ...)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (run_id, model_id, model_version, trigger_id)
TTL toDateTime(triggered_at) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Retrain triggers emitted by the policy. Read with FINAL.';
