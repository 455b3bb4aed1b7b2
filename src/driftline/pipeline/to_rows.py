"""Every ClickHouse row driftline writes is built here: stage 1's (outcomes, late events), stage
2's (feature windows, drift scores, model drift, model metrics, first-window reference profiles,
drift episodes and alerts), and what each output topic's message becomes in a table
(:class:`RowMapper`, one mapping for the live sink, replays and ``driftline.store.profiles``, so
all of them write identical rows).

>>> from driftline.config import TopicSettings
>>> mapper = RowMapper(TopicSettings())
>>> mapper.rows("driftline.sink", b'{"table": "late_events", "rows": [{"prediction_id": "p"}]}')
('late_events', [{'prediction_id': 'p'}])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import ValidationError

from driftline.config import TopicSettings
from driftline.operators.comparison import SequentialComparison, WindowComparison
from driftline.operators.drift import FeatureScore
from driftline.operators.join import JoinedOutcome
from driftline.operators.profile import FeatureProfile
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import FeatureStats
from driftline.pipeline.records import ColumnBlock, WindowKey, row_blocks
from driftline.schemas.events import MAX_NAME_LENGTH, DeadLetter, LabelEvent, PredictionEvent, RetrainTrigger

if TYPE_CHECKING:  # episodes imports this module for its rows
    from driftline.pipeline.episodes import Episode

PAYLOAD_LIMIT = 64 * 1024
INVALID_PROFILE = "invalid_profile"
"""``error_kind`` of a profiles-topic message that is not a valid reference profile (every stage
skips it): written by the sink, and by an in-process pipeline (a replay) for its profiles."""
MAX_REASON_CHARS = 2000  # of an error's text in error_message
PROFILE_FIELDS = ("model_id", "model_version", "profile_id", "created_at_ms", "effective_from_ms", "source")


def dead_letter_row(topic: str, partition: int, offset: int, timestamp_ms: int, value: bytes | None,
                    kind: str, message: str, model_id: str | None = None) -> dict[str, Any]:
    """The ``dead_letters`` row of a record, keyed by where it is; ``model_id``: the model the
    record names (None: read from its value, when it is a JSON object naming one).

    >>> row = dead_letter_row("driftline.profiles", 0, 7, 5, b'{"model_id": "m"}', "invalid_profile", "why")
    >>> row["source_offset"], row["error_kind"], row["model_id"], row["payload_size"]
    (7, 'invalid_profile', 'm', 17)
    """
    value = value or b""
    if len(value) > PAYLOAD_LIMIT:
        message += f" [payload: the first {PAYLOAD_LIMIT} of {len(value)} bytes]"
    return {
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": max(0, timestamp_ms),
        "error_kind": kind,
        "error_message": message,
        "payload": value[:PAYLOAD_LIMIT].decode("utf-8", errors="replace"),
        "payload_size": len(value),
        "model_id": named_model(value) if model_id is None else model_id,
    }


def named_model(value: Any) -> str:
    """The model a message (JSON bytes) or a row names, when it names one."""
    if isinstance(value, bytes | bytearray):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return ""
    model = value.get("model_id") if isinstance(value, dict) else None
    return model[:MAX_NAME_LENGTH] if isinstance(model, str) else ""


def error_text(err: Exception) -> str:
    """An error's text on one line, bounded; a validation error's as field: problem pairs."""
    if isinstance(err, ValidationError):
        problems = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors()]
        text = f"not a valid {err.title}: " + "; ".join(problems)
    else:
        text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + " ..."


class UnknownTopic(KeyError):
    """A message from a topic that has no table."""


def _object(value: bytes) -> dict[str, Any]:
    """Parse a JSON object; anything else is a ValueError the sink counts and skips."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class RowMapper:
    """Maps (topic, message value) to (table, rows); ``run_id`` tags replayed rows."""

    def __init__(self, topics: TopicSettings, run_id: str | None = None) -> None:
        self.run_id = run_id
        self._sink_topic = topics.sink
        self._by_topic = {
            topics.sink: self._sink,
            topics.outcomes: self._outcome,
            topics.dead_letters: self._dead_letter,
            topics.retrain_triggers: self._trigger,
            topics.profiles: self._profile,
            topics.retrain_status: self._job_status,
        }

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    def rows(self, topic: str, value: bytes) -> tuple[str, list[dict[str, Any]]]:
        try:
            convert = self._by_topic[topic]
        except KeyError:
            raise UnknownTopic(topic) from None
        table, rows = convert(value)
        if self.run_id is not None:
            for row in rows:
                row["run_id"] = self.run_id
        return table, rows

    def blocks(self, topic: str, value: bytes) -> tuple[str, list[ColumnBlock]]:
        """What :meth:`rows` gives, as column blocks (the rows in order): a sink message of
        columns as it came, without making a dict per row (the ClickHouse sink inserts columns).

        >>> mapper = RowMapper(TopicSettings(), run_id="r")
        >>> mapper.blocks("driftline.sink", b'{"table": "t", "rows": [{"a": 1}, {"a": 2}]}')
        ('t', [ColumnBlock(names=('a', 'run_id'), columns=[[1, 2], ['r', 'r']], n=2)])
        """
        if topic != self._sink_topic:
            table, rows = self.rows(topic, value)
            return table, row_blocks(rows)
        table, blocks = self._sink_blocks(value)
        if self.run_id is not None:
            blocks = [_with_column(block, "run_id", self.run_id) for block in blocks]
        return table, blocks

    @staticmethod
    def _sink(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        message = _object(value)
        if "blocks" in message:
            table, blocks = _blocks_form(message)
            return table, [row for block in blocks for row in block.rows()]
        return _rows_form(message)

    @staticmethod
    def _sink_blocks(value: bytes) -> tuple[str, list[ColumnBlock]]:
        """A sink message's table and rows as column blocks, of either form (see
        :func:`~driftline.pipeline.records.sink_rows`)."""
        message = _object(value)
        if "blocks" in message:
            return _blocks_form(message)
        table, rows = _rows_form(message)
        return table, row_blocks(rows)

    @staticmethod
    def _outcome(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        return "outcomes", [_object(value)]

    @staticmethod
    def _dead_letter(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        dl = DeadLetter.model_validate_json(value)
        return "dead_letters", [dead_letter_row(dl.source_topic, dl.source_partition, dl.source_offset,
                                                dl.source_timestamp, dl.original, dl.error_kind.value,
                                                dl.error_message)]

    @staticmethod
    def _trigger(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        t = RetrainTrigger.model_validate_json(value)
        return "retrain_triggers", [
            {
                "run_id": t.run_id,
                "model_id": t.model_id,
                "model_version": t.model_version,
                "trigger_id": t.trigger_id,
                "reason": t.reason.value,
                "message": t.message,
                "window_start": t.window_start,
                "window_end": t.window_end,
                "triggered_at": t.triggered_at,
                "evidence": orjson.dumps(t.evidence).decode(),
                "config_hash": t.config_hash,
            }
        ]

    @staticmethod
    def _profile(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        return "reference_profiles", [reference_profile_row(value.decode())]

    @staticmethod
    def _job_status(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        return "retrain_jobs", [_object(value)]


SINK_FORMS = ('a sink message is {"table": str, "rows": [object, ...]} or {"table": str, "blocks": '
              '[{"names": [str, ...], "n": int, "columns": [[n values], ...]}, ...]}')


def _rows_form(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    table, rows = message.get("table"), message.get("rows")
    if not isinstance(table, str) or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(SINK_FORMS)
    return table, rows


def _blocks_form(message: dict[str, Any]) -> tuple[str, list[ColumnBlock]]:
    table, blocks = message.get("table"), message.get("blocks")
    if not isinstance(table, str) or not isinstance(blocks, list):
        raise ValueError(SINK_FORMS)
    return table, [_column_block(block) for block in blocks]


def _column_block(block: Any) -> ColumnBlock:
    """A decoded block checked: distinct string names, one list of ``n`` values per name."""
    if not isinstance(block, dict):
        raise ValueError(SINK_FORMS)
    names, n, columns = block.get("names"), block.get("n"), block.get("columns")
    if (
        not isinstance(names, list)
        or type(n) is not int
        or n < 0
        or not isinstance(columns, list)
        or len(columns) != len(names)
        or not all(type(name) is str for name in names)
        or len(set(names)) != len(names)
        or not all(isinstance(column, list) and len(column) == n for column in columns)
    ):
        raise ValueError(SINK_FORMS)
    return ColumnBlock(tuple(names), columns, n)


def _with_column(block: ColumnBlock, name: str, value: Any) -> ColumnBlock:
    """``block`` with every row's ``name`` set to ``value`` (replaced where it is a column, else
    added last, as setting a row dict's key does)."""
    columns = list(block.columns)
    if name in block.names:
        columns[block.names.index(name)] = [value] * block.n
        return ColumnBlock(block.names, columns, block.n)
    return ColumnBlock((*block.names, name), [*columns, [value] * block.n], block.n)


# -- stage 1: outcomes, late_events ---------------------------------------------------------------


def outcome_row(o: JoinedOutcome, run_id: str = "") -> dict[str, Any]:
    """A joined outcome as published on the outcomes topic: the columns of the ``outcomes`` table."""
    return {
        "run_id": run_id,
        "prediction_id": o.prediction_id,
        "model_id": o.model_id,
        "model_version": o.model_version,
        "segment": o.segment,
        "prediction_time": o.prediction_time,
        "label_time": o.label_time,
        "label_delay_ms": o.label_delay_ms,
        "predicted_label": o.predicted_label,
        "predicted_score": o.predicted_score,
        "predicted_value": o.predicted_value,
        "label": o.label,
        "label_value": o.label_value,
        "correct": o.correct,
        "abs_error": o.abs_error,
        "features": o.features_json,
    }


def late_event_row(run_id: str, record: RawRecord, kind: str, event: PredictionEvent | LabelEvent,
                   watermark: int) -> dict[str, Any]:
    """A ``late_events`` row: ``event`` of ``record`` came behind its partition's ``watermark``."""
    return {
        "run_id": run_id,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "event_type": kind,
        "prediction_id": event.prediction_id,
        "model_id": event.model_id or "",
        "model_version": getattr(event, "model_version", ""),
        "event_time": event.timestamp,
        "watermark_time": watermark,
    }


# -- reference_profiles ---------------------------------------------------------------------------


ORPHAN_REASONS = {"no_prediction": "no_prediction", "evicted": "held_label_evicted",
                  "prediction_evicted": "evicted"}
"""The join's reason for a label it gave up -> unjoined_events.reason (a label of a prediction evicted
at ``join.max_pending`` is an 'evicted' row, as its prediction is)."""


def unjoined_event_row(run_id: str, model_id: str, model_version: str, event_type: str, reason: str,
                       prediction_id: str, segment: str, time: int, metrics_time: int,
                       source: tuple[int, int] = (-1, -1)) -> dict[str, Any]:
    """An ``unjoined_events`` row: one event the join did not turn into an outcome, and why.

    >>> unjoined_event_row("", "m", "", "label", "no_prediction", "p1", "", 5, 300_000)["reason"]
    'no_prediction'
    """
    return {"run_id": run_id, "model_id": model_id, "model_version": model_version, "event_type": event_type,
            "reason": reason, "prediction_id": prediction_id, "segment": segment, "time": time,
            "metrics_time": metrics_time, "source_partition": source[0], "source_offset": source[1]}


def reference_profile_row(profile_json: str, *, created_at: int | None = None,
                          run_id: str | None = None) -> dict[str, Any]:
    """The ``reference_profiles`` row of a profile's JSON (``created_at`` overrides the profile's).

    >>> row = reference_profile_row('{"model_id": "m", "model_version": "1", "profile_id": "p"}')
    >>> row["created_at"], row["effective_from"], row["source"], "run_id" in row
    (0, 0, 'training', False)
    """
    p = orjson.loads(profile_json)
    row: dict[str, Any] = {} if run_id is None else {"run_id": run_id}
    row.update(
        model_id=p["model_id"],
        model_version=p["model_version"],
        profile_id=p["profile_id"],
        created_at=p.get("created_at_ms", 0) if created_at is None else created_at,
        effective_from=p.get("effective_from_ms", 0),
        source=p.get("source", "training"),
        profile=profile_json,
    )
    return row


# -- windows: feature_windows, drift_scores, model_drift ------------------------------------------


def finite(value: Any) -> float | None:
    """A float for ClickHouse, None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    # math's test of the float, not numpy's: a ufunc call on a scalar is ~1 us, and a window's
    # rows take ~100 of these (a small window's rows are written every few predictions)
    return value if math.isfinite(value) else None


def window_columns(run_id: str, key: WindowKey) -> dict[str, Any]:
    """The columns every row of a window carries."""
    return {
        "run_id": run_id,
        "model_id": key.model_id,
        "model_version": key.model_version,
        "window_size_s": key.size_s,
        "segment": key.segment,
        "window_start": key.start,
        "window_end": key.end,
    }


def feature_kind(stats: FeatureStats, profile: FeatureProfile | None) -> str:
    """The profile's kind of a feature, else what its window values look like."""
    if profile is not None:
        return profile.kind
    return "categorical" if stats.categories and stats.n == 0 else "numeric"


_QUANTILES = np.array([0.5, 0.9, 0.99])  # a window's p50, p90 and p99 (read, never written)


_NO_VALUES = (None,) * 7


def value_columns(stats: FeatureStats) -> tuple[float | None, ...]:
    """A feature_windows row's mean, variance, min, max, p50, p90 and p99 of a feature with values."""
    # ~28 rows a window, a window every few predictions with many small models: what an under-filled
    # window lacks (no sketch merged, so no quantiles; no values, so no moments) is tested once
    mean, variance = finite(stats.mean), finite(stats.variance)
    low, high = finite(stats.min), finite(stats.max)
    if stats.sketch.empty:  # an under-filled window's (never merged): no quantile
        return mean, variance, low, high, None, None, None
    p50, p90, p99 = (finite(q) for q in stats.sketch.quantiles(_QUANTILES).tolist())
    return mean, variance, low, high, p50, p90, p99


def feature_window_row(
    window: Mapping[str, Any],
    name: str,
    kind: str,
    stats: FeatureStats,
    score: FeatureScore | None,
    reference_id: str,
) -> dict[str, Any]:
    mean, variance, low, high, p50, p90, p99 = value_columns(stats) if stats.n else _NO_VALUES
    return {
        **window,
        "feature": name,
        "feature_kind": kind,
        "count": stats.count,
        "missing": stats.missing,
        "invalid": stats.invalid,
        "out_of_range": score.out_of_range if score is not None else 0,
        "mean": mean,
        "variance": variance,
        "min": low,
        "max": high,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        # map(float): the list comprehensions' results at about half their cost
        "bin_edges": list(map(float, score.bin_edges)) if score is not None else [],
        "bin_labels": list(score.bin_labels) if score is not None else [],
        "histogram": list(map(float, score.histogram)) if score is not None else [],
        "reference_histogram": list(map(float, score.reference_histogram)) if score is not None else [],
        "reference_id": reference_id,
    }


def drift_score_row(
    window: Mapping[str, Any],
    name: str,
    score: FeatureScore,
    drifted: bool,
    drifted_by: Sequence[str],
    p_adj: float | None,
    reference_id: str,
    config_hash: str,
) -> dict[str, Any]:
    is_categorical = score.kind == "categorical"
    return {
        **window,
        "feature": name,
        "feature_kind": score.kind,
        "count": score.count,
        "psi": finite(score.psi),
        "ks_stat": finite(score.ks_stat),
        "ks_pvalue": finite(score.ks_pvalue),
        "ks_pvalue_adj": None if is_categorical else finite(p_adj),
        "js_distance": finite(score.js_distance),
        "wasserstein": finite(score.wasserstein),
        "chi2_stat": finite(score.chi2_stat),
        "chi2_pvalue": finite(score.chi2_pvalue),
        "chi2_pvalue_adj": finite(p_adj) if is_categorical else None,
        "drifted": int(drifted),
        "drifted_by": list(drifted_by),
        "reference_id": reference_id,
        "config_hash": config_hash,
    }


def model_drift_row(
    window: Mapping[str, Any],
    n_events: int,
    n_features: int,
    drifted: bool,
    drifted_features: Sequence[str],
    reference_id: str,
    config_hash: str,
    *,
    score_status: str = "scored",
) -> dict[str, Any]:
    """``score_status``: 'scored', or 'under_filled' (fewer events than ``drift.min_count``: the
    window's drift_scores rows carry counts and verdicts, no distribution statistics)."""
    return {
        **window,
        "n_events": n_events,
        "n_features": n_features,
        "n_drifted": len(drifted_features),
        "drifted": int(drifted),
        "drifted_features": list(drifted_features),
        "score_status": score_status,
        "reference_id": reference_id,
        "config_hash": config_hash,
    }


# -- outcome buckets: model_metrics ---------------------------------------------------------------


@dataclass
class IntervalTally:
    """What one metrics interval of one (model, version, segment) counted."""

    n: int = 0
    correct: int = 0
    n_correct_known: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0
    n_error_known: int = 0
    expired: int = 0
    evicted: int = 0
    orphans: int = 0
    rerouted: int = 0
    delays: list[int] = field(default_factory=list)
    alarm: bool = False  # the River detector alarmed in this interval
    sequential_alarm: bool = False  # the sequential error-stream detector alarmed


@dataclass(frozen=True, slots=True)
class MetricsRowContext:
    """The columns of a model_metrics row that do not come from the interval's tally."""

    run_id: str
    model_id: str
    model_version: str
    segment: str
    interval_s: int
    n_outcomes_total: int
    detector: str
    baseline: float | None


SMALL_PERCENTILES = 256
"""At most this many delays are ranked in Python by :func:`delay_percentiles` (more: numpy)."""

_DELAY_QUANTILES = (0.5, 0.9, 0.99)


def delay_percentiles(delays: Sequence[float]) -> tuple[float, float, float] | tuple[None, None, None]:
    """The 50th, 90th and 99th percentiles of ``delays`` bit for bit as ``np.percentile`` (its
    linear method) computes them; a few values in Python, as numpy's call costs ~25 us and a row
    is written per model, segment and interval (with many models most hold a few outcomes).

    >>> xs = [5.0, 1.0, 3.0, 2.5, 7.25]
    >>> delay_percentiles(xs) == tuple(np.percentile(np.array(xs), [50, 90, 99]).tolist())
    True
    >>> delay_percentiles([])
    (None, None, None)
    """
    n = len(delays)
    if not n:
        return None, None, None
    ordered = sorted(map(float, delays)) if n <= SMALL_PERCENTILES else []
    if not ordered or any(v != v for v in ordered):  # many, or a NaN (numpy's answer: NaN)
        p50, p90, p99 = np.percentile(np.asarray(delays, dtype=np.float64), [50, 90, 99]).tolist()
        return p50, p90, p99
    found = []
    for q in _DELAY_QUANTILES:  # numpy's steps: the virtual index (n - 1) q, then its lerp
        index = (n - 1) * q
        below = math.floor(index)
        gamma = index - below
        a, b = ordered[below], ordered[min(below + 1, n - 1)]
        diff = b - a
        found.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)
    return found[0], found[1], found[2]


def model_metrics_row(
    context: MetricsRowContext,
    kind: str,
    time: int,
    tally: IntervalTally | None,
    figures: Mapping[str, Any],
) -> dict[str, Any]:
    """A model_metrics row: ``kind`` 'interval' (with its tally), 'alarm' (no tally) or
    'duplicates' (an empty tally; the caller sets the duplicate counts); ``figures`` are the
    online estimators' (``OnlinePerformance.get()``)."""
    row: dict[str, Any] = {
        "run_id": context.run_id,
        "model_id": context.model_id,
        "model_version": context.model_version,
        "segment": context.segment,
        "row_kind": kind,
        "time": time,
        "interval_s": context.interval_s,
        "n_outcomes_total": context.n_outcomes_total,
        "accuracy_ew": figures.get("accuracy_ew"),
        "mae_ew": figures.get("mae_ew"),
        "rmse_ew": figures.get("rmse_ew"),
        "detector": context.detector,
        "alarms_total": int(figures.get("alarms_total") or 0),
        "baseline": context.baseline,
        "n_duplicate_predictions": 0,  # counted on 'duplicates' rows only
        "n_duplicate_labels": 0,
    }
    if tally is None:
        row.update(alarm=1, n_outcomes=0, n_expired=0, n_evicted=0, n_orphan_labels=0, n_rerouted=0)
        return row
    # Every join that failed counts against coverage: a prediction no label came for (or that the
    # join dropped at its max_pending bound), and a label no prediction came for (e.g. produced to
    # a partition nothing re-routed it from).
    resolved = tally.n + tally.expired + tally.evicted + tally.orphans
    p50, p90, p99 = delay_percentiles(tally.delays)
    row.update(
        n_outcomes=tally.n,
        n_expired=tally.expired,
        n_evicted=tally.evicted,
        n_orphan_labels=tally.orphans,
        n_rerouted=tally.rerouted,
        rerouted_share=(tally.rerouted / tally.n) if tally.n else None,
        alarm=int(tally.alarm),
        label_coverage=(tally.n / resolved) if resolved else None,
        accuracy=(tally.correct / tally.n_correct_known) if tally.n_correct_known else None,
        mae=(tally.abs_error / tally.n_error_known) if tally.n_error_known else None,
        rmse=float(np.sqrt(tally.sq_error / tally.n_error_known)) if tally.n_error_known else None,
        label_delay_p50_ms=p50,
        label_delay_p90_ms=p90,
        label_delay_p99_ms=p99,
    )
    return row


# -- drift episodes: drift_episodes, drift_alerts -------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpisodeRowContext:
    """The columns of an episode's rows that come from the merger, not the episode."""

    run_id: str
    source: str  # 'features' | 'errors'
    config_hash: str


def drift_episode_row(context: EpisodeRowContext, e: Episode, version: int) -> dict[str, Any]:
    """The ``drift_episodes`` row of episode ``e`` as of ``version`` (its grid bucket's end)."""
    escalation = e.escalation
    return {
        "run_id": context.run_id,
        "episode_id": e.episode_id,
        "model_id": e.model_id,
        "model_version": e.model_version,
        "feature": e.feature,
        "feature_kind": e.feature_kind,
        "source": context.source,
        "status": "closed" if e.closed_at is not None else "open",
        "opened_at": e.opened_at,
        "last_seen": e.last_seen,
        "closed_at": e.closed_at,
        "close_reason": e.close_reason,
        "events_seen": sum(p.seen for p in e.parts.values()),
        "magnitude": e.magnitude,
        "peak_magnitude": e.peak_magnitude,
        "unit": e.unit,
        "escalations": e.escalations,
        "shards": sorted(e.parts),
        "open_shards": sorted(s for s, p in e.parts.items() if p.open),
        "opened_component": e.opening["component"],
        "opened_statistic": e.opening["statistic"],
        "opened_threshold": e.opening["threshold"],
        "opened_prediction_id": e.opening["prediction_id"],
        "escalated_at": escalation.get("at"),
        "escalation_reason": escalation.get("reason", ""),
        "escalated_component": escalation.get("component", ""),
        "escalated_statistic": escalation.get("statistic"),
        "escalated_threshold": escalation.get("threshold"),
        "arl": e.arl,
        "reference_id": e.reference_id,
        "config_hash": context.config_hash,
        "version": version,
    }


def drift_alert_row(context: EpisodeRowContext, alert_id: str, e: Episode, kind: str, reason: str,
                    report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``drift_alerts`` row of episode ``e``'s event ``kind`` (opened, escalated, closed), set
    off by a shard's ``report``."""
    closing_by_other = kind == "closed" and report["kind"] != "closed"  # new_profile
    return {
        "run_id": context.run_id,
        "alert_id": alert_id,
        "episode_id": e.episode_id,
        "event_kind": kind,
        "reason": reason,
        "model_id": e.model_id,
        "model_version": e.model_version,
        "feature": e.feature,
        "feature_kind": e.feature_kind,
        "source": context.source,
        "shard": int(report["shard"]),
        "component": "" if closing_by_other else str(report["component"]),
        "event_time": int(report["event_time"]),
        "prediction_id": str(report["prediction_id"]),
        "observation_index": max(int(report["count"]) - 1, 0),
        "statistic": 0.0 if closing_by_other else float(report["statistic"]),
        "threshold": 0.0 if closing_by_other else float(report["threshold"]),
        "arl": e.arl,
        "magnitude": e.magnitude if kind == "closed" else float(report["magnitude"]),
        # the unit of that magnitude: the shard's reading, which the episode's row (the unit of
        # most of its shards' values) may not share (an escalation in scale of a shift episode)
        "unit": e.unit if kind == "closed" else str(report.get("unit") or e.unit),
        "reference_id": e.reference_id,
        "config_hash": context.config_hash,
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class ComparisonRowContext:
    """What every ``version_comparison`` row of one champion/challenger pair shares."""

    run_id: str
    model_id: str
    champion: str
    challenger: str
    mode: str  # shadow | canary
    paired: bool
    interval_s: int


def version_comparison_row(context: ComparisonRowContext, segment: str, time: int, metric: str,
                           window: WindowComparison, n_unpaired: int, test: SequentialComparison,
                           decision: str, decided_now: bool, decided_at: int | None) -> dict[str, Any]:
    """A ``version_comparison`` row: one interval's ``window`` of the pair in ``segment``, the
    sequential ``test``'s state after it and the pair's latest ``decision`` ('' = none yet).
    ``metric`` 'accuracy' (losses are 0/1 errors) or 'mae'."""
    def value(loss: float) -> float | None:
        return _finite(1.0 - loss if metric == "accuracy" else loss)

    return {
        "run_id": context.run_id,
        "model_id": context.model_id,
        "champion_version": context.champion,
        "challenger_version": context.challenger,
        "segment": segment,
        "time": time,
        "interval_s": context.interval_s,
        "mode": context.mode,
        "paired": int(context.paired),
        "metric": metric,
        "n_champion": window.n_champion,
        "n_challenger": window.n_challenger,
        "n_unpaired": n_unpaired,
        "champion_value": value(window.champion_loss),
        "challenger_value": value(window.challenger_loss),
        "difference": _finite(window.difference),
        "difference_low": _finite(window.low),
        "difference_high": _finite(window.high),
        "n_tested": test.n,
        "cumulative_difference": _finite(test.difference),
        "likelihood_ratio": _finite(test.likelihood_ratio),
        "p_value": test.p_value,
        "decision": decision,
        "decided_now": int(decided_now),
        "decided_at": decided_at,
    }


# -- multivariate drift, outlier rate, estimated performance (stage 2, overall windows) -------------


def multivariate_drift_row(
    window: Mapping[str, Any],
    n_events: int,
    mean_error: float,
    reference_mean_error: float | None,
    share_above_p99: float,
    domain: Any,
    domain_status: str,
    reference_id: str,
    config_hash: str,
) -> dict[str, Any]:
    """A ``multivariate_drift`` row; ``domain`` is a DomainResult, or None when the classifier did
    not run on this window, ``domain_status`` says why ('scored' when it ran)."""
    return {
        **window,
        "n_events": n_events,
        "mean_error": finite(mean_error),
        "reference_mean_error": finite(reference_mean_error),
        "share_above_p99": finite(share_above_p99),
        "n_sample": domain.n_window if domain is not None else 0,
        "auc": finite(domain.auc) if domain is not None else None,
        "auc_threshold": finite(domain.threshold) if domain is not None else None,
        "drifted": int(domain.drifted) if domain is not None else 0,
        "top_features": [f for f, _ in domain.top_features] if domain is not None else [],
        "top_importances": [float(v) for _, v in domain.top_features] if domain is not None else [],
        "domain_status": domain_status,
        "reference_id": reference_id,
        "config_hash": config_hash,
    }


def outlier_rate_row(window: Mapping[str, Any], result: Any, reference_id: str,
                     config_hash: str) -> dict[str, Any]:
    """An ``outlier_rate`` row from an :class:`~driftline.operators.outliers.OutlierWindow`."""
    return {
        **window,
        "n_events": result.n,
        "outliers": result.outliers,
        "rate": finite(result.share),
        "expected_rate": float(result.expected),
        "p_value": finite(result.p_value),
        "significant": int(result.significant),
        "reference_id": reference_id,
        "config_hash": config_hash,
    }


def estimated_performance_row(window: Mapping[str, Any], estimate: Any, reference_id: str,
                              config_hash: str) -> dict[str, Any]:
    """An ``estimated_performance`` row from a :class:`~driftline.operators.cbpe.PerformanceEstimate`."""
    return {
        **window,
        "n_scored": estimate.n,
        "accuracy": finite(estimate.accuracy),
        "accuracy_sd": finite(estimate.accuracy_sd),
        "accuracy_low": finite(estimate.low),
        "accuracy_high": finite(estimate.high),
        "f1": finite(estimate.f1),
        "roc_auc": finite(estimate.roc_auc),
        "reference_id": reference_id,
        "config_hash": config_hash,
    }
