from typing import Any

def parse(data: bytes, fetch_offset: int, topic: str, partition: int, record_type: type[Any],
          check_crcs: bool, /) -> tuple[list[Any], int] | None: ...
