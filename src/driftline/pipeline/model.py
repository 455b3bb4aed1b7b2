"""Stage 2: one shard = one partition of model-events (a subset of the models).

Closes a window only when every stage-1 shard's progress has passed its end, merges the shards'
partials in shard order, scores drift against the model's reference profile, runs the online
performance estimators over outcomes in canonical ``(label_time, prediction_id)`` order per
event-time bucket, and feeds the retrain policy. Results depend only on the *content* of the
log — duplicates and the interleaving of shards change nothing.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from driftline.config import Settings
from driftline.operators.drift import FeatureScore, score_feature, verdicts
from driftline.operators.feature_watch import ERROR_FEATURE, ErrorWatch
from driftline.operators.performance import OnlinePerformance
from driftline.operators.profile import FeatureProfile, ReferenceProfile, profile_from_window
from driftline.operators.triggers import EpisodeNote, RetrainPolicy
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import FeatureStats, MergedWindow, merge_partials
from driftline.pipeline import records
from driftline.pipeline.episodes import EpisodeMerger, MergeOutput
from driftline.pipeline.gauges import gauge_key
from driftline.pipeline.shard import NO_TIME, episode_grid_ms, window_segments
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.state import (
    FRESH_STATE_HINT,
    StateRestoreError,
    dump_state,
    load_state,
    settings_record,
    warn_if_changed,
)

PREDICTION_FEATURE = "__prediction__"
PREDICTION_VALUE_FEATURE = "__prediction_value__"
LATENCY_FEATURE = "__latency_ms__"

LATEST = 2**62  # "any effective_from"
MAX_REMEMBERED_TRIGGERS = 10_000

# (window size s, window start ms, model_id, model_version, segment)
WindowKey = tuple[int, int, str, str, str]


@dataclass
class Bucket:
    """Outcomes and expiries of one model in one event-time metrics interval, deduplicated by id."""

    outcomes: dict[str, tuple[str, int, int, int | None, float | None]] = field(default_factory=dict)
    expired: dict[str, str] = field(default_factory=dict)  # prediction_id -> segment tags
    rerouted: set[str] = field(default_factory=set)  # outcomes whose prediction or label was re-routed
    orphans: dict[tuple[str, int], str] = field(default_factory=dict)  # (prediction_id, label_time) -> reason


@dataclass
class SegmentTally:
    n: int = 0
    correct: int = 0
    n_correct_known: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0
    n_error_known: int = 0
    expired: int = 0
    orphans: int = 0
    rerouted: int = 0
    delays: list[int] = field(default_factory=list)
    alarm: bool = False  # the River detector alarmed in this interval
    sequential_alarm: bool = False  # the sequential error-stream detector alarmed


class ModelProcessor:
    """Stage-2 state machine of one model-events partition (see module docstring)."""

    stage = "model"

    def __init__(self, shard: int, settings: Settings, run_id: str = "") -> None:
        self.shard = shard
        self.run_id = run_id
        self.pred_progress = [NO_TIME] * settings.topics.partitions
        self.outcome_progress = [NO_TIME] * settings.topics.partitions
        self.closed_windows_until = NO_TIME
        self.closed_buckets_until = NO_TIME
        self.partials: dict[WindowKey, dict[int, dict[str, Any]]] = {}
        self.buckets: dict[tuple[str, str], dict[int, Bucket]] = defaultdict(dict)
        self.profiles: dict[tuple[str, str], list[ReferenceProfile]] = defaultdict(list)
        self.performance: dict[tuple[str, str, str], OnlinePerformance] = {}
        self.outcomes_total: Counter[tuple[str, str, str]] = Counter()
        self.performance_reference: dict[tuple[str, str], float] = {}
        self.published_triggers: dict[str, None] = {}  # insertion-ordered set, bounded
        self.last_drifted: dict[tuple[str, str], int] = {}  # features drifted in the latest policy window
        self.policy = RetrainPolicy(settings.triggers, settings.config_hash(), run_id)
        self.totals: Counter[str] = Counter()
        self._init_duplicates(settings.topics.partitions)
        self.configure(settings)

    def _init_duplicates(self, partitions: int) -> None:
        """Exact re-sends per (model, version) and interval start, by source record (kind,
        partition, offset) -> segment tags; closed on the shards' duplicate progress."""
        self.duplicate_progress = [NO_TIME] * partitions
        self.closed_duplicates_until = NO_TIME
        self.duplicates: dict[tuple[str, str], dict[int, dict[tuple[str, int, int], str]]] = defaultdict(dict)

    def configure(self, settings: Settings) -> None:
        """Attach the settings and set every value derived from them: on creation and on every
        restore, so a restarted stage applies today's settings (the checkpoint holds state only,
        see :mod:`driftline.pipeline.state`). Detectors already calibrated keep their calibration."""
        if len(self.pred_progress) != settings.topics.partitions:
            raise StateRestoreError(
                f"stage-2 shard {self.shard}: its state follows {len(self.pred_progress)} input partitions "
                f"but topics.partitions is {settings.topics.partitions}; {FRESH_STATE_HINT}"
            )
        self.settings = settings
        self.settings_record = settings_record(settings)
        self.config_hash = settings.config_hash()
        self.profiles_topic = settings.topics.profiles
        self.sink_topic = settings.topics.sink
        self.triggers_topic = settings.topics.retrain_triggers
        self.n_source_shards = settings.topics.partitions
        self.interval_ms = settings.windows.metrics_interval_s * 1000
        self.min_size_s = min(settings.windows.sizes_s)
        self.policy_size_s = settings.triggers.window_size_s or self.min_size_s
        self.policy.configure(settings.triggers, self.config_hash)
        self.policy.episodes_count_as_drift = settings.sequential.count_as_drift
        if "episodes" not in self.__dict__:  # new, or a checkpoint from before drift episodes
            self._init_alerts(settings)
        self.episodes.config_hash = self.error_episodes.config_hash = self.config_hash

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["settings"]  # configuration (and secrets) stay out of checkpoints
        return state

    def _init_alerts(self, settings: Settings) -> None:
        """Drift episodes: stage 1's reports merged on the window clock, the error stream's on the
        label clock (one merger each: their clocks differ)."""
        grid_ms, interval_ms = episode_grid_ms(settings), settings.windows.metrics_interval_s * 1000
        self.episodes = EpisodeMerger(grid_ms, "features", self.run_id)
        self.error_episodes = EpisodeMerger(interval_ms, "errors", self.run_id)
        # episode events (drift_alerts rows) awaiting the policy window that holds them
        self.pending_alerts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.error_watch: dict[tuple[str, str], ErrorWatch] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for buckets in self.buckets.values():  # buckets pickled before re-routing existed
            for bucket in buckets.values():
                bucket.__dict__.setdefault("rerouted", set())
                bucket.__dict__.setdefault("orphans", {})
        if "duplicates" not in state:  # a checkpoint from before duplicates were counted
            self._init_duplicates(len(self.pred_progress))
        if "episodes" not in state:  # a checkpoint from before drift episodes: configure starts them
            for name in ("seen_alerts", "_alert_rows", "error_watch", "pending_alerts"):
                self.__dict__.pop(name, None)

    # -- the stage protocol -----------------------------------------------------------------

    def process(self, batch: Sequence[RawRecord]) -> list[OutboundMessage]:
        for record in batch:
            if record.topic == self.profiles_topic:
                self._on_profile(record.value)
                continue
            if record.topic == self.triggers_topic:
                self._on_published_trigger(record.value)
                continue
            try:
                message = records.decode(record.value or b"")
                self._on_message(message)
            except (ValueError, KeyError, TypeError):
                # Internal topic written only by stage 1: a bad record is a bug, not user input.
                self.totals["bad_internal_records"] += 1
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        out: list[OutboundMessage] = []
        self._close_windows(rows, out)
        self._close_buckets(rows, out)
        self._close_duplicates(rows)
        for table in sorted(rows):
            out.extend(records.sink_rows(self.sink_topic, table, rows[table]))
        return out

    def snapshot(self) -> bytes:
        return dump_state(self)

    @staticmethod
    def restore(blob: bytes, settings: Settings, what: str = "stage-2 shard") -> ModelProcessor:
        """The checkpointed shard, running with ``settings`` (today's, not the checkpoint's)."""
        processor = load_state(blob, ModelProcessor, what)
        recorded = processor.__dict__.get("settings_record")
        if recorded is None and "settings" in processor.__dict__:  # state format 1 pickled its settings
            with contextlib.suppress(Exception):  # settings of an older driftline may not dump
                recorded = settings_record(processor.__dict__["settings"])
        warn_if_changed(what, recorded, settings)
        processor.configure(settings)
        return processor

    def gauges(self) -> dict[str, float]:
        figures = {f"{k}_total": float(v) for k, v in self.totals.items()}
        for (model_id, version), n_drifted in self.last_drifted.items():
            key = gauge_key("model_drifted_features", model_id=model_id, model_version=version)
            figures[key] = float(n_drifted)
        figures["open_windows"] = float(len(self.partials))
        figures["open_buckets"] = float(sum(len(b) for b in self.buckets.values()))
        figures["open_drift_episodes"] = float(self.episodes.open_count() + self.error_episodes.open_count())
        figures["window_progress_ms"] = float(max(min(self.pred_progress), 0))
        figures["outcome_progress_ms"] = float(max(min(self.outcome_progress), 0))
        for (model_id, version, segment), perf in self.performance.items():
            if segment:
                continue
            for name, value in perf.get().items():
                if isinstance(value, int | float) and name.endswith("_ew"):
                    key = gauge_key(f"model_{name}", model_id=model_id, model_version=version)
                    figures[key] = float(value)
        return figures

    # -- input ------------------------------------------------------------------------------

    def _on_profile(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            profile = ReferenceProfile.model_validate_json(value)
        except ValueError:
            self.totals["bad_profiles"] += 1
            return
        known = self.profiles[(profile.model_id, profile.model_version)]
        if all(p.profile_id != profile.profile_id for p in known):
            known.append(profile)
            known.sort(key=lambda p: (p.effective_from_ms, p.profile_id))

    def _on_published_trigger(self, value: bytes | None) -> None:
        # A restarted stage re-derives the triggers it fired after its last checkpoint; the ones
        # already on the topic (delivered here before any input) are not produced a second time.
        try:
            trigger_id = orjson.loads(value or b"{}").get("trigger_id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(trigger_id, str):
            self.published_triggers[trigger_id] = None
            while len(self.published_triggers) > MAX_REMEMBERED_TRIGGERS:
                del self.published_triggers[next(iter(self.published_triggers))]

    def _on_message(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        shard = int(m["shard"])
        if not 0 <= shard < self.n_source_shards:
            raise ValueError(f"shard {shard} outside the configured {self.n_source_shards} partitions")
        if kind == records.PROGRESS:
            self.pred_progress[shard] = max(self.pred_progress[shard], int(m["pred_progress"]))
            self.outcome_progress[shard] = max(self.outcome_progress[shard], int(m["outcome_progress"]))
            duplicate_progress = m.get("duplicate_progress", min(m["pred_progress"], m["outcome_progress"]))
            self.duplicate_progress[shard] = max(self.duplicate_progress[shard], int(duplicate_progress))
        elif kind == records.PARTIAL:
            if m["window_end"] <= self.closed_windows_until:
                self.totals["duplicate_partials"] += 1  # re-sent by a restarted shard
                return
            key = (
                int(m["window_size_s"]),
                int(m["window_start"]),
                m["model_id"],
                m["model_version"],
                m["segment"],
            )
            self.partials.setdefault(key, {})[shard] = m["partial"]
        elif kind == records.OUTCOMES:
            buckets = self.buckets[(m["model_id"], m["model_version"])]
            m.setdefault("rerouted", [0] * len(m["prediction_id"]))  # sent before re-routing existed
            for pid, seg, label_time, delay, correct, abs_error, rerouted in zip(
                *(m[f] for f in records.OUTCOME_FIELDS), strict=True
            ):
                start = label_time - label_time % self.interval_ms
                if start + self.interval_ms <= self.closed_buckets_until:
                    self.totals["duplicate_outcomes"] += 1
                    continue
                bucket = buckets.setdefault(start, Bucket())
                bucket.outcomes[pid] = (
                    seg,
                    label_time,
                    delay,
                    correct,
                    abs_error,
                )
                if rerouted:
                    bucket.rerouted.add(pid)
        elif kind == records.EPISODES:
            for report in m["reports"]:
                self.episodes.add({**report, "shard": shard, "model_id": m["model_id"],
                                   "model_version": m["model_version"]})
        elif kind == records.EXPIRED:
            buckets = self.buckets[(m["model_id"], m["model_version"])]
            for pid, seg, expired_at in zip(*(m[f] for f in records.EXPIRED_FIELDS), strict=True):
                start = expired_at - expired_at % self.interval_ms
                if start + self.interval_ms <= self.closed_buckets_until:
                    continue
                buckets.setdefault(start, Bucket()).expired[pid] = seg
        elif kind == records.ORPHANS:
            buckets = self.buckets[(m["model_id"], m["model_version"])]
            for pid, label_time, reason in zip(*(m[f] for f in records.ORPHAN_FIELDS), strict=True):
                start = label_time - label_time % self.interval_ms
                if start + self.interval_ms <= self.closed_buckets_until:
                    continue
                buckets.setdefault(start, Bucket()).orphans[(pid, label_time)] = reason
        elif kind == records.DUPLICATES:
            intervals = self.duplicates[(m["model_id"], m["model_version"])]
            for dup_kind, seg, event_time, partition, offset in zip(
                *(m[f] for f in records.DUPLICATE_FIELDS), strict=True
            ):
                start = event_time - event_time % self.interval_ms
                if start + self.interval_ms <= self.closed_duplicates_until:
                    self.totals["duplicates_after_close"] += 1  # cannot happen: shards hold progress
                    continue
                intervals.setdefault(start, {})[(dup_kind, partition, offset)] = seg
        else:
            raise ValueError(f"unknown internal record type {kind!r}")

    def _merged(self, merged: MergeOutput, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Episode rows and events out; the events wait for the policy window holding them."""
        rows["drift_episodes"].extend(merged.rows)
        rows["drift_alerts"].extend(merged.events)
        self.totals["episode_events"] += len(merged.events)
        for event in merged.events:
            self.pending_alerts[(event["model_id"], event["model_version"])].append(event)

    def _take_alerts(self, model_id: str, version: str, end: int) -> list[dict[str, Any]]:
        """Pending episode events of a model before `end`, in the order they were applied."""
        pending = self.pending_alerts.get((model_id, version))
        if not pending:
            return []
        taken = [a for a in pending if a["event_time"] < end]
        self.pending_alerts[(model_id, version)] = [a for a in pending if a["event_time"] >= end]
        return taken

    # -- windows ----------------------------------------------------------------------------

    def _profile_for(self, model_id: str, version: str, start: int) -> ReferenceProfile | None:
        usable = [p for p in self.profiles.get((model_id, version), []) if p.effective_from_ms <= start]
        trained = [p for p in usable if p.source == "training"]
        chosen = trained or usable
        return chosen[-1] if chosen else None

    def _close_windows(self, rows: dict[str, list[dict[str, Any]]], out: list[OutboundMessage]) -> None:
        watermark = min(self.pred_progress)
        if watermark <= self.closed_windows_until:
            return
        # Episode reports first: every window closing now sees the episode events before its end.
        self._merged(self.episodes.advance(watermark), rows)
        due = sorted(
            (k for k in self.partials if k[1] + k[0] * 1000 <= watermark),
            key=lambda k: (k[1] + k[0] * 1000, k[0], k[2], k[3], k[4]),
        )
        for key in due:
            parts = self.partials.pop(key)
            merged = merge_partials([parts[s] for s in sorted(parts)])
            self._score_window(key, merged, rows, out)
            self.totals["windows_closed"] += 1
        self.closed_windows_until = watermark

    def _score_window(
        self,
        key: WindowKey,
        merged: MergedWindow,
        rows: dict[str, list[dict[str, Any]]],
        out: list[OutboundMessage],
    ) -> None:
        size_s, start, model_id, version, segment = key
        end = start + size_s * 1000
        profile = self._profile_for(model_id, version, start)
        drift = self.settings.drift
        if (
            profile is None
            and segment == ""
            and size_s == self.min_size_s
            and merged.n_events >= drift.min_count
        ):
            # No training profile: the model's first full window becomes its reference.
            profile = profile_from_window(merged, model_id, version, start, drift.bins, drift.top_k)
            profile = profile.model_copy(update={"effective_from_ms": end})
            self.profiles[(model_id, version)].append(profile)
            rows["reference_profiles"].append(
                {
                    "model_id": model_id,
                    "model_version": version,
                    "profile_id": profile.profile_id,
                    "created_at": end,
                    "effective_from": end,
                    "source": profile.source,
                    "profile": profile.model_dump_json(),
                }
            )
            profile = None  # the reference window itself is not scored against itself
        base = {
            "run_id": self.run_id,
            "model_id": model_id,
            "model_version": version,
            "window_size_s": size_s,
            "segment": segment,
            "window_start": start,
            "window_end": end,
        }
        reference_id = profile.profile_id if profile else ""
        scores: dict[str, FeatureScore] = {}
        for name in sorted(merged.features):
            stats = merged.features[name]
            fprofile = profile.features.get(name) if profile else None
            score = score_feature(fprofile, stats, drift) if fprofile is not None else None
            if score is not None:
                scores[name] = score
            rows["feature_windows"].append(
                _feature_window_row(base, name, _kind(stats, fprofile), stats, score, reference_id)
            )
        # The prediction distribution is scored like a feature: class labels against a categorical
        # reference, regression values (or scores) against a numeric one.
        prediction_profile = profile.prediction if profile else None
        label_profile = (
            prediction_profile if prediction_profile and prediction_profile.kind == "categorical" else None
        )
        value_profile = (
            prediction_profile if prediction_profile and prediction_profile.kind == "numeric" else None
        )
        extra: list[tuple[str, str, FeatureStats, FeatureProfile | None]] = [
            (PREDICTION_FEATURE, "prediction", merged.prediction_label, label_profile),
            (PREDICTION_VALUE_FEATURE, "prediction", merged.prediction_value, value_profile),
            (LATENCY_FEATURE, "latency", merged.latency, None),
        ]
        prediction_score: FeatureScore | None = None
        prediction_name = PREDICTION_FEATURE
        for name, kind, extra_stats, fprofile in extra:
            if extra_stats.count - extra_stats.missing <= 0:
                continue
            score = score_feature(fprofile, extra_stats, drift) if fprofile is not None else None
            if score is not None:
                prediction_score = score
                prediction_name = name
            rows["feature_windows"].append(
                _feature_window_row(base, name, kind, extra_stats, score, reference_id)
            )
        if profile is None:
            return
        verdict = verdicts(scores, drift)
        for name, score in scores.items():
            fv = verdict.features[name]
            rows["drift_scores"].append(
                _drift_row(
                    base, name, score, fv.drifted, fv.drifted_by, fv.p_adj, reference_id, self.config_hash
                )
            )
        if prediction_score is not None:
            rows["drift_scores"].append(
                _drift_row(
                    base,
                    prediction_name,
                    prediction_score,
                    False,
                    [],
                    prediction_score.pvalue,
                    reference_id,
                    self.config_hash,
                )
            )
        rows["model_drift"].append(
            {
                **base,
                "n_events": merged.n_events,
                "n_features": len(scores),
                "n_drifted": len(verdict.drifted_features),
                "drifted": int(verdict.drifted),
                "drifted_features": list(verdict.drifted_features),
                "reference_id": reference_id,
                "config_hash": self.config_hash,
            }
        )
        if segment == "" and size_s == self.policy_size_s:
            self.last_drifted[(model_id, version)] = len(verdict.drifted_features)
            alerts = self._take_alerts(model_id, version, end)
            evidence: dict[str, Any] = {
                "window_size_s": size_s,
                "drifted_features": {n: _score_evidence(scores[n]) for n in verdict.drifted_features},
                "reference_id": reference_id,
            }
            notes = [EpisodeNote(a["episode_id"], a["feature"], a["event_kind"], a["event_time"],
                                 a["magnitude"], a["unit"]) for a in alerts if a["source"] == "features"]
            if notes:
                evidence["episode_events"] = [n.evidence() for n in notes]
            trigger = self.policy.on_drift_window(model_id, version, start, end, bool(verdict.drifted),
                                                  evidence, notes)
            if trigger is not None:
                self._emit_trigger(trigger, out)

    # -- outcome buckets --------------------------------------------------------------------

    def _close_buckets(self, rows: dict[str, list[dict[str, Any]]], out: list[OutboundMessage]) -> None:
        watermark = min(self.outcome_progress)
        if watermark <= self.closed_buckets_until:
            return
        for model_key in sorted(self.buckets):
            buckets = self.buckets[model_key]
            for start in sorted(s for s in buckets if s + self.interval_ms <= watermark):
                self._close_bucket(model_key, start, buckets.pop(start), rows, out)
        self.closed_buckets_until = watermark

    def _close_duplicates(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        """A ``duplicates`` row of model_metrics per (model, version, segment) and interval with
        exact re-sends, once every shard's duplicate progress passed the interval's end."""
        watermark = min(self.duplicate_progress)
        if watermark <= self.closed_duplicates_until:
            return
        for (model_id, version) in sorted(self.duplicates):
            intervals = self.duplicates[(model_id, version)]
            for start in sorted(s for s in intervals if s + self.interval_ms <= watermark):
                counts: dict[str, Counter[str]] = defaultdict(Counter)
                for (dup_kind, _, _), tags in intervals.pop(start).items():
                    for segment in window_segments(tags):
                        counts[segment][dup_kind] += 1
                end = start + self.interval_ms
                for segment in sorted(counts):
                    perf = self.performance.get((model_id, version, segment))
                    row = self._metrics_row(
                        model_id, version, segment, "duplicates", end, SegmentTally(), perf
                    )
                    row.update(n_duplicate_predictions=counts[segment]["prediction"],
                               n_duplicate_labels=counts[segment]["label"])
                    rows["model_metrics"].append(row)
            if not intervals:
                del self.duplicates[(model_id, version)]
        self.closed_duplicates_until = watermark

    def _perf(self, model_id: str, version: str, segment: str, regression: bool) -> OnlinePerformance:
        key = (model_id, version, segment)
        perf = self.performance.get(key)
        if perf is None:
            cfg = self.settings.performance
            # DDM watches a binary error stream; regression errors are continuous, so ADWIN instead.
            detector = "adwin" if regression and cfg.detector == "ddm" else cfg.detector
            perf = self.performance[key] = OnlinePerformance(
                "regression" if regression else "classification",
                cfg.fading_factor,
                detector,
                cfg.detector_delta,
            )
        return perf

    def _close_bucket(
        self,
        model_key: tuple[str, str],
        start: int,
        bucket: Bucket,
        rows: dict[str, list[dict[str, Any]]],
        out: list[OutboundMessage],
    ) -> None:
        model_id, version = model_key
        end = start + self.interval_ms
        tallies: dict[str, SegmentTally] = defaultdict(SegmentTally)
        ordered = sorted(bucket.outcomes.items(), key=lambda item: (item[1][1], item[0]))
        for pid, (tags, label_time, delay, correct, abs_error) in ordered:
            regression = correct is None and abs_error is not None
            for segment in window_segments(tags):
                perf = self._perf(model_id, version, segment, regression)
                tally = tallies[segment]
                tally.n += 1
                tally.rerouted += pid in bucket.rerouted
                tally.delays.append(delay)
                if correct is not None:
                    tally.correct += correct
                    tally.n_correct_known += 1
                if abs_error is not None:
                    tally.abs_error += abs_error
                    tally.sq_error += abs_error * abs_error
                    tally.n_error_known += 1
                self.outcomes_total[(model_id, version, segment)] += 1
                if perf.update(correct, abs_error):
                    tally.alarm = True
                    rows["model_metrics"].append(
                        self._metrics_row(
                            model_id, version, segment, "alarm", label_time, None, perf, pid=pid
                        )
                    )
        if self.settings.sequential.enabled:
            self._watch_errors(model_id, version, end, ordered, tallies, rows)
        for tags in bucket.expired.values():
            for segment in window_segments(tags):
                tallies[segment].expired += 1
        if bucket.orphans:  # a label names no segment: counted overall only
            tallies[""].orphans += len(bucket.orphans)
        for segment in sorted(tallies):
            tally = tallies[segment]
            current = self.performance.get((model_id, version, segment))
            rows["model_metrics"].append(
                self._metrics_row(model_id, version, segment, "interval", end, tally, current)
            )
            if segment == "" and current is not None and tally.n > 0:
                self._performance_policy(model_id, version, end, start, current, tally, out)

    def _watch_errors(
        self,
        model_id: str,
        version: str,
        end: int,
        ordered: list[tuple[str, tuple[str, int, int, int | None, float | None]]],
        tallies: dict[str, SegmentTally],
        rows: dict[str, list[dict[str, Any]]],
    ) -> None:
        """The sequential detector on the model's error stream, in canonical outcome order."""
        labelled = [(pid, label_time, correct) for pid, (_, label_time, _, correct, _) in ordered
                    if correct is not None]
        if not labelled:
            return
        watch = self.error_watch.get((model_id, version))
        if watch is None:
            cfg = self.settings.sequential
            accuracy = self._baseline(model_id, version, "accuracy")
            profile = self._profile_for(model_id, version, LATEST)
            baseline_n = profile.prediction.n if profile is not None and profile.prediction else None
            watch = self.error_watch[(model_id, version)] = ErrorWatch(
                1_000_000.0 / cfg.error_false_alarms_per_million,
                cfg.error_warmup,
                None if accuracy is None else 1.0 - accuracy,
                baseline_n=baseline_n,
                min_ratio=cfg.min_error_ratio,
                learning=cfg.learning,
            )
        reports = watch.observe([1 - c for _, _, c in labelled], [t for _, t, _ in labelled],
                                [pid for pid, _, _ in labelled], as_of=end - 1)
        for report in reports:
            self.error_episodes.add({**report, "shard": self.shard, "model_id": model_id,
                                     "model_version": version})
        merged = self.error_episodes.advance(end, (model_id, version))
        self._merged(merged, rows)
        # The error stream counts as alarming while its episode is open, or opened/escalated here.
        if self.error_episodes.is_open(model_id, version, ERROR_FEATURE) or any(
                e["event_kind"] != "closed" for e in merged.events):
            tallies[""].sequential_alarm = True

    def _baseline(self, model_id: str, version: str, metric: str) -> float | None:
        profile = self._profile_for(model_id, version, LATEST)
        if profile is not None and metric in profile.baseline:
            return float(profile.baseline[metric])
        return None

    def _performance_policy(
        self,
        model_id: str,
        version: str,
        end: int,
        start: int,
        perf: OnlinePerformance,
        tally: SegmentTally,
        out: list[OutboundMessage],
    ) -> None:
        figures = perf.get()
        regression = "mae_ew" in figures
        metric = "mae" if regression else "accuracy"
        value = figures.get(f"{metric}_ew")
        if value is None:
            return
        reference = self._baseline(model_id, version, metric)
        if reference is None:
            # Without a training baseline the first well-populated interval is the reference.
            if (model_id, version) not in self.performance_reference:
                if self.outcomes_total[(model_id, version, "")] < self.settings.drift.min_count:
                    return
                self.performance_reference[(model_id, version)] = float(value)
            reference = self.performance_reference[(model_id, version)]
        evidence = {
            "metric": metric,
            "value": value,
            "reference": reference,
            "interval_start": start,
            "interval_end": end,
            "n_outcomes": tally.n,
            "alarms_total": figures.get("alarms_total", 0),
        }
        if tally.sequential_alarm:
            evidence["sequential_alarm"] = True
        alarm = tally.alarm or tally.sequential_alarm
        for trigger in self.policy.on_performance(
            model_id, version, end, float(value), reference, not regression, alarm, evidence
        ):
            self._emit_trigger(trigger, out)

    def _metrics_row(
        self,
        model_id: str,
        version: str,
        segment: str,
        kind: str,
        time: int,
        tally: SegmentTally | None,
        perf: OnlinePerformance | None,
        pid: str = "",
    ) -> dict[str, Any]:
        figures = perf.get() if perf is not None else {}
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "model_id": model_id,
            "model_version": version,
            "segment": segment,
            "row_kind": kind,
            "time": time,
            "interval_s": self.interval_ms // 1000,
            "n_outcomes_total": self.outcomes_total[(model_id, version, segment)],
            "accuracy_ew": figures.get("accuracy_ew"),
            "mae_ew": figures.get("mae_ew"),
            "rmse_ew": figures.get("rmse_ew"),
            "detector": self.settings.performance.detector,
            "alarms_total": int(figures.get("alarms_total") or 0),
            "baseline": self._baseline(model_id, version, "mae" if "mae_ew" in figures else "accuracy"),
            "n_duplicate_predictions": 0,  # counted on 'duplicates' rows only
            "n_duplicate_labels": 0,
        }
        if tally is None:
            row.update(alarm=1, n_outcomes=0, n_expired=0, n_orphan_labels=0, n_rerouted=0)
            return row
        # Every join that failed counts against coverage: a prediction no label came for, and a
        # label no prediction came for (e.g. produced to a partition nothing re-routed it from).
        resolved = tally.n + tally.expired + tally.orphans
        delays = np.asarray(tally.delays, dtype=np.float64)
        p50, p90, p99 = np.percentile(delays, [50, 90, 99]).tolist() if delays.size else (None, None, None)
        row.update(
            n_outcomes=tally.n,
            n_expired=tally.expired,
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

    def _emit_trigger(self, trigger: Any, out: list[OutboundMessage]) -> None:
        self.totals["triggers"] += 1
        if trigger.trigger_id in self.published_triggers:
            self.totals["triggers_already_published"] += 1
            return
        out.append(
            OutboundMessage(
                self.triggers_topic, trigger.model_id.encode(), trigger.model_dump_json().encode()
            )
        )


def _kind(stats: FeatureStats, profile: FeatureProfile | None) -> str:
    if profile is not None:
        return profile.kind
    return "categorical" if stats.categories and stats.n == 0 else "numeric"


def _opt(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _feature_window_row(
    base: dict[str, Any],
    name: str,
    kind: str,
    stats: FeatureStats,
    score: FeatureScore | None,
    reference_id: str,
) -> dict[str, Any]:
    quantiles = stats.sketch.quantiles(np.array([0.5, 0.9, 0.99])).tolist() if stats.n else [None, None, None]
    return {
        **base,
        "feature": name,
        "feature_kind": kind,
        "count": stats.count,
        "missing": stats.missing,
        "invalid": stats.invalid,
        "out_of_range": score.out_of_range if score is not None else 0,
        "mean": _opt(stats.mean) if stats.n else None,
        "variance": _opt(stats.variance) if stats.n else None,
        "min": _opt(stats.min) if stats.n else None,
        "max": _opt(stats.max) if stats.n else None,
        "p50": _opt(quantiles[0]),
        "p90": _opt(quantiles[1]),
        "p99": _opt(quantiles[2]),
        "bin_edges": [float(e) for e in score.bin_edges] if score is not None else [],
        "bin_labels": list(score.bin_labels) if score is not None else [],
        "histogram": [float(v) for v in score.histogram] if score is not None else [],
        "reference_histogram": [float(v) for v in score.reference_histogram] if score is not None else [],
        "reference_id": reference_id,
    }


def _drift_row(
    base: dict[str, Any],
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
        **base,
        "feature": name,
        "feature_kind": score.kind,
        "count": score.count,
        "psi": _opt(score.psi),
        "ks_stat": _opt(score.ks_stat),
        "ks_pvalue": _opt(score.ks_pvalue),
        "ks_pvalue_adj": None if is_categorical else _opt(p_adj),
        "js_distance": _opt(score.js_distance),
        "wasserstein": _opt(score.wasserstein),
        "chi2_stat": _opt(score.chi2_stat),
        "chi2_pvalue": _opt(score.chi2_pvalue),
        "chi2_pvalue_adj": _opt(p_adj) if is_categorical else None,
        "drifted": int(drifted),
        "drifted_by": list(drifted_by),
        "reference_id": reference_id,
        "config_hash": config_hash,
    }


def _score_evidence(score: FeatureScore) -> dict[str, float | None]:
    return {
        "psi": _opt(score.psi),
        "ks_stat": _opt(score.ks_stat),
        "js_distance": _opt(score.js_distance),
        "chi2_stat": _opt(score.chi2_stat),
    }


class ModelFactory:
    """Creates or restores stage-2 processors for the runner."""

    def __init__(self, settings: Settings, run_id: str = "") -> None:
        self.settings = settings
        self.run_id = run_id

    def create(self, shard: int) -> ModelProcessor:
        return ModelProcessor(shard, self.settings, self.run_id)

    def restore(self, shard: int, blob: bytes) -> ModelProcessor:
        processor = ModelProcessor.restore(blob, self.settings, f"stage-2 shard {shard}")
        if processor.shard != shard:
            raise ValueError(f"checkpoint of shard {processor.shard} offered for shard {shard}")
        return processor
