"""``worker.compiled_paths``: the compiled C paths turned off for a whole process run their Python
reference alone, with the same results; turned on again, each runs where this install built it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from driftline.config import Settings
from driftline.kafka import records as kafka_records
from driftline.operators import decode_native, drift, ks_native, watch_native
from driftline.operators.compiled_paths import compiled_paths, use_compiled_paths
from driftline.operators.join import native as join_native
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.replay.engine import Replayer
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec
from driftline.store.writer import MemoryRowWriter

BUILT = {"decode": decode_native._decode is not None, "join": join_native._native is not None,
         "ks": ks_native._ks is not None, "watch": watch_native._watch is not None}
OFF = {"decode": False, "join": False, "ks": False, "watch": False}


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    before = (join_native.NATIVE, watch_native.NATIVE, decode_native.NATIVE, ks_native.NATIVE)
    yield
    join_native.NATIVE, watch_native.NATIVE, decode_native.NATIVE, ks_native.NATIVE = before


def test_off_runs_python_and_on_runs_what_was_built() -> None:
    assert use_compiled_paths(False) == OFF == compiled_paths()
    assert join_native.NATIVE is None and watch_native.NATIVE is None and decode_native.NATIVE is None
    assert ks_native.NATIVE is None
    assert use_compiled_paths(True) == BUILT == compiled_paths()
    assert join_native.NATIVE is join_native._native and watch_native.NATIVE is watch_native._watch
    assert decode_native.NATIVE is decode_native._decode and ks_native.NATIVE is ks_native._ks


def test_the_setting_reaches_a_replay_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_WORKER_COMPILED_PATHS", "false")
    settings = Settings()
    assert settings.worker.compiled_paths is False
    Replayer(settings, "off", MemoryRowWriter())
    assert compiled_paths() == OFF and not kafka_records.native_fetch()
    Replayer(Settings(worker={"compiled_paths": True}), "on", MemoryRowWriter())
    assert compiled_paths() == BUILT
    assert kafka_records.native_fetch() == (kafka_records._records is not None)


def _rows(settings: Settings, records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    pipeline = InProcessPipeline(settings)
    for i in range(0, len(records), 700):
        pipeline.feed(records[i: i + 700])
    pipeline.finish(max(r.timestamp_ms for r in records) + 7_200_000)
    return {table: rows for table, rows in sorted(pipeline.rows.items())}


def test_off_and_on_give_the_same_rows() -> None:
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        join={"label_horizon_s": 600})
    scenario = Scenario(seed=3, start=1_767_225_600_000, duration_s=1200, rate=8,
                        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=2),
                                ModelSpec(model_id="q", n_numeric=2, n_categorical=1, traffic_share=0.2)],
                        label_delay=LabelDelay(median_s=20, max_s=300))
    records = logged_records(generate(scenario), settings)
    use_compiled_paths(False)
    drift.clear_pvalue_cache()  # each run computes its own KS p-values
    python = _rows(settings, records)
    use_compiled_paths(True)
    drift.clear_pvalue_cache()
    ks_calls = _CountedCalls(ks_native.NATIVE)
    if ks_native.NATIVE is not None:  # (an install without the extension compares Python to Python)
        ks_native.NATIVE = ks_calls
    compiled = _rows(settings, records)
    drift.clear_pvalue_cache()
    assert python["outcomes"] and python["feature_windows"]
    tested = [row for row in python["drift_scores"] if row["ks_pvalue"] is not None]
    assert tested  # windows whose KS p-values the C computes when on
    assert ks_calls.made or not BUILT["ks"]
    # the same rows, but the KS p-values: scipy's within 1e-11 (the C adds its sums in index order)
    assert _p_values_apart(compiled) == _p_values_apart(python)
    for on, off in zip(compiled["drift_scores"], python["drift_scores"], strict=True):
        assert (on["ks_pvalue"] is None) == (off["ks_pvalue"] is None)
        assert on["ks_pvalue"] is None or on["ks_pvalue"] == pytest.approx(off["ks_pvalue"], rel=1e-11)


class _CountedCalls:
    """An extension module whose function calls are counted (``made``)."""

    def __init__(self, module: Any) -> None:
        self.module, self.made = module, 0

    def __getattr__(self, name: str) -> Any:
        function = getattr(self.module, name)

        def counted(*args: Any) -> Any:
            self.made += 1
            return function(*args)

        return counted


def _p_values_apart(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {table: [{**row, "ks_pvalue": None} if table == "drift_scores" else row for row in made]
            for table, made in rows.items()}
