-- Multivariate drift, outlier rate and performance estimated before labels (issue 16 parts 1-3):
-- one row per overall window (segment '') of a model whose training profile has a multivariate
-- section. Keyed like model_drift, so rows re-sent after a crash collapse.
CREATE TABLE IF NOT EXISTS {database}.multivariate_drift
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    window_size_s UInt32 COMMENT 'tumbling window size in seconds',
    segment LowCardinality(String) COMMENT 'always empty: all traffic',
    window_start DateTime64(3, 'UTC') COMMENT 'window start, inclusive (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'window end, exclusive (UTC event time)',
    n_events UInt64 COMMENT 'predictions of the window scored against the multivariate reference',
    mean_error Nullable(Float64) COMMENT 'mean PCA reconstruction error of the window''s events (normal scores)',
    reference_mean_error Nullable(Float64) COMMENT 'mean reconstruction error of the reference''s rows',
    share_above_p99 Nullable(Float64) COMMENT 'share of events whose error exceeds the reference''s 99 % error quantile (0.01 expected)',
    n_sample UInt32 COMMENT 'window rows given to the domain classifier (bottom-k by prediction id hash); 0 = it did not run',
    auc Nullable(Float64) COMMENT 'domain classifier cross-validated ROC-AUC, window sample vs reference sample (0.5 = alike); NULL = not run',
    auc_threshold Nullable(Float64) COMMENT 'AUC at or above which the window drifts (calibrated null, alpha 0.001 per window)',
    drifted UInt8 COMMENT '1 if auc >= auc_threshold',
    top_features Array(String) COMMENT 'features separating window and reference most (permutation importance), most first',
    top_importances Array(Float64) COMMENT 'their mean AUC drop when shuffled, same order',
    reference_id LowCardinality(String) COMMENT 'reference profile compared against (reference_profiles.profile_id)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window multivariate drift: reconstruction error and domain classifier. Read with FINAL.';

CREATE TABLE IF NOT EXISTS {database}.outlier_rate
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    window_size_s UInt32 COMMENT 'tumbling window size in seconds',
    segment LowCardinality(String) COMMENT 'always empty: all traffic',
    window_start DateTime64(3, 'UTC') COMMENT 'window start, inclusive (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'window end, exclusive (UTC event time)',
    n_events UInt64 COMMENT 'predictions of the window scored against the multivariate reference',
    outliers UInt64 COMMENT 'events whose robust Mahalanobis distance exceeds the reference''s 99.9 % quantile',
    rate Nullable(Float64) COMMENT 'outliers / n_events',
    expected_rate Float64 COMMENT 'the rate expected without drift (0.001)',
    p_value Nullable(Float64) COMMENT 'exact one-sided binomial p-value of at least this many outliers',
    significant UInt8 COMMENT '1 if p_value < 0.001',
    reference_id LowCardinality(String) COMMENT 'reference profile compared against (reference_profiles.profile_id)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window share of outliers against the reference. Read with FINAL.';

CREATE TABLE IF NOT EXISTS {database}.estimated_performance
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model (a binary classifier sending scores)',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    window_size_s UInt32 COMMENT 'tumbling window size in seconds',
    segment LowCardinality(String) COMMENT 'always empty: all traffic',
    window_start DateTime64(3, 'UTC') COMMENT 'window start, inclusive (UTC event time)',
    window_end DateTime64(3, 'UTC') COMMENT 'window end, exclusive (UTC event time)',
    n_scored UInt64 COMMENT 'predictions of the window that carried a score',
    accuracy Nullable(Float64) COMMENT 'CBPE estimated accuracy from the calibrated scores (no labels)',
    accuracy_sd Nullable(Float64) COMMENT 'Poisson-binomial sd of the realized accuracy around the estimate',
    accuracy_low Nullable(Float64) COMMENT 'accuracy - 1.96 sd',
    accuracy_high Nullable(Float64) COMMENT 'accuracy + 1.96 sd',
    f1 Nullable(Float64) COMMENT 'estimated F1 of the positive class, from expected confusion counts',
    roc_auc Nullable(Float64) COMMENT 'estimated ROC-AUC: expected share of (positive, negative) pairs the score orders right, from event counts per calibration segment; NULL = no pair',
    reference_id LowCardinality(String) COMMENT 'reference profile whose calibration was used',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (run_id, model_id, model_version, window_size_s, segment, window_start)
TTL toDateTime(window_start) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Per-window performance estimated before labels (CBPE). Read with FINAL.';

CREATE VIEW IF NOT EXISTS {database}.estimated_vs_realized AS
SELECT
    e.run_id AS run_id,
    e.model_id AS model_id,
    e.model_version AS model_version,
    e.window_size_s AS window_size_s,
    e.window_start AS window_start,
    e.window_end AS window_end,
    e.n_scored AS n_scored,
    e.accuracy AS estimated_accuracy,
    e.accuracy_low AS estimated_low,
    e.accuracy_high AS estimated_high,
    r.n_labeled AS n_labeled,
    r.realized_accuracy AS realized_accuracy
FROM {database}.estimated_performance AS e FINAL
LEFT JOIN
(
    SELECT
        o.run_id AS run_id,
        o.model_id AS model_id,
        o.model_version AS model_version,
        s.window_size_s AS window_size_s,
        toDateTime64(intDiv(toUnixTimestamp64Milli(o.prediction_time), s.window_size_s * 1000) * s.window_size_s, 3, 'UTC') AS window_start,
        count() AS n_labeled,
        avg(o.correct) AS realized_accuracy
    FROM {database}.outcomes AS o FINAL
    INNER JOIN
    (
        SELECT DISTINCT run_id, model_id, model_version, window_size_s
        FROM {database}.estimated_performance
    ) AS s ON o.run_id = s.run_id AND o.model_id = s.model_id AND o.model_version = s.model_version
    WHERE o.correct IS NOT NULL
    GROUP BY run_id, model_id, model_version, window_size_s, window_start
) AS r ON e.run_id = r.run_id AND e.model_id = r.model_id AND e.model_version = r.model_version
    AND e.window_size_s = r.window_size_s AND e.window_start = r.window_start
ORDER BY run_id, model_id, model_version, window_size_s, window_start
COMMENT 'estimated_performance beside the accuracy realized by the labels that arrived so far, per window.';
