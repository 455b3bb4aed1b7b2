-- accuracy_over_time carries every failed join its label_coverage counts: the predictions the
-- join evicted at its max_pending bound (017) and the labels no prediction joined (016).
CREATE OR REPLACE VIEW {database}.accuracy_over_time AS
SELECT
    run_id,
    model_id,
    model_version,
    segment,
    time,
    interval_s,
    n_outcomes,
    n_expired,
    n_evicted,
    n_orphan_labels,
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
COMMENT 'Interval rows of model_metrics (no alarm rows), ordered in time, with the failed joins (n_expired, n_evicted, n_orphan_labels) label_coverage counts; filter run_id = '''' for the live pipeline.';
