"""Stage checkpoints on the state topics: a processor snapshot plus the input offsets it reflects.

A checkpoint is a processor's blob and the input offsets it reflects, cut into chunks of at most
``MAX_CHUNK_BYTES``; every chunk carries the checkpoint id, its index and count, the CRC-32 and
size of the whole blob and the offsets, so a reader keeps a checkpoint only when its chunks all
arrived in order and its CRC matches. Chunks left behind by a crash mid-save are ignored.

Chains (:meth:`CheckpointStore.save_link`, see ``docs/state.md``): a shard's checkpoints are
bases (a whole snapshot) and deltas (what changed since the checkpoint before), each
naming its kind and its parent (the checkpoint it follows), in a topic of their own per shard and
*generation*, ``f"{state}.{stage}-{shard}.g{n}"``, message key ``f"{stage}:{shard}"``. A base goes
to the current generation until that topic holds ``ROTATE_FACTOR`` times the base and at least
``rotate_min_bytes``; then it starts generation n + 1 (n the highest existing) and, once
acknowledged, the older generations' topics are deleted. What is kept is bounded without
compaction, on Kafka and on the embedded broker alike. A reader takes the highest generation
holding a complete base, its last complete base, then every delta whose parent is the link before
it (a torn or repeated save breaks nothing: its parent no longer matches).

Where a restore starts reading: every chunk of a chain names (``"from"``) the offset of the first
chunk of the last base its writer saw acknowledged in that generation (0 before there is one) and
(``"from_bytes"``) what the generation held before that offset. A reader fetches the topic's last
record and reads from the offset it names: the last complete base and its deltas, not the bases
before it. A base's first offset is the topic's end just before its first chunk is sent (this
process is the chain's one writer), or, after a restore, where the restored base was read. Chunks
written before this field (no ``"from"``), or nothing assembling from there, mean reading from 0.

Local copies (``worker.state_dir``, :class:`LocalBases`): each base a process writes is also kept
as a file, with the chain position it stands for; a restore that finds the chain's last base in it
reads only the links after that base from the topic.

What a restore holds in memory: a chain's base over ``SPOOL_ABOVE`` and its deltas over
``SPOOL_DELTAS_ABOVE`` are written to unlinked files as their chunks arrive (CRC checked on the
way) and read back when the shard is rebuilt, one delta at a time (:class:`ChainDeltas`); a base
is written from its file a ``DELIVER_GROUP_BYTES`` group of chunks at a time, its local copy file
to file by the kernel.

Checkpoints written before chains (one full snapshot per shard on ``settings.topics.state``, read
from its beginning to its true end: Fetch high watermark, see ``driftline.kafka.offsets``) are
still restored when a shard has no chain yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import struct
import tempfile
import time
import uuid
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar, overload

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from driftline.config import Settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_consumer
from driftline.kafka.offsets import end_offsets
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.state import BlobFile
from driftline.streams.delivery import deliver

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CHUNK_BYTES = 512 * 1024
"""Upper bound of one checkpoint message value (envelope included)."""
ROTATE_FACTOR = 2
ROTATE_MIN_BYTES = 64 * 2**20
"""A base starts a new generation once the current one holds this many bytes and ROTATE_FACTOR
bases' worth: small states (stage 2, a base per checkpoint) rotate every few minutes, not at
every checkpoint; large ones at every other base."""
_MAGIC = b"DLC1"
_HEADER_LEN = struct.Struct(">I")
_ENVELOPE_RESERVE = 8 * 1024  # room for the JSON header (ids, offsets) inside MAX_CHUNK_BYTES
DELIVER_GROUP_BYTES = 8 * 2**20
"""A checkpoint's chunks are built and delivered this many bytes at a time (a base of gigabytes
would otherwise exist twice: the blob and its messages). Each group is held twice while it is
delivered (the messages and the producer's record batches), by every shard with a base in flight:
64 MB groups cost a worker writing 4 bases at once ~0.5 GB; the producer sends ~1 MB requests
one after the other either way, so smaller groups cost one round trip per group."""

_LOCAL_MAGIC = b"DLLB"
_LOCAL_TRAILER = struct.Struct(">I4s")  # a local base's last bytes: its trailer's length, the magic
_LOCAL_FORMAT = 1
LOCAL_WRITE_PIECE = 8 * 2**20
"""A local copy of a base is written (and its CRC computed) this many bytes at a time, where the
kernel does not copy it file to file (``copy_file_range``). 64 MB pieces cost each base write 64 MB
of transient memory per shard, for no faster a copy or CRC."""
SPOOL_ABOVE = 64 * 2**20
"""A chain's base larger than this is restored from a file, never whole in memory: read from the
broker, its chunks are written to a temporary file as they arrive (in ``worker.state_dir``, else
``join.spill_dir``, else the temporary directory), its CRC computed on the way; a local copy is
read from where it is. Smaller ones are read into memory, as before."""
SPOOL_DELTAS_ABOVE = 64 * 1024
"""A chain's delta larger than this is written to a file shared by the chain's deltas as its chunks
arrive (:class:`DeltaSpool`) and read back when the restore applies it: the chains of every shard
are read before the first is rebuilt, and their deltas held in memory were ~600 MB at 10M pending.
Smaller ones (at most ~46 MB for the 720 deltas a chain may hold) stay in memory."""

Offsets = dict[tuple[str, int], int]
"""(topic, partition) -> next offset to read."""
FULL, BASE, DELTA = "full", "base", "delta"
"""Checkpoint kinds: a snapshot on the state topic; a chain's first link; a chain's later link."""


class CheckpointError(RuntimeError):
    """The state topic could not be read or written."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint as read back. For a chain: ``blob`` is its base, ``deltas`` the deltas after it
    in order, ``checkpoint_id`` and ``offsets`` those of its last link."""

    checkpoint_id: str
    blob: bytes | BlobFile
    """In memory, or (a base over the reader's ``spool_above``) in a file, never whole in memory."""
    offsets: Offsets
    kind: str = FULL
    parent: str | None = None
    deltas: Sequence[bytes] = ()
    """In memory (a tuple), or (a chain with deltas over the reader's ``spool_deltas_above``)
    :class:`ChainDeltas`: each read from a file as it is asked for, never all in memory at once."""
    generation: int | None = None
    broker_bytes: int = 0
    """A chain: the bytes read from its topic (less than base + deltas when the base was local)."""
    local_bytes: int = 0
    """A chain: the base's bytes read from its local copy (0: the base came from the topic)."""
    local_read_seconds: float = 0.0
    base_id: str | None = None
    """A chain: the checkpoint id of its base."""
    base_offset: int | None = None
    """A chain: the topic offset of its base's first chunk (None: not known, e.g. an old local copy)."""
    spooled_delta: SpooledDelta | None = None
    """A delta as assembled by a chain reader that spools deltas: where it is (``blob`` is empty)."""

    @property
    def delta_bytes(self) -> int:
        return sum(size for _, size in delta_heads(self.deltas))

    def close(self) -> None:
        """Let go of the files its base and deltas are read from, if any (a spooled base's and
        deltas' are deleted)."""
        if isinstance(self.blob, BlobFile):
            self.blob.close()
        if isinstance(self.deltas, ChainDeltas):
            self.deltas.close()


DELTA_HEAD_BYTES = 64
"""What :func:`delta_heads` keeps of a spooled delta's first bytes: its envelope (magic, format,
codec, the records it carries) is in there."""


class DeltaSpool:
    """One unlinked file a chain reader writes its large deltas to as their chunks arrive (each at
    a place it reserved by its size when its first chunk came), so a restore holds one delta at a
    time, not the chain's: at 10M pending a worker read 611 MB of deltas into memory before
    rebuilding its first shard. Shared by the deltas of one chain; closed with the last of them."""

    __slots__ = ("end", "file")

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.end = 0

    def reserve(self, size: int) -> int:
        start, self.end = self.end, self.end + size
        return start

    def write(self, offset: int, payload: bytes) -> None:
        fd = self.file.fileno()
        with memoryview(payload) as view:
            while view:
                written = os.pwrite(fd, view, offset)
                offset += written
                view = view[written:]

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.file.fileno(), size, offset)
        if len(data) != size:
            raise CheckpointError(f"a spooled delta's file ended {size - len(data)} bytes short")
        return data

    def reset(self) -> None:
        """Nothing written so far is needed any more (a later base completed): start again at 0."""
        self.end = 0
        self.file.truncate(0)

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True, slots=True)
class SpooledDelta:
    """A complete delta in a :class:`DeltaSpool` (its CRC checked), and its first bytes."""

    spool: DeltaSpool
    offset: int
    size: int
    head: bytes

    def __len__(self) -> int:
        return self.size


class ChainDeltas(Sequence[bytes]):
    """A chain's deltas in order, some in memory, some in a :class:`DeltaSpool`: each spooled one is
    read when it is asked for (``for delta in deltas`` holds one at a time). :meth:`close` deletes
    the file.

    >>> spool = DeltaSpool(tempfile.TemporaryFile())
    >>> spool.write(spool.reserve(3), b"two")
    >>> deltas = ChainDeltas([b"one", SpooledDelta(spool, 0, 3, b"tw")])
    >>> list(deltas), len(deltas), list(delta_heads(deltas)), list(deltas[1:])
    ([b'one', b'two'], 2, [(b'one', 3), (b'tw', 3)], [b'two'])
    >>> deltas.close(); spool.file.closed
    True
    """

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[bytes | SpooledDelta]) -> None:
        self._items = list(items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> ChainDeltas: ...

    def __getitem__(self, index: int | slice) -> bytes | ChainDeltas:
        if isinstance(index, slice):
            return ChainDeltas(self._items[index])
        item = self._items[index]
        return item if isinstance(item, bytes) else item.spool.read(item.offset, item.size)

    def heads(self) -> Iterator[tuple[bytes, int]]:
        """(each delta's first bytes, at least :data:`DELTA_HEAD_BYTES` of them, and its size), no
        spooled delta read."""
        for item in self._items:
            yield (item, len(item)) if isinstance(item, bytes) else (item.head, item.size)

    def close(self) -> None:
        for spool in {id(i.spool): i.spool for i in self._items if isinstance(i, SpooledDelta)}.values():
            spool.close()


def delta_heads(deltas: Sequence[bytes]) -> Iterator[tuple[bytes, int]]:
    """(first bytes, size) of each of a chain's deltas: the whole delta when it is in memory, its
    first :data:`DELTA_HEAD_BYTES` when it is spooled (enough for ``pipeline.state.delta_records``),
    without reading a spooled one."""
    if isinstance(deltas, ChainDeltas):
        return deltas.heads()
    return ((delta, len(delta)) for delta in deltas)


@dataclass(slots=True)
class _Assembly:
    checkpoint_id: str
    count: int
    crc: int
    size: int
    offsets: Offsets
    kind: str
    parent: str | None
    first_offset: int | None = None
    """The topic offset of its chunk 0 (None: the reader did not say)."""
    bytes_before: int = 0
    """What the reader had applied before its chunk 0 (bytes of message values)."""
    chunks: list[bytes] = field(default_factory=list)
    received: int = 0
    spool: BinaryIO | None = None
    """A large base's chunks go to this file, not ``chunks``, their CRC computed as they come."""
    running_crc: int = 0
    delta_spool: DeltaSpool | None = None
    """A large delta's chunks go to this shared file from ``spooled_at`` on, not ``chunks``."""
    spooled_at: int = 0
    spooled: int = 0
    head: bytes = b""

    def add(self, payload: bytes) -> None:
        self.received += 1
        if self.delta_spool is not None:
            if self.spooled + len(payload) <= self.size:  # past it: the size check fails below
                self.delta_spool.write(self.spooled_at + self.spooled, payload)
            if not self.spooled:
                self.head = bytes(payload[:DELTA_HEAD_BYTES])
            self.spooled += len(payload)
            self.running_crc = zlib.crc32(payload, self.running_crc)
            return
        if self.spool is None:
            self.chunks.append(payload)
            return
        self.spool.write(payload)
        self.running_crc = zlib.crc32(payload, self.running_crc)

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.close()

    def blob(self) -> bytes | BlobFile | SpooledDelta | None:
        """The blob its chunks make, None unless its size and CRC are the headers'."""
        if self.delta_spool is not None:
            if self.spooled != self.size or self.running_crc != self.crc:
                return None
            return SpooledDelta(self.delta_spool, self.spooled_at, self.size, self.head)
        if self.spool is not None:
            size = self.spool.tell()
            if size != self.size or self.running_crc != self.crc:
                self.spool.close()
                return None
            self.spool.flush()
            return BlobFile(self.spool, size)
        blob = b"".join(self.chunks)
        return blob if len(blob) == self.size and zlib.crc32(blob) == self.crc else None


def shard_key(stage: str, shard: int) -> str:
    return f"{stage}:{shard}"


def chain_topic(state_topic: str, stage: str, shard: int, generation: int) -> str:
    """The topic of one generation of a shard's checkpoint chain.

    >>> chain_topic("driftline.worker-state", "shard", 3, 12)
    'driftline.worker-state.shard-3.g12'
    """
    return f"{state_topic}.{stage}-{shard}.g{generation}"


def chain_generations(state_topic: str, stage: str, topics: Iterable[str]) -> dict[int, list[int]]:
    """shard -> the generations of its chain topics among ``topics``, highest first.

    >>> topics = ["st", "st.shard-0.g1", "st.shard-0.g3", "st.model-0.g1", "st.shard-2.g0"]
    >>> chain_generations("st", "shard", topics)
    {0: [3, 1], 2: [0]}
    """
    pattern = re.compile(re.escape(f"{state_topic}.{stage}-") + r"(\d+)\.g(\d+)")
    out: dict[int, list[int]] = {}
    for topic in topics:
        match = pattern.fullmatch(topic)
        if match:
            out.setdefault(int(match[1]), []).append(int(match[2]))
    return {shard: sorted(gens, reverse=True) for shard, gens in sorted(out.items())}


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where a reader of a chain topic should start: the offset of the first chunk of the last base
    acknowledged in the generation, and the bytes the generation held before it (rotation counts
    them). ``ReadFrom(0, 0)``: the whole topic."""

    offset: int
    held: int

    def header(self) -> dict[str, int]:
        return {"from": self.offset, "from_bytes": self.held}

    @classmethod
    def from_header(cls, header: Mapping[str, object], end: int) -> ReadFrom | None:
        """The position a chunk's header names, None if it names none (a chunk written before the
        field) or one outside [0, ``end``).

        >>> ReadFrom.from_header({"from": 7, "from_bytes": 900}, 10), ReadFrom.from_header({}, 10)
        (ReadFrom(offset=7, held=900), None)
        >>> ReadFrom.from_header({"from": 10, "from_bytes": 0}, 10), ReadFrom.from_header({"from": "x"}, 10)
        (None, None)
        """
        offset, held = header.get("from"), header.get("from_bytes", 0)
        if type(offset) is not int or type(held) is not int or not 0 <= offset < end or held < 0:
            return None
        return cls(offset, held)


def encode_chunks(checkpoint_id: str, blob: bytes, offsets: Mapping[tuple[str, int], int],
                  max_chunk_bytes: int = MAX_CHUNK_BYTES, kind: str = FULL,
                  parent: str | None = None, read_from: ReadFrom | None = None) -> list[bytes]:
    """The message values of one checkpoint, in order."""
    return [value for group in chunk_groups(checkpoint_id, blob, offsets, max_chunk_bytes, kind, parent,
                                            read_from=read_from)
            for value in group]


def chunk_count(size: int, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> int:
    """How many chunks a blob of ``size`` bytes is cut into.

    >>> chunk_count(0), chunk_count(100_000, 20_000), len(encode_chunks("c", bytes(100_000), {}, 20_000))
    (1, 9, 9)
    """
    payload_room = max_chunk_bytes - _ENVELOPE_RESERVE
    if payload_room <= 0:
        raise ValueError(f"max_chunk_bytes must exceed {_ENVELOPE_RESERVE}")
    return max(1, -(-size // payload_room))


def chunk_groups(checkpoint_id: str, blob: bytes | BlobFile, offsets: Mapping[tuple[str, int], int],
                 max_chunk_bytes: int = MAX_CHUNK_BYTES, kind: str = FULL, parent: str | None = None,
                 group_bytes: int = DELIVER_GROUP_BYTES, crc: int | None = None,
                 read_from: ReadFrom | None = None) -> Iterator[list[bytes]]:
    """The message values of one checkpoint, in order, a list of about ``group_bytes`` at a time:
    a writer that sends each group before asking for the next holds one group of messages beside
    the blob, not a second copy of the blob (each chunk is cut from a view of it). A chain's chunks
    carry ``read_from`` (where a reader of their topic starts), if given.

    >>> groups = list(chunk_groups("c", bytes(100_000), {}, max_chunk_bytes=20_000, group_bytes=60_000))
    >>> [len(group) for group in groups], [v for g in groups for v in g] == encode_chunks(
    ...     "c", bytes(100_000), {}, max_chunk_bytes=20_000)
    ([3, 3, 3], True)
    """
    count = chunk_count(len(blob), max_chunk_bytes)
    payload_room = max_chunk_bytes - _ENVELOPE_RESERVE
    per_group = max(1, group_bytes // max_chunk_bytes)
    if crc is None:  # a caller that has it saves a pass over the blob
        crc = blob_crc(blob)
    wire_offsets = sorted([t, p, o] for (t, p), o in offsets.items())
    chain: dict[str, object] = {} if kind == FULL else {"kind": kind, "parent": parent}
    if read_from is not None:
        chain |= read_from.header()
    with contextlib.ExitStack() as stack:
        # A blob in a file is read a chunk at a time (never whole in memory), one in memory sliced.
        view = None if isinstance(blob, BlobFile) else stack.enter_context(memoryview(blob))
        for first in range(0, count, per_group):
            group = []
            for index in range(first, min(first + per_group, count)):
                header = orjson.dumps({"id": checkpoint_id, "i": index, "n": count, "crc": crc,
                                       "size": len(blob), "offsets": wire_offsets, **chain})
                if len(header) > _ENVELOPE_RESERVE - len(_MAGIC) - _HEADER_LEN.size:
                    raise ValueError("checkpoint header too large (too many input partitions)")
                start = index * payload_room
                if view is None:
                    assert isinstance(blob, BlobFile)
                    group.append(b"".join((_MAGIC, _HEADER_LEN.pack(len(header)), header,
                                           blob.pread(start, payload_room))))
                    continue
                piece = view[start:start + payload_room]
                group.append(b"".join((_MAGIC, _HEADER_LEN.pack(len(header)), header, piece)))
                piece.release()
            yield group


def blob_crc(blob: bytes | BlobFile) -> int:
    """The CRC-32 of a blob (one in a file: its own if known, else read a piece at a time)."""
    if not isinstance(blob, BlobFile):
        return zlib.crc32(blob)
    if blob.crc is not None:
        return blob.crc
    crc = 0
    for start in range(0, len(blob), LOCAL_WRITE_PIECE):
        crc = zlib.crc32(blob.pread(start, LOCAL_WRITE_PIECE), crc)
    return crc


def decode_chunk(value: bytes) -> tuple[dict[str, object], bytes]:
    """(header, payload) of one checkpoint message; ValueError if it is not one."""
    if not value.startswith(_MAGIC) or len(value) < len(_MAGIC) + _HEADER_LEN.size:
        raise ValueError("not a checkpoint chunk")
    start = len(_MAGIC) + _HEADER_LEN.size
    (length,) = _HEADER_LEN.unpack_from(value, len(_MAGIC))
    header = orjson.loads(value[start:start + length])
    if not isinstance(header, dict):
        raise ValueError("bad checkpoint chunk header")
    return header, value[start + length:]


class CheckpointAssembler:
    """Folds state-topic messages, in log order, into the last complete checkpoint per key
    (and, for a chain topic, ``completed``: the last complete base and every complete checkpoint
    after it, in order: all :func:`assemble_chain` reads. Earlier links are let go as a later base
    completes, so a restore holds one base, not every base of the generation).

    >>> assembler = CheckpointAssembler(keep_all=True)
    >>> for ckpt_id, kind, parent in (("b1", BASE, None), ("d1", DELTA, "b1"), ("b2", BASE, None),
    ...                               ("d2", DELTA, "b2")):
    ...     for value in encode_chunks(ckpt_id, ckpt_id.encode(), {}, kind=kind, parent=parent):
    ...         assembler.apply("stage1:0", value)
    >>> [link.checkpoint_id for link in assembler.completed or ()], assembler.latest["stage1:0"].blob
    (['b2', 'd2'], b'd2')
    """

    def __init__(self, keep_all: bool = False, spool_above: int | None = None,
                 spool_dir: Path | None = None, spool_deltas_above: int | None = None) -> None:
        self.latest: dict[str, Checkpoint] = {}
        self.completed: list[Checkpoint] | None = [] if keep_all else None
        self._open: dict[str, _Assembly] = {}
        self.discarded_chunks = 0
        self._spool_above = spool_above
        self._spool_deltas_above = spool_deltas_above
        self._delta_spool: DeltaSpool | None = None
        self.spool_dir = spool_dir
        self.bytes_applied = 0
        """Bytes of message values applied so far."""
        self.positions: dict[str, tuple[int | None, int]] = {}
        """Checkpoint id -> (offset of its chunk 0, ``bytes_applied`` before it), of every complete
        checkpoint of ``completed`` (a chain reader: where its base is)."""

    def _spool_file(self) -> BinaryIO | None:
        """A temporary file (deleted once closed) for a large base's chunks; None (keep them in
        memory) if the directory cannot hold one."""
        directory = self.spool_dir
        try:
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
            return tempfile.TemporaryFile(dir=directory)  # a BlobFile owns it once complete
        except OSError as err:
            log.warning("reading a large base into memory: no temporary file in %s (%s)", directory, err)
            return None

    def _deltas_file(self) -> DeltaSpool | None:
        """The file this reader's large deltas go to (made on first use); None (keep them in
        memory) if the directory cannot hold one."""
        if self._delta_spool is None:
            file = self._spool_file()
            self._delta_spool = None if file is None else DeltaSpool(file)
        return self._delta_spool

    def _retire_deltas_file(self) -> None:
        """The deltas spooled so far are no link of the chain any more (a later base completed):
        the next ones go to a new file, and this one is closed unless a delta in it is still some
        key's latest checkpoint or still arriving."""
        spool, self._delta_spool = self._delta_spool, None
        if spool is None:
            return
        if any(a.delta_spool is spool for a in self._open.values()) or any(
                c.spooled_delta is not None and c.spooled_delta.spool is spool for c in self.latest.values()):
            return  # closed once those are let go
        spool.close()

    def close(self) -> None:
        """Let go of every file this reader spooled to (its links are not used)."""
        for assembly in self._open.values():
            assembly.discard()
        for link in self.completed or ():
            link.close()
        if self._delta_spool is not None:
            self._delta_spool.close()

    def apply(self, key: str, value: bytes | None, offset: int | None = None) -> None:
        """Fold one message (``offset``: its topic offset, if the caller knows it)."""
        before = self.bytes_applied
        self.bytes_applied += len(value or b"")
        if value is None:  # tombstone: the key was deleted
            self.latest.pop(key, None)
            gone = self._open.pop(key, None)
            if gone is not None:
                gone.discard()
            return
        try:
            header, payload = decode_chunk(value)
            ckpt_id, index, count = str(header["id"]), int(header["i"]), int(header["n"])  # type: ignore[call-overload]
            crc, size = int(header["crc"]), int(header["size"])  # type: ignore[call-overload]
            offsets = {(str(t), int(p)): int(o) for t, p, o in header["offsets"]}  # type: ignore[attr-defined]
            kind = str(header.get("kind", FULL))
            parent = None if header.get("parent") is None else str(header["parent"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            self.discarded_chunks += 1
            log.warning("ignoring a malformed checkpoint message for %s", key)
            return
        current = self._open.get(key)
        if index == 0:
            if current is not None:
                self.discarded_chunks += current.received  # a save that never finished
                current.discard()
            current = self._open[key] = _Assembly(ckpt_id, count, crc, size, offsets, kind, parent,
                                                  offset, before)
            if kind == BASE and self._spool_above is not None and size > self._spool_above:
                current.spool = self._spool_file()
            elif kind == DELTA and self._spool_deltas_above is not None and size > self._spool_deltas_above:
                current.delta_spool = self._deltas_file()
                if current.delta_spool is not None:
                    current.spooled_at = current.delta_spool.reserve(size)
        elif current is None or current.checkpoint_id != ckpt_id or current.received != index:
            self.discarded_chunks += 1
            return
        current.add(payload)
        if current.received < current.count:
            return
        del self._open[key]
        blob = current.blob()
        if blob is None:
            self.discarded_chunks += current.count
            log.warning("ignoring checkpoint %s of %s: size/CRC mismatch", ckpt_id, key)
            return
        spooled = blob if isinstance(blob, SpooledDelta) else None
        checkpoint = Checkpoint(ckpt_id, b"" if isinstance(blob, SpooledDelta) else blob, current.offsets,
                                current.kind, current.parent, base_offset=current.first_offset,
                                spooled_delta=spooled)
        self.latest[key] = checkpoint
        if self.completed is not None:
            if checkpoint.kind == BASE:
                for link in self.completed:  # a later base completed: their spooled files go
                    if isinstance(link.blob, BlobFile):
                        link.blob.close()
                self.completed.clear()
                self.positions.clear()
                self._retire_deltas_file()
            self.completed.append(checkpoint)
            self.positions[ckpt_id] = (current.first_offset, current.bytes_before)


def assemble_chain(links: Iterable[Checkpoint], generation: int | None = None) -> Checkpoint | None:
    """The chain in a generation's complete checkpoints (log order): its last base and every delta
    after it whose parent is the link before it; None without a base.

    >>> base, d1 = Checkpoint("b", b"B", {}, BASE), Checkpoint("d1", b"1", {("t", 0): 5}, DELTA, "b")
    >>> torn_retry = Checkpoint("dx", b"x", {}, DELTA, "gone")
    >>> chain = assemble_chain([base, d1, d1, torn_retry, Checkpoint("d2", b"2", {("t", 0): 9}, DELTA, "d1")])
    >>> chain.checkpoint_id, chain.blob, chain.deltas, chain.offsets, chain.base_id
    ('d2', b'B', (b'1', b'2'), {('t', 0): 9}, 'b')
    """
    base: Checkpoint | None = None
    deltas: list[Checkpoint] = []
    for link in links:
        if link.kind == BASE:
            base, deltas = link, []
            continue
        previous = deltas[-1] if deltas else base
        if link.kind == DELTA and previous is not None and link.parent == previous.checkpoint_id:
            deltas.append(link)
    if base is None:
        return None
    last = deltas[-1] if deltas else base
    # a delta is in memory or in its reader's DeltaSpool, never a BlobFile (a base may be)
    items: list[bytes | SpooledDelta] = []
    for delta in deltas:
        if delta.spooled_delta is not None:
            items.append(delta.spooled_delta)
        elif isinstance(delta.blob, bytes):
            items.append(delta.blob)
    blobs: Sequence[bytes] = (ChainDeltas(items) if any(isinstance(i, SpooledDelta) for i in items)
                              else tuple(i for i in items if isinstance(i, bytes)))
    return Checkpoint(last.checkpoint_id, base.blob, last.offsets, BASE, None, blobs, generation,
                      base_id=base.checkpoint_id, base_offset=base.base_offset)


@dataclass(frozen=True, slots=True)
class LocalBase:
    """The chain position a local copy of a base stands for (the copy's trailer): whose base it is
    (state topic, stage, shard), where it is (generation, the topic offset of its last chunk) and
    which (checkpoint id, chunk count, size, CRC-32 and offsets, as its chunks' headers say)."""

    state_topic: str
    stage: str
    shard: int
    generation: int
    checkpoint_id: str
    last_chunk: int
    chunks: int
    size: int
    crc: int
    offsets: Offsets
    generation_bytes: int
    """What the generation's topic held once this base was in it (rotation counts it)."""
    first_chunk: int | None = None
    """The topic offset of the base's first chunk (None: a copy written before it was recorded)."""

    def to_json(self) -> bytes:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["offsets"] = sorted([t, p, o] for (t, p), o in self.offsets.items())
        return orjson.dumps({"format": _LOCAL_FORMAT, **fields})

    @classmethod
    def from_json(cls, raw: bytes) -> LocalBase:
        """ValueError unless ``raw`` is a trailer this code wrote.

        >>> position = LocalBase("st", "shard", 2, 0, "b1", 9, 2, 5, 7, {("preds", 2): 3}, 5)
        >>> LocalBase.from_json(position.to_json()) == position
        True
        """
        try:
            fields = orjson.loads(raw)
            if not isinstance(fields, dict) or fields.pop("format", None) != _LOCAL_FORMAT:
                raise ValueError("not a local base trailer")
            fields["offsets"] = {(str(t), int(p)): int(o) for t, p, o in fields["offsets"]}
            return cls(**fields)
        except (orjson.JSONDecodeError, TypeError, KeyError) as err:
            raise ValueError(f"bad local base trailer: {err}") from None


@dataclass(frozen=True, slots=True)
class StagedCopy:
    """A base's blob written to a temporary file, not yet kept (no trailer, not renamed)."""

    path: Path
    crc: int


class LocalBases:
    """Each shard's last base, also kept as a file in a directory (``worker.state_dir``), so a restart
    on the same disk need not read it from the broker.

    A file, ``{state topic}.{stage}-{shard}.base``, is the blob followed by a trailer
    (:class:`LocalBase`, its length and ``DLLB``): written to ``….base.tmp``, fsynced, then renamed
    over the shard's previous one, so a file is whole or absent. A reader takes a file only if its
    trailer names the shard asked for and its size is the blob's plus the trailer's; the blob's CRC
    is checked when it is read. Every IO error is logged and counted (``failures``) and means no
    copy: a checkpoint never fails because of one.

    >>> import tempfile
    >>> copies = LocalBases(Path(tempfile.mkdtemp()))
    >>> staged = copies.stage("st", "shard", 0, b"hello", zlib.crc32(b"hello"))
    >>> position = LocalBase("st", "shard", 0, 3, "b1", 9, 1, 5, staged.crc, {("preds", 0): 7}, 5)
    >>> copies.keep(staged, position), copies.find("st", "shard", 0) == position, copies.read(position)
    (True, True, b'hello')
    >>> copies.find("st", "shard", 1), copies.find("other", "shard", 0), copies.failures
    (None, None, 0)
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failures = 0
        self._last_warning = 0.0

    def path(self, state_topic: str, stage: str, shard: int) -> Path:
        return self.directory / f"{state_topic}.{stage}-{shard}.base"

    def stage(self, state_topic: str, stage: str, shard: int, blob: bytes | BlobFile,
              crc: int) -> StagedCopy | None:
        """Write ``blob`` (whose CRC-32 is ``crc``) to the shard's temporary file, a piece at a time
        (no copy of the blob); None after an IO error."""
        tmp = self.path(state_topic, stage, shard).with_suffix(".base.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as out:
                copied = _copy_in_kernel(blob, out) if isinstance(blob, BlobFile) else 0
                for start in range(copied, len(blob), LOCAL_WRITE_PIECE):
                    if isinstance(blob, BlobFile):
                        out.write(blob.pread(start, LOCAL_WRITE_PIECE))
                        continue
                    with memoryview(blob) as view, view[start:start + LOCAL_WRITE_PIECE] as piece:
                        out.write(piece)
        except OSError as err:
            self._failed(f"writing {tmp}", err)
            self.discard(tmp)
            return None
        return StagedCopy(tmp, crc)

    def keep(self, staged: StagedCopy, position: LocalBase) -> bool:
        """Append the trailer, fsync and rename the staged file over the shard's copy."""
        final = self.path(position.state_topic, position.stage, position.shard)
        trailer = position.to_json()
        try:
            with open(staged.path, "ab") as out:
                out.write(trailer + _LOCAL_TRAILER.pack(len(trailer), _LOCAL_MAGIC))
                out.flush()
                os.fsync(out.fileno())
            os.replace(staged.path, final)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
        except OSError as err:
            self._failed(f"keeping {final}", err)
            self.discard(staged.path)
            return False
        return True

    def discard(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:  # its directory is what failed: nothing was left there
            log.debug("could not remove %s: %s", path, err)

    def find(self, state_topic: str, stage: str, shard: int) -> LocalBase | None:
        """The position of the shard's copy, None if there is none or it is truncated, foreign
        (another state topic, stage or shard) or not a copy at all."""
        path = self.path(state_topic, stage, shard)
        try:
            with open(path, "rb") as copy:
                size = copy.seek(0, os.SEEK_END)
                if size < _LOCAL_TRAILER.size:
                    raise ValueError("shorter than a trailer")
                copy.seek(size - _LOCAL_TRAILER.size)
                length, magic = _LOCAL_TRAILER.unpack(copy.read(_LOCAL_TRAILER.size))
                if magic != _LOCAL_MAGIC or length > size - _LOCAL_TRAILER.size:
                    raise ValueError("no trailer")
                copy.seek(size - _LOCAL_TRAILER.size - length)
                position = LocalBase.from_json(copy.read(length))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("not using the local base %s: %s", path, err)
            return None
        if (position.state_topic, position.stage, position.shard) != (state_topic, stage, shard):
            log.warning("not using the local base %s: it is %s's %s-%d", path, position.state_topic,
                        position.stage, position.shard)
            return None
        if position.size + length + _LOCAL_TRAILER.size != size:
            log.warning("not using the local base %s: %d bytes, its trailer says %d", path, size,
                        position.size + length + _LOCAL_TRAILER.size)
            return None
        return position

    def read(self, position: LocalBase) -> bytes | None:
        """The blob of the copy ``position`` was found in, None unless its size and CRC match."""
        blob = self.open(position)
        if blob is None:
            return None
        with contextlib.closing(blob):
            return blob.read()

    def open(self, position: LocalBase) -> BlobFile | None:
        """The blob of the copy ``position`` was found in, as a file (a restore unpickles it a frame
        at a time), None unless its size and CRC match: checked reading it once, a piece at a time,
        through the descriptor returned (a copy renamed over it meanwhile is another file)."""
        path = self.path(position.state_topic, position.stage, position.shard)
        try:
            file = open(path, "rb")  # noqa: SIM115 (the BlobFile returned owns it)
        except OSError as err:
            self._failed(f"reading {path}", err)
            return None
        try:
            size, crc = _size_and_crc(file, position.size)
        except OSError as err:
            file.close()
            self._failed(f"reading {path}", err)
            return None
        if size != position.size or crc != position.crc:
            file.close()
            log.warning("not using the local base %s: size/CRC mismatch", path)
            return None
        return BlobFile(file, size)

    def _failed(self, what: str, err: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_warning >= 60:  # a full disk fails every base: say so once a minute
            log.warning("local copy of a base checkpoint: %s failed (%s); going on without it "
                        "(restores read the base from the broker)", what, err)
            self._last_warning = now


def _copy_in_kernel(blob: BlobFile, out: BinaryIO) -> int:
    """Copy ``blob`` to ``out`` (an empty file) file to file in the kernel (``copy_file_range``:
    no buffer in this process); how many bytes it copied: fewer (the rest to copy by hand) if the
    call is missing or refused (another file system on an old kernel, no such system call)."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return 0
    out.flush()
    done = 0
    with contextlib.suppress(OSError):
        while done < len(blob):
            copied = copy(blob.file.fileno(), out.fileno(), len(blob) - done, blob.offset + done)
            if copied <= 0:
                break
            done += copied
    out.seek(done)  # where a copy by hand goes on (the kernel moved the descriptor's position)
    return done


def _size_and_crc(file: BinaryIO, size: int) -> tuple[int, int]:
    """How many of the first ``size`` bytes of ``file`` there are, and their CRC-32 (read a
    :data:`LOCAL_WRITE_PIECE` at a time into one buffer)."""
    buffer = bytearray(min(size, LOCAL_WRITE_PIECE))
    read = crc = 0
    with memoryview(buffer) as view:
        while read < size:
            got = file.readinto(view[: min(len(buffer), size - read)])  # type: ignore[attr-defined]
            if not got:
                break
            crc = zlib.crc32(view[:got], crc)
            read += got
    return read, crc


class _NotTheLocalBase(Exception):
    """The topic does not hold a local copy's base where the copy says."""


class _AfterLocalBase(CheckpointAssembler):
    """Assembles a chain topic read from a local base's last chunk on: that first record must be the
    base's last chunk (same id, count, size, CRC, offsets), else :class:`_NotTheLocalBase`; the base
    then counts as complete (``local_link``, its blob still to be read from the copy) and the links
    after it are assembled as usual, a later complete base replacing it."""

    def __init__(self, local: LocalBase, spool_above: int | None = None,
                 spool_dir: Path | None = None, spool_deltas_above: int | None = None) -> None:
        super().__init__(keep_all=True, spool_above=spool_above, spool_dir=spool_dir,
                         spool_deltas_above=spool_deltas_above)
        self.local = local
        self.local_link = Checkpoint(local.checkpoint_id, b"", dict(local.offsets), BASE,
                                     base_offset=local.first_chunk)
        self.confirmed = False

    def apply(self, key: str, value: bytes | None, offset: int | None = None) -> None:
        if self.confirmed:
            super().apply(key, value, offset)
            return
        local = self.local
        try:
            header, _ = decode_chunk(value or b"")
        except (ValueError, orjson.JSONDecodeError) as err:
            raise _NotTheLocalBase(f"offset {local.last_chunk} holds no checkpoint chunk ({err})") from None
        wire_offsets = sorted([t, p, o] for (t, p), o in local.offsets.items())
        expected = {"id": local.checkpoint_id, "i": local.chunks - 1, "n": local.chunks, "crc": local.crc,
                    "size": local.size, "kind": BASE, "offsets": wire_offsets}
        found = {name: header.get(name) for name in expected}
        if found != expected:
            raise _NotTheLocalBase(f"offset {local.last_chunk} holds checkpoint {found['id']} chunk "
                                   f"{found['i']}, not the last chunk of base {local.checkpoint_id}")
        self.confirmed = True
        self.completed = [self.local_link]  # its position is the copy's, not in ``positions``


class _LastHeader(CheckpointAssembler):
    """Keeps the header of the last message applied (None: it was no checkpoint chunk)."""

    def __init__(self) -> None:
        super().__init__()
        self.header: dict[str, object] | None = None

    def apply(self, key: str, value: bytes | None, offset: int | None = None) -> None:
        try:
            self.header = decode_chunk(value or b"")[0]
        except (ValueError, orjson.JSONDecodeError):
            self.header = None


async def _until_done(call: Callable[..., T], *args: object) -> T:
    """``call(*args)`` (a blocking admin request) in a thread, retried with backoff while the broker
    is unreachable: checkpoints wait for the broker as produced outputs do (``deliver``)."""
    backoff, last_log = 0.1, 0.0
    while True:
        try:
            return await asyncio.to_thread(call, *args)
        except (KafkaError, OSError) as err:
            now = time.monotonic()
            if now - last_log >= 10:
                log.warning("checkpoint topics: %s failed (%s); retrying until the broker answers",
                            getattr(call, "__name__", "request"), err)
                last_log = now
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class CheckpointStore:
    """Saves and loads stage checkpoints; shared by the runners of one process."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, *,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES, read_timeout_s: float = 60.0,
                 rotate_min_bytes: int = ROTATE_MIN_BYTES,
                 deliver_group_bytes: int = DELIVER_GROUP_BYTES, spool_above: int = SPOOL_ABOVE,
                 spool_deltas_above: int = SPOOL_DELTAS_ABOVE) -> None:
        self._settings = settings
        self._producer = producer
        self._max_chunk_bytes = max_chunk_bytes
        self._read_timeout_s = read_timeout_s
        self._tp = TopicPartition(settings.topics.state, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._assembler = CheckpointAssembler()
        self._next_offset = 0
        self._lock = asyncio.Lock()
        self._rotate_min_bytes = rotate_min_bytes
        self._deliver_group_bytes = deliver_group_bytes
        self._generations: dict[str, int] = {}  # key -> the generation its checkpoints go to
        self._generation_bytes: dict[str, int] = {}  # key -> bytes in that generation's topic
        self._read_from: dict[str, ReadFrom] = {}  # key -> its last acknowledged base's position
        state_dir = settings.worker.state_dir
        self.local = None if state_dir is None else LocalBases(state_dir)
        self._spool_above = spool_above
        self._spool_deltas_above = spool_deltas_above
        self.spool_dir = state_dir if state_dir is not None else settings.join.spill_dir
        """Where large bases are spooled, read or written (None: the temporary directory)."""
        # Finds where a base starts and (with local copies) ends, beside reads of the main
        # consumer (load_all).
        self._probe: AIOKafkaConsumer | None = None
        self._probe_lock = asyncio.Lock()
        self._keeping: dict[str, asyncio.Task[None]] = {}  # key -> its copy's fsync and rename
        self._local_bases: dict[str, str] = {}  # key -> the base whose local copy is whole (or being kept)
        # key -> (topic, offset) where the deltas after its last base written here start, for
        # time_delta_read; read on a consumer of its own, beside load_all and the probe.
        self._deltas_from: dict[str, tuple[str, int]] = {}
        self._timer: AIOKafkaConsumer | None = None
        self._timer_lock = asyncio.Lock()
        self.saved = 0
        self.messages_read = 0
        self.bytes_read = 0
        self.local_bytes_read = 0
        self.local_copy_failures: dict[str, int] = {}  # stage -> bases kept without a local copy

    async def start(self) -> None:
        consumer = aiokafka_consumer(self._settings, None)
        await consumer.start()
        self._consumer = consumer
        probe = aiokafka_consumer(self._settings, None)
        await probe.start()
        self._probe = probe

    async def stop(self) -> None:
        await self.local_copies_kept()
        for name in ("_consumer", "_probe", "_timer"):
            consumer = getattr(self, name)
            if consumer is not None:
                setattr(self, name, None)
                await consumer.stop()

    async def save_link(self, stage: str, shard: int, blob: bytes | BlobFile,
                        offsets: Mapping[tuple[str, int], int], *, base: bool, parent: str | None,
                        on_blocked: Callable[[bool], None] | None = None,
                        wait: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str:
        """Write a base or a delta following ``parent`` (the shard's last checkpoint) and wait until
        the broker acknowledged every chunk; returns its id. A base may start a new generation
        (then the older ones are deleted once it is acknowledged). A blob in a file
        (:func:`~driftline.pipeline.state.dump_state_to_file`) is read a chunk at a time.

        Retries while the broker is unreachable; a retry may repeat chunks, which readers ignore
        (they restart an assembly at chunk 0 and drop out-of-order chunks). ``on_blocked`` and
        ``wait`` are :func:`~driftline.streams.delivery.deliver`'s: a runner whose loop waits for
        the link pauses its partitions and waits in their ``getmany``, to stay in its group.
        """
        key = shard_key(stage, shard)
        ckpt_id = uuid.uuid4().hex
        generation = self._generations.get(key, -1)
        written = self._generation_bytes.get(key, 0)
        older: list[str] = []
        read_from = self._read_from.get(key, ReadFrom(0, 0))
        first_chunk: int | None = None  # where a base's first chunk lands (any lower offset is safe)
        if base and (generation < 0 or written >= max(ROTATE_FACTOR * len(blob), self._rotate_min_bytes)):
            generation, older = await _until_done(self._new_generation, stage, shard)
            written, read_from, first_chunk = 0, ReadFrom(0, 0), 0
        elif generation < 0:
            raise CheckpointError(f"a delta checkpoint of {key} without a base before it")
        topic = chain_topic(self._tp.topic, stage, shard, generation)
        if base and first_chunk is None:  # the topic's end now: every chunk of the base lands after it
            first_chunk = await self._end_offset(topic)
        # A base's local copy is written from the same blob while its chunks are delivered.
        if base:
            await self._kept(key)  # the previous copy's temporary file is the one staged next
        copy, crc = None, None
        if base and self.local is not None:
            crc = await asyncio.to_thread(blob_crc, blob)  # once for the chunks' headers and the copy
            copy = asyncio.ensure_future(
                asyncio.to_thread(self.local.stage, self._tp.topic, stage, shard, blob, crc))
        delivered = False
        try:
            await self._write(topic, stage, shard, ckpt_id, blob, offsets, BASE if base else DELTA, parent,
                              crc, read_from, on_blocked, wait)
            delivered = True
        finally:
            staged = None if copy is None else await copy
            if staged is None and copy is not None:
                self._count_copy_failure(stage)
            elif staged is not None and not delivered and self.local is not None:
                self.local.discard(staged.path)
        if base:  # the chain's last base is this one now: its copy is kept below, or there is none
            self._local_bases.pop(key, None)
            # Its deltas follow its last chunk (a retried chunk only moves them later: a read
            # from here then reads a few of the base's chunks too, counted as read).
            if first_chunk is None:
                self._deltas_from.pop(key, None)
            else:
                self._deltas_from[key] = (topic, first_chunk + chunk_count(len(blob), self._max_chunk_bytes))
        if staged is not None:
            position = LocalBase(self._tp.topic, stage, shard, generation, ckpt_id, -1,
                                 chunk_count(len(blob), self._max_chunk_bytes), len(blob), staged.crc,
                                 dict(offsets), written + len(blob), first_chunk)
            await self._keep_local_copy(staged, position)
        self._generations[key] = generation
        self._generation_bytes[key] = written + len(blob)
        # Links after an acknowledged base tell readers to start at it. Its first offset unknown,
        # they name the previous base's (it lies before this one: a longer read, never a wrong one).
        if base and first_chunk is not None:
            read_from = ReadFrom(first_chunk, written)
        self._read_from[key] = read_from
        if older:
            await asyncio.to_thread(self._delete_topics, older)
            self._forget_topics(older)
        self.saved += 1
        return ckpt_id

    def has_local_base(self, stage: str, shard: int, checkpoint_id: str | None) -> bool:
        """Whether the base ``checkpoint_id`` of the shard has a local copy a restore here would
        read (kept, or being kept, by this process, or read by its restore), so restoring it costs
        a read of the disk, not the broker. False without ``worker.state_dir``."""
        return checkpoint_id is not None and self._local_bases.get(shard_key(stage, shard)) == checkpoint_id

    async def local_copies_kept(self) -> None:
        """Wait until the local copies of the bases written so far are renamed in place."""
        for key in list(self._keeping):
            await self._kept(key)

    async def _kept(self, key: str) -> None:
        keeping = self._keeping.pop(key, None)
        if keeping is not None:
            await keeping

    async def _keep_local_copy(self, staged: StagedCopy, position: LocalBase) -> None:
        """Keep the staged copy of a base just acknowledged, recording where its last chunk is: the
        last record of its topic now (this process is the chain's one writer; a restore checks).
        The fsync and rename go on in the background: the checkpoint counts without them (a copy
        not yet renamed when the process dies is an older one, which a restore does not use)."""
        local = self.local
        assert local is not None and self._probe is not None
        tp = TopicPartition(chain_topic(position.state_topic, position.stage, position.shard,
                                        position.generation), 0)
        try:
            async with self._probe_lock:
                end = (await end_offsets(self._probe, [tp]))[tp]
        except (KafkaError, OSError, TimeoutError) as err:
            log.warning("no local copy of %s's base: its end offset is unknown (%s)", tp.topic, err)
            local.discard(staged.path)
            self._count_copy_failure(position.stage)
            return
        position = dataclasses.replace(position, last_chunk=end - 1)
        key = shard_key(position.stage, position.shard)
        self._local_bases[key] = position.checkpoint_id

        async def keep() -> None:
            if not await asyncio.to_thread(local.keep, staged, position):
                self._count_copy_failure(position.stage)
                if self._local_bases.get(key) == position.checkpoint_id:
                    del self._local_bases[key]

        self._keeping[key] = asyncio.ensure_future(keep())

    async def time_delta_read(self, stage: str, shard: int) -> tuple[int, float] | None:
        """Read the deltas written here after the shard's last base back from the broker, as a
        restore would (no assembly), and return (bytes read, seconds): what a live worker that
        never restored knows of the broker's read speed (``RestoreCosts.read``). None when where
        they start is unknown (no base written by this process, or the broker did not say where
        its chunks land) or nothing follows it. On a consumer of its own: load_all and a base's
        write are not held up; the read competes with the worker's batches, so it errs slow."""
        where = self._deltas_from.get(shard_key(stage, shard))
        if where is None:
            return None
        topic, start = where
        tp = TopicPartition(topic, 0)
        async with self._timer_lock:
            if self._timer is None:
                timer = aiokafka_consumer(self._settings, None)
                await timer.start()
                self._timer = timer
            consumer = self._timer
            end = (await end_offsets(consumer, [tp]))[tp]
            if start >= end:
                return None
            read, started = 0, time.perf_counter()
            async with contextlib.aclosing(self._records(consumer, tp, start, end)) as batches:
                async for records, _ in batches:
                    read += sum(len(record.value or b"") for record in records)
            return read, time.perf_counter() - started

    async def _end_offset(self, topic: str) -> int | None:
        """The end offset of a chain topic (its next record's offset), None if the broker did not
        answer (the caller goes on without it)."""
        assert self._probe is not None, "CheckpointStore.start() was not called"
        tp = TopicPartition(topic, 0)
        try:
            async with self._probe_lock:
                return (await end_offsets(self._probe, [tp]))[tp]
        except (KafkaError, OSError, TimeoutError) as err:
            log.warning("where the base written to %s starts is unknown (%s): its readers will read "
                        "from the previous base on", topic, err)
            return None

    def _count_copy_failure(self, stage: str) -> None:
        self.local_copy_failures[stage] = self.local_copy_failures.get(stage, 0) + 1

    async def _write(self, topic: str, stage: str, shard: int, ckpt_id: str, blob: bytes | BlobFile,
                     offsets: Mapping[tuple[str, int], int], kind: str, parent: str | None,
                     crc: int | None = None, read_from: ReadFrom | None = None,
                     on_blocked: Callable[[bool], None] | None = None,
                     wait: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Deliver the chunks a group at a time (each acknowledged before the next is built); the
        checkpoint counts once its last chunk is acknowledged, as when they were sent at once."""
        key = shard_key(stage, shard).encode()
        for group in chunk_groups(ckpt_id, blob, offsets, self._max_chunk_bytes, kind, parent,
                                  self._deliver_group_bytes, crc, read_from):
            messages = [OutboundMessage(topic, key, value, 0) for value in group]
            del group
            await deliver(self._producer, messages, on_blocked=on_blocked, wait=wait,
                          what=f"checkpoint chunks of {stage}:{shard}")

    def _new_generation(self, stage: str, shard: int) -> tuple[int, list[str]]:
        """Create the topic of the shard's next chain generation; (its number, the older topics)."""
        with admin_client(self._settings) as admin:
            existing = chain_generations(self._tp.topic, stage, admin.list_topics()).get(shard, [])
            generation = max([*existing, self._generations.get(shard_key(stage, shard), -1)]) + 1
            topic = chain_topic(self._tp.topic, stage, shard, generation)
            rf = self._settings.topics.replication_factor
            # Kept until the next generation deletes it: time or size retention would drop a base.
            never = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
            admin.create_topics([NewTopic(topic, 1, rf, topic_configs=never)])
            admin.wait_for_topics([topic])
        return generation, [chain_topic(self._tp.topic, stage, shard, g) for g in existing]

    def _delete_topics(self, topics: list[str]) -> None:
        """Drop superseded generations; a failure only leaves them for the next base to delete."""
        try:
            with admin_client(self._settings) as admin:
                admin.delete_topics(topics)
        except Exception as err:  # the chain just written is complete either way
            log.warning("could not delete old checkpoint topics %s: %s", topics, err)

    def _forget_topics(self, topics: list[str]) -> None:
        """Stop the producer refreshing metadata of deleted generations: aiokafka asks for every
        topic it ever produced to, and a broker that creates topics on metadata requests (Tansu;
        Kafka with auto.create.topics.enable, its default) would bring each one back, empty."""
        client = self._producer.client
        gone = set(topics)
        tracked = [t for t in client._topics if t not in gone]  # aiokafka has no public remove
        if tracked:  # an empty set would mean "all topics" to aiokafka
            client.set_topics(tracked)

    async def load_all(self, stage: str, shards: Iterable[int] | None = None) -> dict[int, Checkpoint]:
        """The last complete checkpoint of every shard of `stage` (or of ``shards``), as of the
        topics' ends now: a shard's chain if it has one, else its full snapshot."""
        async with self._lock:
            await self._catch_up()
            prefix = f"{stage}:"
            out = {int(key[len(prefix):]): ckpt for key, ckpt in self._assembler.latest.items()
                   if key.startswith(prefix) and key[len(prefix):].isdigit()}
            topics = await _until_done(self._list_topics)
            wanted = None if shards is None else set(shards)
            for shard in wanted or ():  # what this process knew of them may be stale: re-read
                self._generations.pop(shard_key(stage, shard), None)
                self._generation_bytes.pop(shard_key(stage, shard), None)
                self._read_from.pop(shard_key(stage, shard), None)
                self._deltas_from.pop(shard_key(stage, shard), None)  # its next base says again
            for shard, generations in chain_generations(self._tp.topic, stage, topics).items():
                if wanted is not None and shard not in wanted:
                    continue
                for generation in generations:
                    chain, size, read_from = await self._read_chain(stage, shard, generation)
                    if chain is not None:
                        out[shard] = chain
                        self._generations[shard_key(stage, shard)] = generation
                        self._generation_bytes[shard_key(stage, shard)] = size
                        self._read_from[shard_key(stage, shard)] = read_from
                        break
        return out if wanted is None else {s: c for s, c in out.items() if s in wanted}

    def _list_topics(self) -> list[str]:
        with admin_client(self._settings) as admin:
            return list(admin.list_topics())

    async def _read_chain(self, stage: str, shard: int,
                          generation: int) -> tuple[Checkpoint | None, int, ReadFrom]:
        """The chain in one generation's topic, the bytes that topic holds and where the chain's base
        is (links written next name it). Its base comes from the local copy when that is the chain's
        last base; else the topic is read from where its last record says the last acknowledged base
        starts, or from 0 if that record says nothing (written before chunks did) or nothing
        assembles from there."""
        tp = TopicPartition(chain_topic(self._tp.topic, stage, shard, generation), 0)
        if self.local is not None:
            local = await asyncio.to_thread(self.local.find, self._tp.topic, stage, shard)
            if local is not None and local.generation == generation:
                found = await self._read_chain_after(tp, local)
                if found is not None:
                    return found
        before = self.bytes_read
        start = await self._last_read_from(tp)
        chain: Checkpoint | None = None
        if start is None:
            log.info("reading %s from offset 0: its last record names no start (written by an older "
                     "version)", tp.topic)
        elif start.offset > 0:
            chain, size, read_from = await self._read_chain_from(tp, generation, start)
            if chain is None:
                log.warning("reading %s from offset 0: no complete base from offset %d, where its last "
                            "record says the last base starts", tp.topic, start.offset)
        if chain is None:
            chain, size, read_from = await self._read_chain_from(tp, generation, ReadFrom(0, 0))
        read = self.bytes_read - before
        return (None if chain is None else dataclasses.replace(chain, broker_bytes=read)), size, read_from

    async def _last_read_from(self, tp: TopicPartition) -> ReadFrom | None:
        """Where the last record of a chain topic says a reader starts (an empty topic: at 0), None
        if it says nothing."""
        consumer = self._consumer
        if consumer is None:
            raise CheckpointError("CheckpointStore.start() was not called")
        end = (await end_offsets(consumer, [tp]))[tp]
        if end == 0:
            return ReadFrom(0, 0)
        last = _LastHeader()
        await self._read(tp, end - 1, last, end)
        return None if last.header is None else ReadFrom.from_header(last.header, end)

    async def _read_chain_from(self, tp: TopicPartition, generation: int,
                               start: ReadFrom) -> tuple[Checkpoint | None, int, ReadFrom]:
        """The chain in a topic read from ``start`` on, the bytes the topic holds and where its base is."""
        assembler = CheckpointAssembler(keep_all=True, spool_above=self._spool_above,
                                        spool_dir=self.spool_dir, spool_deltas_above=self._spool_deltas_above)
        before = self.bytes_read
        await self._read(tp, start.offset, assembler)
        size = start.held + self.bytes_read - before
        chain = assemble_chain(assembler.completed or (), generation)
        if chain is None or chain.base_id is None:
            assembler.close()
            return None, size, start
        offset, applied = assembler.positions.get(chain.base_id, (None, 0))
        return chain, size, start if offset is None else ReadFrom(offset, start.held + applied)

    async def _read_chain_after(self, tp: TopicPartition,
                                local: LocalBase) -> tuple[Checkpoint, int, ReadFrom] | None:
        """The chain read from ``local``'s last chunk on, its base from the copy; None (read it all)
        unless the topic holds that base where the copy says and the copy's blob is whole."""
        assembler = _AfterLocalBase(local, self._spool_above, self.spool_dir, self._spool_deltas_above)
        before = self.bytes_read
        try:
            await self._read(tp, local.last_chunk, assembler)
            if not assembler.confirmed:
                raise _NotTheLocalBase(f"the topic ends before offset {local.last_chunk}")
        except _NotTheLocalBase as err:
            log.warning("not using the local base of %s: %s; reading the chain from the topic", tp.topic, err)
            assembler.close()
            return None
        read = self.bytes_read - before
        links = list(assembler.completed or ())
        local_bytes, seconds = 0, 0.0
        # Where the chain's base is: the copy's (a copy that does not say: read from 0 next time).
        read_from = ReadFrom(0, 0)
        if links and links[0] is assembler.local_link:
            started = time.perf_counter()
            copies = self.local
            assert copies is not None  # a local base was found in them
            read_blob = copies.read if local.size <= self._spool_above else copies.open
            blob = await asyncio.to_thread(read_blob, local)
            if blob is None:
                assembler.close()
                return None
            seconds = time.perf_counter() - started
            links[0] = dataclasses.replace(links[0], blob=blob)
            local_bytes = len(blob)
            self.local_bytes_read += local_bytes
            self._local_bases[shard_key(local.stage, local.shard)] = local.checkpoint_id
            if local.first_chunk is not None:
                read_from = ReadFrom(local.first_chunk, max(0, local.generation_bytes - local.size))
        else:  # a newer base completed after the copy's: read from the topic with what followed
            log.info("the local base of %s is older than the chain's last base: not used", tp.topic)
        chain = assemble_chain(links, local.generation)
        if chain is None:
            assembler.close()
            return None
        if links[0] is not assembler.local_link and chain.base_id is not None:
            offset, applied = assembler.positions.get(chain.base_id, (None, 0))
            if offset is not None:
                read_from = ReadFrom(offset, local.generation_bytes + applied)
        chain = dataclasses.replace(chain, broker_bytes=read, local_bytes=local_bytes,
                                    local_read_seconds=seconds)
        return chain, local.generation_bytes + read, read_from

    async def _catch_up(self) -> None:
        self._next_offset = await self._read(self._tp, self._next_offset, self._assembler)

    async def _read(self, tp: TopicPartition, start: int, assembler: CheckpointAssembler,
                    end: int | None = None) -> int:
        """Apply the records of ``tp`` from ``start`` to its true end (or ``end``); returns the next
        offset."""
        consumer = self._consumer
        if consumer is None:
            raise CheckpointError("CheckpointStore.start() was not called")
        if end is None:
            end = (await end_offsets(consumer, [tp]))[tp]
        if start >= end:
            return start
        position = start
        async with contextlib.aclosing(self._records(consumer, tp, start, end)) as batches:
            async for records, position in batches:  # noqa: B007 (the last one is returned)
                for record in records:
                    self._apply(assembler, record)
        return position

    async def _records(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
                       ) -> AsyncGenerator[tuple[list[ConsumerRecord[bytes, bytes]], int], None]:
        """The records of ``tp`` from ``start`` up to ``end``, a fetched batch at a time with the
        consumer's position after it, on ``consumer`` (assigned ``tp`` alone meanwhile: close the
        generator, e.g. by ``contextlib.aclosing``, so a caller's error unassigns it at once)."""
        consumer.assign([tp])
        consumer.seek(tp, start)
        # A stall is no progress for read_timeout_s, not a long read: a 10M-pending base is
        # 2.7 GB, over a minute at the embedded broker's ~37 MB/s.
        deadline = time.monotonic() + self._read_timeout_s
        try:
            while start < end:
                if time.monotonic() > deadline:
                    raise CheckpointError(f"reading {tp.topic} stalled at offset {start} of {end}")
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1000)
                # Gaps (compaction, control records) are skipped by the position, not by offsets.
                position = await consumer.position(tp)
                if position > start:
                    start, deadline = position, time.monotonic() + self._read_timeout_s
                yield batch.get(tp, []), start
        finally:
            consumer.unsubscribe()

    def _apply(self, assembler: CheckpointAssembler, record: ConsumerRecord[bytes, bytes]) -> None:
        self.messages_read += 1
        self.bytes_read += len(record.value or b"")
        if record.key is None:
            return
        assembler.apply(record.key.decode("utf-8", "replace"), record.value, record.offset)
