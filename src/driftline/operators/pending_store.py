"""Payloads of pending predictions on disk, for a join past its memory budget.

An append-only log of segment files, one per span of event time (``segment_ms``), in a directory
of the process's own: :meth:`PendingStore.put` appends a payload to the segment of its event time
and returns a reference (segment, offset, length: 12 bytes, or 20 where a value does not fit)
the join keeps in memory in its place;
:meth:`PendingStore.get` reads it back (with ``pread``, or from the append buffer: appends are
written in pieces of ``FLUSH_BYTES``, or at :meth:`PendingStore.flush`). Nothing is ever
rewritten: once every prediction of a span has expired or joined,
:meth:`PendingStore.drop_before` deletes its whole file (no compaction, no per-record deletes).
The store is a cache of the join's own records, not a second copy of the state: checkpoints carry
the records whole, so the directory is created fresh by each process and removed when the store
is closed or collected (directories of dead processes are removed by the next store created
beside them).

A base checkpoint is pickled from a copy of the join while the join goes on (``docs/state.md``):
:meth:`PendingStore.pin` writes the buffer and returns :class:`PinnedSegments`, which reads the
payloads of every segment written so far from another thread until released: meanwhile
:meth:`PendingStore.drop_before` unlinks expired segments as before but keeps their files open
(the space is freed at the release).

>>> store = PendingStore(segment_ms=60_000)
>>> ref = store.put(1_000, b"features")
>>> store.get(ref), store.segment_count
(b'features', 1)
>>> store.flush()
>>> store.get(ref)
b'features'
>>> store.drop_before(60_000), store.segment_count, store.bytes_on_disk
(1, 0, 0)
>>> store.close()
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt

REF = struct.Struct("<qQI")
"""A payload's place: segment number, byte offset, length; 20 bytes, for any values."""
SHORT_REF = struct.Struct("<iII")
"""The same in 12 bytes, used whenever the values fit (a segment number of 32 bits, a segment
under 4 GiB): the join keeps one per spilled prediction, so 8 bytes less of ~90 per pending one.
References live in memory only (never in a checkpoint); their length says their form."""
_SHORT_DTYPE = np.dtype([("segment", "<i4"), ("offset", "<u4"), ("length", "<u4")])
_LONG_DTYPE = np.dtype([("segment", "<i8"), ("offset", "<u8"), ("length", "<u4")])  # REF, SHORT_REF as arrays
_SHORT_SEGMENT = 2**31
_SHORT_END = 2**32
_PREFIX = "driftline-join-"
FLUSH_BYTES = 1 << 20
"""Appends buffered past this are written (one write per segment)."""


class PendingStore:
    """Append-only segment files of payloads, by event time (see the module docstring).

    ``directory``: where the store makes its own directory (default: the system's temporary one).
    """

    def __init__(self, directory: Path | str | None = None, segment_ms: int = 900_000) -> None:
        if segment_ms < 1:
            raise ValueError("segment_ms must be >= 1")
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            _remove_dead_siblings(Path(directory))
        self.path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=directory))
        self.segment_ms = segment_ms
        self._fds: dict[int, int] = {}
        self._sizes: dict[int, int] = {}  # bytes per segment, written or buffered
        self._buffers: dict[int, bytearray] = {}  # appended since the last flush
        self._written: dict[int, int] = {}  # bytes per segment in its file
        self._buffered = 0
        self._pins = 0  # PinnedSegments not released yet
        self._kept_open: list[int] = []  # descriptors of segments dropped while pinned
        self._closing = False  # close() was called while pinned: done at the last release
        self._finalizer = weakref.finalize(self, _remove, self.path, self._fds, self._kept_open)

    @property
    def segment_count(self) -> int:
        return len(self._sizes)

    @property
    def bytes_on_disk(self) -> int:
        return sum(self._sizes.values())

    def put(self, ts: int, payload: bytes) -> bytes:
        """Append ``payload`` (of a prediction at event time ``ts``); its reference."""
        segment = ts // self.segment_ms
        offset = self._sizes.get(segment, 0)
        buffer = self._buffers.get(segment)
        if buffer is None:
            buffer = self._buffers[segment] = bytearray()
        buffer += payload
        size = len(payload)
        self._sizes[segment] = offset + size
        self._buffered += size
        if self._buffered > FLUSH_BYTES:
            self.flush()
        return _ref_packer(segment, offset + size).pack(segment, offset, size)

    def put_many(self, ts: int, payloads: list[bytes]) -> list[bytes]:
        """Append ``payloads`` (of predictions at event times up to ``ts``: they go to the segment
        of ``ts``, deleted no earlier than each one's own) in one piece; their references, in order.

        >>> store = PendingStore(segment_ms=1_000)
        >>> refs = store.put_many(999, [b"ab", b"", b"cde"])
        >>> store.flush()
        >>> [store.get(ref) for ref in refs], store.bytes_on_disk
        ([b'ab', b'', b'cde'], 5)
        >>> store.close()
        """
        segment = ts // self.segment_ms
        offset = self._sizes.get(segment, 0)
        pack = _ref_packer(segment, offset + sum(map(len, payloads))).pack
        refs = []
        for payload in payloads:
            size = len(payload)
            refs.append(pack(segment, offset, size))
            offset += size
        buffer = self._buffers.get(segment)
        if buffer is None:
            buffer = self._buffers[segment] = bytearray()
        buffer += b"".join(payloads)
        self._buffered += offset - self._sizes.get(segment, 0)
        self._sizes[segment] = offset
        if self._buffered > FLUSH_BYTES:
            self.flush()
        return refs

    def put_block(self, ts: int, block: bytes | npt.NDArray[np.uint8],
                  lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Append payloads given as one ``block`` (their bytes one after the other, ``lengths``
        each) to the segment of ``ts``, as :meth:`put_many` does without a ``bytes`` per payload
        (a restore stubs a thousand groups at a time with numpy); their references, one row of
        bytes each, in order (one form for the block: 12 bytes where every value fits).

        >>> store = PendingStore(segment_ms=1_000)
        >>> refs = store.put_block(999, b"abcde", np.array([2, 0, 3]))
        >>> [store.get(ref.tobytes()) for ref in refs], refs.shape
        ([b'ab', b'', b'cde'], (3, 12))
        >>> store.close()
        """
        segment = ts // self.segment_ms
        offset = self._sizes.get(segment, 0)
        end = offset + int(lengths.sum())
        refs = np.empty(len(lengths), _SHORT_DTYPE if _ref_packer(segment, end) is SHORT_REF else _LONG_DTYPE)
        refs["segment"] = segment
        refs["offset"] = np.cumsum(lengths) - lengths + offset
        refs["length"] = lengths
        buffer = self._buffers.get(segment)
        if buffer is None:
            buffer = self._buffers[segment] = bytearray()
        buffer += memoryview(block)  # type: ignore[arg-type]  # an array's bytes, not numpy's +
        self._buffered += end - offset
        self._sizes[segment] = end
        if self._buffered > FLUSH_BYTES:
            self.flush()
        return refs.view(np.uint8).reshape(len(lengths), refs.dtype.itemsize)

    def flush(self) -> None:
        """Write what :meth:`put` buffered (one write per segment)."""
        for segment, buffer in self._buffers.items():
            fd = self._fds.get(segment)
            if fd is None:
                fd = self._fds[segment] = os.open(self._file(segment), os.O_RDWR | os.O_CREAT | os.O_APPEND)
            view = memoryview(buffer)
            while view:
                view = view[os.write(fd, view):]
            self._written[segment] = self._sizes[segment]
        self._buffers = {}
        self._buffered = 0

    def get(self, ref: bytes) -> bytes:
        """The payload ``ref`` (from :meth:`put`) refers to."""
        segment, offset, length = unpack_ref(ref)
        written = self._written.get(segment)
        if written is None or offset >= written:  # still in the append buffer
            buffer = self._buffers.get(segment)
            if buffer is None or segment not in self._sizes:
                raise KeyError(f"pending store: no segment {segment} (dropped)")
            at = offset - (written or 0)
            return bytes(buffer[at : at + length])
        data = os.pread(self._fds[segment], length, offset)
        if len(data) != length:
            raise OSError(f"pending store segment {segment}: {len(data)} of {length} bytes at {offset}")
        return data

    def drop_before(self, ts: int) -> int:
        """Delete every segment whose whole span is older than ``ts``; how many were deleted."""
        gone = [s for s in self._sizes if (s + 1) * self.segment_ms <= ts]
        for segment in gone:
            del self._sizes[segment]
            self._written.pop(segment, None)
            self._buffered -= len(self._buffers.pop(segment, b""))
            fd = self._fds.pop(segment, None)
            if fd is not None:
                if self._pins:  # a pinned copy may still read it: the file goes, its data stays
                    self._kept_open.append(fd)
                else:
                    os.close(fd)
            self._file(segment).unlink(missing_ok=True)
        return len(gone)

    def pin(self) -> PinnedSegments:
        """Write the buffer, and keep every payload stored so far readable through the returned
        :class:`PinnedSegments` (from any thread) until it is released.

        >>> store = PendingStore(segment_ms=1_000)
        >>> ref = store.put(500, b"kept")
        >>> pinned = store.pin()
        >>> store.drop_before(1_000), store.segment_count  # the file is gone for the store ...
        (1, 0)
        >>> pinned.get(ref)  # ... and still readable through the pin
        b'kept'
        >>> pinned.release()
        >>> store.close()
        """
        self.flush()
        self._pins += 1
        return PinnedSegments(self, dict(self._fds))

    def _unpin(self) -> None:
        self._pins -= 1
        if self._pins:
            return
        for fd in self._kept_open:
            os.close(fd)
        self._kept_open.clear()
        if self._closing:
            self._finalizer()

    def close(self) -> None:
        """Delete the store's directory and everything in it (once no pin is left)."""
        self._buffers, self._sizes, self._written, self._buffered = {}, {}, {}, 0
        if self._pins:
            self._closing = True
        else:
            self._finalizer()

    def _file(self, segment: int) -> Path:
        return self.path / f"{segment}.seg"


class PinnedSegments:
    """The payloads a :class:`PendingStore` held when pinned, readable from another thread while
    the store goes on: the store's own descriptors of those segments, which it does not close
    while pinned (a dropped segment's file is unlinked, its descriptor kept open until
    :meth:`release`). Every reference given out before the pin is in a file (the pin wrote the
    buffer), and appends go after it (nothing is rewritten), so a read is one ``pread`` touching
    nothing the store changes."""

    __slots__ = ("_fds", "_store")

    def __init__(self, store: PendingStore, fds: dict[int, int]) -> None:
        self._store: PendingStore | None = store
        self._fds = fds

    def get(self, ref: bytes) -> bytes:
        """The payload ``ref`` (given out by the store before the pin) refers to."""
        segment, offset, length = unpack_ref(ref)
        data = os.pread(self._fds[segment], length, offset)
        if len(data) != length:
            raise OSError(f"pinned store segment {segment}: {len(data)} of {length} bytes at {offset}")
        return data

    def release(self) -> None:
        """Let the store close what it dropped meanwhile (idempotent; on the store's thread)."""
        store, self._store = self._store, None
        if store is not None:
            store._unpin()


def _ref_packer(segment: int, end: int) -> struct.Struct:
    """The form of the references into ``segment`` whose payloads end by byte ``end``."""
    return SHORT_REF if -_SHORT_SEGMENT <= segment < _SHORT_SEGMENT and end < _SHORT_END else REF


def unpack_ref(ref: bytes) -> tuple[int, int, int]:
    """(segment, offset, length) of a reference in either form.

    >>> unpack_ref(_ref_packer(7, 100).pack(7, 90, 10)), len(_ref_packer(7, 100).pack(7, 90, 10))
    ((7, 90, 10), 12)
    >>> unpack_ref(_ref_packer(7, 2**32).pack(7, 2**32 - 10, 10)), len(_ref_packer(7, 2**32).pack(7, 0, 0))
    ((7, 4294967286, 10), 20)
    >>> len(_ref_packer(-2**40, 10).pack(-2**40, 0, 10))
    20
    """
    return (SHORT_REF if len(ref) == SHORT_REF.size else REF).unpack(ref)


def _remove(path: Path, fds: dict[int, int], kept_open: list[int]) -> None:
    for fd in [*fds.values(), *kept_open]:
        os.close(fd)
    fds.clear()
    kept_open.clear()
    shutil.rmtree(path, ignore_errors=True)


def _remove_dead_siblings(directory: Path) -> None:
    """Remove the store directories of processes that are gone (a SIGKILL leaves them behind)."""
    for entry in directory.glob(f"{_PREFIX}*"):
        pid_text = entry.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            continue
