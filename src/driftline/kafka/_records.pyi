from collections.abc import Callable
from typing import Any

def parse(data: bytes, fetch_offset: int, topic: str, partition: int, record_type: type[Any],
          check_crcs: bool, decompress: Callable[[int, bytes], bytes | None] | None = None,
          transactions: bool = False, /) -> tuple[list[Any], int] | None: ...
