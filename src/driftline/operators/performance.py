"""Online model performance from joined outcomes: recency-weighted metrics and concept-drift alarms.

Estimators follow River's shape (``update`` then ``get``), hold O(1) state and pickle, so stage 2
checkpoints them as they are. Stage 2 feeds outcomes in ``(label_ts, prediction_id)`` order, which
makes every value here a deterministic function of the outcome log.

>>> perf = OnlinePerformance("classification", fading_factor=0.9, detector="adwin", delta=0.002)
>>> alarms = [perf.update(correct, None) for correct in (1, 1, 0, 1)]
>>> alarms, perf.get()
([False, False, False, False], {'n': 4, 'alarms_total': 0, 'accuracy_ew': 0.7382960162838034})
"""

from __future__ import annotations

import math
from typing import Literal

from river.base import BinaryDriftDetector, DriftDetector
from river.stats.base import Univariate

from driftline.operators.river_drift import drift as river_drift
from driftline.operators.window_stats import MAX_ABS_VALUE

Task = Literal["classification", "regression"]
DetectorName = Literal["adwin", "page_hinkley", "kswin", "ddm"]

KSWIN_SEED = 42
"""KSWIN samples its reference window at random; a fixed seed keeps alarms reproducible."""


class RecencyWeightedMean(Univariate):
    """Mean with fading factor ``f``: ``sum(f**(n-i) * x_i) / sum(f**(n-i))``.

    Unlike an exponentially weighted mean seeded with the first value, the normalisation makes
    early estimates unbiased; the effective memory is about ``1 / (1 - f)`` values.

    >>> m = RecencyWeightedMean(fading_factor=0.5)
    >>> for x in (1.0, 0.0, 0.0):
    ...     m.update(x)
    >>> round(m.get(), 4)  # (0.25 * 1) / (1 + 0.5 + 0.25)
    0.1429
    >>> RecencyWeightedMean(0.9).get() is None
    True
    """

    def __init__(self, fading_factor: float) -> None:
        if not 0.0 < fading_factor < 1.0:
            raise ValueError("fading_factor must be in (0, 1)")
        self.fading_factor = fading_factor
        self._sum = 0.0
        self._weight = 0.0

    def update(self, x: float) -> None:
        self._sum = x + self.fading_factor * self._sum
        self._weight = 1.0 + self.fading_factor * self._weight

    def get(self) -> float | None:  # None until the first value
        return self._sum / self._weight if self._weight else None


class IntervalMetrics:
    """Plain (unweighted) accuracy / MAE / RMSE of one interval; start a new one per interval.

    >>> m = IntervalMetrics()
    >>> for correct, err in ((1, 0.5), (0, 1.5), (None, None)):
    ...     m.update(correct, err)
    >>> m.get()
    {'n': 3, 'accuracy': 0.5, 'mae': 1.0, 'rmse': 1.118033988749895}
    """

    __slots__ = ("_correct", "_errors", "_labelled", "_n", "_sq_sum", "_sum")

    def __init__(self) -> None:
        self._n = 0
        self._labelled = 0
        self._correct = 0
        self._errors = 0
        self._sum = 0.0
        self._sq_sum = 0.0

    def update(self, correct: int | None, abs_error: float | None) -> None:
        self._n += 1
        if correct is not None:
            self._labelled += 1
            self._correct += correct
        if abs_error is not None and abs_error <= MAX_ABS_VALUE:  # beyond: an invalid value's error
            self._errors += 1
            self._sum += abs_error
            self._sq_sum += abs_error * abs_error

    def get(self) -> dict[str, float | int | None]:
        """``n`` counts every outcome; each metric is None when no outcome carried its input."""
        return {
            "n": self._n,
            "accuracy": self._correct / self._labelled if self._labelled else None,
            "mae": self._sum / self._errors if self._errors else None,
            "rmse": math.sqrt(self._sq_sum / self._errors) if self._errors else None,
        }


def make_detector(name: DetectorName, delta: float) -> DriftDetector | BinaryDriftDetector:
    """River's detector ``name``; ``delta`` maps onto its sensitivity parameter.

    ADWIN ``delta`` (confidence), Page-Hinkley ``delta`` (tolerated change of the mean), KSWIN
    ``alpha`` (test level); DDM has no such parameter and uses River's defaults.

    >>> type(make_detector("kswin", 0.005)).__name__
    'KSWIN'
    """
    # river.drift imports scipy.stats (~0.7 CPU-s with river_drift's deferral of its data sets)
    # that a library user without outcomes never pays (a worker imports it beside its start-up:
    # preload_detectors)
    drift = river_drift()

    if name == "adwin":
        return drift.ADWIN(delta=delta)
    if name == "page_hinkley":
        # Only a rise of the error is concept drift; a model getting better is not an alarm.
        return drift.PageHinkley(delta=delta, mode="up")
    if name == "kswin":
        return drift.KSWIN(alpha=delta, seed=KSWIN_SEED)
    if name == "ddm":
        return drift.binary.DDM()
    raise ValueError(f"unknown detector {name!r}: expected adwin, page_hinkley, kswin or ddm")


def preload_detectors() -> None:
    """Import what :func:`make_detector` needs now (a thread of a starting worker calls it while the
    worker waits for its consumer groups), so that a model's first outcome does not stall the event
    loop for the ~0.7 CPU-s of the import."""
    river_drift()


class OnlinePerformance:
    """Recency-weighted metrics of one model (and segment) plus a concept-drift detector.

    The detector watches the error stream: ``1 - correct`` for classification, ``abs_error`` for
    regression. DDM models a binary error rate, so it is refused for regression.

    >>> OnlinePerformance("regression", 0.99, detector="ddm", delta=0.002)
    Traceback (most recent call last):
    ...
    ValueError: detector 'ddm' needs a binary error stream (classification); use adwin, page_hinkley or kswin
    >>> perf = OnlinePerformance("regression", 0.5, detector="page_hinkley", delta=0.005)
    >>> _ = perf.update(None, 2.0), perf.update(None, 0.0), perf.update(1, None)
    >>> perf.get()
    {'n': 2, 'alarms_total': 0, 'mae_ew': 0.6666666666666666, 'rmse_ew': 1.1547005383792515}
    """

    def __init__(
        self,
        task: Task,
        fading_factor: float = 0.999,
        detector: DetectorName = "adwin",
        delta: float = 0.002,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}: expected classification or regression")
        if detector == "ddm" and task != "classification":
            raise ValueError(
                "detector 'ddm' needs a binary error stream (classification);"
                " use adwin, page_hinkley or kswin"
            )
        self.task = task
        self.detector_name = detector
        self.detector = make_detector(detector, delta)
        self.n = 0
        self.alarms_total = 0
        self._mean = RecencyWeightedMean(fading_factor)  # accuracy, or MAE for regression
        self._square = RecencyWeightedMean(fading_factor)  # squared error (regression only)

    def update(self, correct: int | None, abs_error: float | None) -> bool:
        """Add one outcome; True when the detector alarms on it. Outcomes without the task's
        input (``correct`` / ``abs_error`` is None) are ignored."""
        if self.task == "classification":
            if correct is None:
                return False
            self._mean.update(float(correct))
            error = 1.0 - correct
        else:
            if abs_error is None or not abs_error <= MAX_ABS_VALUE:  # NaN, inf or an invalid value's
                return False
            self._mean.update(abs_error)
            self._square.update(abs_error * abs_error)
            error = abs_error
        self.n += 1
        if isinstance(self.detector, BinaryDriftDetector):
            self.detector.update(error > 0.5)
        else:
            self.detector.update(error)
        if self.detector.drift_detected:
            self.alarms_total += 1
            return True
        return False

    def get(self) -> dict[str, float | int | None]:
        metrics: dict[str, float | int | None] = {"n": self.n, "alarms_total": self.alarms_total}
        if self.task == "classification":
            metrics["accuracy_ew"] = self._mean.get()
        else:
            square = self._square.get()
            metrics["mae_ew"] = self._mean.get()
            metrics["rmse_ew"] = None if square is None else math.sqrt(square)
        return metrics
