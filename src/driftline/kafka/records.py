"""Consumed Kafka records as the :class:`RawRecord` every processor takes (worker, replay, readers).

A consumer made with ``value_deserializer=RAW_RECORDS`` (``aiokafka_consumer(...,
raw_records=True)``) hands :class:`RawRecord` objects out of ``getmany`` itself: aiokafka builds a
``ConsumerRecord`` per record (eleven fields, the headers copied into a tuple) that the worker then
copied into a ``RawRecord`` and dropped, ~0.6 of the ~2 CPU-us a record its fetch path cost
(``bench/bench_fetch_records.py``; docs/scaling.md, session 48). aiokafka has no public hook for the
record it builds, so :func:`install` subclasses its fetcher's ``PartitionRecords``: a partition's
records made for a consumer with the marker are built by :func:`_raw_builder`; every other
consumer's are aiokafka's own, by aiokafka's own code (the subclass only looks at the marker once a
fetched partition). Where aiokafka's internals differ from what the subclass expects, nothing is
patched and the marker is an identity deserializer: ``getmany`` returns ``ConsumerRecord`` objects
again and :func:`as_raw` converts them, as before.

Where the C extension ``_records`` was built, a marked consumer's fetched partition of v2 batches
(a compressed batch decompressed by aiokafka's own codec, :func:`_decompressed`; transactions'
batches where the fetch holds no aborted one, control batches skipped) does not go through
aiokafka's record loop at all: ``_records.parse`` reads the fetched bytes into RawRecords in one pass
(CRCs checked as aiokafka checks them) and :class:`_ParsedRecords` serves them to aiokafka's
``FetchResult``. A fetch it cannot read exactly as aiokafka would (another format, an aborted
transaction to skip, a codec aiokafka lacks, a bad CRC) goes aiokafka's way whole, so aiokafka's
handling and errors are unchanged. ``worker.compiled_paths`` false turns it off
(:func:`use_native_fetch`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka import codec
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord

from driftline.operators.compiled_paths import compiled_paths, use_compiled_paths
from driftline.operators.validate import RawRecord

try:
    from driftline.kafka import _records
except ImportError:  # built without a C compiler: aiokafka's record loop, with the builder below
    _records = None  # type: ignore[assignment]

NATIVE: Any = _records


class _RawRecordsMarker:
    """The value deserializer that asks for :class:`RawRecord` objects; as a deserializer, the
    identity (what aiokafka calls where the fetch path is not patched)."""

    def __call__(self, value: bytes | None) -> bytes | None:
        return value

    def __repr__(self) -> str:
        return "RAW_RECORDS"


RAW_RECORDS: Final = _RawRecordsMarker()


def to_raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    """An aiokafka ConsumerRecord as the RawRecord the processors take."""
    return RawRecord(record.topic, record.partition, record.offset, record.timestamp, record.key,
                     record.value)


def as_raw(records: Sequence[Any]) -> list[RawRecord]:
    """A fetched partition's records as RawRecords: the list itself where the fetch path made them."""
    if records and type(records[0]) is RawRecord:
        return records if isinstance(records, list) else list(records)
    return [to_raw(r) for r in records]


def _raw_builder(topic: str, partition: int) -> Callable[[Any, Any], RawRecord]:
    """``PartitionRecords._consumer_record`` for one partition: aiokafka's C ``DefaultRecord`` (or
    legacy record) straight to a RawRecord."""
    def build(_tp: Any, record: Any) -> RawRecord:
        return RawRecord(topic, partition, record.offset, record.timestamp, record.key, record.value)
    return build


def use_native_fetch(enabled: bool) -> bool:
    """Read marked consumers' fetches in C (where built) or always aiokafka's way; returns whether
    the C pass runs now."""
    global NATIVE
    NATIVE = _records if enabled else None
    return NATIVE is not None


def native_fetch() -> bool:
    """Whether marked consumers' fetches are read in C now (``/metrics``: compiled_path fetch)."""
    return NATIVE is not None


def use_process_compiled_paths(enabled: bool) -> dict[str, bool]:
    """A worker's or a replay's compiled C paths on or off together (``worker.compiled_paths``): the
    operators' (:func:`~driftline.operators.compiled_paths.use_compiled_paths`) and the fetch's;
    returns :func:`process_compiled_paths`."""
    use_compiled_paths(enabled)
    use_native_fetch(enabled)
    return process_compiled_paths()


def process_compiled_paths() -> dict[str, bool]:
    """Which compiled paths run now, the operators' and ``fetch`` (the start-up log line and
    ``/metrics`` ``compiled_path``)."""
    return {**compiled_paths(), "fetch": native_fetch()}


class _ParsedRecords:
    """A fetched partition already read into RawRecords, as aiokafka's ``FetchResult`` uses a
    ``PartitionRecords``: iterated (``getall``: the list's own iterator, so its loop runs in C) or
    stepped (``getone``), and asked for ``next_fetch_offset`` as aiokafka's generator would have
    set it by then: the fetch offset until the records are read, the offset after the last record
    handed out while some are left, the batches' end once all are."""

    __slots__ = ("_begun", "_end", "_iterator", "_records", "_start")

    def __init__(self, records: list[RawRecord], start: int, end: int) -> None:
        self._records, self._start, self._end = records, start, end
        self._iterator = iter(records)
        self._begun = False

    def __iter__(self) -> Any:
        self._begun = True
        return self._iterator

    def __next__(self) -> RawRecord:
        self._begun = True
        return next(self._iterator)

    @property
    def next_fetch_offset(self) -> int:
        if not self._begun:
            return self._start
        left = operator.length_hint(self._iterator)  # a list iterator's: exact
        if left == 0:
            return self._end
        taken = len(self._records) - left
        return self._start if taken == 0 else self._records[taken - 1].offset + 1


class _FetchedRecords:
    """aiokafka's ``MemoryRecords`` of one fetched partition, and the bytes it reads (for
    ``_records.parse``). Its methods are the ``MemoryRecords``' own, bound: no call in between."""

    __slots__ = ("data", "has_next", "next_batch", "size_in_bytes")

    def __init__(self, data: bytes) -> None:
        records = MemoryRecords(data)
        self.data = data
        self.has_next, self.next_batch, self.size_in_bytes = (records.has_next, records.next_batch,
                                                              records.size_in_bytes)


# a v2 batch's compression codec (its attributes' low 3 bits): aiokafka's test that it has the
# library, and its decoder
_CODECS: Final[dict[int, tuple[Callable[[], bool], Callable[[bytes], bytes]]]] = {
    1: (codec.has_gzip, codec.gzip_decode), 2: (codec.has_snappy, codec.snappy_decode),
    3: (codec.has_lz4, codec.lz4_decode), 4: (codec.has_zstd, codec.zstd_decode)}


def _decompressed(kind: int, payload: bytes) -> bytes | None:
    """A compressed batch's records as aiokafka decompresses them; None where aiokafka has no
    library for the codec or the payload does not decompress (aiokafka then raises its own error)."""
    found = _CODECS.get(kind)
    if found is None or not found[0]():
        return None
    try:
        return bytes(found[1](payload))
    except Exception:  # any codec's failure: aiokafka's own reading says what it is
        return None


def _parsed(args: tuple[Any, ...]) -> _ParsedRecords | None:
    """The fetch read in C, from ``PartitionRecords``' positional arguments (tp, records, aborted
    transactions, fetch offset, key and value deserializers, check_crcs, ...); None: aiokafka's way."""
    native = NATIVE
    if native is None or len(args) < 7 or args[5] is not RAW_RECORDS:
        return None
    tp, records, aborted, fetch_offset, _, _, check_crcs = args[:7]
    data = getattr(records, "data", None)
    if data is None:
        return None
    # a transaction's batches as any other where aiokafka would skip none of them: no aborted
    # transaction in the fetch, or reading uncommitted (isolation level, the 8th argument: 0)
    transactions = not aborted or (len(args) > 7 and args[7] == 0)
    parsed = native.parse(data, fetch_offset, tp.topic, tp.partition, RawRecord, bool(check_crcs),
                          _decompressed, transactions)
    return None if parsed is None else _ParsedRecords(parsed[0], fetch_offset, parsed[1])


def install() -> bool:
    """Patch aiokafka's fetcher so a consumer with the :data:`RAW_RECORDS` marker gets RawRecords.

    Idempotent; False (and nothing patched) where aiokafka's fetcher is not the one this was written
    against (aiokafka 0.10-0.14: ``PartitionRecords`` builds each record with ``_consumer_record``)."""
    try:
        from aiokafka.consumer import fetcher
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        return False
    base = getattr(fetcher, "PartitionRecords", None)
    if base is None or not callable(getattr(base, "_consumer_record", None)):
        return False
    if getattr(base, "driftline_raw_records", False):
        return True

    class PartitionRecords(base):  # type: ignore[misc, valid-type]
        driftline_raw_records = True

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            # an object of another class: Python then skips __init__, aiokafka's loop never runs
            parsed = None if kwargs else _parsed(args)
            return parsed if parsed is not None else super().__new__(cls)

        def __init__(self, tp: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(tp, *args, **kwargs)
            if getattr(self, "_value_deserializer", None) is RAW_RECORDS:
                # an instance attribute: aiokafka's record loop looks the method up per record
                self._consumer_record = _raw_builder(tp.topic, tp.partition)

    PartitionRecords.__qualname__ = base.__qualname__
    PartitionRecords.__module__ = base.__module__
    fetcher.PartitionRecords = PartitionRecords
    if getattr(fetcher, "MemoryRecords", None) is not None:
        fetcher.MemoryRecords = _FetchedRecords  # the fetch's bytes kept beside aiokafka's reader
    return True


RAW_RECORDS_INSTALLED: Final = install()
