-- A pending prediction the join dropped at its join.max_pending bound will never get a label: it
-- is counted per interval and segment (at prediction time + horizon, where it would have expired)
-- beside the expired ones, and label_coverage counts it as a failed join.
ALTER TABLE {database}.model_metrics
    ADD COLUMN IF NOT EXISTS n_evicted UInt64 DEFAULT 0 COMMENT 'predictions the join evicted at its join.max_pending bound (oldest pending first) before a label came, counted at prediction time + horizon in this interval; they will never get an outcome' AFTER n_expired,
    COMMENT COLUMN label_coverage 'n_outcomes / (n_outcomes + n_expired + n_evicted + n_orphan_labels) in this interval: every failed join counts against it';
