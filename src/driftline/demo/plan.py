"""What the demo simulates and the settings every demo process runs with.

Simulated event time runs ``speed`` times faster than wall time, so a two-minute demo covers an
hour of traffic: sixty 60-second windows, half of them after the drift is injected. The event
times end at the demo's start (``start = now - simulated duration``), so they are recent enough
for ClickHouse's TTLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from driftline.simulate import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec, Scenario

WINDOW_S = 60
DRIFTING_MODEL = "churn"
DEFAULT_DURATION_S = 120.0
FAST_DURATION_S = 40.0


@dataclass(frozen=True)
class Pace:
    """Wall seconds of traffic, simulated seconds per wall second, requests per simulated second."""

    duration_s: float
    speed: float
    rate: float


def pace(duration_s: float | None, fast: bool) -> Pace:
    """The default run (about an hour of traffic in two minutes) or the fast one for tests."""
    if fast:
        return Pace(duration_s or FAST_DURATION_S, speed=45.0, rate=12.0)
    return Pace(duration_s or DEFAULT_DURATION_S, speed=30.0, rate=15.0)


@dataclass(frozen=True)
class DemoPlan:
    scenario: Scenario
    duration_s: float  # wall seconds of traffic
    injection_ms: int  # event time at which the covariate and concept drift start
    env: dict[str, str]  # DRIFTLINE_* settings shared by every demo process

    @property
    def simulated_s(self) -> float:
        return self.scenario.duration_s


def _simulated_seconds(p: Pace) -> int:
    """Simulated duration, a whole number of 2-window periods so the injection is window-aligned."""
    period = 2 * WINDOW_S
    return max(4, round(p.duration_s * p.speed / period)) * period


def demo_scenario(p: Pace, now_ms: int, seed: int = 7) -> tuple[Scenario, int]:
    """Three models: ``churn`` (champion 1 + challenger 2, 20 features) gets covariate drift on
    x3, x7 and c1 and a concept drift halfway; ``fraud`` and ``credit`` stay clean."""
    sim_s = _simulated_seconds(p)
    half = sim_s / 2
    start = now_ms - sim_s * 1000
    start -= start % (WINDOW_S * 1000)
    churn = ModelSpec(
        model_id=DRIFTING_MODEL, traffic_share=0.5, n_numeric=16, n_categorical=4, accuracy=0.92,
        challenger=True, challenger_accuracy=0.85, score="positive",
        covariate_drift=[
            CovariateDrift(feature="x3", at_s=half, magnitude=1.0),
            CovariateDrift(feature="x7", at_s=half, magnitude=1.2, ramp_s=3 * WINDOW_S),
            CovariateDrift(feature="c1", at_s=half, magnitude=0.5),
        ],
        concept_drift=ConceptDrift(at_s=half, magnitude=0.4),
    )
    fraud = ModelSpec(model_id="fraud", traffic_share=0.3, n_numeric=8, n_categorical=2, accuracy=0.95,
                      score="positive")
    credit = ModelSpec(model_id="credit", traffic_share=0.2, source="agrawal", accuracy=0.9, score="positive")
    scenario = Scenario(
        seed=seed, start=start, duration_s=sim_s, rate=p.rate, speed=p.speed,
        models=[churn, fraud, credit],
        label_delay=LabelDelay(median_s=30, sigma=0.8, max_s=240),
        label_coverage=0.9, malformed_rate=0.01,
    )
    return scenario, start + int(half * 1000)


def demo_env(home: Path, bootstrap: str, web_port: int) -> dict[str, str]:
    """Settings of the demo run, as DRIFTLINE_* variables for the children (and this process)."""
    home = home.resolve()
    return {
        "DRIFTLINE_HOME": str(home),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{home / 'clickhouse'}",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_TOPICS_PARTITIONS": "2",
        "DRIFTLINE_WINDOWS_SIZES_S": f"[{WINDOW_S}, {5 * WINDOW_S}]",
        "DRIFTLINE_WINDOWS_ALLOWED_LATENESS_S": "10",
        "DRIFTLINE_WINDOWS_METRICS_INTERVAL_S": str(WINDOW_S),
        "DRIFTLINE_JOIN_LABEL_HORIZON_S": "600",
        "DRIFTLINE_TRIGGERS_PERFORMANCE_DURATION_S": str(5 * WINDOW_S),
        "DRIFTLINE_TRIGGERS_ALARM_PERSIST_S": str(2 * WINDOW_S),
        "DRIFTLINE_TRIGGERS_COOLDOWN_S": "1800",
        "DRIFTLINE_RETRAIN_ARTIFACTS_DIR": str(home / "artifacts"),
        "DRIFTLINE_RETRAIN_LOGS_DIR": str(home / "retrain-logs"),
        "DRIFTLINE_RETRAIN_BACKOFF_S": "1",
        "DRIFTLINE_WORKER_WEB_HOST": "127.0.0.1",
        "DRIFTLINE_WORKER_WEB_PORT": str(web_port),
        "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "2",
        # champion and challenger score the same requests; the simulator's ids end in -v<version>
        "DRIFTLINE_COMPARISON_PAIRS": orjson.dumps(
            [{"model_id": DRIFTING_MODEL, "champion": "1", "challenger": "2", "mode": "shadow"}]).decode(),
        "DRIFTLINE_COMPARISON_REQUEST_SEPARATOR": "-v",
    }


def build_plan(home: Path, bootstrap: str, web_port: int, p: Pace, now_ms: int) -> DemoPlan:
    scenario, injection_ms = demo_scenario(p, now_ms)
    return DemoPlan(scenario, p.duration_s, injection_ms, demo_env(home, bootstrap, web_port))
