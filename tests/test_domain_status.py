"""Why a window has no domain classifier AUC (`multivariate_drift.domain_status`).

A model at two predictions a second fills a 60 s window with ~120 rows, under the 200 sampled
rows the classifier needs: with the default (the policy's, smallest, window size) it never gets
an AUC, and every row says so; `multivariate.domain_window_s = 300` gives it one on the 300 s
windows. A size no window has is refused at start instead of leaving the AUC (or the retrain
policy) silently without input.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import ConfigError, Settings, load_settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate.traffic import SimEvent
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

pytest.importorskip("sklearn")

START = 1_767_225_600_000
DURATION_S = 1200
RATE = 2  # predictions per second: ~120 per 60 s window
FEATURES = ("a", "b", "c")


def _settings(**multivariate: int) -> Settings:
    return Settings(windows={"sizes_s": [60, 300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                    multivariate=multivariate)


def _rows(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    return {"a": a, "b": 0.7 * a + 0.7 * rng.normal(size=n), "c": rng.normal(size=n)}


@pytest.fixture(scope="module")
def inputs() -> tuple[list[bytes], list[SimEvent]]:
    rng = np.random.default_rng(21)
    reference = {k: v.tolist() for k, v in _rows(rng, 5_000).items()}
    profile = build_profile("low", "1", reference, label_column=None, prediction_column=None, bins=10,
                            top_k=20, created_at_ms=0, multivariate=multivariate_section(reference))
    n = DURATION_S * RATE
    times = START + np.sort(rng.integers(0, DURATION_S * 1000, n))
    values = _rows(rng, n)
    events = []
    for i, t in enumerate(times.tolist()):
        pid = f"low-{i}"
        body = {"prediction_id": pid, "model_id": "low", "timestamp": t,
                "features": {k: float(v[i]) for k, v in values.items()}, "prediction": {"label": "x"}}
        events.append(SimEvent("predictions", pid.encode(), orjson.dumps(body), t))
    return [profile.model_dump_json().encode()], events


def _run(settings: Settings, inputs: tuple[list[bytes], list[SimEvent]]) -> list[dict[str, Any]]:
    profiles, events = inputs
    pipeline = InProcessPipeline(settings, profiles=profiles)
    stream: list[RawRecord] = logged_records(events, settings)
    for i in range(0, len(stream), 500):
        pipeline.feed(stream[i : i + 500])
    pipeline.finish(START + DURATION_S * 1000 + 60_000)
    return pipeline.rows["multivariate_drift"]


def _statuses(rows: list[dict[str, Any]]) -> Counter[tuple[int, str]]:
    return Counter((r["window_size_s"], r["domain_status"]) for r in rows)


def test_low_traffic_windows_say_too_few_rows(inputs: tuple[list[bytes], list[SimEvent]]) -> None:
    rows = _run(_settings(), inputs)
    assert _statuses(rows) == {(60, "too_few_rows"): DURATION_S // 60,
                               (300, "other_window_size"): DURATION_S // 300}
    assert all(r["auc"] is None and r["n_sample"] == 0 for r in rows)
    assert all(r["n_events"] < 200 for r in rows if r["window_size_s"] == 60)


def test_a_larger_domain_window_gives_the_model_an_auc(inputs: tuple[list[bytes], list[SimEvent]],
                                                       clickhouse_url: str, tmp_path: Path) -> None:
    rows = _run(_settings(domain_window_s=300, domain_every=2), inputs)
    assert _statuses(rows) == {(60, "other_window_size"): DURATION_S // 60, (300, "scored"): 2,
                               (300, "domain_every"): 2}
    for r in rows:
        scored = r["domain_status"] == "scored"
        assert (r["auc"] is not None) == scored and (r["n_sample"] >= 200) == scored, r
        if scored:
            assert (r["window_start"] // 300_000) % 2 == 0 and not r["drifted"], r
    # the column BI reads
    settings = Settings(home=tmp_path / "home",
                        clickhouse={"url": clickhouse_url, "database": f"dl_ds_{uuid.uuid4().hex[:8]}",
                                    "ttl_days": 3_650, "aggregate_ttl_days": 3_650})
    client = connect(settings)
    try:
        migrate(client, settings)
        writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
        writer.write("multivariate_drift", rows)
        writer.flush()
        stored = client.query(f"SELECT domain_status, count(), countIf(auc IS NOT NULL) FROM "
                              f"{database_name(settings)}.multivariate_drift FINAL GROUP BY domain_status "
                              "ORDER BY domain_status").result_rows
        assert stored == [("domain_every", 2, 0), ("other_window_size", DURATION_S // 60, 0),
                          ("scored", 2, 2)]
    finally:
        client.close()


@pytest.mark.parametrize("section", ["multivariate", "triggers"])
def test_a_window_size_no_window_has_is_refused(section: str) -> None:
    field = "domain_window_s" if section == "multivariate" else "window_size_s"
    refused = rf"{section}.{field} = 600 is not one of windows.sizes_s \[300, 3600\]"
    with pytest.raises(ConfigError, match=refused):
        load_settings(**{section: {field: 600}})
    assert getattr(getattr(load_settings(**{section: {field: 3600}}), section), field) == 3600
