"""The pending store (payloads on disk) and a join past its memory budget."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.operators.join import LabelJoin
from driftline.operators.pending_store import PendingStore
from driftline.schemas.events import LabelEvent, PredictionEvent

HORIZON = 60_000


def test_payloads_read_back_from_their_segments_and_expiry_deletes_whole_files(tmp_path: Path) -> None:
    store = PendingStore(tmp_path, segment_ms=1_000)
    rng = random.Random(3)
    written = [(ts, rng.randbytes(rng.randrange(1, 300))) for ts in range(0, 5_000, 7)]
    refs = [store.put(ts, payload) for ts, payload in written]
    store.flush()
    assert store.segment_count == 5
    assert [store.get(ref) for ref in refs] == [payload for _, payload in written]
    assert store.bytes_on_disk == sum(len(p) for _, p in written)
    assert store.drop_before(2_500) == 2  # segments [0, 1000) and [1000, 2000): the third is not over
    assert sorted(f.name for f in store.path.iterdir()) == ["2.seg", "3.seg", "4.seg"]
    kept = [(ref, payload) for ref, (ts, payload) in zip(refs, written, strict=True) if ts >= 2_000]
    assert all(store.get(ref) == payload for ref, payload in kept)
    with pytest.raises(KeyError):
        store.get(refs[0])
    store.close()
    assert not store.path.exists()


def test_payloads_read_back_before_and_after_their_write(tmp_path: Path) -> None:
    """Appends are buffered and written in pieces: a reference reads the same either side of it,
    and a batch appended in one piece reads back one by one."""
    store = PendingStore(tmp_path, segment_ms=1_000)
    rng = random.Random(5)
    written = [rng.randbytes(rng.randrange(0, 2_000)) for _ in range(1_500)]  # ~1.5 MB: one write on the way
    refs = [store.put(500, payload) for payload in written[:1_000]]
    refs += store.put_many(900, written[1_000:])
    segment = store.path / "0.seg"
    assert segment.stat().st_size > 0  # part of it written already
    assert [store.get(ref) for ref in refs] == written
    store.flush()
    assert [store.get(ref) for ref in refs] == written
    assert store.bytes_on_disk == segment.stat().st_size == sum(map(len, written))
    store.close()


def test_references_are_short_where_their_values_fit_and_long_elsewhere(tmp_path: Path) -> None:
    """12 bytes for a segment number of 32 bits (the join keeps one per spilled prediction), 20 for
    one past it (e.g. epoch milliseconds in 100 ms segments); both read back, before and after a
    write and through a pin, and a store holds both at once."""
    store = PendingStore(tmp_path, segment_ms=100)
    epoch_ms = 1_767_225_600_000
    written = [(ts, f"payload {ts}".encode()) for ts in (-250, 0, 99, 150, epoch_ms, epoch_ms + 120)]
    refs = [store.put(ts, payload) for ts, payload in written]
    refs += store.put_many(epoch_ms + 130, [b"a", b"bc"]) + store.put_many(5, [b"d"])
    payloads = [payload for _, payload in written] + [b"a", b"bc", b"d"]
    assert [len(ref) for ref in refs] == [12, 12, 12, 12, 20, 20, 20, 20, 12]
    assert [store.get(ref) for ref in refs] == payloads
    pinned = store.pin()
    assert [pinned.get(ref) for ref in refs] == payloads
    pinned.release()
    assert [store.get(ref) for ref in refs] == payloads
    store.close()


def test_a_join_spilling_with_long_references_gives_the_same_results_and_checkpoints(tmp_path: Path) -> None:
    """Segment numbers past 32 bits (20-byte references in the records) change nothing either."""
    epoch_ms = 1_767_225_600_000
    joins = [LabelJoin(HORIZON, max_pending=10_000, max_held=100) for _ in range(2)]
    joins[1].set_memory_budget(1, tmp_path, segment_ms=100)
    outs: list[list[object]] = [[], []]
    for join, out in zip(joins, outs, strict=True):
        for i in range(2_000):
            out.append(join.on_prediction(_prediction(i, epoch_ms + i), segment="s"))
            if i >= 500 and i % 2:
                out.append(join.on_label(LabelEvent(prediction_id=_prediction(i - 500, 0).prediction_id,
                                                    label="a", timestamp=epoch_ms + i)))
        out.extend(join.advance(epoch_ms + 1_900, epoch_ms + 1_900))
    assert outs[1] == outs[0] and joins[1].spilled_count > 1_000
    assert list(joins[1].__getstate__()["groups"]) == joins[0].__getstate__()["groups"]


def test_a_new_store_removes_the_directories_of_dead_processes(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f"driftline-join-{dead}-x1"
    left.mkdir()
    (left / "0.seg").write_bytes(b"payload")
    alive = tmp_path / f"driftline-join-{os.getpid()}-x2"
    alive.mkdir()
    store = PendingStore(tmp_path)
    assert not left.exists() and alive.exists() and store.path.parent == tmp_path
    store.close()


def _prediction(i: int, ts: int) -> PredictionEvent:
    features = {f"x{k}": float(i * 31 + k) for k in range(25)} | {"colour": ["red", "blue"][i % 2]}
    return PredictionEvent(prediction_id=f"{i:08x}-0000-4000-8000-000000000000", model_id="m",
                           timestamp=ts, features=features, prediction={"label": "a", "score": 0.25})


def _stream(join: LabelJoin) -> list[object]:
    """Predictions one a millisecond over 20 s, labels for two of three 5 s later, watermarks."""
    out: list[object] = []
    for i in range(20_000):
        out.append(join.on_prediction(_prediction(i, i), segment="s"))
        if i >= 5_000 and (i - 5_000) % 3:
            out.append(join.on_label(LabelEvent(prediction_id=_prediction(i - 5_000, 0).prediction_id,
                                                label="a", timestamp=i)))
        if i % 1_000 == 999:
            out.extend(join.advance(i - 100, i - 100))
    return out


def test_a_join_past_its_budget_gives_the_same_results_and_checkpoints(tmp_path: Path) -> None:
    in_memory = LabelJoin(HORIZON, max_pending=100_000, max_held=100)
    spilling = LabelJoin(HORIZON, max_pending=100_000, max_held=100)
    spilling.set_memory_budget(200_000, tmp_path)
    assert _stream(spilling) == _stream(in_memory)
    assert spilling.spilled_count > 5_000 and spilling.store_bytes > 1_000_000
    # What stays is ids, times, digests and contexts (~75 bytes a record, over this tiny budget):
    # less than half of the records whole.
    assert sum(map(len, spilling._groups)) < sum(map(len, in_memory._groups)) / 2
    # A checkpoint holds every record whole: byte for byte the in-memory join's.
    assert list(spilling.__getstate__()["groups"]) == in_memory.__getstate__()["groups"]
    restored = pickle.loads(pickle.dumps(spilling))
    assert restored.store_bytes == 0 and restored.spilled_count == 0
    restored.set_memory_budget(100_000, tmp_path)
    labels = [LabelEvent(prediction_id=_prediction(i, 0).prediction_id, label="a", timestamp=20_000)
              for i in range(15_000, 20_000)]
    assert [restored.on_label(label) for label in labels] == [in_memory.on_label(label) for label in labels]


def test_expired_segments_are_deleted_and_removing_the_budget_reads_everything_back(tmp_path: Path) -> None:
    join = LabelJoin(1_000, max_pending=100_000, max_held=100)
    join.set_memory_budget(10_000, tmp_path, segment_ms=500)
    for i in range(3_000):
        join.on_prediction(_prediction(i, i), segment="s")
    join._store.flush()  # type: ignore[union-attr]  # appends are written in pieces of a MB
    files = len(list(join._store.path.glob("*.seg")))  # type: ignore[union-attr]
    assert files >= 4
    expired = join.advance(0, 2_600)  # labels watermark 2,600: predictions before 1,600 expire
    assert len(expired) == 1_600
    assert len(list(join._store.path.glob("*.seg"))) < files  # type: ignore[union-attr]
    twin = LabelJoin(1_000, max_pending=100_000, max_held=100)
    for i in range(3_000):
        twin.on_prediction(_prediction(i, i), segment="s")
    assert [e.prediction_id for e in twin.advance(0, 2_600)] == [e.prediction_id for e in expired]
    path = join._store.path  # type: ignore[union-attr]
    join.set_memory_budget(0)
    assert join.spilled_count == 0 and not path.exists()
    assert join._groups == twin._groups


def test_past_the_budget_new_payloads_spill_as_they_come_and_a_restore_catches_up(tmp_path: Path) -> None:
    budget = 2_000_000  # ~8,000 whole records of _prediction, or ~25,000 spilled ones
    join = LabelJoin(HORIZON, max_pending=100_000, max_held=100)
    join.set_memory_budget(budget, tmp_path)
    twin = LabelJoin(HORIZON, max_pending=100_000, max_held=100)
    for i in range(20_000):
        for j in (join, twin):
            j.on_prediction(_prediction(i, i), segment="s")
    assert sum(map(len, twin._groups)) > 2 * budget
    assert sum(map(len, join._groups)) <= budget * 9 // 8
    assert join.spilled_count > 15_000
    restored = pickle.loads(pickle.dumps(join))  # records whole, over the budget
    restored.set_memory_budget(budget, tmp_path)
    for i in range(20_000, 22_000):  # a second of event time spilled per prediction: all caught up
        for j in (restored, twin):
            j.on_prediction(_prediction(i, i), segment="s")
    assert sum(map(len, restored._groups)) <= budget * 9 // 8
    labels = [LabelEvent(prediction_id=_prediction(i, 0).prediction_id, label="a", timestamp=i + 1)
              for i in range(0, 22_000, 7)]
    assert [restored.on_label(label) for label in labels] == [twin.on_label(label) for label in labels]
