"""Type stub of the join's C fast paths (``_native.c``)."""

from typing import Any

def close_pending(
    groups: list[bytes],
    keys: list[bytes],
    crcs: list[int],
    timestamps: list[int],
    digests: list[bytes],
    pids: list[Any],
    labels: list[Any],
    start: int,
    stop: int,
    room: int,
    low_mask: int,
    split: int,
    horizon: int,
    added: set[bytes] | None,
    store_present: bool,
    rerouted: bool,
    joined: list[Any],
    closings: list[bytes],
    /,
) -> tuple[int, int]: ...
