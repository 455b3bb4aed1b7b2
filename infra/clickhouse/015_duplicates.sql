-- Duplicates are visible: exact re-sends of a prediction or label (at-least-once producers) are
-- counted per model and interval on rows of row_kind 'duplicates' (conflicting ones, same id with
-- other content, are dead letters with error_kind 'conflicting_duplicate').
ALTER TABLE {database}.model_metrics
    ADD COLUMN IF NOT EXISTS n_duplicate_predictions UInt64 DEFAULT 0 COMMENT 'row_kind ''duplicates'': exact re-sends of an accepted prediction (same id within its label horizon, byte-identical value) with an event time in this interval; 0 on other rows',
    ADD COLUMN IF NOT EXISTS n_duplicate_labels UInt64 DEFAULT 0 COMMENT 'row_kind ''duplicates'': exact re-sends of the label that joined a prediction (byte-identical value) with a label time in this interval; 0 on other rows',
    COMMENT COLUMN row_kind '''interval'' (metrics at the end of an interval), ''alarm'' (a detector alarm) or ''duplicates'' (exact re-sends counted in the interval ending at time; written only for intervals that had any)';
