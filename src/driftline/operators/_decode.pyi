"""Type stub of the common batch's C decode pass (``_decode.c``)."""

from typing import Any

def predictions(
    values: list[Any], max_bytes: int, /
) -> tuple[dict[str, Any], dict[str, list[Any]]] | None: ...
def labels(values: list[Any], max_bytes: int, /) -> dict[str, list[Any]] | None: ...
def native_block(
    values: list[Any], keys: list[bytes], kinds: bytes, headers: list[bytes], /
) -> bytes | None: ...
