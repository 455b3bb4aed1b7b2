"""Demo data for the drift report and the Grafana dashboard: a short simulated run of the real pipeline.

The traffic comes from ``driftline.simulate`` (seeded), goes through the same stage processors the
worker runs (``InProcessPipeline``, no broker) and lands in ClickHouse through
``ClickHouseRowWriter``, so every table holds what a live pipeline would have written:

- model ``churn``, champion version ``1`` and challenger version ``2`` scoring the same requests
  (compared as a shadow pair, by request id: the simulator's prediction ids end in ``-v<version>``);
- feature ``x1`` shifts at minute 20 together with a concept drift (accuracy drops, the detector
  alarms, the retrain policy fires);
- 1 % malformed messages (dead letters) and 90 % label coverage (expired predictions);
- training profiles with the multivariate section and the CBPE calibration (the versions send
  positive-class scores), so the multivariate tables and ``estimated_vs_realized`` have rows.

Usage: ``seed_clickhouse(Settings())`` or ``python notebooks/seed_data.py`` (uses DRIFTLINE_* env).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from driftline.config import ComparisonPair, Settings
from driftline.demo.training import training_profiles
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.simulate import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec, Scenario, generate
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

DAY_MS = 86_400_000
MODEL_ID = "churn"
SHIFT_S = 1200
DRIFTED_FEATURE = "x1"
WINDOW_SIZES_S = [300, 900]


def default_start_ms() -> int:
    """Midnight UTC of yesterday: recent enough for every TTL, aligned to every window size."""
    now_ms = time.time_ns() // 1_000_000
    return now_ms - now_ms % DAY_MS - DAY_MS


def demo_scenario(start_ms: int, duration_s: float = 2400, rate: float = 8) -> Scenario:
    return Scenario(
        seed=11,
        start=start_ms,
        duration_s=duration_s,
        rate=rate,
        models=[
            ModelSpec(
                model_id=MODEL_ID, n_numeric=4, n_categorical=1, accuracy=0.9, challenger=True,
                score="positive",
                covariate_drift=[CovariateDrift(feature=DRIFTED_FEATURE, at_s=SHIFT_S, magnitude=1.5)],
                concept_drift=ConceptDrift(at_s=SHIFT_S, magnitude=0.5),
            )
        ],
        label_delay=LabelDelay(median_s=30, max_s=300),
        label_coverage=0.9,
        malformed_rate=0.01,
    )


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with windows, join and trigger sizes that suit a 40-minute run."""
    return settings.model_copy(
        update={
            "windows": settings.windows.model_copy(
                update={"sizes_s": WINDOW_SIZES_S, "allowed_lateness_s": 30, "metrics_interval_s": 300}
            ),
            "join": settings.join.model_copy(update={"label_horizon_s": 600}),
            "triggers": settings.triggers.model_copy(update={"drift_k": 2, "drift_n": 3}),
            "comparison": settings.comparison.model_copy(update={
                "pairs": [ComparisonPair(model_id=MODEL_ID, champion="1", challenger="2", mode="shadow")],
                "request_separator": "-v",
            }),
        }
    )


def simulate_rows(settings: Settings, scenario: Scenario) -> dict[str, list[dict[str, Any]]]:
    """Rows per table of the scenario run through the in-process pipeline."""
    topics = settings.topics
    offsets: Counter[tuple[str, int]] = Counter()
    records = []
    for event in generate(scenario):
        topic = topics.labels if event.kind == "labels" else topics.predictions
        partition = partition_for_key(event.key, topics.partitions)
        records.append(RawRecord(topic, partition, offsets[(topic, partition)], event.timestamp_ms,
                                 event.key, event.value))
        offsets[(topic, partition)] += 1
    profiles = training_profiles(scenario, settings.drift.bins, settings.drift.top_k, scenario.start_ms())
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    for i in range(0, len(records), 2000):
        pipeline.feed(records[i : i + 2000])
    return dict(pipeline.rows)


def write_rows(settings: Settings, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Migrate the configured database and insert ``rows``; returns the row count per table."""
    client = connect(settings)
    writer = ClickHouseRowWriter(client, database_name(settings))
    try:
        migrate(client, settings)
        for table, table_rows in rows.items():
            writer.write(table, table_rows)
    finally:
        writer.close()
    return {table: len(table_rows) for table, table_rows in rows.items()}


def seed_clickhouse(settings: Settings, start_ms: int | None = None) -> dict[str, int]:
    """Simulate the demo scenario and write its rows into ClickHouse (per-table counts)."""
    scenario = demo_scenario(default_start_ms() if start_ms is None else start_ms)
    return write_rows(settings, simulate_rows(demo_settings(settings), scenario))


if __name__ == "__main__":
    from driftline.config import load_settings_or_exit

    for name, count in sorted(seed_clickhouse(load_settings_or_exit()).items()):
        print(f"{name}: {count} rows")
