"""LabelJoin duplicates: exact re-sends vs conflicting payloads, independent of interleaving,
batching and checkpoint/restore, and old checkpoints (records without digests) still restore."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators.join import UNKNOWN_DIGEST, Duplicate, LabelJoin, payload_digest
from driftline.operators.join import records as join_records
from driftline.schemas.events import LabelEvent, PredictionEvent

HORIZON = 20
END = 10**12


def pred(pid: str, ts: int, variant: int = 0) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=pid,
        model_id="m",
        model_version="2",
        timestamp=ts,
        features={"x": float(variant)},
        prediction={"label": "a"},
    )


def label(pid: str, ts: int, value: Any = "a") -> LabelEvent:
    return LabelEvent(prediction_id=pid, timestamp=ts, label=value)


Event = tuple[PredictionEvent | LabelEvent, bytes]


def payload(event: PredictionEvent | LabelEvent) -> bytes:
    return event.model_dump_json().encode()


def feed(join: LabelJoin, events: Sequence[Event], lateness: int, wms: list[int]) -> list[Duplicate]:
    """The shard's driver: per-topic watermarks, late events dropped, digests of the payloads."""
    found: list[Duplicate] = []
    for event, raw in events:
        if isinstance(event, PredictionEvent):
            if event.timestamp >= wms[0]:
                join.on_prediction(event, "s", digest=payload_digest(raw), source=raw)
                wms[0] = max(wms[0], event.timestamp - lateness)
        elif event.timestamp >= wms[1]:
            join.on_label(event, digest=payload_digest(raw), source=raw)
            wms[1] = max(wms[1], event.timestamp - lateness)
        join.advance(wms[0], wms[1])
        found += join.take_duplicates()
    join.advance(END, END)
    return found + join.take_duplicates()


def canonical(found: Sequence[Duplicate]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            d.kind,
            d.prediction_id,
            d.event_time,
            d.exact,
            d.first_digest,
            d.digest,
            d.model_id,
            d.model_version,
            d.segment,
            d.source,
        )
        for d in found
    )


def oracle(
    preds: Sequence[Event], labels: Sequence[Event], lateness: int
) -> list[tuple[str, str, int, bool]]:
    """Duplicates by brute force from the two logs (the documented rules)."""

    def non_late(events: Sequence[Event]) -> list[Event]:
        kept, wm = [], -(10**9)
        for e, raw in events:
            if e.timestamp >= wm:
                kept.append((e, raw))
                wm = max(wm, e.timestamp - lateness)
        return kept

    accepted: list[Event] = []
    out = []
    for p, raw in non_late(preds):
        first = next(
            (
                a
                for a in accepted
                if a[0].prediction_id == p.prediction_id and p.timestamp <= a[0].timestamp + HORIZON
            ),
            None,
        )
        if first is None:
            accepted.append((p, raw))
        else:
            out.append(("prediction", p.prediction_id, p.timestamp, first[1] == raw))
    winners: dict[int, bytes] = {}
    for lab, raw in non_late(labels):
        match = [
            i
            for i, (a, _) in enumerate(accepted)
            if a.prediction_id == lab.prediction_id and a.timestamp <= lab.timestamp <= a.timestamp + HORIZON
        ]
        if match and match[0] in winners:
            out.append(("label", lab.prediction_id, lab.timestamp, winners[match[0]] == raw))
        elif match:
            winners[match[0]] = raw
    return sorted(out)


ids = st.sampled_from("abc")
pred_events = st.lists(st.builds(pred, ids, st.integers(0, 60), st.integers(0, 1)), max_size=20)
label_events = st.lists(st.builds(label, ids, st.integers(0, 80), st.sampled_from(["a", "b"])), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    preds=pred_events,
    labels=label_events,
    order=st.lists(st.booleans(), max_size=40),
    lateness=st.integers(0, 15),
    cut=st.integers(0, 40),
)
def test_duplicates_do_not_depend_on_interleaving_or_restore(
    preds: list[PredictionEvent], labels: list[LabelEvent], order: list[bool], lateness: int, cut: int
) -> None:
    p = [(e, payload(e)) for e in preds]
    q = [(e, payload(e)) for e in labels]
    straight = feed(LabelJoin(HORIZON, 1000, 1000), p + q, lateness, [-(10**9)] * 2)
    merged: list[Event] = []
    pp, qq = list(p), list(q)
    for take_pred in order:
        if take_pred and pp:
            merged.append(pp.pop(0))
        elif qq:
            merged.append(qq.pop(0))
    merged += pp + qq
    join, wms = LabelJoin(HORIZON, 1000, 1000), [-(10**9)] * 2
    first = feed_prefix(join, merged[:cut], lateness, wms)
    join = pickle.loads(pickle.dumps(join))
    rest = feed(join, merged[cut:], lateness, wms)
    assert canonical(first + rest) == canonical(straight)
    assert sorted((d.kind, d.prediction_id, d.event_time, d.exact) for d in straight) == oracle(
        p, q, lateness
    )
    assert all(d.model_id == "m" and d.model_version == "2" and d.segment == "s" for d in straight)


def feed_prefix(join: LabelJoin, events: Sequence[Event], lateness: int, wms: list[int]) -> list[Duplicate]:
    """As ``feed`` without the final flush (the run goes on after a checkpoint)."""
    found: list[Duplicate] = []
    for event, raw in events:
        if isinstance(event, PredictionEvent):
            if event.timestamp >= wms[0]:
                join.on_prediction(event, "s", digest=payload_digest(raw), source=raw)
                wms[0] = max(wms[0], event.timestamp - lateness)
        elif event.timestamp >= wms[1]:
            join.on_label(event, digest=payload_digest(raw), source=raw)
            wms[1] = max(wms[1], event.timestamp - lateness)
        join.advance(wms[0], wms[1])
        found += join.take_duplicates()
    return found


def test_exact_and_conflicting_duplicates_carry_both_digests_and_the_source() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred("p", 10), "eu", digest=b"A" * 8, source="rec-1")
    join.on_prediction(pred("p", 10), "eu", digest=b"A" * 8, source="rec-2")
    join.on_prediction(pred("p", 11, variant=1), "eu", digest=b"B" * 8, source="rec-3")
    assert join.on_label(label("p", 12), digest=b"L" * 8) is not None
    join.on_label(label("p", 12), digest=b"L" * 8, source="lab-2")
    join.on_label(label("p", 13, "b"), digest=b"M" * 8, source="lab-3")
    found = [(d.kind, d.exact, d.first_digest, d.digest, d.segment, d.source) for d in join.take_duplicates()]
    assert found == [
        ("prediction", True, b"A" * 8, b"A" * 8, "eu", "rec-2"),
        ("prediction", False, b"A" * 8, b"B" * 8, "eu", "rec-3"),
        ("label", True, b"L" * 8, b"L" * 8, "eu", "lab-2"),
        ("label", False, b"L" * 8, b"M" * 8, "eu", "lab-3"),
    ]
    assert join.take_duplicates() == []
    assert join.counters["duplicate_predictions"] == 2 and join.counters["duplicate_labels"] == 2


def test_held_labels_claimed_by_a_late_prediction_report_their_duplicates() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_label(label("p", 12), digest=b"L" * 8, source="first")
    join.on_label(label("p", 13, "b"), digest=b"M" * 8, source="second")
    assert join.on_prediction(pred("p", 10), "s") is not None
    (dup,) = join.take_duplicates()
    assert (dup.kind, dup.exact, dup.first_digest, dup.digest, dup.source) == (
        "label",
        False,
        b"L" * 8,
        b"M" * 8,
        "second",
    )
    # the joined record remembers the winner's digest: a later re-send of it is exact
    join.on_label(label("p", 12), digest=b"L" * 8)
    assert [d.exact for d in join.take_duplicates()] == [True]


def test_duplicate_of_an_expired_prediction_is_still_recognised() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred("p", 10), "s", digest=b"A" * 8)
    assert [e.prediction_id for e in join.advance(0, 10 + HORIZON + 1)] == ["p"]
    join.on_prediction(pred("p", 10), "s", digest=b"A" * 8)
    assert [(d.kind, d.exact) for d in join.take_duplicates()] == [("prediction", True)]


def _format_1(join: LabelJoin) -> dict[str, Any]:
    """The checkpoint state as it was written before records held payload digests."""
    state = join.__getstate__()
    old_groups = []
    for group in state["groups"]:
        parts = []
        for pos, end, klen in join_records._walk(group):
            at = pos + join_records._AT + klen
            crc = join_records._HEAD.unpack_from(group, pos)[1]
            ts_state = group[at : at + join_records._TS.size]
            joined = join_records._TS.unpack_from(group, at)[1] == join_records._JOINED
            rest = b"" if joined else group[at + join_records._BODY : end]
            size = join_records._AT + klen + join_records._TS.size + len(rest)
            parts.append(
                join_records._HEAD.pack(size, crc) + group[pos + join_records._AT : at] + ts_state + rest
            )
        old_groups.append(b"".join(parts))
    for name in ("record_format", "held_digests", "duplicates"):
        del state[name]
    state["groups"] = old_groups
    return state


def test_a_checkpoint_from_before_digests_restores_and_counts_its_duplicates_as_exact() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred("p", 10), "s")
    join.on_prediction(pred("q", 10), "s")
    join.on_label(label("q", 12))
    restored = LabelJoin.__new__(LabelJoin)
    restored.__setstate__(_format_1(join))
    outcome = restored.on_label(label("p", 15, "a"))
    assert outcome is not None and outcome.features_json == '{"x":0.0}' and outcome.correct == 1
    restored.on_prediction(pred("q", 10, variant=1), "s")
    restored.on_label(label("q", 13, "b"))
    assert [(d.kind, d.exact, d.first_digest) for d in restored.take_duplicates()] == [
        ("prediction", True, UNKNOWN_DIGEST),
        ("label", True, UNKNOWN_DIGEST),
    ]
