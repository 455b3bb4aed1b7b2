"""(a) Repeated SIGKILL of the worker at seeded random points: tables equal the clean run's.

Kill points mix "after N predictions consumed by this incarnation" (mid-batch, mid-checkpoint)
with "T seconds after start" (during start-up, group join, checkpoint restore). 3 kills in CI, 10
in the soak run.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from harness import RssSampler, Stream, Worker, assert_same_tables, dump_tables, run_env, run_to_idle, workers

pytestmark = pytest.mark.integration


def _kill_repeatedly(
    stream: Stream, root: Path, clean: dict[str, list[list[str]]], kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    run = f"kill{kills}"
    env = run_env(stream, run, root)
    log, home = root / f"{run}.log", root / run / "home"
    n = stream.counts["predictions"]
    points = []
    with workers() as started, RssSampler() as rss:
        for _ in range(kills):
            worker = Worker(env, log, home=home, idle=None)
            started.append(worker)
            rss.watch(worker)
            t0 = time.monotonic()
            if rng.random() < 0.3:
                at = rng.uniform(0.3, 6.0)
                points.append(f"{at:.1f}s")
                while time.monotonic() - t0 < at:
                    assert worker.alive(), worker.tail()
                    time.sleep(0.05)
            else:
                records = rng.uniform(0.02, 0.6 / kills) * n
                points.append(f"{records:.0f} predictions")
                # Fallback after 90 s: a kill at whatever point it reached is still a kill.
                while worker.predictions_in() < records and time.monotonic() - t0 < 90:
                    assert worker.alive(), worker.tail()
                    time.sleep(0.05)
            worker.kill()
        run_to_idle(env, log, started, home, rss)
    print(f"kills at {points}; {rss.check()}")
    assert_same_tables(dump_tables(root, run), clean)


def test_three_sigkills_at_random_points(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _kill_repeatedly(fault_stream, fault_root, clean_tables, kills=3, seed=101)


@pytest.mark.soak
def test_ten_sigkills_at_random_points(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _kill_repeatedly(fault_stream, fault_root, clean_tables, kills=10, seed=202)
