"""FloatBlock: a few events' float columns as one matrix, read by name as the dict it stands for."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from driftline.operators import watch_native
from driftline.operators.float_block import FloatBlock


def test_a_block_reads_as_the_dict_of_its_rows() -> None:
    matrix = np.arange(6, dtype=np.float64).reshape(3, 2)
    block = FloatBlock(("a", "b", "c"), matrix)
    as_dict = {"a": [0.0, 1.0], "b": [2.0, 3.0], "c": [4.0, 5.0]}
    assert {name: column.tolist() for name, column in block.items()} == as_dict
    assert block.listed() == as_dict
    assert block.get("z") is None and block.lacking(["c", "a"]) == []
    assert block.lacking(["y", "a", "z"]) == ["y", "z"]


def test_blocks_join_in_order_and_only_of_the_same_names() -> None:
    first = FloatBlock(("a", "b"), np.array([[1.0], [2.0]]))
    second = FloatBlock(("a", "b"), np.array([[3.0, 5.0], [4.0, 6.0]]))
    assert FloatBlock.joined([first]) is first
    assert FloatBlock.joined([first, second]).listed() == {"a": [1.0, 3.0, 5.0], "b": [2.0, 4.0, 6.0]}
    with pytest.raises(ValueError, match="different names"):
        FloatBlock.joined([first, FloatBlock(("b", "a"), np.array([[1.0], [2.0]]))])


def test_a_block_needs_a_row_per_name() -> None:
    with pytest.raises(ValueError, match="2 names"):
        FloatBlock(("a", "b"), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="1 names"):
        FloatBlock(("a",), np.zeros(3))


def test_a_block_pickles_as_what_it_holds() -> None:
    """Held groups travel in the watch's checkpoints."""
    block = FloatBlock(("x", "y"), np.array([[0.5, np.nan], [-1.0, 2.0]]))
    restored = pickle.loads(pickle.dumps(block, pickle.HIGHEST_PROTOCOL))
    assert restored.names == block.names
    assert restored.matrix.tobytes() == block.matrix.tobytes()


def test_a_block_keeps_its_matrix_row_major_for_the_watch_s_one_call_search() -> None:
    """A group gathered as ``matrix[:, rows]`` is column-major; the C search over a block's rows
    (``cells_rows``) refuses that, so the block holds it row-major, the same values."""
    batch = np.arange(12, dtype=np.float64).reshape(3, 4)
    gathered = batch[:, [0, 2, 3]]
    assert not gathered.flags["C_CONTIGUOUS"]
    block = FloatBlock(("a", "b", "c"), gathered)
    assert block.matrix.flags["C_CONTIGUOUS"] and block.matrix.tolist() == gathered.tolist()
    if watch_native.NATIVE is not None:  # row 1 ([4, 6, 7]) against edges 5 and 6.5: 0, 1, 2 below
        found = np.empty((1, 3), dtype=np.int64)
        assert watch_native.NATIVE.cells_rows([np.array([5.0, 6.5])], block.matrix, [1], found)
        assert found.tolist() == [[0, 1, 2]]
        assert not watch_native.NATIVE.cells_rows([np.array([5.0, 6.5])], gathered, [1], found)
    taken = batch.take([1, 2], axis=1)  # what a shard hands: row-major already, kept as it is
    assert FloatBlock(("a", "b", "c"), taken).matrix is taken
