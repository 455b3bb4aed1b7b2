"""The outcomes topic's messages stay ``orjson.dumps`` of each outcome's row, byte for byte, whichever
encoder wrote them (the join's C extension, msgspec, orjson; floats of every magnitude, NaN and
infinities, strings with every kind of escape), and the C writer takes the common batch."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.operators.join import JoinedOutcome
from driftline.operators.join import native as join_native
from driftline.pipeline import outcome_messages as messages_module
from driftline.pipeline.outcome_messages import outcome_messages
from driftline.pipeline.to_rows import outcome_row

floats = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-2.0, 2.0),
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 9.99e14, 1e16, 1e22, 1e-7, 5e-324, 0.1, 123456789.125,
                     float("nan"), float("inf"), -float("inf")]),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(['{"x":1.5,"c":"a\\"b"}', "\u2028\x00\x1f\\/é😀"]))
outcomes = st.builds(
    JoinedOutcome, texts, texts, texts, texts, st.integers(0, 2**53), st.integers(0, 2**53),
    st.integers(-(2**40), 2**40), texts, floats, floats, texts, floats, st.sampled_from([None, 0, 1]),
    floats, texts,
)


@pytest.fixture(params=["compiled", "python"])
def compiled(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each test with the join's C extension on (where built) and off."""
    saved = join_native.NATIVE
    if request.param == "python":
        join_native.NATIVE = None
    elif saved is None:
        pytest.skip("the join's C extension is not built in this install")
    yield request.param == "compiled"
    join_native.NATIVE = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(outcomes, max_size=8), run_id=texts)
def test_messages_are_the_rows_orjson_writes(compiled: bool, batch: list[JoinedOutcome], run_id: str) -> None:
    assert outcome_messages(batch, run_id) == [orjson.dumps(outcome_row(o, run_id)) for o in batch]


class _Text(str):
    """A str subclass (orjson writes it as a str)."""


def _written_in_c(batch: list[JoinedOutcome]) -> list[bytes] | None:
    return join_native.NATIVE.outcome_messages(batch, JoinedOutcome, b'{"run_id":"r"',
                                               messages_module._FIELDS, messages_module.floats_json)


def test_the_c_writer_takes_the_common_batch_and_leaves_the_rest() -> None:
    if join_native.NATIVE is None:
        pytest.skip("the join's C extension is not built in this install")
    common = [JoinedOutcome("p", "m", "1", "", 1, 2, 1, "a", 0.9, None, "a", None, 1, None, '{"x":1.5}'),
              JoinedOutcome("q\n", "m", "1", "s", 1, 2, 1, "", None, 2.5, "", 2.0, None, 0.5, '{"c":"\\"}')]
    assert _written_in_c(common) == [orjson.dumps(outcome_row(o, "r")) for o in common]
    odd = [JoinedOutcome(_Text("p"), "m", "1", "", 1, 2, 1, "a", 0.9, None, "a", None, 1, None, "{}"),
           JoinedOutcome("p", "m", "1", "", 2**64 - 1, 2, 1, "a", None, None, "a", None, 1, None, "{}"),
           JoinedOutcome("\ud800", "m", "1", "", 1, 2, 1, "a", None, None, "a", None, 1, None, "{}"),
           JoinedOutcome("p", "m", "1", "", 1, 2, 1, "a", None, None, "a", None, True, None, "{}")]
    assert _written_in_c([common[0], odd[0]]) is None  # a str subclass: Python's to write (or refuse)
    assert _written_in_c([common[0], odd[1]]) is None  # an int beyond signed 64 bits: Python writes it
    assert outcome_messages([odd[1]], "r") == [orjson.dumps(outcome_row(odd[1], "r"))]
    assert _written_in_c([odd[2]]) is None  # no UTF-8: refused by orjson too
    half = JoinedOutcome.__new__(JoinedOutcome)  # slots unset but the first: left to Python
    half.prediction_id = "p"
    assert _written_in_c([common[0], half]) is None
    with pytest.raises((TypeError, ValueError)):  # (msgspec's UnicodeEncodeError, orjson's JSONEncodeError)
        outcome_messages([odd[2]], "r")
    assert _written_in_c([odd[3]]) == [orjson.dumps(outcome_row(odd[3], "r"))]  # (a bool: true)


def test_texts_of_every_length_are_escaped_as_orjson_escapes_them(compiled: bool) -> None:
    """The C writer escapes eight bytes at a time and the rest one by one: quotes, backslashes,
    control characters and multi-byte characters at every position of texts up to 70 bytes."""
    rng = random.Random(5)
    plain = ['"', "\\", " ", "a", "{", ":", ",", "é", "😀", "\x7f"]  # (a text without control characters
    control = [*plain, "\n", "\x01", "\x1f"]  # is escaped in one pass, one with them in a second)
    batch = []
    for length in range(71):
        for i in range(8):
            alphabet = control if i % 4 == 0 else plain
            text = "".join(rng.choice(alphabet) if rng.random() < 0.3 else "x" for _ in range(length))
            batch.append(JoinedOutcome(text, "m", "1", "", 1, 2, 1, "a", 0.5, None, "a", None, 1, None, text))
    assert outcome_messages(batch, "r") == [orjson.dumps(outcome_row(o, "r")) for o in batch]


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
