"""A base restored under a join memory budget spills as its groups arrive (docs/state.md, "At
10,000,000 pending"): the restore's peak is the table of stubs plus the budget, not every record
whole; and a base written before (state format 3) still restores."""

from __future__ import annotations

import gc
import hashlib
import sys
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from driftline.operators.join import LabelJoin, restoring_under_budget
from driftline.pipeline import state
from driftline.pipeline.state import STATE_FORMAT, BlobFile, dump_state, load_state
from driftline.schemas.events import LabelEvent, PredictionEvent

FORMAT_3_BASE = Path(__file__).parent / "data" / "join_base_v3.bin"


def _prediction(i: int) -> PredictionEvent:
    features = {f"x{k}": float(i * 31 + k) for k in range(25)}
    return PredictionEvent(prediction_id=f"{i:08x}-0000-4000-8000-000000000000", model_id="m",
                           timestamp=1_000 + i, features=features, prediction={"label": "a", "score": 0.25})


def _label(i: int) -> LabelEvent:
    return LabelEvent(prediction_id=_prediction(i).prediction_id, label="a", timestamp=2_000 + i)


def build_join(count: int) -> LabelJoin:
    """``count`` predictions, every third one labelled (tests/data/join_base_v3.bin is
    ``dump_state(build_join(600))`` written by driftline at d30051e, state format 3)."""
    join = LabelJoin(10**9, max_pending=10**7, max_held=100)
    for i in range(count):
        join.on_prediction(_prediction(i), segment="s", digest=_digest_then(_prediction(i)))
    for i in range(0, count, 3):
        join.on_label(_label(i), digest=_digest_then(_label(i)))
    return join


def _digest_then(event: PredictionEvent | LabelEvent) -> bytes:
    """The join's default digest of an event at d30051e: BLAKE2b-64 of its JSON."""
    return hashlib.blake2b(event.model_dump_json().encode(), digest_size=8).digest()


def _table_bytes(join: LabelJoin) -> int:
    """The groups with their headers, the list and the time index."""
    index = sum(sys.getsizeof(crcs) for crcs in join._buckets.values()) + sys.getsizeof(join._buckets)
    return sum(map(sys.getsizeof, join._groups)) + sys.getsizeof(join._groups) + index


def _restore_peak(blob: bytes, budget: int, spill_dir: Path) -> tuple[LabelJoin, int]:
    """The join in ``blob`` restored from a file under ``budget``, and the peak of what the restore
    allocated (tracemalloc: Python's allocations, the records among them)."""
    with tempfile.TemporaryFile(dir=spill_dir) as file:
        file.write(blob)
        gc.collect()
        tracemalloc.start()
        try:
            with restoring_under_budget(budget, spill_dir):
                join = load_state(BlobFile(file, len(blob)), LabelJoin, "test")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return join, peak


@pytest.mark.parametrize("count", [30_000, 90_000])
def test_a_restore_under_a_budget_peaks_at_the_table_of_stubs_plus_the_budget(
        tmp_path: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole records (~240 B each here) are never all in memory: what the restore allocated at
    its peak is the restored table (stubs, ~70 B a pending one) plus the budget plus a constant
    (pickle's batch of 1,000 groups, the store's append buffer), with three times the records as
    with the first; restoring the same base without a budget holds every record whole."""
    join = build_join(count)
    monkeypatch.setattr(state, "RAW_ABOVE", 0)  # stored raw, as bases over 8 MiB are
    blob = dump_state(join)
    budget = 64 * 1024
    restored, peak = _restore_peak(blob, budget, tmp_path)
    assert restored.spilled_count > count // 2
    assert peak < _table_bytes(restored) + budget + 3 * 2**20  # the store's 1 MB buffer, a batch
    whole, whole_peak = _restore_peak(blob, 0, tmp_path)
    assert whole.spilled_count == 0 and whole_peak > _table_bytes(whole) > 2 * _table_bytes(restored)
    # The same join: its checkpoints pickle the records whole, and it joins alike.
    assert restored.__getstate__() == join.__getstate__() == whole.__getstate__()
    labels = [_label(i) for i in range(1, count, 3)]
    assert [restored.on_label(label) for label in labels] == [join.on_label(label) for label in labels]
    restored.set_memory_budget(0)


def test_a_restored_join_keeps_its_budget_and_applies_deltas_as_stubs(tmp_path: Path) -> None:
    """The shard's configure sets the same budget again: the restored store and stubs stay; a delta
    applied meanwhile puts its pending records back as stubs, not whole."""
    join = build_join(3_000)
    join.track_changes()
    blob = dump_state(join)
    for i in range(3_000, 4_000):
        join.on_prediction(_prediction(i), segment="s")
    for i in range(1, 3_000, 3):
        join.on_label(_label(i))
    changes = join.take_changes()
    with tempfile.TemporaryFile(dir=tmp_path) as file:
        file.write(blob)
        with restoring_under_budget(1, tmp_path):
            restored = load_state(BlobFile(file, len(blob)), LabelJoin, "test")
            restored.apply_changes(changes)
    restored.set_memory_budget(1, tmp_path)
    assert restored.spilled_count == join.pending_count  # every pending payload on disk, new ones too
    assert restored.__getstate__() == join.__getstate__()
    more = [_label(i) for i in range(2, 4_000, 3)]
    assert [restored.on_label(label) for label in more] == [join.on_label(label) for label in more]
    restored.set_memory_budget(0)


def test_a_format_3_base_written_before_restores(tmp_path: Path) -> None:
    """A restart of an upgraded worker on yesterday's checkpoint: the base (its groups a plain list)
    restores with or without a budget, equal to the same join built today."""
    blob = FORMAT_3_BASE.read_bytes()
    assert blob[:6] == b"DLST\x03z" and STATE_FORMAT == 4
    today = build_join(600)
    for budget in (0, 1):
        with restoring_under_budget(budget, tmp_path):
            restored = load_state(blob, LabelJoin, "test")
        restored.set_memory_budget(budget, tmp_path)
        assert restored.__getstate__() == today.__getstate__()
        fresh = build_join(600)
        labels = [_label(i) for i in range(1, 600, 3)]
        assert [restored.on_label(label) for label in labels] == [fresh.on_label(label) for label in labels]
        restored.set_memory_budget(0)


@pytest.mark.parametrize("budget", [0, 1])
def test_a_base_pickled_into_a_file_is_dump_state_byte_for_byte_and_never_whole_in_memory(
        tmp_path: Path, budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``BaseCopy.dump_to_file`` (what the runner writes a base from): the same bytes as ``dump``,
    and what it allocated at its peak is a constant (a frame, a group read back), not the blob."""
    join = build_join(30_000)
    if budget:
        join.set_memory_budget(budget, tmp_path)
    monkeypatch.setattr(state, "RAW_ABOVE", 0)  # stored raw, as bases over 8 MiB are
    copied = join.base_copy()
    copy = state.BaseCopy(copied, release=copied.release_copy)
    expected = copy.dump()
    gc.collect()
    tracemalloc.start()
    try:
        blob = copy.dump_to_file(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(blob, BlobFile) and len(expected) > 5 * 2**20
    with blob.file:
        assert blob.read() == expected and blob.crc == zlib.crc32(expected)
    assert peak < 2**20
    copy.release()
    join.set_memory_budget(0)
