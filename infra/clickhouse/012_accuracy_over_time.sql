CREATE VIEW IF NOT EXISTS {database}.accuracy_over_time AS
SELECT
    run_id,
    model_id,
    model_version,
    segment,
    time,
    interval_s,
    n_outcomes,
    n_expired,
    label_coverage,
    accuracy,
    accuracy_ew,
    mae,
    mae_ew,
    rmse,
    rmse_ew,
    baseline,
    alarm,
    alarms_total
FROM {database}.model_metrics FINAL
WHERE row_kind = 'interval'
ORDER BY run_id, model_id, model_version, segment, time
COMMENT 'Interval rows of model_metrics (no alarm rows), ordered in time; filter run_id = '''' for the live pipeline.';
