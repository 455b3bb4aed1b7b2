"""An outcome interval's label-delay percentiles are numpy's, bit for bit, however they are computed."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from driftline.pipeline import to_rows
from driftline.pipeline.to_rows import delay_percentiles

DELAYS = st.one_of(
    st.lists(st.integers(0, 10**12), min_size=1, max_size=300),  # milliseconds
    st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=300),
    st.lists(st.sampled_from([0.1, 0.2, 0.3, 1 / 3, 2.5, 1e-9]), min_size=1, max_size=40),  # ties, rounding
)


def _numpy(delays: list[float]) -> list[float]:
    return np.percentile(np.asarray(delays, dtype=np.float64), [50, 90, 99]).tolist()


@given(DELAYS)
def test_the_percentiles_are_numpys(delays: list[float]) -> None:
    got = delay_percentiles(delays)
    assert list(got) == _numpy(delays)
    assert all(type(v) is float for v in got)


def test_past_the_python_bound_and_with_nan_numpy_answers(monkeypatch: object) -> None:
    many = [float(v) for v in range(to_rows.SMALL_PERCENTILES + 5, 0, -1)]
    assert list(delay_percentiles(many)) == _numpy(many)
    with_nan = [3.0, math.nan, 1.0]
    assert all(math.isnan(v) for v in delay_percentiles(with_nan))
    assert delay_percentiles([]) == (None, None, None)
    assert delay_percentiles([7]) == (7.0, 7.0, 7.0)
