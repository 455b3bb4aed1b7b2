"""Stage 2: one shard = one partition of model-events (a subset of the models).

The router of stage 2: it decodes each input record (typed records of
:mod:`driftline.pipeline.records`, reference profiles, already published triggers) and hands it
to one of two clocks that close independently, each once every stage-1 shard's progress passed:

- :mod:`driftline.pipeline.windows` (window clock): merge the shards' partials, score drift
  against the reference profile, merge drift episode reports, feed the drift policy;
- :mod:`driftline.pipeline.outcomes` (label clock): outcome buckets in canonical
  ``(label_time, prediction_id)`` order, online metrics, error-stream episodes, the performance
  policy, and counts of exact re-sends.

The clocks return rows and retrain triggers; the router produces them (rows as sink messages,
:mod:`driftline.pipeline.to_rows` builds every row), drops triggers already on the topic, and
owns the checkpoint (snapshot, restore with today's settings). Results depend only on the
*content* of the log: duplicates and the interleaving of shards change nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from driftline.config import Settings
from driftline.operators.feature_watch import shared_profile
from driftline.operators.profile import parse_profile
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.validate import RawRecord, dead_letter
from driftline.pipeline import records
from driftline.pipeline.bucket_changes import BucketChanges, BucketMarks, copy_buckets
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.outcomes import Bucket, OutcomeClock
from driftline.pipeline.records import WindowKey
from driftline.pipeline.references import ProfileBook, chain_profiles
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.state import (
    FRESH_STATE_HINT,
    BaseCopy,
    BlobFile,
    StateRestoreError,
    dump_delta,
    dump_state,
    load_delta,
    load_state,
    settings_record,
    warn_if_changed,
)
from driftline.pipeline.windows import WindowClock
from driftline.schemas.events import ErrorKind, RetrainTrigger

__all__ = ["Bucket", "ModelDelta", "ModelFactory", "ModelProcessor"]  # Bucket: pickled here until 0.1

MAX_REMEMBERED_TRIGGERS = 10_000
_NOT_PICKLED = frozenset({"settings", "_shared_profiles", "_bucket_marks"})  # settings: configure()'s


@dataclass
class ModelDelta:
    """A stage-2 delta checkpoint: the processor's state but its outcome buckets, pickled by its
    :class:`~driftline.pipeline.state.ChainShared` (the reference profiles its chain holds named)
    with ``profiles`` the pickle of those it did not hold, and what the buckets gained (and lost)."""

    rest: bytes
    profiles: bytes
    buckets: BucketChanges


class ModelProcessor:
    """Stage-2 state machine of one model-events partition (see module docstring)."""

    stage = "model"

    def __init__(self, shard: int, settings: Settings, run_id: str = "") -> None:
        self.shard = shard
        self.run_id = run_id
        partitions = settings.topics.partitions
        self.profiles = ProfileBook()
        self.policy = RetrainPolicy(settings.triggers, settings.config_hash(), run_id)
        self.windows = WindowClock(partitions, settings, run_id, self.profiles, self.policy)
        self.outcomes = OutcomeClock(shard, partitions, settings, run_id, self.profiles, self.policy)
        self.published_triggers: dict[str, None] = {}  # insertion-ordered set, bounded
        self.totals: Counter[str] = Counter()
        self._shared_profiles = chain_profiles()
        self._bucket_marks = BucketMarks(self.outcomes.buckets)
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Attach the settings and set every value derived from them: on creation and on every
        restore, so a restarted stage applies today's settings (the checkpoint holds state only,
        see :mod:`driftline.pipeline.state`). Detectors already calibrated keep their calibration."""
        if len(self.windows.progress) != settings.topics.partitions:
            raise StateRestoreError(
                f"stage-2 shard {self.shard}: its state follows {len(self.windows.progress)} input "
                f"partitions but topics.partitions is {settings.topics.partitions}; {FRESH_STATE_HINT}"
            )
        self.settings = settings
        self.settings_record = settings_record(settings)
        self.config_hash = settings.config_hash()
        self.profiles_topic = settings.topics.profiles
        self.sink_topic = settings.topics.sink
        self.dead_letters_topic = settings.topics.dead_letters
        self.model_events_topic = settings.topics.model_events
        self.triggers_topic = settings.topics.retrain_triggers
        self.n_source_shards = settings.topics.partitions
        self.policy.configure(settings.triggers, self.config_hash)
        self.policy.episodes_count_as_drift = settings.sequential.count_as_drift
        self.windows.configure(settings, self.config_hash)
        self.outcomes.configure(settings, self.config_hash)

    def __getstate__(self) -> dict[str, Any]:
        # configuration (and secrets) stay out of checkpoints; the chain's helpers are rebuilt
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_PICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state if "windows" in state else _split_flat_state(state))
        if "_shared_profiles" not in self.__dict__:  # unpickled (a delta applied keeps its own)
            self._shared_profiles = chain_profiles()
            self._bucket_marks = BucketMarks(self.outcomes.buckets)

    # -- the stage protocol -----------------------------------------------------------------

    def process(self, batch: Sequence[RawRecord]) -> list[OutboundMessage]:
        dead = [self._dropped_partial_letter(*dropped) for dropped in self.windows.dropped_partials]
        self.windows.dropped_partials.clear()
        for record in batch:
            if record.topic == self.profiles_topic:
                self._on_profile(record.value)
            elif record.topic == self.triggers_topic:
                self._on_published_trigger(record.value)
            else:
                try:
                    self._route(records.decode_model_event(record.value or b""))
                except (ValueError, KeyError, TypeError, OverflowError) as err:
                    # Internal topic written only by stage 1: a bad record is a bug, not user input;
                    # it is dead-lettered with the reason, never raised (it would be read again at
                    # every restart).
                    self.totals["bad_internal_records"] += 1
                    dead.append(self._dead_letter(record, err))
        window_rows, window_triggers = self.windows.close()
        outcome_rows, outcome_triggers = self.outcomes.close()
        out: list[OutboundMessage | None] = [*dead]
        out.extend(self._trigger_message(t) for t in (*window_triggers, *outcome_triggers))
        for table in sorted(window_rows.keys() | outcome_rows.keys()):
            rows = window_rows.get(table, []) + outcome_rows.get(table, [])
            out.extend(records.sink_rows(self.sink_topic, table, rows))
        return [m for m in out if m is not None]

    def snapshot(self) -> bytes:
        return dump_state(self)

    # -- incremental checkpoints (driftline.pipeline.state.Incremental, docs/state.md) -------

    def track_changes(self) -> None:
        """The next delta carries what changes from now on."""
        self._bucket_marks = BucketMarks(self.outcomes.buckets)

    def changed_records(self) -> int:
        """The bucket entries the next delta carries (the runner's restore-time estimate)."""
        return self._bucket_marks.pending(self.outcomes.buckets)

    def checkpoint(self, base: bool) -> bytes:
        """A base snapshot, or a delta: what the open outcome buckets gained since the previous
        checkpoint and which closed (:class:`BucketChanges`), everything else whole but the
        reference profiles its chain holds already (named). The buckets are what grows with
        traffic: every outcome of an open metrics interval, 1.5 million for one model at 5,000
        predictions/s over the default 300 s; the rest grows with models, not with traffic."""
        buckets = self.outcomes.buckets
        if base:
            self._shared_profiles.restart(self._rest())
            self._bucket_marks = BucketMarks(buckets)
            return dump_state(self)
        changes = self._bucket_marks.changes(buckets)
        rest, profiles = self._shared_profiles.dumps(self._rest())
        delta = dump_delta(ModelDelta(rest, profiles, changes), changes.records)
        self._bucket_marks = BucketMarks(buckets)  # the next delta follows this one
        return delta

    def base_copy(self) -> BaseCopy:
        """This shard as it is now, for a base written while it goes on: everything but the
        buckets copied by pickling it (what a delta pickles; the profiles, never changed in place,
        shared), the buckets by copying their dicts (their entries never change: shared)."""
        buckets = self.outcomes.buckets
        rest = self._shared_profiles.loads(self._shared_profiles.restart(self._rest()), b"")
        self._bucket_marks = BucketMarks(buckets)  # the next delta follows this base
        rest["outcomes"].buckets = copy_buckets(buckets)
        copy = ModelProcessor.__new__(ModelProcessor)
        copy.__dict__.update(rest)
        return BaseCopy(copy, release=lambda: None)

    def _rest(self) -> dict[str, Any]:
        """The pickled state with a copy of the outcome clock that holds no buckets."""
        state = self.__getstate__()
        outcomes = state["outcomes"]
        shell = object.__new__(type(outcomes))
        shell.__dict__.update(outcomes.__dict__, buckets=None)
        state["outcomes"] = shell
        return state

    def _apply_delta(self, blob: bytes, what: str) -> None:
        delta = load_delta(blob, what)
        if not isinstance(delta, ModelDelta):
            raise StateRestoreError(f"{what}: a delta holds a {type(delta).__name__}, not a ModelDelta")
        try:
            rest = self._shared_profiles.loads(delta.rest, delta.profiles)
        except StateRestoreError as err:
            raise StateRestoreError(f"{what}: {err}; {FRESH_STATE_HINT}") from None
        rest["outcomes"].buckets = delta.buckets.apply(self.outcomes.buckets)
        self.__setstate__(rest)

    @staticmethod
    def restore(blob: bytes | BlobFile, settings: Settings, what: str = "stage-2 shard",
                deltas: Sequence[bytes] = ()) -> ModelProcessor:
        """The checkpointed shard (a base snapshot and the deltas written after it, in order),
        running with ``settings`` (today's, not the checkpoint's)."""
        processor = load_state(blob, ModelProcessor, what)
        # the profiles the base holds, which its deltas (and the ones this shard writes next) name
        processor._shared_profiles.restart(processor._rest())
        for delta in deltas:
            processor._apply_delta(delta, what)
        processor._bucket_marks = BucketMarks(processor.outcomes.buckets)  # its next delta follows
        recorded = processor.__dict__.get("settings_record")
        if recorded is None and "settings" in processor.__dict__:  # state format 1 pickled its settings
            with contextlib.suppress(Exception):  # settings of an older driftline may not dump
                recorded = settings_record(processor.__dict__["settings"])
        warn_if_changed(what, recorded, settings)
        processor.configure(settings)
        return processor

    def gauges(self) -> list[Gauge]:
        totals: Counter[str] = Counter()
        for counter in (self.totals, self.windows.totals, self.outcomes.totals):
            totals.update(counter)
        figures = [Gauge(f"{k}_total", float(v)) for k, v in sorted(totals.items())]
        for (model_id, version), n_drifted in sorted(self.windows.last_drifted.items()):
            labels = {"model_id": model_id, "model_version": version}
            figures.append(Gauge("model_drifted_features", float(n_drifted), labels))
        open_episodes = self.windows.merger.open_count() + self.outcomes.merger.open_count()
        buckets = self.outcomes.buckets
        figures += [
            Gauge("open_windows", float(len(self.windows.partials))),
            Gauge("open_buckets", float(sum(len(b) for b in buckets.values()))),
            # what stage 2's memory and its checkpoints' deltas grow with (~300 B an outcome)
            Gauge("open_outcomes", float(sum(len(bucket.outcomes) for by_start in buckets.values()
                                             for bucket in by_start.values()))),
            Gauge("open_drift_episodes", float(open_episodes)),
            Gauge("window_progress_ms", float(max(min(self.windows.progress), 0))),
            Gauge("outcome_progress_ms", float(max(min(self.outcomes.progress), 0))),
        ]
        for (model_id, version, segment), perf in sorted(self.outcomes.performance.items()):
            if segment:
                continue
            labels = {"model_id": model_id, "model_version": version}
            for name, value in perf.get().items():
                if isinstance(value, int | float) and name.endswith("_ew"):
                    figures.append(Gauge(f"model_{name}", float(value), labels))
        return figures

    # -- input ------------------------------------------------------------------------------

    def _on_profile(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            profile = parse_profile(value)
        except ValueError:
            # Skipped and counted here; the sink, which reads the profiles topic too (one consumer
            # group, not a shard each), makes it the one dead_letters row the user sees
            # (error_kind 'invalid_profile', with the validation errors).
            self.totals["bad_profiles"] += 1
            return
        self.profiles.add(shared_profile(profile))  # the stage-1 shards of this process hold it too

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

    def _route(self, record: records.ModelEvent) -> None:
        if not 0 <= record.shard < self.n_source_shards:
            raise ValueError(f"shard {record.shard} outside the configured {self.n_source_shards} partitions")
        match record:
            case records.Progress():
                self.windows.advance(record.shard, record.pred_progress)
                self.outcomes.advance(record)
            case records.Partial():
                self.windows.add_partial(record)
            case records.EpisodeReports():
                self.windows.add_episode_reports(record)
            case records.Outcomes():
                self.outcomes.add_outcomes(record)
            case records.Expired():
                self.outcomes.add_expired(record)
            case records.Orphans():
                self.outcomes.add_orphans(record)
            case records.Duplicates():
                self.outcomes.add_duplicates(record)
            case records.Stacked() if record.record_type == records.OUTCOMES:  # most: as if each came alone
                self.outcomes.add_stacked_outcomes(record)
            case records.Stacked():
                for columnar in record.records():  # each as if it had come alone
                    self._route(cast(records.ModelEvent, columnar))

    def _dead_letter(self, record: RawRecord, err: Exception) -> OutboundMessage:
        json = isinstance(err, orjson.JSONDecodeError)
        kind = ErrorKind.DECODE_ERROR if json else ErrorKind.VALIDATION_ERROR
        letter = dead_letter(record, kind, f"internal record: {type(err).__name__}: {err}")
        value = letter.model_dump_json().encode()
        return OutboundMessage(self.dead_letters_topic, letter.original_key, value)

    def _dropped_partial_letter(self, shard: int, key: tuple[Any, ...], partial: bytes,
                                why: str) -> OutboundMessage:
        """The dead letter of a partial a restored checkpoint held but could not merge. Its Kafka
        record is long consumed, so the letter names the stage-1 shard and window, and its offset is
        a negative digest of them: one row per partial in ``dead_letters`` (keyed by position), the
        same row again if a crash makes this restore run twice."""
        size_ms, start_ms, model_id, version, segment = key[:5]
        digest = hashlib.blake2b(repr((shard, *key[:5])).encode(), digest_size=8).digest()
        offset = -1 - (int.from_bytes(digest, "big") >> 2)
        record = RawRecord(self.model_events_topic, self.shard, offset, int(start_ms) + int(size_ms), None,
                           partial)
        message = (f"restored window partial of stage-1 shard {shard}, model {model_id!r} v{version} "
                   f"segment {segment!r}, window {int(size_ms) // 1000} s at {start_ms}: {why}")
        letter = dead_letter(record, ErrorKind.VALIDATION_ERROR, message)
        return OutboundMessage(self.dead_letters_topic, None, letter.model_dump_json().encode())

    def _trigger_message(self, trigger: RetrainTrigger) -> OutboundMessage | None:
        self.totals["triggers"] += 1
        if trigger.trigger_id in self.published_triggers:
            self.totals["triggers_already_published"] += 1
            return None
        value = trigger.model_dump_json().encode()
        return OutboundMessage(self.triggers_topic, trigger.model_id.encode(), value)


def _split_flat_state(flat: dict[str, Any]) -> dict[str, Any]:
    """The state of a ModelProcessor checkpointed before the clocks were split out of it (one flat
    ``__dict__``; windows keyed ``(size s, start ms, ...)``), as the router and its two clocks."""
    profiles = ProfileBook()
    profiles.by_model = flat["profiles"]
    policy = flat["policy"]
    has_episodes = "episodes" in flat  # before drift episodes, configure() starts them
    windows = WindowClock.__new__(WindowClock)
    windows.__dict__.update(
        run_id=flat["run_id"], profiles=profiles, policy=policy, progress=flat["pred_progress"],
        closed_until=flat["closed_windows_until"],
        partials={WindowKey(size_s * 1000, start, model_id, version, segment): parts
                  for (size_s, start, model_id, version, segment), parts in flat["partials"].items()},
        episodes=flat["episodes"] if has_episodes else None,
        pending_alerts=flat["pending_alerts"] if has_episodes else defaultdict(list),
        last_drifted=flat["last_drifted"], totals=Counter(),
    )
    outcomes = OutcomeClock.__new__(OutcomeClock)
    outcomes.__dict__.update(
        shard=flat["shard"], run_id=flat["run_id"], profiles=profiles, policy=policy,
        progress=flat["outcome_progress"], closed_until=flat["closed_buckets_until"], buckets=flat["buckets"],
        performance=flat["performance"], outcomes_total=flat["outcomes_total"],
        performance_reference=flat["performance_reference"],
        error_episodes=flat["error_episodes"] if has_episodes else None,
        error_watch=flat.get("error_watch", {}) if has_episodes else {}, totals=Counter(),
    )
    if "duplicates" in flat:
        outcomes.__dict__.update(duplicate_progress=flat["duplicate_progress"], duplicates=flat["duplicates"],
                                 closed_duplicates_until=flat["closed_duplicates_until"])
    else:  # a checkpoint from before duplicates were counted
        outcomes.init_duplicates(len(flat["pred_progress"]))
    state: dict[str, Any] = {name: flat[name] for name in ("shard", "run_id", "published_triggers", "totals")
                             if name in flat}
    state.update(profiles=profiles, policy=policy, windows=windows, outcomes=outcomes)
    for name in ("settings", "settings_record"):  # format 1 pickled the settings themselves
        if name in flat:
            state[name] = flat[name]
    return state


class ModelFactory:
    """Creates or restores stage-2 processors for the runner."""

    restore_change_s = 2e-6
    """What a delta's bucket entry costs a restore before the runner measured it: 1.0 CPU-us
    measured on an idle box (``bench_checkpoints.py --stage2-outcomes``), doubled for a loaded one
    (stage 1's default, 8 us a join record, would price a stage-2 chain ~8x too high)."""

    def __init__(self, settings: Settings, run_id: str = "") -> None:
        self.settings = settings
        self.run_id = run_id

    def create(self, shard: int) -> ModelProcessor:
        return ModelProcessor(shard, self.settings, self.run_id)

    def restore(self, shard: int, blob: bytes | BlobFile, deltas: Sequence[bytes] = ()) -> ModelProcessor:
        processor = ModelProcessor.restore(blob, self.settings, f"stage-2 shard {shard}", deltas)
        if processor.shard != shard:
            raise ValueError(f"checkpoint of shard {processor.shard} offered for shard {shard}")
        return processor
