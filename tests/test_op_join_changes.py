"""LabelJoin incremental checkpoints: a base snapshot plus the changes of every later checkpoint
restores the join exactly as it was, whatever happened in between (joins, expiry, forgetting,
eviction, duplicates, id reuse, table splits and merges)."""

from __future__ import annotations

import dataclasses
import pickle
import random
import uuid
from typing import Any

import pytest

from driftline.operators.join import JoinChanges, LabelJoin
from driftline.operators.join.records import _id_key, _record_key, _record_starts
from driftline.schemas.events import LabelEvent, PredictionEvent

HORIZON = 5_000


def _content(join: LabelJoin) -> tuple[Any, ...]:
    """Everything that decides the join's future: its records (one id's records in their order)
    and the state outside the table."""
    records: dict[bytes, list[bytes]] = {}
    for group in join.__getstate__()["groups"]:  # spilled records read back whole
        pos = 0
        while pos < len(group):
            length = int.from_bytes(group[pos : pos + 4], "little")
            record = group[pos : pos + length]
            records.setdefault(_record_key(record), []).append(record)
            pos += length
    outside = join._outside_table()
    outside["duplicates"] = [dataclasses.astuple(d) for d in outside["duplicates"]]
    outside["orphans"] = [dataclasses.astuple(o) for o in outside["orphans"]]
    return sorted(records.items()), outside


def _events(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    """A mixed stream: predictions (UUID and short ids, reused ids, exact re-sends), labels (some
    before their prediction, some never), watermark moves."""
    out: list[tuple[str, Any]] = []
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n // 3)] + [f"p{i}" for i in range(n // 6)]
    ts = 1_000_000
    for _ in range(n):
        ts += rng.randrange(0, 40)
        pid = rng.choice(ids)
        roll = rng.random()
        if roll < 0.5:
            features: dict[str, Any] = {"x": rng.random(), "c": rng.choice("abc")}
            if rng.random() < 0.1:
                features = {"y": rng.randrange(10)}
            out.append(("prediction", PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
                                                      features=features, prediction={"label": "a"})))
        elif roll < 0.9:
            out.append(("label", LabelEvent(prediction_id=pid, timestamp=ts - rng.randrange(0, 3_000),
                                            label=rng.choice("ab"))))
        else:
            marks = (ts - rng.randrange(0, 2_000), ts - rng.randrange(HORIZON // 2, 2 * HORIZON))
            out.append(("advance", marks))
    return out


def _feed(join: LabelJoin, item: tuple[str, Any], log: list[Any]) -> None:
    kind, value = item
    if kind == "prediction":
        log.append(join.on_prediction(value, segment="s"))
    elif kind == "label":
        log.append(join.on_label(value))
    else:
        log.append(join.advance(*value))
        log.append(join.take_orphans())
    log.append(join.take_duplicates())


def _canonical(log: list[Any]) -> list[Any]:
    def one(item: Any) -> Any:
        if isinstance(item, list):
            return [one(x) for x in item]
        return dataclasses.astuple(item) if dataclasses.is_dataclass(item) else item  # type: ignore[arg-type]

    return [one(x) for x in log]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("max_pending", [40, 100_000])
def test_base_plus_changes_restores_the_join_at_every_checkpoint(seed: int, max_pending: int) -> None:
    rng = random.Random(seed)
    events = _events(rng, 6_000)
    join = LabelJoin(HORIZON, max_pending=max_pending, max_held=50)
    join.track_changes()
    base = pickle.dumps(join)
    chain: list[bytes] = []
    log: list[Any] = []
    checks = 0
    for i, item in enumerate(events):
        _feed(join, item, log)
        if rng.random() < 0.01:
            if rng.random() < 0.2:  # a new base: the chain starts again
                base, chain = pickle.dumps(join), []
                join.reset_changes()
            else:
                chain.append(pickle.dumps(join.take_changes()))
            restored: LabelJoin = pickle.loads(base)
            for link in chain:
                changes = pickle.loads(link)
                assert isinstance(changes, JoinChanges)
                restored.apply_changes(changes)
            assert _content(restored) == _content(join), f"after event {i}"
            # ... and both go on alike (the original keeps tracking: the restored one starts now).
            tail = events[i + 1 : i + 400]
            log_a: list[Any] = []
            log_b: list[Any] = []
            twin: LabelJoin = pickle.loads(pickle.dumps(join))
            for later in tail:
                _feed(twin, later, log_a)
                _feed(restored, later, log_b)
            assert _canonical(log_a) == _canonical(log_b)
            checks += 1
    assert checks >= 20
    assert join.counters["duplicate_predictions"] and join.counters["orphan_labels"]
    if max_pending == 40:
        assert join.counters["evicted_pending"]


def test_changes_are_small_next_to_the_base() -> None:
    """Checkpoint bytes follow what changed, not what is remembered."""
    join = LabelJoin(86_400_000, max_pending=10**6, max_held=10)
    join.track_changes()
    rng = random.Random(5)
    for i in range(20_000):
        pid = str(uuid.UUID(int=rng.getrandbits(128)))
        features = {f"f{k}": rng.random() for k in range(25)}
        join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=1_000 + i,
                                           features=features, prediction=0.5), segment="")
    base = len(pickle.dumps(join))
    join.reset_changes()
    for i in range(200):
        join.on_prediction(PredictionEvent(prediction_id=f"late-{i}", model_id="m", timestamp=30_000 + i,
                                           features={f"f{k}": rng.random() for k in range(25)},
                                           prediction=0.5), segment="")
    delta = len(pickle.dumps(join.take_changes()))
    assert delta * 50 < base, (delta, base)
    assert join.take_changes().records == b""


def test_a_join_that_does_not_track_keeps_nothing() -> None:
    join = LabelJoin(HORIZON, max_pending=10, max_held=10)
    event = PredictionEvent(prediction_id="a", model_id="m", timestamp=1, prediction=0.5)
    join.on_prediction(event, segment="")
    assert join._added is None and join.take_changes().records == b"" and not join._closings
    assert pickle.loads(pickle.dumps(join))._added is None


def _closing_keys(closings: bytes) -> list[tuple[bytes, int]]:
    """(id key, event time) of each closing of a delta (format 5)."""
    out, pos = [], 0
    while pos < len(closings):
        code = int.from_bytes(closings[pos : pos + 2], "little")
        key = closings[pos : pos + (18 if code == 0xFFFF else 2 + code)]
        ts, state = int.from_bytes(closings[pos + len(key) : pos + len(key) + 8], "little", signed=True), \
            closings[pos + len(key) + 8]
        out.append((key, ts))
        pos += len(key) + 9 + (8 if state == 1 else 0)  # a joined one's label digest
    return out


def _as_format_4(changes: JoinChanges, live: LabelJoin) -> JoinChanges:
    """``changes`` as delta format 4 wrote them (taken from ``live`` just now): every closed record
    whole among the records (or gone, if forgotten since), and no ``closings`` field at all, as a
    format-4 pickle unpickles (the dataclass's state then holds three fields)."""
    extra, closed_gone = live.current_records(_closing_keys(changes.closings))
    gone = [*changes.gone, *closed_gone]
    old = JoinChanges.__new__(JoinChanges)
    old.__setstate__([changes.records + b"".join(extra), gone, changes.state])  # type: ignore[attr-defined]
    return old


@pytest.mark.parametrize("seed", [4, 5])
def test_a_chain_mixing_format_4_and_closings_restores_the_join(seed: int) -> None:
    """Deltas of an upgraded worker follow those its previous version wrote (closed records whole,
    no closings), and either kind follows the other."""
    rng = random.Random(seed)
    events = _events(rng, 4_000)
    join = LabelJoin(HORIZON, max_pending=60, max_held=50)
    join.track_changes()
    base = pickle.dumps(join)
    chain: list[JoinChanges] = []
    kinds = set()
    for i, item in enumerate(events):
        _feed(join, item, [])
        if rng.random() < 0.02:
            changes = pickle.loads(pickle.dumps(join.take_changes()))
            old = rng.random() < 0.5
            kinds.add((old, bool(changes.closings)))
            chain.append(_as_format_4(changes, join) if old else changes)
            restored: LabelJoin = pickle.loads(base)
            for link in chain:
                restored.apply_changes(link)
            assert _content(restored) == _content(join), f"after event {i}"
    assert {(True, True), (False, True)} <= kinds  # both kinds, each with records the chain held closed


def test_a_record_the_chain_holds_comes_back_as_its_closing_alone() -> None:
    """Labels and expiry of predictions the base holds: the delta carries a closing each (id key,
    time, state, label digest: 35 or 27 bytes with a UUID id), no record; one added and joined in
    the same interval comes whole, as it is then; the header's count is every one of them."""
    join = LabelJoin(HORIZON, max_pending=100, max_held=10)
    join.track_changes()
    ids = [str(uuid.UUID(int=i + 1)) for i in range(30)]
    for i, pid in enumerate(ids[:20]):
        join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=1_000 + i,
                                           features={"x": 0.5}, prediction=0.5), segment="s")
    base = pickle.dumps(join)
    join.reset_changes()
    for pid in ids[:10]:
        join.on_label(LabelEvent(prediction_id=pid, label="1", timestamp=2_000))
    join.advance(1_000 + HORIZON + 15, 1_000 + HORIZON + 15)  # expires ids[10:15] (time 1,010-1,014)
    for i, pid in enumerate(ids[20:]):
        join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=9_000 + i,
                                           features={"x": 0.5}, prediction=0.5), segment="s")
        join.on_label(LabelEvent(prediction_id=pid, label="1", timestamp=9_500))
    assert join.changed_count == 10 + 5 + 10
    changes = join.take_changes()
    assert len(changes.closings) == 10 * 35 + 5 * 27
    assert sorted(_closing_keys(changes.closings)) == sorted(
        (_id_key(pid), 1_000 + i) for i, pid in enumerate(ids[:15]))
    assert len(changes.records) == 10 * 55  # joined records whole: head, key, time, digest, tail
    restored: LabelJoin = pickle.loads(base)
    restored.apply_changes(changes)
    assert _content(restored) == _content(join)


def test_tracking_carries_each_added_record_once_and_closes_only_those_the_chain_holds() -> None:
    """The tracked keys (``added_keys``, one ``bytes`` a record): a record forgotten and added again
    since the last checkpoint is carried once, whole; a batch of labels (``on_labels``, whose join
    checks the tracked keys inline) closes those the chain holds as closings and leaves those added
    since to the records; the count is each of them once, and the delta restores the join."""
    join = LabelJoin(HORIZON, max_pending=100, max_held=10)
    join.track_changes()

    def predict(pid: str, ts: int) -> None:
        join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
                                           features={"x": 0.5}, prediction=0.5), segment="s")

    held = [str(uuid.UUID(int=i + 1)) for i in range(4)]
    for i, pid in enumerate(held):
        predict(pid, 20_000 + i)
    base = pickle.dumps(join)
    join.reset_changes()
    predict("again", 1_000)
    join.advance(1_000 + HORIZON + 1, 1_000 + HORIZON + 1)  # expired, then forgotten: not in the table
    predict("again", 1_000)  # the same id key and time added again
    fresh = ["n1", str(uuid.UUID(int=99))]
    for i, pid in enumerate(fresh):
        predict(pid, 20_100 + i)
    assert join.added_keys() == sorted([(_id_key("again"), 1_000), *(
        (_id_key(pid), 20_100 + i) for i, pid in enumerate(fresh))])
    pids = [*held[:2], *fresh]
    join.on_labels(pids, [20_500] * 4, ["1"] * 4, [None] * 4, [bytes(8)] * 4, [None] * 4)
    assert join.changed_count == 3 + 2
    changes = join.take_changes()
    assert sorted(_closing_keys(changes.closings)) == sorted((_id_key(pid), 20_000 + i)
                                                            for i, pid in enumerate(held[:2]))
    assert [_record_key(changes.records[pos:]) for pos in _record_starts(changes.records)] == sorted(
        map(_id_key, ["again", *fresh]))
    restored: LabelJoin = pickle.loads(base)
    restored.apply_changes(changes)
    assert _content(restored) == _content(join)
    assert join.changed_count == 0 and join.added_keys() == []
