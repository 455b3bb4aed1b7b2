CREATE VIEW IF NOT EXISTS {database}.latest_drift AS
SELECT *
FROM {database}.drift_scores FINAL
WHERE run_id = ''
ORDER BY window_start DESC
LIMIT 1 BY model_id, model_version, window_size_s, segment, feature
COMMENT 'Live pipeline only: the latest drift_scores row per model, version, window size, segment and feature.';
