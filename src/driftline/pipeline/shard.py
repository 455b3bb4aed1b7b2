"""Stage 1: one shard = partition p of the predictions topic and partition p of the labels topic.

Validates, drops late events (by this partition's own event-time watermark), deduplicates and
joins predictions with labels, and accumulates per-window partial aggregates. Every output is a
function of the two partitions' logs alone — not of how they interleave, nor of wall time — so
a restored shard re-emits exactly what it emitted before a crash.
"""

from __future__ import annotations

import math
import pickle
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import orjson

from driftline.config import Settings, TopicSettings
from driftline.operators.feature_watch import FeatureAlert, FeatureWatch
from driftline.operators.join import ExpiredPrediction, JoinedOutcome, LabelJoin
from driftline.operators.profile import ReferenceProfile
from driftline.operators.validate import Decoder, RawRecord
from driftline.operators.window_stats import WindowAccumulator
from driftline.pipeline import records, reroute
from driftline.pipeline.stage import OutboundMessage
from driftline.schemas.events import LabelEvent, PredictionEvent

NO_TIME = -(2**62)  # watermark before any event
ACCUMULATE_CHUNK = 2048

# (window size ms, window start ms, model_id, model_version, segment)
WindowKey = tuple[int, int, str, str, str]


def alert_interval_ms(settings: Settings) -> int:
    """Interval of the per-feature alert rate limit (the smallest window unless configured)."""
    return (settings.sequential.alert_interval_s or min(settings.windows.sizes_s)) * 1000


def segment_tags(event: PredictionEvent, keys: Sequence[str]) -> str:
    """Canonical ``k=v;k=v`` of the configured segment keys the event carries ('' for none)."""
    return ";".join(f"{k}={event.segment[k]}" for k in keys if k in event.segment)


def window_segments(tags: str) -> list[str]:
    """Windows are kept overall ('') and per single segment tag."""
    return ["", *tags.split(";")] if tags else [""]


class ShardProcessor:
    """Stage-1 state machine of one shard (see module docstring)."""

    stage = "shard"

    def __init__(self, shard: int, settings: Settings, run_id: str = "") -> None:
        self.shard = shard
        self.run_id = run_id
        topics = settings.topics
        self.predictions_topic = topics.predictions
        self.labels_topic = topics.labels
        self.outcomes_topic = topics.outcomes
        self.dead_letters_topic = topics.dead_letters
        self.model_events_topic = topics.model_events
        self.model_events_partitions = topics.model_events_partitions
        self.sink_topic = topics.sink
        self.profiles_topic = topics.profiles
        self._init_rerouting(topics)
        self.watch = (
            FeatureWatch(settings.sequential.false_alarms_per_million, alert_interval_ms(settings))
            if settings.sequential.enabled
            else None
        )
        self.decoder = Decoder(
            settings.kafka.max_message_bytes,
            settings.windows.max_timestamp_skew_s * 1000,
            settings.windows.max_future_skew_s * 1000,
        )
        self.join = LabelJoin(
            settings.join.label_horizon_s * 1000, settings.join.max_pending, settings.join.max_held_labels
        )
        self.lateness_ms = settings.windows.allowed_lateness_s * 1000
        self.sizes_ms = [s * 1000 for s in settings.windows.sizes_s]
        self.segment_keys = list(settings.windows.segment_keys)
        self.progress_step_ms = math.gcd(*self.sizes_ms, settings.windows.metrics_interval_s * 1000)
        self.pred_watermark = NO_TIME
        self.label_watermark = NO_TIME
        self.open: dict[WindowKey, WindowAccumulator] = {}
        self.buffered: dict[WindowKey, tuple[list[Any], list[Any], list[Any]]] = {}
        self.sent_progress: tuple[int, int] = (NO_TIME, NO_TIME)
        self.totals: Counter[str] = Counter()

    # -- the stage protocol -----------------------------------------------------------------

    def process(self, batch: Sequence[RawRecord]) -> list[OutboundMessage]:
        out: list[OutboundMessage] = []
        for record in batch:
            if record.topic == self.profiles_topic:
                self._on_profile(record.value)
        predictions = [r for r in batch if r.topic == self.predictions_topic]
        labels = [r for r in batch if r.topic == self.labels_topic]
        valid_predictions, dead = self.decoder.predictions(predictions)
        valid_labels, dead_labels = self.decoder.labels(labels)
        dead.extend(dead_labels)
        # Records other shards read and re-routed here (decided on there: only joined here).
        arrived = self.inbox.accept([r for r in batch if r.topic == self.repartition_topic])
        rerouted_predictions, dead_arrived = self.decoder.predictions(arrived[reroute.PREDICTION])
        dead.extend(dead_arrived)
        rerouted_labels, dead_arrived = self.decoder.labels(arrived[reroute.LABEL])
        dead.extend(dead_arrived)
        self.totals["predictions_in"] += len(predictions)
        self.totals["labels_in"] += len(labels)
        self.totals["dead_lettered"] += len(dead)
        out.extend(
            OutboundMessage(self.dead_letters_topic, d.original_key, d.model_dump_json().encode())
            for d in dead
        )

        late_rows: list[dict[str, Any]] = []
        outcomes: list[JoinedOutcome] = []
        forwarded: list[OutboundMessage] = []
        alerts = self._apply_predictions(valid_predictions, outcomes, late_rows, forwarded)
        self._emit_alerts(alerts, out)
        self._apply_labels(valid_labels, outcomes, late_rows, forwarded)
        self._apply_rerouted(rerouted_predictions, rerouted_labels, outcomes)
        expired = self.join.advance(self.join_watermark(reroute.PREDICTION), self.join_watermark(reroute.LABEL))
        orphans = self.join.take_orphans()
        self.totals["joined"] += len(outcomes)
        self.totals["expired_unlabeled"] += len(expired)
        self.totals["late"] += len(late_rows)

        if late_rows:
            out.extend(records.sink_rows(self.sink_topic, "late_events", late_rows))
        closed = self._close_windows(out)
        self._emit_outcomes(outcomes, expired, out)
        self._emit_columns(records.ORPHANS, records.ORPHAN_FIELDS, orphans, out)
        self._emit_progress(out, force=closed > 0)
        out.extend(forwarded)
        self._emit_source_watermarks(out)
        return out

    def finish(self, end_ms: int) -> list[OutboundMessage]:
        """A bounded input (a replay) has ended: no event before ``end_ms`` will come. Both
        watermarks move to ``end_ms``, so every window ending by then closes (and, in stage 2,
        every outcome bucket); windows ending later stay open (``self.open``). The live worker
        never calls this: its input has no end."""
        self.pred_watermark = max(self.pred_watermark, end_ms)
        self.label_watermark = max(self.label_watermark, end_ms)
        out = self.process(())
        self._emit_progress(out, force=True)
        return out

    def snapshot(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before sequential detection existed restore without it.
        state.setdefault("watch", None)
        state.setdefault("profiles_topic", "")
        self.__dict__.update(state)

    @staticmethod
    def restore(blob: bytes) -> ShardProcessor:
        processor = pickle.loads(zlib.decompress(blob))
        if not isinstance(processor, ShardProcessor):
            raise TypeError("checkpoint is not a stage-1 shard")
        return processor

    def gauges(self) -> dict[str, float]:
        figures: dict[str, float] = {f"{k}_total": float(v) for k, v in self.totals.items()}
        figures.update(
            pending_predictions=float(self.join.pending_count),
            held_labels=float(self.join.held_count),
            open_windows=float(len(self.open)),
            sequential_detectors=float(self.watch.detector_count() if self.watch else 0),
            sequential_alarms_suppressed_total=float(self.watch.suppressed if self.watch else 0),
            prediction_watermark_ms=float(max(self.pred_watermark, 0)),
            label_watermark_ms=float(max(self.label_watermark, 0)),
        )
        for name, value in self.join.counters.items():
            figures[f"join_{name}_total"] = float(value)
        return figures

    # -- internals --------------------------------------------------------------------------

    def _late_row(
        self, record: RawRecord, kind: str, event: PredictionEvent | LabelEvent, watermark: int
    ) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
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

    def _apply_predictions(
        self,
        valid: list[tuple[RawRecord, PredictionEvent]],
        outcomes: list[JoinedOutcome],
        late_rows: list[dict[str, Any]],
        forwarded: list[OutboundMessage],
    ) -> list[FeatureAlert]:
        # Batch the window updates: one vectorised add per (window, model, version, segment).
        grouped: dict[WindowKey, tuple[list[Any], list[Any], list[Any]]] = defaultdict(lambda: ([], [], []))
        duplicates = self.join.counters.get("duplicate_predictions", 0)
        watched = self.watch is not None and bool(self.watch.models)
        # (model, version) -> (times, ids, features) of accepted events, in log order
        per_model: dict[tuple[str, str], tuple[list[int], list[str], list[Any]]] = defaultdict(
            lambda: ([], [], [])
        )
        for record, event in valid:
            ts = event.timestamp
            if ts < self.pred_watermark:
                late_rows.append(self._late_row(record, "prediction", event, self.pred_watermark))
                continue
            self.pred_watermark = max(self.pred_watermark, ts - self.lateness_ms)
            tags = segment_tags(event, self.segment_keys)
            destination = self._join_shard(event.prediction_id)
            if destination != self.shard:  # joined there; windowed and watched here, in this log's order
                forwarded.append(self.forwarder.forward(reroute.PREDICTION, destination, record,
                                                        event.prediction_id))
                self.rerouted[(reroute.PREDICTION, event.model_id)] += 1
            else:
                joined = self.join.on_prediction(event, tags)
                now_duplicates = self.join.counters.get("duplicate_predictions", 0)
                if now_duplicates != duplicates:  # counted by the join; excluded from windows
                    duplicates = now_duplicates
                    continue
                if joined is not None:
                    outcomes.append(joined)
            if watched:
                times, ids, feats_seen = per_model[(event.model_id, event.model_version)]
                times.append(ts)
                ids.append(event.prediction_id)
                feats_seen.append(event.features)
            for size in self.sizes_ms:
                start = ts - ts % size
                for segment in window_segments(tags):
                    feats, preds, lats = grouped[(size, start, event.model_id, event.model_version, segment)]
                    feats.append(event.features)
                    preds.append(event.prediction)
                    lats.append(event.latency_ms)
        for key, (feats, preds, lats) in grouped.items():
            buffered = self.buffered.get(key)
            if buffered is None:
                buffered = self.buffered[key] = ([], [], [])
                self.open[key] = WindowAccumulator()
            buffered[0].extend(feats)
            buffered[1].extend(preds)
            buffered[2].extend(lats)
            if len(buffered[0]) >= ACCUMULATE_CHUNK:
                self._accumulate(key, final=False)
        alerts: list[FeatureAlert] = []
        if self.watch is not None:
            for (model_id, version), (times, ids, feats_seen) in sorted(per_model.items()):
                alerts.extend(self.watch.observe(model_id, version, times, ids, feats_seen))
        return alerts

    def _on_profile(self, value: bytes | None) -> None:
        if self.watch is None or not value:
            return
        try:
            profile = ReferenceProfile.model_validate_json(value)
        except ValueError:
            self.totals["bad_profiles"] += 1
            return
        if self.watch.add_profile(profile):
            self.totals["profiles_watched"] += 1

    def _emit_alerts(self, alerts: list[FeatureAlert], out: list[OutboundMessage]) -> None:
        """Each alarm to its model's stage-2 partition, before this batch's progress record."""
        self.totals["sequential_alerts"] += len(alerts)
        for a in alerts:
            payload = {
                "type": records.ALERT,
                "shard": self.shard,
                "alert_id": a.alert_id(f"shard-{self.shard}"),
                "model_id": a.model_id,
                "model_version": a.model_version,
                "feature": a.feature,
                "feature_kind": a.kind,
                "component": a.component,
                "statistic": a.statistic,
                "threshold": a.threshold,
                "arl": a.arl,
                "event_time": a.event_time,
                "prediction_id": a.prediction_id,
                "observation_index": a.observation_index,
                "reference_id": a.profile_id,
            }
            out.append(
                records.to_model(self.model_events_topic, self.model_events_partitions, a.model_id, payload)
            )

    def _accumulate(self, key: WindowKey, final: bool) -> None:
        """Add buffered events to the window in chunks of exactly ACCUMULATE_CHUNK (the rest only
        when the window closes): float sums then round identically however the log was batched."""
        feats, preds, lats = self.buffered[key]
        accumulator = self.open[key]
        n = len(feats) if final else len(feats) - len(feats) % ACCUMULATE_CHUNK
        for i in range(0, n, ACCUMULATE_CHUNK):
            j = min(i + ACCUMULATE_CHUNK, n)
            accumulator.add(feats[i:j], preds[i:j], lats[i:j])
        del feats[:n], preds[:n], lats[:n]

    def _apply_labels(
        self,
        valid: list[tuple[RawRecord, LabelEvent]],
        outcomes: list[JoinedOutcome],
        late_rows: list[dict[str, Any]],
        forwarded: list[OutboundMessage],
    ) -> None:
        for record, event in valid:
            ts = event.timestamp
            if ts < self.label_watermark:
                late_rows.append(self._late_row(record, "label", event, self.label_watermark))
                continue
            self.label_watermark = max(self.label_watermark, ts - self.lateness_ms)
            destination = self._join_shard(event.prediction_id)
            if destination != self.shard:
                forwarded.append(self.forwarder.forward(reroute.LABEL, destination, record, event.prediction_id))
                self.rerouted[(reroute.LABEL, event.model_id or "")] += 1
                continue
            joined = self.join.on_label(event)
            if joined is not None:
                outcomes.append(joined)

    # -- re-routing (see driftline.pipeline.reroute) ----------------------------------------

    def _init_rerouting(self, topics: TopicSettings) -> None:
        self.repartition_topic = topics.repartition
        self.partitions = topics.partitions
        self.forwarder = reroute.Forwarder(self.shard, topics.partitions, topics.repartition)
        self.inbox = reroute.Inbox(self.shard, topics.partitions)
        self.rerouted: Counter[tuple[str, str]] = Counter()  # (kind, model_id) -> records forwarded
        self.sent_source_watermarks: tuple[int, int] = (NO_TIME, NO_TIME)

    def _join_shard(self, prediction_id: str) -> int:
        return self.shard if self.partitions == 1 else reroute.join_shard(prediction_id, self.partitions)

    def join_watermark(self, kind: str) -> int:
        """The join's watermark: this partition's, or an earlier one another partition delivered."""
        local = self.pred_watermark if kind == reroute.PREDICTION else self.label_watermark
        return self.inbox.watermark(kind, local)

    def _apply_rerouted(
        self,
        predictions: list[tuple[RawRecord, PredictionEvent]],
        labels: list[tuple[RawRecord, LabelEvent]],
        outcomes: list[JoinedOutcome],
    ) -> None:
        """Join what other shards forwarded: lateness and windows were decided at the source."""
        for _, event in predictions:
            joined = self.join.on_prediction(event, segment_tags(event, self.segment_keys), rerouted=True)
            if joined is not None:
                outcomes.append(joined)
        for _, event in labels:
            joined = self.join.on_label(event, rerouted=True)
            if joined is not None:
                outcomes.append(joined)
        self.totals["rerouted_in"] += len(predictions) + len(labels)

    def _emit_source_watermarks(self, out: list[OutboundMessage]) -> None:
        """Tell the other shards how far this partition's logs are, after what was forwarded."""
        marks = (self.pred_watermark, self.label_watermark)
        if self.partitions == 1 or marks == self.sent_source_watermarks:
            return
        self.sent_source_watermarks = marks
        out.extend(self.forwarder.progress({reroute.PREDICTION: marks[0], reroute.LABEL: marks[1]}))

    def _close_windows(self, out: list[OutboundMessage]) -> int:
        due = sorted(
            (key for key in self.open if key[1] + key[0] <= self.pred_watermark),
            key=lambda k: (k[1] + k[0], k[0], k[2], k[3], k[4]),
        )
        for key in due:
            size, start, model_id, version, segment = key
            self._accumulate(key, final=True)
            del self.buffered[key]
            accumulator = self.open.pop(key)
            payload = {
                "type": records.PARTIAL,
                "shard": self.shard,
                "model_id": model_id,
                "model_version": version,
                "segment": segment,
                "window_size_s": size // 1000,
                "window_start": start,
                "window_end": start + size,
                "partial": accumulator.to_partial(),
            }
            out.append(
                records.to_model(self.model_events_topic, self.model_events_partitions, model_id, payload)
            )
        return len(due)

    def _emit_outcomes(
        self, outcomes: list[JoinedOutcome], expired: list[ExpiredPrediction], out: list[OutboundMessage]
    ) -> None:
        for o in outcomes:
            out.append(
                OutboundMessage(self.outcomes_topic, o.prediction_id.encode(), outcome_row(o, self.run_id))
            )
        self._emit_columns(records.OUTCOMES, records.OUTCOME_FIELDS, outcomes, out)
        self._emit_columns(records.EXPIRED, records.EXPIRED_FIELDS, expired, out)

    def _emit_columns(
        self, kind: str, fields: Sequence[str], items: Sequence[Any], out: list[OutboundMessage]
    ) -> None:
        """One columnar model-events record per (model, version), models in sorted order."""
        by_model: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for item in items:  # orphan labels name no version
            by_model[(item.model_id, getattr(item, "model_version", ""))].append(item)
        for (model_id, version), rows in sorted(by_model.items()):
            payload: dict[str, Any] = {"type": kind, "shard": self.shard, "model_id": model_id,
                                       "model_version": version}
            for field in fields:
                payload[field] = [getattr(row, field) for row in rows]
            out.append(
                records.to_model(self.model_events_topic, self.model_events_partitions, model_id, payload)
            )

    def outcome_progress(self) -> int:
        """No outcome with a label time before this can still come from this shard."""
        held = self.join.earliest_held_label_ts()
        label_watermark = self.join_watermark(reroute.LABEL)
        return label_watermark if held is None else min(label_watermark, held)

    def _emit_progress(self, out: list[OutboundMessage], force: bool) -> None:
        progress = (self.pred_watermark, self.outcome_progress())
        step = self.progress_step_ms
        moved = any(new // step != old // step for new, old in zip(progress, self.sent_progress, strict=True))
        if not (moved or (force and progress != self.sent_progress)):
            return
        self.sent_progress = progress
        payload = {
            "type": records.PROGRESS,
            "shard": self.shard,
            "pred_progress": progress[0],
            "outcome_progress": progress[1],
        }
        out.extend(records.broadcast(self.model_events_topic, self.model_events_partitions, payload))


def outcome_row(o: JoinedOutcome, run_id: str = "") -> bytes:
    """An outcome as published on the outcomes topic: the columns of the ``outcomes`` table."""
    return orjson.dumps(
        {
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
    )


class ShardFactory:
    """Creates or restores stage-1 processors for the runner."""

    def __init__(self, settings: Settings, run_id: str = "") -> None:
        self.settings = settings
        self.run_id = run_id

    def create(self, shard: int) -> ShardProcessor:
        return ShardProcessor(shard, self.settings, self.run_id)

    def restore(self, shard: int, blob: bytes) -> ShardProcessor:
        processor = ShardProcessor.restore(blob)
        if processor.shard != shard:
            raise ValueError(f"checkpoint of shard {processor.shard} offered for shard {shard}")
        return processor
