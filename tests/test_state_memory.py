"""Memory around a base checkpoint: the envelope holds the pickle itself (same bytes as before it
was pickled straight into the buffer), and freed heap memory goes back to the system."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zlib

import pytest

from driftline.pipeline.state import (
    RAW_ABOVE,
    STATE_FORMAT,
    dump_delta,
    dump_state,
    load_state,
    release_free_memory,
)


def test_a_large_base_is_its_pickle_behind_the_envelope_and_a_small_one_its_zlib() -> None:
    large = {"records": [bytes(range(256)) * 4096 for _ in range(40)], "counters": list(range(10_000))}
    blob = dump_state(large)
    assert len(blob) > RAW_ABOVE
    assert blob == b"DLST" + bytes([STATE_FORMAT]) + b"r" + pickle.dumps(large, pickle.HIGHEST_PROTOCOL)
    assert load_state(blob, dict, "test") == large
    small = {"seen": list(range(1000))}
    assert zlib.decompress(dump_state(small)[6:]) == pickle.dumps(small, pickle.HIGHEST_PROTOCOL)
    assert zlib.decompress(dump_delta(small)[6:]) == pickle.dumps(small, pickle.HIGHEST_PROTOCOL)


_FRAGMENTED_HEAP = """
import sys
from driftline.pipeline.state import release_free_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

# 300 MB of malloc'd blocks (over pymalloc's 512 bytes), one in 32 kept: free() alone cannot give
# the holes back (only the heap's top), as the base's freed records and messages were kept.
blocks = [bytes(1500) for _ in range(200_000)]
kept = blocks[::32]
del blocks
before = rss_mb()
release_free_memory()
print(before, rss_mb(), len(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_free_memory(),
                    reason="malloc_trim is glibc's")
def test_release_free_memory_gives_a_fragmented_heap_back() -> None:
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    before, after, _ = map(float, out.stdout.split())
    assert before > 250 and after < before - 200, (before, after)
