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

from driftline.operators.join import JoinChanges, LabelJoin, _record_key
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
    assert join._touched is None and join.take_changes().records == b""
    assert pickle.loads(pickle.dumps(join))._touched is None
