-- One row per prediction whose label joined within the horizon, for performance analysis
-- and as training data for retraining jobs.
CREATE TABLE IF NOT EXISTS {database}.outcomes
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'model that made the prediction',
    model_version LowCardinality(String) COMMENT 'model version that made the prediction',
    prediction_id String COMMENT 'id shared by the prediction and its label',
    segment LowCardinality(String) COMMENT 'canonical segment tags k=v;k=v (sorted keys); empty = no segment',
    prediction_time DateTime64(3, 'UTC') COMMENT 'event time of the prediction (UTC)',
    label_time DateTime64(3, 'UTC') COMMENT 'event time of the label (UTC)',
    label_delay_ms Int64 COMMENT 'label_time - prediction_time in milliseconds',
    predicted_label LowCardinality(String) COMMENT 'predicted class (classification); empty for regression',
    predicted_score Nullable(Float64) COMMENT 'score/probability of the predicted class; NULL if not sent',
    predicted_value Nullable(Float64) COMMENT 'predicted value (regression); NULL for classification',
    label LowCardinality(String) COMMENT 'true class (classification); empty for regression',
    label_value Nullable(Float64) COMMENT 'true value (regression); NULL for classification',
    correct Nullable(UInt8) COMMENT '1 if predicted_label = label, 0 if not; NULL for regression',
    abs_error Nullable(Float64) COMMENT '|predicted_value - label_value| (regression); NULL for classification',
    features String COMMENT 'the prediction''s features as a JSON object, for retraining jobs'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(prediction_time)
ORDER BY (run_id, model_id, model_version, prediction_id)
TTL toDateTime(prediction_time) + INTERVAL {ttl_days} DAY
COMMENT 'Joined prediction/label pairs, one row per prediction. Read with FINAL.';
