-- Reference distributions drift is measured against (no TTL: old profiles explain old scores).
CREATE TABLE IF NOT EXISTS {database}.reference_profiles
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline',
    model_id LowCardinality(String) COMMENT 'model the profile describes',
    model_version LowCardinality(String) COMMENT 'model version the profile describes',
    profile_id String COMMENT 'deterministic id of the profile (referenced as reference_id elsewhere)',
    created_at DateTime64(3, 'UTC') COMMENT 'when the profile was built (UTC)',
    effective_from DateTime64(3, 'UTC') COMMENT 'event time from which windows use this profile (UTC)',
    source LowCardinality(String) COMMENT '''training'' (built from training data) or ''first_window'' (from live traffic)',
    profile String COMMENT 'the profile as JSON: per feature kind, bin edges/categories, shares, stats'
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, model_id, model_version, profile_id)
COMMENT 'Reference profiles per model version. Read with FINAL.';
