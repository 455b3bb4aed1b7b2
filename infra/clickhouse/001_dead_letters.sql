-- Records the pipeline could not decode or validate, one row per source record.
-- Key = the record's position in its source topic, so a replayed record lands on the same row.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    source_topic LowCardinality(String) COMMENT 'Kafka topic the record was read from',
    source_partition Int32 COMMENT 'Kafka partition of the record',
    source_offset Int64 COMMENT 'Kafka offset of the record',
    source_timestamp DateTime64(3, 'UTC') COMMENT 'Kafka record timestamp (UTC)',
    error_kind LowCardinality(String) COMMENT 'machine-readable failure class, e.g. decode, schema, too_large, timestamp_skew',
    error_message String COMMENT 'human-readable reason the record was rejected',
    payload String COMMENT 'first 64 KiB of the raw record value',
    payload_size UInt64 COMMENT 'full size of the raw record value in bytes',
    model_id LowCardinality(String) COMMENT 'model the record claimed to belong to; empty if unknown'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(source_timestamp)
ORDER BY (run_id, source_topic, source_partition, source_offset)
TTL toDateTime(source_timestamp) + INTERVAL {ttl_days} DAY
COMMENT 'Rejected input records (undecodable or invalid), one row per source record. Read with FINAL.';
