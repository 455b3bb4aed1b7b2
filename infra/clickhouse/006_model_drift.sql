-- The model-level verdict per window: how many features drifted.
CREATE TABLE IF NOT EXISTS {database}.model_drift
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    window_size_s UInt32 COMMENT 'tumbling window size in seconds',
    segment LowCardinality(String) COMMENT 'canonical segment tags k=v;k=v (sorted keys); empty = all traffic',
    window_start DateTime64(3, 'UTC') COMMENT 'window start, inclusive (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'window end, exclusive (UTC event time)',
    n_events UInt64 COMMENT 'predictions in the window',
    n_features UInt32 COMMENT 'features scored in the window',
    n_drifted UInt32 COMMENT 'features judged drifted in the window',
    drifted UInt8 COMMENT '1 if at least drift.min_drifted_features features drifted',
    drifted_features Array(String) COMMENT 'names of the drifted features',
    reference_id LowCardinality(String) COMMENT 'reference profile compared against (reference_profiles.profile_id)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results (thresholds, windows, ...)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window model-level drift verdicts. Read with FINAL.';
