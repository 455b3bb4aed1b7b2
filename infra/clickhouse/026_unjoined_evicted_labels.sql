-- A label of a prediction evicted at join.max_pending is an 'evicted' row too (it counts in
-- model_metrics.n_orphan_labels, not n_evicted); 023's comments named predictions only.
ALTER TABLE {database}.unjoined_events
    COMMENT COLUMN reason '''no_label'' (no label within join.label_horizon_s), ''evicted'' (prediction dropped at join.max_pending, or a label of such a prediction), ''no_prediction'' (label no prediction joined), ''held_label_evicted'' (label dropped at join.max_held_labels), ''exact_resend'' (byte-identical re-send of an accepted prediction or label)',
    COMMENT COLUMN time 'when the join gave the event up, in event time: prediction time + horizon (no_label, evicted), label time (no_prediction, held_label_evicted, an evicted prediction''s label), the re-sent event''s own time (exact_resend)';
