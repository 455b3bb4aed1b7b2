-- Drift episodes (issue 12): a lasting shift of a feature (or of a classifier's error stream) is
-- one row, updated while the shift persists, instead of a stream of alarms. drift_alerts becomes
-- the log of the episodes' events (opened / escalated / closed): bounded by construction.
CREATE TABLE IF NOT EXISTS {database}.drift_episodes
(
    run_id LowCardinality(String) COMMENT 'run that produced the row; empty = live pipeline, else a replay/backtest id',
    episode_id String COMMENT 'deterministic id of the episode: hash of model, version, feature and the opening report',
    model_id LowCardinality(String) COMMENT 'monitored model',
    model_version LowCardinality(String) COMMENT 'monitored model version',
    feature LowCardinality(String) COMMENT 'feature that shifted; __error__ = the classifier''s error stream',
    feature_kind LowCardinality(String) COMMENT '''numeric'', ''categorical'' or ''binary'' (error stream)',
    source LowCardinality(String) COMMENT '''features'' (stage-1 shards watching predictions) or ''errors'' (outcomes, stage 2)',
    status LowCardinality(String) COMMENT '''open'' while the shift persists, ''closed'' once it ended',
    opened_at DateTime64(3, 'UTC') COMMENT 'event time of the value whose alarm opened the episode (label time for errors)',
    last_seen DateTime64(3, 'UTC') COMMENT 'event time up to which the episode is known to persist (latest shard report)',
    closed_at Nullable(DateTime64(3, 'UTC')) COMMENT 'event time at which it closed; NULL while open',
    close_reason LowCardinality(String) COMMENT '''back_to_reference'' (every shard back within the minimum effect), ''new_profile'' (a newer training profile applies); empty while open',
    events_seen UInt64 COMMENT 'values of the feature watched since the episode opened (summed over shards)',
    magnitude Float64 COMMENT 'current effect vs the training reference, in unit: mean of the open shards'' estimates weighted by their values seen',
    peak_magnitude Float64 COMMENT 'largest effect seen in the episode (same unit, signed as at the peak)',
    unit LowCardinality(String) COMMENT '''sd'' signed mean shift in reference standard deviations, ''psi'' for categorical features, ''rate_ratio'' error rate / reference error rate',
    escalations UInt32 COMMENT 'further changes inside the episode (larger by the minimum effect, or a reversal)',
    shards Array(UInt16) COMMENT 'stage-1 shards whose monitors joined the episode (the stage-2 shard for errors)',
    open_shards Array(UInt16) COMMENT 'shards whose own episode is still open',
    opened_component String COMMENT 'opening evidence: the CUSUM that fired, e.g. mean+0.28, scale*1.5',
    opened_statistic Float64 COMMENT 'opening evidence: CUSUM statistic at the alarm (nats)',
    opened_threshold Float64 COMMENT 'opening evidence: alarm threshold (nats)',
    opened_prediction_id String COMMENT 'prediction whose value raised the opening alarm',
    escalated_at Nullable(DateTime64(3, 'UTC')) COMMENT 'event time of the latest escalation; NULL if none',
    escalation_reason LowCardinality(String) COMMENT '''larger'' or ''reversal''; empty if no escalation',
    escalated_component String COMMENT 'latest escalation evidence: the CUSUM that fired; empty if none',
    escalated_statistic Nullable(Float64) COMMENT 'latest escalation evidence: CUSUM statistic (nats); NULL if none',
    escalated_threshold Nullable(Float64) COMMENT 'latest escalation evidence: alarm threshold (nats); NULL if none',
    arl Float64 COMMENT 'configured mean run length between false alarms of each shard''s monitor (values)',
    reference_id LowCardinality(String) COMMENT 'training profile id; for errors ''baseline'' or ''warmup'' (how the reference error rate was set)',
    config_hash LowCardinality(String) COMMENT 'hash of the settings that shape results',
    version UInt64 COMMENT 'row version: end (ms) of the event-time grid bucket the row describes; FINAL keeps the latest'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (run_id, model_id, model_version, episode_id)
TTL toDateTime(opened_at) + INTERVAL {aggregate_ttl_days} DAY
COMMENT 'Drift episodes of the sequential detectors, one row per episode (drift_episodes). Read with FINAL.';

ALTER TABLE {database}.drift_alerts
    ADD COLUMN IF NOT EXISTS episode_id String DEFAULT '' COMMENT 'episode the event belongs to (drift_episodes.episode_id)',
    ADD COLUMN IF NOT EXISTS event_kind LowCardinality(String) DEFAULT '' COMMENT '''opened'', ''escalated'' or ''closed''; empty on rows from before episodes',
    ADD COLUMN IF NOT EXISTS reason LowCardinality(String) DEFAULT '' COMMENT 'opened: alarm; escalated: larger | reversal; closed: back_to_reference | new_profile',
    ADD COLUMN IF NOT EXISTS magnitude Nullable(Float64) COMMENT 'effect vs the training reference at the event, in unit',
    ADD COLUMN IF NOT EXISTS unit LowCardinality(String) DEFAULT '' COMMENT 'sd | psi | rate_ratio, as in drift_episodes';
