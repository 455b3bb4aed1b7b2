"""The multivariate watch's row-by-row products in C (``_watch.matmul_columns``, ``_watch.dot_rows``)
against their numpy steps: the same bits for any layout, size and value (infinities, signed zeros,
subnormals; a NaN is a NaN, its sign bit whichever operand x86 hands on: no output shows it), so a
replay or a restore still does not depend on the batching or on the install. The normal scores'
C loop is held to its numpy steps in test_op_multivariate.py, beside their reference cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators import watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.multivariate import rowwise_dot, rowwise_matmul

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
