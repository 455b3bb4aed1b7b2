-- Per-window distribution summary of every monitored feature (and of the prediction and latency).
CREATE TABLE IF NOT EXISTS {database}.feature_windows
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    window_size_s UInt32 COMMENT 'tumbling window size in seconds',
    segment LowCardinality(String) COMMENT 'canonical segment tags k=v;k=v (sorted keys); empty = all traffic',
    feature LowCardinality(String) COMMENT 'feature name (the prediction and the latency are monitored as features too, see feature_kind)',
    window_start DateTime64(3, 'UTC') COMMENT 'window start, inclusive (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'window end, exclusive (UTC event time)',
    feature_kind LowCardinality(String) COMMENT '''numeric'', ''categorical'', ''prediction'' or ''latency''',
    count UInt64 COMMENT 'events in the window with a valid value',
    missing UInt64 COMMENT 'events in the window without the feature (absent or null)',
    invalid UInt64 COMMENT 'numeric values that were NaN or infinite',
    out_of_range UInt64 COMMENT 'values outside the reference profile''s range',
    mean Nullable(Float64) COMMENT 'mean of valid values; NULL for categorical features or empty windows',
    variance Nullable(Float64) COMMENT 'variance of valid values; NULL if not numeric or empty',
    min Nullable(Float64) COMMENT 'smallest valid value; NULL if not numeric or empty',
    max Nullable(Float64) COMMENT 'largest valid value; NULL if not numeric or empty',
    p50 Nullable(Float64) COMMENT 'median estimated from the window sketch; NULL if not numeric or empty',
    p90 Nullable(Float64) COMMENT '90th percentile estimated from the window sketch; NULL if not numeric or empty',
    p99 Nullable(Float64) COMMENT '99th percentile estimated from the window sketch; NULL if not numeric or empty',
    bin_edges Array(Float64) COMMENT 'reference bin edges of a numeric feature; empty for categorical features',
    bin_labels Array(String) COMMENT 'label of each reference bin (an interval, or a category, or ''other'')',
    histogram Array(Float64) COMMENT 'share of the window''s values in each reference bin (sums to 1)',
    reference_histogram Array(Float64) COMMENT 'share of the reference profile''s values in each bin',
    reference_id LowCardinality(String) COMMENT 'reference profile the window was compared against (reference_profiles.profile_id)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, feature, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window feature distribution summaries against the reference bins. Read with FINAL.';
