"""Stage 1: one shard = partition p of the predictions topic and partition p of the labels topic.

Validates, drops late events (by this partition's own event-time watermark), deduplicates and
joins predictions with labels, and accumulates per-window partial aggregates. Every output is a
function of the two partitions' logs alone — not of how they interleave, nor of wall time — so
a restored shard re-emits exactly what it emitted before a crash.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt

from driftline.config import Settings, TopicSettings
from driftline.kafka.partitioner import partitions_for_texts
from driftline.operators.columns import (
    BatchDecoder,
    FeatureColumns,
    Int64Array,
    LabelBatch,
    OutputColumns,
    PredictionBatch,
)
from driftline.operators.feature_rows import FeatureRows
from driftline.operators.feature_watch import BATCH_EVENTS, FeatureWatch, GroupedEvents, run_columns
from driftline.operators.float_block import FloatBlock
from driftline.operators.join import (
    ExpiredPrediction,
    JoinChanges,
    JoinedOutcome,
    LabelJoin,
    legacy_resend,
    payload_digest,
    payload_digests,
    restoring_under_budget,
)
from driftline.operators.model_watch import MultivariateWatch
from driftline.operators.profile import parse_profile
from driftline.operators.validate import Decoder, RawRecord, dead_letter
from driftline.operators.window_stats import EventColumns, WindowAccumulator, WindowBuffer, values_partial
from driftline.pipeline import records, reroute
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.outcome_messages import outcome_messages
from driftline.pipeline.records import NO_TIME, WindowKey, episode_grid_ms, window_segments
from driftline.pipeline.references import chain_profiles
from driftline.pipeline.stage import OutboundMessage, keyed_messages
from driftline.pipeline.state import (
    FRESH_STATE_HINT,
    BaseCopy,
    BlobFile,
    ItemChanges,
    ItemMarks,
    StateRestoreError,
    dump_delta,
    dump_state,
    load_delta,
    load_state,
    settings_record,
    warn_if_changed,
)
from driftline.pipeline.to_rows import late_event_row
from driftline.schemas.events import ErrorKind, LabelEvent, Prediction, PredictionEvent

ACCUMULATE_CHUNK = 2048
STAGE_EVENTS = 16_384
"""Counted predictions a shard stages before it sorts them into window buffers (``_buffer_staged``).
With many models a batch holds a few events of each, and a window buffer's append, and the joins
of its parts that appends bring, cost per call: staged, the batches between two closes become one
append per window. Staged events are buffered before a window they fall in can close and before
the state is read (checkpoints, copies), so what windows hold, and when they close, is as without."""
_T = TypeVar("_T")
_record_value = attrgetter("value")
_prediction_id = attrgetter("prediction_id")


def segment_tags(event: PredictionEvent, keys: Sequence[str]) -> str:
    """Canonical ``k=v;k=v`` of the configured segment keys the event carries ('' for none)."""
    return _segment_tags(event.segment, keys)


def _segment_tags(segment: Mapping[str, str], keys: Sequence[str]) -> str:
    return ";".join(f"{k}={segment[k]}" for k in keys if k in segment)


class ShardProcessor:
    """Stage-1 state machine of one shard (see module docstring)."""

    stage = "shard"

    def __init__(self, shard: int, settings: Settings, run_id: str = "", columnar: bool = True) -> None:
        self.shard = shard
        self.run_id = run_id
        # False: the row path (an event at a time), kept for one release as the columnar path's reference
        self.columnar = columnar
        self._init_rerouting(settings.topics)
        self.watch: FeatureWatch | None = None
        self.multivariate: MultivariateWatch | None = None
        self.join = LabelJoin(
            settings.join.label_horizon_s * 1000, settings.join.max_pending, settings.join.max_held_labels
        )
        self.pred_watermark = NO_TIME
        self.label_watermark = NO_TIME
        self.open: dict[WindowKey, WindowAccumulator] = {}
        self.buffered: dict[WindowKey, WindowBuffer] = {}
        self._first_end = NO_TIME  # the earliest open window's end (NO_TIME: not known; _close_windows)
        self._staged: list[_StagedBatch] = []  # decoded batches not yet in window buffers
        self._staged_events = 0
        self._staged_end = _NO_WINDOW  # the earliest end of a window a staged event can fall in
        self.sent_progress: tuple[int, ...] = (NO_TIME, NO_TIME, NO_TIME)
        self.totals: Counter[str] = Counter()
        self.configure(settings)
        self._shared_profiles = chain_profiles()
        self._touched: set[tuple[str, str]] = set()  # models whose items changed since the last checkpoint
        self._item_marks = self._marked_items()

    def configure(self, settings: Settings) -> None:
        """Set every value derived from the settings: on creation and on every restore, so a
        restarted shard applies today's settings (the checkpoint holds state only, see
        :mod:`driftline.pipeline.state`). Detectors already calibrated keep their calibration."""
        self.settings_record = settings_record(settings)
        topics = settings.topics
        self.predictions_topic = topics.predictions
        self.labels_topic = topics.labels
        self.outcomes_topic = topics.outcomes
        self.dead_letters_topic = topics.dead_letters
        self.model_events_topic = topics.model_events
        self.model_events_partitions = topics.model_events_partitions
        self.sink_topic = topics.sink
        self.profiles_topic = topics.profiles
        if "inbox" not in self.__dict__:  # a checkpoint from before re-routing
            self._init_rerouting(topics)
        self.repartition_topic = self.forwarder.topic = topics.repartition
        if not settings.sequential.enabled:
            self.watch = None
        elif self.watch is None:
            cfg = settings.sequential
            self.watch = FeatureWatch(cfg.false_alarms_per_million, status_grid_ms=episode_grid_ms(settings),
                                      min_effect_sd=cfg.min_effect_sd, learning=cfg.learning)
        if self.watch is not None:  # a model's few events wait to be fed as one batch (see process)
            self.watch.batch_events = BATCH_EVENTS
        if self.multivariate is None:  # idle until a profile with a multivariate section arrives
            cfg = settings.sequential
            self.multivariate = MultivariateWatch(cfg.false_alarms_per_million,
                                                  status_grid_ms=episode_grid_ms(settings),
                                                  min_effect_sd=cfg.min_effect_sd, learning=cfg.learning)
        self.multivariate.episodes_enabled = settings.sequential.enabled
        self.decoder = Decoder(
            settings.kafka.max_message_bytes,
            settings.windows.max_timestamp_skew_s * 1000,
            settings.windows.max_future_skew_s * 1000,
        )
        self.batch_decoder = BatchDecoder(self.decoder)
        self.join.horizon_ms = settings.join.label_horizon_s * 1000
        self.join.max_pending = settings.join.max_pending
        self.join.max_held = settings.join.max_held_labels
        self.join.set_memory_budget(int(settings.join.memory_budget_mb * 2**20), settings.join.spill_dir)
        self.lateness_ms = settings.windows.allowed_lateness_s * 1000
        self.labels_wait = settings.worker.labels_wait_for_predictions  # (inputs_to_hold)
        self.bundle_model_events = settings.worker.bundle_model_events  # (_model_events)
        self.backlog_records = settings.worker.batch_max_records  # a backlog: more than a batch to read
        self.sizes_ms = [s * 1000 for s in settings.windows.sizes_s]
        self.values_below = settings.drift.min_count  # a window's partial: values below this many events
        self.segment_keys = list(settings.windows.segment_keys)
        self.progress_step_ms = math.gcd(*self.sizes_ms, settings.windows.metrics_interval_s * 1000)

    # -- the stage protocol -----------------------------------------------------------------

    def process(self, batch: Sequence[RawRecord]) -> list[OutboundMessage]:
        out: list[OutboundMessage] = []
        by_topic: dict[str, list[RawRecord]] = defaultdict(list)
        for record in batch:
            by_topic[record.topic].append(record)
        for record in by_topic.get(self.profiles_topic, ()):
            self._on_profile(record.value)
        predictions = by_topic.get(self.predictions_topic, [])
        labels = by_topic.get(self.labels_topic, [])
        # Records other shards read and re-routed here (decided on there: only joined here).
        arrived = self.inbox.accept(by_topic.get(self.repartition_topic, []))
        if self.columnar:
            prediction_batch, dead = self.batch_decoder.predictions(predictions)
            label_batch, dead_labels = self.batch_decoder.labels(labels)
            dead.extend(dead_labels)
            rerouted_in, dead_arrived = self.batch_decoder.predictions(arrived[reroute.PREDICTION])
            dead.extend(dead_arrived)
            rerouted_labels_in, dead_arrived = self.batch_decoder.labels(arrived[reroute.LABEL])
            dead.extend(dead_arrived)
        else:
            valid_predictions, dead = self.decoder.predictions(predictions)
            valid_labels, dead_labels = self.decoder.labels(labels)
            dead.extend(dead_labels)
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
        if self.columnar:
            reports = self._apply_prediction_batch(prediction_batch, outcomes, late_rows, forwarded)
        else:
            reports = self._apply_predictions(valid_predictions, outcomes, late_rows, forwarded)
        self.forwarded_ids.forget(self.pred_watermark, self.join.horizon_ms)
        self._feed_held_events(reports)
        self._emit_episode_reports(reports, out)
        if self.columnar:
            self._apply_label_batch(label_batch, outcomes, late_rows, forwarded)
        else:
            self._apply_labels(valid_labels, outcomes, late_rows, forwarded)
        if self.columnar:
            self._apply_rerouted_batches(rerouted_in, rerouted_labels_in, outcomes)
        else:
            self._apply_rerouted(rerouted_predictions, rerouted_labels, outcomes)
        expired = self.join.advance(
            self.join_watermark(reroute.PREDICTION), self.join_watermark(reroute.LABEL)
        )
        orphans = self.join.take_orphans()
        duplicates = self._take_duplicates(out)
        self.totals["joined"] += len(outcomes)
        # evicted ones travel with the expired (reason 'evicted'); join_evicted_pending counts them
        self.totals["expired_unlabeled"] += sum(e.reason == "horizon" for e in expired)
        self.totals["late"] += len(late_rows)

        if late_rows:
            out.extend(records.sink_rows(self.sink_topic, "late_events", late_rows))
        closed = self._close_windows(out)
        self._emit_outcomes(outcomes, expired, orphans, duplicates, out)
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
        self._buffer_staged()  # the windows left open hold their events (a replay lists them)
        self._emit_progress(out, force=True)
        return out

    def watermark_topics(self) -> tuple[str, str]:
        """The topics :meth:`follow_idle` moves a watermark of (not the re-routing topic's)."""
        return self.predictions_topic, self.labels_topic

    def follow_idle(self, topics: Collection[str]) -> list[OutboundMessage]:
        """This shard's partitions of ``topics`` (the predictions and/or labels topic) are idle:
        read to their end, nothing new for ``worker.idle_partition_s``. Each such watermark moves up
        to the furthest another partition has delivered here, so an idle partition stops holding
        every window (and outcome bucket) open; an event that later arrives behind it is late
        (``late_events``), as behind any watermark. With one partition, or before another's marks
        arrive, nothing moves. The live runner decides idleness (wall time); replays never do.
        Returns what to produce, as :meth:`process` (nothing when no watermark moved)."""
        moved = False
        if self.predictions_topic in topics:
            ahead = self.inbox.furthest(reroute.PREDICTION)
            if ahead > self.pred_watermark:
                self.pred_watermark, moved = ahead, True
        if self.labels_topic in topics:
            ahead = self.inbox.furthest(reroute.LABEL)
            if ahead > self.label_watermark:
                self.label_watermark, moved = ahead, True
        if not moved:
            return []
        self.totals["idle_advances"] += 1
        return self.process(())

    def prediction_marks(self) -> tuple[int, int]:
        """This shard's predictions watermark and the furthest another partition has delivered
        here: while neither moves, no predictions partition this shard hears of has traffic."""
        return self.pred_watermark, self.inbox.furthest(reroute.PREDICTION)

    def inputs_to_hold(self, unread: Mapping[str, int | None]) -> set[str]:
        """The input topics whose partition the runner should not read from now, given the records
        still to read in each (None: not known): the labels while they are ahead of the
        predictions in event time (``worker.labels_wait_for_predictions``) and the predictions
        partition has a backlog: more than a batch (``worker.batch_max_records``) still to read,
        or its end not known yet. Live traffic, read as it comes, has none: a label ahead of the
        predictions (its event time later, or its producer's clock) is read at once. A label read
        after its prediction closes it pending (the join's fast path); one read before is held,
        then made an outcome on its own (:class:`~driftline.pipeline.stage.WaitsForInputs`).

        >>> shard = ShardProcessor(0, Settings())
        >>> shard.pred_watermark, shard.label_watermark = 1_000, 5_000
        >>> [shard.inputs_to_hold({shard.predictions_topic: left}) for left in (None, 5001, 5000, 0)]
        [{'driftline.labels'}, {'driftline.labels'}, set(), set()]
        >>> shard.label_watermark = 1_000
        >>> shard.inputs_to_hold({shard.predictions_topic: 50_000})
        set()
        """
        if not self.labels_wait or self.label_watermark <= self.pred_watermark:
            return set()
        left = unread.get(self.predictions_topic, 0)
        # (None: not known before the predictions partition's first fetch answers, which the
        # wait does not delay: it is not paused)
        return {self.labels_topic} if left is None or left > self.backlog_records else set()

    def follow_silence(self, mark: int) -> list[OutboundMessage]:
        """Every predictions partition has been silent for a while (the live runner's call, on wall
        time): the predictions watermark moves up to ``mark``, so the windows before the silence
        close, as if time had gone on without events; an event that later arrives behind it is
        late (``late_events``). Returns what to produce, as :meth:`process` (nothing when
        ``mark`` is not ahead)."""
        if mark <= self.pred_watermark:
            return []
        self.pred_watermark = mark
        self.totals["silent_advances"] += 1
        return self.process(())

    def snapshot(self) -> bytes:
        return dump_state(self)

    # -- incremental checkpoints (driftline.pipeline.state.Incremental, docs/state.md) -------

    def track_changes(self) -> None:
        """Remember what changes from now on, so that :meth:`checkpoint` can write deltas."""
        self.join.track_changes()

    def changed_records(self) -> int:
        """The join's records the next delta carries (the runner's restore-time estimate)."""
        return self.join.changed_count

    def checkpoint(self, base: bool) -> bytes:
        """A base snapshot, or a delta: the join's changed records, the per-model items (windows,
        detectors: :data:`_ITEMS`) of the models that saw an event or a profile since the previous
        checkpoint and the keys of those gone (:class:`ItemChanges`), everything else whole
        (re-routing counters, watermarks); the reference profiles the detectors hold are named
        when the chain holds them already (in its base or an earlier delta), not pickled again
        (~0.4 MB a delta on the bench workload; :class:`ChainShared`)."""
        if base:
            self.join.reset_changes()
            self._shared_profiles.restart(self._rest())
            self._item_marks = self._marked_items()
            return dump_state(self)
        rest, profiles = self._shared_profiles.dumps(self._changed_items(self._rest()))
        self._item_marks = self._marked_items()
        records = self.changed_records()  # in the header: the runner's restore estimate reads it
        return dump_delta(ShardDelta(rest, self.join.take_changes(), profiles), records)

    def _marked_items(self) -> dict[tuple[str, ...], ItemMarks]:
        """Every per-model dict as it is now (the next delta's items are told from it); forgets
        which models were touched."""
        self._touched = set()
        return {path: ItemMarks(items) for path, _ in _ITEMS
                if isinstance(items := _at(self.__dict__, path), dict)}

    def _changed_items(self, rest: dict[str, Any]) -> dict[str, Any]:
        """``rest`` with each per-model dict replaced by its changes since the marks, in copies of
        the objects holding it (``shells``: the detectors without their items) where it is nested."""
        touched, shells = self._touched, dict[int, Any]()
        for path, model_of in _ITEMS:
            items = _at(self.__dict__, path)
            marks = self._item_marks.get(path)
            if not isinstance(items, dict) or marks is None:
                continue

            def is_touched(key: Any, model_of: Callable[[Any], tuple[str, str]] = model_of) -> bool:
                return model_of(key) in touched

            changes = marks.changes(items, is_touched)
            if changes is items:
                continue  # a new dict (e.g. the detectors were replaced): whole
            holder: dict[str, Any] = rest
            for name in path[:-1]:  # a shell of each object on the way, made once
                inner = holder[name]
                shell = shells.get(id(inner))
                if shell is None:
                    shell = object.__new__(type(inner))
                    shell.__dict__.update(inner.__dict__)
                    shells[id(inner)] = shells[id(shell)] = shell
                holder[name] = shell
                holder = shell.__dict__
            holder[path[-1]] = changes
        return rest

    def _apply_items(self, rest: dict[str, Any], what: str) -> None:
        """Each :class:`ItemChanges` in a delta's ``rest`` applied to this shard's dict at its place,
        which then takes it (format 1-3 deltas hold whole dicts: nothing to do)."""
        for path, _ in _ITEMS:
            changes = _at(rest, path)
            if not isinstance(changes, ItemChanges):
                continue
            restored = _at(self.__dict__, path)
            if not isinstance(restored, dict):
                raise StateRestoreError(f"{what}: a delta changes {'.'.join(path)}, which its chain "
                                        f"does not hold; {FRESH_STATE_HINT}")
            holder = rest if len(path) == 1 else _at(rest, path[:-1]).__dict__
            holder[path[-1]] = changes.apply(restored)

    def base_copy(self) -> BaseCopy:
        """This shard as it is now, for a base written while it goes on: everything but the join
        copied by pickling it (what a delta pickles: small next to the join's records; the
        profiles, never changed in place, are shared), and the join's own copy
        (:meth:`LabelJoin.base_copy`: a list copy of its groups)."""
        rest = self._rest(join=None)  # the same keys in the same order: the same pickle
        self._item_marks = self._marked_items()  # the next delta follows this base
        copy = ShardProcessor.__new__(ShardProcessor)
        copy.__dict__.update(self._shared_profiles.loads(self._shared_profiles.restart(rest), b""))
        copy.join = join = self.join.base_copy()
        return BaseCopy(copy, join.release_copy)

    def _rest(self, **replaced: Any) -> dict[str, Any]:
        """The state but the join (or with it ``replaced``), for a delta."""
        if self._staged:
            self._buffer_staged()
        return {k: replaced.get(k, v) for k, v in self.__dict__.items()
                if k not in _NOT_PICKLED and (k != "join" or k in replaced)}

    def _apply_delta(self, blob: bytes, what: str) -> None:
        delta = load_delta(blob, what)
        if not isinstance(delta, ShardDelta):
            raise StateRestoreError(f"{what}: a delta holds a {type(delta).__name__}, not a ShardDelta")
        rest = delta.rest
        if isinstance(rest, bytes):  # delta format 3: the profiles its chain holds are named
            try:
                rest = self._shared_profiles.loads(rest, getattr(delta, "profiles", b""))
            except StateRestoreError as err:
                raise StateRestoreError(f"{what}: {err}; {FRESH_STATE_HINT}") from None
        self._apply_items(rest, what)
        join = self.join
        self.__setstate__({**rest, "join": join})
        try:
            join.apply_changes(delta.join)
        except ValueError as err:
            raise StateRestoreError(f"{what}: {err}; {FRESH_STATE_HINT}") from None

    def __getstate__(self) -> dict[str, Any]:
        if self.__dict__.get("_staged"):
            self._buffer_staged()
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_PICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before sequential detection existed restore without it.
        state.setdefault("watch", None)
        state.setdefault("columnar", True)
        state.setdefault("multivariate", None)
        state["buffered"] = {key: _window_buffer(b) for key, b in state.get("buffered", {}).items()}
        self.__dict__.update(state)
        self._first_end = NO_TIME  # a delta may have opened windows: the next close looks
        if "_staged" not in self.__dict__:  # unpickled: never pickled with staged batches
            self._staged, self._staged_events, self._staged_end = [], 0, _NO_WINDOW
        if "_shared_profiles" not in self.__dict__:  # unpickled (a delta applied keeps its own)
            self._shared_profiles = chain_profiles()
            self._item_marks = self._marked_items()

    @staticmethod
    def restore(
        blob: bytes | BlobFile, settings: Settings, what: str = "stage-1 shard", deltas: Sequence[bytes] = ()
    ) -> ShardProcessor:
        """The checkpointed shard (a base snapshot and the deltas written after it, in order),
        running with ``settings`` (today's, not the checkpoint's). Under a join memory budget the
        join spills while its records arrive (``restoring_under_budget``): a restore's peak is
        the table of stubs plus the budget, not every record whole."""
        budget = int(settings.join.memory_budget_mb * 2**20)
        with restoring_under_budget(budget, settings.join.spill_dir):
            processor = load_state(blob, ShardProcessor, what)
            # the profiles the base holds, which its deltas (and the ones this shard writes next) name
            processor._shared_profiles.restart(processor._rest())
            for delta in deltas:
                processor._apply_delta(delta, what)
            processor._item_marks = processor._marked_items()  # its next delta follows the last one
        warn_if_changed(what, getattr(processor, "settings_record", None), settings)
        processor.configure(settings)
        return processor

    def gauges(self) -> list[Gauge]:
        figures = [Gauge(f"{k}_total", float(v)) for k, v in self.totals.items()]
        figures += [
            Gauge("pending_predictions", float(self.join.pending_count)),
            Gauge("held_labels", float(self.join.held_count)),
            Gauge("join_store_bytes", float(self.join.store_bytes)),  # pending payloads on disk
            Gauge("open_windows", float(len(self.open))),
            Gauge("staged_window_events", float(self._staged_events)),
            Gauge("sequential_detectors", float(self.watch.monitor_count() if self.watch else 0)),
            Gauge("open_shard_episodes", float(self.watch.open_episodes() if self.watch else 0)),
            Gauge("prediction_watermark_ms", float(max(self.pred_watermark, 0))),
            Gauge("label_watermark_ms", float(max(self.label_watermark, 0))),
        ]
        figures += [Gauge(f"join_{name}_total", float(value)) for name, value in self.join.counters.items()]
        figures.append(Gauge("rerouted_duplicates_dropped_total", float(self.inbox.duplicates)))
        # Re-routed share per model: sum(rerouted_total) / sum(join_inputs_total) over shards.
        for name, counts in (("rerouted_total", self.rerouted), ("join_inputs_total", self.join_inputs)):
            for (kind, model_id), value in sorted(counts.items()):
                figures.append(Gauge(name, float(value), {"kind": kind, "model_id": model_id}))
        return figures

    # -- internals --------------------------------------------------------------------------

    def _apply_predictions(
        self,
        valid: list[tuple[RawRecord, PredictionEvent]],
        outcomes: list[JoinedOutcome],
        late_rows: list[dict[str, Any]],
        forwarded: list[OutboundMessage],
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        # Batch the window updates: one vectorised add per (window, model, version, segment).
        grouped: dict[WindowKey, tuple[list[Any], list[Any], list[Any]]] = defaultdict(lambda: ([], [], []))
        duplicates = self.join.counters.get("duplicate_predictions", 0)
        watched = self.watch is not None and self.watch.watches_any()
        # (model, version) -> (times, ids, features) of accepted events, in log order
        per_model: dict[tuple[str, str], tuple[list[int], list[str], list[Any]]] = defaultdict(
            lambda: ([], [], [])
        )
        multivariate_events: dict[tuple[str, str], list[PredictionEvent]] = defaultdict(list)
        for record, event in valid:
            ts = event.timestamp
            if ts < self.pred_watermark:
                late_rows.append(
                    late_event_row(self.run_id, record, "prediction", event, self.pred_watermark))
                continue
            self.pred_watermark = max(self.pred_watermark, ts - self.lateness_ms)
            self.join_inputs[(reroute.PREDICTION, event.model_id)] += 1
            tags = segment_tags(event, self.segment_keys)
            destination = self._join_shard(event.prediction_id)
            if destination != self.shard:  # joined there; windowed and watched here, in this log's order
                forwarded.append(self.forwarder.forward(reroute.PREDICTION, destination, record,
                                                        event.prediction_id))
                self.rerouted[(reroute.PREDICTION, event.model_id)] += 1
                if self.forwarded_ids.is_resend(event.prediction_id, ts, self.join.horizon_ms):
                    continue  # the joining shard counts it as a duplicate; no window counts it twice
            else:
                joined = self.join.on_prediction(event, tags, digest=_digest(record), source=record)
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
            multivariate = self.multivariate
            if multivariate is not None and multivariate.watches(event.model_id, event.model_version):
                multivariate_events[(event.model_id, event.model_version)].append(event)
            for size in self.sizes_ms:
                start = ts - ts % size
                for segment in window_segments(tags):
                    key = WindowKey(size, start, event.model_id, event.model_version, segment)
                    feats, preds, lats = grouped[key]
                    feats.append(event.features)
                    preds.append(event.prediction)
                    lats.append(event.latency_ms)
        self._touched.update((key.model_id, key.model_version) for key in grouped)  # the next delta's items
        for key, (feats, preds, lats) in grouped.items():
            self._buffer_window(key, EventColumns.of(feats, preds, lats))
        reports: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if self.watch is not None:
            for (model_id, version), (times, ids, feats_seen) in sorted(per_model.items()):
                reports[(model_id, version)] = self.watch.observe(model_id, version, times, ids, feats_seen)
        for (model_id, version), events in sorted(multivariate_events.items()):
            assert self.multivariate is not None
            reports.setdefault((model_id, version), []).extend(self.multivariate.observe(
                model_id, version, [e.timestamp for e in events], [e.prediction_id for e in events],
                [e.features for e in events], [e.prediction.score for e in events], self.sizes_ms))
        return reports

    # -- the columnar path: the same decisions as the row path above, a batch at a time ----------

    def _late_mask(
        self, timestamps: Int64Array, watermark: int
    ) -> tuple[Int64Array, npt.NDArray[np.bool_], int]:
        """Each event's watermark as the row path meets it, which events are late, and the watermark
        after the batch. The watermark before event i is the running max of ``ts - lateness`` over
        the events before it: a late event (ts < its watermark) cannot raise it, so counting late
        ones in the running max changes nothing."""
        marks = np.maximum.accumulate(timestamps - self.lateness_ms)
        before = np.empty_like(marks)
        before[0] = watermark
        np.maximum(marks[:-1], watermark, out=before[1:])
        return before, timestamps < before, max(watermark, int(marks[-1]))

    def _join_shards(self, prediction_ids: Sequence[str]) -> npt.NDArray[np.int64] | None:
        """The joining shard of each id (Kafka's partitioner, vectorised); None: all join here."""
        if self.partitions == 1:
            return None
        return partitions_for_texts(prediction_ids, self.partitions)

    def _local_rows(
        self, prediction_ids: Sequence[str], rows: Sequence[int]
    ) -> tuple[Sequence[int], list[tuple[int, int]]]:
        """The ``rows`` this shard joins, and (row, joining shard) of the others, both in log order."""
        destinations = self._join_shards(
            prediction_ids if len(rows) == len(prediction_ids) else [prediction_ids[i] for i in rows])
        if destinations is None:
            return rows, []
        elsewhere = np.flatnonzero(destinations != self.shard)
        if not len(elsewhere):
            return rows, []
        positions = np.asarray(rows, dtype=np.intp)
        away = list(zip(positions[elsewhere].tolist(), destinations[elsewhere].tolist(), strict=True))
        return positions[destinations == self.shard].tolist(), away

    @staticmethod
    def _digests(sources: Sequence[RawRecord], rows: Sequence[int], whole: bool) -> list[bytes]:
        """The join's :func:`payload_digests` of the records at ``rows`` (``whole``: all of them)."""
        values = list(map(_record_value, sources if whole else map(sources.__getitem__, rows)))
        if None in values:
            values = [value or b"" for value in values]
        return payload_digests(values)

    def _apply_prediction_batch(
        self,
        batch: PredictionBatch,
        outcomes: list[JoinedOutcome],
        late_rows: list[dict[str, Any]],
        forwarded: list[OutboundMessage],
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """:meth:`_apply_predictions` on a decoded batch: lateness and routing as array operations,
        the join on the batch's columns (in log order: it decides duplicates), windows and detectors
        per group. No event object is built but for a late event's row."""
        reports: dict[tuple[str, str], list[dict[str, Any]]] = {}
        n = len(batch)
        if not n:
            return reports
        sources, ids, models = batch.records, batch.prediction_ids, batch.model_ids
        versions = batch.model_versions
        before, late, self.pred_watermark = self._late_mask(batch.timestamps, self.pred_watermark)
        times: list[int] = batch.timestamps.tolist()
        if late.any():
            for i in np.flatnonzero(late).tolist():
                late_rows.append(
                    late_event_row(self.run_id, sources[i], "prediction", batch.event(i), int(before[i])))
            accepted: list[int] | None = np.flatnonzero(~late).tolist()
        else:
            accepted = None  # every event
        for model_id, count in Counter(models if accepted is None else [models[i] for i in accepted]).items():
            self.join_inputs[(reroute.PREDICTION, model_id)] += count
        keys = self.segment_keys
        tags = [_segment_tags(s, keys) if s else "" for s in batch.segments] if keys else [""] * n
        rows: Sequence[int] = range(n) if accepted is None else accepted
        excluded: set[int] = set()  # events the windows and detectors do not count
        local, away = self._local_rows(ids, rows)
        horizon = self.join.horizon_ms
        for i, destination in away:
            forwarded.append(self.forwarder.forward(reroute.PREDICTION, destination, sources[i], ids[i]))
            self.rerouted[(reroute.PREDICTION, models[i])] += 1
            if self.forwarded_ids.is_resend(ids[i], times[i], horizon):
                excluded.add(i)  # the joining shard counts it as a duplicate; no window counts it twice
        if local:
            whole = len(local) == n
            checked = _picked_features(batch.features, local, whole)  # the decoder's columns of these events
            if len(set(tags)) == 1 and len(set(models)) == 1 and len(set(versions)) == 1:
                contexts: Sequence[tuple[str, str, str]] = [(models[0], versions[0], tags[0])] * len(local)
            else:
                contexts = _picked(list(zip(models, versions, tags, strict=True)), local, whole)
            joined, duplicates = self.join.on_predictions(
                _picked(ids, local, whole), _picked(times, local, whole), contexts,
                _picked_outputs(batch.predictions, local, whole), _picked(batch.feature_maps, local, whole),
                self._digests(sources, local, whole), _picked(sources, local, whole),
                columns=None if checked is None else (checked.names, checked.columns, checked.numbers))
            outcomes.extend(joined)
            excluded.update(local[d] for d in duplicates)  # counted by the join; excluded from windows
        counted: Sequence[int] = rows if not excluded else [i for i in rows if i not in excluded]
        if len(set(models)) == 1 and len(set(versions)) == 1:
            by_model: Mapping[tuple[str, str], Sequence[int]] = {(models[0], versions[0]): counted} \
                if counted else {}
        else:
            grouped: dict[tuple[str, str], list[int]] = defaultdict(list)
            for i in counted:
                grouped[(models[i], versions[i])].append(i)
            by_model = grouped
        self._touched.update(by_model)  # their windows and detectors change: the next delta's items
        self._window_batch(batch, tags, by_model)
        features = batch.feature_maps
        checked = batch.features
        picked: dict[tuple[str, str], _ModelColumns] = {}
        gathered: list[_GroupedColumns] = []  # made at the first model's call

        def columns_of(key: tuple[str, str], rows: Sequence[int], whole: bool) -> _ModelColumns:
            """A model's decoder columns (floats, the others), picked once for both detectors (with
            many models, from the batch's columns gathered once for all models)."""
            found = picked.get(key)
            if found is None:
                if whole:
                    found = picked[key] = _split_columns(checked)
                else:
                    if not gathered:
                        gathered.append(_GroupedColumns(checked, by_model))
                    found = picked[key] = gathered[0].of(key)
            return found

        if self.watch is not None and self.watch.watches_any():
            timestamps = batch.timestamps
            if checked is not None and len(by_model) > 1:  # many models: the batch's columns once
                if not gathered:
                    gathered.append(_GroupedColumns(checked, by_model))
                reports.update(self.watch.observe_grouped(gathered[0].events(times, ids)))
                by_watch: Mapping[tuple[str, str], Sequence[int]] = {}
            else:
                by_watch = by_model
            for (model_id, version), members in sorted(by_watch.items()):
                whole = len(members) == n  # every event in order: the batch's own lists, no copies
                floats, others = columns_of((model_id, version), members, whole)
                reports[(model_id, version)] = self.watch.observe(
                    model_id, version, times if whole else timestamps[members].tolist(),
                    _picked(ids, members, whole), _picked(features, members, whole), floats, others)
        multivariate = self.multivariate
        if multivariate is not None:
            for (model_id, version), rows in sorted(by_model.items()):
                if multivariate.watches(model_id, version):
                    whole = len(rows) == n  # every event in order: the batch's own lists, no copies
                    floats, _ = columns_of((model_id, version), rows, whole)
                    reports.setdefault((model_id, version), []).extend(multivariate.observe(
                        model_id, version, times if whole else [times[i] for i in rows],
                        ids if whole else [ids[i] for i in rows],
                        _picked(features, rows, whole),
                        _scores(batch.predictions, rows, whole), self.sizes_ms, floats))
        return reports

    def _window_batch(
        self, batch: PredictionBatch, tags: Sequence[str], by_model: Mapping[tuple[str, str], Sequence[int]]
    ) -> None:
        """Stage the counted events of each model for the window buffers (``STAGE_EVENTS``): the
        batch's columns once, with the rows of each model."""
        counted = sum(map(len, by_model.values()))
        if not counted:
            return
        checked = batch.features
        columns = EventColumns.of(
            batch.feature_maps, batch.predictions, batch.latencies,
            None if checked is None else (checked.names, checked.columns, checked.numbers))
        self._staged.append(_StagedBatch(columns, batch.timestamps, tags, by_model))
        self._staged_events += counted
        stamps = batch.timestamps
        if counted < len(stamps):  # late or excluded events are not staged: not the earliest either
            stamps = stamps[np.fromiter(chain.from_iterable(by_model.values()), np.intp, counted)]
        earliest = int(stamps.min())
        ends = (earliest - earliest % size + size for size in self.sizes_ms)
        self._staged_end = min(self._staged_end, *ends)
        if self._staged_events >= STAGE_EVENTS:
            self._buffer_staged()

    def _buffer_staged(self) -> None:
        """The staged batches' events into their window buffers, as one batch (log order kept)."""
        staged, self._staged = self._staged, []
        self._staged_events, self._staged_end = 0, _NO_WINDOW
        if not staged:
            return
        if len(staged) == 1:
            self._buffer_groups(*staged[0])
            return
        by_model: dict[tuple[str, str], list[int]] = {}
        offset = 0
        for part in staged:
            for key, rows in part.by_model.items():
                moved = [i + offset for i in rows] if offset else list(rows)
                found = by_model.get(key)
                if found is None:
                    by_model[key] = moved
                else:
                    found += moved
            offset += part.columns.n
        self._buffer_groups(EventColumns.concat([part.columns for part in staged]),
                            np.concatenate([part.timestamps for part in staged]),
                            [tag for part in staged for tag in part.tags], by_model)

    def _buffer_groups(
        self, columns: EventColumns, timestamps: npt.NDArray[np.int64], tags: Sequence[str],
        by_model: Mapping[tuple[str, str], Sequence[int]],
    ) -> None:
        """Buffer the counted events of each (window, model, version, segment), in log order: the
        row path's buffers exactly, so chunks (and float sums) are the same."""
        everyone = columns.n
        if not everyone:
            return
        untagged = tags.count("") == len(tags)  # no event carries a segment key
        # A window size every event of the batch falls in one window of (a batch spans seconds,
        # windows minutes: nearly always every size) needs no start found group by group: with many
        # models that was a dozen numpy calls on a few events each, per group.
        lo, hi = int(timestamps.min()), int(timestamps.max())
        whole = {size: lo - lo % size for size in self.sizes_ms if lo - lo % size == hi - hi % size}
        for (model_id, version), rows in by_model.items():
            segments: dict[str, Sequence[int]] = {"": rows}
            tagged: dict[str, list[int]] = {}
            for i in () if untagged else rows:
                if tags[i]:
                    for segment in tags[i].split(";"):
                        tagged.setdefault(segment, []).append(i)
            segments.update(tagged)
            for segment, members in segments.items():
                # the members' events, gathered once for every window size they fall in whole (the
                # buffers only read them); with many models a batch holds a few events of each
                taken = columns if len(members) == everyone else None
                stamps: npt.NDArray[np.int64] | None = None
                for size in self.sizes_ms:
                    start = whole.get(size)
                    if start is not None:
                        if taken is None:
                            taken = columns.take(np.array(members, dtype=np.intp))
                        self._buffer_window(WindowKey(size, start, model_id, version, segment), taken)
                        continue
                    if stamps is None:
                        stamps = timestamps if len(members) == everyone else timestamps[members]
                    starts = stamps - stamps % size
                    first = int(starts[0])
                    if first == int(starts.min()) == int(starts.max()):  # the common case: one window
                        if taken is None:
                            taken = columns.take(np.array(members, dtype=np.intp))
                        self._buffer_window(WindowKey(size, first, model_id, version, segment), taken)
                        continue
                    for start in np.unique(starts).tolist():
                        picked = np.array(members, dtype=np.intp)[np.flatnonzero(starts == start)]
                        self._buffer_window(WindowKey(size, start, model_id, version, segment),
                                            columns.take(picked))

    def _buffer_window(self, key: WindowKey, events: EventColumns) -> None:
        """Append ``events`` to ``key``'s buffer; add whole chunks to its accumulator."""
        buffered = self.buffered.get(key)
        if buffered is None:
            buffered = self.buffered[key] = WindowBuffer()
            self.open[key] = WindowAccumulator()
            if key.start + key.size < self._first_end:
                self._first_end = key.start + key.size
        buffered.append(events)
        if len(buffered) >= ACCUMULATE_CHUNK:
            self._accumulate(key, final=False)

    def _apply_label_batch(
        self,
        batch: LabelBatch,
        outcomes: list[JoinedOutcome],
        late_rows: list[dict[str, Any]],
        forwarded: list[OutboundMessage],
    ) -> None:
        """:meth:`_apply_labels` on a decoded batch (lateness and routing as array operations, the
        join on the batch's columns)."""
        n = len(batch)
        if not n:
            return
        sources, ids, models = batch.records, batch.prediction_ids, batch.model_ids
        before, late, self.label_watermark = self._late_mask(batch.timestamps, self.label_watermark)
        if late.any():
            for i in np.flatnonzero(late).tolist():
                late_rows.append(
                    late_event_row(self.run_id, sources[i], "label", batch.event(i), int(before[i])))
            rows: Sequence[int] = np.flatnonzero(~late).tolist()
        else:
            rows = range(n)
        for model_id, count in Counter(_picked(models, rows, len(rows) == n)).items():
            self.join_inputs[(reroute.LABEL, model_id or "")] += count
        local, away = self._local_rows(ids, rows)
        for i, destination in away:
            forwarded.append(self.forwarder.forward(reroute.LABEL, destination, sources[i], ids[i]))
            self.rerouted[(reroute.LABEL, models[i] or "")] += 1
        if local:
            outcomes.extend(self._join_labels(batch, local))

    def _join_labels(
        self, batch: LabelBatch, rows: Sequence[int], rerouted: bool = False
    ) -> list[JoinedOutcome]:
        """The join's outcomes of the labels at ``rows`` of ``batch``, in order."""
        sources = batch.records
        digests = self._digests(sources, rows, len(rows) == len(batch))
        if len(rows) == len(batch):
            return self.join.on_labels(batch.prediction_ids, batch.timestamps.tolist(), batch.labels,
                                       batch.model_ids, digests, sources, rerouted)
        return self.join.on_labels([batch.prediction_ids[i] for i in rows], batch.timestamps[rows].tolist(),
                                   [batch.labels[i] for i in rows], [batch.model_ids[i] for i in rows],
                                   digests, [sources[i] for i in rows], rerouted)

    def _apply_rerouted_batches(
        self, predictions: PredictionBatch, labels: LabelBatch, outcomes: list[JoinedOutcome]
    ) -> None:
        """:meth:`_apply_rerouted` on decoded batches."""
        if len(predictions):
            keys = self.segment_keys
            tags = [_segment_tags(s, keys) if s else "" for s in predictions.segments] if keys \
                else [""] * len(predictions)
            contexts = list(zip(predictions.model_ids, predictions.model_versions, tags, strict=True))
            digests = self._digests(predictions.records, range(len(predictions)), True)
            checked = predictions.features  # the decoder's columns: packed at once, as in the shard's own
            joined, _ = self.join.on_predictions(
                predictions.prediction_ids, predictions.timestamps.tolist(), contexts,
                predictions.predictions, predictions.feature_maps, digests, predictions.records,
                rerouted=True,
                columns=None if checked is None else (checked.names, checked.columns, checked.numbers))
            outcomes.extend(joined)
        if len(labels):
            outcomes.extend(self._join_labels(labels, range(len(labels)), rerouted=True))
        self.totals["rerouted_in"] += len(predictions) + len(labels)

    def _on_profile(self, value: bytes | None) -> None:
        if (self.watch is None and self.multivariate is None) or not value:
            return
        try:
            profile = parse_profile(value)
        except ValueError:  # the sink dead-letters it, once (invalid_profile): see ModelProcessor
            self.totals["bad_profiles"] += 1
            return
        self._touched.add((profile.model_id, profile.model_version))
        if self.watch is not None and self.watch.add_profile(profile):
            self.totals["profiles_watched"] += 1
        if self.multivariate is not None and self.multivariate.add_profile(profile):
            self.totals["multivariate_profiles"] += 1

    def _feed_held_events(self, reports: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        """The watch holds a model's few events to feed them as one batch; those whose reports
        this batch's progress (the prediction watermark) would pass are fed now, so their reports
        go out before it: stage 2 applies reports up to the shards' progress, and every window
        closing by then sees them."""
        if self.watch is None:
            return
        for key, fed in self.watch.flush_due(self.pred_watermark).items():
            self._touched.add(key)  # its monitors changed: the next delta carries them
            reports.setdefault(key, []).extend(fed)

    def _emit_episode_reports(
        self, reports: dict[tuple[str, str], list[dict[str, Any]]], out: list[OutboundMessage]
    ) -> None:
        """Each model's drift episode reports to its stage-2 partition, before this batch's
        progress record (stage 2 applies them once every shard's progress has passed them)."""
        for (model_id, version), items in sorted(reports.items()):
            if not items:
                continue
            self.totals["episode_reports"] += len(items)
            record = records.EpisodeReports(self.shard, model_id, version, items)
            out.append(records.to_model_event(self.model_events_topic, self.model_events_partitions, record))

    def _accumulate(self, key: WindowKey, final: bool) -> None:
        """Add buffered events to the window in chunks of exactly ACCUMULATE_CHUNK (the rest only
        when the window closes): float sums then round identically however the log was batched."""
        self.buffered[key].drain(self.open[key], ACCUMULATE_CHUNK, final)

    def _take_duplicates(self, out: list[OutboundMessage]) -> list[DuplicateRow]:
        """The join's duplicates of this batch: a conflicting one (same id, other payload) becomes a
        dead letter; the exact re-sends are returned, to be counted per model in stage 2."""
        exact: list[DuplicateRow] = []
        for d in self.join.take_duplicates():
            record: RawRecord = d.source
            # A first record restored from an older checkpoint holds BLAKE2b-64 of its value.
            if d.exact or legacy_resend(d.first_digest, record.value or b""):
                exact.append(DuplicateRow(d.model_id, d.model_version, d.kind, d.segment, d.event_time,
                                          record.partition, record.offset, d.prediction_id))
                continue
            message = (f"{d.kind} {d.prediction_id!r}: payload hash {d.digest.hex()} differs from "
                       f"{d.first_digest.hex()} of the {d.kind} accepted first (kept); hashes are "
                       "CRC-32 then length of the record values (BLAKE2b-64 for one restored from "
                       "an older checkpoint)")
            letter = dead_letter(record, ErrorKind.CONFLICTING_DUPLICATE, message)
            out.append(OutboundMessage(self.dead_letters_topic, letter.original_key,
                                       letter.model_dump_json().encode()))
            self.totals["dead_lettered"] += 1
        self.totals["exact_duplicates"] += len(exact)
        return exact

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
                late_rows.append(late_event_row(self.run_id, record, "label", event, self.label_watermark))
                continue
            self.label_watermark = max(self.label_watermark, ts - self.lateness_ms)
            self.join_inputs[(reroute.LABEL, event.model_id or "")] += 1
            destination = self._join_shard(event.prediction_id)
            if destination != self.shard:
                forwarded.append(
                    self.forwarder.forward(reroute.LABEL, destination, record, event.prediction_id)
                )
                self.rerouted[(reroute.LABEL, event.model_id or "")] += 1
                continue
            joined = self.join.on_label(event, digest=_digest(record), source=record)
            if joined is not None:
                outcomes.append(joined)

    # -- re-routing (see driftline.pipeline.reroute) ----------------------------------------

    def _init_rerouting(self, topics: TopicSettings) -> None:
        """Re-routing state; the sequence numbers must survive restarts, so the partition count
        is fixed at creation (driftline never changes a topic's partition count)."""
        self.partitions = topics.partitions
        self.forwarder = reroute.Forwarder(self.shard, topics.partitions, topics.repartition)
        self.inbox = reroute.Inbox(self.shard, topics.partitions)
        self.rerouted: Counter[tuple[str, str]] = Counter()  # (kind, model_id) -> records forwarded
        self.join_inputs: Counter[tuple[str, str]] = Counter()  # (kind, model_id) -> records accepted
        self.forwarded_ids = reroute.ForwardedPredictions()
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
        for record, event in predictions:
            tags = segment_tags(event, self.segment_keys)
            joined = self.join.on_prediction(
                event, tags, rerouted=True, digest=_digest(record), source=record
            )
            if joined is not None:
                outcomes.append(joined)
        for record, label in labels:
            joined = self.join.on_label(label, rerouted=True, digest=_digest(record), source=record)
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
        # Every process() comes here, and with many models a shard holds thousands of open windows,
        # most of them ending at a few grid lines: they are looked through only when the earliest
        # ends (its end kept as windows open and close, found again after a restore).
        watermark = self.pred_watermark
        if self._staged and watermark >= self._staged_end:
            self._buffer_staged()  # staged events may fall in a window closing now
        if watermark < self._first_end:
            return 0
        # WindowKey._make: keys checkpointed before WindowKey existed are plain (equal) tuples
        due = sorted((WindowKey._make(key) for key in self.open if key[0] + key[1] <= watermark),
                     key=WindowKey.close_order)
        for key in due:
            accumulator = self.open.pop(key)
            buffered = self.buffered.pop(key)
            if not accumulator.n_events and len(buffered) < self.values_below:
                # Few events, none added yet: their counts and values travel in place of moments and
                # sketches (smaller, no statistics object per column; stage 2 builds no sketch for a
                # window under-filled over all shards); stage 2 computes from them exactly the
                # moments and sketches this accumulator would have (see values_partial).
                aggregate = values_partial(buffered.parts)
            else:
                buffered.drain(accumulator, ACCUMULATE_CHUNK, final=True)
                aggregate = accumulator.to_partial()
            if key.segment == "" and self.multivariate is not None:
                multivariate = self.multivariate.take(key.size, key.start, key.model_id, key.model_version)
                if multivariate is not None:
                    aggregate["multivariate"] = multivariate
            partial = records.Partial(self.shard, key.model_id, key.model_version, key.segment, key.size_s,
                                      key.start, key.end, aggregate)
            out.append(records.to_model_event(self.model_events_topic, self.model_events_partitions, partial))
        self._first_end = min((key[0] + key[1] for key in self.open), default=_NO_WINDOW)
        return len(due)

    def _emit_outcomes(self, outcomes: list[JoinedOutcome], expired: list[ExpiredPrediction],
                       orphans: Sequence[Any], duplicates: Sequence[Any], out: list[OutboundMessage]) -> None:
        """The outcomes' rows, and to stage 2 the columnar records of the batch's outcomes, expired
        predictions, orphan labels and duplicates (:meth:`_model_events`)."""
        messages = outcome_messages(outcomes, self.run_id)
        if len(messages) != len(outcomes):
            raise ValueError(f"{len(messages)} outcome messages for {len(outcomes)} outcomes")
        keys = map(str.encode, map(_prediction_id, outcomes))
        out.extend(keyed_messages(self.outcomes_topic, keys, messages))
        out.extend(self._model_events(outcomes, expired, orphans, duplicates))

    def _model_events(self, outcomes: Sequence[Any], expired: Sequence[Any], orphans: Sequence[Any],
                      duplicates: Sequence[Any]) -> list[OutboundMessage]:
        """The columnar records of the batch's outcomes, expired predictions, orphan labels and
        duplicates to stage 2: a partition's of a kind stacked in one message, or (bundling off) a
        message a model and kind."""
        kinds: tuple[tuple[type[records.ColumnarRecord], Sequence[Any]], ...] = (
            (records.Outcomes, outcomes), (records.Expired, expired), (records.Orphans, orphans),
            (records.Duplicates, duplicates))
        topic, partitions = self.model_events_topic, self.model_events_partitions
        if not self.bundle_model_events:  # a message each, as every release's stage 2 reads them
            return [records.to_model_event(topic, partitions, record) for kind, items in kinds
                    for _, made in records.stacks(self.shard, partitions, kind, items)
                    for record in made.records()]
        return [message for kind, items in kinds
                for message in records.stacked(topic, partitions, self.shard, kind, items)]

    def outcome_progress(self) -> int:
        """No outcome with a label time before this can still come from this shard, nor an expiry
        before its time: a prediction still to come (at or after the join's prediction watermark)
        expires at its time plus the horizon, which labels read ahead may have passed (before,
        its ``expired`` record reached stage 2 after the interval closed and was lost)."""
        held = self.join.earliest_held_label_ts()
        label_watermark = self.join_watermark(reroute.LABEL)
        predictions = self.join_watermark(reroute.PREDICTION)
        expiries = NO_TIME if predictions == NO_TIME else predictions + self.join.horizon_ms
        return min(label_watermark, expiries) if held is None else min(label_watermark, expiries, held)

    def _emit_progress(self, out: list[OutboundMessage], force: bool) -> None:
        outcome_progress = self.outcome_progress()
        # No duplicate with an earlier event time can still come from this shard: it is found by
        # the join, so the join's watermarks bound it (and held labels, claimed later). The join's
        # prediction watermark also moves when another partition's marks arrive, with no local
        # progress: it takes part in deciding whether progress moved, or it could stay stale.
        progress = (self.pred_watermark, outcome_progress,
                    min(outcome_progress, self.join_watermark(reroute.PREDICTION)))
        sent = (*self.sent_progress, NO_TIME)[:3]  # a checkpoint from before sent a pair
        step = self.progress_step_ms
        moved = any(new // step != old // step for new, old in zip(progress, sent, strict=True))
        if not (moved or (force and progress != sent)):
            return
        self.sent_progress = progress
        record = records.Progress(self.shard, *progress)
        out.extend(records.broadcast(self.model_events_topic, self.model_events_partitions, record))


def _picked(column: Sequence[_T], rows: Sequence[int], whole: bool) -> Sequence[_T]:
    """``column`` at ``rows``; ``whole``: ``rows`` is every position, in order (the column itself).
    Feature maps kept as rows stay rows (no dict per event)."""
    if whole:
        return column
    if isinstance(column, FeatureRows):
        return cast(Sequence[_T], column.take(rows))
    return [column[i] for i in rows]


def _picked_features(
    features: FeatureColumns | None, rows: Sequence[int], whole: bool
) -> FeatureColumns | None:
    """The decoder's feature columns of the events at ``rows`` (``whole``: every event, in order)."""
    if features is None or whole:
        return features
    at = np.array(rows, dtype=np.intp)
    return FeatureColumns(features.names, [[column[i] for i in rows] for column in features.columns],
                          [None if floats is None else floats[at] for floats in features.numbers])


class _StagedBatch(NamedTuple):
    """A batch's counted events waiting for the window buffers: its columns, event times, segment
    tags (all its events) and the rows of each (model, version)."""

    columns: EventColumns
    timestamps: npt.NDArray[np.int64]
    tags: Sequence[str]
    by_model: Mapping[tuple[str, str], Sequence[int]]


_ModelColumns = tuple[Mapping[str, npt.NDArray[np.float64]], dict[str, Sequence[Any]]]
"""A model's decoder columns: the float64 ones by name (a dict, or a :class:`FloatBlock`), and the
other features' values."""


class _GroupedColumns:
    """:func:`_split_columns` of the events at each group's rows (in order), for a batch of many
    groups (models): the float64 columns gathered into one matrix and the others' values listed in
    the groups' order once per batch; a group's floats a copy of its columns of the matrix, its
    other values slices (:meth:`events`: all of them, as the feature watch reads them). With many
    models a batch holds a few events of each: a gather per column and model cost more than the
    values (bench/bench_model_columns.py)."""

    def __init__(self, features: FeatureColumns | None,
                 groups: Mapping[tuple[str, str], Sequence[int]]) -> None:
        self.groups = groups
        self.order: list[int] = list(chain.from_iterable(groups.values())) if features is not None else []
        self.floats: FloatBlock | None = None  # the float columns as one matrix in the groups' order
        self.values: dict[str, list[Any]] = {}
        self.starts: dict[tuple[str, str], int] = {}
        if features is None:
            return
        numbers, missing = _detector_floats(features)
        float_names = tuple(name for name, floats in zip(features.names, numbers, strict=True)
                            if floats is not None)
        order = self.order
        if float_names:  # one gather for the batch
            self.floats = FloatBlock(float_names, np.array(
                [floats for floats in numbers if floats is not None], dtype=np.float64).take(order, axis=1))
        self.values = {name: [column[i] for i in order] for name, column, floats, lacking
                       in zip(features.names, features.columns, numbers, missing, strict=True)
                       if floats is None or lacking}
        start = 0
        for key, rows in groups.items():
            self.starts[key] = start
            start += len(rows)

    def of(self, key: tuple[str, str]) -> _ModelColumns:
        if key not in self.starts:  # (no columns: the decoder had none for the batch)
            return {}, {}
        start = self.starts[key]
        return run_columns(self.floats, self.values, start, start + len(self.groups[key]))

    def events(self, times: Sequence[int], ids: Sequence[str]) -> GroupedEvents:
        """The groups' events as the feature watch reads a batch of many models (``times`` and
        ``ids``: the batch's, a value per event)."""
        order, keys = self.order, list(self.groups)
        starts = [self.starts[key] for key in keys]
        starts.append(len(order))
        return GroupedEvents(keys, starts, [times[i] for i in order], [ids[i] for i in order], self.floats,
                             self.values)


def _split_columns(features: FeatureColumns | None) -> _ModelColumns:
    """The float64 columns the detectors read by name (:func:`_detector_floats`; they read them
    instead of each event's feature map), and the value columns of the other features and of those
    with a missing value."""
    if features is None:
        return {}, {}
    numbers, missing = _detector_floats(features)
    names = features.names
    named = {name: column for name, column in zip(names, numbers, strict=True) if column is not None}
    others = {name: column for name, column, lacking in zip(names, features.columns, missing, strict=True)
              if name not in named or lacking}
    # one matrix, as a group of many models' is: the watch searches a bank's rows in one C call
    floats: Mapping[str, npt.NDArray[np.float64]] = named
    if len(named) > 1:
        floats = FloatBlock(tuple(named), np.array(list(named.values()), dtype=np.float64))
    return floats, others


_FLOAT_OR_NONE = frozenset({float, type(None)})


def _detector_floats(features: FeatureColumns) -> tuple[list[npt.NDArray[np.float64] | None], list[bool]]:
    """Per feature, the float64 column the sequential and multivariate detectors read, and whether
    it stands for missing values: the decoder's where every value is a float, and where every value
    is a float or missing (None), the floats with NaN for each missing one. Both detectors read a
    missing value as NaN (not watched; a NaN in the multivariate matrix) whether they convert it or
    are given it, so the results are the same; given, a batch of many models converts it once, not
    once per model's group. A column with a missing value stays among the value columns too (a
    profile may watch the feature as categorical)."""
    numbers: list[npt.NDArray[np.float64] | None] = []
    missing: list[bool] = []
    for column, floats in zip(features.columns, features.numbers, strict=True):
        if floats is None and _FLOAT_OR_NONE.issuperset(map(type, column)):
            numbers.append(np.array(column, dtype=np.float64))  # None -> NaN
            missing.append(True)
        else:
            numbers.append(floats)
            missing.append(False)
    return numbers, missing


def _picked_outputs(outputs: Sequence[Prediction], rows: Sequence[int], whole: bool) -> Sequence[Prediction]:
    """:func:`_picked` of a batch's outputs, the decoder's columns kept as columns (no object per output)."""
    if not whole and isinstance(outputs, OutputColumns):
        return outputs.take(rows)
    return _picked(outputs, rows, whole)


def _scores(outputs: Sequence[Prediction], rows: Sequence[int], whole: bool) -> list[float | None]:
    """The score of each output at ``rows`` (``whole``: every output, in order)."""
    if isinstance(outputs, OutputColumns):
        return list(outputs.scores) if whole else [outputs.scores[i] for i in rows]
    return [p.score for p in outputs] if whole else [outputs[i].score for i in rows]


@dataclass(frozen=True, slots=True)
class ShardDelta:
    """A stage-1 delta checkpoint: the shard's attributes but the join, and the join's changes.
    Delta format 3: ``rest`` pickled by the shard's :class:`ChainShared` (the profiles the chain
    holds named) and ``profiles`` the pickle of those it did not hold; before, ``rest`` itself
    (and no ``profiles``: read with ``getattr``)."""

    rest: dict[str, Any] | bytes
    join: JoinChanges
    profiles: bytes = b""


# rebuilt with the chain; the earliest window end, from the windows restored
_NOT_PICKLED = frozenset({"_shared_profiles", "_touched", "_item_marks", "_first_end", "_staged",
                          "_staged_events", "_staged_end"})
_NO_WINDOW = 2**62  # the earliest end when no window is open: after any watermark


def _window_model(key: tuple[Any, ...]) -> tuple[str, str]:
    return key[2], key[3]  # (size, start, model, version[, segment])


def _same(key: tuple[str, str]) -> tuple[str, str]:
    return key


_ITEMS: tuple[tuple[tuple[str, ...], Callable[[Any], tuple[str, str]]], ...] = (
    (("open",), _window_model),
    (("buffered",), _window_model),
    (("watch", "_models"), _same),
    (("multivariate", "models"), _same),
    (("multivariate", "windows"), _window_model),
    (("multivariate", "episodes", "_models"), _same),
)
"""The per-model dicts a delta carries as :class:`ItemChanges` (their place: a shard's attribute,
then attributes of the objects it holds) and the model of an item's key: an item's state changes
only with its model's events and profiles (the shard marks those models, ``_touched``); a window
closed is a key gone."""


def _at(root: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """What ``path`` names from ``root`` (a dict of attributes), None where it breaks off."""
    found: Any = root.get(path[0])
    for name in path[1:]:
        found = getattr(found, "__dict__", {}).get(name)
    return found


@dataclass(frozen=True, slots=True)
class DuplicateRow:
    """An exact re-send, as stage 2 counts it (the source record identifies it)."""

    model_id: str
    model_version: str
    kind: str  # 'prediction' | 'label'
    segment: str  # the accepted prediction's segment tags
    event_time: int
    source_partition: int
    source_offset: int
    prediction_id: str


def _window_buffer(buffered: WindowBuffer | tuple[list[Any], list[Any], list[Any]]) -> WindowBuffer:
    """A window's buffer; a checkpoint from before column blocks holds (features, predictions,
    latencies) lists."""
    if isinstance(buffered, WindowBuffer):
        return buffered
    buffer = WindowBuffer()
    buffer.append(EventColumns.of(*buffered))
    return buffer


def _digest(record: RawRecord) -> bytes:
    return payload_digest(record.value or b"")


class ShardFactory:
    """Creates or restores stage-1 processors for the runner; ``columnar=False`` runs the row path
    (both keep the same state, so a checkpoint of either restores into either)."""

    def __init__(self, settings: Settings, run_id: str = "", columnar: bool = True) -> None:
        self.settings = settings
        self.run_id = run_id
        self.columnar = columnar

    def create(self, shard: int) -> ShardProcessor:
        return ShardProcessor(shard, self.settings, self.run_id, columnar=self.columnar)

    def restore(self, shard: int, blob: bytes | BlobFile, deltas: Sequence[bytes] = ()) -> ShardProcessor:
        processor = ShardProcessor.restore(blob, self.settings, f"stage-1 shard {shard}", deltas)
        if processor.shard != shard:
            raise ValueError(f"checkpoint of shard {processor.shard} offered for shard {shard}")
        processor.columnar = self.columnar
        return processor
