"""Opt-in look inside a ``driftline worker`` started by a bench (``bench_restart.py --probe DIR``).

The bench puts this folder first on the workers' ``PYTHONPATH`` and names a directory in
``BENCH_MEMORY_PROBE_DIR``; Python imports this file at start-up (``sitecustomize``) in every
process then, and in a worker (``worker`` among its arguments) starts a thread that writes, every
``BENCH_MEMORY_PROBE_EVERY`` seconds (default 30), ``<pid>-<n>.txt`` there: VmRSS; the resident
kB of the ``[heap]`` mapping and of the other anonymous mappings (``/proc/self/smaps``); glibc's
``mallinfo2`` (heap size, bytes in use, bytes free: free bytes may be resident or trimmed);
pymalloc's arenas and bytes in use (``sys._debugmallocstats``); every live ``LabelJoin``'s
pending count, groups and their bytes (``sys.getsizeof``), time index and tracked changes; and
the 30 object types the garbage collector tracks that take the most bytes. Each dump holds the
GIL for a moment per million objects: the worker slows a little, the figures do not change.
Outside a bench this file does nothing (no ``BENCH_MEMORY_PROBE_DIR``)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading
import time
from pathlib import Path

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
           "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def _status_mb(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _resident_mb() -> tuple[float, float]:
    """Resident MB of the ``[heap]`` mapping (glibc's main arena) and of the other anonymous ones
    (thread arenas, pymalloc's arenas, large blocks mapped alone)."""
    heap = anon = 0
    kind = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            kind = "heap" if line.rstrip().endswith("[heap]") else ("anon" if len(head) == 5 else "")
        elif head and head[0] == "Rss:":
            if kind == "heap":
                heap += int(head[1])
            elif kind == "anon":
                anon += int(head[1])
    return heap / 1024, anon / 1024


def _mallinfo() -> str:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        shown = ("arena", "hblkhd", "uordblks", "fordblks")
        return " ".join(f"{name} {getattr(info, name) / 2**20:.1f}" for name in shown)
    return "unavailable"


def _pymalloc(directory: Path) -> str:
    """pymalloc's arenas and bytes in use: ``sys._debugmallocstats`` writes to the C stderr,
    which is pointed at a file meanwhile (other threads' stderr lines land there too)."""
    path = directory / f"{os.getpid()}-mallocstats.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    wanted = ("arenas allocated current", "bytes in allocated blocks", "bytes in available blocks")
    lines = [" ".join(line.split()) for line in path.read_text().splitlines() if line.startswith("#")
             and any(w in line for w in wanted)]
    path.unlink()
    return "; ".join(lines)


def _joins() -> tuple[list[str], dict[type, tuple[int, int]]]:
    """A line per live LabelJoin and (count, bytes) per object type the collector tracks."""
    from driftline.operators.join import LabelJoin

    by_type: dict[type, tuple[int, int]] = {}
    joins = []
    for obj in gc.get_objects():
        kind = type(obj)
        count, size = by_type.get(kind, (0, 0))
        by_type[kind] = (count + 1, size + sys.getsizeof(obj))
        if kind is LabelJoin:
            joins.append(obj)
    lines = []
    for join in joins:
        groups = getattr(join, "_groups", None)
        if groups is None:
            continue
        group_bytes = sys.getsizeof(groups) + sum(map(sys.getsizeof, groups))
        index = sys.getsizeof(join._buckets) + sum(map(sys.getsizeof, join._buckets.values()))
        added = join._added
        per_record = group_bytes / max(1, join._records)
        lines.append(f"join copy={join._copy} pending {join.pending_count:,} records {join._records:,} "
                     f"groups {len(groups):,} {group_bytes / 2**20:.1f} MB ({per_record:.0f} B a record), "
                     f"time index {index / 2**20:.2f} MB, tracked changes "
                     f"{'-' if added is None else f'{len(added):,}'} + {len(join._closings):,} closings")
    return lines, by_type


def _dump(directory: Path, n: int) -> None:
    heap, anon = _resident_mb()
    out = [f"time {time.time():.0f} VmRSS {_status_mb('VmRSS'):.0f} MB; resident [heap] {heap:.0f} MB, other "
           f"anonymous {anon:.0f} MB", f"mallinfo2 MB: {_mallinfo()}", f"pymalloc: {_pymalloc(directory)}"]
    joins, by_type = _joins()
    out += joins
    out.append("tracked objects by bytes (count, MB):")
    for kind, (count, size) in sorted(by_type.items(), key=lambda item: -item[1][1])[:30]:
        out.append(f"  {kind.__module__}.{kind.__qualname__} {count:,} {size / 2**20:.1f}")
    target = directory / f"{os.getpid()}-{n:03d}.txt"
    target.with_suffix(".tmp").write_text("\n".join(out) + "\n")
    target.with_suffix(".tmp").rename(target)


def _run(directory: Path, every_s: float) -> None:
    n = 0
    while True:
        time.sleep(every_s)
        n += 1
        try:
            _dump(directory, n)
        except Exception as err:  # a probe never stops the worker
            (directory / f"{os.getpid()}-{n:03d}.error").write_text(repr(err))


def _start() -> None:
    directory = os.environ.get("BENCH_MEMORY_PROBE_DIR")
    if not directory or "worker" not in sys.argv:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    every_s = float(os.environ.get("BENCH_MEMORY_PROBE_EVERY", "30"))
    threading.Thread(target=_run, args=(Path(directory), every_s), daemon=True, name="memory-probe").start()


_start()
