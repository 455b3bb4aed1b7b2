"""What the join reports besides outcomes: its counters, duplicates, orphan labels and the
predictions that expired or were evicted unlabeled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COUNTER_NAMES = (
    "duplicate_predictions",
    "duplicate_labels",
    "orphan_labels",
    "labels_beyond_horizon",
    "labels_before_prediction",
    "evicted_pending",
    "evicted_held",
)


@dataclass(slots=True)
class OrphanLabel:
    """A label no prediction joined (``reason`` 'no_prediction'), one whose prediction the join
    evicted at its ``max_pending`` bound ('prediction_evicted'), or one dropped to keep the held
    labels under their bound ('evicted'). ``model_id`` is the one the label names, '' if none."""

    prediction_id: str
    model_id: str
    label_time: int
    reason: str
    source_partition: int = -1  # the label's record, where its source has one (-1: unknown)
    source_offset: int = -1


def _record_position(source: Any) -> tuple[int, int]:
    """(partition, offset) of a source record (a Kafka record), (-1, -1) for anything else."""
    partition, offset = getattr(source, "partition", -1), getattr(source, "offset", -1)
    return (partition, offset) if isinstance(partition, int) and isinstance(offset, int) else (-1, -1)


@dataclass(slots=True)
class Duplicate:
    """A prediction or label whose id (and interval) was taken already; the first one stays.

    ``exact``: the same payload as the first (a re-send); else a conflict. ``model_id``,
    ``model_version`` and ``segment`` are the accepted prediction's. ``source`` is what the caller
    passed along with the duplicate event (e.g. its Kafka record), for its dead letter.
    """

    kind: str  # 'prediction' | 'label'
    prediction_id: str
    event_time: int
    exact: bool
    first_digest: bytes
    digest: bytes
    model_id: str
    model_version: str
    segment: str
    source: Any


@dataclass(slots=True)
class ExpiredPrediction:
    """A prediction that will get no label (bucketed at ``expired_at``): its horizon passed
    (``reason`` 'horizon') or it was dropped at the ``max_pending`` bound ('evicted')."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    expired_at: int
    reason: str = "horizon"
