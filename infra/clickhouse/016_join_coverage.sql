-- Joins that failed are rows, not only counters: labels no prediction joined are counted per model
-- and interval beside the expired predictions, and label_coverage counts both. The share of
-- outcomes that reached their join through driftline.repartition is reported per interval.
ALTER TABLE {database}.model_metrics
    ADD COLUMN IF NOT EXISTS n_orphan_labels UInt64 DEFAULT 0 COMMENT 'labels with a label time in this interval that no prediction joined within the horizon (or that were dropped at the held-label bound); attributed to the model_id the label names ('''' if none), with model_version '''' and segment ''''' AFTER n_expired,
    ADD COLUMN IF NOT EXISTS n_rerouted UInt64 DEFAULT 0 COMMENT 'outcomes of this interval whose prediction or label was produced to another partition than murmur2(prediction_id) and re-routed through driftline.repartition' AFTER n_orphan_labels,
    ADD COLUMN IF NOT EXISTS rerouted_share Nullable(Float64) COMMENT 'n_rerouted / n_outcomes; NULL without outcomes' AFTER n_rerouted,
    COMMENT COLUMN label_coverage 'n_outcomes / (n_outcomes + n_expired + n_orphan_labels) in this interval: every failed join counts against it';

ALTER TABLE {database}.outcomes
    COMMENT COLUMN label 'true class (classification, as text: true/false, 1, cat); empty for regression',
    COMMENT COLUMN label_value 'true value (regression); NULL for classification, also for numeric or boolean classes';
