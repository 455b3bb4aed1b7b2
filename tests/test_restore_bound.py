"""When a stage-1 chain starts a new base: the restore-time bound (``worker.restore_target_s``)
beside the delta count and byte ratio it sits under (``docs/state.md``)."""

from __future__ import annotations

import pytest

from driftline.config import Settings
from driftline.streams.runner import BASE_TIME_SHARE, ChainLength, RestoreCosts, RestoreSample

GB = 1_000_000_000


def _grow(chain: ChainLength, costs: RestoreCosts, target_s: float, changed: int, delta_bytes: int,
          interval_s: float, ratio: float = 1.0, limit: int = 10_000) -> int:
    """Deltas of ``changed`` records every ``interval_s`` until a base is due; how many were written."""
    for written in range(limit):
        if chain.base_due(720_000, ratio, target_s, costs, changed, elapsed_s=written * interval_s):
            return written
        chain.deltas += 1
        chain.delta_bytes += delta_bytes
        chain.changed += changed
    return limit


def test_the_setting_defaults_to_a_minute() -> None:
    assert Settings().worker.restore_target_s == 60


def test_a_base_comes_before_the_estimated_restore_passes_the_target() -> None:
    costs = RestoreCosts(base_s_per_mb=0.002, change_s=5e-6, read_mb_per_s=200.0)
    chain = ChainLength(base_bytes=2 * GB)
    deltas = _grow(chain, costs, 60.0, changed=50_000, delta_bytes=6_600_000, interval_s=5.0)
    assert 0 < deltas < 720
    assert chain.restore_seconds(costs) <= 60.0 < chain.restore_seconds(costs, 50_000)


def test_slower_measured_costs_mean_more_frequent_bases() -> None:
    fast = RestoreCosts(base_s_per_mb=0.002, change_s=5e-6, read_mb_per_s=200.0)
    slow = fast.measured(RestoreSample(270_000_000, 270 * 2 * fast.base_s_per_mb, 1_650_000,
                                       1_650_000 * 2 * fast.change_s))
    assert slow.change_s == pytest.approx(2 * fast.change_s)
    assert slow.base_s_per_mb == pytest.approx(2 * fast.base_s_per_mb)
    runs = [_grow(ChainLength(base_bytes=GB), costs, 60.0, 50_000, 6_600_000, 5.0) for costs in (fast, slow)]
    assert runs[1] < runs[0]


def test_no_target_leaves_the_ratio_and_count_in_charge() -> None:
    costs = RestoreCosts()
    chain = ChainLength(base_bytes=10 * GB)  # a restore of the base alone is over any target
    assert _grow(chain, costs, 0.0, 50_000, 10_000_000, 5.0) == 1001  # the ratio: past 10 GB of deltas
    chain = ChainLength(base_bytes=GB)
    assert not chain.base_due(720, 1.0, 0.0, costs, 10**9)
    chain.deltas = 720
    assert chain.base_due(720, 1.0, 60.0, costs, 0)  # the count still bounds a chain under the target


def test_the_ratio_stays_an_upper_bound_under_a_generous_target() -> None:
    chain = ChainLength(base_bytes=100_000_000)
    assert _grow(chain, RestoreCosts(), 3600.0, 1000, 10_000_000, 5.0, ratio=0.5) == 6


def test_a_base_over_the_target_alone_is_not_rewritten_for_nothing() -> None:
    chain = ChainLength(base_bytes=2 * GB, deltas=10, delta_bytes=66_000_000, changed=500_000)
    assert not chain.base_due(720, 1.0, 60.0, RestoreCosts(), next_changed=50_000)  # ~116 s alone
    assert chain.base_due(720, 1.0, 60.0, RestoreCosts(read_mb_per_s=200.0), next_changed=5_000_000)


def test_bases_stall_the_worker_at_most_their_share_of_the_time() -> None:
    costs = RestoreCosts(read_mb_per_s=100.0)
    chain = ChainLength(base_bytes=1_500_000_000, base_hold_s=60.0)  # ~27 s alone, ~60 deltas to 60 s
    deltas = _grow(chain, costs, 60.0, 50_000, 6_600_000, interval_s=5.0)
    assert deltas * 5.0 >= 60.0 / BASE_TIME_SHARE
    assert chain.restore_seconds(costs) > 60.0  # the estimate says the target is missed


def test_costs_recalibrate_from_large_restores_and_reads_only() -> None:
    costs = RestoreCosts()
    assert costs.measured(RestoreSample(1_000_000, 0.5, 100, 0.5)) == costs
    assert costs.read(bytes_read=10_000_000, seconds=1.0) == costs
    faster = costs.measured(RestoreSample(GB, 1000 * costs.base_s_per_mb / 4, 2_000_000, 0.0))
    assert faster.base_s_per_mb == pytest.approx(costs.base_s_per_mb / 4)
    assert faster.change_s == costs.change_s  # no delta CPU measured: the default stands
    slow = costs.measured(RestoreSample(0, 0.0, 50_000, 50_000 * 20e-6))
    assert slow.change_s == pytest.approx(20e-6) and slow.base_s_per_mb == costs.base_s_per_mb
    assert faster.read(bytes_read=GB, seconds=4.0).read_mb_per_s == pytest.approx(250.0)
