-- Drift statistics of every feature per window against the reference profile, with the verdict.
CREATE TABLE IF NOT EXISTS {database}.drift_scores
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
    count UInt64 COMMENT 'valid values in the window the statistics were computed on',
    psi Nullable(Float64) COMMENT 'population stability index over the reference bins',
    ks_stat Nullable(Float64) COMMENT 'two-sample Kolmogorov-Smirnov statistic (numeric features)',
    ks_pvalue Nullable(Float64) COMMENT 'p-value of the KS test',
    ks_pvalue_adj Nullable(Float64) COMMENT 'KS p-value adjusted by Benjamini-Hochberg across the model''s features',
    js_distance Nullable(Float64) COMMENT 'Jensen-Shannon distance (0..1) between window and reference bin shares',
    wasserstein Nullable(Float64) COMMENT 'Wasserstein-1 distance (numeric features, in feature units)',
    chi2_stat Nullable(Float64) COMMENT 'chi-squared statistic (categorical features)',
    chi2_pvalue Nullable(Float64) COMMENT 'p-value of the chi-squared test',
    chi2_pvalue_adj Nullable(Float64) COMMENT 'chi-squared p-value adjusted by Benjamini-Hochberg across the model''s features',
    drifted UInt8 COMMENT '1 if the feature is judged drifted in this window',
    drifted_by Array(String) COMMENT 'tests that fired, e.g. [''psi'',''ks'']; empty if not drifted',
    reference_id LowCardinality(String) COMMENT 'reference profile compared against (reference_profiles.profile_id)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results (thresholds, windows, ...)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, feature, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window, per-feature drift statistics and verdicts. NULL = test not applicable or too few values. Read with FINAL.';
