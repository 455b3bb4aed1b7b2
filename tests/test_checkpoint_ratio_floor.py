"""worker.checkpoint_delta_ratio starts a base only in a chain of more than RATIO_FLOOR_BYTES.

A stage-1 delta carries the shard's windows and detectors whole (~2 MB with a training profile),
so a shard with few pending predictions writes deltas larger than its base, and a state growing
from empty passes its base at once: with the ratio alone every other checkpoint was a base
(bench row (1): ~30 % of the worker's CPU).
"""

from __future__ import annotations

from driftline.streams.runner import RATIO_FLOOR_BYTES, ChainLength, RestoreCosts

MB = 2**20


def _deltas_before_a_base(base_bytes: int, delta_bytes: int, ratio: float = 1.0,
                          restore_target_s: float = 60.0) -> int:
    """Deltas of ``delta_bytes`` written after a base of ``base_bytes`` until a base is due."""
    chain = ChainLength(base_bytes=base_bytes)
    costs = RestoreCosts()
    while not chain.base_due(720, ratio, restore_target_s, costs, next_changed=100,
                             elapsed_s=5.0 * chain.deltas):
        chain.deltas += 1
        chain.delta_bytes += delta_bytes
        chain.changed += 100
        assert chain.deltas < 720, "the count bounds every chain"
    return chain.deltas


def test_small_chains_keep_writing_deltas_past_the_ratio() -> None:
    # a 1 MB base and 2 MB deltas: the ratio alone wanted a base after the first delta
    deltas = _deltas_before_a_base(1 * MB, 2 * MB)
    assert deltas > 1
    assert 1 * MB + deltas * 2 * MB > RATIO_FLOOR_BYTES >= 1 * MB + (deltas - 1) * 2 * MB


def test_without_a_restore_target_the_floor_still_ends_the_chain() -> None:
    deltas = _deltas_before_a_base(1 * MB, 2 * MB, restore_target_s=0.0)
    assert 1 * MB + deltas * 2 * MB > RATIO_FLOOR_BYTES >= 1 * MB + (deltas - 1) * 2 * MB


def test_the_ratio_bounds_chains_over_the_floor_as_before() -> None:
    assert RATIO_FLOOR_BYTES < 100 * MB
    assert _deltas_before_a_base(100 * MB, 10 * MB) == 11  # past 1.0 x the base
    assert _deltas_before_a_base(100 * MB, 10 * MB, ratio=0.5) == 6
