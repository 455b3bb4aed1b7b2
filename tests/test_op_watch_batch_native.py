"""The busy model's batch in C (``_watch.cells``, ``_watch.codes`` and ``_watch.quiet_sums``): a
batch's symbols and its CUSUMs run where none alarms, against numpy's search, the categorical
detector's Python look-up and a plain Lindley loop, and
``count_quiet`` with and without them leaving detectors in the same state, alarms included."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators import watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.episodes import EpisodeMonitor
from driftline.operators.episodes import count_quiet as episode_count_quiet
from driftline.operators.sequential import CategoricalDetector, NumericDetector, count_quiet

pytestmark = pytest.mark.skipif(watch_native._watch is None, reason="the C watch was not built")
NATIVE = watch_native._watch


# a few distinct values, so that values fall on edges (ties) as often as between them
_POINTS = st.sampled_from([-np.inf, -3.5, -1.0, -0.0, 0.0, 1e-300, 0.5, 1.0, 2.0, 7.25, np.inf])
_FLOATS = st.one_of(_POINTS, st.floats(allow_nan=False, width=64))


@settings(max_examples=300, deadline=None)
@given(st.lists(_FLOATS, min_size=1, max_size=70), st.lists(_FLOATS, max_size=60))
def test_cells_are_numpy_s_left_search(edges: list[float], values: list[float]) -> None:
    e = np.sort(np.asarray(edges, dtype=np.float64))
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.size, -7, dtype=np.int64)
    assert NATIVE.cells(e, x, out)
    assert out.tolist() == e.searchsorted(x, side="left").tolist()


def test_cells_refuse_what_numpy_must_search() -> None:
    e = np.sort(np.random.default_rng(1).normal(size=100))
    x = np.array([0.1, 0.2, 0.3])
    out = np.full(3, -7, dtype=np.int64)
    for args in [
        (e, np.array([0.1, np.nan, 0.3]), out),  # numpy orders NaN last
        (np.append(e, np.nan), x, out),
        (np.empty(0), x, out),
        (e.astype(np.float32), x, out),
        (e, x.astype(np.float32), out),
        (e, x, np.full(3, -7, dtype=np.int32)),
        (e, x, np.full(4, -7, dtype=np.int64)),
        (e[::2], x, out),  # not contiguous
        (e, [0.1, 0.2, 0.3], out),  # not a buffer
    ]:
        assert NATIVE.cells(*args) is False
    assert out.tolist() == [-7, -7, -7]  # nothing written


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_FLOATS, min_size=1, max_size=40), min_size=1, max_size=5), st.integers(0, 30),
       st.integers(0, 2**32 - 1))
def test_cells_rows_are_each_row_s_left_search(edges: list[list[float]], width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = 4
    matrix = rng.choice(np.asarray([*_POINTS.elements, *rng.normal(size=8)]), size=(rows, width))
    which = rng.integers(0, rows, len(edges)).tolist()  # rows read by several detectors, or by none
    sorted_edges = [np.sort(np.asarray(e, dtype=np.float64)) for e in edges]
    out = np.full((len(edges), width), -7, dtype=np.int64)
    assert NATIVE.cells_rows(sorted_edges, matrix, which, out)
    expected = [e.searchsorted(matrix[r], side="left") for e, r in zip(sorted_edges, which, strict=True)]
    assert out.tolist() == [found.tolist() for found in expected]


def test_cells_rows_refuse_what_a_detector_must_search_alone() -> None:
    e = np.sort(np.random.default_rng(1).normal(size=100))
    m = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]])
    out = np.full((2, 3), -7, dtype=np.int64)
    for args in [
        ([e, e], np.array([[0.1, 0.2, 0.3], [1.0, np.nan, 3.0]]), [0, 1], out),  # a NaN in a row read
        ([e, np.append(e, np.nan)], m, [0, 1], out),
        ([e, np.empty(0)], m, [0, 1], out),
        ([e, e.astype(np.float32)], m, [0, 1], out),
        ([e, e], m.astype(np.float32), [0, 1], out),
        ([e, e], np.asfortranarray(m), [0, 1], out),  # not C-contiguous
        ([e, e], m, [0, 2], out),  # no such row
        ([e, e], m, [0, -1], out),
        ([e, e], m, [0, "1"], out),
        ([e, e], m, [0], out),  # a row per detector
        ([e, e], m, [0, 1], np.full((2, 3), -7, dtype=np.int32)),
        ([e, e], m, [0, 1], np.full((2, 4), -7, dtype=np.int64)),
        ([e, e, e], m, [0, 1, 1], out),  # a row of out per detector
        ((e, e), m, [0, 1], out),  # not a list
        ([e, e], m[0], [0, 1], out),  # not a matrix
    ]:
        assert NATIVE.cells_rows(*args) is False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "zz", "", "é", "other"]), max_size=50))
def test_codes_are_the_categorical_detector_s_symbols(values: list[str]) -> None:
    detector = CategoricalDetector.from_reference(["a", "b", "b", "c", "é"] * 20, arl=1e5)
    with_c = detector._symbols_at(values)
    with reference_paths():
        without = detector._symbols_at(values)
    assert with_c[0].tolist() == without[0].tolist() and with_c[1] is without[1] is None


def test_codes_refuse_what_python_must_map() -> None:
    index = {"a": 0, "b": 1}
    out = np.full(3, -7, dtype=np.int64)

    class Str(str):
        pass

    for args in [
        (index, ["a", None, "b"], 2, out),  # missing values: skipped, the Python path says where
        (index, ["a", 3, "b"], 2, out),
        (index, ["a", Str("b"), "b"], 2, out),
        ({"a": 0, "b": 1.0}, ["a", "b", "b"], 2, out),  # a code not an int
        (index, ["a", "b"], 2, out),  # sizes differ
        (index, ("a", "b", "b"), 2, out),  # not a list
        (index, ["a", "b", "b"], 2, np.full(3, -7, dtype=np.int32)),
    ]:
        assert NATIVE.codes(*args) is False
    assert NATIVE.codes(index, ["b", "x", "a"], 2, out) and out.tolist() == [1, 2, 0]
    detector = CategoricalDetector.from_reference(["a", "b"] * 10, arl=1e5)
    syms, at = detector._symbols_at(["a", None, "b"])
    assert syms.tolist() == [0, 1] and at is not None and at.tolist() == [0, 2]


def _lindley(table: np.ndarray, syms: np.ndarray, h: np.ndarray, sums: np.ndarray) -> tuple[int, list[int]]:
    s = sums.astype(object).tolist()
    for k in syms.tolist():
        for r in range(len(s)):
            s[r] = max(s[r] + int(table[r, k]), 0)
            if s[r] >= h[r]:
                return 0, []
    return min(int(limit) - v for limit, v in zip(h, s, strict=True)), s  # the slack: at least 1


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(0, 80), st.booleans(), st.integers(0, 2**32 - 1))
def test_quiet_sums_are_the_cusums_step_by_step(rows: int, width: int, count: int, narrow: bool,
                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = rng.integers(-60, 40, size=(rows, width)).astype(np.int32 if narrow else np.int64)
    syms = rng.integers(0, width, size=count).astype(np.int64)
    h = rng.integers(1, 400, size=rows).astype(np.int64)
    sums = (rng.random(rows) * h).astype(np.int64)
    out = np.full(rows, -7, dtype=np.int64)
    slack = NATIVE.quiet_sums(table, syms, h, sums, out)
    expected, final = _lindley(table, syms, h, sums)
    assert slack == expected
    if slack > 0:
        assert out.tolist() == final


def test_quiet_sums_refuse_what_they_cannot_run_exactly() -> None:
    table = np.array([[1, -2, 3], [0, 2, -1]], dtype=np.int64)
    syms = np.array([0, 1, 2], dtype=np.int64)
    h = np.array([100, 100], dtype=np.int64)
    sums = np.zeros(2, dtype=np.int64)
    out = np.zeros(2, dtype=np.int64)
    assert NATIVE.quiet_sums(table, syms, h, sums, out) == 97 and out.tolist() == [3, 1]  # min(100 - S)
    big = np.array([[2**62, 2**62], [0, 0]], dtype=np.int64)
    for args in [
        (big, np.array([0, 1], dtype=np.int64), np.array([2**63 - 1, 5], dtype=np.int64), sums, out),  # 2**63
        (table, np.array([0, 3], dtype=np.int64), h, sums, out),  # a symbol past the table: numpy raises
        (table, np.array([-1], dtype=np.int64), h, sums, out),
        (table[0], syms, h[:1], sums[:1], out[:1]),  # not 2-D
        (table.astype(np.int16), syms, h, sums, out),
        (table, syms.astype(np.int32), h, sums, out),
        (table, syms, h[:1], sums, out),
        (table[:, ::2], syms[:1], h, sums, out),  # not contiguous
    ]:
        assert NATIVE.quiet_sums(*args) == -1
    with pytest.raises(TypeError):
        NATIVE.quiet_sums(table, syms, h, sums)


def _detectors() -> list[NumericDetector | CategoricalDetector]:
    rng = np.random.default_rng(3)
    numeric = [NumericDetector.from_reference(rng.normal(size=4_000), arl=1e5) for _ in range(6)]
    reference = rng.choice(list("abcd"), 4_000, p=[0.4, 0.3, 0.2, 0.1])
    cats = [CategoricalDetector.from_reference(reference, arl=1e5) for _ in range(2)]
    return [*numeric, *cats]


def _batches(rng: np.random.Generator, size: int, shift: float) -> list[Any]:
    numeric = [rng.normal(shift if i % 3 == 0 else 0.0, 1.0, size) for i in range(6)]
    cats = [rng.choice(list("abcde"), size, p=[0.4, 0.3, 0.2, 0.1 - min(shift, 0.1) / 2, min(shift, 0.1) / 2])
            .tolist() for _ in range(2)]  # a list of str, as FeatureWatch hands a categorical monitor
    return [*numeric, *cats]


def _run(detectors: list[NumericDetector | CategoricalDetector], seed: int) -> tuple[list[list[bool]], bytes]:
    rng = np.random.default_rng(seed)
    flags = []
    for step in range(30):  # quiet batches, then a shift some detectors alarm on, then quiet again
        shift = 0.6 if 10 <= step < 16 else 0.0
        values = _batches(rng, int(rng.integers(1, 400)), shift)
        quiet = count_quiet(detectors, [d._symbols(v) for d, v in zip(detectors, values, strict=True)])
        for d, v, ok in zip(detectors, values, quiet, strict=True):
            if not ok:  # what FeatureWatch does with the rest: run them value by value
                d.update_many(v)
        flags.append(quiet)
    return flags, pickle.dumps([(d.n, d._sums.tolist(), d._slack, d._rise, d._due) for d in detectors])


@pytest.mark.parametrize("seed", [11, 12])
def test_count_quiet_with_and_without_c_leaves_the_same_detectors(seed: int) -> None:
    blob = pickle.dumps(_detectors())
    with_c = _run(pickle.loads(blob), seed)
    with reference_paths():
        without = _run(pickle.loads(blob), seed)
    assert with_c == without
    flags = [f for batch in with_c[0] for f in batch]
    assert any(flags) and not all(flags)  # both paths taken: quiet batches and alarming ones


def test_count_quiet_takes_the_c_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            calls.append(name)
            return getattr(NATIVE, name)

    monkeypatch.setattr(watch_native, "NATIVE", Counting())
    detectors = _detectors()
    values = _batches(np.random.default_rng(5), 300, 0.0)
    assert all(count_quiet(detectors, [d._symbols(v) for d, v in zip(detectors, values, strict=True)]))
    assert calls.count("quiet_sums") == len(detectors)
    assert calls.count("cells") == 6  # the numeric detectors' symbols
    assert calls.count("codes") == 2  # the categorical ones'


DATA = Path("/work/shared/data")


STREAMS = [("elec2.csv", "nswprice"), ("elec2.csv", "nswdemand"), ("noaa_weather.csv", "feat_1"),
           ("noaa_weather.csv", "feat_4")]


def test_real_streams_batches_leave_the_same_monitors_with_and_without_c() -> None:
    """Real streams that drift slowly, cycle daily and stay drifted (Elec2, NOAA weather), fed as a
    busy model's batches (count_quiet first, the batches it did not count value by value, as
    FeatureWatch._feed does): the same events and the same pickled monitor after every batch. Most
    of these streams keep an episode open once it opens (count_quiet then leaves every batch to the
    monitor's own steps); Elec2's price watches its reference between episodes."""
    if not all((DATA / name).exists() for name, _ in STREAMS):
        pytest.skip(f"needs the streams in {DATA}")
    quiet_batches = 0
    for name, column in STREAMS:
        with (DATA / name).open() as f:
            xs = np.array([float(row[column]) for row in csv.DictReader(f)][:14_000])
        # the reference a spread sample of the whole stream: it drifts away from it and back
        base = pickle.dumps(EpisodeMonitor.from_reference(xs[::7], arl=1e6, learning=1_000))

        def fed(base: bytes = base, xs: np.ndarray = xs) -> tuple[list[tuple[str, int]], list[bytes], int]:
            monitor: EpisodeMonitor = pickle.loads(base)
            events, states, quiet = [], [], 0
            for lo in range(0, xs.size, 300):
                batch = xs[lo : lo + 300]
                if episode_count_quiet([monitor], [monitor.symbols(batch)])[0]:
                    quiet += 1
                else:
                    events += [(e.kind, e.index) for e in monitor.update_many(batch)]
                states.append(pickle.dumps(monitor))
            return events, states, quiet

        with_c = fed()
        with reference_paths():
            without = fed()
        assert with_c == without, (name, column)
        assert with_c[0], (name, column)  # each of these streams opens episodes
        quiet_batches += with_c[2]
    assert quiet_batches  # and some batches were counted at once (through the C loop, with it)

