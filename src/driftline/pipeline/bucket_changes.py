"""What stage 2's outcome buckets gained since the previous checkpoint, for its deltas.

An open bucket (:class:`~driftline.pipeline.outcomes.Bucket`) only grows until its interval
closes, and then goes whole: outcomes, expiries, evictions and orphan labels are added by id, and
an id written again is a re-send carrying the same figures (stage 1's output depends only on its
log). So a bucket's dicts, insertion-ordered, hold what a delta needs past the lengths the previous
checkpoint saw: :class:`BucketMarks` records those lengths, :meth:`BucketMarks.changes` reads the
tails (each dict skipped up to its mark by ``islice``: ~20-28 ns an entry, ~30-40 ms for a bucket
of 1.5 million UUID-keyed outcomes), and :meth:`BucketChanges.apply`
adds them to the restored buckets and drops the ones closed since. The ``rerouted`` set has no
order: it travels whole when it grew (re-routing is rare).

>>> from driftline.pipeline.outcomes import Bucket
>>> buckets = {("m", "1"): {0: Bucket(outcomes={"a": ("", 1, 0, 1, None)}), 300: Bucket()}}
>>> marks = BucketMarks(buckets)
>>> buckets[("m", "1")][0].outcomes["b"] = ("", 2, 0, 0, None)
>>> del buckets[("m", "1")][300]
>>> buckets[("m", "1")][600] = Bucket(expired={"c": ""})
>>> changes = marks.changes(buckets)
>>> changes.records, sorted(changes.added), changes.closed
(2, [('m', '1', 0), ('m', '1', 600)], [('m', '1', 300)])
>>> restored = {("m", "1"): {0: Bucket(outcomes={"a": ("", 1, 0, 1, None)}), 300: Bucket()}}
>>> changes.apply(restored) == buckets
True
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

from driftline.pipeline.outcomes import Bucket

Buckets = dict[tuple[str, str], dict[int, Bucket]]
BucketKey = tuple[str, str, int]  # model id, version, interval start

_DICTS = ("outcomes", "expired", "orphans", "evicted", "given_up_at")  # grow by insertion only


def _sizes(bucket: Bucket) -> tuple[int, ...]:
    return (*(len(getattr(bucket, name)) for name in _DICTS), len(bucket.rerouted))


@dataclass
class BucketChanges:
    """In a stage-2 delta: each open bucket's entries added since the previous checkpoint (a
    :class:`Bucket` of them; a bucket opened since, whole) and the buckets closed since."""

    added: dict[BucketKey, Bucket] = field(default_factory=dict)
    closed: list[BucketKey] = field(default_factory=list)
    records: int = 0  # entries carried: what a restore applies

    def apply(self, restored: Buckets) -> Buckets:
        """``restored`` (the base's buckets with the earlier deltas') made what the writer's were,
        in place, and returned."""
        for model_id, version, start in self.closed:
            restored.get((model_id, version), {}).pop(start, None)
        for (model_id, version, start), gained in self.added.items():
            by_start = restored.setdefault((model_id, version), {})
            bucket = by_start.get(start)
            if bucket is None:
                by_start[start] = gained
                continue
            for name in _DICTS:
                getattr(bucket, name).update(getattr(gained, name))
            bucket.rerouted |= gained.rerouted
        return restored


class BucketMarks:
    """Every open bucket's sizes at a checkpoint, and its ``id`` (one that is not the same object
    at the next goes whole; an id, not the bucket, so that a bucket closed since is freed with
    its interval, not kept until the next checkpoint: a closed interval never opens again, so no
    other bucket takes its key and id), for the next delta's :meth:`changes`."""

    __slots__ = ("marks",)

    def __init__(self, buckets: Buckets) -> None:
        self.marks: dict[BucketKey, tuple[int, tuple[int, ...]]] = {
            (*model, start): (id(bucket), _sizes(bucket))
            for model, by_start in buckets.items() for start, bucket in by_start.items()}

    def pending(self, buckets: Buckets) -> int:
        """How many entries :meth:`changes` would carry now (without reading them)."""
        count = 0
        marks = self.marks
        for model, by_start in buckets.items():
            for start, bucket in by_start.items():
                mark = marks.get((*model, start))
                sizes = _sizes(bucket)
                if mark is None or mark[0] != id(bucket):
                    count += sum(sizes)
                else:
                    count += sum(now - then for now, then in zip(sizes, mark[1], strict=True))
        return count

    def changes(self, buckets: Buckets) -> BucketChanges:
        """What ``buckets`` gained since these marks, and the marked buckets gone."""
        out = BucketChanges()
        seen: set[BucketKey] = set()
        for model, by_start in buckets.items():
            for start, bucket in by_start.items():
                key = (*model, start)
                seen.add(key)
                mark = self.marks.get(key)
                if mark is None or mark[0] != id(bucket):
                    out.added[key] = bucket
                    out.records += sum(_sizes(bucket))
                    continue
                sizes = _sizes(bucket)
                if sizes == mark[1]:
                    continue
                gained = Bucket()
                for name, then in zip(_DICTS, mark[1], strict=False):
                    entries: dict[Any, Any] = getattr(bucket, name)
                    if len(entries) > then:
                        setattr(gained, name, dict(islice(entries.items(), then, None)))
                if sizes[-1] != mark[1][-1]:
                    gained.rerouted = set(bucket.rerouted)
                out.added[key] = gained
                out.records += sum(now - then for now, then in zip(sizes, mark[1], strict=True))
        out.closed = [key for key in self.marks if key not in seen]
        return out


def copy_buckets(buckets: Buckets) -> Buckets:
    """``buckets`` with every bucket's containers copied (their entries, never changed in place,
    shared): what a base written beside batches pickles."""
    names = [f.name for f in fields(Bucket)]
    copied: Buckets = defaultdict(dict)
    for model, by_start in buckets.items():
        copied[model] = {start: Bucket(**{name: getattr(bucket, name).copy() for name in names})
                         for start, bucket in by_start.items()}
    return copied
