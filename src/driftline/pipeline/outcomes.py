"""Stage 2's label clock: outcome buckets, online metrics, the error stream and exact re-sends.

Outcomes, expiries, evicted predictions (dropped at the join's ``max_pending`` bound) and orphan
labels land in event-time buckets of ``windows.metrics_interval_s`` per (model, version),
deduplicated by id. A bucket closes once every stage-1 shard's outcome progress has passed its
end: its outcomes are applied in canonical ``(label_time, prediction_id)`` order to River's online
estimators and concept-drift detector per segment (``alarm`` rows), the sequential error-stream
monitor (drift episodes of feature ``__error__``, merged on this clock), and the retrain policy's
performance and concept-drift families; one ``interval`` row of model_metrics per segment; then,
per model and interval, the champion/challenger comparisons of its versions
(:mod:`driftline.pipeline.comparison`, ``version_comparison`` rows and ``comparison`` triggers). Exact
re-sends are counted per interval on their own progress (``duplicate_progress``) as ``duplicates``
rows.

:meth:`OutcomeClock.close` returns the rows and triggers; it never produces anything itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any

from driftline.config import Settings
from driftline.operators.feature_watch import ERROR_FEATURE, ErrorWatch
from driftline.operators.performance import OnlinePerformance
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.window_stats import MAX_ABS_VALUE
from driftline.pipeline.comparison import Losses, VersionComparisons
from driftline.pipeline.episodes import EpisodeMerger
from driftline.pipeline.records import (
    NO_TIME,
    OUTCOME_FIELDS,
    Duplicates,
    Expired,
    Orphans,
    Outcomes,
    Progress,
    Stacked,
    window_segments,
)
from driftline.pipeline.references import ProfileBook
from driftline.pipeline.to_rows import (
    ORPHAN_REASONS,
    IntervalTally,
    MetricsRowContext,
    model_metrics_row,
    unjoined_event_row,
)
from driftline.schemas.events import RetrainTrigger

Rows = dict[str, list[dict[str, Any]]]
# prediction_id -> (segment tags, label_time, label_delay_ms, correct, abs_error)
OutcomeFigures = tuple[str, int, int, int | None, float | None]
# an exact re-send: (segment tags, prediction id, event time); segment tags alone before they were rows
Resend = tuple[str, str, int] | str


class IntervalLosses:
    """Per-outcome losses of the versions of each model in the intervals closing now, for the
    version comparisons: 0/1 errors of a classifier (metric 'accuracy'), else absolute errors
    ('mae')."""

    def __init__(self) -> None:
        self.by_version: dict[tuple[str, int], dict[str, Losses]] = defaultdict(dict)
        self.metric: dict[tuple[str, int], str] = {}

    def add(self, model_id: str, version: str, start: int, ordered: list[tuple[str, OutcomeFigures]]) -> None:
        found: Losses = []
        classifier = False
        for pid, (tags, _, _, correct, abs_error) in ordered:
            if correct is not None:
                found.append((pid, tags, float(1 - correct)))
                classifier = True
            elif abs_error is not None and abs_error <= MAX_ABS_VALUE:
                found.append((pid, tags, float(abs_error)))
        key = (model_id, start)
        self.by_version[key][version] = found
        if classifier or key not in self.metric:
            self.metric[key] = "accuracy" if classifier else "mae"


@dataclass
class Bucket:
    """Outcomes and expiries of one model in one event-time metrics interval, deduplicated by id."""

    outcomes: dict[str, OutcomeFigures] = field(default_factory=dict)
    expired: dict[str, str] = field(default_factory=dict)  # prediction_id -> segment tags
    rerouted: set[str] = field(default_factory=set)  # outcomes whose prediction or label was re-routed
    # (prediction_id, label_time, source partition, offset) -> reason; (prediction_id, label_time) in
    # buckets checkpointed before orphan labels were rows
    orphans: dict[tuple[Any, ...], str] = field(default_factory=dict)
    # prediction_id -> segment tags of predictions evicted at the join's max_pending bound
    evicted: dict[str, str] = field(default_factory=dict)
    # prediction_id -> when the join gave an expired or evicted prediction up (prediction time + horizon)
    given_up_at: dict[str, int] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # buckets pickled before re-routing (or before evictions, or their times, were reported) lack these
        self.__dict__.update({"rerouted": set(), "orphans": {}, "evicted": {}, "given_up_at": {}, **state})


class OutcomeClock:
    """The outcome buckets and duplicate counts of one stage-2 shard's models (module docstring)."""

    def __init__(self, shard: int, partitions: int, settings: Settings, run_id: str, profiles: ProfileBook,
                 policy: RetrainPolicy) -> None:
        self.shard = shard
        self.run_id = run_id
        self.profiles = profiles
        self.policy = policy
        self.progress = [NO_TIME] * partitions  # each shard's outcome_progress
        self.closed_until = NO_TIME
        self.buckets: dict[tuple[str, str], dict[int, Bucket]] = defaultdict(dict)
        self.performance: dict[tuple[str, str, str], OnlinePerformance] = {}
        self.outcomes_total: Counter[tuple[str, str, str]] = Counter()
        self.performance_reference: dict[tuple[str, str], float] = {}
        self.init_duplicates(partitions)
        self.error_episodes: EpisodeMerger | None = None  # made by configure
        self.error_watch: dict[tuple[str, str], ErrorWatch] = {}
        self.totals: Counter[str] = Counter()
        self.comparisons: VersionComparisons | None = None  # made by configure
        self.configure(settings, settings.config_hash())

    def init_duplicates(self, partitions: int) -> None:
        """Exact re-sends per (model, version) and interval start, by source record (kind,
        partition, offset) -> (segment tags, prediction id, event time); closed on the shards'
        duplicate progress."""
        self.duplicate_progress = [NO_TIME] * partitions
        self.closed_duplicates_until = NO_TIME
        self.duplicates: dict[tuple[str, str], dict[int, dict[tuple[str, int, int], Resend]]] = \
            defaultdict(dict)

    def configure(self, settings: Settings, config_hash: str) -> None:
        """Values derived from the settings (on creation and every restore)."""
        self.performance_settings = settings.performance
        self.sequential = settings.sequential
        self.min_count = settings.drift.min_count
        self.interval_ms = settings.windows.metrics_interval_s * 1000
        self.expired_rows = settings.join.expired_rows
        if self.error_episodes is None:  # new, or a checkpoint from before drift episodes
            self.error_episodes = EpisodeMerger(self.interval_ms, "errors", self.run_id)
            self.error_watch = {}
        self.error_episodes.config_hash = config_hash
        comparisons = self.__dict__.get("comparisons")
        if comparisons is None:  # new, or a checkpoint from before comparisons
            comparisons = self.comparisons = VersionComparisons()
        comparisons.configure(settings.comparison, self.interval_ms)

    @property
    def versions(self) -> VersionComparisons:
        assert self.comparisons is not None, "configure() makes the comparisons"
        return self.comparisons

    @property
    def merger(self) -> EpisodeMerger:
        assert self.error_episodes is not None, "configure() makes the merger"
        return self.error_episodes

    # -- input ------------------------------------------------------------------------------

    def advance(self, progress: Progress) -> None:
        s = progress.shard
        self.progress[s] = max(self.progress[s], progress.outcome_progress)
        self.duplicate_progress[s] = max(self.duplicate_progress[s], progress.duplicate_progress)

    def _bucket(self, model: tuple[str, str], time: int) -> Bucket | None:
        """The open bucket holding ``time``; None if it closed already."""
        start = time - time % self.interval_ms
        if start + self.interval_ms <= self.closed_until:
            return None
        buckets = self.buckets[model]
        bucket = buckets.get(start)
        if bucket is None:  # (not setdefault: a Bucket is six containers, made per record otherwise)
            bucket = buckets[start] = Bucket()
        return bucket

    def add_outcomes(self, record: Outcomes) -> None:
        self._add_outcome_rows((record.model_id, record.model_version), record.rows())

    def add_stacked_outcomes(self, record: Stacked) -> None:
        """A stacked outcomes record's models' rows, each run as :meth:`add_outcomes` takes that
        model's record (no record made a model: with many models a batch's are hundreds)."""
        rows = zip(*(record.columns[name] for name in OUTCOME_FIELDS), strict=True)
        for model_id, version, n in zip(record.model_id, record.model_version, record.rows, strict=True):
            self._add_outcome_rows((model_id, version), islice(rows, n))

    def _add_outcome_rows(self, model: tuple[str, str], rows: Iterable[tuple[Any, ...]]) -> None:
        interval = self.interval_ms
        start, bucket = None, None  # the bucket of the previous outcome: most follow in the same one
        for pid, seg, label_time, delay, correct, abs_error, rerouted in rows:
            if label_time - label_time % interval != start:
                start, bucket = label_time - label_time % interval, self._bucket(model, label_time)
            if bucket is None:
                self.totals["duplicate_outcomes"] += 1
                continue
            bucket.outcomes[pid] = (seg, label_time, delay, correct, abs_error)
            if rerouted:
                bucket.rerouted.add(pid)

    def add_expired(self, record: Expired) -> None:
        model = (record.model_id, record.model_version)
        for pid, seg, expired_at, reason in record.rows():
            bucket = self._bucket(model, expired_at)
            if bucket is None:
                # re-sent by a restarted shard; else a shard's outcome progress passed an expiry
                # still to come (labels read ahead before ShardProcessor.outcome_progress waited
                # for predictions): counted, never dropped unseen
                self.totals["given_up_after_close"] += 1
                continue
            (bucket.evicted if reason == "evicted" else bucket.expired)[pid] = seg
            bucket.given_up_at[pid] = expired_at

    def add_orphans(self, record: Orphans) -> None:
        model = (record.model_id, record.model_version)
        for pid, label_time, reason, partition, offset in record.rows():
            bucket = self._bucket(model, label_time)
            if bucket is None:
                self.totals["given_up_after_close"] += 1  # as add_expired's
                continue
            bucket.orphans[(pid, label_time, partition, offset)] = reason

    def add_duplicates(self, record: Duplicates) -> None:
        intervals = self.duplicates[(record.model_id, record.model_version)]
        for dup_kind, seg, event_time, partition, offset, pid in record.rows():
            start = event_time - event_time % self.interval_ms
            if start + self.interval_ms <= self.closed_duplicates_until:
                self.totals["duplicates_after_close"] += 1  # cannot happen: shards hold progress
                continue
            intervals.setdefault(start, {})[(dup_kind, partition, offset)] = (seg, pid, event_time)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> tuple[Rows, list[RetrainTrigger]]:
        """Rows of every bucket all shards' progress has passed (then of every interval of
        re-sends their duplicate progress has passed), and the triggers they fired."""
        rows: Rows = defaultdict(list)
        triggers: list[RetrainTrigger] = []
        watermark = min(self.progress)
        if watermark > self.closed_until:
            # every version of a model closes an interval in the same call: compared once all closed
            losses = IntervalLosses() if self.versions.active else None
            for model in sorted(self.buckets):
                buckets = self.buckets[model]
                for start in sorted(s for s in buckets if s + self.interval_ms <= watermark):
                    self._close_bucket(model, start, buckets.pop(start), rows, triggers, losses)
            self.closed_until = watermark
            for (model_id, start), by_version in sorted(losses.by_version.items() if losses else ()):
                assert losses is not None
                compared, fired = self.versions.close_interval(
                    self.run_id, model_id, start, losses.metric[(model_id, start)], by_version, self.policy)
                rows["version_comparison"].extend(compared)
                triggers.extend(fired)
        self._close_duplicates(rows)
        return rows, triggers

    def _close_duplicates(self, rows: Rows) -> None:
        """A ``duplicates`` row of model_metrics per (model, version, segment) and interval with
        exact re-sends, once every shard's duplicate progress passed the interval's end."""
        watermark = min(self.duplicate_progress)
        if watermark <= self.closed_duplicates_until:
            return
        for (model_id, version) in sorted(self.duplicates):
            intervals = self.duplicates[(model_id, version)]
            for start in sorted(s for s in intervals if s + self.interval_ms <= watermark):
                counts: dict[str, Counter[str]] = defaultdict(Counter)
                end = start + self.interval_ms
                for (dup_kind, partition, offset), resend in sorted(intervals.pop(start).items()):
                    # a checkpoint from before re-sends were rows holds the segment tags only
                    tags, pid, event_time = (resend, "", end) if isinstance(resend, str) else resend
                    for segment in window_segments(tags):
                        counts[segment][dup_kind] += 1
                    rows["unjoined_events"].append(unjoined_event_row(
                        self.run_id, model_id, version, dup_kind, "exact_resend", pid, tags, event_time, end,
                        (partition, offset)))
                for segment in sorted(counts):
                    row = self._metrics_row(model_id, version, segment, "duplicates", end, IntervalTally())
                    row.update(n_duplicate_predictions=counts[segment]["prediction"],
                               n_duplicate_labels=counts[segment]["label"])
                    rows["model_metrics"].append(row)
            if not intervals:
                del self.duplicates[(model_id, version)]
        self.closed_duplicates_until = watermark

    def _perf(self, model_id: str, version: str, segment: str, regression: bool) -> OnlinePerformance:
        key = (model_id, version, segment)
        perf = self.performance.get(key)
        # A regression model's first outcome may carry no error (an invalid prediction or label):
        # the estimators made for it, still empty, are the regression ones once an error comes.
        if perf is None or (regression and perf.task == "classification" and not perf.n):
            cfg = self.performance_settings
            # DDM watches a binary error stream; regression errors are continuous, so ADWIN instead.
            detector = "adwin" if regression and cfg.detector == "ddm" else cfg.detector
            perf = self.performance[key] = OnlinePerformance(
                "regression" if regression else "classification",
                cfg.fading_factor,
                detector,
                cfg.detector_delta,
            )
        return perf

    def _close_bucket(self, model: tuple[str, str], start: int, bucket: Bucket, rows: Rows,
                      triggers: list[RetrainTrigger], losses: IntervalLosses | None) -> None:
        model_id, version = model
        end = start + self.interval_ms
        tallies: dict[str, IntervalTally] = defaultdict(IntervalTally)
        ordered = sorted(bucket.outcomes.items(), key=lambda item: (item[1][1], item[0]))
        if losses is not None:
            losses.add(model_id, version, start, ordered)
        # per (segment tags, regression): each segment's online estimators, tally and totals key,
        # looked up at the first outcome that has them (in the order one by one would create them)
        targets: dict[tuple[str, bool], list[tuple[str, OnlinePerformance, IntervalTally,
                                                   tuple[str, str, str]]]] = {}
        # the common bucket (one target): the loop's steps a column at a time
        one_target = self._tally_one_target(model_id, version, ordered, bucket, tallies, rows)
        for pid, (tags, label_time, delay, correct, abs_error) in () if one_target else ordered:
            regression = correct is None and abs_error is not None
            found = targets.get((tags, regression))
            if found is None:
                found = targets[(tags, regression)] = [
                    (segment, self._perf(model_id, version, segment, regression), tallies[segment],
                     (model_id, version, segment)) for segment in window_segments(tags)]
            for segment, perf, tally, total_key in found:
                tally.n += 1
                tally.rerouted += pid in bucket.rerouted
                tally.delays.append(delay)
                if correct is not None:
                    tally.correct += correct
                    tally.n_correct_known += 1
                if abs_error is not None and abs_error <= MAX_ABS_VALUE:  # beyond: not an error measure
                    tally.abs_error += abs_error
                    tally.sq_error += abs_error * abs_error
                    tally.n_error_known += 1
                self.outcomes_total[total_key] += 1
                if perf.update(correct, abs_error):
                    tally.alarm = True
                    rows["model_metrics"].append(
                        self._metrics_row(model_id, version, segment, "alarm", label_time, None)
                    )
        if self.sequential.enabled:
            self._watch_errors(model_id, version, end, ordered, tallies, rows)
        for tags in bucket.expired.values():
            for segment in window_segments(tags):
                tallies[segment].expired += 1
        for tags in bucket.evicted.values():
            for segment in window_segments(tags):
                tallies[segment].evicted += 1
        if bucket.orphans:  # a label names no segment: counted overall only
            tallies[""].orphans += len(bucket.orphans)
        self._unjoined_rows(model_id, version, end, bucket, rows)
        for segment in sorted(tallies):
            tally = tallies[segment]
            row = self._metrics_row(model_id, version, segment, "interval", end, tally)
            rows["model_metrics"].append(row)
            current = self.performance.get((model_id, version, segment))
            if segment == "" and current is not None and tally.n > 0:
                triggers.extend(self._performance_policy(model_id, version, end, start, current, tally))

    def _tally_one_target(self, model_id: str, version: str, ordered: list[tuple[str, OutcomeFigures]],
                          bucket: Bucket, tallies: dict[str, IntervalTally], rows: Rows) -> bool:
        """:meth:`_close_bucket`'s per-outcome steps where every outcome feeds one target (no
        segment tags; all classification, or all regression), with the same results: counts summed
        at once, the errors added in order (float sums), the online estimator fed outcome by outcome
        (alarm rows in order). False, nothing done, for any other bucket (the loop's)."""
        figures = [f for _, f in ordered]
        tags, corrects, errors = (list(map(itemgetter(k), figures)) for k in (0, 3, 4))
        if not figures or tags.count("") != len(tags):
            return False
        if None not in corrects:
            regression = False
        elif corrects.count(None) == len(corrects) and None not in errors:
            regression = True
        else:  # mixed tasks, or outcomes without either figure: the loop's
            return False
        tally = tallies[""]
        tally.n += len(figures)
        if bucket.rerouted:
            tally.rerouted += sum(pid in bucket.rerouted for pid, _ in ordered)
        tally.delays.extend(map(itemgetter(2), figures))
        if not regression:
            tally.correct += sum(corrects)
            tally.n_correct_known += len(corrects)
        for e in errors if errors.count(None) != len(errors) else ():  # in order, from the tally's sums
            if e is not None and e <= MAX_ABS_VALUE:  # beyond: not an error measure
                tally.abs_error += e
                tally.sq_error += e * e
                tally.n_error_known += 1
        total_key = (model_id, version, "")
        before = self.outcomes_total[total_key]
        update = self._perf(model_id, version, "", regression).update
        for i, (f, correct, abs_error) in enumerate(zip(figures, corrects, errors, strict=True)):
            if update(correct, abs_error):
                tally.alarm = True
                self.outcomes_total[total_key] = before + i + 1  # an alarm row's total: up to its outcome
                rows["model_metrics"].append(self._metrics_row(model_id, version, "", "alarm", f[1], None))
        self.outcomes_total[total_key] = before + len(figures)
        return True

    def _unjoined_rows(self, model_id: str, version: str, end: int, bucket: Bucket, rows: Rows) -> None:
        """An ``unjoined_events`` row per prediction that got no label (unless ``join.expired_rows``
        is off) or was evicted, and per label no prediction joined, in a canonical order."""
        out: list[dict[str, Any]] = []
        given_up = bucket.given_up_at
        expired = sorted(bucket.expired.items()) if self.expired_rows else []
        for reason, predictions in (("no_label", expired), ("evicted", sorted(bucket.evicted.items()))):
            for pid, tags in predictions:
                out.append(unjoined_event_row(self.run_id, model_id, version, "prediction", reason, pid, tags,
                                              given_up.get(pid, end), end))
        for key, reason in sorted(bucket.orphans.items()):
            pid, label_time, *source = key
            out.append(unjoined_event_row(self.run_id, model_id, version, "label",
                                          ORPHAN_REASONS.get(reason, reason), pid, "", label_time, end,
                                          (source[0], source[1]) if source else (-1, -1)))
        if out:
            rows["unjoined_events"].extend(out)

    def _watch_errors(self, model_id: str, version: str, end: int, ordered: list[tuple[str, OutcomeFigures]],
                      tallies: dict[str, IntervalTally], rows: Rows) -> None:
        """The sequential detector on the model's error stream, in canonical outcome order."""
        labelled = [(pid, label_time, correct) for pid, (_, label_time, _, correct, _) in ordered
                    if correct is not None]
        if not labelled:
            return
        watch = self.error_watch.get((model_id, version))
        if watch is None:
            cfg = self.sequential
            accuracy = self.profiles.baseline(model_id, version, "accuracy")
            profile = self.profiles.profile_for(model_id, version)
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
            self.merger.add({**report, "shard": self.shard, "model_id": model_id, "model_version": version})
        merged = self.merger.advance(end, (model_id, version))
        rows["drift_episodes"].extend(merged.rows)
        rows["drift_alerts"].extend(merged.events)
        self.totals["episode_events"] += len(merged.events)
        # The error stream counts as alarming while its episode is open, or opened/escalated here.
        if self.merger.is_open(model_id, version, ERROR_FEATURE) or any(
                e["event_kind"] != "closed" for e in merged.events):
            tallies[""].sequential_alarm = True

    def _performance_policy(self, model_id: str, version: str, end: int, start: int,
                            perf: OnlinePerformance, tally: IntervalTally) -> list[RetrainTrigger]:
        figures = perf.get()
        regression = "mae_ew" in figures
        metric = "mae" if regression else "accuracy"
        value = figures.get(f"{metric}_ew")
        if value is None:
            return []
        reference = self.profiles.baseline(model_id, version, metric)
        if reference is None:
            # Without a training baseline the first well-populated interval is the reference.
            if (model_id, version) not in self.performance_reference:
                if self.outcomes_total[(model_id, version, "")] < self.min_count:
                    return []
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
        return list(self.policy.on_performance(
            model_id, version, end, float(value), reference, not regression, alarm, evidence
        ))

    def _metrics_row(self, model_id: str, version: str, segment: str, kind: str, time: int,
                     tally: IntervalTally | None) -> dict[str, Any]:
        perf = self.performance.get((model_id, version, segment))
        figures = perf.get() if perf is not None else {}
        metric = "mae" if "mae_ew" in figures else "accuracy"
        context = MetricsRowContext(
            self.run_id, model_id, version, segment, self.interval_ms // 1000,
            self.outcomes_total[(model_id, version, segment)], self.performance_settings.detector,
            self.profiles.baseline(model_id, version, metric),
        )
        return model_metrics_row(context, kind, time, tally, figures)
