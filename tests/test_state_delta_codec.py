"""A delta's codec: LZ4 where the lz4 package is installed (the worker's clickhouse-connect
requires it), else zlib for a small delta and raw for a large one; each restores wherever its
codec can be read, and an LZ4 delta without the package fails with one line."""

from __future__ import annotations

import pytest

from driftline.pipeline import state
from driftline.pipeline.state import RAW_DELTA_ABOVE, StateRestoreError, dump_delta, load_delta

SMALL = {"changed": list(range(1000))}
LARGE = {"records": [bytes(range(256)) * 64 for _ in range(2 * RAW_DELTA_ABOVE // 16_384)]}


def test_deltas_are_lz4_where_the_package_is_installed() -> None:
    pytest.importorskip("lz4.frame")
    for changes in (SMALL, LARGE):
        blob = dump_delta(changes)
        assert blob[4:6] == bytes([state.DELTA_FORMAT]) + b"l"
        assert load_delta(blob, "test") == changes
    assert len(dump_delta(LARGE)) < len(state._envelope(b"DLSD\x03", LARGE, RAW_DELTA_ABOVE)) / 2


def test_without_lz4_deltas_are_zlib_or_raw_and_an_lz4_delta_fails_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("lz4.frame")
    lz4_blob = dump_delta(SMALL)
    monkeypatch.setattr(state, "_lz4_frame", lambda: None)
    for changes, codec in ((SMALL, b"z"), (LARGE, b"r")):
        blob = dump_delta(changes)
        assert blob[5:6] == codec
        assert load_delta(blob, "test") == changes
    one_line = r"^test: its checkpoint is LZ4-compressed: install the lz4 package$"
    with pytest.raises(StateRestoreError, match=one_line):
        load_delta(lz4_blob, "test")
