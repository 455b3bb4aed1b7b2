-- Events that arrived behind their partition's event-time watermark and were excluded.
CREATE TABLE IF NOT EXISTS {database}.late_events
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    source_topic LowCardinality(String) COMMENT 'Kafka topic the event was read from',
    source_partition Int32 COMMENT 'Kafka partition of the event',
    source_offset Int64 COMMENT 'Kafka offset of the event',
    event_type LowCardinality(String) COMMENT '''prediction'' or ''label''',
    prediction_id String COMMENT 'id of the prediction the event belongs to',
    model_id LowCardinality(String) COMMENT 'model of the event',
    model_version LowCardinality(String) COMMENT 'model version of the event; empty if a label carries none',
    event_time DateTime64(3, 'UTC') COMMENT 'event timestamp carried by the event (UTC)',
    watermark_time DateTime64(3, 'UTC') COMMENT 'partition watermark the event fell behind (UTC)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (run_id, source_topic, source_partition, source_offset)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
COMMENT 'Late events excluded from windows and joins (event time < partition watermark). Read with FINAL.';
