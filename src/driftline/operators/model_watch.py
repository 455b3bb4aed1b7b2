"""Multivariate monitoring of a model's events against its profile's ``multivariate`` section.

A training profile built from enough numeric rows carries a ``multivariate`` section
(:func:`multivariate_section`): the fitted state of :class:`~driftline.operators.multivariate.
ReconstructionDrift` and :class:`~driftline.operators.outliers.OutlierScorer` on one shared
normal-score transform, the reference's reconstruction errors as a numeric feature profile (what
the episode monitor is calibrated on), a :class:`~driftline.operators.cbpe.PerformanceEstimator`
calibration when the table has labels and model scores, and a seeded sample of at most
``sample_size`` reference rows (float32, base64) for the domain classifier.

:class:`MultivariateWatch` (one per stage-1 stream) maps each accepted event of a model with such
a profile to its reconstruction error, outlier flag and calibrated probability, and

- feeds the errors, as the pseudo-feature ``__reconstruction__``, to a
  :class:`~driftline.operators.feature_watch.FeatureWatch` of its own: a correlation change opens
  a drift episode like any feature's (same reports, merged by stage 2 into ``drift_episodes``);
- accumulates per (window size, start, model, version) a :class:`MultivariateWindow`: integer
  (fixed-point) sums, so the merged sums are exact whatever the batching and the shard order,
  and a bottom-k sample of rows by a hash of the prediction id (deterministic and mergeable: the
  k smallest hashes of a union are the k smallest of the parts' k smallest).

Every per-event number is computed row by row (``rowwise_matmul``), so a replay, a restore or
another batching gives identical bits.

>>> rng = np.random.default_rng(7)
>>> a = rng.normal(size=4_000)
>>> reference = {"a": a, "b": 0.8 * a + 0.6 * rng.normal(size=4_000), "c": rng.normal(size=4_000)}
>>> section = multivariate_section(reference, sample_size=200)
>>> section["features"], section["sample"]["shape"]
(['a', 'b', 'c'], [200, 3])
>>> ref = MultivariateReference.from_section(section)
>>> errors, distances = ref.errors_and_distances(ref.matrix([{"a": 1.0, "b": 0.8, "c": 0.0},
...                                                          {"a": 2.0, "b": -2.0, "c": 0.0}]))
>>> bool(errors[0] < ref.reconstruction.p99 < errors[1]), bool(distances[1] > ref.outliers.threshold)
(True, True)
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from driftline.operators import watch_native
from driftline.operators.cbpe import (
    Calibration,
    PerformanceEstimate,
    PerformanceEstimator,
    expected_auc_of_segments,
)
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.multivariate import (
    FloatArray,
    NormalScores,
    ReconstructionDrift,
    numeric_features,
    numeric_matrix,
    pack_array,
    unpack_array,
)
from driftline.operators.outliers import OutlierScorer
from driftline.operators.profile import FeatureProfile, ReferenceProfile, feature_profile_of
from driftline.operators.seasonal import multivariate_reference_size, standardise_matrix
from driftline.operators.window_stats import category_key

RECONSTRUCTION_FEATURE = "__reconstruction__"
"""The pseudo-feature whose drift episodes are the reconstruction detector's."""
MIN_ROWS = 500
"""Fewer numeric reference rows than this: no multivariate section (the 99.9 % outlier quantile
and the PCA need a few hundred rows)."""
SAMPLE_SIZE = 1_000
MAX_POINTS = 1_024
"""Order statistics kept per feature for the normal scores (CDF error at most 1/1,024): 25
features fit in about 270 kB of the profile message."""
MAX_FEATURES = 100
"""More numeric features than this: no multivariate section (the precision matrix alone would be
d^2 floats of the profile message)."""
SCORES_BUDGET = 300_000
"""Bytes of base64 the normal scores may take: more features keep fewer order statistics."""
SAMPLE_BUDGET = 150_000
"""Bytes of base64 the reference sample may take: more features keep fewer rows."""
NEAR_CONSTANT_SHARE = 0.99
"""An auto-selected numeric feature whose most common reference value holds at least this share
of its values (a constant one included) is left out of the section: its normal scores are (nearly)
one value, a dimension the PCA fits as never varying, so the reference's errors calibrate nothing
(elec2's first 17,424 rows: ``vicprice``, ``vicdemand``, ``transfer`` constant, reference error
0.00) and any later value is a huge error. A 0/1 flag set in 1-99 % of the rows stays."""
ERROR_UNIT = 10**6
"""Fixed-point scale of summed reconstruction errors (integer sums merge exactly)."""
SCORE_CAP = 1_000.0
"""Normal scores are clipped to +-this: a wild value (1e300, inf) stays a huge error and an outlier
without overflowing the products or the window's integer sums."""
PROBABILITY_UNIT = 10**9
"""Fixed-point scale of summed probabilities."""
SECTION_FIT = 1
"""Version of the section's fit, part of its ``source`` digest: bump it when the same inputs would
be fitted to other content, so a rebuilt profile gets a new id."""
ScoreKind = Literal["positive", "confidence"]
"""What a classifier's score is: the positive class's probability (binary), or the predicted
class's confidence (any number of classes)."""
CbpeGroup = tuple[FloatArray, npt.NDArray[np.bool_] | None, npt.NDArray[np.int64] | None]
"""A group's calibrated probabilities, predicted classes and calibration segments (the last two
None for confidence scores)."""


def multivariate_section(
    columns: Mapping[str, Any],
    *,
    features: Sequence[str] | None = None,
    scores: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    predictions: Sequence[Any] | None = None,
    score_kind: ScoreKind = "positive",
    calibration: Calibration = "score",
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Any] | None:
    """The profile's ``multivariate`` section from the training columns, or None when there are
    fewer than 2 (or more than :data:`MAX_FEATURES`) numeric features or :data:`MIN_ROWS` rows.
    With many features the normal scores keep fewer order statistics and the sample fewer rows, so
    the section stays under about 700 kB at 100 features (the broker's default message limit is 1 MiB).

    ``scores`` with ``labels``: the CBPE calibration. ``score_kind`` "positive": each score is a
    binary classifier's score of the positive class (the label whose rows score highest on
    average), calibrated to P(positive). "confidence": each score is the confidence of the
    predicted class (``predictions``, any number of classes), calibrated to P(prediction correct);
    the section then records ``"score_kind": "confidence"`` (a section without it is "positive").
    ``calibration`` (see :meth:`~driftline.operators.cbpe.PerformanceEstimator.fit`): "features"
    or "auto" may calibrate on the score and the section's features.

    Without ``features``, the numeric columns that vary: :func:`constant_features` are left out
    (named ``features`` are taken as they are).
    """
    if features is None:
        numeric = numeric_features(columns)
        constant = set(constant_features(columns, numeric))
        names = [name for name in numeric if name not in constant]
    else:
        names = list(features)
    if not 2 <= len(names) <= MAX_FEATURES:
        return None
    x = numeric_matrix(columns, names)
    if x.shape[0] < MIN_ROWS:
        return None
    # The profile travels as one broker message: the two big parts shrink with the feature count.
    points = min(MAX_POINTS, max(128, SCORES_BUDGET * 3 // (4 * 8 * len(names))))
    sample_size = min(sample_size, max(100, SAMPLE_BUDGET * 3 // (4 * 4 * len(names))))
    normal = NormalScores.fit(columns, names, max_points=points)
    reconstruction = ReconstructionDrift.from_reference(columns, features=names, scores=normal)
    outliers = OutlierScorer.from_reference(columns, features=names, scores=normal)
    errors = feature_profile_of(reconstruction.reference_errors.tolist(), bins)
    rng = np.random.default_rng([seed, 0x73616D70])
    rows = np.sort(rng.choice(x.shape[0], min(sample_size, x.shape[0]), replace=False))
    source = _source_digest(names, x, scores, labels, predictions, score_kind, calibration, sample_size, seed,
                            bins)
    performance = None
    if scores is not None and labels is not None:
        if score_kind == "confidence":
            if predictions is None:
                raise ValueError("confidence scores need the predictions (P(prediction == label))")
            estimator = _confidence_calibration(scores, labels, predictions, x, calibration, seed)
        else:
            estimator = _calibration(scores, labels, x, calibration, seed)
        performance = estimator.to_state() if estimator is not None else None
    section = {
        "features": names,
        "n": int(x.shape[0]),
        "scores": normal.to_state(),
        "reconstruction": reconstruction.to_state(),
        "errors": errors.model_dump(mode="json"),
        "outliers": outliers.to_state(),
        "performance": performance,
        "sample": pack_array(x[rows], "<f4"),
        "seed": seed,
        "source": source,
    }
    if performance is not None and score_kind == "confidence":
        # only then: a section without it (as all were before confidence scores) is "positive"
        section["score_kind"] = score_kind
    return section


def _source_digest(names: Sequence[str], x: FloatArray, *inputs: Any) -> str:
    """A digest of what the section is fitted from. The fitted floats (PCA basis, precision matrix)
    differ in the last bits with the CPU's BLAS kernels, and bin counts can follow, so the profile
    id hashes this instead (:func:`driftline.operators.profile.multivariate_identity`): the same
    training table gives the same id on any machine."""
    digest = hashlib.sha256(f"driftline-multivariate-{SECTION_FIT}".encode())
    digest.update(orjson.dumps(list(names)))
    digest.update(np.ascontiguousarray(x, dtype="<f8").data)  # hashed in place, not copied to bytes
    for value in inputs:
        digest.update(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain))
    return digest.hexdigest()[:32]


def _plain(value: Any) -> Any:
    # numpy scalars and other sequences of the score/label columns, as JSON would hold them
    if isinstance(value, np.generic):
        return value.item()
    return list(value)


def constant_features(columns: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The ``names`` whose reference values are constant or near-constant: one value holds at
    least :data:`NEAR_CONSTANT_SHARE` of the non-missing values (so their interquartile range and
    MAD are 0), or fewer than 2 values are present.

    >>> constant_features({"flat": [0.4] * 100, "rare": [0.0] * 99 + [7.0], "flag": [0, 1] * 50,
    ...                    "x": list(range(100))}, ["flat", "rare", "flag", "x"])
    ['flat', 'rare']
    """
    if not names:
        return []
    x = numeric_matrix(columns, names)
    out = []
    for j, name in enumerate(names):
        values = x[:, j][~np.isnan(x[:, j])]
        mode_count = np.unique(values, return_counts=True)[1].max() if values.size else 0
        if values.size < 2 or mode_count >= NEAR_CONSTANT_SHARE * values.size:
            out.append(name)
    return out


def _calibration(scores: Sequence[Any], labels: Sequence[Any], x: FloatArray,
                 calibration: Calibration, seed: int) -> PerformanceEstimator | None:
    pairs = [(i, float(s), category_key(y)) for i, (s, y) in enumerate(zip(scores, labels, strict=True))
             if s is not None and y is not None and isinstance(s, int | float) and math.isfinite(s)]
    classes = sorted({y for _, _, y in pairs})
    if len(classes) != 2 or len(pairs) < MIN_ROWS:
        return None
    mean_score = {c: np.mean([s for _, s, y in pairs if y == c]) for c in classes}
    positive = max(classes, key=lambda c: mean_score[c])
    return PerformanceEstimator.fit([s for _, s, _ in pairs], [y == positive for _, _, y in pairs],
                                    features=x[[i for i, _, _ in pairs]], calibration=calibration, seed=seed)


def _confidence_calibration(scores: Sequence[Any], labels: Sequence[Any], predictions: Sequence[Any],
                            x: FloatArray, calibration: Calibration,
                            seed: int) -> PerformanceEstimator | None:
    rows = [(i, float(s), category_key(p) == category_key(y))
            for i, (s, y, p) in enumerate(zip(scores, labels, predictions, strict=True))
            if s is not None and y is not None and p is not None and isinstance(s, int | float)
            and math.isfinite(s)]
    if len(rows) < MIN_ROWS:
        return None
    return PerformanceEstimator.fit([s for _, s, _ in rows], [c for _, _, c in rows],
                                    features=x[[i for i, _, _ in rows]], calibration=calibration, seed=seed)


class MultivariateReference:
    """A profile's ``multivariate`` section, decoded: what the per-event figures are computed with."""

    def __init__(self, features: list[str], reconstruction: ReconstructionDrift, outliers: OutlierScorer,
                 errors: FeatureProfile, estimator: PerformanceEstimator | None, sample: FloatArray,
                 seed: int, score_kind: ScoreKind = "positive") -> None:
        self.features = features
        self.reconstruction = reconstruction
        self.outliers = outliers
        self.errors = errors
        self.estimator = estimator
        self.sample = sample
        self.seed = seed
        self.score_kind = score_kind
        """What the estimator calibrates: the positive class's score, or the predicted class's
        confidence (then it maps a score to P(prediction correct))."""
        self._getter = itemgetter(*features)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> MultivariateReference:
        normal = NormalScores.from_state(section["scores"])
        performance = section.get("performance")
        return cls(
            [str(f) for f in section["features"]],
            ReconstructionDrift.from_state(section["reconstruction"], normal),
            OutlierScorer.from_state(section["outliers"], normal),
            FeatureProfile.model_validate(section["errors"]),
            PerformanceEstimator.from_state(performance) if performance else None,
            unpack_array(section["sample"]),
            int(section.get("seed", 0)),
            "confidence" if section.get("score_kind") == "confidence" else "positive",
        )

    def matrix(self, features: Sequence[Mapping[str, Any]],
               columns: Mapping[str, FloatArray] | None = None) -> FloatArray:
        """The events' numeric features as an (n, d) matrix; missing or non-numeric values NaN,
        integers beyond a float's range +-inf (a huge error, an outlier: not an OverflowError).

        ``columns``: float64 columns (one value per event, every value a JSON float) the caller
        already has, e.g. the decoder's; the features among them are taken as they are, the
        others read from ``features``. The result is then in F order (a view of the feature-major
        stack :meth:`errors_and_distances` works on); the values are the same either way.
        """
        names = self.features
        if columns:
            given = [j for j, name in enumerate(names) if name in columns]
            if given:
                stacked = np.empty((len(names), len(features)), dtype=np.float64)
                for j in given:
                    stacked[j] = columns[names[j]]
                others = sorted(set(range(len(names))) - set(given))
                if others:
                    stacked[others] = self._rows_matrix(features, [names[j] for j in others]).T
                return stacked.T
        return self._rows_matrix(features, names)

    def _rows_matrix(self, features: Sequence[Mapping[str, Any]], names: Sequence[str]) -> FloatArray:
        if len(names) > 1:  # the common batch: every feature present and a float, one type test
            getter = self._getter if names is self.features else itemgetter(*names)
            try:
                rows = list(map(getter, features))
            except KeyError:
                pass
            else:
                values = list(chain.from_iterable(rows))
                if set(map(type, values)) <= _FLOAT:
                    return np.array(values, dtype=np.float64).reshape(len(features), len(names))
        # exact types: JSON gives int/float/str/bool/None, and bool is an int subclass to skip
        table = [[v if type(v) is float else (_int_float(v) if type(v) is int else math.nan)
                  for v in map(event.get, names)] for event in features]
        return np.array(table, dtype=np.float64).reshape(len(features), len(names))

    def errors_and_distances(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per event: the reconstruction error and the outlier distance."""
        z = self._scores(x)
        return self.reconstruction.errors_of_scores(z), self.outliers.distances_of_scores(z)

    def errors_and_outliers(self, x: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Per event: the reconstruction error and whether the outlier distance exceeds the
        threshold (:meth:`~driftline.operators.outliers.OutlierScorer.outliers_of_scores`: the
        flags of :meth:`errors_and_distances`, without most of the distances' cost)."""
        z = self._scores(x)
        return self.reconstruction.errors_of_scores(z), self.outliers.outliers_of_scores(z)

    def _scores(self, x: FloatArray) -> FloatArray:
        # (n, d) in F order (a view of the feature-major scores): rowwise_matmul's layout, no copy
        u = self.reconstruction.scores.scores_by_feature(x)  # a new array: clipped in place
        return np.clip(u, -SCORE_CAP, SCORE_CAP, out=u).T


def check_section(section: Any) -> None:
    """ValueError unless a profile's ``multivariate`` section is one the monitors can use: it
    decodes (:meth:`MultivariateReference.from_section`), every part agrees on the features, and
    a row of values and one of missing values go through the scores, reconstruction, outlier
    distance and CBPE calibration as a shard runs them. A published profile is checked where it
    is parsed (:class:`~driftline.operators.profile.ReferenceProfile`), so a malformed section is
    the sink's one ``invalid_profile`` dead letter and skipped by every stage, not an exception in
    the middle of a batch, raised again at every restart.

    >>> check_section({"features": ["x"]})
    Traceback (most recent call last):
    ...
    ValueError: multivariate section: KeyError: 'scores'
    """
    try:
        if type(section) is not dict:
            raise TypeError(f"the section is a JSON object, not {type(section).__name__}")
        ref = MultivariateReference.from_section(section)
        names = ref.features
        if not names or len(set(names)) != len(names) or set(map(type, section["features"])) != {str}:
            raise ValueError("features are not distinct names")
        if ref.reconstruction.scores.features != names:
            raise ValueError("the normal scores are not of the features")
        if not 0 <= ref.seed < 2**32:  # the domain classifier's folds are drawn with it (scikit-learn)
            raise ValueError("the seed is not in [0, 2**32)")
        if ref.sample.ndim != 2 or ref.sample.shape[1] != len(names):
            raise ValueError("the sample's columns are not the features")
        if int(section["n"]) < 1:
            raise ValueError("n (the training rows) is not positive")
        quantile = float(section["outliers"]["quantile"])
        if not 0.0 < quantile < 1.0:
            raise ValueError("the outlier quantile is not in (0, 1)")
        mean_error = section["reconstruction"].get("reference_mean_error")
        if mean_error is not None:
            float(mean_error)
        rows = np.array([[0.0] * len(names), [math.nan] * len(names)])
        ref.errors_and_outliers(rows)
        if ref.estimator is not None:
            for calibration in ref.estimator.calibrations:  # probabilities at nondecreasing scores
                knots, values = calibration.knots, calibration.values
                if (knots.shape != values.shape or not knots.size or not np.all(np.diff(knots) >= 0)
                        or not np.all((values >= 0.0) & (values <= 1.0))):
                    raise ValueError("a CBPE calibration is not probabilities at nondecreasing scores")
            ref.estimator.calibrated(np.array([0.25, 0.75]), rows if ref.estimator.by_features else None)
            ref.estimator.calibrations[0].segments(np.array([0.25, 0.75]))
            float(ref.estimator.threshold)
    except ValueError as err:
        raise ValueError(f"multivariate section: {err}") from err
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError, ZeroDivisionError) as err:
        raise ValueError(f"multivariate section: {type(err).__name__}: {err}") from err


_FLOAT = frozenset({float})


def _int_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:  # JSON integers have no bound
        return math.inf if value > 0 else -math.inf


def id_hash(prediction_id: str) -> int:
    """63-bit hash of a prediction id: the order of the bottom-k window sample.

    >>> id_hash("p1") == id_hash("p1") != id_hash("p2")
    True
    """
    return int.from_bytes(hashlib.blake2b(prediction_id.encode(), digest_size=8).digest(), "big") >> 1


def id_hashes(prediction_ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """:func:`id_hash` of each id, as an array.

    >>> id_hashes(["p1", "p2"]).tolist() == [id_hash("p1"), id_hash("p2")]
    True
    """
    fast = watch_native.NATIVE
    if fast is not None:  # the same BLAKE2b in C, a list in one call (_watch.c)
        out = np.empty(len(prediction_ids), dtype=np.int64)
        fast.id_hashes(prediction_ids if type(prediction_ids) is list else list(prediction_ids), out)
        return out
    # Each hasher a copy of a fresh one (cheaper than the constructor's keyword parsing); the
    # digests joined and read as big-endian words: no Python int per id.
    fresh = _FRESH_ID_HASHER.copy
    digests = []
    for prediction_id in prediction_ids:
        hasher = fresh()
        hasher.update(prediction_id.encode())
        digests.append(hasher.digest())
    return (np.frombuffer(b"".join(digests), dtype=">u8") >> np.uint64(1)).astype(np.int64)


_FRESH_ID_HASHER = hashlib.blake2b(digest_size=8)
"""The state every id's hash starts from (:func:`id_hashes` copies it)."""


@dataclass
class MultivariateWindow:
    """One window's mergeable multivariate sums and bottom-k sample (see module docstring)."""

    reference_id: str = ""
    n: int = 0
    error_sum: int = 0  # ERROR_UNIT
    above_p99: int = 0
    outliers: int = 0
    n_scored: int = 0
    correct_sum: int = 0  # PROBABILITY_UNIT: expected correct predictions
    correct_var: int = 0  # PROBABILITY_UNIT: sum a (1 - a)
    tp: int = 0  # PROBABILITY_UNIT: expected true positives, false positives, false negatives
    fp: int = 0
    fn: int = 0
    auc_segments: dict[int, list[int]] = field(default_factory=dict)
    """Per calibration segment (of the latest reference's): [events, sum p, sum p (1 - p)], the
    sums in PROBABILITY_UNIT; the ROC-AUC estimate's mergeable counts."""
    sample_hashes: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64),
                                                 compare=False)
    """The bottom-k sample's id hashes, ascending (equal hashes: rows in descending order)."""
    sample_rows: FloatArray = field(default_factory=lambda: np.empty((0, 0)), compare=False)
    """The sample's rows, in the order of :attr:`sample_hashes`."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        heap = state.pop("heap", None)  # a checkpoint written when the sample was a heap
        self.__dict__.update(state)
        if heap is not None:
            self._set_sample(sorted(heap, reverse=True))

    def add(self, reference: MultivariateReference, reference_id: str, x: FloatArray,
            errors: FloatArray, outliers: npt.NDArray[np.bool_], hashes: npt.NDArray[np.int64],
            cbpe: CbpeGroup | None, k: int) -> None:
        """Count a group of events (``outliers``: whether each one's distance exceeds the
        reference's threshold; ``cbpe``: their calibrated probabilities, predicted classes
        and calibration segments, scored events only; for confidence scores the probabilities
        are P(correct) and there are no classes or segments: accuracy sums only); keep the ``k``
        rows with the smallest id hashes (of the latest reference's features: a newer profile
        mid-window restarts the sample and the segment counts, which only mean something under one
        calibration)."""
        if reference_id != self.reference_id:
            self.sample_hashes = np.empty(0, np.int64)
            self.sample_rows = np.empty((0, x.shape[1]))
            self.auc_segments = {}
        self.reference_id = reference_id
        self.n += int(errors.size)
        self.error_sum += int(np.rint(errors * ERROR_UNIT).astype(np.int64).sum())
        self.above_p99 += int(np.sum(errors > reference.reconstruction.p99))
        self.outliers += int(np.count_nonzero(outliers))
        if cbpe is not None and cbpe[0].size:
            calibrated, predicted, segments = cbpe
            correct = calibrated if predicted is None else np.where(predicted, calibrated, 1.0 - calibrated)
            self.n_scored += int(calibrated.size)
            self.correct_sum += _fixed(correct)
            self.correct_var += _fixed(correct * (1.0 - correct))
            if predicted is not None and segments is not None:
                self.tp += _fixed(calibrated[predicted])
                self.fp += _fixed(1.0 - calibrated[predicted])
                self.fn += _fixed(calibrated[~predicted])
                self._count_segments(calibrated, segments)
        self._sample(x, hashes, k)

    def _sample(self, x: FloatArray, hashes: npt.NDArray[np.int64], k: int) -> None:
        """Keep the k rows of smallest hash. Once the sample is full only a hash below its largest
        can enter (that bound only falls), so the others are skipped unseen; the candidates and
        the kept rows are merged by one stable sort of their hashes. Equal hashes (an id reused
        within a window) take the order of a heap of ``(-hash, row)`` fed the events one by one,
        which kept the sample before: a newcomer equal to the largest kept hash stays out, and
        the smallest row of the largest hash leaves first."""
        kept = self.sample_hashes
        if kept.size >= k:
            if not hashes.size or not kept.size:
                return
            candidates = np.flatnonzero(hashes < kept[-1])
            if not candidates.size:
                return
            hashes, x = hashes[candidates], x[candidates]
        merged = np.concatenate([kept, hashes])
        order = np.argsort(merged, kind="stable")
        ordered = merged[order]
        if ordered.size > 1 and bool(np.any(ordered[1:] == ordered[:-1])):
            self._sample_ties(x, hashes, k)
            return
        order = order[:k]
        self.sample_hashes = ordered[:k]
        self.sample_rows = np.concatenate([self.sample_rows.reshape(kept.size, x.shape[1]), x])[order]

    def _sample_ties(self, x: FloatArray, hashes: npt.NDArray[np.int64], k: int) -> None:
        """:meth:`_sample` one event at a time on a heap of ``(-hash, row)``: the order among
        equal hashes (rare: an id reused within one window)."""
        heap = [(-h, tuple(row)) for h, row in zip(self.sample_hashes.tolist(), self.sample_rows.tolist(),
                                                    strict=True)]
        heapq.heapify(heap)
        for h, row in zip(hashes.tolist(), x.tolist(), strict=True):
            if len(heap) < k:
                heapq.heappush(heap, (-h, tuple(row)))
            elif -h > heap[0][0]:
                heapq.heapreplace(heap, (-h, tuple(row)))
        self._set_sample(sorted(heap, reverse=True))

    def _set_sample(self, kept: list[tuple[int, tuple[float, ...]]]) -> None:
        """The sample from ``(-hash, row)`` pairs in ascending hash order."""
        width = len(kept[0][1]) if kept else 0
        self.sample_hashes = np.asarray([-h for h, _ in kept], dtype=np.int64)
        self.sample_rows = np.asarray([row for _, row in kept], dtype=np.float64).reshape(len(kept), width)

    def _count_segments(self, calibrated: FloatArray, segments: npt.NDArray[np.int64]) -> None:
        p = np.rint(calibrated * PROBABILITY_UNIT).astype(np.int64)
        pq = np.rint(calibrated * (1.0 - calibrated) * PROBABILITY_UNIT).astype(np.int64)
        if segments.size * PROBABILITY_UNIT < 2**53:
            # Segments are small non-negative indices; summed as float64 the integers (each at
            # most PROBABILITY_UNIT) stay exact below 2 ** 53, so these are the integer sums.
            counts = np.bincount(segments)
            keys = np.flatnonzero(counts)
            counts = counts[keys]
            p_sums = np.bincount(segments, weights=p)[keys].astype(np.int64)
            pq_sums = np.bincount(segments, weights=pq)[keys].astype(np.int64)
        else:
            keys, inverse = np.unique(segments, return_inverse=True)
            counts = np.bincount(inverse, minlength=keys.size)
            p_sums = np.zeros(keys.size, dtype=np.int64)
            pq_sums = np.zeros(keys.size, dtype=np.int64)
            np.add.at(p_sums, inverse, p)  # integer adds: exact whatever the grouping
            np.add.at(pq_sums, inverse, pq)
        for key, n, p_sum, pq_sum in zip(keys.tolist(), counts.tolist(), p_sums.tolist(), pq_sums.tolist(),
                                         strict=True):
            totals = self.auc_segments.setdefault(int(key), [0, 0, 0])
            totals[0] += n
            totals[1] += p_sum
            totals[2] += pq_sum

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe partial stage 2 merges (:func:`merge_windows`)."""
        return {"reference_id": self.reference_id, "n": self.n, "error_sum": self.error_sum,
                "above_p99": self.above_p99, "outliers": self.outliers, "n_scored": self.n_scored,
                "correct_sum": self.correct_sum, "correct_var": self.correct_var, "tp": self.tp,
                "fp": self.fp, "fn": self.fn,
                "auc_segments": [[key, *self.auc_segments[key]] for key in sorted(self.auc_segments)],
                "sample_hashes": self.sample_hashes.tolist(),
                "sample": pack_array(self.sample_rows, "<f4")}


def _fixed(values: FloatArray) -> int:
    return int(np.rint(values * PROBABILITY_UNIT).astype(np.int64).sum())


SUM_FIELDS = ("n", "error_sum", "above_p99", "outliers", "n_scored", "correct_sum", "correct_var",
              "tp", "fp", "fn")


@dataclass(frozen=True)
class MergedMultivariate:
    """A window's multivariate partials merged over shards."""

    reference_id: str
    sums: dict[str, int]
    sample: FloatArray
    """The window's bottom-k rows by id hash (ascending hash), float32 values as float64."""
    auc_segments: dict[int, list[int]] = field(default_factory=dict)
    """``reference_id``'s calibration segments: [events, sum p, sum p (1 - p)] (PROBABILITY_UNIT)."""

    @property
    def mean_error(self) -> float:
        return self.sums["error_sum"] / ERROR_UNIT / self.sums["n"] if self.sums["n"] else math.nan

    @property
    def share_above_p99(self) -> float:
        return self.sums["above_p99"] / self.sums["n"] if self.sums["n"] else math.nan

    def estimate(self, z: float = 1.96) -> PerformanceEstimate | None:
        """CBPE from the merged sums (accuracy and its band, F1; ROC-AUC from the segment counts
        of ``reference_id``'s events, see :func:`~driftline.operators.cbpe.expected_auc_of_segments`;
        both NaN for confidence scores, which count no TP/FP/FN or segments); None without scored
        events."""
        n = self.sums["n_scored"]
        if not n:
            return None
        unit = float(PROBABILITY_UNIT)
        accuracy = self.sums["correct_sum"] / unit / n
        sd = math.sqrt(max(self.sums["correct_var"] / unit, 0.0)) / n
        tp, fp, fn = (self.sums[k] / unit for k in ("tp", "fp", "fn"))
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else math.nan
        ordered = [self.auc_segments[key] for key in sorted(self.auc_segments)]
        roc_auc = expected_auc_of_segments([s[1] / unit for s in ordered], [s[2] / unit for s in ordered],
                                           [s[0] for s in ordered]) if ordered else math.nan
        return PerformanceEstimate(n=n, accuracy=accuracy, accuracy_sd=sd, low=max(0.0, accuracy - z * sd),
                                   high=min(1.0, accuracy + z * sd), f1=f1, roc_auc=roc_auc)


def merge_windows(parts: Sequence[Mapping[str, Any]], k: int = SAMPLE_SIZE,
                  reference_id: str | None = None) -> MergedMultivariate:
    """Merge shards' :meth:`MultivariateWindow.to_dict` partials (any order: integer sums and the
    k smallest hashes of the union). The sample keeps the rows of ``reference_id`` (the newest
    profile among the parts'; default: the largest id) only, rows of one set of features."""
    sums = dict.fromkeys(SUM_FIELDS, 0)
    hashes: list[npt.NDArray[np.int64]] = []
    samples: list[FloatArray] = []
    auc_segments: dict[int, list[int]] = {}
    if reference_id is None:
        reference_id = max((str(part["reference_id"]) for part in parts), default="")
    for part in parts:
        for name in SUM_FIELDS:
            sums[name] += int(part[name])
        if part["reference_id"] == reference_id:  # rows of one reference's features only
            for key, *counts in part["auc_segments"]:
                totals = auc_segments.setdefault(int(key), [0, 0, 0])
                for i, value in enumerate(counts):
                    totals[i] += int(value)
            rows = unpack_array(part["sample"])
            part_hashes = np.asarray(part["sample_hashes"], dtype=np.int64)
            if rows.shape[0] != part_hashes.size:
                raise ValueError("a partial's sample and its hashes differ in length")
            if part_hashes.size:
                hashes.append(part_hashes)
                samples.append(rows)
    if not hashes or k <= 0:
        return MergedMultivariate(reference_id, sums, np.empty((0, 0)), auc_segments)
    # stable: equal hashes keep the parts' order, then each part's
    kept = np.argsort(np.concatenate(hashes), kind="stable")[:k]
    return MergedMultivariate(reference_id, sums, np.concatenate(samples)[kept], auc_segments)


@dataclass
class _ModelProfiles:
    profiles: list[ReferenceProfile] = field(default_factory=list)
    active: int = -1  # index of the newest profile applied so far (never moves back)


WindowId = tuple[int, int, str, str]  # (size ms, start ms, model, version)


class MultivariateWatch:
    """Stage 1's multivariate state of one stream (see module docstring)."""

    def __init__(self, false_alarms_per_million: float, *, status_grid_ms: int, min_effect_sd: float,
                 learning: int, sample_size: int = SAMPLE_SIZE) -> None:
        self.episodes = FeatureWatch(false_alarms_per_million, status_grid_ms=status_grid_ms,
                                     min_effect_sd=min_effect_sd, learning=learning)
        self.sample_size = sample_size
        self.episodes_enabled = True
        """False (``sequential.enabled`` off): no reconstruction episodes; window sums still kept."""
        self.models: dict[tuple[str, str], _ModelProfiles] = {}
        self.windows: dict[WindowId, MultivariateWindow] = {}
        self._references: dict[str, MultivariateReference] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_references"] = {}  # decoded from the profiles again when needed
        return state

    def add_profile(self, profile: ReferenceProfile) -> bool:
        """Register a training profile with a multivariate section; False otherwise or if known."""
        if profile.source != "training" or not profile.multivariate:
            return False
        model = self.models.setdefault((profile.model_id, profile.model_version), _ModelProfiles())
        if any(p.profile_id == profile.profile_id for p in model.profiles):
            return False
        key = (profile.effective_from_ms, profile.profile_id)
        position = bisect.bisect([(p.effective_from_ms, p.profile_id) for p in model.profiles], key)
        if position <= model.active:
            return False  # older than the one applied: never applies
        model.profiles.insert(position, profile)
        errors = FeatureProfile.model_validate(profile.multivariate["errors"])
        worth = multivariate_reference_size(profile, 0)
        if worth is not None:  # errors of values standardised by fitted curves: sized as the curves
            errors = errors.model_copy(update={"n": min(errors.n, worth)})
        self.episodes.add_profile(profile.model_copy(update={
            "features": {RECONSTRUCTION_FEATURE: errors}, "multivariate": None, "prediction": None,
            "season": None}))
        return True

    def watches(self, model_id: str, model_version: str) -> bool:
        model = self.models.get((model_id, model_version))
        return model is not None and bool(model.profiles)

    def reference(self, profile: ReferenceProfile) -> MultivariateReference:
        ref = self._references.get(profile.profile_id)
        if ref is None:
            assert profile.multivariate is not None
            ref = MultivariateReference.from_section(profile.multivariate)
            self._references[profile.profile_id] = ref
        return ref

    def observe(self, model_id: str, model_version: str, times: Sequence[int], prediction_ids: Sequence[str],
                features: Sequence[Mapping[str, Any]], scores: Sequence[float | None],
                sizes_ms: Sequence[int], columns: Mapping[str, FloatArray] | None = None,
                ) -> list[dict[str, Any]]:
        """Feed one model's accepted events in stream order; the reconstruction episode reports.
        ``columns``: float64 feature columns of these events the caller has (see
        :meth:`MultivariateReference.matrix`); the same state and reports as without."""
        model = self.models.get((model_id, model_version))
        if model is None or not model.profiles or not times:
            return []
        stamps = np.asarray(times, dtype=np.int64)
        effective = np.asarray([p.effective_from_ms for p in model.profiles], dtype=np.int64)
        wanted = np.searchsorted(effective, stamps, side="right") - 1
        wanted = np.maximum.accumulate(np.maximum(wanted, model.active))
        errors_all = np.full(stamps.size, np.nan)
        scores_all = np.array(scores, dtype=np.float64)  # None: NaN
        hashes_all = id_hashes(prediction_ids)
        # nondecreasing: one profile for the whole batch when the first and last agree
        for index in ([int(wanted[0])] if wanted[0] == wanted[-1] else np.unique(wanted).tolist()):
            if index < 0:
                continue
            profile = model.profiles[index]
            model.active = index
            ref = self.reference(profile)
            sample_size = min(self.sample_size, ref.sample.shape[0])  # as many rows as the reference's
            if wanted[0] == wanted[-1]:  # the common batch: one profile for every event
                rows: npt.NDArray[np.intp] | slice = slice(None)
                x = ref.matrix(features, columns)
            else:
                rows = np.flatnonzero(wanted == index)
                x = ref.matrix([features[i] for i in rows.tolist()],
                               {name: column[rows] for name, column in columns.items()} if columns else None)
            if profile.season is not None:  # the section was fitted on the standardised features
                x = standardise_matrix(profile.season, ref.features, x, stamps[rows])
            errors, outliers = ref.errors_and_outliers(x)
            errors_all[rows] = errors
            group_stamps, hashes, scored = stamps[rows], hashes_all[rows], scores_all[rows]
            calibrated = predicted = segments = None
            if ref.estimator is not None:
                keep = ~np.isnan(scored)
                calibrated = np.full(scored.size, np.nan)
                calibrated[keep] = ref.estimator.calibrated(
                    scored[keep], x[keep] if ref.estimator.by_features is not None else None)
                if ref.score_kind == "positive":
                    predicted = scored >= ref.estimator.threshold
                    segments = ref.estimator.calibrations[0].segments(np.nan_to_num(scored))
            for size in sizes_ms:
                starts = group_stamps - group_stamps % size
                first, last = int(starts.min()), int(starts.max())  # cheaper than a sort: one window
                window_starts = [first] if first == last else np.unique(starts).tolist()
                for start in window_starts:
                    sel: npt.NDArray[np.intp] | slice = (
                        slice(None) if len(window_starts) == 1 else np.flatnonzero(starts == start))
                    window = self.windows.setdefault((size, start, model_id, model_version),
                                                     MultivariateWindow())
                    cbpe: CbpeGroup | None = None
                    if calibrated is not None:
                        chosen = calibrated[sel]
                        scored_rows = ~np.isnan(chosen)
                        # every event scored (the common batch): the group's own arrays, no copies
                        with_score: npt.NDArray[np.intp] | slice = (
                            slice(None) if scored_rows.all() else np.flatnonzero(scored_rows))
                        cbpe = (chosen[with_score],
                                None if predicted is None else predicted[sel][with_score],
                                None if segments is None else segments[sel][with_score])
                    window.add(ref, profile.profile_id, x[sel], errors[sel], outliers[sel], hashes[sel],
                               cbpe, sample_size)
        if not self.episodes_enabled:
            return []
        # the errors as the pseudo-feature's column: no feature map per event
        return self.episodes.observe(model_id, model_version, times, prediction_ids, [{}] * len(times),
                                     {RECONSTRUCTION_FEATURE: errors_all})

    def take(self, size_ms: int, start: int, model_id: str, model_version: str) -> dict[str, Any] | None:
        """A closing window's partial (None if no event of it was watched)."""
        window = self.windows.pop((size_ms, start, model_id, model_version), None)
        return window.to_dict() if window is not None else None
