-- Online performance metrics per event-time interval, and concept-drift detector alarms.
CREATE TABLE IF NOT EXISTS {database}.model_metrics
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    segment LowCardinality(String) COMMENT 'canonical segment tags k=v;k=v (sorted keys); empty = all traffic',
    row_kind LowCardinality(String) COMMENT '''interval'' (metrics at the end of an interval) or ''alarm'' (a detector alarm)',
    time DateTime64(3, 'UTC') COMMENT 'interval end, or the label time at which the alarm fired (UTC event time)',
    interval_s UInt32 COMMENT 'length of the metrics interval in seconds',
    n_outcomes UInt64 COMMENT 'labeled outcomes in this interval',
    n_outcomes_total UInt64 COMMENT 'labeled outcomes since the model version started',
    n_expired UInt64 COMMENT 'predictions whose label horizon passed without a label, in this interval',
    label_coverage Nullable(Float64) COMMENT 'n_outcomes / (n_outcomes + n_expired) in this interval',
    accuracy Nullable(Float64) COMMENT 'accuracy over this interval (classification)',
    accuracy_ew Nullable(Float64) COMMENT 'exponentially weighted (faded) running accuracy',
    mae Nullable(Float64) COMMENT 'mean absolute error over this interval (regression)',
    mae_ew Nullable(Float64) COMMENT 'exponentially weighted running MAE',
    rmse Nullable(Float64) COMMENT 'root mean squared error over this interval (regression)',
    rmse_ew Nullable(Float64) COMMENT 'exponentially weighted running RMSE',
    baseline Nullable(Float64) COMMENT 'reference value of the primary metric (from the reference profile)',
    label_delay_p50_ms Nullable(Float64) COMMENT 'median label delay in this interval, milliseconds',
    label_delay_p90_ms Nullable(Float64) COMMENT '90th percentile label delay, milliseconds',
    label_delay_p99_ms Nullable(Float64) COMMENT '99th percentile label delay, milliseconds',
    detector LowCardinality(String) COMMENT 'concept-drift detector, e.g. adwin',
    alarm UInt8 COMMENT '1 on alarm rows, or if the detector alarmed during the interval',
    alarms_total UInt64 COMMENT 'detector alarms since the model version started'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (run_id, model_id, model_version, segment, row_kind, time)
TTL toDateTime(time) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Online performance metrics per interval and concept-drift alarms. Read with FINAL.';
