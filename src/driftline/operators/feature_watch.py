"""Sequential detectors wired to reference profiles: one bank per (model, version) and stream.

:class:`FeatureWatch` keeps, for every model a stream (a stage-1 shard) sees, one sequential
detector per profiled feature (:mod:`driftline.operators.sequential`) and turns their alarms into
:class:`FeatureAlert` records. :class:`ErrorWatch` does the same for a classifier's error stream.

False alarms are budgeted per model: ``false_alarms_per_million`` over *all* of the model's
features, so each feature's detector gets the run length ``feature_arl(10**6 / rate, F)``
(Bonferroni over features; over time the run length between false alarms is what a CUSUM
controls). Shards see disjoint parts of a model's traffic, so splitting the stream over shards
does not change the budget: the alarm rate is per event, wherever the event is watched.

Alert rows are rate-limited per feature: a detector restarts after each alarm, so a drift that
persists would alarm every few dozen events; only the first alarm of a feature in each event-time
``alert_interval_ms`` bucket (``t - t % interval``) becomes an alert, the rest are counted in
``suppressed``. A persisting drift thus gives one alert per feature per interval.

Which profile applies: the newest *training* profile whose ``effective_from_ms`` is at or before
the event time. A model's bank only ever moves forward to a newer profile (an event slightly out
of order does not switch back); switching starts fresh detectors. Events before any profile is
effective are not watched. All of this is a function of the order events are observed in, never
of how they are batched, so a restored shard reproduces the same alerts.

>>> from driftline.operators.profile import build_profile
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> profile = build_profile("m", "1", {"x": rng.normal(size=5000)}, label_column=None,
...                         prediction_column=None, bins=10, top_k=5, created_at_ms=0)
>>> watch = FeatureWatch(false_alarms_per_million=1.0, alert_interval_ms=60_000)
>>> watch.add_profile(profile)
True
>>> quiet = [{"x": float(v)} for v in rng.normal(size=2000)]
>>> watch.observe("m", "1", list(range(2000)), [f"p{i}" for i in range(2000)], quiet)
[]
>>> shifted = [{"x": float(v)} for v in rng.normal(1.0, 1.0, size=2000)]
>>> alerts = watch.observe("m", "1", list(range(2000, 4000)), [f"q{i}" for i in range(2000)], shifted)
>>> [(a.feature, a.event_time < 2200) for a in alerts], watch.suppressed > 0
([('x', True)], True)
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from driftline.operators.profile import ReferenceProfile
from driftline.operators.sequential import (
    Alarm,
    BinaryDetector,
    CategoricalDetector,
    NumericDetector,
    detector_for_profile,
    feature_arl,
)

ERROR_FEATURE = "__error__"


@dataclass(frozen=True)
class FeatureAlert:
    """A sequential detector's alarm on one event of one model."""

    model_id: str
    model_version: str
    feature: str
    kind: str  # numeric | categorical | binary
    component: str  # which CUSUM of the bank fired
    statistic: float
    threshold: float
    arl: float  # configured mean run length of this detector between false alarms
    event_time: int
    prediction_id: str
    observation_index: int  # 0-based among the values this detector has counted
    profile_id: str

    def alert_id(self, stream: str) -> str:
        """Deterministic id: the same alarm re-derived after a restart has the same id."""
        key = "\x1f".join(
            (stream, self.model_id, self.model_version, self.feature, self.profile_id,
             str(self.observation_index))
        )
        return hashlib.sha256(key.encode()).hexdigest()[:32]


Detector = NumericDetector | CategoricalDetector


@dataclass
class _Bank:
    profile_index: int
    profile_id: str
    arl: float
    detectors: dict[str, Detector]


@dataclass
class _ModelWatch:
    profiles: list[ReferenceProfile] = field(default_factory=list)
    bank: _Bank | None = None
    last_alert: dict[str, int] = field(default_factory=dict)  # feature -> interval of its last alert


class FeatureWatch:
    """Per-model banks of sequential feature detectors for one stream (see module docstring)."""

    def __init__(self, false_alarms_per_million: float, alert_interval_ms: int) -> None:
        if alert_interval_ms <= 0:
            raise ValueError("alert_interval_ms must be positive")
        self.model_arl = 1_000_000.0 / false_alarms_per_million
        self.alert_interval_ms = alert_interval_ms
        self.suppressed = 0
        self._models: dict[tuple[str, str], _ModelWatch] = {}

    def add_profile(self, profile: ReferenceProfile) -> bool:
        """Register a training profile; False for one already known or not from training."""
        if profile.source != "training" or not profile.features:
            return False
        watch = self._models.setdefault((profile.model_id, profile.model_version), _ModelWatch())
        if any(p.profile_id == profile.profile_id for p in watch.profiles):
            return False
        # Profiles are only appended in (effective_from, id) order after the active one, so the
        # active bank's index stays valid; an older profile arriving late never becomes active.
        active = watch.bank.profile_index if watch.bank is not None else -1
        key = (profile.effective_from_ms, profile.profile_id)
        position = bisect.bisect([(p.effective_from_ms, p.profile_id) for p in watch.profiles], key)
        if position <= active:
            return False
        watch.profiles.insert(position, profile)
        return True

    @property
    def models(self) -> list[tuple[str, str]]:
        return sorted(k for k, w in self._models.items() if w.profiles)

    def detector_count(self) -> int:
        return sum(len(w.bank.detectors) for w in self._models.values() if w.bank is not None)

    def observe(
        self,
        model_id: str,
        model_version: str,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
    ) -> list[FeatureAlert]:
        """Feed one model's events in stream order; returns the alarms they raised, in order."""
        watch = self._models.get((model_id, model_version))
        if watch is None or not watch.profiles or not times:
            return []
        effective = np.asarray([p.effective_from_ms for p in watch.profiles], dtype=np.int64)
        wanted = np.searchsorted(effective, np.asarray(times, dtype=np.int64), side="right") - 1
        floor = watch.bank.profile_index if watch.bank is not None else -1
        wanted = np.maximum.accumulate(np.maximum(wanted, floor))  # never move back
        alerts: list[FeatureAlert] = []
        for index in np.unique(wanted):
            if index < 0:
                continue
            rows = np.flatnonzero(wanted == index)
            if watch.bank is None or watch.bank.profile_index != index:
                watch.bank = self._bank(watch.profiles[int(index)], int(index))
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            alerts.extend(
                self._feed(model_id, model_version, watch.bank, times[lo:hi], prediction_ids[lo:hi],
                           features[lo:hi])
            )
        alerts.sort(key=lambda a: (a.event_time, a.feature, a.observation_index))
        return self._rate_limited(watch, alerts)

    def _rate_limited(self, watch: _ModelWatch, alerts: list[FeatureAlert]) -> list[FeatureAlert]:
        kept = []
        for alert in alerts:
            interval = alert.event_time - alert.event_time % self.alert_interval_ms
            if watch.last_alert.get(alert.feature) == interval:
                self.suppressed += 1
                continue
            watch.last_alert[alert.feature] = interval
            kept.append(alert)
        return kept

    def _bank(self, profile: ReferenceProfile, index: int) -> _Bank:
        arl = feature_arl(self.model_arl, len(profile.features))
        detectors = {
            name: detector_for_profile(fprofile, arl=arl)
            for name, fprofile in sorted(profile.features.items())
        }
        return _Bank(index, profile.profile_id, arl, detectors)

    def _feed(
        self,
        model_id: str,
        model_version: str,
        bank: _Bank,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
    ) -> list[FeatureAlert]:
        alerts = []
        for name, detector in bank.detectors.items():
            raw = [f.get(name) for f in features]
            values: Any
            if detector.kind == "numeric":
                numbers = _floats(raw)
                positions = np.flatnonzero(np.isfinite(numbers))
                values = numbers[positions]
            else:
                # Missing values and values no category can be (numbers with a fraction, objects)
                # are not watched: windows count them as missing/invalid.
                kept = [(i, v) for i, v in enumerate(raw) if isinstance(v, str | int | bool)]
                positions = np.asarray([i for i, _ in kept], dtype=np.int64)
                values = [v for _, v in kept]  # the detector maps them with category_key
            if not len(positions):
                continue
            before = detector.n
            for alarm in detector.update_many(values):
                at = int(positions[alarm.index - before])
                alerts.append(_alert(model_id, model_version, name, detector.kind, alarm, bank.arl,
                                     int(times[at]), prediction_ids[at], bank.profile_id))
        return alerts


def _alert(model_id: str, model_version: str, feature: str, kind: str, alarm: Alarm, arl: float,
           event_time: int, prediction_id: str, profile_id: str) -> FeatureAlert:
    return FeatureAlert(model_id, model_version, feature, kind, alarm.component, alarm.statistic,
                        alarm.threshold, arl, event_time, prediction_id, alarm.index, profile_id)


def _floats(raw: list[Any]) -> npt.NDArray[np.float64]:
    """Numbers as float64; None and anything non-numeric (an invalid value) become NaN."""
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.full(len(raw), np.nan)
        for i, v in enumerate(raw):
            if isinstance(v, int | float) and not isinstance(v, str):
                out[i] = float(v)
        return out


class ErrorWatch:
    """Sequential detector on one classifier's error stream (1 = wrong), fed in label-time order.

    The reference error rate is ``1 - baseline accuracy`` of the training profile when there is
    one; otherwise the first ``warmup`` outcomes are the reference sample (they are watched from
    then on, never scored against themselves).

    A baseline is an estimate from ``baseline_n`` training outcomes: the detector treats it as such
    (the thresholds hold for every rate inside its confidence region, see
    :mod:`driftline.operators.sequential`); without ``baseline_n`` the rate is taken as exact.
    Alarms are rate-limited like :class:`FeatureWatch`'s, by label time.

    >>> watch = ErrorWatch(arl=1_000_000.0, warmup=1000, baseline_error=0.1, baseline_n=20_000,
    ...                    alert_interval_ms=1_000)
    >>> rng = np.random.default_rng(3)
    >>> watch.observe(rng.random(5000) < 0.1, range(5000))
    []
    >>> alarms = watch.observe(rng.random(5000) < 0.3, range(5000, 10_000))
    >>> len(alarms) >= 1 and alarms[0][0] < 500
    True
    """

    def __init__(self, arl: float, warmup: int, baseline_error: float | None, *,
                 baseline_n: int | None = None, alert_interval_ms: int) -> None:
        self.arl = arl
        self.warmup = warmup
        self.alert_interval_ms = alert_interval_ms
        self.detector: BinaryDetector | None = None
        self.reference_source = ""
        self.suppressed = 0
        self._last_alert: int | None = None
        self._sample: list[int] = []
        if baseline_error is not None:
            rate = min(max(baseline_error, 1e-4), 0.9)
            self.detector = BinaryDetector.from_rate(rate, arl=arl, n_reference=baseline_n)
            self.reference_source = "baseline"

    def observe(self, errors: npt.ArrayLike, times: Sequence[int]) -> list[tuple[int, Alarm]]:
        """Feed errors (0/1) with their times, in order; returns (position in this call, alarm)."""
        values = np.asarray(errors, dtype=np.int64)
        start = 0
        if self.detector is None:
            start = min(self.warmup - len(self._sample), len(values))
            self._sample.extend(values[:start].tolist())
            if len(self._sample) < self.warmup:
                return []
            self.detector = BinaryDetector.from_reference(np.asarray(self._sample), arl=self.arl)
            self.reference_source = "warmup"
            self._sample = []
        rest = values[start:]
        if not len(rest):
            return []
        before = self.detector.n
        kept = []
        for alarm in self.detector.update_many(rest):
            position = start + alarm.index - before
            t = int(times[position])
            interval = t - t % self.alert_interval_ms
            if interval == self._last_alert:
                self.suppressed += 1
                continue
            self._last_alert = interval
            kept.append((position, alarm))
        return kept
