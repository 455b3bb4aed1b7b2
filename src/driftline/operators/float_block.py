"""Float64 feature columns of a few events kept as one matrix, read by name.

With many models a stage-1 batch holds a few events of each, and the feature watch holds each
model's group until a grid line or a batch's worth (:mod:`driftline.operators.feature_watch`). A
group's numeric features were a dict of one small array each (20 array views made per group,
then a ``tolist`` per feature and group when the watch fed them); as one matrix a group is a
single object, and a model's held groups join with one ``concatenate`` and list with one
``tolist``.

>>> import numpy as np
>>> block = FloatBlock(("a", "b"), np.array([[1.0, 2.0], [3.0, 4.0]]))
>>> block["b"].tolist(), sorted(block), len(block), "c" in block
([3.0, 4.0], ['a', 'b'], 2, False)
>>> later = FloatBlock(("a", "b"), np.array([[5.0], [6.0]]))
>>> FloatBlock.joined([block, later]).listed()
{'a': [1.0, 2.0, 5.0], 'b': [3.0, 4.0, 6.0]}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from driftline.operators.feature_rows import positions

FloatArray = npt.NDArray[np.float64]


class FloatBlock(Mapping[str, FloatArray]):
    """Columns ``names`` of ``matrix`` (one row per name, one column per event): a mapping of each
    name to its row, as the dict of columns it stands for."""

    __slots__ = ("index", "matrix", "names")

    def __init__(self, names: tuple[str, ...], matrix: FloatArray) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != len(names):
            raise ValueError(f"a block of {len(names)} names needs as many rows, not shape {matrix.shape}")
        self.names = names
        # row-major, as the watch's one-call search over its rows reads it (a column gather such
        # as ``matrix[:, rows]`` is column-major; unchanged, and no copy, when already row-major)
        self.matrix = np.ascontiguousarray(matrix)
        self.index = positions(names)  # each name's row (shared by the blocks of one layout)

    def __getitem__(self, name: str) -> FloatArray:
        return self.matrix[self.index[name]]

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def lacking(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` that are not columns here, in order."""
        index = self.index
        return [name for name in names if name not in index]

    def listed(self) -> dict[str, list[float]]:
        """Each column as a list of floats (one ``tolist`` for all)."""
        return dict(zip(self.names, self.matrix.tolist(), strict=True))

    @staticmethod
    def joined(blocks: Sequence[FloatBlock]) -> FloatBlock:
        """The events of ``blocks`` (all of the same names) in order, as one block."""
        if len(blocks) == 1:
            return blocks[0]
        names = blocks[0].names
        if any(block.names != names for block in blocks):
            raise ValueError("blocks of different names do not join")
        return FloatBlock(names, np.concatenate([block.matrix for block in blocks], axis=1))

    def __reduce__(self) -> tuple[type[FloatBlock], tuple[tuple[str, ...], FloatArray]]:
        return FloatBlock, (self.names, self.matrix)
