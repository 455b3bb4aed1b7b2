"""Online performance: recency-weighted metrics track a known accuracy drop; detectors alarm after it."""

from __future__ import annotations

import math
import pickle
import random
import subprocess
import sys

import pytest

from driftline.operators.performance import IntervalMetrics, OnlinePerformance, RecencyWeightedMean

DROP_AT = 5000
N = 10_000
FADING = 0.999  # memory ~1000 outcomes
TOLERANCE = 0.04  # ~4 standard deviations of the recency-weighted estimate (sd ~0.007-0.011)
SETTLE = 3000  # after the drop, the old regime weighs 0.999**3000 ~ 5% (bias <= 0.015)


def accuracy_stream(seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.random() < (0.9 if i < DROP_AT else 0.6)) for i in range(N)]


def run(detector: str) -> tuple[OnlinePerformance, list[float], list[int]]:
    perf = OnlinePerformance("classification", FADING, detector=detector, delta=0.002)  # type: ignore[arg-type]
    estimates, alarms = [], []
    for i, correct in enumerate(accuracy_stream()):
        if perf.update(correct, None):
            alarms.append(i)
        estimate = perf.get()["accuracy_ew"]
        assert isinstance(estimate, float)
        estimates.append(estimate)
    return perf, estimates, alarms


def test_recency_weighted_accuracy_tracks_the_true_accuracy() -> None:
    perf, estimates, _ = run("adwin")
    before = estimates[1000:DROP_AT]
    after = estimates[DROP_AT + SETTLE :]
    assert max(abs(e - 0.9) for e in before) < TOLERANCE
    assert max(abs(e - 0.6) for e in after) < TOLERANCE
    assert perf.get()["n"] == N


def test_adwin_alarms_after_the_drop_and_not_before() -> None:
    perf, _, alarms = run("adwin")
    assert [a for a in alarms if a < DROP_AT] == []
    assert alarms and DROP_AT < alarms[0] < DROP_AT + 500
    assert perf.get()["alarms_total"] == len(alarms)


@pytest.mark.parametrize("detector", ["page_hinkley", "ddm"])
def test_other_detectors_see_the_drop(detector: str) -> None:
    # measured with this seed: page_hinkley 0 alarms before the drop, ddm 1
    _, _, alarms = run(detector)
    assert len([a for a in alarms if a < DROP_AT]) <= 1
    assert any(DROP_AT <= a < DROP_AT + 1000 for a in alarms)


def regression_errors(n: int, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [abs(rng.gauss(0, 1.0 if i < DROP_AT else 3.0)) for i in range(n)]


def test_kswin_sees_a_rise_of_a_continuous_error() -> None:
    # KSWIN runs a KS test per update: meant for continuous errors (on 0/1 errors it never fired
    # here), and it false-alarms now and then (4 times before the drop with this seed).
    perf = OnlinePerformance("regression", FADING, detector="kswin", delta=0.002)
    alarms = [i for i, e in enumerate(regression_errors(DROP_AT + 200)) if perf.update(None, e)]
    assert any(DROP_AT <= a < DROP_AT + 100 for a in alarms)


def test_regression_metrics_and_ddm_refusal() -> None:
    with pytest.raises(ValueError, match="binary error stream"):
        OnlinePerformance("regression", detector="ddm")
    with pytest.raises(ValueError, match="unknown task"):
        OnlinePerformance("ranking")  # type: ignore[arg-type]
    perf = OnlinePerformance("regression", FADING, detector="adwin", delta=0.002)
    alarms = [i for i, e in enumerate(regression_errors(N)) if perf.update(None, e)]
    metrics = perf.get()
    assert metrics["mae_ew"] == pytest.approx(3 * math.sqrt(2 / math.pi), rel=0.1)
    assert metrics["rmse_ew"] == pytest.approx(3.0, rel=0.1)
    assert alarms and DROP_AT <= alarms[0] < DROP_AT + 200
    assert perf.update(None, math.inf) is False and perf.get()["n"] == N


def test_pickle_round_trip_continues_identically() -> None:
    stream = accuracy_stream(11)[DROP_AT - 1500 : DROP_AT + 1500]  # KSWIN is slow: a short stream
    for detector in ("adwin", "page_hinkley", "kswin", "ddm"):
        straight = OnlinePerformance("classification", FADING, detector=detector)
        resumed = OnlinePerformance("classification", FADING, detector=detector)
        a = [straight.update(c, None) for c in stream]
        b = [resumed.update(c, None) for c in stream[:1500]]
        resumed = pickle.loads(pickle.dumps(resumed))
        b += [resumed.update(c, None) for c in stream[1500:]]
        assert a == b and straight.get() == resumed.get()
        assert straight.get()["alarms_total"] == sum(a)


def test_interval_metrics_and_empty_state() -> None:
    assert IntervalMetrics().get() == {"n": 0, "accuracy": None, "mae": None, "rmse": None}
    assert RecencyWeightedMean(0.5).get() is None
    with pytest.raises(ValueError):
        RecencyWeightedMean(1.0)
    first = OnlinePerformance("classification")
    assert first.get() == {"n": 0, "alarms_total": 0, "accuracy_ew": None}
    assert first.update(None, 0.3) is False


def test_detectors_are_imported_at_first_need_or_when_preloaded() -> None:
    # (a library user without outcomes never pays river.drift's ~1 CPU-s; a worker preloads it)
    code = ("import sys\n"
            "from driftline.operators.performance import preload_detectors\n"
            "assert 'river.drift' not in sys.modules\n"
            "preload_detectors()\n"
            "assert 'river.drift' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
