"""A delta applied in bulk (``LabelJoin._put_records``, ``_close_records``: the records of many
groups parsed and spliced together) leaves the join byte for byte as applying it one record at a
time did (``_put`` and ``_close_one`` per record, the code before): the groups, their order, the
time index's seconds and id hashes in order, the split pointer and the counts. Chains of random
traffic: records added and joined in one interval, joined then forgotten, expired, evicted, ids
reused, spilled records under a budget, deltas as format 4 wrote them (closed records whole)."""

from __future__ import annotations

import pickle
import random
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

from driftline.operators.join import JoinChanges, LabelJoin, restoring_under_budget
from driftline.operators.join import core as join_core
from driftline.operators.join.changes import _closing_starts
from driftline.operators.join.records import _record_key
from driftline.schemas.events import LabelEvent, PredictionEvent

HORIZON = 4_000


def _one_by_one(join: LabelJoin) -> LabelJoin:
    """``join`` applying deltas a record at a time, as apply_changes did before the bulk path."""

    def put_records(records: bytes, starts: list[int]) -> None:
        for start in starts:
            length = int.from_bytes(records[start : start + 4], "little")
            record = records[start : start + length]
            key = _record_key(record)
            ts = int.from_bytes(record[8 + len(key) : 16 + len(key)], "little", signed=True)
            join._put(zlib.crc32(key), key, ts, record)

    def apply_closings(closings: bytes) -> None:
        for pos, klen in zip(*_closing_starts(closings), strict=True):
            at = pos + klen
            join._close_one(closings[pos:at], int.from_bytes(closings[at : at + 8], "little", signed=True),
                            closings[at + 8], closings[at + 9 : at + 17])

    join._put_records = put_records  # type: ignore[method-assign]
    join._apply_closings = apply_closings  # type: ignore[method-assign]
    return join


def _layout(join: LabelJoin) -> tuple[Any, ...]:
    """The record table exactly: groups in order, the time index in its insertion order."""
    return (join._groups, [(s, crcs.tobytes()) for s, crcs in join._buckets.items()], join._bucket_keys,
            join._low, join._split, join._records, join._pending, join._estimate)


def _traffic(rng: random.Random, join: LabelJoin, steps: int, ids: list[str], clock: list[int]) -> None:
    for _ in range(steps):
        clock[0] += rng.randrange(0, 30)
        ts = clock[0]
        pid = rng.choice(ids)
        roll = rng.random()
        if roll < 0.5:
            features: dict[str, Any] = {"x": rng.random(), "c": rng.choice("abc")}
            join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
                                               features=features, prediction={"label": "a"}), segment="s")
        elif roll < 0.93:
            join.on_label(LabelEvent(prediction_id=pid, timestamp=ts - rng.randrange(0, 2_500),
                                     label=rng.choice("ab")))
        else:
            join.advance(ts - rng.randrange(0, 1_500), ts - rng.randrange(HORIZON // 2, 2 * HORIZON))


def _as_format_4(changes: JoinChanges, live: LabelJoin) -> JoinChanges:
    """``changes`` with every closed record whole among the records, as delta format 4 wrote them."""
    starts, key_lengths = _closing_starts(changes.closings)
    keys = [(changes.closings[pos : pos + klen],
             int.from_bytes(changes.closings[pos + klen : pos + klen + 8], "little", signed=True))
            for pos, klen in zip(starts, key_lengths, strict=True)]
    extra, gone = live.current_records(keys)
    return JoinChanges(changes.records + b"".join(extra), [*changes.gone, *gone], changes.state)


def _chain(seed: int, max_pending: int, budget: int, spill_dir: Path) -> tuple[bytes, list[JoinChanges]]:
    """A base (pickled) and 12 deltas after it of random traffic, a quarter as format 4 wrote them."""
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(900)] + [f"p{i}" for i in range(300)]
    join = LabelJoin(HORIZON, max_pending=max_pending, max_held=50)
    if budget:
        join.set_memory_budget(budget, spill_dir)
    clock = [1_000_000]
    _traffic(rng, join, 1_500, ids, clock)
    join.track_changes()
    base = pickle.dumps(join)
    chain: list[JoinChanges] = []
    for _ in range(12):
        _traffic(rng, join, rng.choice((50, 400, 1_500)), ids, clock)
        changes = pickle.loads(pickle.dumps(join.take_changes()))
        chain.append(_as_format_4(changes, join) if rng.random() < 0.25 else changes)
    assert any(c.closings for c in chain) and any(c.gone for c in chain)
    join.set_memory_budget(0)
    return base, chain


@pytest.mark.parametrize(("seed", "max_pending", "budget"), [(1, 100_000, 0), (2, 60, 0), (4, 200, 1)])
def test_a_chain_applied_in_bulk_is_the_chain_applied_record_by_record(
        seed: int, max_pending: int, budget: int, tmp_path: Path) -> None:
    base, chain = _chain(seed, max_pending, budget, tmp_path)
    with restoring_under_budget(budget, tmp_path):
        bulk: LabelJoin = pickle.loads(base)
        single = _one_by_one(pickle.loads(base))
    for changes in chain:
        bulk.apply_changes(changes)
        single.apply_changes(changes)
        assert _layout(bulk) == _layout(single)
    if budget:
        assert bulk.spilled_count
    assert pickle.dumps(bulk) == pickle.dumps(single)  # spilled payloads read back alike
    for restored in (bulk, single):
        restored.set_memory_budget(0)


@pytest.mark.parametrize("budget", [0, 1])
def test_a_delta_applied_a_piece_at_a_time_is_the_delta_applied_whole(
        budget: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: a delta's added records are applied ``APPLY_PIECE_BYTES`` at a time (the delta
    after a base at 10M pending holds ~44 MB of them); pieces of a few records leave the table,
    and under a budget the stubs' references and the store's payloads, as one piece did."""
    base, chain = _chain(3, 100_000, budget, tmp_path)
    assert max(len(c.records) for c in chain) > 40 * 300  # dozens of pieces
    with restoring_under_budget(budget, tmp_path):
        whole: LabelJoin = pickle.loads(base)
        pieces: LabelJoin = pickle.loads(base)
    for changes in chain:
        monkeypatch.setattr(join_core, "APPLY_PIECE_BYTES", 2**40)
        whole.apply_changes(changes)
        monkeypatch.setattr(join_core, "APPLY_PIECE_BYTES", 300)
        pieces.apply_changes(changes)
        assert _layout(pieces) == _layout(whole)
    if budget:
        assert pieces.spilled_count
    assert pickle.dumps(pieces) == pickle.dumps(whole)  # spilled payloads read back alike
    for restored in (whole, pieces):
        restored.set_memory_budget(0)


def test_closings_of_one_group_and_an_id_with_an_earlier_record_apply_in_turns() -> None:
    """Many closings in few groups (several rounds of the bulk path), ids whose earlier record comes
    first in the group (the first occurrence of the key is not the record: the one-by-one path)."""
    join = LabelJoin(1_000, max_pending=10**6, max_held=10)
    for i in range(200):  # an id again past its horizon: a second record of it, later in its group
        for ts in (1_000 + i, 5_000 + i):
            join.on_prediction(PredictionEvent(prediction_id=f"id{i}", model_id="m", timestamp=ts,
                                               prediction=0.5), segment="s")
    join.track_changes()
    base = pickle.dumps(join)
    for i in range(0, 200, 2):
        join.on_label(LabelEvent(prediction_id=f"id{i}", label="1", timestamp=5_500 + i))
    for i in range(1, 200, 4):
        join.on_label(LabelEvent(prediction_id=f"id{i}", label="1", timestamp=1_500 + i))
    changes = join.take_changes()
    assert len(changes.closings) > 0
    bulk: LabelJoin = pickle.loads(base)
    single = _one_by_one(pickle.loads(base))
    bulk.apply_changes(changes)
    single.apply_changes(changes)
    assert _layout(bulk) == _layout(single)
    assert bulk.pending_count == join.pending_count


def test_a_closing_of_a_record_the_chain_does_not_hold_pending_is_refused() -> None:
    join = LabelJoin(HORIZON, max_pending=100, max_held=10)
    join.track_changes()
    join.on_prediction(PredictionEvent(prediction_id="a", model_id="m", timestamp=1_000, prediction=0.5),
                       segment="")
    base = pickle.dumps(join)
    join.reset_changes()
    join.on_label(LabelEvent(prediction_id="a", label="1", timestamp=1_500))
    changes = join.take_changes()
    restored: LabelJoin = pickle.loads(base)
    restored.apply_changes(changes)
    with pytest.raises(ValueError, match="no pending record of 'a' at 1000"):
        restored.apply_changes(changes)  # closed already
