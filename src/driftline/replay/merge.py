"""Merging a shard's two input logs into one stream, ordered by record timestamp.

Partition p of the predictions topic and partition p of the labels topic are merged by record
timestamp; ties go to the prediction, and each topic's records keep their offset order (the
merge is stable even where a log's timestamps are not monotonic). Stage 1 does not depend on
this interleaving — the merge only makes a replay read like the live stream did.

>>> def rec(topic, offset, ts): return RawRecord(topic, 0, offset, ts, None, b"")
>>> m = PartitionMerger()
>>> m.push(PREDICTIONS, [rec("p", 0, 10), rec("p", 1, 30)])
>>> m.take()  # labels may still bring records older than 10
[]
>>> m.push(LABELS, [rec("l", 0, 10), rec("l", 1, 20)])
>>> [(r.topic, r.offset) for r in m.take()]
[('p', 0), ('l', 0), ('l', 1)]
>>> m.finish(LABELS)
>>> [(r.topic, r.offset) for r in m.take()]
[('p', 1)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from driftline.operators.validate import RawRecord

PREDICTIONS = 0
LABELS = 1


class PartitionMerger:
    """Streaming two-way merge of one partition's predictions and labels (see module docstring)."""

    def __init__(self) -> None:
        self._buffers: tuple[deque[RawRecord], deque[RawRecord]] = (deque(), deque())
        self._done = [False, False]

    def push(self, side: int, records: Iterable[RawRecord]) -> None:
        """Append records of one side (``PREDICTIONS`` or ``LABELS``), in offset order."""
        self._buffers[side].extend(records)

    def finish(self, side: int) -> None:
        """No more records will come for ``side``."""
        self._done[side] = True

    def buffered(self, side: int) -> int:
        return len(self._buffers[side])

    @property
    def exhausted(self) -> bool:
        return all(self._done) and not any(self._buffers)

    def take(self) -> list[RawRecord]:
        """Every record whose place in the merged order is settled, in that order."""
        preds, labels = self._buffers
        out: list[RawRecord] = []
        while preds and labels:
            source = labels if labels[0].timestamp_ms < preds[0].timestamp_ms else preds
            out.append(source.popleft())
        for side, other in ((PREDICTIONS, LABELS), (LABELS, PREDICTIONS)):
            if self._done[other] and not self._buffers[other]:
                out.extend(self._buffers[side])
                self._buffers[side].clear()
        return out

