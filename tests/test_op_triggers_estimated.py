"""The retrain policy's estimated-performance family (``on_estimated_performance``)."""

from __future__ import annotations

import pickle

from driftline.config import TriggerSettings
from driftline.operators.triggers import RetrainPolicy
from driftline.schemas.events import TriggerReason

MINUTE = 60_000
WINDOW = 5 * MINUTE


def _feed(policy: RetrainPolicy, accuracies: list[float], baseline: float = 0.9) -> list[int]:
    """Indexes of the windows that fired."""
    fired = []
    for i, accuracy in enumerate(accuracies):
        trigger = policy.on_estimated_performance("m", "1", i * WINDOW, (i + 1) * WINDOW, accuracy, baseline,
                                                  {})
        if trigger is not None:
            assert trigger.reason == TriggerReason.PERFORMANCE and trigger.evidence["source"] == "estimated"
            fired.append(i)
    return fired


def test_fires_after_the_duration_then_rearms_only_once_clear() -> None:
    policy = RetrainPolicy(TriggerSettings(performance_duration_s=600, cooldown_s=0), config_hash="h")
    # degraded from window 1: 10 minutes of it at the end of window 2; held while it lasts,
    # re-armed by the clear window 5, fires again once the next drop lasted 10 minutes
    assert _feed(policy, [0.85, 0.7, 0.7, 0.7, 0.7, 0.88, 0.6, 0.6]) == [2, 7]


def test_a_drop_smaller_than_the_margin_never_fires() -> None:
    policy = RetrainPolicy(TriggerSettings(performance_duration_s=0), config_hash="h")
    assert _feed(policy, [0.81, 0.805, 0.82]) == []


def test_the_cooldown_applies() -> None:
    policy = RetrainPolicy(TriggerSettings(performance_duration_s=0, cooldown_s=3600), config_hash="h")
    assert _feed(policy, [0.7, 0.9, 0.7, 0.9, 0.7] + [0.9] * 8 + [0.7]) == [0, 13]


def test_shares_no_state_with_the_label_clock() -> None:
    policy = RetrainPolicy(TriggerSettings(performance_duration_s=0), config_hash="h")
    assert _feed(policy, [0.7]) == [0]
    realized = policy.on_performance("m", "1", WINDOW, 0.7, 0.9, True, False, {})
    assert [t.reason for t in realized] == [TriggerReason.PERFORMANCE]
    assert "source" not in realized[0].evidence  # realized triggers are as before


def test_a_policy_pickled_before_the_family_restores() -> None:
    policy = RetrainPolicy(TriggerSettings(performance_duration_s=0), config_hash="h")
    state = policy.__dict__.copy()
    del state["_estimated"]
    old = RetrainPolicy.__new__(RetrainPolicy)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    assert _feed(restored, [0.7]) == [0]
