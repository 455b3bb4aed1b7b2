"""LabelJoin's batch entries (``on_predictions``/``on_labels``, fed decoded columns) against a loop of
the per-event calls: the same outcomes, duplicates, orphans, expiries, counters and state, under
random batching of random logs (reused ids, exact and conflicting re-sends, labels before their
prediction, out-of-order times, tight bounds so eviction happens)."""

from __future__ import annotations

import pickle
import struct
import zlib
from itertools import count
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators.join import LabelJoin, payload_digest, payload_digests
from driftline.operators.join.records import _id_key
from driftline.schemas.events import LabelEvent, Prediction, PredictionEvent

HORIZON = 5_000

outputs = st.one_of(
    st.builds(Prediction, label=st.sampled_from(["a", "b", 1, True])),
    st.builds(Prediction, score=st.floats(0, 1)),
    st.builds(Prediction, value=st.floats(-10, 10)),
    st.builds(Prediction, probabilities=st.just({"a": 0.25, "b": 0.75})),
)
feature_maps = st.one_of(
    st.fixed_dictionaries({"x": st.floats(allow_nan=True), "c": st.sampled_from(["u", "v"])}),
    st.fixed_dictionaries({"x": st.integers(-(2**70), 2**70), "c": st.none()}),
    st.dictionaries(st.sampled_from(["x", "y", "z"]), st.one_of(st.floats(-1, 1), st.booleans()), max_size=3),
)


@st.composite
def events(draw: st.DrawFn) -> tuple[str, Any, bytes]:
    """('prediction' | 'label', the event, its payload)."""
    pid = draw(st.sampled_from([f"p{i}" for i in range(5)]))
    ts = draw(st.integers(0, 12_000))
    if draw(st.booleans()):
        event: Any = PredictionEvent(
            prediction_id=pid, model_id=draw(st.sampled_from(["m", "n"])),
            model_version=draw(st.sampled_from("12")), timestamp=ts, prediction=draw(outputs),
            features=draw(feature_maps))
        kind = "prediction"
    else:
        event = LabelEvent(prediction_id=pid, timestamp=ts,
                           label=draw(st.sampled_from(["a", "b", 1, 0.5, True])),
                           model_id=draw(st.sampled_from([None, "m"])))
        kind = "label"
    # a re-send carries the same payload (exact), another event of the same id another one
    return kind, event, event.model_dump_json().encode() if draw(st.booleans()) else b"%d" % ts


def _columns(features: list[dict[str, Any]]) -> tuple[Any, ...] | None:
    """The feature maps as the decoder's columns, if they share one layout."""
    layouts = {tuple(f) for f in features}
    if len(layouts) != 1 or not next(iter(layouts)):
        return None
    names = next(iter(layouts))
    columns = [[f[name] for f in features] for name in names]
    numbers = [np.array(c, dtype=np.float64) if set(map(type, c)) == {float} else None for c in columns]
    return names, columns, numbers


def _runs(log: list[tuple[str, Any, bytes]], cuts: list[int]) -> list[list[tuple[str, Any, bytes]]]:
    """The log cut at ``cuts`` and wherever the kind changes: each run is one batch call."""
    runs: list[list[tuple[str, Any, bytes]]] = []
    for i, item in enumerate(log):
        if not runs or i in cuts or runs[-1][0][0] != item[0]:
            runs.append([])
        runs[-1].append(item)
    return runs


@settings(max_examples=200, deadline=None)
@given(log=st.lists(events(), max_size=60), cuts=st.lists(st.integers(0, 60), max_size=8),
       rerouted=st.booleans(), bounds=st.sampled_from([(1000, 1000), (3, 2)]), use_columns=st.booleans())
def test_batch_entries_equal_the_per_event_calls(
    log: list[tuple[str, Any, bytes]], cuts: list[int], rerouted: bool, bounds: tuple[int, int],
    use_columns: bool,
) -> None:
    """``use_columns``: a run of one feature layout also hands its features over as columns (as the
    decoder's), packed at once."""
    one, batched = LabelJoin(HORIZON, *bounds), LabelJoin(HORIZON, *bounds)
    marks = {"prediction": -(2**40), "label": -(2**40)}
    for n, run in enumerate(_runs(log, set(cuts))):
        kind = run[0][0]
        digests = [payload_digest(payload) for _, _, payload in run]
        sources = [(n, i) for i in range(len(run))]
        want, want_duplicates = [], []
        for i, (_, event, _) in enumerate(run):
            before = one.counters["duplicate_predictions"]
            if kind == "prediction":
                segment = "region=eu" if event.model_id == "m" else ""
                outcome = one.on_prediction(event, segment, rerouted, digests[i], sources[i])
                if one.counters["duplicate_predictions"] != before:
                    want_duplicates.append(i)
            else:
                outcome = one.on_label(event, rerouted, digests[i], sources[i])
            if outcome is not None:
                want.append(outcome)
        events_ = [event for _, event, _ in run]
        ids, times = [e.prediction_id for e in events_], [e.timestamp for e in events_]
        if kind == "prediction":
            contexts = [(e.model_id, e.model_version, "region=eu" if e.model_id == "m" else "")
                        for e in events_]
            got, duplicates = batched.on_predictions(
                ids, times, contexts, [e.prediction for e in events_], [e.features for e in events_], digests,
                sources, rerouted, columns=_columns([e.features for e in events_]) if use_columns else None)
            assert duplicates == want_duplicates
        else:
            got = batched.on_labels(ids, times, [e.label for e in events_], [e.model_id for e in events_],
                                    digests, sources, rerouted)
        assert got == want
        marks[kind] = max(marks[kind], max(times) - 1_000)
        assert batched.advance(marks["prediction"], marks["label"]) == one.advance(marks["prediction"],
                                                                                    marks["label"])
        assert batched.take_duplicates() == one.take_duplicates()
        assert batched.take_orphans() == one.take_orphans()
        assert batched.counters == one.counters
    assert pickle.dumps(batched) == pickle.dumps(one)


def test_labels_equal_in_value_but_not_in_type_keep_their_own_text() -> None:
    """A batch's labels are normalised once per distinct label: True, 1, 1.0 and "1" are equal or
    hash alike but each keeps its own text and value, as when they come one by one."""
    labels: list[bool | int | float | str] = [True, 1, 1.0, "1", 0.5, True, "true"]
    ids = [f"p{i}" for i in range(len(labels))]
    one, batched = LabelJoin(HORIZON, 100, 100), LabelJoin(HORIZON, 100, 100)
    for join in (one, batched):
        for i, pid in enumerate(ids):
            prediction = Prediction(label="1") if i % 2 else Prediction(score=0.75)
            join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=1_000,
                                               prediction=prediction, features={"x": 1.0}), "")
    want = [one.on_label(LabelEvent(prediction_id=pid, label=label, timestamp=2_000))
            for pid, label in zip(ids, labels, strict=True)]
    got = batched.on_labels(ids, [2_000] * len(ids), labels, [None] * len(ids),
                            [payload_digest(LabelEvent(prediction_id=pid, label=label, timestamp=2_000)
                                            .model_dump_json().encode())
                             for pid, label in zip(ids, labels, strict=True)],
                            [None] * len(ids))
    assert got == want
    assert [(o.label, o.correct) for o in got] == [
        ("true", 1), ("1", 1), ("1", 1), ("1", 1), ("0.5", None), ("true", 0), ("true", 1)]


def test_a_long_batch_of_labels_gives_the_outcomes_of_the_per_event_calls() -> None:
    """A batch of more labels than on_labels turns into outcomes at once (``_OUTCOMES_AT_ONCE``,
    while the records read are in cache): every chunk's outcomes, in label order, with held labels
    and duplicates between, as the per-event calls give them."""
    ids = [f"p{i}" for i in range(150)]
    one, batched = LabelJoin(HORIZON, 1000, 1000), LabelJoin(HORIZON, 1000, 1000)
    for join in (one, batched):
        join.on_predictions(ids, [1_000 + i for i in range(150)], [("m", "1", "")] * 150,
                            [Prediction(score=i / 150) for i in range(150)],
                            [{"x": float(i)} for i in range(150)],
                            [payload_digest(pid.encode()) for pid in ids], [None] * 150)
    # every id twice (the second a duplicate), every 7th label of an id without a prediction (held)
    pids = [ids[i % 150] if i % 7 else f"q{i}" for i in range(300)]
    values: list[bool | int | float | str] = ["1" if i % 3 else 0 for i in range(300)]
    digests = [payload_digest(b"%d" % i) for i in range(300)]
    want = [one.on_label(LabelEvent(prediction_id=pid, label=value, timestamp=3_000 + i), False, digest, i)
            for i, (pid, value, digest) in enumerate(zip(pids, values, digests, strict=True))]
    got = batched.on_labels(pids, [3_000 + i for i in range(300)], values, [None] * 300, digests,
                            list(range(300)))
    # each id joins once: with its first label, or its second where its first went to a q id
    assert len(got) == 150 and got == [o for o in want if o is not None]
    assert batched.take_duplicates() == one.take_duplicates()
    assert pickle.dumps(batched) == pickle.dumps(one)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_payload_digest_is_the_crc32_then_the_length_of_the_payload(payloads: list[bytes]) -> None:
    large = bytes(range(256)) * 64
    batch = [*payloads, large, *payloads]
    assert payload_digests(batch) == list(map(payload_digest, batch))
    for payload in batch:
        assert payload_digest(payload) == struct.pack(">II", zlib.crc32(payload), len(payload))


def test_a_label_joins_its_record_after_a_payload_holding_its_id_key() -> None:
    """on_labels finds an id's first record by a search for its id key's bytes in the group: a
    record earlier in the group whose payload holds those bytes (a float feature's, here) is not
    taken for it, and the label joins its own prediction as the per-event call does."""
    key = _id_key("p")
    one, batched = LabelJoin(HORIZON, 100, 100), LabelJoin(HORIZON, 100, 100)
    gid = one._gid(zlib.crc32(key))
    decoy = next(f"d{i}" for i in count() if one._gid(zlib.crc32(_id_key(f"d{i}"))) == gid)  # in p's group
    # two floats whose bytes start as a pending record of p at 1_000 would after its head
    holding = struct.unpack("<2d", (key + struct.pack("<qB", 1_000, 0)).ljust(16, b"\0"))
    for join in (one, batched):
        for pid, (x, y) in ((decoy, holding), ("p", (0.5, 0.5))):
            join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=1_000,
                                               prediction=Prediction(label="a"), features={"x": x, "y": y}),
                               "")
    group = batched._groups[gid]
    assert group.find(key) < group.rfind(key)  # the payload's bytes come first
    label = LabelEvent(prediction_id="p", label="a", timestamp=2_000)
    digest = payload_digest(label.model_dump_json().encode())
    want = one.on_label(label, False, digest)
    assert want is not None and want.features_json == '{"x":0.5,"y":0.5}'
    assert batched.on_labels(["p"], [2_000], ["a"], [None], [digest], [None]) == [want]
    assert pickle.dumps(batched) == pickle.dumps(one)
