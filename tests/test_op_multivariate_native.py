"""The multivariate watch's row-by-row products in C (``_watch.matmul_columns``, ``_watch.dot_rows``)
and its normal scores (``_watch.normal_scores``) against their numpy steps: the same bits for any
layout, size and value (infinities, signed zeros, subnormals; a NaN is a NaN, its sign bit whichever
operand x86 hands on: no output shows it), so a replay or a restore still does not depend on the
batching or on the install."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators import watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.multivariate import NormalScores, rowwise_dot, rowwise_matmul

pytestmark = pytest.mark.skipif(watch_native._watch is None, reason="the C watch was not built")


def _matrix(rng: np.random.Generator, rows: int, cols: int, wild: bool, fortran: bool) -> np.ndarray:
    a = rng.normal(size=(rows, cols)) * 10.0 ** rng.integers(-3, 4, size=(rows, cols))
    if wild and a.size:
        picks = rng.integers(0, a.size, size=max(1, a.size // 7))
        a.flat[picks] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, 5e-324], size=picks.size)
    return np.asfortranarray(a) if fortran else np.ascontiguousarray(a)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 37), st.integers(0, 12), st.integers(0, 6), st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_c_products_are_numpy_s_bit_for_bit(n: int, d: int, k: int, wild: bool, fortran: bool,
                                            seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, m = _matrix(rng, n, d, wild, fortran), _matrix(rng, d, k, wild, not fortran)
    y = _matrix(rng, n, d, wild, fortran)
    with_c = rowwise_matmul(x, m), rowwise_dot(x, y), rowwise_matmul(x.T[:, ::-1].T, m)
    with reference_paths():
        without = rowwise_matmul(x, m), rowwise_dot(x, y), rowwise_matmul(x.T[:, ::-1].T, m)
    for a, b in zip(with_c, without, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert (np.isnan(a) == np.isnan(b)).all()
        a, b = np.where(np.isnan(a), np.nan, a), np.where(np.isnan(b), np.nan, b)
        assert a.tobytes() == b.tobytes()  # bits: signed zeros included


def test_the_products_take_the_c_path_and_leave_others_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    native = watch_native._watch

    class Counting:
        def __getattr__(self, name: str) -> object:
            def call(*args: object) -> bool:
                took = getattr(native, name)(*args)
                calls.append((name, took))
                return bool(took)
            return call

    monkeypatch.setattr(watch_native, "NATIVE", Counting())
    rng = np.random.default_rng(4)
    x, m = rng.normal(size=(20, 5)), rng.normal(size=(5, 3))
    rowwise_matmul(np.asfortranarray(x), m)
    rowwise_dot(x, x)
    ints = rowwise_matmul(np.arange(6).reshape(3, 2), np.ones((2, 2)))  # not float64: numpy's steps
    assert calls == [("matmul_columns", True), ("dot_rows", True), ("matmul_columns", False)]
    assert ints.tolist() == [[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]]
    with pytest.raises(TypeError):
        native.dot_rows(x, x)


def _reference(rng: np.random.Generator, kind: int) -> np.ndarray:
    size = int(rng.integers(2, 400))
    if kind == 0:
        ref = rng.normal(size=size)
    elif kind == 1:
        ref = np.round(rng.lognormal(size=size), 1)  # many ties
    elif kind == 2:
        ref = np.full(size, 3.5)  # no spread: one cell
    elif kind == 3:
        ref = np.append(rng.normal(size=size), 1e300)  # one far point: most points share a cell
    elif kind == 4:
        ref = np.concatenate([rng.integers(-2, 3, size).astype(np.float64), [-0.0, np.inf]])
    else:
        ref = rng.integers(0, 4, size).astype(np.float64)
    return np.sort(ref)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 300), st.integers(1, 7), st.booleans(), st.integers(0, 2**32 - 1))
def test_c_normal_scores_are_numpy_s_bit_for_bit(n: int, d: int, fortran: bool, seed: int) -> None:
    """Ties (the second count), NaN, +-inf, values beyond the tails, a reference of one value, one
    with a far point (the full bisection) or +inf points, any layout of x."""
    rng = np.random.default_rng(seed)
    refs = [_reference(rng, int(rng.integers(0, 6))) for _ in range(d)]
    scores = NormalScores([f"f{j}" for j in range(d)], refs)
    x = np.stack([np.concatenate([rng.choice(ref, n // 2), rng.normal(scale=3, size=n - n // 2)])
                  for ref in refs], axis=1)
    if x.size:
        picks = rng.integers(0, x.size, size=max(1, x.size // 9))
        wild = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308, 5e-324]
        x.flat[picks] = rng.choice(wild, size=picks.size)
    x = np.asfortranarray(x) if fortran else x
    assert scores._flat().native_scores(x, np.empty((d, n)))  # (the C path takes any float64 x)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf beyond a reference with +inf points
        with_c = scores.scores_by_feature(x)
        with reference_paths():
            without = scores.scores_by_feature(x)
    assert with_c.shape == without.shape == (d, n) and with_c.dtype == without.dtype
    assert (np.isnan(with_c) == np.isnan(without)).all()
    assert np.where(np.isnan(with_c), np.nan, with_c).tobytes() == np.where(np.isnan(without), np.nan,
                                                                             without).tobytes()


def test_normal_scores_take_the_c_path_and_leave_others_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    native = watch_native._watch

    class Counting:
        def normal_scores(self, *args: object) -> bool:
            took = native.normal_scores(*args)
            calls.append(took)
            return bool(took)

    monkeypatch.setattr(watch_native, "NATIVE", Counting())
    rng = np.random.default_rng(5)
    scores = NormalScores(["a", "b"], [np.sort(rng.normal(size=50)), np.sort(rng.normal(size=80))])
    x = rng.normal(size=(30, 2))
    u = scores.scores_by_feature(x)
    ints = scores.scores_by_feature(np.arange(6).reshape(3, 2))  # not float64: numpy's steps
    assert calls == [True, False]
    with reference_paths():
        assert u.tolist() == scores.scores_by_feature(x).tolist()
        assert ints.tolist() == scores.scores_by_feature(np.arange(6).reshape(3, 2)).tolist()
    flat, out = scores._flat(), np.empty((2, 30))
    assert not replace(flat, padded=flat.padded[:3]).native_scores(x, out)  # a probe would leave the table
    assert not replace(flat, width=0).native_scores(x, out)
    assert not flat.native_scores(x, np.empty((3, 30)))  # out of another shape
    with pytest.raises(TypeError):
        native.normal_scores(x, x)
