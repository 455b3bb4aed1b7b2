"""bench/common.py's scrape_wait: throughput benches scrape a worker's /metrics often only where the
timed interval may begin or end, so their own scrapes do not load the worker they time."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def common(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("common")


def test_its_examples_hold(common: ModuleType) -> None:
    failures, tried = doctest.testmod(common, verbose=False)
    assert tried >= 3 and failures == 0


def test_often_before_any_progress_and_near_the_end_sparse_between(common: ModuleType) -> None:
    near, far = common.SCRAPE_NEAR_S, common.SCRAPE_FAR_S
    assert common.scrape_wait([(0.0, 0.0, 1_000.0)], 0.0) == near
    assert common.scrape_wait([(0.0, 0.0, 1_000.0)], 5.0) == near  # started, nothing consumed yet
    assert common.scrape_wait([(0.0, 100.0, 1_000.0)], 1.0) == far  # 9 s left at 100/s
    assert common.scrape_wait([(0.0, 970.0, 1_000.0)], 9.7) == near  # 0.3 s left
    # a third of what is left between the two: a rate that triples meanwhile still ends in time
    assert common.scrape_wait([(0.0, 850.0, 1_000.0)], 8.5) == pytest.approx(0.5)


def test_the_slowest_count_sets_the_wait_and_finished_ones_do_not(common: ModuleType) -> None:
    predictions_done = (0.0, 1_000.0, 1_000.0)
    labels_behind = (0.0, 400.0, 1_000.0)  # 6 s left at 100/s
    assert common.scrape_wait([predictions_done, labels_behind], 4.0) == common.SCRAPE_FAR_S
    labels_close = (0.0, 980.0, 1_000.0)
    assert common.scrape_wait([predictions_done, labels_close], 9.8) == common.SCRAPE_NEAR_S
    assert common.scrape_wait([predictions_done], 10.0) == common.SCRAPE_NEAR_S  # all done: max(0)/3


def test_a_bench_run_scrapes_far_less_often_and_sees_its_end_as_promptly(common: ModuleType) -> None:
    """Simulated: 20 s at a steady 5,000/s after 2 s of start-up, scraped as the benches do."""
    total, rate, startup = 100_000.0, 5_000.0, 2.0
    t, scrapes, first_seen = 0.0, 0, None
    while True:
        scrapes += 1
        done = min(total, max(0.0, (t - startup) * rate))
        if done >= total:
            break
        if first_seen is None and done > 0:
            first_seen = (t, done)
        wait = (common.SCRAPE_NEAR_S if first_seen is None
                else common.scrape_wait([(first_seen[1], done, total)], t - first_seen[0]))
        t += wait
    end = startup + total / rate
    assert t - end <= common.SCRAPE_NEAR_S + 1e-9  # the end seen as promptly as before
    assert scrapes < 0.25 * (end / common.SCRAPE_NEAR_S)
