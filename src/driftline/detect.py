"""driftline's drift detection as a library: no Kafka, no ClickHouse, just tables and streams.

The pipeline runs these very classes; this module is the stable import path for users.

**Batch**: score a window (a table: a dict of arrays, a pandas DataFrame, a pyarrow Table)
against a reference table, per feature (:class:`DriftScorer`). A feature drifts when its test (KS
numeric, chi-square categorical) is significant after Benjamini-Hochberg across features at
``fdr_q=0.01`` and its effect is at least 0.05 reference standard deviations (or PSI >= 0.2, or
JS distance >= 0.1); each result says why in ``reason``. Numbers are numeric features; strings,
bools and pandas ``category`` columns categorical; ``categorical=[...]`` makes integer codes
categories. docs/detect.md has the rule, the column types and the speed figures.

>>> import numpy as np
>>> from driftline.detect import DriftScorer
>>> rng = np.random.default_rng(7)
>>> reference = {"amount": rng.lognormal(3, 1, 20_000), "country": rng.choice(["de", "fr", "it"], 20_000)}
>>> scorer = DriftScorer.from_reference(reference)
>>> window = {"amount": rng.lognormal(3.5, 1, 5_000), "country": rng.choice(["de", "fr", "it"], 5_000)}
>>> report = scorer.score(window)
>>> report.drifted_features
['amount']
>>> round(report["amount"].psi, 2), round(report["amount"].effect, 2), report["country"].drifted
(0.22, 0.49, False)
>>> report["amount"].reason
'ks p_adj 8.3e-133 < fdr_q 0.01 and effect 0.49 sd >= 0.05, psi 0.218 >= 0.2, js 0.196 >= 0.1'

**Streaming**: one detector per feature, updated per value or per micro-batch, alarming within
hundreds of values of a change. Each is configured by ``arl``, the mean number of no-drift values
between two false alarms, and calibrated against its reference. All are
:class:`SequentialDetector` s: ``update`` returns an :class:`Alarm` or None, ``update_many`` the
alarms of a batch, ``reset`` clears the evidence. An alarm says where it is twice:
``Alarm.offset`` is its position in the batch you passed (``xs[alarm.offset]``, skipped None/NaN
included), ``Alarm.index`` its position among every value the detector has counted. One
``update`` costs ~0.5-1 us, ``update_many`` ~0.05-0.2 us a value (``bench/bench_sequential.py``).

>>> from driftline.detect import BinaryDetector, CategoricalDetector, NumericDetector, feature_arl
>>> arl = feature_arl(1_000_000, n_features=2)   # 1 false alarm per million rows over 2 features
>>> amount = NumericDetector.from_reference(reference["amount"], arl=arl)
>>> country = CategoricalDetector.from_reference(reference["country"], arl=arl)
>>> quiet_countries = rng.choice(["de", "fr", "it"], 10_000)
>>> amount.update_many(rng.lognormal(3, 1, 10_000)), country.update_many(quiet_countries)
([], [])
>>> alarm = amount.update_many(rng.lognormal(3.3, 1, 2_000))[0]
>>> alarm.offset < 300, alarm.index == 10_000 + alarm.offset, alarm.statistic >= alarm.threshold
(True, True, True)
>>> country.update("es") is None       # one unseen category is not yet evidence ...
True
>>> [a.component for a in country.update_many(["es"] * 50)][:1]   # ... a run of them is
["category '__other__' x4"]

A classifier's error stream (1 = wrong prediction) against its reference error rate (exact here;
from a sample, ``from_reference`` or ``n_reference=``, quiet stream values tighten the estimate, so
a 1,000-value reference ends up about as quick as the exact rate, see :class:`BinaryDetector`):

>>> errors = BinaryDetector.from_rate(0.10, arl=1_000_000)
>>> errors.update_many(rng.random(20_000) < 0.10)
[]
>>> errors.update_many(rng.random(5_000) < 0.20)[0].component
'error rate x2'
>>> errors.reset(); errors.statistic
0.0

**Episodes**: under a shift that lasts, a detector alarms once per renewal for as long as it lasts.
An :class:`EpisodeMonitor` turns that into one episode: ``update_many`` returns
:class:`EpisodeEvent` s, ``"opened"`` at the alarm, ``"escalated"`` when the stream moves further
from the reference (or across it), ``"closed"`` when it is back; shifts below a minimum effect
(:data:`DEFAULT_MIN_EFFECT_SD`, 0.1 reference sd) open nothing. Magnitudes are against the
reference, in reference sd (numeric), PSI (categorical) or error-rate ratio (binary).

>>> from driftline.detect import EpisodeMonitor
>>> watch = EpisodeMonitor.from_reference(reference["amount"], arl=arl)
>>> watch.update_many(rng.lognormal(3.02, 1, 20_000))   # 0.02 sd: below the minimum effect
[]
>>> [(e.kind, e.unit) for e in watch.update_many(rng.lognormal(3.5, 1, 20_000))]   # 0.5 sd, lasting
[('opened', 'sd')]
>>> round(watch.episode.magnitude, 1), watch.episode.escalations
(0.5, 0)
>>> [(e.kind, e.reason) for e in watch.update_many(rng.lognormal(3, 1, 5_000))]
[('closed', 'back_to_reference')]
"""

from __future__ import annotations

from driftline.operators.episodes import (
    DEFAULT_LEARNING,
    DEFAULT_MIN_EFFECT_SD,
    DEFAULT_MIN_PSI,
    DEFAULT_MIN_RATE_RATIO,
    EpisodeEvent,
    EpisodeMonitor,
    EpisodeState,
)
from driftline.operators.scorer import DriftScorer, FeatureResult, ScoreReport, default_settings
from driftline.operators.sequential import (
    Alarm,
    BinaryDetector,
    CategoricalDetector,
    NumericDetector,
    SequentialDetector,
    detector_for_profile,
    feature_arl,
)

__all__ = [
    "DEFAULT_LEARNING",
    "DEFAULT_MIN_EFFECT_SD",
    "DEFAULT_MIN_PSI",
    "DEFAULT_MIN_RATE_RATIO",
    "Alarm",
    "BinaryDetector",
    "CategoricalDetector",
    "DriftScorer",
    "EpisodeEvent",
    "EpisodeMonitor",
    "EpisodeState",
    "FeatureResult",
    "NumericDetector",
    "ScoreReport",
    "SequentialDetector",
    "default_settings",
    "detector_for_profile",
    "feature_arl",
]

# Beyond one feature at a time (issue 16). Appended to the module docstring, so `help()` and the
# doctests see it; docs/multivariate.md has the methods, thresholds and figures.
from driftline.operators.cbpe import (
    FeatureAwareCalibration,
    IsotonicCalibration,
    PerformanceEstimate,
    PerformanceEstimator,
)
from driftline.operators.comparison import SequentialComparison, WindowComparison, compare_window
from driftline.operators.multivariate import (
    DomainClassifierDrift,
    DomainResult,
    ReconstructionDrift,
    ReconstructionSummary,
)
from driftline.operators.outliers import OutlierScorer, OutlierWindow

__doc__ = (__doc__ or "") + """
**Multivariate**: changes in the joint distribution that no single feature shows.
:class:`ReconstructionDrift` watches each event's PCA reconstruction error (on the reference's
normal scores) with a calibrated CUSUM; :class:`DomainClassifierDrift` (``pip install
'driftline[multivariate]'``) tells a window's sample from the reference's with a seeded
gradient-boosted classifier, a cross-validated ROC-AUC against a calibrated threshold.
:class:`OutlierScorer` scores one event (a model server's request) or a window's outlier share.

>>> def pairs(rho, n):
...     a = rng.normal(size=n)
...     return {"a": a, "b": rho * a + (1 - rho**2) ** 0.5 * rng.normal(size=n), "c": rng.normal(size=n)}
>>> reference = pairs(0.8, 20_000)
>>> DriftScorer.from_reference(reference).score(pairs(-0.8, 5_000)).drifted_features  # marginals alike
[]
>>> monitor = ReconstructionDrift.from_reference(reference, arl=1e6)
>>> monitor.update_many(pairs(0.8, 10_000)), monitor.update_many(pairs(-0.8, 1_000))[0].offset < 300
([], True)
>>> outliers = OutlierScorer.from_reference(reference)
>>> outliers.window(pairs(0.8, 5_000)).significant, outliers.window(pairs(-0.8, 5_000)).significant
(False, True)

**Performance before labels** (CBPE): calibrate a binary classifier's scores on a labelled
reference, then estimate a window's accuracy, F1 and ROC-AUC from its scores alone.

>>> x = rng.normal(size=20_000)
>>> estimator = PerformanceEstimator.fit(1 / (1 + np.exp(-3 * x)), rng.random(20_000) < 1 / (1 + np.exp(-x)))
>>> x = rng.normal(1.0, 1.0, 5_000)                 # the inputs move, the concept does not
>>> scores, labels = 1 / (1 + np.exp(-3 * x)), rng.random(5_000) < 1 / (1 + np.exp(-x))
>>> estimate = estimator.estimate(scores)
>>> abs(estimate.accuracy - float(np.mean((scores >= 0.5) == labels))) < 0.03
True

**Version comparison**: a challenger's per-event losses beside the champion's (shadow: the same
requests, ``paired=True``; canary: split traffic): :func:`compare_window` per window, and a
:class:`SequentialComparison` that decides once, at a controlled error rate however often it looks.

>>> test = SequentialComparison(paired=True)
>>> errors = rng.random(2_000)
>>> test.update(errors < 0.10, errors < 0.07)       # the challenger errs on fewer requests
'challenger_better'
"""

__all__ += [
    "DomainClassifierDrift",
    "DomainResult",
    "FeatureAwareCalibration",
    "IsotonicCalibration",
    "OutlierScorer",
    "OutlierWindow",
    "PerformanceEstimate",
    "PerformanceEstimator",
    "ReconstructionDrift",
    "ReconstructionSummary",
    "SequentialComparison",
    "WindowComparison",
    "compare_window",
]
