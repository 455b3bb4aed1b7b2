"""The outcomes topic's messages stay ``orjson.dumps`` of each outcome's row, byte for byte, whichever
encoder wrote them (floats of every magnitude, strings with every kind of escape)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators.join import JoinedOutcome
from driftline.pipeline import outcome_messages as messages_module
from driftline.pipeline.outcome_messages import outcome_messages
from driftline.pipeline.to_rows import outcome_row

floats = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-2.0, 2.0),
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 9.99e14, 1e16, 1e22, 1e-7, 5e-324, 0.1, 123456789.125]),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(['{"x":1.5,"c":"a\\"b"}', "\u2028\x00\x1f\\/é😀"]))
outcomes = st.builds(
    JoinedOutcome, texts, texts, texts, texts, st.integers(0, 2**53), st.integers(0, 2**53),
    st.integers(-(2**40), 2**40), texts, floats, floats, texts, floats, st.sampled_from([None, 0, 1]),
    floats, texts,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(outcomes, max_size=8), texts)
def test_messages_are_the_rows_orjson_writes(batch: list[JoinedOutcome], run_id: str) -> None:
    assert outcome_messages(batch, run_id) == [orjson.dumps(outcome_row(o, run_id)) for o in batch]


def test_a_float_of_a_large_magnitude_is_written_with_orjson_s_sign() -> None:
    far = JoinedOutcome("q", "m", "1", "", 1, 2, 1, "", 2e16, None, "", None, None, None, "{}")
    near = JoinedOutcome("q", "m", "1", "", 1, 2, 1, "", 0.25, None, "", None, None, None, "{}")
    assert b'"predicted_score":2e+16,' in outcome_messages([far], "")[0]
    assert outcome_messages([near], "") == [orjson.dumps(outcome_row(near, ""))]
    assert messages_module._plain(0.25) and not messages_module._plain(2e16)


def test_without_msgspec_orjson_writes_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    o = JoinedOutcome("p", "m", "1", "", 1, 2, 1, "a", 0.9, None, "a", None, 1, None, '{"x":1.5}')
    monkeypatch.setattr(messages_module, "msgspec", None)  # (a light install)
    assert outcome_messages([o], "run") == [orjson.dumps(outcome_row(o, "run"))]
