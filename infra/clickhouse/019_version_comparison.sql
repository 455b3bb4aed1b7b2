-- Champion/challenger comparison of model versions (issue 16): per outcome interval (the label
-- clock) and segment, each version's accuracy or MAE, their difference with a 95 % interval, and
-- the state of the pair's always-valid sequential test. Keyed like model_metrics interval rows, so
-- a replay or a re-send after a crash collapses onto the same row.
CREATE TABLE IF NOT EXISTS {database}.version_comparison
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'monitored model',
    champion_version LowCardinality(String) COMMENT 'version serving today (the comparison''s baseline)',
    challenger_version LowCardinality(String) COMMENT 'version that may replace it',
    segment LowCardinality(String) COMMENT 'canonical segment tag k=v; empty = all traffic',
    time DateTime64(3, 'UTC') COMMENT 'end of the outcome interval (UTC event time of the labels)',
    interval_s UInt32 COMMENT 'length of the outcome interval in seconds (windows.metrics_interval_s)',
    mode LowCardinality(String) COMMENT '''shadow'' (both versions score the same requests) or ''canary'' (split traffic)',
    paired UInt8 COMMENT '1 if outcomes were paired by request id (shadow with comparison.request_separator), 0 = two independent samples',
    metric LowCardinality(String) COMMENT '''accuracy'' (classifier) or ''mae'' (regressor)',
    n_champion UInt64 COMMENT 'champion outcomes in this interval (paired: requests both versions have an outcome for)',
    n_challenger UInt64 COMMENT 'challenger outcomes in this interval (paired: as n_champion)',
    n_unpaired UInt64 COMMENT 'paired only: requests in this interval with an outcome of one version only (left out)',
    champion_value Nullable(Float64) COMMENT 'champion accuracy or MAE in this interval',
    challenger_value Nullable(Float64) COMMENT 'challenger accuracy or MAE in this interval',
    difference Nullable(Float64) COMMENT 'how much better the challenger is in this interval: accuracy(challenger) - accuracy(champion), or MAE(champion) - MAE(challenger); positive = challenger better',
    difference_low Nullable(Float64) COMMENT 'lower end of the 95 % confidence interval of difference (paired or Welch normal interval)',
    difference_high Nullable(Float64) COMMENT 'upper end of the 95 % confidence interval of difference',
    n_tested UInt64 COMMENT 'outcomes per version the sequential test has seen since the comparison began or last decided (the smaller arm)',
    cumulative_difference Nullable(Float64) COMMENT 'difference over everything the test has seen (same sign convention)',
    likelihood_ratio Nullable(Float64) COMMENT 'mixture likelihood ratio of the sequential test (mSPRT) now; decides at 1 / comparison.alpha',
    p_value Float64 COMMENT 'always-valid p-value of no difference: min(1, 1 / largest likelihood ratio so far)',
    decision LowCardinality(String) COMMENT 'latest decision: ''challenger_better'', ''challenger_worse'' or empty (none yet); after a decision the test starts afresh, a reversal is a new decision',
    decided_now UInt8 COMMENT '1 on the interval where a new decision (a first one, or a reversal) was reached',
    decided_at Nullable(DateTime64(3, 'UTC')) COMMENT 'end of the interval where the latest decision was reached; NULL while undecided'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (run_id, model_id, champion_version, challenger_version, segment, time)
TTL toDateTime(time) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Champion/challenger comparison per outcome interval and segment. Read with FINAL.';
