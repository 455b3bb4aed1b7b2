"""A restore under a memory budget stubs a base's groups a batch at a time with numpy
(``join._stub_groups``, docs/state.md "Restore and base in bounded memory"): the stubs are the
ones the per-record path (``join._stub_group``) makes, byte for byte, and read back whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from driftline.operators.join import LabelJoin
from driftline.operators.join.spill import _stub_group, _stub_groups, _whole_group
from driftline.operators.pending_store import REF, SHORT_REF, PendingStore, unpack_ref
from driftline.schemas.events import LabelEvent, PredictionEvent


def _mixed_join(seed: int, budget: int) -> LabelJoin:
    """Pending, joined and forgotten-soon records; UUID and other ids of several lengths; floats,
    strings and no features; event times over many 15-minute segments; with a
    budget, some records already stubs."""
    rng = random.Random(seed)
    join = LabelJoin(horizon_ms=10**10, max_pending=10**6, max_held=1_000)
    ids = []
    for i in range(3_000):
        pid = (f"{rng.getrandbits(32):08x}-0000-4000-8000-{i:012x}" if rng.random() < 0.6
               else "p" * rng.randrange(0, 40) + str(i))
        features: dict[str, object] = {f"x{k}": rng.random() for k in range(rng.choice((0, 3, 25)))}
        if rng.random() < 0.3:
            features["colour"] = rng.choice(("red", "blue, green", "é"))
        ts = rng.randrange(0, 40_000_000)
        event = PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts, features=features,
                                prediction=rng.choice((0.5, {"label": "a", "score": 0.25}, "b")))
        join.on_prediction(event, segment=rng.choice(("", "region=eu")))
        ids.append((pid, ts))
    for pid, ts in rng.sample(ids, 1_000):
        join.on_label(LabelEvent(prediction_id=pid, label="a", timestamp=ts + 10))
    if budget:
        join.set_memory_budget(budget)
        for _ in range(500):  # the oldest 500 seconds of event time spilled, one per look
            join._check_budget()
    return join


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("budget", [0, 1])
def test_stubbing_a_batch_of_groups_makes_the_stubs_of_stubbing_each(tmp_path: Path, seed: int,
                                                                     budget: int) -> None:
    join = _mixed_join(seed, budget)
    groups = join._groups
    if budget:
        assert 0 < join.spilled_count < join.pending_count  # stubs and whole records in the batches
    one, many = PendingStore(tmp_path), PendingStore(tmp_path)
    for start in range(0, len(groups), 100):
        batch = groups[start : start + 100]
        stubs = _stub_groups(batch, many)
        assert stubs == [_stub_group(group, one) for group in batch]
    assert many.bytes_on_disk == one.bytes_on_disk and many.segment_count > 10
    if not budget:  # the stubs read back whole (with a budget, some point into the join's own store)
        assert [_whole_group(group, many.get) for group in _stub_groups(groups, many)] == groups
    assert _stub_groups([], many) == [] and _stub_groups([b"", b""], many) == [b"", b""]
    for store in (one, many):
        store.close()
    join.set_memory_budget(0)


def test_a_segment_past_4_gib_gets_long_references_in_a_batch_as_one_by_one(tmp_path: Path) -> None:
    join = _mixed_join(4, 0)
    one, many = PendingStore(tmp_path), PendingStore(tmp_path)
    for store in (one, many):  # as if 4 GiB were written to the segment of event time 0 already
        store._sizes[0] = 2**32
    stubs = _stub_groups(join._groups, many)
    assert stubs == [_stub_group(group, one) for group in join._groups]
    sizes = {len(ref) for ref in _refs(stubs)}
    assert sizes == {SHORT_REF.size, REF.size}
    assert all(unpack_ref(ref)[0] == 0 for ref in _refs(stubs) if len(ref) == REF.size)
    for store in (one, many):
        store._sizes.pop(0)
        store.close()


def _refs(groups: list[bytes]) -> list[bytes]:
    """The store references of every stub in ``groups``."""
    from driftline.operators.join.records import _AT, _BODY, _PENDING, _PRED, _SPILLED, _walk

    out = []
    for group in groups:
        for pos, end, klen in _walk(group):
            head = pos + _AT + klen + _BODY
            if group[head - _BODY + 8] == _PENDING and group[head] & _SPILLED:
                out.append(group[head + _PRED.size : end])
    return out
