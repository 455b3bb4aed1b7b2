"""Stage checkpoints on the state topic: a processor snapshot plus the input offsets it reflects.

One message key per shard, ``f"{stage}:{shard}"``, on the single partition of
``settings.topics.state``. A snapshot larger than one message is cut into chunks of at most
``MAX_CHUNK_BYTES``; every chunk carries the checkpoint id, its index and count, the CRC-32 and
size of the whole blob and the offsets, so a reader keeps the last checkpoint whose chunks all
arrived in order and whose CRC matches. Chunks left behind by a crash mid-save are ignored.

Reading goes from the beginning of the topic to its true end (Fetch high watermark, see
``driftline.kafka.offsets``). It is incremental: the store remembers where it stopped and what it
assembled, so a later ``load_all`` only reads what was appended since. On Kafka the topic is
compacted (latest checkpoint per key survives); the embedded broker does not compact, so the
first read of a long-lived state topic grows with its history.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.pipeline.stage import OutboundMessage
from driftline.streams.delivery import deliver

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 512 * 1024
"""Upper bound of one checkpoint message value (envelope included)."""
_MAGIC = b"DLC1"
_HEADER_LEN = struct.Struct(">I")
_ENVELOPE_RESERVE = 8 * 1024  # room for the JSON header (ids, offsets) inside MAX_CHUNK_BYTES

Offsets = dict[tuple[str, int], int]
"""(topic, partition) -> next offset to read."""


class CheckpointError(RuntimeError):
    """The state topic could not be read or written."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    checkpoint_id: str
    blob: bytes
    offsets: Offsets


@dataclass(slots=True)
class _Assembly:
    checkpoint_id: str
    count: int
    crc: int
    size: int
    offsets: Offsets
    chunks: list[bytes] = field(default_factory=list)


def shard_key(stage: str, shard: int) -> str:
    return f"{stage}:{shard}"


def encode_chunks(checkpoint_id: str, blob: bytes, offsets: Mapping[tuple[str, int], int],
                  max_chunk_bytes: int = MAX_CHUNK_BYTES) -> list[bytes]:
    """The message values of one checkpoint, in order."""
    payload_room = max_chunk_bytes - _ENVELOPE_RESERVE
    if payload_room <= 0:
        raise ValueError(f"max_chunk_bytes must exceed {_ENVELOPE_RESERVE}")
    pieces = [blob[i:i + payload_room] for i in range(0, len(blob), payload_room)] or [b""]
    crc = zlib.crc32(blob)
    wire_offsets = sorted([t, p, o] for (t, p), o in offsets.items())
    out = []
    for index, piece in enumerate(pieces):
        header = orjson.dumps({"id": checkpoint_id, "i": index, "n": len(pieces), "crc": crc,
                               "size": len(blob), "offsets": wire_offsets})
        if len(header) > _ENVELOPE_RESERVE - len(_MAGIC) - _HEADER_LEN.size:
            raise ValueError("checkpoint header too large (too many input partitions)")
        out.append(_MAGIC + _HEADER_LEN.pack(len(header)) + header + piece)
    return out


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
    """Folds state-topic messages, in log order, into the last complete checkpoint per key."""

    def __init__(self) -> None:
        self.latest: dict[str, Checkpoint] = {}
        self._open: dict[str, _Assembly] = {}
        self.discarded_chunks = 0

    def apply(self, key: str, value: bytes | None) -> None:
        if value is None:  # tombstone: the key was deleted
            self.latest.pop(key, None)
            self._open.pop(key, None)
            return
        try:
            header, payload = decode_chunk(value)
            ckpt_id, index, count = str(header["id"]), int(header["i"]), int(header["n"])  # type: ignore[call-overload]
            crc, size = int(header["crc"]), int(header["size"])  # type: ignore[call-overload]
            offsets = {(str(t), int(p)): int(o) for t, p, o in header["offsets"]}  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            self.discarded_chunks += 1
            log.warning("ignoring a malformed checkpoint message for %s", key)
            return
        current = self._open.get(key)
        if index == 0:
            if current is not None:
                self.discarded_chunks += len(current.chunks)  # a save that never finished
            current = self._open[key] = _Assembly(ckpt_id, count, crc, size, offsets)
        elif current is None or current.checkpoint_id != ckpt_id or len(current.chunks) != index:
            self.discarded_chunks += 1
            return
        current.chunks.append(payload)
        if len(current.chunks) < current.count:
            return
        del self._open[key]
        blob = b"".join(current.chunks)
        if len(blob) != current.size or zlib.crc32(blob) != current.crc:
            self.discarded_chunks += current.count
            log.warning("ignoring checkpoint %s of %s: size/CRC mismatch", ckpt_id, key)
            return
        self.latest[key] = Checkpoint(ckpt_id, blob, current.offsets)


class CheckpointStore:
    """Saves and loads stage checkpoints; shared by the runners of one process."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, *,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES, read_timeout_s: float = 60.0) -> None:
        self._settings = settings
        self._producer = producer
        self._max_chunk_bytes = max_chunk_bytes
        self._read_timeout_s = read_timeout_s
        self._tp = TopicPartition(settings.topics.state, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._assembler = CheckpointAssembler()
        self._next_offset = 0
        self._lock = asyncio.Lock()
        self.saved = 0
        self.messages_read = 0

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self._settings, None))
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def save(self, stage: str, shard: int, blob: bytes, offsets: Mapping[tuple[str, int], int]) -> str:
        """Write a checkpoint and wait until the broker acknowledged every chunk; returns its id.

        Retries while the broker is unreachable; a retry may repeat chunks, which readers ignore
        (they restart an assembly at chunk 0 and drop out-of-order chunks).
        """
        ckpt_id = uuid.uuid4().hex
        key = shard_key(stage, shard).encode()
        chunks = [OutboundMessage(self._tp.topic, key, value, self._tp.partition)
                  for value in encode_chunks(ckpt_id, blob, offsets, self._max_chunk_bytes)]
        await deliver(self._producer, chunks, what=f"checkpoint chunks of {stage}:{shard}")
        self.saved += 1
        return ckpt_id

    async def load_all(self, stage: str) -> dict[int, Checkpoint]:
        """The last complete checkpoint of every shard of `stage`, as of the topic's end now."""
        async with self._lock:
            await self._catch_up()
        prefix = f"{stage}:"
        return {int(key[len(prefix):]): ckpt for key, ckpt in self._assembler.latest.items()
                if key.startswith(prefix) and key[len(prefix):].isdigit()}

    async def _catch_up(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise CheckpointError("CheckpointStore.start() was not called")
        end = (await end_offsets(consumer, [self._tp]))[self._tp]
        if self._next_offset >= end:
            return
        consumer.assign([self._tp])
        consumer.seek(self._tp, self._next_offset)
        deadline = time.monotonic() + self._read_timeout_s
        try:
            while self._next_offset < end:
                if time.monotonic() > deadline:
                    raise CheckpointError(
                        f"reading {self._tp.topic} stalled at offset {self._next_offset} of {end}")
                batch = await consumer.getmany(self._tp, timeout_ms=500, max_records=1000)
                for record in batch.get(self._tp, []):
                    self._apply(record)
                # Gaps (compaction, control records) are skipped by the position, not by offsets.
                self._next_offset = max(self._next_offset, await consumer.position(self._tp))
        finally:
            consumer.unsubscribe()

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.messages_read += 1
        if record.key is None:
            return
        self._assembler.apply(record.key.decode("utf-8", "replace"), record.value)
