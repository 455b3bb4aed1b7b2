-- Every event the join did not turn into an outcome is a row with its id and reason, not only a
-- count in model_metrics: labels no prediction joined (or dropped at join.max_held_labels),
-- predictions that got no label within the horizon (or were dropped at join.max_pending), and exact
-- re-sends of an accepted prediction or label. Keyed by the event, so a replay or a re-send after a
-- crash collapses onto the same row.
CREATE TABLE IF NOT EXISTS {database}.unjoined_events
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    model_id LowCardinality(String) COMMENT 'model of the prediction; for a label, the model it names ('''' if none)',
    model_version LowCardinality(String) COMMENT 'version of the prediction; '''' for labels that joined no prediction',
    event_type LowCardinality(String) COMMENT '''prediction'' or ''label''',
    reason LowCardinality(String) COMMENT '''no_label'' (no label within join.label_horizon_s), ''evicted'' (prediction dropped at join.max_pending), ''no_prediction'' (label no prediction joined), ''held_label_evicted'' (label dropped at join.max_held_labels), ''exact_resend'' (byte-identical re-send of an accepted prediction or label)',
    prediction_id String COMMENT 'id the event carried',
    segment LowCardinality(String) COMMENT 'canonical segment tags k=v;k=v of the prediction; empty for labels and none',
    time DateTime64(3, 'UTC') COMMENT 'when the join gave the event up, in event time: prediction time + horizon (no_label, evicted), label time (no_prediction, held_label_evicted), the re-sent event''s own time (exact_resend)',
    metrics_time DateTime64(3, 'UTC') COMMENT 'end of the model_metrics interval that counts it (n_expired, n_evicted, n_orphan_labels, n_duplicate_*)',
    source_partition Int32 COMMENT 'labels and re-sends: Kafka partition of the record the join read (its event type''s topic, or the re-routing topic for a re-routed one); -1 for predictions given up',
    source_offset Int64 COMMENT 'Kafka offset of that record; -1 for predictions given up'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (run_id, model_id, model_version, event_type, reason, prediction_id, time, source_partition, source_offset)
TTL toDateTime(time) + INTERVAL {ttl_days} DAY
COMMENT 'Events the join did not turn into an outcome, one row per event with its reason. Read with FINAL.';
