"""Stage 2 merges a window's partials as parsed when they arrived; a restore parses them again.

The parsed copies are not checkpointed, so a window whose partials arrived before a checkpoint
and closes after its restore must give the rows of a run that was never restored. What stage 2
holds of an open window is the partials' JSON and their parsed statistics with the values in arrays:
1,000 models keep thousands of windows open, and per-column lists and dicts were most of what the
cyclic collector scanned (docs/scaling.md, session 42).
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import Settings
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import EventColumns, SketchValues, WindowAccumulator, values_partial
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import Partial, Progress, encode_model_event
from driftline.schemas.events import Prediction

SETTINGS = Settings(topics={"partitions": 3, "model_events_partitions": 1}, windows={"sizes_s": [60]})


def _partial(seed: int, n: int) -> dict[str, Any]:
    rng = random.Random(seed)
    acc = WindowAccumulator()
    acc.add([{"x": rng.gauss(0.2 * seed, 1.0), "c": rng.choice("abc")} for _ in range(n)],
            [Prediction(label=rng.choice([0, 1]), score=rng.random()) for _ in range(n)],
            [rng.uniform(1.0, 9.0) for _ in range(n)])
    return dict(orjson.loads(orjson.dumps(acc.to_partial())))


def _values_form(seed: int, n: int) -> dict[str, Any]:
    """A partial in the values form, as shards send a window they hold few events of."""
    rng = random.Random(seed)
    cols = EventColumns.of([{"x": rng.gauss(0.2 * seed, 1.0), "c": rng.choice("abc")} for _ in range(n)],
                           [Prediction(label=rng.choice([0, 1]), score=rng.random()) for _ in range(n)],
                           [rng.uniform(1.0, 9.0) for _ in range(n)])
    return dict(orjson.loads(orjson.dumps(values_partial([cols]))))


def _model() -> ModelProcessor:
    model = ModelProcessor(0, SETTINGS)
    rng = random.Random(7)
    profile = build_profile("m", "1", {"x": [rng.gauss(0.0, 1.0) for _ in range(500)],
                                       "c": [rng.choice("abc") for _ in range(500)]},
                            label_column=None, prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    model.windows.profiles.add(profile)
    return model


def _records(start: int, events: list[Partial | Progress]) -> list[RawRecord]:
    return [RawRecord(SETTINGS.topics.model_events, 0, start + i, 0, None, encode_model_event(e))
            for i, e in enumerate(events)]


def _rows(out: list[Any]) -> list[Any]:
    return [orjson.loads(m.value) for m in out if m.topic == SETTINGS.topics.sink]


@pytest.mark.parametrize("form", [_partial, _values_form])
def test_a_window_closing_after_a_restore_gives_the_rows_of_one_never_restored(
        form: Callable[[int, int], dict[str, Any]]) -> None:
    partials = [Partial(shard, "m", "1", "", 60, 0, 60_000, form(shard, 5 + 7 * shard))
                for shard in (2, 0, 1)]  # arriving out of shard order: merged in shard order
    closing = [Progress(shard, 60_000, 60_000, 60_000) for shard in range(3)]
    straight = _model()
    straight.process(_records(0, [*partials]))
    expected = _rows(straight.process(_records(3, closing)))
    assert any(msg["table"] == "drift_scores" for msg in expected)

    restarted = _model()
    restarted.process(_records(0, partials[:2]))
    assert restarted.windows.parsed  # parsed on arrival ...
    restored = ModelProcessor.restore(restarted.snapshot(), SETTINGS)
    assert set(restored.windows.parsed) == set(restarted.windows.parsed)  # ... and again on restore
    restored.windows.parsed.clear()  # as a checkpoint without them would give: parsed at close
    restored.process(_records(2, partials[2:]))
    assert _rows(restored.process(_records(3, closing))) == expected


def test_an_open_window_is_held_as_its_partials_json_and_arrays_of_values() -> None:
    # 3 and 40 values a column: the few a column's moments are summed in Python, and the many
    sent = {shard: _values_form(shard, n) for shard, n in ((0, 3), (1, 40))}
    model = _model()
    model.process(_records(0, [Partial(shard, "m", "1", "", 60, 0, 60_000, p) for shard, p in sent.items()]))
    (held,) = model.windows.partials.values()
    assert {shard: orjson.loads(blob) for shard, blob in held.items()} == sent
    assert all(type(blob) is bytes for blob in held.values())
    (parsed,) = model.windows.parsed.values()
    for shard, acc in parsed.items():
        columns = [*acc.features.values(), acc.latency]
        values = [c.values for c in columns if isinstance(c, SketchValues) and c.values is not None]
        assert len(values) == 2  # x and the latency
        for v in values:
            assert type(v) is np.ndarray and not gc.is_tracked(v) and v.size == sent[shard]["n_events"]


def test_a_checkpoint_holding_partials_as_dicts_restores_them_as_json() -> None:
    """A checkpoint of a version that held the partials as dicts: the same rows as one never restored."""
    partials = [Partial(shard, "m", "1", "", 60, 0, 60_000, _values_form(shard, 4 + 9 * shard))
                for shard in range(3)]
    closing = [Progress(shard, 60_000, 60_000, 60_000) for shard in range(3)]
    straight = _model()
    straight.process(_records(0, partials))
    expected = _rows(straight.process(_records(3, closing)))

    older = _model()
    older.process(_records(0, partials))
    (key,) = older.windows.partials
    older.windows.partials[key] = {p.shard: p.partial for p in partials}  # as that version held them
    restored = ModelProcessor.restore(older.snapshot(), SETTINGS)
    assert all(type(blob) is bytes for blob in restored.windows.partials[key].values())
    assert _rows(restored.process(_records(3, closing))) == expected


def test_a_checkpointed_dict_that_does_not_encode_is_dead_lettered_on_restore() -> None:
    """A held dict JSON cannot carry (an int past 64 bits): dropped on restore with a dead-letter
    row naming its shard, the other shard's partial kept."""
    partials = [Partial(shard, "m", "1", "", 60, 0, 60_000, _values_form(shard, 5)) for shard in range(2)]
    older = _model()
    older.process(_records(0, partials))
    (key,) = older.windows.partials
    bad = {**partials[0].partial, "n_events": 2**70}
    older.windows.partials[key] = {0: bad, 1: partials[1].partial}
    restored = ModelProcessor.restore(older.snapshot(), SETTINGS)
    assert restored.windows.totals["malformed_partials"] == 1
    assert list(restored.windows.partials[key]) == [1]
    out = restored.process([])
    (dead,) = [orjson.loads(m.value) for m in out if m.topic == SETTINGS.topics.dead_letters]
    assert "stage-1 shard 0" in dead["error_message"]
