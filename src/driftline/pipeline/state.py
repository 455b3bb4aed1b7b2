"""Stage state in checkpoints: a versioned envelope, and today's settings applied on restore.

Checkpoints hold *state*, not configuration. A processor keeps every value derived from the
settings in attributes set by its ``configure(settings)`` (called on creation and again by every
restore), and drops the settings object itself from its pickled state, so a restarted stage runs
with the settings it was started with now. The settings that change results (the sections
``Settings.config_hash`` covers) are recorded in the state only to name, in a warning, what
changed since the checkpoint was taken.

A state blob is ``b"DLST" + format version (1 byte) + codec (1 byte) + body``: codec ``z`` is
zlib(pickle(processor)), ``r`` the pickle itself, for blobs over :data:`RAW_ABOVE` (a join's
records compress by ~13 % at ~20 MB/s, so zlib on a 10-million-prediction state costs minutes
at each end and saves little). Format 4 is format 3 whose join tables unpickle through a class
that can spill them as they arrive (``driftline.operators.join.restoring_under_budget``); format 3,
format 2 (no codec byte, always zlib) and format 1 (the blob without the envelope, settings
pickled inside) still restore. A base may also be restored from a file (:class:`BlobFile`: a
local copy, or chunks spooled as they were read), unpickled a frame at a time, never whole in
memory. A newer format, or a blob
that does not unpickle into the expected processor, fails with :class:`StateRestoreError`: one
line saying what to do.

Incremental checkpoints (``docs/state.md``): a processor that can say what changed since its
last checkpoint (:class:`Incremental`) writes a *base* (the blob above) now and then and *deltas*
in between: ``b"DLSD" + delta format (1 byte) + codec (1 byte) + body`` (format 1: zlib, no
codec byte), applied by the processor itself, in order, on top of the restored base. A delta is
an LZ4 frame (codec ``l``) where the ``lz4`` package is installed: ~10x cheaper than zlib level 1
for a little less (a stage-1 shard's windows and detectors to ~0.6 of their pickle in ~2.4 ms a
MB). Without it, deltas are stored raw above :data:`RAW_DELTA_ABOVE` (1 MiB): a stage-1 delta
is mostly the join's packed records, and zlib took ~0.19 s of CPU per 8 MB delta at every
checkpoint (and 0.03 s to undo at a restore) to save ~10 % of its bytes. Delta format 3: what a
chain holds already and never changes (a shard's reference profiles) is named in a delta, not
pickled again (:class:`ChainShared`). Delta format 4: the codec byte is followed by the count of
records a restore applies from it (8 bytes, big-endian; :func:`delta_records`), so the runner's
restore estimate does not depend on how well the codec compressed them. Delta format 5: the
same envelope; a stage-1 delta names a join record its chain held pending and that was closed
since by a *closing* (id key, time, state, label digest) instead of carrying it whole
(``driftline.operators.join.JoinChanges``); a reader of format 4 would drop the closings, so it
refuses the format instead.

>>> blob = dump_state({"seen": 3})
>>> blob[:5] == b"DLST" + bytes([STATE_FORMAT])
True
>>> load_state(blob, dict, "test")
{'seen': 3}
>>> load_delta(dump_delta(["changed"]), "test")
['changed']
>>> dump_delta(["changed"])[5:6] == (b"l" if _lz4_frame() else b"z")  # LZ4 where installed
True
>>> big = bytes(9 * 2**20)  # over RAW_ABOVE: stored as it pickles
>>> dump_state(big)[4:6] == bytes([STATE_FORMAT]) + b"r", load_state(dump_state(big), bytes, "test") == big
(True, True)
>>> import pickle, zlib
>>> load_state(b"DLST\x02" + zlib.compress(pickle.dumps({"seen": 2})), dict, "test")  # format 2
{'seen': 2}
>>> load_state(dump_delta(["changed"]), dict, "test")
Traceback (most recent call last):
...
driftline.pipeline.state.StateRestoreError: test: the checkpoint is a delta, not a base snapshot
>>> changed_settings({"drift": {"fdr_q": 0.01, "bins": 10}}, {"drift": {"fdr_q": 0.05, "bins": 10}})
['drift.fdr_q 0.01 -> 0.05']
"""

from __future__ import annotations

import copyreg
import ctypes
import ctypes.util
import functools
import importlib
import io
import logging
import os
import pickle
import struct
import tempfile
import zlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable

from driftline.config import RESULT_NEUTRAL, RESULT_SECTIONS, Settings

log = logging.getLogger(__name__)

STATE_FORMAT = 4
DELTA_FORMAT = 5
RAW_ABOVE = 8 * 2**20
"""Base pickles larger than this are stored without compression (see the module docstring)."""
RAW_DELTA_ABOVE = 2**20
"""Delta pickles larger than this are stored without compression (see the module docstring)."""
_ZLIB, _RAW, _LZ4 = b"z", b"r", b"l"
_DELTA_MAGIC = b"DLSD"
_DELTA_HEAD = len(_DELTA_MAGIC) + 2  # magic, format, codec
_RECORDS = struct.Struct(">Q")  # delta format 4: the records it carries, after the codec byte
_MAGIC = b"DLST"
FRESH_STATE_HINT = (
    "to start from fresh state, point DRIFTLINE_TOPICS_STATE at a new topic "
    "(the stages then re-read their inputs from the start of retention)"
)

T = TypeVar("T")


class StateRestoreError(ValueError):
    """A checkpoint cannot be restored by this driftline; the message says why and what to do."""


def dump_state(processor: object) -> bytes:
    """The versioned state blob of a processor."""
    return _envelope(_MAGIC + bytes([STATE_FORMAT]), processor, RAW_ABOVE)


def dump_state_to_file(processor: object, directory: Path | None = None) -> bytes | BlobFile:
    """:func:`dump_state` of ``processor``, byte for byte, pickled into a temporary file in
    ``directory`` (deleted once closed; default: the temporary directory) with its CRC-32
    computed as it is written: a base of gigabytes is never whole in memory. A blob of at most
    :data:`RAW_ABOVE` (zlib'd, as :func:`dump_state` does) is returned as ``bytes``, and so is
    the blob when the file cannot be written (a full disk, a directory that cannot hold one: logged).

    >>> state = {"seen": list(range(10))}
    >>> dump_state_to_file(state) == dump_state(state)
    True
    >>> big = bytes(9 * 2**20)
    >>> on_disk = dump_state_to_file(big)
    >>> on_disk.read() == dump_state(big), on_disk.crc == zlib.crc32(dump_state(big))
    (True, True)
    >>> on_disk.close()
    """
    try:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (the BlobFile returned owns it)
    except OSError as err:
        log.warning("pickling a base in memory: no temporary file in %s (%s)", directory, err)
        return dump_state(processor)
    try:
        out = _CrcWriter(file)
        head = _MAGIC + bytes([STATE_FORMAT])
        out.write(head + _RAW)
        _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(processor)
        file.flush()
        blob = BlobFile(file, out.size, crc=out.crc)
        if out.size - len(head) - 1 > RAW_ABOVE:
            return blob
        with memoryview(blob.read()) as whole:
            compressed = head + _ZLIB + zlib.compress(whole[len(head) + 1 :], 1)
    except OSError as err:
        file.close()
        log.warning("pickling a base in memory: writing it to %s failed (%s)", directory, err)
        return dump_state(processor)
    except BaseException:
        file.close()
        raise
    file.close()
    return compressed


class _CrcWriter:
    """Writes to ``file``, counting the bytes and their CRC-32 on the way."""

    __slots__ = ("crc", "file", "size")

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.crc = self.size = 0

    def write(self, data: bytes | pickle.PickleBuffer) -> int:
        # pickle hands a large buffer (a numpy array's, protocol 5) over as a PickleBuffer: no len()
        with memoryview(data) as view:
            self.crc = zlib.crc32(view, self.crc)
            self.size += view.nbytes
            return self.file.write(view)


def _envelope(head: bytes, obj: object, raw_above: int, after_codec: bytes = b"") -> bytes:
    """``head`` + codec + ``after_codec`` + the body of ``obj``'s pickle, pickled straight into
    the buffer returned (a large base exists once in memory while it is built, not as a pickle
    and its copy)."""
    out = io.BytesIO()
    out.write(head + _RAW + after_codec)
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    start = len(head) + 1 + len(after_codec)
    if out.tell() - start > raw_above:
        return out.getvalue()  # the buffer itself, trimmed to size: no copy
    with out.getbuffer() as view:
        compressed = zlib.compress(view[start:], 1)
    return head + _ZLIB + after_codec + compressed


class _Pickler(pickle.Pickler):
    """Pickles an object with a ``fresh_items()`` method (items made as the pickler reaches them
    and referenced nowhere else, e.g. a spilling join's groups read back whole) as the container
    its class names in ``fresh_container`` (default ``list``) of those items, not memoized: the memo
    would keep every item alive until the whole pickle is written, i.e. the whole table a second
    time beside the blob."""

    def reducer_override(self, obj: Any) -> Any:
        # Looked up on the class: an instance's __getattr__ (a proxy) must not make up the method.
        fresh_items = None if isinstance(obj, type) else getattr(type(obj), "fresh_items", None)
        if fresh_items is None:
            return NotImplemented
        make = getattr(type(obj), "fresh_container", list)  # what the items unpickle into
        return make, (), None, self._unmemoized(fresh_items(obj))

    def _unmemoized(self, items: Iterator[Any]) -> Iterator[Any]:
        self.fast = True  # no memo while the list's items are saved (they are read one by one)
        try:
            yield from items
        finally:
            self.fast = False


def release_free_memory() -> bool:
    """Give memory the allocator keeps after a large free back to the system (glibc's
    ``malloc_trim``): a base's build leaves gigabytes of freed small blocks in the heap, which
    the RSS would otherwise keep until the next base. False (nothing done) without glibc.

    >>> release_free_memory() in (True, False)
    True
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


MALLOC_ARENAS = 2
"""glibc heaps a worker allocates from (``M_ARENA_MAX``; glibc's default is 8 a core): threads
(checkpoints, bases, restores run in ``asyncio.to_thread``) share these instead of each keeping
its own heap of freed blocks. Issue 19: a live 4-shard worker at 1.5M pending (8 MB budgets,
``bench_restart.py --probe``) held 409 MB of glibc heaps with 141 MB in use and peaked at 961 MB;
with 2 heaps 211 MB with 138 in use, peak 786 MB."""
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Make glibc's malloc keep at most ``count`` heaps (arenas) from now on; call it before the
    process starts its threads. Nothing is done (False) without glibc, or when the environment
    sets ``MALLOC_ARENA_MAX`` (glibc read it already: the operator's choice stands).

    >>> saved = os.environ.get("MALLOC_ARENA_MAX")
    >>> os.environ["MALLOC_ARENA_MAX"] = "4"  # the operator's setting
    >>> limit_malloc_arenas()
    False
    >>> _ = os.environ.pop("MALLOC_ARENA_MAX") if saved is None else os.environ.update(MALLOC_ARENA_MAX=saved)
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, count))


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """glibc's function ``name``, or None without glibc (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return function


@runtime_checkable
class Incremental(Protocol):
    """A processor whose checkpoints can carry only what changed since its previous one."""

    def track_changes(self) -> None:
        """From now on, remember what changes (a runner that checkpoints incrementally asks)."""
        ...

    def changed_records(self) -> int:
        """How many records the next delta would carry: each costs a restore one apply."""
        ...

    def checkpoint(self, base: bool) -> bytes:
        """A base snapshot (``base``: the whole state, :func:`dump_state`) or a delta (what changed
        since the previous checkpoint, :func:`dump_delta`); either resets what is remembered."""
        ...

    def base_copy(self) -> BaseCopy:
        """A copy of the whole state as it is now, to write a base from while this processor goes
        on; resets what is remembered (the next delta follows that base)."""
        ...


class BaseCopy:
    """A processor's state at one moment (``state``, a copy that nothing changes any more), for a
    base written while the processor goes on: :meth:`dump` is the base blob (:func:`dump_state`),
    and may run in another thread; :meth:`release` (on the processor's thread, once dumped) lets
    the processor free what the copy kept, through ``release``.

    >>> copy = BaseCopy({"seen": 3}, release=lambda: print("released"))
    >>> load_state(copy.dump(), dict, "test")
    {'seen': 3}
    >>> copy.release()
    released
    """

    __slots__ = ("_release", "_state")

    def __init__(self, state: object, release: Callable[[], None]) -> None:
        self._state = state
        self._release: Callable[[], None] | None = release

    def dump(self) -> bytes:
        return dump_state(self._state)

    def dump_to_file(self, directory: Path | None = None) -> bytes | BlobFile:
        """:meth:`dump` pickled into a temporary file (:func:`dump_state_to_file`)."""
        return dump_state_to_file(self._state, directory)

    def release(self) -> None:
        """Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            release()


class ChainShared:
    """Objects of one immutable type (``kind``: a class that pickles through ``__reduce__``, not
    a builtin such as a tuple; e.g. the reference profiles a shard's detectors hold) that a chain
    of checkpoints pickles once: the base holds them whole, and a delta names each by ``key``
    instead of pickling it again; a delta pickles whole only those its chain does not hold yet
    (:meth:`dumps`). The restoring side replays the same chain (:meth:`restart` on the base's
    state, :meth:`loads` for each delta in order), so it knows the same objects by the same names.

    >>> from fractions import Fraction
    >>> shared = ChainShared(Fraction, key=str)
    >>> third = Fraction(1, 3)
    >>> _ = shared.restart({"third": third})  # a base holding it: a delta names it
    >>> body, fresh = shared.dumps({"again": third, "new": Fraction(1, 7)})
    >>> pickle.loads(fresh)  # the delta carries the new one whole, the other by name
    {'1/7': Fraction(1, 7)}
    >>> restoring = ChainShared(Fraction, key=str)
    >>> _ = restoring.restart({"third": third})
    >>> restoring.loads(body, fresh)
    {'again': Fraction(1, 3), 'new': Fraction(1, 7)}
    >>> ChainShared(Fraction, key=str).loads(body, b"")
    Traceback (most recent call last):
    ...
    driftline.pipeline.state.StateRestoreError: a delta names a shared object its chain does not hold: '1/3'
    """

    __slots__ = ("_seen", "key", "kind", "known")

    def __init__(self, kind: type, key: Callable[[Any], Hashable]) -> None:
        self.kind = kind
        self.key = key
        """The name of an object's content (equal names: equal objects; a hash of a canonical form)."""
        self.known: dict[Hashable, Any] = {}
        """The objects the chain holds so far (its base's and its deltas'), by key."""
        self._seen: dict[int, tuple[Any, Hashable]] = {}  # id -> (the object, kept alive; its key)

    def restart(self, state: object) -> bytes:
        """A base of ``state`` is written (or was restored): the chain holds its objects of
        ``kind`` and no others. Returns ``state`` pickled with them named (for :meth:`loads`:
        a copy of ``state`` that shares them)."""
        self.known, self._seen = {}, {}
        body, _ = self.dumps(state)
        return body

    def dumps(self, state: object) -> tuple[bytes, bytes]:
        """``state`` pickled with every object of ``kind`` named by its key, and the pickle
        (``b""`` for none) of the objects among them the chain does not hold yet, which it then
        holds (the delta carrying both is the next link)."""
        fresh: dict[Hashable, Any] = {}
        known, seen = self.known, self._seen

        def named(obj: Any) -> tuple[Callable[[Hashable], Any], tuple[Hashable]]:
            found = seen.get(id(obj))
            if found is None:  # each object's key is computed once (until the next base)
                found = seen[id(obj)] = (obj, self.key(obj))
            key = found[1]
            if key not in known:
                fresh[key] = obj
            return _chain_shared, (key,)

        out = io.BytesIO()
        pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = {**copyreg.dispatch_table, self.kind: named}  # consulted for kind only
        pickler.dump(state)
        self.known = {**known, **fresh}
        return out.getvalue(), pickle.dumps(fresh, pickle.HIGHEST_PROTOCOL) if fresh else b""

    def loads(self, body: bytes, fresh: bytes) -> Any:
        """What :meth:`dumps` pickled, its named objects the ones the chain holds (``fresh``'s
        first added to them). A name the chain does not hold is a :class:`StateRestoreError`."""
        if fresh:
            self.known = {**self.known, **pickle.loads(fresh)}
        return _SharedUnpickler(io.BytesIO(body), self.known).load()


def _chain_shared(key: Hashable) -> Any:
    """What a delta's named object unpickles through outside :meth:`ChainShared.loads`: never."""
    raise StateRestoreError(f"a delta names a shared object ({key!r}) outside its chain's restore")


class _SharedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, known: Mapping[Hashable, Any]) -> None:
        super().__init__(file)
        self._known = known

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == _chain_shared.__name__:
            return self._resolve
        return super().find_class(module, name)

    def _resolve(self, key: Hashable) -> Any:
        try:
            return self._known[key]
        except KeyError:
            raise StateRestoreError(
                f"a delta names a shared object its chain does not hold: {key!r}") from None


class ItemChanges(dict[Any, Any]):
    """In a delta, a processor's dict of per-model items as changes since the previous checkpoint:
    the items changed or added (this dict itself, so a ``__setstate__`` that normalises a restored
    dict's items does theirs alike) and the keys gone (:attr:`removed`). :meth:`apply` makes the
    restored dict (the base's with the earlier deltas') what the writer's was.

    >>> restored = {"a": 1, "b": 2, "c": 3}
    >>> ItemChanges({"b": 20, "d": 4}, removed=["c"]).apply(restored)
    {'a': 1, 'b': 20, 'd': 4}
    """

    def __init__(self, items: Mapping[Any, Any] | None = None, removed: list[Any] | None = None) -> None:
        super().__init__(items or {})
        self.removed: list[Any] = [] if removed is None else removed

    def apply(self, restored: dict[Any, Any]) -> dict[Any, Any]:
        """``restored`` changed in place (kept keys keep their place: the writer's order) and returned."""
        for key in self.removed:
            restored.pop(key, None)
        restored.update(self)
        return restored


class ItemMarks:
    """One dict of per-model items as the previous checkpoint saw it (the dict itself and its keys),
    for :meth:`changes`.

    >>> windows = {("m", 1): "open", ("n", 1): "open"}
    >>> marks = ItemMarks(windows)
    >>> windows[("m", 2)] = "new"; del windows[("n", 1)]; windows[("m", 1)] = "moved"
    >>> changes = marks.changes(windows, lambda key: key[0] == "m")
    >>> dict(changes), changes.removed
    ({('m', 1): 'moved', ('m', 2): 'new'}, [('n', 1)])
    >>> ItemMarks({}).changes(windows, lambda key: False) is windows  # another dict: whole
    True
    """

    __slots__ = ("container", "keys")

    def __init__(self, container: dict[Any, Any]) -> None:
        self.container = container
        self.keys = set(container)

    def changes(self, current: dict[Any, Any], touched: Callable[[Any], bool]) -> dict[Any, Any]:
        """``current``'s items added since, or whose key is ``touched`` (its state may have changed),
        and the keys removed since (:class:`ItemChanges`); ``current`` itself (to be pickled whole)
        if it is not the dict marked (replaced since)."""
        if current is not self.container:
            return current
        keys, changes, added = self.keys, ItemChanges(), 0
        for key, item in current.items():
            if key not in keys:
                changes[key] = item
                added += 1
            elif touched(key):
                changes[key] = item
        if len(current) - added != len(keys):  # some of the marked keys are gone
            changes.removed = [k for k in keys if k not in current]
        return changes


def dump_delta(changes: object, records: int = 0) -> bytes:
    """The versioned blob of a processor's changes since its previous checkpoint: LZ4 (a frame)
    where the ``lz4`` package is installed (the worker's ``clickhouse-connect`` requires it), else
    zlib up to :data:`RAW_DELTA_ABOVE` and raw above. ``records``: how many records a restore
    applies from it (:meth:`Incremental.changed_records`), in its header (:func:`delta_records`).

    >>> delta_records(dump_delta(["changed"], records=7))
    7
    """
    head = _DELTA_MAGIC + bytes([DELTA_FORMAT])
    count = _RECORDS.pack(records)
    lz4 = _lz4_frame()
    if lz4 is None:
        return _envelope(head, changes, RAW_DELTA_ABOVE, count)
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(changes)
    with out.getbuffer() as view:
        return head + _LZ4 + count + lz4.compress(view, store_size=False)


def delta_records(blob: bytes) -> int | None:
    """The records a delta's restore applies, as its writer counted them (delta format 4 on), read
    from its header: whatever its codec, without unpacking it. None: an older delta (or no delta).

    >>> delta_records(b"DLSD\x03l...") is None
    True
    """
    if not blob.startswith(_DELTA_MAGIC) or len(blob) < _DELTA_HEAD + _RECORDS.size:
        return None
    if blob[len(_DELTA_MAGIC)] < 4:
        return None
    count: int = _RECORDS.unpack_from(blob, _DELTA_HEAD)[0]
    return count


@functools.cache
def _lz4_frame() -> Any:
    """``lz4.frame``, or None without the package."""
    try:
        return importlib.import_module("lz4.frame")
    except ImportError:
        return None


def load_delta(blob: bytes, what: str) -> Any:
    """The changes in a delta blob (the processor checks their type when it applies them)."""
    if not blob.startswith(_DELTA_MAGIC) or len(blob) <= len(_DELTA_MAGIC):
        raise StateRestoreError(f"{what}: a checkpoint in a delta's place is not a delta; {FRESH_STATE_HINT}")
    version = blob[len(_DELTA_MAGIC)]
    if version > DELTA_FORMAT:
        raise StateRestoreError(
            f"{what}: the checkpoint has delta format {version}, newer than this driftline's "
            f"({DELTA_FORMAT}): run a newer driftline, or {FRESH_STATE_HINT}"
        )
    skip = _RECORDS.size if version >= 4 else 0  # the record count after the codec byte
    return _unpickle(memoryview(blob)[len(_DELTA_MAGIC) + 1 :], version, what, version >= 2, skip)


def _unpickle(body: bytes | memoryview, version: int, what: str, coded: bool, skip: int = 0) -> Any:
    """``coded``: the body starts with its codec byte (else it is zlib); ``skip``: bytes between
    the codec byte and the pickle's."""
    try:
        start = coded + skip
        if not coded or body[:1] == _ZLIB:
            return pickle.loads(zlib.decompress(memoryview(body)[start:]))
        if body[:1] == _RAW:
            return pickle.loads(memoryview(body)[start:])
        if body[:1] == _LZ4:
            lz4 = _lz4_frame()
            if lz4 is None:
                raise StateRestoreError(f"{what}: its checkpoint is LZ4-compressed: install the lz4 package")
            return pickle.loads(lz4.decompress(memoryview(body)[start:]))
        raise ValueError(f"unknown codec {body[:1]!r}")
    except StateRestoreError:
        raise
    except Exception as err:  # any unpickling failure means the same thing to the user
        raise StateRestoreError(
            f"{what}: cannot restore its checkpoint (state format {version}: "
            f"{type(err).__name__}: {err}); {FRESH_STATE_HINT}"
        ) from None


class BlobFile:
    """A blob held in a file, ``size`` bytes from ``offset`` (a base's local copy, or its chunks
    spooled to disk as they were read from the broker), whose integrity the caller checked:
    :func:`load_state` unpickles a raw base from it a frame at a time, so a restore never holds
    the blob in memory. Owns ``file`` (:meth:`close`).

    >>> import tempfile
    >>> file = tempfile.TemporaryFile()
    >>> _ = file.write(b"head" + dump_state({"seen": 3}))
    >>> blob = BlobFile(file, file.tell() - 4, offset=4)
    >>> load_state(blob, dict, "test"), blob.read() == dump_state({"seen": 3})
    ({'seen': 3}, True)
    >>> blob.close()
    """

    __slots__ = ("crc", "file", "offset", "size")

    def __init__(self, file: BinaryIO, size: int, offset: int = 0, crc: int | None = None) -> None:
        self.file = file
        self.size = size
        self.offset = offset
        self.crc = crc
        """Its CRC-32, if known (written by :func:`dump_state_to_file`)."""

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The whole blob (for what is small or not a raw base)."""
        self.file.seek(self.offset)
        return self.file.read(self.size)

    def pread(self, start: int, size: int) -> bytes:
        """``size`` bytes from ``start`` in the blob, at most to its end; leaves the file's position
        alone (threads may read pieces of the same blob at once)."""
        size = max(0, min(size, self.size - start))
        return os.pread(self.file.fileno(), size, self.offset + start) if size else b""

    def close(self) -> None:
        self.file.close()


_HEAD_SIZE = len(_MAGIC) + 2  # magic, format, codec


def load_state(blob: bytes | BlobFile, kind: type[T], what: str) -> T:
    """The processor in ``blob``; ``what`` names the shard in errors (e.g. 'stage-1 shard 3')."""
    if isinstance(blob, BlobFile):
        blob.file.seek(blob.offset)
        head = blob.file.read(_HEAD_SIZE)
        if not (head[: len(_MAGIC)] == _MAGIC and 3 <= head[len(_MAGIC)] <= STATE_FORMAT
                and head[-1:] == _RAW and blob.size > _HEAD_SIZE):
            return load_state(blob.read(), kind, what)  # small, zlib or an older format
        return _checked(_streamed(blob.file, head[len(_MAGIC)], what), kind, what)
    body: bytes | memoryview
    if blob.startswith(_MAGIC) and len(blob) > len(_MAGIC):
        version, body = blob[len(_MAGIC)], memoryview(blob)[len(_MAGIC) + 1 :]
    else:
        version, body = 1, blob  # format 1: the zlib stream alone
    if blob.startswith(_DELTA_MAGIC):
        raise StateRestoreError(f"{what}: the checkpoint is a delta, not a base snapshot")
    if version > STATE_FORMAT:
        raise StateRestoreError(
            f"{what}: the checkpoint has state format {version}, newer than this driftline's "
            f"({STATE_FORMAT}): run a newer driftline, or {FRESH_STATE_HINT}"
        )
    return _checked(_unpickle(body, version, what, version >= 3), kind, what)


def _streamed(file: BinaryIO, version: int, what: str) -> Any:
    """The pickle read from ``file`` on (a frame at a time)."""
    try:
        return pickle.load(file)
    except Exception as err:  # as _unpickle: any failure means the same thing to the user
        raise StateRestoreError(
            f"{what}: cannot restore its checkpoint (state format {version}: "
            f"{type(err).__name__}: {err}); {FRESH_STATE_HINT}"
        ) from None


def _checked(processor: Any, kind: type[T], what: str) -> T:
    if not isinstance(processor, kind):
        raise StateRestoreError(
            f"{what}: the checkpoint holds a {type(processor).__name__}, not a {kind.__name__}"
        )
    return processor


def settings_record(settings: Settings) -> dict[str, Any]:
    """The settings that change results, as plain values (what ``config_hash`` hashes)."""
    return settings.model_dump(include=set(RESULT_SECTIONS), exclude=RESULT_NEUTRAL, mode="json")


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``section.field old -> new`` for every value that differs, sorted."""
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(changed_settings(a, b, f"{prefix}{name}."))
        elif a != b:
            out.append(f"{prefix}{name} {a!r} -> {b!r}")
    return out


def warn_if_changed(what: str, recorded: Mapping[str, Any] | None, settings: Settings) -> None:
    """Log one warning naming the result-changing settings that differ from the checkpoint's."""
    if recorded is None:
        return
    changes = changed_settings(recorded, settings_record(settings))
    if changes:
        log.warning("%s: settings changed since its checkpoint (config_hash now %s); applying today's: %s",
                    what, settings.config_hash(), "; ".join(changes))
