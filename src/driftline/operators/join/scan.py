"""Readers of many records at once with numpy (no Python per record): the integers at given
offsets, where each record of concatenated groups starts."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_FOUR = np.arange(4)
_EIGHT = np.arange(8)


def _u32_at(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The little-endian uint32 at each offset ``at`` of ``data``."""
    return data[at[:, None] + _FOUR].view("<u4").ravel().astype(np.int64)


def _spans(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The offsets of the spans (``starts``, ``lengths``), one after the other."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


def _i64_at(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The little-endian int64 at each offset ``at`` of ``data``."""
    return data[at[:, None] + _EIGHT].view("<i8").ravel()


def _group_record_starts(data: npt.NDArray[np.uint8], sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each record starts in ``data``, groups of ``sizes`` bytes one after the other: one
    record of every group per round (a group holds a few), in order."""
    ends = np.cumsum(sizes)
    rounds = []
    cur, limit = ends[sizes > 0] - sizes[sizes > 0], ends[sizes > 0]
    while cur.size:
        rounds.append(cur)
        cur = cur + _u32_at(data, cur)
        more = cur < limit
        cur, limit = cur[more], limit[more]
    return np.sort(np.concatenate(rounds)) if rounds else np.zeros(0, np.int64)
