"""Seasonal references: a training profile that learned a cycle (hour of day by default).

A stream that repeats the daily cycle it had in training is not drifting, yet an hour of it is
not the whole day: scored against the pooled training distribution every hour window drifts and
the per-event detectors see the cycle as a shift that never ends. A profile with a season
compares like with like. Per numeric feature it keeps, for each of ``slots`` slots of the period
(counted from 00:00 UTC of the event time), the slot's mean and standard deviation; between slot
centres both are interpolated linearly (so a smooth cycle leaves no saw-tooth at slot edges).
Consumers then see:

* the per-event detectors and the multivariate monitor: the value standardised by its time's
  level and scale, ``z = (x - level(t)) / scale(t)``, against the *residual* profile (the
  training values standardised the same way); a level shift reads in residual sd, a tripled
  variance as ``scale*3``;
* window scoring: a window against the reference the cycle predicts for its span (the residual
  distribution put back at the level and scale of each moment of the window, weighted by the
  training's traffic per slot, see :func:`window_features`).

Categorical features, and numeric ones whose level and scale cannot be estimated in every slot,
are left as they are (the pooled reference). All of it is a pure function of the event times and
values, so replay and the worker compute the same.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = np.arange(0, 2 * DAY_S, 60) * 1000                      # two days, one value a minute
>>> x = 10 + 3 * np.sin(2 * np.pi * t / 1000 / DAY_S) + rng.normal(size=t.size)
>>> section = fit_season({"load": x}, t, DAILY, bins=10)
>>> residual = standardise(section, "load", x, t)      # the cycle gone: the noise, at the mean level
>>> strength = section.features["load"].strength
>>> round(strength, 2), round(float(residual.mean()), 1), round(float(residual.std()), 1)
(0.82, 10.0, 1.0)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from driftline.operators.profile import (
    FeatureProfile,
    ReferenceProfile,
    SeasonalFeature,
    SeasonSection,
    feature_profile_of,
    numeric_profile,
)
from driftline.operators.window_stats import FeatureStats

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")

DAY_S = 86_400
WEEK_S = 7 * DAY_S
MIN_PER_SLOT = 10
"""A slot needs this many training values of a feature for its level and scale to be estimated."""
CYCLE_P = 1e-6
"""A feature's cycle is learned only when its slots' means differ at this significance (one-way
ANOVA): a stationary feature stays pooled."""
STRONG_CYCLE = 0.2
"""Share of a feature's variance its cycle explains from which profile build calls the cycle
strong (and says so when no season was asked for)."""
MIXTURE_VALUES = 20_000
"""At most this many values stand for a window's seasonal reference (fewer when training had fewer)."""


class Season(BaseModel):
    """A cycle: ``period_s`` seconds cut into ``slots`` equal slots, counted from the Unix epoch in
    ``timezone``'s local time (so a daily period starts at local midnight; UTC by default). Traffic
    that follows local time keeps its hours across a daylight-saving change only on a local clock:
    in UTC the change reads as a 1 h phase shift, twice a year."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_s: int = Field(gt=0)
    slots: int = Field(gt=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name != "UTC":
            _zone(name)
        return name

    @property
    def slot_ms(self) -> float:
        return self.period_s * 1000 / self.slots

    def local_ms(self, times_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Each time (ms since the epoch, UTC) on the season's local clock: plus its UTC offset."""
        t = np.asarray(times_ms, dtype=np.int64)
        return t if self.timezone == "UTC" else t + utc_offsets_ms(self.timezone, t)

    def positions(self, times_ms: npt.ArrayLike, *, local: bool = False) -> FloatArray:
        """Each time's place in the period, in slots: ``[0, slots)``; ``local``: the times are on
        the local clock already (:meth:`local_ms`)."""
        t = np.asarray(times_ms, dtype=np.int64) if local else self.local_ms(times_ms)
        return (t % (self.period_s * 1000)) / self.slot_ms

    def slot_of(self, times_ms: npt.ArrayLike, *, local: bool = False) -> npt.NDArray[np.int64]:
        return np.minimum(self.positions(times_ms, local=local).astype(np.int64), self.slots - 1)


OFFSET_STEP_MS = 900_000
"""UTC offsets are looked up once per quarter hour of UTC time: every zone's changes since 1970
fall on a quarter hour (the IANA data's older odd-second offsets ended before)."""


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None


@lru_cache(maxsize=1 << 16)
def _offset_ms(name: str, quarter: int) -> int:
    moment = datetime.fromtimestamp(quarter * (OFFSET_STEP_MS // 1000), tz=UTC).astimezone(_zone(name))
    offset = moment.utcoffset()
    return 0 if offset is None else int(offset.total_seconds() * 1000)


def utc_offsets_ms(timezone: str, times_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``timezone``'s UTC offset at each time, in ms (a batch of events spans few quarter hours:
    one lookup each, cached)."""
    quarters, where = np.unique(times_ms // OFFSET_STEP_MS, return_inverse=True)
    offsets = np.fromiter((_offset_ms(timezone, int(q)) for q in quarters.tolist()), dtype=np.int64,
                          count=quarters.size)
    return offsets[where.reshape(times_ms.shape)]


DAILY = Season(period_s=DAY_S, slots=24)
WEEKLY = Season(period_s=WEEK_S, slots=7 * 24)
NAMED = {"daily": DAILY, "weekly": WEEKLY}


def season_of(section: SeasonSection) -> Season:
    return Season(period_s=section.period_s, slots=section.slots, timezone=section.timezone)


def level_scale(section: SeasonSection, feature: SeasonalFeature,
                times_ms: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """A seasonal feature's interpolated level and scale at each time."""
    season = season_of(section)
    local = season.local_ms(times_ms)  # once for both curves
    return (_interpolated(season, np.asarray(feature.mean), local, local=True),
            _interpolated(season, np.asarray(feature.std), local, local=True))


def standardise(section: SeasonSection, name: str, values: npt.ArrayLike,
                times_ms: npt.ArrayLike) -> FloatArray:
    """``values`` of feature ``name`` as residuals at their times (unchanged if not seasonal):
    ``(x - level(t)) / scale(t)``, placed at the slots' average level and scale."""
    x = np.asarray(values, dtype=np.float64)
    feature = section.features.get(name)
    if feature is None or not x.size:
        return x
    level, scale = level_scale(section, feature, times_ms)
    center, spread = _typical(feature)
    return center + spread * (x - level) / scale


def _typical(feature: SeasonalFeature) -> tuple[float, float]:
    """The level and scale a residual is placed at: the slots' average. Residuals are values of the
    feature's own size rather than z-scores around 0, whose relative-error sketch would need ~8x
    the buckets (a profile's size); the detectors read ranks, so the placing changes nothing."""
    return float(np.mean(feature.mean)), float(np.mean(feature.std))


def standardise_columns(section: SeasonSection, columns: Mapping[str, Any],
                        times_ms: npt.ArrayLike) -> dict[str, Any]:
    """A training table with its seasonal numeric columns as residuals (others as they are)."""
    out: dict[str, Any] = dict(columns)
    for name in section.features:
        values = _numbers(columns[name]) if name in columns else None
        if values is not None:
            out[name] = standardise(section, name, values, times_ms)
    return out


def seasonal_multivariate_section(section: SeasonSection, columns: Mapping[str, Any], times_ms: npt.ArrayLike,
                                  **options: Any) -> dict[str, Any] | None:
    """:func:`~driftline.operators.model_watch.multivariate_section` (``options`` as there) of a
    training table whose seasonal columns are standardised first, as the monitor standardises each
    event; the section records the season (``season_id``), which
    :func:`~driftline.operators.profile.build_profile` checks."""
    # imported here: model_watch standardises with this module (a module-level import is a cycle)
    from driftline.operators.model_watch import multivariate_section

    made = multivariate_section(standardise_columns(section, columns, times_ms), **options)
    if made is None or not set(section.features) & set(made["features"]):
        return made  # no seasonal feature in the section: it is the pooled one, as before
    return {**made, "season_id": section.season_id()}


def parse_season(text: str, slots: int | None = None, timezone: str = "UTC") -> Season:
    """``daily``, ``weekly`` or a period in seconds; ``slots`` overrides the default (hours);
    ``timezone``: the IANA zone whose local time the slots follow."""
    named = NAMED.get(text.strip().lower())
    if named is not None:
        return Season(period_s=named.period_s, slots=named.slots if slots is None else slots,
                      timezone=timezone)
    try:
        period = int(text)
    except ValueError:
        raise ValueError(f"season {text!r}: expected daily, weekly or a period in seconds") from None
    if period <= 0:
        raise ValueError(f"season {text!r}: the period must be positive")
    return Season(period_s=period, slots=slots if slots is not None else max(1, min(24, period // 3600)),
                  timezone=timezone)


def cycle_strengths(columns: Mapping[str, Any], times_ms: npt.ArrayLike, season: Season) -> dict[str, float]:
    """Per numeric feature, the share of its variance the season's level cycle explains (0 for a
    feature some slot has too few values of, or that does not vary)."""
    t = np.asarray(times_ms, dtype=np.int64)
    return {name: 0.0 if fitted is None else fitted[1]
            for name, _, fitted in _fitted_levels(columns, t, season)}


LevelFit = tuple[FloatArray, float, npt.NDArray[np.int64]]
"""Per-slot means, the share of variance they explain, the counts per slot (:func:`_fit_level`)."""


def _fitted_levels(columns: Mapping[str, Any], t: npt.NDArray[np.int64], season: Season
                   ) -> Iterator[tuple[str, FloatArray, LevelFit | None]]:
    """Each numeric column of one value per time, its values and its level fit (:func:`_fit_level`)."""
    for name, column in columns.items():
        x = _numbers(column)
        if x is not None and x.size == t.size:
            yield name, x, _fit_level(x, t, season)


def fit_season(columns: Mapping[str, Any], times_ms: npt.ArrayLike, season: Season, *,
               bins: int) -> SeasonSection:
    """The season of a training table: every numeric column (one value per time) whose level and
    scale every slot can estimate follows the cycle."""
    t = np.asarray(times_ms, dtype=np.int64)
    features = {}
    for name, x, fitted in _fitted_levels(columns, t, season):
        if fitted is None or not _cycle_is_real(x, t, season):
            continue
        mean, strength, counts = fitted
        keep = np.isfinite(x)
        around = x[keep] - _interpolated(season, mean, t[keep])
        slot = season.slot_of(t[keep])
        squares = np.bincount(slot, weights=around**2, minlength=season.slots)
        std = np.sqrt(squares / np.maximum(counts - 1, 1))
        if not (std > 1e-9 * np.std(x[keep])).all():
            continue  # a value fixed within a slot (e.g. the time of day itself): nothing to standardise
        std = np.exp(_smoothed(np.log(std), season))
        residual = float(np.mean(mean)) + float(np.mean(std)) * around / _interpolated(season, std, t[keep])
        features[name] = SeasonalFeature(mean=mean.tolist(), std=std.tolist(), n=counts.tolist(),
                                         strength=round(strength, 6),
                                         residual=feature_profile_of(residual.tolist(), bins))
    return SeasonSection(period_s=season.period_s, slots=season.slots, features=features,
                         timezone=season.timezone)


def window_features(section: SeasonSection, start_ms: int, end_ms: int, bins_of: Mapping[str, int],
                    residuals: dict[str, FloatArray] | None = None, *,
                    local: bool = False) -> dict[str, FeatureProfile]:
    """The reference the cycle predicts for a window ``[start_ms, end_ms)``: per seasonal feature a
    FeatureProfile of the residual distribution placed at the level and scale of moments spread
    over the window (four a slot, at least four), each weighted by the training's values in its
    slot (traffic that follows the cycle weighs as it did in training). ``bins_of``: the bins of
    each feature's pooled profile, so the window is binned as finely as without a season.
    ``residuals``: a cache of :func:`residual_quantiles` by feature (filled as needed). ``local``:
    ``start_ms`` is on the season's local clock already (:meth:`Season.local_ms`); the window's
    moments are spread over its local span (one of a daylight-saving change is an hour off at most)."""
    season = season_of(section)
    size = max(1, end_ms - start_ms)
    points = 4 * max(1, math.ceil(size / season.slot_ms))
    begin = start_ms if local else int(season.local_ms(np.array([start_ms]))[0])
    grid = (begin + (np.arange(points) + 0.5) * size / points).astype(np.int64)  # local clock
    cache = residuals if residuals is not None else {}
    out = {}
    for name, feature in section.features.items():
        if name not in bins_of:
            continue
        quantiles = cache.get(name)
        if quantiles is None:
            quantiles = cache[name] = residual_quantiles(feature)
        total = quantiles.size
        center, spread = _typical(feature)
        shares = _apportion(total, np.asarray(feature.n, dtype=np.float64)[season.slot_of(grid, local=True)])
        level = _interpolated(season, np.asarray(feature.mean), grid, local=True)
        scale = _interpolated(season, np.asarray(feature.std), grid, local=True)
        values = []
        for count, mu, sd in zip(shares.tolist(), level.tolist(), scale.tolist(), strict=True):
            if count:  # every residual quantile of a finer grid, at this moment's level and scale
                picked = ((np.arange(count) + 0.5) * total / count).astype(np.int64)
                values.append(mu + sd * (quantiles[picked] - center) / spread)
        stats = FeatureStats()
        stats.add_array(np.concatenate(values))
        profile = numeric_profile(stats, bins_of[name])
        if profile is not None:  # n: what the KS p-value counts it as (the sketch holds more)
            out[name] = profile.model_copy(update={"n": window_reference_size(section, feature, size)})
    return out


def window_reference_size(section: SeasonSection, feature: SeasonalFeature, span_ms: float) -> int:
    """How many values a window's seasonal reference is worth to the window tests: the level it is
    placed at is the fitted curve (``2 h + 1`` parameters), whose error is common to every value of
    the window. Averaged over a span of ``f`` periods the error of harmonic ``k`` keeps
    ``sinc(k f)`` of its size, so the reference of ``n`` training values is worth
    ``n / (1 + 2 sum_k sinc(k f)^2)``: :func:`reference_size` (``n / (2 h + 1)``) for a window much
    shorter than the period, ``n`` for a whole period (only the mean level is left). Counted as
    every training value, a busy stream's hour windows met that error as a shift (5 of 23 drifted
    in bench_seasonal_sparse)."""
    return curve_worth(section, feature.residual.n, span_ms)


def curve_worth(section: SeasonSection, n: int, span_ms: float) -> int:
    """What ``n`` training values standardised by the section's fitted curves are worth to a test
    of a span of ``span_ms`` (:func:`window_reference_size`; at least 2)."""
    season = season_of(section)
    periods = max(0.0, span_ms) / (season.period_s * 1000)
    harmonic = np.arange(1, _harmonics(season.slots) + 1, dtype=np.float64)
    kept = 1.0 + 2.0 * float(np.sum(np.sinc(harmonic * periods) ** 2))
    return max(2, int(n / kept))


def multivariate_reference_size(profile: ReferenceProfile, span_ms: float) -> int | None:
    """What the multivariate section's training rows are worth when the section was fit on
    features standardised by the season (:func:`curve_worth`); None when it was not (then every
    row counts)."""
    section, multivariate = profile.season, profile.multivariate
    if section is None or multivariate is None or not set(section.features) & set(multivariate["features"]):
        return None
    return curve_worth(section, int(multivariate["n"]), span_ms)


def outlier_reference_size(profile: ReferenceProfile, span_ms: float) -> int | None:
    """How many events the outlier rate of a seasonal multivariate section is known as well as from
    (:func:`~driftline.operators.outliers.outlier_window`'s ``reference_size``), None without a
    season over its features. Its threshold is a distance ``R`` far in the tail (``R^2`` the
    chi-square quantile of the rate over the section's features), met by values standardised with
    fitted curves whose scale is off by a relative ``e`` (sd ``1 / sqrt(2 m)``, ``m``
    :func:`multivariate_reference_size`) and level by ``d`` sd (sd ``1 / sqrt(m)``): the tail rate
    moves by a factor of about ``exp(R^2 e + R d)``. The rate is taken as known as from the events
    whose gamma spread has that log sd. Sized by ``m`` alone (a mean's error) the test would
    allow ~10x too much at a 0.1 % rate; sized by every training row, a busy stream's hours met
    the curves' scale error (0.84 for 1.0 at 03:00 in bench_seasonal_sparse) as outliers."""
    worth = multivariate_reference_size(profile, span_ms)
    if worth is None or profile.multivariate is None:
        return None
    # scipy.stats costs ~1 CPU-s to import: a worker that builds no seasonal reference never does
    from scipy.stats import chi2 as chi2_distribution

    rate = 1.0 - float(profile.multivariate["outliers"]["quantile"])
    r2 = float(chi2_distribution.isf(rate, len(profile.multivariate["features"])))
    log_sd = math.sqrt(r2 * r2 / (2 * worth) + r2 / worth)
    shape = 1.0 / math.expm1(log_sd * log_sd)
    return max(1, int(shape / rate))


def residual_quantiles(feature: SeasonalFeature) -> FloatArray:
    """Evenly spaced quantiles of a feature's residual profile (as many as training had values,
    at most :data:`MIXTURE_VALUES`): the residual distribution as a sample."""
    total = min(MIXTURE_VALUES, feature.residual.n)
    return feature.residual.reference_sketch().quantiles((np.arange(total) + 0.5) / total)


REFERENCES_BUDGET_BYTES = 256 * 2**20
"""What the cached window references of a worker may hold in memory (estimated by
:data:`REFERENCE_BYTES_PER_FEATURE`, with the profiles' residual quantiles): ~320 references of
100 seasonal features, or the day of ~25 daily models of 10 (~120 references, ~9.4 MiB, and up
to 1.6 MB of residuals each; bench_seasonal_references holds 40 MiB for 4)."""
REFERENCE_BYTES_PER_FEATURE = 8 * 1024
"""Memory of one seasonal feature in a cached window scorer (measured: 41 kB for 5 features,
207 kB for 25; the JSON of the features is ~15x smaller, no measure of it)."""


class WindowReferences(Generic[T]):
    """What is derived from seasonal window references (e.g. a scorer), made once per (profile,
    phase of the period, window size) and kept, least recently used first out, while they hold at
    most ``budget_bytes``. A window shorter than a slot is placed on a quarter-slot grid (its
    reference barely moves within a quarter slot), so a day of 5-minute windows needs ``4 * slots``
    references, not one a window; with hourly windows beside them ~120 a daily profile. A budget
    in bytes rather than entries: a reference is made in 20-150 ms (5-25 features) and a day cycles
    through all of a profile's, so a cache smaller than the models' day rebuilds every window (256
    entries did from three seasonal models on).

    A profile's residual quantiles (up to :data:`MIXTURE_VALUES` floats a feature, ~160 kB; what
    its references are made from) count in the budget too and go with its last reference: a
    worker that sees model versions come and go keeps the residuals of the profiles it still
    scores with, not of every profile it ever saw (~4 MB a 25-feature profile)."""

    def __init__(self, make: Callable[[ReferenceProfile], T],
                 budget_bytes: int = REFERENCES_BUDGET_BYTES) -> None:
        self.make = make
        self.budget_bytes = budget_bytes
        self.held_bytes = 0  # the references' estimate and the residuals' arrays
        self.made = 0  # references made (a cache miss each)
        self._known: OrderedDict[tuple[str, int, int], tuple[T, int]] = OrderedDict()
        self._residuals: dict[str, dict[str, FloatArray]] = {}  # by profile id, then feature
        self._references_of: dict[str, int] = {}  # references held, by profile id

    def __len__(self) -> int:
        return len(self._known)

    def get(self, profile: ReferenceProfile, start_ms: int, end_ms: int) -> T:
        """``make`` of ``profile`` with its seasonal features replaced by the window's references
        (the same ``profile_id``); ``profile`` needs a season."""
        section = profile.season
        assert section is not None
        season = season_of(section)
        period_ms = season.period_s * 1000
        size = end_ms - start_ms
        phase = int(season.local_ms(np.array([start_ms]))[0]) % period_ms  # the local clock's
        if size < season.slot_ms:
            quarter = season.slot_ms / 4
            phase = int(round(phase / quarter) * quarter) % period_ms
        key = (profile.profile_id, phase, size)
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
            return known[0]
        bins = {name: len(f.edges) + 1 for name, f in profile.features.items() if f.kind == "numeric"}
        residuals = self._residuals.setdefault(profile.profile_id, {})
        residual_bytes = _nbytes(residuals)
        # made of the key alone (phase on the local clock, size): the same whichever window asked first
        features = window_features(section, phase, phase + size, bins, residuals, local=True)
        made = self.make(profile.model_copy(update={"features": {**profile.features, **features}}))
        self.made += 1
        cost = REFERENCE_BYTES_PER_FEATURE * max(1, len(features))
        self._known[key] = (made, cost)
        self._references_of[profile.profile_id] = self._references_of.get(profile.profile_id, 0) + 1
        self.held_bytes += cost + _nbytes(residuals) - residual_bytes
        while self.held_bytes > self.budget_bytes and len(self._known) > 1:
            (evicted, _, _), (_, freed) = self._known.popitem(last=False)
            self.held_bytes -= freed + self._release(evicted)
        return made

    def _release(self, profile_id: str) -> int:
        """One reference of ``profile_id`` gone: with its last, its residuals go; their bytes."""
        left = self._references_of[profile_id] - 1
        if left:
            self._references_of[profile_id] = left
            return 0
        del self._references_of[profile_id]
        return _nbytes(self._residuals.pop(profile_id, {}))


def _nbytes(arrays: Mapping[str, FloatArray]) -> int:
    return sum(a.nbytes for a in arrays.values())


def _fit_level(x: FloatArray, t: npt.NDArray[np.int64], season: Season
               ) -> tuple[FloatArray, float, npt.NDArray[np.int64]] | None:
    """Per-slot means, the share of variance they explain (interpolated), and the counts; None
    when a slot has fewer than MIN_PER_SLOT values or the feature does not vary."""
    keep = np.isfinite(x)
    x, t = x[keep], t[keep]
    slot = season.slot_of(t)
    counts = np.bincount(slot, minlength=season.slots)
    if (counts < MIN_PER_SLOT).any():
        return None
    total = float(np.var(x))
    if not total > 0 or x.min() == x.max():  # a constant's variance may round to 1e-35
        return None
    mean = _smoothed(np.bincount(slot, weights=x, minlength=season.slots) / counts, season)
    around = x - _interpolated(season, mean, t)
    strength = max(0.0, 1.0 - float(np.var(around)) / total)
    return mean, strength, counts


def _harmonics(slots: int) -> int:
    """Harmonics of the period a cycle keeps: ``slots // 8``, at least one (3 of a day's 24 hours,
    21 of a week's 168, so a weekly season keeps its daily shape)."""
    return max(1, slots // 8)


def _smoothed(per_slot: FloatArray, season: Season) -> FloatArray:
    """Per-slot estimates kept to the period's first :func:`_harmonics`. Each slot's own mean or sd
    is estimated from its few values: the events of a busy stream would meet that sampling error,
    hour after hour, as a shift of their own; a smooth cycle loses nothing."""
    spectrum = np.fft.rfft(per_slot)
    spectrum[_harmonics(season.slots) + 1 :] = 0
    return np.fft.irfft(spectrum, n=season.slots)


def reference_size(section: SeasonSection, feature: SeasonalFeature) -> int:
    """How many values a seasonal feature's residual reference is worth to a detector: the level it
    is measured from is a curve of ``2 h + 1`` parameters (``h`` harmonics) fitted to the training's
    values, each known as well as a mean of ``n / (2 h + 1)`` of them. Sized by the whole residual
    sample, a detector of a busy stream would take that curve's error for a shift."""
    return window_reference_size(section, feature, 0)


def _cycle_is_real(x: FloatArray, t: npt.NDArray[np.int64], season: Season) -> bool:
    """Whether the slots' means differ by more than their values' spread explains (one-way
    analysis of variance, p < :data:`CYCLE_P`). A feature without a cycle stays pooled: standardised
    by slot it would only gain the slots' estimation error."""
    keep = np.isfinite(x)
    x, slot = x[keep], season.slot_of(t[keep])
    counts = np.bincount(slot, minlength=season.slots)
    means = np.bincount(slot, weights=x, minlength=season.slots) / counts
    between = float(np.sum(counts * (means - x.mean()) ** 2))
    within = float(np.sum((x - means[slot]) ** 2))
    dfb, dfw = season.slots - 1, x.size - season.slots
    if dfb <= 0 or dfw <= 0 or not within > 0:
        return between > 0
    from scipy.stats import f as f_distribution  # only in a seasonal profile's building

    return float(f_distribution.sf((between / dfb) / (within / dfw), dfb, dfw)) < CYCLE_P


def _interpolated(season: Season, per_slot: FloatArray, times_ms: npt.ArrayLike, *,
                  local: bool = False) -> FloatArray:
    """Linear interpolation between slot centres, around the period's end (``local``: as in
    :meth:`Season.positions`)."""
    p = season.positions(times_ms, local=local) - 0.5
    below = np.floor(p)
    frac = p - below
    lo = below.astype(np.int64) % season.slots
    hi = (lo + 1) % season.slots
    return (1 - frac) * per_slot[lo] + frac * per_slot[hi]


def _apportion(total: int, weights: FloatArray) -> npt.NDArray[np.int64]:
    """``total`` split in proportion to ``weights`` (largest remainders; the sum is exact)."""
    exact = total * weights / weights.sum()
    shares = np.floor(exact).astype(np.int64)
    rest = total - int(shares.sum())
    if rest > 0:
        shares[np.argsort(-(exact - shares), kind="stable")[:rest]] += 1
    return shares


def _numbers(column: Any) -> FloatArray | None:
    """A column of numbers (None/NaN missing) as floats; None for a column of other values."""
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    if any(isinstance(v, bool | str) for v in values):
        return None
    try:
        return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def strong_cycles(strengths: Mapping[str, float]) -> dict[str, float]:
    """The features whose cycle explains at least :data:`STRONG_CYCLE` of their variance."""
    return {name: round(s, 3) for name, s in sorted(strengths.items()) if s >= STRONG_CYCLE}


def describe(strengths: Mapping[str, float], period_s: int) -> str:
    """One line naming the strong cycles, e.g. for the profile build's stdout."""
    strong = strong_cycles(strengths)
    named = ", ".join(f"{n} ({s:.0%} of its variance)" for n, s in strong.items())
    return f"{named}: a strong {period_name(period_s)} cycle"


def period_name(period_s: int) -> str:
    """``daily``, ``weekly`` or the period in seconds (``3600 s``)."""
    return "daily" if period_s == DAY_S else "weekly" if period_s == WEEK_S else f"{period_s} s"


def slot_name(season: Season) -> str:
    """What one slot is called in a sentence: ``hour``, ``day`` or ``900 s slot``."""
    named = {3600_000.0: "hour", DAY_S * 1000.0: "day"}.get(season.slot_ms)
    return named if named is not None else f"{season.slot_ms / 1000:g} s slot"




def standardise_matrix(section: SeasonSection, names: Sequence[str], x: FloatArray,
                       times_ms: npt.ArrayLike) -> FloatArray:
    """An (n, d) matrix of features ``names`` with its seasonal columns standardised (a copy)."""
    seasonal = [j for j, name in enumerate(names) if name in section.features]
    if not seasonal:
        return x
    out = np.array(x, dtype=np.float64)
    for j in seasonal:
        out[:, j] = standardise(section, names[j], out[:, j], times_ms)
    return out
