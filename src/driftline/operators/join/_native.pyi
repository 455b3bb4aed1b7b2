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
    store: Any,
    rerouted: bool,
    joined: list[Any],
    closings: list[bytes],
    /,
) -> tuple[int, int]: ...

def add_pending(
    join: Any,
    keys: list[bytes],
    crcs: list[int],
    pids: list[Any],
    timestamps: list[int],
    contexts: list[tuple[str, str, str]],
    digests: list[bytes],
    tails: list[tuple[int, int, bytes]],
    packs: list[bytes] | list[None],
    start: int,
    stop: int,
    shape_id: int,
    rerouted: bool,
    load: int,
    /,
) -> int: ...

def outcome_rows(
    joined: list[Any],
    ctxs: list[tuple[str, str, str]],
    labels: dict[Any, tuple[str, float | None]],
    label_info: Any,
    binary: dict[str, tuple[str, str]],
    max_abs: float,
    make: Any,
    /,
) -> tuple[list[Any], list[int], list[bytes]]: ...

def rows_json(
    encoded: list[bytes],
    float_size: int,
    floats_text: bytes | None,
    n_floats: int,
    n_others: int,
    key_texts: list[bytes],
    order: list[int],
    /,
) -> list[str] | None: ...

def pending_tails(
    scores: list[float], labels: list[Any], text_of: Any, has_score: int, /
) -> list[tuple[int, int, bytes]] | None: ...

def packed_rows(block: Any, row_size: int, others: list[list[Any]], n: int, /) -> list[bytes] | None: ...

def payload_digests(payloads: list[bytes], /) -> list[bytes]: ...

def id_keys(pids: list[str], /) -> tuple[list[bytes], list[int]] | None: ...

def outcome_messages(
    outcomes: list[Any], cls: type, prefix: bytes, fields: list[tuple[bytes, str]], floats_json: Any, /
) -> list[bytes] | None: ...

def slot_columns(objects: list[Any], cls: type, names: tuple[str, ...], /) -> list[list[Any]] | None: ...

def current_records(
    groups: list[bytes], low_mask: int, split: int, added: set[bytes] | list[bytes] | tuple[()], /
) -> tuple[list[bytes], list[tuple[bytes, int]]] | None: ...
