"""The packed record of one prediction, as the join keeps it: layout, id keys, digests.

A record: length (of the whole record), CRC-32 of the id key | id key | event time, state | payload
digest | pending only: flags, ctx id, shape id, label length, [score], [value], label text,
features | joined only: ctx id, label digest. The id key is a 16-bit code (_UUID_CODE: 16 raw bytes
follow, else the UTF-8 length) and the id bytes. Records of one group are concatenated
(:mod:`.table`); the functions here read and build single records.
"""

from __future__ import annotations

import hashlib
import operator
import struct
import zlib
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import cast

import numpy as np

from driftline.operators.join import native

_NO_SHAPE = 0xFFFF
_NO_LABEL = 0xFFFFFFFF
_PENDING, _JOINED, _CLOSED = 0, 1, 2
_HEAD = struct.Struct("<II")
_AT = _HEAD.size  # where the id key starts
_CODE = struct.Struct("<H")
_TS = struct.Struct("<qB")
DIGEST_SIZE = 8
_DIGEST_AT = _TS.size  # offset of the digest after the id key
_BODY = _TS.size + DIGEST_SIZE  # offset of the pending/joined part after the id key
_JOINED_TAIL = struct.Struct("<I8s")  # ctx id, label digest
_NO_CTX = 0xFFFFFFFF
_RECORD_FORMAT = 2  # 1: before payload digests
UNKNOWN_DIGEST = bytes(DIGEST_SIZE)
"""Digest of records restored from a checkpoint that predates digests: any duplicate of it is exact."""
_PRED = struct.Struct("<BIHI")
_PENDING_HEADS: dict[int, struct.Struct] = {}
"""A pending record's fixed part (_HEAD, id key, _TS, digest, _PRED) per id key length."""


def _pending_head(key_length: int) -> struct.Struct:
    """:data:`_PENDING_HEADS`' entry for ``key_length``, made on first use."""
    head = _PENDING_HEADS.get(key_length)
    if head is None:
        head = _PENDING_HEADS[key_length] = struct.Struct(f"<II{key_length}sqB{DIGEST_SIZE}sBIHI")
    return head


_AFTER_KEY = struct.Struct(f"<q{1 + DIGEST_SIZE}xBIHI")
"""What a pending record holds after its id key, to its payload: event time (its state and digest
skipped), then :data:`_PRED`'s flags, ctx id, shape id and label length (one unpack for an outcome)."""
_JOINED_HEADS: dict[int, struct.Struct] = {}
"""A joined record (:func:`_closed` with a :data:`_JOINED_TAIL`, the ctx id as the pending record's
bytes) per id key length."""


def _joined_head(key_length: int) -> struct.Struct:
    """:data:`_JOINED_HEADS`' entry for ``key_length``, made on first use."""
    head = _JOINED_HEADS.get(key_length)
    if head is None:
        head = _JOINED_HEADS[key_length] = struct.Struct(f"<II{key_length}sqB{DIGEST_SIZE}s4s{DIGEST_SIZE}s")
    return head


_DOUBLE = struct.Struct("<d")
_UUID_CODE = 0xFFFF
_UUID_PREFIX = _CODE.pack(_UUID_CODE)
_HAS_SCORE, _HAS_VALUE, _REROUTED = 1, 2, 4
_SPILLED = 8
"""In memory only, never in a checkpoint: the payload after the flags..label length is in the
pending store, and the record holds its reference instead (see :meth:`LabelJoin.set_memory_budget`)."""
_STUB_LENGTH = struct.Struct("<I")  # a record's length, rewritten in place when it is spilled or read back


def payload_digest(payload: bytes) -> bytes:
    """The digest records keep of a payload: its CRC-32, then its length (4 bytes each, big-endian).

    It only tells an exact re-send of a record from a conflicting duplicate, and is not
    cryptographic, nor need be: a crafted collision at worst counts a conflicting duplicate as a
    re-send, and the first record is kept either way (any change of length is always told; one that
    keeps it slips by with odds of 2**-32). Records kept before this digest hold BLAKE2b-64 of the
    payload: see :func:`legacy_resend`. (CRC-32 and length: ~0.3 us a value over bench_stages'
    ~530-byte predictions and ~110-byte labels, against BLAKE2b's ~0.55 and CRC-32 and Adler-32's ~0.4.)

    >>> payload_digest(b'{"prediction_id":"p"}').hex()
    '5595c57400000015'
    """
    return _DIGEST.pack(zlib.crc32(payload), len(payload))


def payload_digests(payloads: Sequence[bytes]) -> list[bytes]:
    """:func:`payload_digest` of each of ``payloads`` (a batch's records): in one call of the join's
    C extension where built (the same digests, several times faster than zlib's CRC-32 and the
    packing a value at a time: bench/bench_stage_steps.py), else in C calls only.

    >>> payload_digests([b'{"prediction_id":"p"}', b""]) == [payload_digest(b'{"prediction_id":"p"}'),
    ...                                                       payload_digest(b"")]
    True
    """
    fast = native.NATIVE
    if fast is not None:
        return cast(list[bytes], fast.payload_digests(payloads if type(payloads) is list else list(payloads)))
    return list(map(_DIGEST.pack, map(zlib.crc32, payloads), map(len, payloads)))


_DIGEST = struct.Struct(">II")


def legacy_resend(first: bytes, payload: bytes) -> bool:
    """Whether a duplicate of ``payload`` whose :func:`payload_digest` is not ``first``, the
    digest of the record accepted first, still re-sends it: ``first`` is BLAKE2b-64 of ``payload``,
    the digest of records kept before :func:`payload_digest` was CRC-32 and length (restored from
    an older checkpoint). Duplicates are rare: only they pay for the hash.

    >>> legacy_resend(hashlib.blake2b(b"v", digest_size=DIGEST_SIZE).digest(), b"v")
    True
    """
    return first == hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest()


def _record_starts(records: bytes) -> list[int]:
    """Where each of concatenated records starts."""
    starts = []
    pos, size, unpack = 0, len(records), _STUB_LENGTH.unpack_from
    while pos < size:
        starts.append(pos)
        pos += unpack(records, pos)[0]
    return starts


def _record_pieces(records: bytes, size: int) -> Iterator[bytes]:
    """Concatenated records in pieces of whole records, each at most ``size`` bytes (a longer
    record alone): a delta's records applied a piece at a time, so that what applying them
    allocates a record (stubs, their numpy arrays, the lists of slices) is a piece's, not a
    delta's (the delta after a base carries every record added while it was written).

    >>> list(_record_pieces(b"\\x05\\0\\0\\0a\\x06\\0\\0\\0bc\\x05\\0\\0\\0d", 11))
    [b'\\x05\\x00\\x00\\x00a\\x06\\x00\\x00\\x00bc', b'\\x05\\x00\\x00\\x00d']
    """
    start = pos = 0
    total, unpack = len(records), _STUB_LENGTH.unpack_from
    while pos < total:
        end = pos + unpack(records, pos)[0]
        if end - start > size and pos > start:
            yield records[start:pos]
            start = pos
        pos = end
    if pos > start:
        yield records[start:pos]


_STAMP = struct.Struct("<q")
"""An event time as a record stores it, after the id key (the first field of :data:`_TS`)."""


def _keyed_time(key: bytes, ts: int) -> bytes:
    """How a join tracks a record added since its last checkpoint: the id key and event time as one
    ``bytes``, which is how the record itself starts after its head (so a record's slice is one).
    A ~60-B object an added record where an (id key, time) tuple kept ~160 B (the tuple, the key
    and the time; issue 19: hundreds of thousands are tracked while a base is written).

    >>> record = _closed(_id_key("p"), 0, 5, _CLOSED, bytes(8))
    >>> _keyed_time(_id_key("p"), 5) == record[_AT : _AT + 3 + 8]
    True
    >>> _key_and_time(_keyed_time(_id_key("p"), -7))
    (b'\\x01\\x00p', -7)
    """
    return key + _STAMP.pack(ts)


def _key_and_time(keyed: bytes) -> tuple[bytes, int]:
    """The (id key, event time) of a :func:`_keyed_time`."""
    return keyed[:-8], _STAMP.unpack_from(keyed, len(keyed) - 8)[0]


def _record_key(record: bytes) -> bytes:
    """The id key of a record."""
    code = _CODE.unpack_from(record, _AT)[0]
    return record[_AT : _AT + (18 if code == _UUID_CODE else 2 + code)]


def _record_keyed_time(record: bytes) -> bytes:
    """The :func:`_keyed_time` of a record: its id key and event time, a slice of the record.

    >>> _record_keyed_time(_closed(_id_key("p"), 0, 5, _CLOSED, bytes(8))) == _keyed_time(_id_key("p"), 5)
    True
    """
    code = _CODE.unpack_from(record, _AT)[0]
    return record[_AT : _AT + (18 if code == _UUID_CODE else 2 + code) + 8]


def _id_key(pid: str) -> bytes:
    """How a prediction id is stored: a canonical (lowercase) UUID as its 16 bytes, else as UTF-8.

    >>> ids = ("0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "0B9F6C2E-4A51-4C0E-9D3A-8F1E2B7C6D5A", "p", "\\ud800")
    >>> [len(_id_key(p)) for p in ids], all(_pid(_id_key(p)) == p for p in ids)
    ([18, 38, 3, 5], True)
    """
    if len(pid) == 36 and pid[8:24:5] == "----":
        digits = pid.replace("-", "")
        if len(digits) == 32:
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                raw = b""
            if raw.hex() == digits:  # lowercase hex digits only: the id text comes back exactly
                return _UUID_PREFIX + raw
    data = pid.encode("utf-8", "surrogatepass")
    if len(data) >= _UUID_CODE:
        raise ValueError("prediction id longer than 65534 bytes")
    return _CODE.pack(len(data)) + data


_SHORT_CODES = [_CODE.pack(length) for length in range(256)]
"""The id key code of each short length (:func:`_id_keys`: a list lookup where ``_CODE.pack`` is a call)."""


def _id_keys(pids: Sequence[str]) -> list[bytes]:
    """:func:`_id_key` of each id: a batch without an id of a UUID's length (36), or of canonical
    UUIDs only (:func:`_uuid_keys`), is encoded without a Python call per id.

    >>> ids = ["p", "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "é", "q" * 300, "r"]
    >>> all(_id_keys(some) == list(map(_id_key, some)) for some in (ids, ids[::2], ids[::4], ids[3:]))
    True
    """
    lengths = list(map(len, pids))
    if not pids:
        return []
    if 36 in set(lengths):
        keys = _uuid_keys(pids) if len(pids) >= _UUID_BATCH and lengths.count(36) == len(pids) else None
        return list(map(_id_key, pids)) if keys is None else keys
    if max(lengths) < len(_SHORT_CODES) and "".join(pids).isascii():  # a byte a character
        return list(map(operator.add, map(_SHORT_CODES.__getitem__, lengths), map(str.encode, pids)))
    data = list(map(str.encode, pids, repeat("utf-8"), repeat("surrogatepass")))
    if max(map(len, data)) >= _UUID_CODE:
        return list(map(_id_key, pids))  # raises for the long one
    return list(map(operator.add, map(_CODE.pack, map(len, data)), data))


def _keyed_crcs(pids: Sequence[str]) -> tuple[list[bytes], list[int]]:
    """:func:`_id_keys` of the ids and the CRC-32 of each key (the join's group hash): in one call of
    the join's C extension for ASCII ids where built (bench/bench_stage_steps.py), else here.

    >>> ids = ["p", "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "é"]
    >>> _keyed_crcs(ids) == (_id_keys(ids), [zlib.crc32(key) for key in _id_keys(ids)])
    True
    """
    fast = native.NATIVE
    both = None if fast is None else fast.id_keys(pids if type(pids) is list else list(pids))
    if both is not None:
        return cast(tuple[list[bytes], list[int]], both)
    keys = _id_keys(pids)
    return keys, list(map(zlib.crc32, keys))


_UUID_BATCH = 16
"""Ids from which :func:`_id_keys` tries :func:`_uuid_keys` (below, numpy's fixed cost is more)."""


def _uuid_keys(pids: Sequence[str]) -> list[bytes] | None:
    """:func:`_id_key` of ids of 36 characters each, if every one is a canonical UUID (else None),
    with no Python call per id: their dashes, hex digits and lowercase checked on the ids' text
    joined, as :func:`_id_key` checks each id's (~1-2 us an id one by one).

    >>> canonical = ["0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "ffffffff-0000-4000-8000-000000000001"]
    >>> _uuid_keys(canonical) == list(map(_id_key, canonical))
    True
    >>> others = ["0B9F6C2E-4A51-4C0E-9D3A-8F1E2B7C6D5A", "0b9f6c2e4-a51-4c0e-9d3a-8f1e2b7c6d5a",
    ...           "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5-", "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5g",
    ...           "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d 5", "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5é"]
    >>> [_uuid_keys([canonical[0], other]) for other in others]
    [None, None, None, None, None, None]
    """
    n = len(pids)
    text = "".join(pids)
    if text.count("-") != 4 * n or any(text[at::36] != "-" * n for at in (8, 13, 18, 23)):
        return None
    digits = text.replace("-", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    if raw.hex() != digits:  # an uppercase digit or whitespace (which fromhex skips)
        return None
    keys = np.empty((n, len(_UUID_PREFIX) + 16), np.uint8)
    keys[:, : len(_UUID_PREFIX)] = np.frombuffer(_UUID_PREFIX, np.uint8)
    keys[:, len(_UUID_PREFIX) :] = np.frombuffer(raw, np.uint8).reshape(n, 16)
    return cast(list[bytes], keys.view(f"V{keys.shape[1]}").ravel().tolist())  # a bytes each, in C


def _pid(key: bytes) -> str:
    """The prediction id of a stored id key (inverse of :func:`_id_key`)."""
    if key[:2] == _UUID_PREFIX:
        h = key[2:].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return key[2:].decode("utf-8", "surrogatepass")


_CLOSED_UUID = struct.Struct("<II18sqB8s")


def _closed(key: bytes, crc: int, ts: int, state: int, digest: bytes, tail: bytes = b"") -> bytes:
    """The record of a prediction no longer pending: its id, event time, state and payload digest,
    then ``tail`` (a joined one's context and label digest)."""
    if len(key) == 18 and not tail:
        return _CLOSED_UUID.pack(_CLOSED_UUID.size, crc, key, ts, state, digest)
    size = _AT + len(key) + _BODY + len(tail)
    return b"".join((_HEAD.pack(size, crc), key, _TS.pack(ts, state), digest, tail))


def _upgrade_v1_group(group: bytes) -> bytes:
    """A group of format-1 records (no digests) in the current format, digests unknown."""
    parts = []
    for pos, end, klen in _walk(group):
        at = pos + _AT + klen
        crc = _HEAD.unpack_from(group, pos)[1]
        state = _TS.unpack_from(group, at)[1]
        rest = group[at + _TS.size : end]
        if state == _JOINED:
            rest = _JOINED_TAIL.pack(_NO_CTX, UNKNOWN_DIGEST)
        head = _HEAD.pack(_AT + klen + _BODY + len(rest), crc)
        parts.append(b"".join((head, group[pos + _AT : at + _TS.size], UNKNOWN_DIGEST, rest)))
    return b"".join(parts)


def _walk(group: bytes) -> list[tuple[int, int, int]]:
    """(start, end, id key length) of each record of a group, in order."""
    out = []
    pos, size = 0, len(group)
    while pos < size:
        end = pos + _HEAD.unpack_from(group, pos)[0]
        code = _CODE.unpack_from(group, pos + _AT)[0]
        out.append((pos, end, 18 if code == _UUID_CODE else 2 + code))
        pos = end
    return out


def _find(group: bytes, key: bytes) -> list[int]:
    """Start of each record of the id ``key`` in a group, in order."""
    out = []
    pos, size = 0, len(group)
    while pos < size:
        if group.startswith(key, pos + _AT):
            out.append(pos)
        pos += _HEAD.unpack_from(group, pos)[0]
    return out
