"""FeatureStats / WindowAccumulator / merge_partials: counts, moments, categories, partials."""

from __future__ import annotations

import gc
import math
import random

import numpy as np
import orjson
import pytest

from driftline.operators import watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.window_stats import (
    MAX_CATEGORIES,
    OVERFLOW,
    ColumnBlock,
    EventColumns,
    FeatureStats,
    WindowAccumulator,
    WindowBuffer,
    merge_accumulators,
    merge_partials,
    values_partial,
)
from driftline.schemas.events import Prediction


def _events(seed: int, n: int) -> tuple[list[dict], list[Prediction], list[float | None]]:
    rng = random.Random(seed)
    feats: list[dict] = []
    preds, lats = [], []
    for i in range(n):
        f: dict = {"x": rng.gauss(0, 1), "k": rng.randint(0, 9), "c": rng.choice("abc")}
        if i % 10 == 0:
            f["x"] = None
        if i % 7 == 0:
            del f["c"]
        if i % 13 == 0:
            f["x"] = math.nan
        feats.append(f)
        preds.append(Prediction(label=rng.choice([True, False]), score=rng.random()))
        lats.append(None if i % 5 == 0 else rng.uniform(1, 50))
    return feats, preds, lats


def test_feature_stats_numeric_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3, 2, 10_000)
    s = FeatureStats()
    for chunk in np.array_split(values, 7):
        s.add(chunk.tolist())
    assert (s.count, s.n, s.missing, s.invalid) == (10_000, 10_000, 0, 0)
    assert math.isclose(s.mean, values.mean(), rel_tol=1e-12)
    assert s.variance is not None and math.isclose(s.variance, values.var(ddof=1), rel_tol=1e-10)
    assert (s.min, s.max) == (values.min(), values.max())
    assert s.sketch.count == 10_000


def test_feature_stats_classifies_values() -> None:
    s = FeatureStats()
    s.add([1, 2.5, None, math.nan, math.inf, -math.inf, "a", True, False, "true", 10**400])
    assert (s.count, s.missing, s.invalid, s.n) == (11, 1, 4, 2)  # 10**400 is beyond float: invalid
    assert s.categories == {"a": 1, "true": 2, "false": 1}
    s.add([None, None])
    s.add(["b", None])
    s.add([True])
    assert (s.count, s.missing) == (16, 4)
    assert s.categories == {"a": 1, "true": 3, "false": 1, "b": 1}


def test_category_cap_keeps_most_frequent_newcomers() -> None:
    s = FeatureStats()
    s.add([f"v{i}" for i in range(MAX_CATEGORIES - 1)])
    s.add(["rare1", "frequent", "frequent", "rare0"])
    assert "frequent" in s.categories and "rare0" not in s.categories and "rare1" not in s.categories
    assert s.categories[OVERFLOW] == 2
    assert len(s.categories) == MAX_CATEGORIES + 1  # the cap plus the overflow bucket
    assert s.n_categorical == MAX_CATEGORIES - 1 + 4


def test_feature_stats_merge_matches_single_pass() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5_000), rng.normal(10, 3, 3_000)
    sa, sb, sall = FeatureStats(), FeatureStats(), FeatureStats()
    sa.add([*a.tolist(), "x", None])
    sb.add([*b.tolist(), "y", "x"])
    sall.add([*a.tolist(), "x", None, *b.tolist(), "y", "x"])
    sa.merge(sb)
    assert (sa.count, sa.n, sa.missing, sa.categories) == (sall.count, sall.n, sall.missing, sall.categories)
    assert math.isclose(sa.mean, sall.mean, rel_tol=1e-12)
    assert math.isclose(sa.m2, sall.m2, rel_tol=1e-10)
    assert sa.sketch == sall.sketch and (sa.min, sa.max) == (sall.min, sall.max)


def test_accumulator_counts_absent_and_late_features() -> None:
    acc = WindowAccumulator()
    acc.add([{"x": 1.0}, {"x": 2.0}], [Prediction(value=1.0)] * 2, [None, None])
    acc.add([{"y": "a"}, {"x": 3.0, "y": "b"}], [Prediction(value=2.0)] * 2, [5.0, None])
    x, y = acc.features["x"], acc.features["y"]
    assert (x.count, x.missing, x.n, x.mean) == (4, 1, 3, 2.0)
    assert (y.count, y.missing, y.categories) == (4, 2, {"a": 1, "b": 1})
    assert acc.n_events == 4
    assert (acc.prediction_value.n, acc.prediction_value.mean) == (4, 1.5)
    assert acc.prediction_label.missing == 4
    assert (acc.latency.n, acc.latency.missing) == (1, 3)


def test_accumulator_predictions() -> None:
    acc = WindowAccumulator()
    preds = [Prediction(label=1, score=0.2), Prediction(label="no", score=0.4), Prediction(label=True)]
    acc.add([{}, {}, {}], preds, [1.0, 2.0, 3.0])
    assert acc.prediction_label.categories == {"1": 1, "no": 1, "true": 1}
    assert acc.prediction_label.n == 0
    assert (acc.prediction_value.n, acc.prediction_value.missing) == (2, 1)
    assert acc.latency.mean == 2.0


def test_partial_round_trips_through_orjson() -> None:
    acc = WindowAccumulator()
    acc.add(*_events(0, 2_000))
    partial = acc.to_partial()
    wire = orjson.loads(orjson.dumps(partial))
    assert wire == partial
    again = WindowAccumulator.from_partial(wire)
    assert again.to_partial() == partial
    x = again.features["x"]
    # i % 13 == 0 is NaN (154 events), else i % 10 == 0 is None (200 minus the 16 multiples of 130)
    assert (x.count, x.missing, x.invalid) == (2_000, 184, 154)
    assert again.features["c"].missing == 2_000 // 7 + 1


def test_merge_partials_equals_one_accumulator() -> None:
    shards = [_events(seed, 1_500) for seed in range(4)]
    partials = []
    whole = WindowAccumulator()
    for feats, preds, lats in shards:
        acc = WindowAccumulator()
        acc.add(feats, preds, lats)
        partials.append(orjson.loads(orjson.dumps(acc.to_partial())))
        whole.add(feats, preds, lats)
    merged = merge_partials(partials)
    assert merged.n_events == whole.n_events == 6_000
    for name, stats in whole.features.items():
        m = merged.features[name]
        assert (m.count, m.missing, m.invalid, m.n) == (stats.count, stats.missing, stats.invalid, stats.n)
        assert m.sketch == stats.sketch and m.categories == stats.categories
        assert math.isclose(m.mean, stats.mean, rel_tol=1e-9, abs_tol=1e-12)
    assert merged.prediction_label.categories == whole.prediction_label.categories
    assert merged.latency.sketch == whole.latency.sketch
    # Same order, same floats: stage 2 is deterministic; another order changes only the last bits.
    again = merge_partials(partials)
    assert again.features["x"].mean == merged.features["x"].mean
    backwards = merge_partials(partials[::-1])
    assert backwards.features["x"].sketch == merged.features["x"].sketch
    assert math.isclose(backwards.features["x"].m2, merged.features["x"].m2, rel_tol=1e-9)


def test_merge_partials_counts_features_absent_from_a_shard() -> None:
    a, b = WindowAccumulator(), WindowAccumulator()
    a.add([{"x": 1.0}] * 3, [Prediction(value=0.0)] * 3, [None] * 3)
    b.add([{"z": "q"}] * 2, [Prediction(value=0.0)] * 2, [None] * 2)
    merged = merge_partials([a.to_partial(), b.to_partial()])
    assert (merged.features["x"].count, merged.features["x"].missing) == (5, 2)
    assert (merged.features["z"].count, merged.features["z"].missing) == (5, 3)


def test_merge_accumulators_of_parsed_partials_is_merge_partials_and_leaves_them_as_they_were() -> None:
    """Stage 2 merges the partials as parsed when they arrived (not parsing them again): the
    merged window is merge_partials' to the bit, and the parsed partials are not changed by it."""
    partials = []
    for seed in range(4):
        acc = WindowAccumulator()
        acc.add(*_events(seed, 300 + 100 * seed))
        partials.append(orjson.loads(orjson.dumps(acc.to_partial())))
    partials[2]["features"].pop("c")  # a feature one shard never saw
    parsed = [WindowAccumulator.from_partial(p) for p in partials]
    merged = merge_accumulators(parsed)
    expected = merge_partials(partials)
    fresh = [WindowAccumulator.from_partial(p).to_partial() for p in partials]
    assert [p.to_partial() for p in parsed] == fresh

    def as_partial(m: object) -> dict:
        acc = WindowAccumulator()
        for name in ("n_events", "features", "prediction_label", "prediction_value", "latency"):
            setattr(acc, name, getattr(m, name))
        return acc.to_partial()

    assert repr(as_partial(merged)) == repr(as_partial(expected))


def test_add_array_equals_add_of_the_same_values() -> None:
    """The batch scorer's array path and the pipeline's value path accumulate the same statistics."""
    rng = np.random.default_rng(21)
    values = rng.normal(5.0, 2.0, 3_000)
    values[:7] = np.nan
    values[7:9] = [np.inf, -np.inf]
    listed = [None if math.isnan(v) else v for v in values.tolist()]
    by_array, by_value = FeatureStats(), FeatureStats()
    by_array.add_array(values)
    by_value.add(listed)
    assert by_array.to_dict() == by_value.to_dict()
    assert (by_array.count, by_array.missing, by_array.invalid, by_array.n) == (3_000, 7, 2, 2_991)


def test_add_counts_equals_add_of_the_same_labels() -> None:
    labels = ["a"] * 5 + ["b"] * 3 + [True] * 2 + [None] * 4
    by_counts, by_value = FeatureStats(), FeatureStats()
    by_counts.add_counts({"a": 5, "b": 3, "true": 2, "never": 0}, missing=4)
    by_value.add(labels)
    assert by_counts.to_dict() == by_value.to_dict() and "never" not in by_counts.categories


_ODD_VALUES: list = [None, math.nan, math.inf, -math.inf, 10**400, -(10**400), True, False, "true", "a", 0, 1,
                     2**63 + 1, -0.0, 1e150]


def _odd_events(seed: int, n: int, categories: int = 6) -> tuple[list[dict], list[Prediction], list]:
    """Events whose features come and go and mix every kind of value the schema admits."""
    rng = random.Random(seed)
    feats: list[dict] = []
    preds: list[Prediction] = []
    lats: list = []
    for i in range(n):
        f: dict = {"x": rng.gauss(0, 1), "c": f"k{rng.randrange(categories)}", "i": rng.randrange(-5, 5)}
        if rng.random() < 0.3:
            f["m"] = rng.choice([*_ODD_VALUES, rng.random(), "b"])
        if rng.random() < 0.1:
            f["x"] = rng.choice(_ODD_VALUES)
        if rng.random() < 0.05:
            del f["c"]
        if i > n // 2 and rng.random() < 0.5:
            f["late"] = rng.random() if rng.random() < 0.5 else None
        feats.append(f)
        label = rng.choice([None, 0, 3, True, "yes"])
        preds.append(Prediction(label=label, score=rng.random()) if rng.random() < 0.7
                     else Prediction(value=rng.gauss(0, 5)))
        lats.append(None if rng.random() < 0.2 else rng.uniform(0, 50))
    return feats, preds, lats


def _blocks_vs_rows(seed: int, n: int, chunk: int, categories: int = 6) -> None:
    """Events gathered from random batches into column blocks, drained in chunks, give the partial
    the row form gives (WindowAccumulator.add of the same events in the same chunks), bit for bit."""
    feats, preds, lats = _odd_events(seed, n, categories)
    rng = random.Random(seed + 1)
    buffer, blocks = WindowBuffer(), WindowAccumulator()
    kept: list[int] = []
    start = 0
    while start < n:
        stop = min(n, start + rng.randint(1, 3 * chunk))
        columns = EventColumns.of(feats[start:stop], preds[start:stop], lats[start:stop])
        if rng.random() < 0.3:
            rows = list(range(stop - start))
            buffer.append(columns)
        else:
            rows = sorted(rng.sample(range(stop - start), rng.randint(0, stop - start)))
            buffer.append(columns.take(np.array(rows, dtype=np.intp)))
        kept.extend(start + r for r in rows)
        buffer.drain(blocks, chunk, final=False)
        assert len(buffer) < chunk
        start = stop
    buffer.drain(blocks, chunk, final=True)
    assert len(buffer) == 0
    rows_acc = WindowAccumulator()
    for i in range(0, len(kept), chunk):
        part = kept[i : i + chunk]
        rows_acc.add([feats[j] for j in part], [preds[j] for j in part], [lats[j] for j in part])
    assert repr(blocks.to_partial()) == repr(rows_acc.to_partial())  # repr: NaN and inf too


def test_column_blocks_equal_rows_under_random_batching() -> None:
    for seed in range(12):
        _blocks_vs_rows(seed, n=400, chunk=37)


def test_column_blocks_equal_rows_past_the_category_cap() -> None:
    _blocks_vs_rows(7, n=6000, chunk=2048, categories=3 * MAX_CATEGORIES)


def test_column_blocks_survive_a_pickle() -> None:
    import pickle

    feats, preds, lats = _odd_events(3, 50)
    buffer = WindowBuffer()
    buffer.append(EventColumns.of(feats, preds, lats).take(np.arange(0, 50, 2)))
    restored = pickle.loads(pickle.dumps(buffer))
    a, b = WindowAccumulator(), WindowAccumulator()
    buffer.drain(a, 8, final=True)
    restored.drain(b, 8, final=True)
    assert len(restored) == 0 and repr(a.to_partial()) == repr(b.to_partial())


def _values_form_vs_one_chunk(seed: int, n: int, categories: int = 6) -> None:
    """A window's events, as random batches' column blocks, in the values form (orjson and back,
    parsed) merge to what one chunk of them in an accumulator merges to: every column's counts,
    moments (repr: -0.0 apart from 0.0), categories and sketch."""
    feats, preds, lats = _odd_events(seed, n, categories)
    rng = random.Random(seed + 2)
    parts: list[EventColumns] = []
    start = 0
    while start < n:
        stop = min(n, start + rng.randint(1, 5))
        columns = EventColumns.of(feats[start:stop], preds[start:stop], lats[start:stop])
        rows = sorted(rng.sample(range(stop - start), rng.randint(0, stop - start)))
        parts.append(columns if rng.random() < 0.3 else columns.take(np.array(rows, dtype=np.intp)))
        start = stop
    accumulated = WindowAccumulator()
    accumulated.add_chunk(parts)
    wire = orjson.loads(orjson.dumps(values_partial(parts)))
    assert wire["form"] == "values" and "mean" not in wire["latency"]
    parsed = WindowAccumulator.from_partial(wire)
    assert parsed.n_events == accumulated.n_events == sum(p.n for p in parts)
    got, expected = merge_accumulators([parsed]), merge_accumulators([accumulated])
    assert sorted(got.features) == sorted(expected.features)
    for name in expected.features:
        assert repr(got.features[name].to_dict()) == repr(expected.features[name].to_dict()), name
    for name in ("prediction_label", "prediction_value", "latency"):
        assert repr(getattr(got, name).to_dict()) == repr(getattr(expected, name).to_dict()), name


def test_values_form_is_the_partial_of_one_chunk() -> None:
    for seed in range(40):
        _values_form_vs_one_chunk(seed, n=1 + seed * 3)


def test_values_form_past_the_category_cap() -> None:
    _values_form_vs_one_chunk(5, n=1500, categories=3 * MAX_CATEGORIES)


@pytest.mark.parametrize("zeros", [True, False])
def test_values_form_moments_are_numpys_of_each_column_alone(zeros: bool) -> None:
    """Columns with as many values are reduced as one matrix's rows, and a column of fewer than 8
    values in Python: each column's mean and M2 must be what numpy gives it as its own array
    (pairwise sums past 8 and 128 values, -0.0 and 0.0, huge and tiny magnitudes), or filled
    windows' rows would change. Without zeros most short columns take the Python sums."""
    from driftline.operators.window_stats import _hold_as_rows, _set_moments, _values_stats

    rng = np.random.default_rng(11)
    for length in [*range(1, 40), 127, 128, 129, 255, 257, 1000, 2047]:
        columns = []
        for _ in range(int(rng.integers(1, 5))):
            x = rng.normal(size=length) * 10.0 ** rng.integers(-300, 99, size=length)
            if zeros:
                x[rng.random(length) < 0.2] = -0.0
                x[rng.random(length) < 0.1] = 0.0  # 0.0 beside -0.0: min and max keep numpy's sign of zero
            columns.append(x.tolist())
        built: list = []
        small: list = []
        parsed = [_values_stats(length, built, small,
                                {"missing": 0, "invalid": 0, "values": v, "categories": {}}) for v in columns]
        _set_moments(built)
        _hold_as_rows(small)
        for values, stats in zip(columns, parsed, strict=True):
            alone = FeatureStats()
            alone.add_array(np.array(values))
            assert repr((stats.mean, stats.m2, stats.min, stats.max)) == \
                repr((alone.mean, alone.m2, alone.min, alone.max)), length
            # held as an array (no object the collector scans), each value with its bits
            assert type(stats.values) is np.ndarray and not gc.is_tracked(stats.values)
            assert stats.values.tobytes() == np.array(values).tobytes()


def _column_events(block_list: list, name: str) -> list:
    """Per event of ``block_list`` (one column's blocks in order): its number, category key, or
    None where missing; "absent" where the event lacks the name."""
    out: list = []
    for block in block_list:
        for i in range(block.n):
            if block.present is not None and not block.present[i]:
                out.append("absent")
            elif block.missing is not None and block.missing[i]:
                out.append(None)
            elif block.codes is not None and block.codes[i] < len(block.keys):
                out.append(block.keys[block.codes[i]])
            else:
                out.append(repr(float(block.numbers[i])))
    return out


def _decoded(rng: random.Random, n: int) -> tuple[EventColumns, EventColumns]:
    """A decoded batch's columns (EventColumns.of with the decoder's columns: float columns, one of
    them now and then mixed, a number now and then invalid, and a categorical one), and the same
    events' columns made from the rows."""
    names = ["z", "x", "y", "w", "c"]
    columns: list[list] = [[rng.gauss(0, 1) for _ in range(n)] for _ in names[:-1]]
    columns.append([rng.choice("ab") for _ in range(n)])
    for column in columns[:-1]:
        if rng.random() < 0.2:
            column[rng.randrange(n)] = rng.choice([math.inf, -1e200, math.nan, -0.0])
    if rng.random() < 0.3:
        columns[1][rng.randrange(n)] = "odd"
    floats = [np.array(c) if all(type(v) is float for v in c) else None for c in columns]
    feats = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    preds = [Prediction(label=rng.choice(["0", "1"]), score=rng.random()) for _ in range(n)]
    lats = [rng.uniform(0, 9) for _ in range(n)]
    return EventColumns.of(feats, preds, lats, (names, columns, floats)), EventColumns.of(feats, preds, lats)


def test_values_form_of_decoded_batches_is_that_of_their_rows() -> None:
    """Groups taken from decoded batches (their all-float columns gathered as one matrix) make the
    values form the same events' columns made from rows make; pickled (as a checkpoint keeps a
    buffer) they are plain columns, pickled alike, with the same values form. Joined (a buffer's
    small parts), groups of one layout join their matrices: the same columns, pickled alike, with
    the same values form and chunk statistics as the plain parts joined."""
    import pickle

    rng = random.Random(11)
    joined_matrices = 0
    for _ in range(60):
        parts: list[EventColumns] = []
        from_rows: list[EventColumns] = []
        for _ in range(rng.randint(1, 4)):
            batch, rows_batch = _decoded(rng, rng.randint(1, 12))
            if rng.random() < 0.2:
                parts.append(batch)
                from_rows.append(rows_batch)
                continue
            rows = np.array(rng.sample(range(batch.n), rng.randint(1, batch.n)), dtype=np.intp)
            parts.append(batch.take(rows))
            from_rows.append(rows_batch.take(rows))
        expected = repr(values_partial(from_rows))
        assert repr(values_partial(parts)) == expected
        restored = pickle.loads(pickle.dumps(parts))
        # a checkpoint's bytes (deltas compare them) as if never taken from a decoded batch
        assert {type(part) for part in restored} == {EventColumns}
        assert pickle.dumps(restored) == pickle.dumps(parts)
        assert repr(values_partial(restored)) == expected
        joined, plain = EventColumns.concat(parts), EventColumns.concat(restored)
        joined_matrices += hasattr(joined, "matrix")
        assert pickle.dumps(joined) == pickle.dumps(plain)
        assert repr(values_partial([joined])) == repr(values_partial([plain])) == expected
        a, b = WindowAccumulator(), WindowAccumulator()
        a.add_chunk([joined])
        b.add_chunk([plain])
        assert repr(a.to_partial()) == repr(b.to_partial())
    assert joined_matrices > 10


def _blocks_held(part: EventColumns) -> int:
    """The column blocks a part holds now (through its slots and their dicts), made or not."""
    import gc

    found = 0
    for referent in gc.get_referents(part):
        inner = gc.get_referents(referent) if isinstance(referent, dict) else [referent]
        found += sum(isinstance(obj, ColumnBlock) for obj in inner)
    return found


def test_parts_of_a_decoded_batch_hold_no_block_per_float_column_until_one_is_read() -> None:
    """A group taken from a decoded batch, and such groups joined, keep their all-float columns as
    the matrix alone while a buffer holds, joins and lists them (with many models a shard holds
    ~100,000 of them, which the cyclic collector scans): only their other columns (here one
    categorical) and the outputs' three are blocks. Reading ``features`` makes a block per float
    column, equal to the plain part's."""
    rng = random.Random(5)
    names = ["z", "x", "y", "w", "c"]
    n = 9
    columns: list[list] = [[rng.gauss(0, 1) for _ in range(n)] for _ in names[:-1]]
    columns.append([rng.choice("ab") for _ in range(n)])
    floats = [np.array(c) for c in columns[:-1]] + [None]
    feats = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    preds = [Prediction(label="1", score=rng.random()) for _ in range(n)]
    batch = EventColumns.of(feats, preds, [1.0] * n, (names, columns, floats))
    rows = EventColumns.of(feats, preds, [1.0] * n)
    parts = [batch.take(np.array([0, 3])), batch.take(np.array([5]))]
    joined = EventColumns.concat(parts)
    partial = values_partial([*parts, joined])
    for part in [*parts, joined]:
        assert _blocks_held(part) == 1 + 3
    plain = EventColumns.concat([rows.take(np.array([0, 3])), rows.take(np.array([5]))])
    assert repr(partial) == repr(values_partial([*parts, plain]))
    assert sorted(joined.features) == sorted(plain.features)
    assert _blocks_held(joined) == 1 + 3 + len(names)  # and the features' dict, now made and kept
    for name in names:
        assert _column_events([joined.features[name]], name) == _column_events([plain.features[name]], name)


def test_a_buffer_of_many_small_appends_joins_them_in_order() -> None:
    """Appends of 0-3 events each (many models: a few of each per batch) are joined as they
    arrive, so the buffer holds a few parts, not one per append; every event's values stay in log
    order (a join that dropped or reordered events fails the per-event comparison before the
    statistics could hide it), and the chunks' partial and the values form are the row form's.
    Odd seeds take every part from one batch's columns (their blocks share the category keys)."""
    from driftline.operators.window_stats import MERGE_PARTS

    for seed in range(6):
        feats, preds, lats = _odd_events(seed, 1500)
        whole = EventColumns.of(feats, preds, lats)
        rng = random.Random(seed + 5)
        joined, single = WindowBuffer(), WindowBuffer()
        kept: list[int] = []
        appended: list[EventColumns] = []
        start = 0
        while start < len(feats):
            stop = min(len(feats), start + rng.randint(1, 8))
            rows = sorted(rng.sample(range(stop - start), rng.randint(0, min(3, stop - start))))
            if seed % 2:
                part = whole.take(np.array(rows, dtype=np.intp) + start)
            else:
                part = EventColumns.of(feats[start:stop], preds[start:stop], lats[start:stop]).take(
                    np.array(rows, dtype=np.intp))
            joined.append(part)
            appended.append(part)
            kept.extend(start + r for r in rows)
            assert len(joined.parts) <= MERGE_PARTS + 4
            start = stop
        single.parts, single.n = [p for p in appended if p.n], sum(p.n for p in appended)
        assert len(joined) == len(kept) and len(joined.parts) < len(single.parts) // 20
        names = {name for part in appended for name in part.features}
        for name in sorted(names):
            def blocks(parts: list[EventColumns], name: str = name) -> list:
                return [p.features.get(name) or ColumnBlock.absent(p.n) for p in parts]
            assert _column_events(blocks(joined.parts), name) == _column_events(blocks(single.parts), name)
        for column in ("label", "value", "latency"):
            assert (_column_events([getattr(p, column) for p in joined.parts], column)
                    == _column_events([getattr(p, column) for p in single.parts], column))
        assert repr(values_partial(joined.parts)) == repr(values_partial(single.parts))
        a, b = WindowAccumulator(), WindowAccumulator()
        joined.drain(a, 512, final=True)
        single.drain(b, 512, final=True)
        rows_acc = WindowAccumulator()
        for i in range(0, len(kept), 512):
            part_rows = kept[i : i + 512]
            rows_acc.add([feats[j] for j in part_rows], [preds[j] for j in part_rows],
                         [lats[j] for j in part_rows])
        assert repr(a.to_partial()) == repr(b.to_partial()) == repr(rows_acc.to_partial())


def test_joined_codes_renumber_as_block_by_block() -> None:
    """ColumnBlock.concat's one-gather renumbering gives each event the code block-by-block
    remapping gives, into the same keys in the same first-seen order (blocks of differing keys,
    blocks without categories, blocks sharing one batch's keys)."""
    rng = random.Random(3)
    for _ in range(40):
        blocks = []
        for _ in range(rng.randint(2, 9)):
            values = [rng.choice(["a", "b", "c", "d", "e", None, 1.5, True])
                      if rng.random() < 0.8 else rng.random() for _ in range(rng.randint(1, 6))]
            blocks.append(ColumnBlock.of(values))
        blocks.append(blocks[0].slice(0, 1))  # shares the first block's keys
        index: dict[str, int] = {}
        for block in blocks:
            for key in block.keys if block.codes is not None else ():
                index.setdefault(key, len(index))
        expected: list[int] = []
        for block in blocks:
            codes = block.codes.tolist() if block.codes is not None else [len(block.keys)] * block.n
            expected.extend(index[block.keys[c]] if c < len(block.keys) else len(index) for c in codes)
        joined = ColumnBlock.concat(blocks)
        if joined.codes is None:
            assert not index
            continue
        assert joined.keys == list(index) and joined.codes.tolist() == expected
        assert joined.codes.dtype == np.int32


def _same_block(a: ColumnBlock, b: ColumnBlock) -> bool:
    def arrays(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        return (x is None and y is None) or (
            x is not None and y is not None and x.dtype == y.dtype and x.tobytes() == y.tobytes())
    return (a.n == b.n and list(a.keys) == list(b.keys) and arrays(a.numbers, b.numbers)
            and arrays(a.missing, b.missing) and arrays(a.codes, b.codes) and arrays(a.present, b.present))


@pytest.mark.skipif(watch_native.NATIVE is None, reason="the C watch was not built")
def test_a_category_column_s_codes_are_the_same_in_c_as_in_python() -> None:
    """ColumnBlock.of's C pass (``_watch.first_codes``) gives the blocks of its Python steps: str,
    bool and None columns (True apart from "true", None last), and it leaves every other column to
    them (numbers among the categories, all None, empty, a tuple)."""
    rng = random.Random(17)
    taken = 0
    calls: list[object] = []
    native = watch_native.NATIVE

    class Counting:
        def first_codes(self, values: list[object], out: np.ndarray) -> object:
            found = native.first_codes(values, out)
            calls.append(found)
            return found

    for trial in range(400):
        pool = rng.choice([["a", "b", "c", "true", None, True, False], ["x", None], [None], [1, "a", None],
                           ["a", 2.5], [True, "True", "true"]])
        values: list[object] = [rng.choice(pool) for _ in range(rng.randint(0, 40))]
        present = np.array([rng.random() < 0.9 for _ in values], dtype=bool) if trial % 3 == 0 else None
        calls.clear()
        watch_native.NATIVE = Counting()
        try:
            with_c = ColumnBlock.of(values, present)
        finally:
            watch_native.NATIVE = native
        with reference_paths():
            without = ColumnBlock.of(values, present)
        assert _same_block(with_c, without), values
        categories = {type(v) for v in values} - {type(None)}
        assert (calls[0] is not None) == (bool(categories) and categories <= {str, bool}), values
        taken += calls[0] is not None
        assert _same_block(ColumnBlock.of(tuple(values), present), without)  # a tuple: Python's steps
    assert taken > 100


def test_a_filled_window_of_mixed_partial_forms_merges_as_shard_by_shard() -> None:
    """Stage 2 builds each column's sketch of a filled window from all shards at once (values-form
    partials' numbers in one pass, the others' sketches in one merge): every column equals what
    merging the parsed partials one by one gives, and the parsed partials are not changed."""
    for seed in range(12):
        rng = random.Random(seed)
        partials = []
        for shard in range(rng.randint(1, 5)):
            feats, preds, lats = _odd_events(seed * 10 + shard, rng.randint(0, 60))
            columns = EventColumns.of(feats, preds, lats)
            if rng.random() < 0.5:  # a shard of few events sends their values
                partial = values_partial([columns])
            else:
                acc = WindowAccumulator()
                acc.add_chunk([columns])
                partial = acc.to_partial()
            partials.append(orjson.loads(orjson.dumps(partial)))
        parsed = [WindowAccumulator.from_partial(p) for p in partials]
        before = [repr(p.to_partial()) for p in parsed]
        got = merge_accumulators(parsed, sketches=True, consume=True)
        assert [repr(p.to_partial()) for p in parsed] == before, seed
        expected = WindowAccumulator()
        for p in partials:  # the previous merge: each shard's sketch settled and merged in turn
            expected.merge(WindowAccumulator.from_partial(p), sketches=True)
        assert sorted(got.features) == sorted(expected.features)
        for name in expected.features:
            assert repr(got.features[name].to_dict()) == repr(expected.features[name].to_dict()), (seed, name)
        for name in ("prediction_label", "prediction_value", "latency"):
            assert repr(getattr(got, name).to_dict()) == repr(getattr(expected, name).to_dict()), (seed, name)


def test_parsed_values_form_partials_merge_the_same_after_a_pickle() -> None:
    """A parsed values-form column shares one empty sketch with every other until it is merged with
    sketches; pickled, they share one copy of it. Settling one must not add its values there (the
    next column's sketch would hold both): merged one by one, the pickled window is the window."""
    import pickle

    feats, preds, lats = _odd_events(3, 40)
    parts = [EventColumns.of(feats[k::4], preds[k::4], lats[k::4]) for k in range(4)]
    parsed = [WindowAccumulator.from_partial(orjson.loads(orjson.dumps(values_partial([p])))) for p in parts]
    restored = pickle.loads(pickle.dumps(parsed))
    expected, got = WindowAccumulator(), WindowAccumulator()
    for mine, theirs in zip(parsed, restored, strict=True):
        expected.merge(mine, sketches=True)
        got.merge(theirs, sketches=True)
    assert repr(got.to_partial()) == repr(expected.to_partial())
