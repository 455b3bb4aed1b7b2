"""A base pickled into a file holding a large numpy array: pickle (protocol 5) hands the array's
buffer to the writer as a PickleBuffer, which has no len(); the worker died on it ("writing a base
failed") in `make demo` once 90fb334 pickled bases into files."""

from __future__ import annotations

import zlib

import numpy as np

from driftline.pipeline.state import RAW_ABOVE, BlobFile, dump_state, dump_state_to_file


def test_a_base_with_large_arrays_pickles_into_a_file_as_in_memory() -> None:
    small = {"values": np.arange(200_000, dtype=np.float64)}
    assert dump_state_to_file(small) == dump_state(small)
    big = {"values": np.arange(RAW_ABOVE // 8 + 1000, dtype=np.float64), "ids": list(range(10))}
    on_disk = dump_state_to_file(big)
    assert isinstance(on_disk, BlobFile)
    try:
        blob = dump_state(big)
        assert on_disk.read() == blob and on_disk.crc == zlib.crc32(blob)
    finally:
        on_disk.close()


def test_every_buffer_layout_pickles_into_a_file_as_in_memory() -> None:
    grid = np.ones((2000, 700))
    for obj in ({"m": grid}, {"m": np.asfortranarray(grid)}, {"m": grid[:, ::2]},
                {"b": bytearray(RAW_ABOVE + 10)}):
        on_disk = dump_state_to_file(obj)
        try:
            assert (on_disk if isinstance(on_disk, bytes) else on_disk.read()) == dump_state(obj)
        finally:
            if isinstance(on_disk, BlobFile):
                on_disk.close()
