"""A worker's start-up imports only what starting needs: the costly modules wait for their first use.

scipy.stats (~1 CPU-s), river.drift (which brings scikit-learn's and its datasets' imports where they
are installed) and pandas are imported by the statistic, detector or DataFrame that needs them, so a
worker restarted after a crash or a rebalance is ready ~1.6 CPU-s sooner (bench/bench_worker_startup.py).
An edit that imports one of them at module level again fails here.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

LAZY = ("scipy.stats", "river.drift", "sklearn", "pandas")
"""Modules a worker's start-up must not import."""

WORKER_START = ("driftline.cli.main", "driftline.cli.worker", "driftline.streams.app",
                "driftline.pipeline.model")
"""The entry point, the worker command and what it imports before its first poll (the stages' factories)."""


def test_a_worker_start_up_imports_none_of_the_cold_modules() -> None:
    code = (f"import sys\nimport {', '.join(WORKER_START)}\n"
            f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    assert proc.stdout.split() == [], f"imported at start-up: {proc.stdout.strip()}"


def test_the_lazy_paths_still_reach_their_modules() -> None:
    """The functions that import on first use work (each is checked against scipy or River elsewhere)."""
    from driftline.operators.drift import _kstwo_sf
    from driftline.operators.outliers import outlier_window
    from driftline.operators.performance import make_detector

    assert type(make_detector("adwin", 0.002)).__name__ == "ADWIN"
    assert outlier_window(10_000, 30, 0.001).significant
    assert 0.0 < _kstwo_sf(0.05, 2000) < 1.0  # kolmogn's branch (not Pomeranz's)


def test_pomeranz_scaling_constants_are_scipys() -> None:
    """drift.py keeps its own copies of scipy.stats._ksstats' constants (importing it imports scipy.stats)."""
    from scipy.stats import _ksstats

    from driftline.operators import drift

    for name in ("_E128", "_EP128", "_EM128"):
        ours, theirs = getattr(drift, name), getattr(_ksstats, name)
        assert type(ours) is type(theirs) and ours == theirs, name
    assert drift._EP128.dtype == np.longdouble


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    return proc.stdout.strip()


def test_the_detectors_import_without_rivers_example_data_sets() -> None:
    """river.drift imports its example data sets, and through them scikit-learn, pandas and scipy.io
    (~0.8 CPU-s): driftline.operators.river_drift defers them, so a worker's preload and a stage-2
    detector pay only for the detectors."""
    imported = _run(
        "import sys\n"
        "from driftline.operators.performance import make_detector, preload_detectors\n"
        "preload_detectors()\n"
        "names = ('adwin', 'page_hinkley', 'kswin', 'ddm')\n"
        "kinds = [type(make_detector(name, 0.005)).__name__ for name in names]\n"
        "assert kinds == ['ADWIN', 'PageHinkley', 'KSWIN', 'DDM'], kinds\n"
        "cold = ('sklearn', 'pandas', 'river.datasets', 'river.stream')\n"
        "print(' '.join(m for m in cold if m in sys.modules))")
    assert imported == "", f"imported with the detectors: {imported}"


def test_rivers_data_sets_read_as_before_once_deferred() -> None:
    out = _run(
        "import sys\n"
        "from driftline.operators.river_drift import drift\n"
        "drift()\n"
        "import river.drift.datasets as stand_in\n"
        "first = stand_in.AirlinePassengers\n"  # the first read imports the real subpackage
        "from river.drift.datasets import AirlinePassengers\n"
        "import river.drift\n"
        "real = sys.modules['river.drift.datasets']\n"
        "print(first is AirlinePassengers is river.drift.datasets.AirlinePassengers,\n"
        "      real is river.drift.datasets, type(real).__name__, 'river.datasets' in sys.modules)")
    assert out == "True True module True"


def test_an_earlier_plain_import_of_river_drift_is_used_as_it_is() -> None:
    out = _run(
        "import sys\n"
        "import river.drift\n"
        "from driftline.operators.river_drift import drift\n"
        "print(drift() is river.drift, type(sys.modules['river.drift.datasets']).__name__)")
    assert out == "True module"


def test_a_detector_made_while_the_preload_imports_waits_for_it() -> None:
    """A worker's preload thread imports river.drift while the event loop may make its first
    detector: the module is then in sys.modules but not initialised, and make_detector must wait
    for it (it once read the half-made module: AttributeError, in 5 of 5 runs of this test)."""
    out = _run(
        "import sys, threading, time\n"
        "from driftline.operators.performance import make_detector, preload_detectors\n"
        "thread = threading.Thread(target=preload_detectors)\n"
        "thread.start()\n"
        "deadline = time.monotonic() + 60\n"  # a preload that never imports it fails here, not at the timeout
        "while 'river.drift' not in sys.modules:\n"
        "    assert time.monotonic() < deadline and thread.is_alive(), 'the preload never imported it'\n"
        "    time.sleep(0.0005)\n"
        "print(type(make_detector('adwin', 0.002)).__name__)\n"
        "thread.join()")
    assert out == "ADWIN"
