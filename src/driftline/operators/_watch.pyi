"""Type stub of the quiet-model watch's C path (``_watch.c``)."""

from typing import Any

def defer_few(monitor: Any, opener: Any, syms: list[int], /) -> int: ...
