"""One typed settings object for every driftline process.

Sources, highest precedence first: explicit keyword arguments, ``DRIFTLINE_*`` environment
variables (``DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS``, ``DRIFTLINE_CLICKHOUSE_URL``, ...: section and
field joined by one underscore), a TOML config file (``--config`` or ``DRIFTLINE_CONFIG``), then
the defaults below.

>>> s = Settings(kafka={"sasl_password": "hunter2"})
>>> "hunter2" in repr(s)
False
>>> s.topics.predictions
'driftline.predictions'
"""

from __future__ import annotations

import difflib
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "DRIFTLINE_"
CONFIG_FILE_ENV = "DRIFTLINE_CONFIG"
RESULT_SECTIONS = ("windows", "join", "drift", "sequential", "multivariate", "performance", "triggers",
                   "comparison")
"""The sections whose values change results (hashed into ``config_hash``)."""
RESULT_NEUTRAL: dict[str, set[str]] = {"join": {"memory_budget_mb", "spill_dir"}}
"""Fields of those sections that change where state lives, never results (not hashed)."""


# The values of driftline.schemas.events.TriggerReason (config does not import the wire schemas).
TriggerReasonName = Literal["drift", "performance", "concept_drift", "manual", "comparison"]


MAX_TTL_DAYS = 25_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaSettings(_Section):
    """Connection to Kafka; option names follow the Kafka client vocabulary."""

    bootstrap_servers: str = Field(
        "", description="host:port[,host:port]; empty = the embedded broker from `driftline local up`"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_*)"
    )
    sasl_username: str | None = Field(None, description="SASL username")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signed the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    ssl_password: SecretStr | None = Field(None, description="password of the client private key")
    client_id: str = Field("driftline", description="client.id of every Kafka client")
    group_prefix: str = Field(
        "driftline", pattern=r"^[A-Za-z0-9._-]+$",
        description=(
            "consumer groups are <prefix>-shard, -model, -sink and -retrain-listener: one prefix per "
            "deployment sharing a cluster, and one prefixed group ACL covers them"
        ),
    )
    # Short group timeouts: the embedded broker holds every JoinGroup for half the session timeout.
    session_timeout_ms: int = Field(6000, ge=1000, description="consumer group session timeout")
    heartbeat_interval_ms: int = Field(1000, ge=100, description="consumer group heartbeat interval")
    rebalance_timeout_ms: int = Field(6000, ge=1000, description="consumer group rebalance timeout")
    max_message_bytes: int = Field(1_048_576, ge=1024, description="larger payloads are dead-lettered")
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed",
        description=(
            "what every consumer reads of topics written in transactions: read_committed skips the "
            "records of aborted transactions and reads a partition up to its last stable offset (an "
            "open transaction holds it until it ends); read_uncommitted reads every record written"
        ),
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_mechanism:
                raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("sasl_username and sasl_password are required for SASL")
        return self


class TopicSettings(_Section):
    predictions: str = Field(
        "driftline.predictions", description="prediction events in (key = prediction_id)"
    )
    labels: str = Field("driftline.labels", description="label events in (key = prediction_id)")
    outcomes: str = Field("driftline.outcomes", description="joined prediction + label out")
    dead_letters: str = Field("driftline.dead-letters", description="rejected inputs with reasons")
    retrain_triggers: str = Field(
        "driftline.retrain-triggers", description="retrain triggers (key = model_id)"
    )
    retrain_status: str = Field("driftline.retrain-status", description="retrain job status events")
    profiles: str = Field("driftline.profiles", description="compacted: latest reference profile per model")
    model_events: str = Field("driftline.model-events", description="internal: shard partials -> model stage")
    sink: str = Field("driftline.sink", description="internal: rows for the ClickHouse sink")
    state: str = Field("driftline.worker-state", description="internal: operator checkpoints")
    repartition: str = Field(
        "driftline.repartition",
        description="internal: predictions/labels re-keyed to the shard that joins them (P partitions)",
    )
    partitions: int = Field(
        4, ge=1, le=1024, description="partitions of predictions and labels (co-partitioned)"
    )
    model_events_partitions: int = Field(
        2, ge=1, le=1024, description="partitions of the internal model-events topic"
    )
    replication_factor: int = Field(1, ge=1, description="replication factor of topics driftline creates")

    @classmethod
    def topic_fields(cls) -> tuple[str, ...]:
        """Names of the fields that are topic names (not partition counts).

        >>> TopicSettings.topic_fields()[:2]
        ('predictions', 'labels')
        """
        return tuple(name for name, f in cls.model_fields.items() if f.annotation is str)


class ClickHouseSettings(_Section):
    url: str = Field(
        "", description="chdb:///abs/path, chdb://memory, or http(s)://host:port; empty = embedded"
    )
    username: str = Field("default", description="ClickHouse user (server)")
    password: SecretStr = Field(SecretStr(""), description="ClickHouse password (never logged)")
    database: str = Field("driftline", description="database holding driftline's tables")
    ttl_days: int = Field(180, ge=1, description="TTL of per-event tables (outcomes, dead_letters)")
    aggregate_ttl_days: int = Field(730, ge=1, description="TTL of aggregate tables")

    @field_validator("ttl_days", "aggregate_ttl_days")
    @classmethod
    def _ttl_within_datetime(cls, v: int) -> int:
        # TTLs are computed in DateTime, which ends in February 2106: a TTL past it wraps around
        # into the past and ClickHouse drops every row at the next merge.
        if v > MAX_TTL_DAYS:
            raise ValueError(f"at most {MAX_TTL_DAYS} days (~68 years): a TTL past 2106 (the end of "
                             "ClickHouse's DateTime) wraps into the past and would expire every row at once")
        return v
    cluster: str = Field(
        "",
        pattern=r"^[\w.-]*$",
        description="ClickHouse cluster (remote_servers) the migrations run ON CLUSTER on (db migrate and "
        "the sink at start; docs/scaling.md); empty = one server",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("chdb", "http", "https"):
            raise ValueError("must be a chdb://, http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _lift_password(self) -> ClickHouseSettings:
        # A password embedded in the URL moves into the secret field so that it never shows in reprs.
        parts = urlsplit(self.url)
        if parts.password:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            object.__setattr__(self, "password", SecretStr(parts.password))
            if parts.username:
                object.__setattr__(self, "username", parts.username)
            object.__setattr__(self, "url", urlunsplit((parts.scheme, host, parts.path, parts.query, "")))
        return self

    @property
    def embedded(self) -> bool:
        return not self.url or self.url.startswith("chdb://")


class WindowSettings(_Section):
    sizes_s: list[int] = Field([300, 3600], description="tumbling window sizes in seconds, computed at once")
    allowed_lateness_s: int = Field(
        60, ge=0, description="events older than the partition's max event time minus this are late"
    )
    metrics_interval_s: int = Field(300, ge=1, description="event-time interval of model_metrics rows")
    segment_keys: list[str] = Field([], description="segment tags that get their own windows, e.g. region")
    max_timestamp_skew_s: int = Field(
        30 * 86400,
        ge=1,
        description="event timestamps further than this from the Kafka record time are invalid",
    )
    max_future_skew_s: int = Field(
        300,
        ge=0,
        description="event timestamps more than this AHEAD of the Kafka record time are dead-lettered "
        "(future_timestamp) and never move a watermark",
    )
    input_timestamp_type: Literal["LogAppendTime", "CreateTime"] = Field(
        "LogAppendTime",
        description="message.timestamp.type of the predictions/labels topics driftline creates: "
        "LogAppendTime (the broker's clock: a producer whose whole clock is wrong is caught too) or "
        "CreateTime (the producer's: for back-filling history older than max_timestamp_skew_s, or "
        "replaying back-filled history by its own time)",
    )

    @field_validator("sizes_s")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("window sizes must be positive seconds")
        return sorted(set(v))


class JoinSettings(_Section):
    label_horizon_s: int = Field(
        86400, ge=1, description="labels later than this after the prediction never join"
    )
    max_pending: int = Field(2_000_000, ge=1, description="bound on predictions awaiting a label, per shard")
    max_held_labels: int = Field(
        200_000, ge=1, description="bound on labels awaiting their prediction, per shard"
    )
    expired_rows: bool = Field(
        True, description="write an unjoined_events row per prediction that got no label within the "
        "horizon; false where most predictions never get a label by design (sampled labelling): they "
        "stay counted in model_metrics.n_expired"
    )
    memory_budget_mb: float = Field(
        0, ge=0, description="bytes of join records a shard keeps in memory; past it the payloads of the "
        "oldest pending predictions move to disk (spill_dir). 0 = no budget, all in memory"
    )
    spill_dir: Path | None = Field(
        None, description="where shards past memory_budget_mb keep pending payloads (default: the temp dir)"
    )


class DriftSettings(_Section):
    bins: int = Field(
        10, ge=2, le=1000, description="quantile bins per numeric feature in a reference profile"
    )
    top_k: int = Field(20, ge=1, description="categories kept per categorical feature (+ 'other')")
    min_count: int = Field(
        100,
        ge=1,
        description=(
            "a feature with fewer values gets statistics but no p-value or verdict; a pipeline window "
            "with fewer events is under-filled (counts and moments, no distribution statistics)"
        ),
    )
    psi_threshold: float = Field(
        0.2,
        ge=0,
        description="PSI at or above which a significant shift counts as drift (0: significance alone)",
    )
    js_threshold: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Jensen-Shannon distance at or above which a significant shift counts as drift",
    )
    effect_threshold: float | None = Field(
        None,
        ge=0,
        description="effect size (reference sd: Wasserstein/sd, Cohen's w for categories) at or above "
        "which a significant shift counts as drift (None: off; the batch DriftScorer defaults to 0.05)",
    )
    fdr_q: float = Field(0.01, gt=0, lt=1, description="Benjamini-Hochberg false discovery rate per model")
    min_drifted_features: int = Field(1, ge=1, description="features that must drift for a model verdict")


class SequentialSettings(_Section):
    enabled: bool = Field(
        True, description="run sequential (per-event CUSUM) detectors against training profiles"
    )
    false_alarms_per_million: float = Field(
        1.0,
        gt=0,
        le=1e5,
        description="target false alarms per million events of a model, over all its features",
    )
    error_false_alarms_per_million: float = Field(
        1.0, gt=0, le=1e5, description="target false alarms per million outcomes on the error stream"
    )
    error_warmup: int = Field(
        2000,
        ge=100,
        description="outcomes that estimate the reference error rate when the profile has no baseline",
    )
    count_as_drift: bool = Field(
        True, description="a policy window during which a drift episode was open counts as drifted"
    )
    # Defaults are driftline.operators.episodes.DEFAULT_MIN_EFFECT_SD / DEFAULT_LEARNING (a test
    # keeps them equal; config cannot import the operators).
    min_effect_sd: float = Field(
        0.1,
        gt=0,
        le=5,
        description="smallest shift that opens an episode, in reference sd (categorical: PSI = its square)",
    )
    learning: int = Field(
        2000,
        ge=100,
        description="values an episode learns its new regime from before it watches for a further change",
    )
    min_error_ratio: float = Field(
        1.1, gt=1, description="smallest error-rate increase (ratio to the reference) that opens an episode"
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_alert_interval(cls, data: Any) -> Any:
        # alert_interval_s rate-limited alarms before episodes made them bounded; old settings
        # files and DRIFTLINE_SEQUENTIAL_ALERT_INTERVAL_S still load, and mean nothing.
        if isinstance(data, dict):
            data.pop("alert_interval_s", None)
        return data


class MultivariateSettings(_Section):
    """The domain classifier stage 2 runs per policy window (docs/multivariate.md)."""

    domain_every: int = Field(
        1, ge=1, description="domain classifier on every k-th policy window (by window start; 1 = all)"
    )
    domain_folds: int = Field(2, ge=2, le=10, description="domain classifier cross-validation folds")
    domain_max_iter: int = Field(10, ge=1, le=1000, description="domain classifier boosting iterations")
    domain_window_s: int = Field(
        0, ge=0, description="window size the domain classifier runs on (one of windows.sizes_s); "
        "0 = the retrain policy's. A model whose windows of that size hold fewer than 200 sampled "
        "rows gets no AUC (multivariate_drift.domain_status 'too_few_rows'): give it a larger one"
    )


class PerformanceSettings(_Section):
    fading_factor: float = Field(0.999, gt=0, lt=1, description="recency weight of the online metrics")
    detector: Literal["adwin", "page_hinkley", "kswin", "ddm"] = Field(
        "adwin", description="concept-drift detector on the error stream"
    )
    detector_delta: float = Field(0.002, gt=0, description="ADWIN delta / detector sensitivity")


class TriggerSettings(_Section):
    drift_k: int = Field(3, ge=1, description="drifted windows needed ...")
    drift_n: int = Field(4, ge=1, description="... among the model's last N windows")
    performance_drop: float = Field(0.1, gt=0, description="metric drop below the reference that counts")
    performance_duration_s: int = Field(1800, ge=0, description="... for at least this long (event time)")
    alarm_persist_s: int = Field(900, ge=0, description="a concept-drift alarm persisting this long triggers")
    cooldown_s: int = Field(
        6 * 3600, ge=0, description="no second trigger of a family within this (event time)"
    )
    window_size_s: int = Field(0, ge=0, description="window size the policy reads; 0 = the smallest")
    use_estimated_performance: bool = Field(
        False, description="a policy window whose CBPE-estimated accuracy stays performance_drop below the "
        "profile's baseline for performance_duration_s triggers `performance` (evidence source 'estimated')"
    )


class ComparisonPair(_Section):
    """One champion/challenger comparison of a model's versions."""

    model_id: str = Field(min_length=1, description="the model whose versions are compared")
    champion: str = Field(min_length=1, description="version serving today")
    challenger: str = Field(min_length=1, description="version that may replace it")
    mode: Literal["shadow", "canary"] = Field(
        "canary", description="shadow: both score the same requests; canary: split traffic"
    )


class ComparisonSettings(_Section):
    """Champion/challenger comparison of model versions on the label clock (off when no pairs)."""

    pairs: list[ComparisonPair] = Field(
        default_factory=list, description="versions compared: {model_id, champion, challenger, mode}"
    )
    champions: dict[str, str] = Field(
        default_factory=dict,
        description="model_id -> champion version: every other version of the model is compared to it",
    )
    champions_mode: Literal["shadow", "canary"] = Field(
        "canary", description="mode of the comparisons `champions` makes"
    )
    request_separator: str = Field(
        "", max_length=8, description="shadow pairing: a prediction id is <request id><separator><suffix>; "
        "outcomes of one request pair up (empty = no request id: shadow compares unpaired)"
    )
    effect: float = Field(0.02, gt=0, description="difference worth detecting (accuracy points or MAE units)")
    alpha: float = Field(0.01, gt=0, lt=1, description="probability of ever deciding without a difference")
    min_events: int = Field(500, ge=2, description="outcomes per version before any decision")
    triggers: bool = Field(
        False, description="a decision on all traffic sends a `comparison` retrain trigger"
    )


class RetrainSettings(_Section):
    command: str = Field(
        "", description="shell command run per trigger (trigger JSON on stdin); empty = entrypoint"
    )
    # No default job: an unconfigured listener records triggers as skipped rather than train and
    # publish the example's toy models in production (the demo asks for the example explicitly).
    entrypoint: str = Field(
        "", description="module:function run per trigger; both empty = no job (triggers recorded as skipped)"
    )
    # A comparison trigger is promote/roll-back evidence for a person or a deploy job, not a
    # reason to train: the listener records it as skipped (with why) unless asked to run on it.
    reasons: Annotated[list[TriggerReasonName], NoDecode] = Field(
        ["drift", "performance", "concept_drift", "manual"],
        description="trigger reasons the listener runs its job for (a JSON list or comma-separated); "
        "others are recorded as skipped in retrain_jobs with the reason",
    )
    max_concurrent: int = Field(2, ge=1, description="retrain jobs running at once")
    max_attempts: int = Field(3, ge=1, description="attempts before a job is marked failed")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay (doubles each attempt)")
    timeout_s: float = Field(3600, gt=0, description="a job running longer is killed")
    artifacts_dir: Path = Field(Path(".driftline/artifacts"), description="where retrain jobs write models")
    logs_dir: Path = Field(Path(".driftline/retrain-logs"), description="one log file per job attempt")

    @field_validator("reasons", mode="before")
    @classmethod
    def _reason_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            v = orjson.loads(text) if text.startswith("[") else [t.strip() for t in text.split(",")
                                                                  if t.strip()]
        return v


class WorkerSettings(_Section):
    web_host: str = Field(
        "127.0.0.1", description="worker web server (/metrics, /query, /predictions, /feedback)"
    )
    web_port: int = Field(6066, ge=0, le=65535, description="worker web port")
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="how often stage state + offsets are checkpointed"
    )
    compiled_paths: bool = Field(
        True, description="run the compiled C paths this install built (the batch decode, the join's "
        "commonest cases, the drift monitors' steps, the KS p-values, the worker's fetched record "
        "batches); false runs their Python reference alone, the same results slower (the KS p-values "
        "within 1e-11), e.g. to rule the C out when a result looks wrong (/metrics: compiled_path)"
    )
    idle_partition_s: float = Field(
        300.0, ge=0, description="a predictions or labels partition read to its end with no new record "
        "for this long stops holding windows open: its watermark follows the furthest other partition's "
        "(events later behind it are late_events); 0 = never (an idle partition holds every window open)"
    )
    labels_wait_for_predictions: bool = Field(
        True, description="a stage-1 shard reads its labels partition no further ahead in event time than "
        "its predictions while its predictions partition has a backlog (more than batch_max_records still "
        "to read: after a restart, in a replay): its labels then find their predictions pending instead of "
        "waiting for them (held labels, each made an outcome one at a time); false = read both as they come"
    )
    bundle_model_events: bool = Field(
        True, description="a stage-1 batch's columnar records of one kind (outcomes, expired predictions, "
        "orphan labels, duplicates) bound for one model-events partition go as one stacked record, every "
        "model's rows in it; false = a message per model and kind, as releases before stacked records sent "
        "them and their stage 2 reads them (a rolling upgrade: false until every worker runs a release "
        "that reads stacked records, then true)"
    )
    silent_predictions_s: float = Field(
        300.0, ge=0, description="once a shard's predictions partition is idle and no predictions "
        "watermark it knows of has moved for this long (every predictions partition silent, as at "
        "night), its predictions watermark moves on with wall time, this far behind, so the windows "
        "before the silence close and are scored (events later behind it are late_events); "
        "0 = never (the newest windows wait for the next events); needs idle_partition_s"
    )
    checkpoint_deltas_per_base: int = Field(
        720, ge=0, description="stage-1 checkpoints between two full (base) snapshots carry only what "
        "changed; at most this many deltas follow a base (0 = every checkpoint is a full snapshot)"
    )
    checkpoint_delta_ratio: float = Field(
        1.0, gt=0, description="a new base snapshot once the deltas since the last one exceed this "
        "share of its size and the chain (base + deltas) holds over 64 MiB (bounds restore reading "
        "to (1 + ratio) x the state, or 64 MiB)"
    )
    restore_target_s: float = Field(
        60.0, ge=0, description="a new base snapshot once restoring the chain (base + deltas since, as "
        "this process measured them, CPU time plus reading) would take longer than this (an RTO; "
        "0 = no bound: deltas_per_base and delta_ratio only)"
    )
    state_dir: Path | None = Field(
        None, description="keep a local copy of each base checkpoint here (one file per shard), so a "
        "restart on this disk reads only the deltas after it from the broker (docs/state.md); unset = "
        "no copies: a restore reads the whole chain from the state topics. Also where the processes on this "
        "disk share the sequential detectors' calibrations (calibrations/: a reference calibrated once)"
    )
    batch_max_records: int = Field(5000, ge=1, description="records per consumer fetch (micro-batch)")
    sink_max_buffer_rows: int = Field(200_000, ge=1, description="backpressure: pause consuming beyond this")
    sink_flush_interval_s: float = Field(
        0.5, ge=0, le=60, description="how long the sink's staged rows wait for more before they are "
        "inserted and their offsets committed (0 = after every fetched batch): an insert costs ~8 ms "
        "CPU whatever its size, and half a second keeps a window's rows within 2 s of its close"
    )
    # NoDecode: the env value is parsed by _token_list (a JSON list or comma-separated tokens).
    auth_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        [],
        description="bearer tokens the HTTP endpoints accept (worker and `driftline serve`), a JSON list "
        "or comma-separated; clients send the first. Empty = no authentication, loopback binds only",
    )
    metrics_open: bool = Field(False, description="serve GET /metrics without a token (for scrapers)")
    insecure: bool = Field(
        False, description="allow binding a non-loopback address without auth_tokens (as --insecure)"
    )
    tls_certfile: Path | None = Field(None, description="PEM certificate (chain): the endpoints serve HTTPS")
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile")
    query_max_execution_time_s: float = Field(
        30.0, gt=0, description="POST /query: ClickHouse max_execution_time of each query"
    )
    query_max_result_rows: int = Field(
        1_000_000, ge=1, description="POST /query: a result with more rows fails (max_result_rows)"
    )

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _token_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    v = orjson.loads(text)
                except orjson.JSONDecodeError:
                    raise ValueError("expected a JSON list of tokens or comma-separated tokens") from None
            else:
                v = [t.strip() for t in text.split(",") if t.strip()]
        if isinstance(v, list):
            for token in v:
                value = token.get_secret_value() if isinstance(token, SecretStr) else token
                # The message never shows the token: it may be a real one with a typo.
                if not isinstance(value, str) or len(value.strip()) < 16 or any(c.isspace() for c in value):
                    raise ValueError("each token must be at least 16 characters without spaces, e.g. "
                                     "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> WorkerSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together "
                             "(DRIFTLINE_WORKER_TLS_CERTFILE, DRIFTLINE_WORKER_TLS_KEYFILE)")
        return self


class Settings(BaseSettings):
    """Everything configurable about driftline."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(Path(".driftline"), description="local state: embedded ClickHouse, broker address")
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    windows: WindowSettings = WindowSettings()
    join: JoinSettings = JoinSettings()
    drift: DriftSettings = DriftSettings()
    sequential: SequentialSettings = SequentialSettings()
    multivariate: MultivariateSettings = MultivariateSettings()
    performance: PerformanceSettings = PerformanceSettings()
    triggers: TriggerSettings = TriggerSettings()
    comparison: ComparisonSettings = ComparisonSettings()
    retrain: RetrainSettings = RetrainSettings()
    worker: WorkerSettings = WorkerSettings()

    _config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @model_validator(mode="after")
    def _window_sizes_exist(self) -> Settings:
        # A size no window has would leave the policy (or the classifier) with nothing to read,
        # silently: no trigger, no AUC.
        sizes = self.windows.sizes_s
        for name, size in (("triggers.window_size_s", self.triggers.window_size_s),
                           ("multivariate.domain_window_s", self.multivariate.domain_window_s)):
            if size and size not in sizes:
                raise ValueError(f"{name} = {size} is not one of windows.sizes_s {sizes} (0 = the default)")
        return self

    # -- derived values -------------------------------------------------------------------------

    def clickhouse_url(self) -> str:
        """The effective ClickHouse DSN: configured, else the embedded engine under ``home``."""
        if self.clickhouse.url:
            return self.clickhouse.url
        return f"chdb://{(self.home / 'clickhouse').resolve()}"

    def bootstrap_servers(self) -> str:
        """Configured servers, else the embedded broker recorded by ``driftline local up``."""
        if self.kafka.bootstrap_servers:
            return self.kafka.bootstrap_servers
        from driftline.local.state import read_local_bootstrap

        recorded = read_local_bootstrap(self.home)
        return recorded or "127.0.0.1:9092"

    def config_hash(self) -> str:
        """Stable hash of everything that changes results (not connection details or secrets)."""
        relevant = self.model_dump(include=set(RESULT_SECTIONS), exclude=RESULT_NEUTRAL, mode="json")
        return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class ConfigError(Exception):
    """A configuration value is invalid; the message names the field."""


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    dotted = ".".join(loc) or "settings"
    env_name = ENV_PREFIX + "_".join(p.upper() for p in loc[:2]) if loc else ""
    # pydantic prefixes a validator's own message with its error type; the message says it all
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":  # pydantic's "Extra inputs are not permitted": a typo?
        msg = "no such setting" + _did_you_mean(loc)
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    hint = f" [env {env_name}]" if env_name else ""
    form = _json_form(loc[0], loc[1]) if len(loc) >= 2 and first["type"] != "value_error" else None
    expected = f" (expected {form})" if form else ""
    return f"invalid configuration: {dotted}{hint}: {msg}{expected}{more}"


def _did_you_mean(loc: list[str]) -> str:
    """" (did you mean drift.psi_threshold?)": the nearest known name to an unknown ``loc``; a
    section's field given at the top level (outside its ``[section]`` table) finds it too."""
    names: dict[str, str] = {}
    for section, field in Settings.model_fields.items():
        model = field.annotation
        fields = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        if len(loc) == 1:
            names.setdefault(section, section)
            for name in fields:
                names.setdefault(name, f"{section}.{name}")
        elif len(loc) == 2 and section == loc[0]:
            names.update((name, f"{section}.{name}") for name in fields)
    close = difflib.get_close_matches(loc[-1], list(names), n=1)
    return f" (did you mean {names[close[0]]}?)" if close else ""


def _json_form(section: str, name: str | None) -> str | None:
    """How an env var gives a section (``name`` None) or a list/dict field: as JSON, e.g. ..."""
    section_field = Settings.model_fields.get(section)
    model = section_field.annotation if section_field is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    if name is None:
        return "a JSON object of the section's fields, or one variable per field"
    field = model.model_fields.get(name)
    if field is None:
        return None
    kind = get_origin(field.annotation) or field.annotation
    default = field.get_default(call_default_factory=True)
    if kind in (list, tuple, set, frozenset):
        example = orjson.dumps(list(default)).decode() if default else '["a", "b"]'
        return f"a JSON list, e.g. '{example}'"
    if kind is dict:
        example = orjson.dumps(default).decode() if default else '{"a": 1}'
        return f"a JSON object, e.g. '{example}'"
    return None


def _describe_env_json() -> str | None:
    """The env var whose value must be JSON and is not (pydantic-settings names only the section)."""
    for env_name, value in sorted(os.environ.items()):
        if not env_name.startswith(ENV_PREFIX):
            continue
        section, _, name = env_name[len(ENV_PREFIX):].lower().partition("_")
        form = _json_form(section, name or None)
        if form is None:
            continue
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            return f"invalid configuration: {env_name}={value!r} is not valid JSON: expected {form}"
    return None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from env, the optional TOML file and overrides; raises ConfigError."""
    previous = os.environ.get(CONFIG_FILE_ENV)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"invalid configuration: config file {str(path)!r} does not exist")
        os.environ[CONFIG_FILE_ENV] = str(path)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    except SettingsError as err:  # an env value that must be JSON is not
        raise ConfigError(_describe_env_json() or f"invalid configuration: {err}") from None
    except (OSError, ValueError) as err:  # unreadable / malformed TOML
        # tomllib's message gives line and column but not the file
        source = os.environ.get(CONFIG_FILE_ENV)
        where = f"config file {source!r}: " if source else ""
        raise ConfigError(f"invalid configuration: {where}{err}") from None
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop(CONFIG_FILE_ENV, None)
            else:
                os.environ[CONFIG_FILE_ENV] = previous


OTHER_ENV_FAMILIES = frozenset({"config", "test", "soak", "trigger", "job", "model", "auth", "token",
                                "grafana", "services", "notebook"})
"""``DRIFTLINE_<FAMILY>_...`` variables that are not settings: the config file, the test backends,
what a retrain job's command is given, tokens and the demo stack's own."""


def misspelt_sections(environ: Mapping[str, str]) -> list[str]:
    """Warnings for ``DRIFTLINE_*`` variables whose section is a near miss of a settings section
    (``DRIFTLINE_DRFIT_PSI_THRESHOLD``): pydantic-settings ignores a variable of no section, so the
    value would be silently dropped. (An unknown field of a known section is an error already.)

    >>> for line in misspelt_sections({"DRIFTLINE_DRFIT_PSI_THRESHOLD": "0.5", "DRIFTLINE_TRIGGER_ID": "x",
    ...                                "DRIFTLINE_DRIFT_PSI_THRESHOLD": "0.3", "PATH": "/bin"}):
    ...     print(line)
    DRIFTLINE_DRFIT_PSI_THRESHOLD: not a setting, ignored (did you mean DRIFTLINE_DRIFT_PSI_THRESHOLD?)
    """
    sections = list(Settings.model_fields)
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, rest = name[len(ENV_PREFIX):].lower().partition("_")
        if section in sections or section in OTHER_ENV_FAMILIES:
            continue
        close = difflib.get_close_matches(section, sections, n=1, cutoff=0.7)
        if close:
            meant = f"{ENV_PREFIX}{close[0].upper()}" + (f"_{rest.upper()}" if rest else "")
            out.append(f"{name}: not a setting, ignored (did you mean {meant}?)")
    return out


def load_settings_or_exit(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """For CLIs: one clear line on stderr and exit code 2 instead of a traceback; a warning line
    for each variable that looks like a misspelt setting (:func:`misspelt_sections`)."""
    try:
        settings = load_settings(config_file, **overrides)
    except ConfigError as err:
        print(f"driftline: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in misspelt_sections(os.environ):
        print(f"driftline: warning: {warning}", file=sys.stderr)
    return settings
