"""Stage 2's window clock: merge the shards' partials of a window, score it, feed the drift policy.

A window closes once every stage-1 shard's window progress (``pred_progress``) has passed its
end: its partials are merged in shard order, its features scored against the model's reference
profile (:mod:`driftline.pipeline.references`) by :meth:`DriftScorer.score_stats
<driftline.operators.scorer.DriftScorer.score_stats>` (the batch API's own scoring and
Benjamini-Hochberg verdicts, one scorer per profile), and the policy window (overall segment,
``triggers.window_size_s``) fed to the retrain policy with the drift episode events that happened
before its end. The shards' episode reports are
merged on the same clock (:class:`~driftline.pipeline.episodes.EpisodeMerger`) before any window
closing at the same time, so every window sees the episode events before its end.

A model whose profile has a ``multivariate`` section (:mod:`driftline.operators.model_watch`)
also gets, per overall window, the shards' multivariate partials merged into a
``multivariate_drift`` row (mean reconstruction error, share above the reference's 99 % error
quantile and, on the policy window size, the seeded domain classifier's AUC), an ``outlier_rate``
row and, for classifiers calibrated with scores, an ``estimated_performance`` row (CBPE), whose
policy-window accuracy feeds the retrain policy with ``triggers.use_estimated_performance``. The
classifier's folds, iterations and cadence are the ``multivariate`` settings.

:meth:`WindowClock.close` returns the rows and triggers; it never produces anything itself.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import orjson

from driftline.config import Settings
from driftline.operators.drift import FeatureScore
from driftline.operators.model_watch import merge_windows
from driftline.operators.multivariate import DomainClassifierDrift, unpack_array
from driftline.operators.outliers import outlier_window
from driftline.operators.profile import ReferenceProfile, profile_from_window
from driftline.operators.scorer import DriftScorer, ScoreReport
from driftline.operators.seasonal import WindowReferences, outlier_reference_size
from driftline.operators.sketch import QuantileSketch
from driftline.operators.triggers import EpisodeNote, RetrainPolicy
from driftline.operators.window_stats import (
    VALUES_FORM,
    FeatureStats,
    MergedWindow,
    WindowAccumulator,
    merge_accumulators,
)
from driftline.pipeline.episodes import EpisodeMerger, MergeOutput
from driftline.pipeline.records import NO_TIME, EpisodeReports, Partial, WindowKey, episode_grid_ms
from driftline.pipeline.references import ProfileBook
from driftline.pipeline.to_rows import (
    drift_score_row,
    estimated_performance_row,
    feature_kind,
    feature_window_row,
    finite,
    model_drift_row,
    multivariate_drift_row,
    outlier_rate_row,
    reference_profile_row,
    window_columns,
)
from driftline.pipeline.under_filled import UnderFilledRows
from driftline.schemas.events import RetrainTrigger

PREDICTION_FEATURE = "__prediction__"
PREDICTION_VALUE_FEATURE = "__prediction_value__"
LATENCY_FEATURE = "__latency_ms__"
MIN_DOMAIN_ROWS = 200
"""Fewer sampled window rows than this: no domain classifier (its AUC would be too noisy)."""

Rows = dict[str, list[dict[str, Any]]]

log = logging.getLogger(__name__)


class WindowClock:
    """The windows of one stage-2 shard's models (see module docstring)."""

    def __init__(self, partitions: int, settings: Settings, run_id: str, profiles: ProfileBook,
                 policy: RetrainPolicy) -> None:
        self.run_id = run_id
        self.profiles = profiles
        self.policy = policy
        self.progress = [NO_TIME] * partitions  # each shard's pred_progress
        self.closed_until = NO_TIME
        # each shard's partial as JSON, for checkpoints (and a window's multivariate part): held
        # as dicts, a window's ~60 objects a shard the cyclic collector scanned until it closed
        self.partials: dict[WindowKey, dict[int, bytes]] = {}
        self.episodes: EpisodeMerger | None = None  # made by configure (it needs the grid)
        # feature episode events (drift_alerts rows) awaiting the policy window that holds them
        self.pending_alerts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.last_drifted: dict[tuple[str, str], int] = {}  # features drifted in the latest policy window
        self.totals: Counter[str] = Counter()
        self.configure(settings, settings.config_hash())

    def configure(self, settings: Settings, config_hash: str) -> None:
        """Values derived from the settings (on creation and every restore)."""
        self.drift = settings.drift
        self.domain_settings = settings.multivariate
        self.use_estimated_performance = settings.triggers.use_estimated_performance
        self.config_hash = config_hash
        self.min_size_ms = min(settings.windows.sizes_s) * 1000
        self.policy_size_ms = (settings.triggers.window_size_s or min(settings.windows.sizes_s)) * 1000
        self.domain_size_ms = (settings.multivariate.domain_window_s * 1000) or self.policy_size_ms
        if self.episodes is None:  # new, or a checkpoint from before drift episodes
            self.episodes = EpisodeMerger(episode_grid_ms(settings), "features", self.run_id)
            self.pending_alerts = defaultdict(list)
        self.episodes.config_hash = config_hash
        self.scorers: dict[str, DriftScorer] = {}  # by profile id; made again for today's settings
        self.under_filled: dict[str, UnderFilledRows] = {}  # by profile id, as the scorers
        # a seasonal profile's scorers, per phase of its period and window size
        self.seasonal_scorers = WindowReferences(lambda p: DriftScorer(p, drift=self.drift))
        self.domain_classifiers: dict[str, DomainClassifierDrift | None] = {}  # by profile id (seeded)
        # (stage-1 shard, window, partial's JSON, why) dropped on restore: the model processor
        # dead-letters them
        self.dropped_partials: list[tuple[int, tuple[Any, ...], bytes, str]] = []
        # the partials as parsed when checked, so a window's close does not parse them again (its
        # merge was a third of closing a small window); not checkpointed: a restore parses again
        self.parsed: dict[WindowKey, dict[int, WindowAccumulator]] = {}
        self._drop_malformed_partials()

    def _drop_malformed_partials(self) -> None:
        """Drop the restored partials that cannot be merged: a checkpoint of a version that did not
        check them on arrival may hold one (a window moment that overflowed), and merging it would
        raise at every restart. Counted in ``malformed_partials``, logged and kept in
        ``dropped_partials`` for a dead-letter row; new partials never get here (:meth:`add_partial`
        refuses them, to be dead-lettered)."""
        for key, parts in list(self.partials.items()):
            for shard, held in list(parts.items()):
                blob = _held_json(held)
                try:
                    self.parsed.setdefault(key, {})[shard] = check_partial(orjson.loads(blob))
                    parts[shard] = blob
                except (ValueError, KeyError, TypeError) as err:
                    del parts[shard]
                    self.totals["malformed_partials"] += 1
                    self.dropped_partials.append((shard, tuple(key), blob, f"{type(err).__name__}: {err}"))
                    log.warning("dropped the restored window partial of shard %d for %s: %s: %s",
                                shard, key, type(err).__name__, err)
            if not parts:
                del self.partials[key]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("scorers", None)  # derived from the profiles and settings: not checkpointed
        state.pop("under_filled", None)
        state.pop("seasonal_scorers", None)
        state.pop("domain_classifiers", None)
        state.pop("dropped_partials", None)  # dead-lettered before the next checkpoint
        state.pop("parsed", None)
        return state

    @property
    def merger(self) -> EpisodeMerger:
        assert self.episodes is not None, "configure() makes the merger"
        return self.episodes

    # -- input ------------------------------------------------------------------------------

    def advance(self, shard: int, pred_progress: int) -> None:
        self.progress[shard] = max(self.progress[shard], pred_progress)

    def add_partial(self, record: Partial) -> None:
        if record.window_end <= self.closed_until:
            self.totals["duplicate_partials"] += 1  # re-sent by a restarted shard
            return
        # A malformed partial raises here, where it can be dead-lettered, not when its window
        # closes (there it would stop every window of the shard at every restart).
        parsed = check_partial(record.partial)
        held = orjson.dumps(record.partial)  # decoded from JSON: it encodes
        self.partials.setdefault(record.key, {})[record.shard] = held
        self.parsed.setdefault(record.key, {})[record.shard] = parsed

    def add_episode_reports(self, record: EpisodeReports) -> None:
        for report in record.reports:
            self.merger.add({**report, "shard": record.shard, "model_id": record.model_id,
                             "model_version": record.model_version})

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> tuple[Rows, list[RetrainTrigger]]:
        """Rows of every window all shards' progress has passed, and the triggers they fired."""
        rows: Rows = defaultdict(list)
        triggers: list[RetrainTrigger] = []
        watermark = min(self.progress)
        if watermark <= self.closed_until:
            return rows, triggers
        # Episode reports first: every window closing now sees the episode events before its end.
        self._merged(self.merger.advance(watermark), rows)
        for key in sorted((k for k in self.partials if k.end <= watermark), key=WindowKey.close_order):
            parts = self.partials.pop(key)
            parsed = self.parsed.pop(key, {})
            shards = [parsed.get(s) or WindowAccumulator.from_partial(orjson.loads(parts[s]))
                      for s in sorted(parts)]
            # an under-filled window (see _score_window) reads no quantile: its sketches are not merged
            filled = sum(shard.n_events for shard in shards) >= self.drift.min_count
            merged = merge_accumulators(shards, sketches=filled, consume=True)
            found = None
            multivariate = _multivariate_parts(parts) if key.segment == "" else []
            if multivariate:
                found, estimated = self._multivariate_rows(key, multivariate, rows)
                if estimated is not None:
                    triggers.append(estimated)
            trigger = self._score_window(key, merged, rows, found)
            if trigger is not None:
                triggers.append(trigger)
            self.totals["windows_closed"] += 1
        self.closed_until = watermark
        return rows, triggers

    def _merged(self, merged: MergeOutput, rows: Rows) -> None:
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

    def _reference(self, key: WindowKey, merged: MergedWindow, rows: Rows) -> ReferenceProfile | None:
        """The window's reference profile. A model without one takes a window as its reference
        from the window's end (that window is not scored): an overall window of the smallest size
        holding ``drift.min_count`` events or, while the model has no reference at all, a longer one
        holding them (a model too slow for the smallest size; windows close by end, then size)."""
        profile = self.profiles.profile_for(key.model_id, key.model_version, key.start)
        if (profile is None and key.segment == "" and merged.n_events >= self.drift.min_count
                and (key.size == self.min_size_ms
                     or self.profiles.profile_for(key.model_id, key.model_version) is None)):
            first = profile_from_window(merged, key.model_id, key.model_version, key.start,
                                        self.drift.bins, self.drift.top_k)
            first = first.model_copy(update={"effective_from_ms": key.end})
            self.profiles.add_first_window(first)
            row = reference_profile_row(first.model_dump_json(), created_at=key.end)
            rows["reference_profiles"].append(row)
        return profile

    def _scorer(self, profile: ReferenceProfile) -> DriftScorer:
        scorer = self.scorers.get(profile.profile_id)
        if scorer is None:
            scorer = self.scorers[profile.profile_id] = DriftScorer(profile, drift=self.drift)
        return scorer

    def _under_filled(self, profile: ReferenceProfile, prediction_name: str) -> UnderFilledRows:
        rows = self.under_filled.get(profile.profile_id)
        if rows is None:
            rows = self.under_filled[profile.profile_id] = UnderFilledRows(
                self._scorer(profile), prediction_name, profile.profile_id, self.config_hash)
        return rows

    def _score_window(self, key: WindowKey, merged: MergedWindow, rows: Rows,
                      multivariate: dict[str, Any] | None = None) -> RetrainTrigger | None:
        profile = self._reference(key, merged, rows)
        under_filled = merged.n_events < self.drift.min_count
        report: ScoreReport | None = None
        templates: UnderFilledRows | None = None
        # The prediction distribution is scored like a feature (reported, not part of the verdict):
        # class labels against a categorical reference, regression values (or scores) against a
        # numeric one.
        prediction_name = scored_as = ""  # the name the profile's prediction is scored under
        prediction = None
        if profile is not None:
            observed = {n: s for n, s in merged.features.items() if n in profile.features}
            if profile.prediction is not None:
                categorical = profile.prediction.kind == "categorical"
                prediction_name = scored_as = PREDICTION_FEATURE if categorical else PREDICTION_VALUE_FEATURE
                prediction = merged.prediction_label if categorical else merged.prediction_value
                if prediction.count - prediction.missing <= 0:
                    prediction_name, prediction = "", None
            # An under-filled window (fewer events than drift.min_count, so no feature can be
            # tested) gets its counts and verdicts without distribution statistics: with many small
            # models most windows are that small, and scoring them was most of the cost. Its rows
            # come from the profile's templates (a seasonal one's scorer differs by window: scored).
            # The per-event detectors still watch every event.
            if under_filled and profile.season is None:
                templates = self._under_filled(profile, scored_as)
            else:
                # a seasonal profile: the window against what the cycle predicts for its span
                scorer = (self._scorer(profile) if profile.season is None
                          else self.seasonal_scorers.get(profile, key.start, key.end))
                scoring = scorer.count_stats if under_filled else scorer.score_stats
                report = scoring(observed, n_rows=merged.n_events, prediction=prediction)
        window = window_columns(self.run_id, key)
        reference_id = profile.profile_id if profile else ""
        # A profile feature no event of the window carried is a row of missing values (and a
        # not-tested score), so a feature that stops arriving shows instead of vanishing.
        features = dict(merged.features)
        for name in profile.features if profile else ():
            if name not in features:
                features[name] = absent = FeatureStats()
                absent.add_missing(merged.n_events)
        for name in sorted(features):
            stats = features[name]
            fprofile = profile.features.get(name) if profile else None
            if fprofile is not None and templates is not None:
                rows["feature_windows"].append(templates.window_row(window, name, stats))
                continue
            score = report[name].score if report is not None and fprofile is not None else None
            rows["feature_windows"].append(
                feature_window_row(window, name, feature_kind(stats, fprofile), stats, score, reference_id)
            )
        extra: list[tuple[str, str, FeatureStats]] = [
            (PREDICTION_FEATURE, "prediction", merged.prediction_label),
            (PREDICTION_VALUE_FEATURE, "prediction", merged.prediction_value),
            (LATENCY_FEATURE, "latency", merged.latency),
        ]
        prediction_score = None
        if templates is not None and prediction is not None:
            prediction_score = templates.prediction
        elif report is not None and report.prediction:
            prediction_score = report.prediction.score
        for name, kind, extra_stats in extra:
            if extra_stats.count - extra_stats.missing > 0:
                score = prediction_score if name == prediction_name else None
                rows["feature_windows"].append(
                    feature_window_row(window, name, kind, extra_stats, score, reference_id)
                )
        drifted, drifted_features = False, []
        if templates is not None:  # not tested, so nothing drifted
            scored = templates.drift_rows(window, observed)
            rows["drift_scores"].extend(scored)
            if prediction is not None:
                rows["drift_scores"].append(templates.prediction_row(window, prediction))
        elif report is not None:
            scored = [drift_score_row(
                window, result.feature, result.score, result.drifted, result.drifted_by, result.p_adj,
                reference_id, self.config_hash,
            ) for result in (report[name] for name in sorted(features) if name in report)]
            rows["drift_scores"].extend(scored)
            if prediction_score is not None:
                rows["drift_scores"].append(drift_score_row(
                    window, prediction_name, prediction_score, False, [], prediction_score.pvalue,
                    reference_id, self.config_hash,
                ))
            drifted, drifted_features = report.drifted, report.drifted_features
        else:
            return None
        rows["model_drift"].append(model_drift_row(
            window, merged.n_events, len(scored), drifted, drifted_features, reference_id,
            self.config_hash, score_status="under_filled" if under_filled else "scored",
        ))
        if key.segment != "" or key.size != self.policy_size_ms:
            return None
        model_id, version = key.model_id, key.model_version
        self.last_drifted[(model_id, version)] = len(drifted_features)
        alerts = self._take_alerts(model_id, version, key.end)
        evidence: dict[str, Any] = {
            "window_size_s": key.size_s,
            "drifted_features": {n: _score_evidence(report[n].score) for n in drifted_features}
            if report is not None else {},
            "reference_id": reference_id,
        }
        notes = [EpisodeNote(a["episode_id"], a["feature"], a["event_kind"], a["event_time"],
                             a["magnitude"], a["unit"]) for a in alerts if a["source"] == "features"]
        if notes:
            evidence["episode_events"] = [n.evidence() for n in notes]
        if multivariate is not None:
            evidence["multivariate"] = multivariate
        return self.policy.on_drift_window(model_id, version, key.start, key.end, drifted, evidence, notes)

    def _multivariate_rows(self, key: WindowKey, parts: list[dict[str, Any]],
                           rows: Rows) -> tuple[dict[str, Any] | None, RetrainTrigger | None]:
        """An overall window's multivariate_drift, outlier_rate and estimated_performance rows from
        the shards' partials, their gist for a retrain trigger's evidence and, with
        ``triggers.use_estimated_performance``, the trigger the estimated accuracy fired. The
        domain classifier runs on the retrain policy's window size only (a fit per window)."""
        # the newest profile the shards used in this window (a new one may apply mid-window)
        used = {str(p["reference_id"]) for p in parts}
        known = [p for p in self.profiles.by_model.get((key.model_id, key.model_version), [])
                 if p.profile_id in used]
        profile = max(known, key=lambda p: (p.effective_from_ms, p.profile_id), default=None)
        section = profile.multivariate if profile is not None else None
        if profile is None or section is None:
            self.totals["multivariate_without_profile"] += 1
            return None, None
        merged = merge_windows(parts, k=int(section["sample"]["shape"][0]), reference_id=profile.profile_id)
        if not merged.sums["n"]:
            return None, None
        window = window_columns(self.run_id, key)
        domain = None
        status = self._domain_status(key, merged.sample.shape[0])
        if status == "scored":
            classifier = self._domain_classifier(profile.profile_id, section)
            if classifier is None:
                status = "no_scikit_learn"
            else:
                names = classifier.features
                domain = classifier.score({n: merged.sample[:, j] for j, n in enumerate(names)},
                                          ordinal=key.start)
        reference_error = section["reconstruction"].get("reference_mean_error")
        rows["multivariate_drift"].append(multivariate_drift_row(
            window, merged.sums["n"], merged.mean_error, reference_error, merged.share_above_p99, domain,
            status, profile.profile_id, self.config_hash))
        quantile = float(section["outliers"]["quantile"])
        # a seasonal section's threshold is met by values standardised with fitted curves: its
        # rate is known only as well as those curves allow (outlier_reference_size)
        outliers = outlier_window(merged.sums["n"], merged.sums["outliers"], 1.0 - quantile,
                                  reference_size=outlier_reference_size(profile, key.size))
        rows["outlier_rate"].append(outlier_rate_row(window, outliers, profile.profile_id, self.config_hash))
        estimate = merged.estimate()
        if estimate is not None:
            rows["estimated_performance"].append(
                estimated_performance_row(window, estimate, profile.profile_id, self.config_hash))
        evidence: dict[str, Any] = {
            "share_above_p99": finite(merged.share_above_p99),
            "outlier_rate": finite(outliers.share), "outliers_significant": outliers.significant,
        }
        if domain is not None:
            evidence.update(domain_auc=finite(domain.auc), domain_threshold=finite(domain.threshold),
                            domain_drifted=domain.drifted, top_features=[f for f, _ in domain.top_features])
        trigger = None
        if estimate is not None:
            evidence["estimated_accuracy"] = finite(estimate.accuracy)
            if self.use_estimated_performance and key.size == self.policy_size_ms:
                trigger = self._estimated_trigger(key, profile, estimate.accuracy, evidence)
        return evidence, trigger

    def _domain_status(self, key: WindowKey, n_sample: int) -> str:
        """'scored' if the classifier runs on this window, else why not (``domain_status``): it
        fits on one window size (``multivariate.domain_window_s``, default the policy's), on every
        ``domain_every``-th window of its grid (counted from the epoch, so a replay picks the
        same windows), given at least ``MIN_DOMAIN_ROWS`` sampled rows."""
        if key.size != self.domain_size_ms:
            return "other_window_size"
        if (key.start // key.size) % self.domain_settings.domain_every:
            return "domain_every"
        if n_sample < MIN_DOMAIN_ROWS:
            return "too_few_rows"
        return "scored"

    def _estimated_trigger(self, key: WindowKey, profile: ReferenceProfile, accuracy: float,
                           evidence: dict[str, Any]) -> RetrainTrigger | None:
        """Feed the window's estimated accuracy to the retrain policy against the profile's
        baseline accuracy (none: nothing to compare with, counted)."""
        baseline = profile.baseline.get("accuracy")
        if baseline is None:
            self.totals["estimated_performance_without_baseline"] += 1
            return None
        return self.policy.on_estimated_performance(
            key.model_id, key.model_version, key.start, key.end, accuracy, float(baseline),
            {**evidence, "window_size_s": key.size_s, "reference_id": profile.profile_id})

    def _domain_classifier(self, profile_id: str, section: dict[str, Any]) -> DomainClassifierDrift | None:
        """The profile's classifier (calibrated once per process: seeded, so identical after a
        restore); None without scikit-learn (the multivariate extra), counted."""
        if profile_id not in self.domain_classifiers:
            sample = unpack_array(section["sample"])
            reference = {n: sample[:, j] for j, n in enumerate(section["features"])}
            try:
                classifier: DomainClassifierDrift | None = DomainClassifierDrift(
                    reference, features=list(section["features"]), categorical=[],
                    folds=self.domain_settings.domain_folds, max_iter=self.domain_settings.domain_max_iter,
                    seed=int(section.get("seed", 0)), rank_quiet=False)
            except ModuleNotFoundError:
                self.totals["domain_classifier_unavailable"] += 1
                classifier = None
            self.domain_classifiers[profile_id] = classifier
        return self.domain_classifiers[profile_id]


def _held_json(held: bytes | dict[str, Any]) -> bytes:
    """A restored partial as JSON: a checkpoint from before the partials were held so holds dicts
    (one that does not encode gives its repr, which then fails the check and is dead-lettered)."""
    if not isinstance(held, dict):
        return held
    try:
        return orjson.dumps(held)
    except TypeError:
        return repr(held).encode()


def _multivariate_parts(parts: Mapping[int, bytes]) -> list[Any]:
    """The multivariate parts of a window's partials (by shard), decoded from those that have one."""
    decoded = (orjson.loads(parts[s]) for s in sorted(parts) if b'"multivariate"' in parts[s])
    return [d["multivariate"] for d in decoded if "multivariate" in d]


def check_partial(partial: Mapping[str, Any]) -> WindowAccumulator:
    """A shard's window partial parsed; ValueError, KeyError or TypeError unless it can be merged."""
    parsed = WindowAccumulator.from_partial(partial)
    if type(parsed.n_events) is not int or not 0 <= parsed.n_events < _COUNT_BOUND:
        raise ValueError("malformed window partial: n_events is not a count")
    # A values-form column was checked as it was parsed (counts made ints, none negative, adding up
    # to n_events, so none past it; moments computed here; no sketch yet): only sketches' columns are
    # checked again (~35 % of parsing a values-form partial, which a quiet model sends per shard).
    if partial.get("form") != VALUES_FORM:
        for name, stats in (*parsed.features.items(), ("prediction_label", parsed.prediction_label),
                            ("prediction_value", parsed.prediction_value), ("latency", parsed.latency)):
            _check_stats(name, stats)
    if "multivariate" in partial:
        try:
            merged = merge_windows([partial["multivariate"]], k=0)
        except OverflowError as err:  # a sample hash past int64
            raise ValueError(f"malformed window partial: multivariate: {err}") from None
        counts = [merged.sums[name] for name in _MULTIVARIATE_COUNTS]
        counts += [c for segment in merged.auc_segments.values() for c in segment]
        if any(not 0 <= c < _COUNT_BOUND for c in counts) or any(  # a sum as a shard's int64 makes it
                not -(2**63) <= value < 2**63 for value in merged.sums.values()):
            raise ValueError("malformed window partial: multivariate: a count or sum is out of range")
    return parsed


_MULTIVARIATE_COUNTS = ("n", "above_p99", "outliers", "n_scored", "tp", "fp", "fn")  # of SUM_FIELDS
_COUNT_BOUND = 2**62  # a count several shards' partials add up to stays in int64
_NUMBER_TYPES = (int, float)


def _check_stats(name: str, stats: FeatureStats) -> None:
    """ValueError unless a parsed column holds what a shard's statistics can: counts that are
    non-negative ints an int64 sum holds, numbers or None as moments, and a window's sketch
    (:meth:`QuantileSketch.is_windows`). The parse takes what it is given; a count past int64, or a
    sketch of another accuracy, raised where the window closes, outside the record's dead letter
    (and again at every restart)."""
    counts = [stats.count, stats.missing, stats.invalid, stats.n, *stats.categories.values()]
    try:  # a float among them makes the sum a float; text or None raise
        fits = type(sum(counts)) is int and min(counts) >= 0 and max(counts) < _COUNT_BOUND
    except TypeError:
        fits = False
    if not fits:
        raise ValueError(f"malformed window partial: {name!r}: a count is not a non-negative int64")
    for moment in (stats.mean, stats.m2, stats.min, stats.max):
        if moment is not None and type(moment) not in _NUMBER_TYPES:
            raise ValueError(f"malformed window partial: {name!r}: a moment is not a number")
    if isinstance(stats.sketch, QuantileSketch) and not stats.sketch.is_windows():
        raise ValueError(f"malformed window partial: {name!r}: its sketch is not a window's")


def _score_evidence(score: FeatureScore) -> dict[str, float | None]:
    return {
        "psi": finite(score.psi),
        "ks_stat": finite(score.ks_stat),
        "js_distance": finite(score.js_distance),
        "chi2_stat": finite(score.chi2_stat),
    }
