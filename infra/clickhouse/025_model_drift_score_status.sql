-- Why a model_drift row's window has no distribution statistics: a window of fewer events than
-- drift.min_count cannot test any feature, so its PSI, KS, JS, Wasserstein and chi-square are not
-- computed (its drift_scores rows keep count, NULL statistics, drifted 0).
ALTER TABLE {database}.model_drift
    ADD COLUMN IF NOT EXISTS score_status LowCardinality(String) DEFAULT '' COMMENT 'how the window was scored: ''scored'' (drift statistics of every feature), ''under_filled'' (fewer events than drift.min_count: counts and verdicts only, the drift_scores statistics are NULL); empty on rows from before this column' AFTER drifted_features;
