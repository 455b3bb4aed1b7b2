-- Alarms of the sequential (per-event) detectors: feature CUSUM banks in stage 1, the error-stream
-- detector in stage 2. One row per alarm; a detector restarts after each alarm.
CREATE TABLE IF NOT EXISTS {database}.drift_alerts
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    alert_id String COMMENT 'deterministic id of the alarm (same after a restart or a replay of the same log)',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    feature LowCardinality(String) COMMENT 'feature watched; __error__ = the classifier''s error stream',
    feature_kind LowCardinality(String) COMMENT '''numeric'', ''categorical'' or ''binary'' (error stream)',
    source LowCardinality(String) COMMENT '''features'' (stage-1 shard watching predictions) or ''errors'' (outcomes)',
    shard UInt16 COMMENT 'stage-1 shard (predictions partition) or stage-2 shard that watched the stream',
    component String COMMENT 'which CUSUM of the detector bank fired, e.g. mean+0.28, scale*1.5, category ''red'' x2',
    event_time DateTime64(3, 'UTC') COMMENT 'event time of the observation that raised the alarm (label time for errors)',
    prediction_id String COMMENT 'prediction whose value raised the alarm',
    observation_index UInt64 COMMENT '0-based position of that value among the values the detector watched',
    statistic Float64 COMMENT 'CUSUM statistic at the alarm (log-likelihood ratio, nats)',
    threshold Float64 COMMENT 'alarm threshold (nats), calibrated against the reference for the run length arl',
    arl Float64 COMMENT 'configured mean run length between false alarms of this detector (observations)',
    reference_id LowCardinality(String) COMMENT 'reference profile id; for errors ''baseline'' or ''warmup'' (how the reference error rate was set)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (run_id, model_id, model_version, alert_id)
TTL toDateTime(event_time) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Sequential drift detector alarms (drift_alerts). Read with FINAL.';
