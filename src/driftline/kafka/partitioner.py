"""Kafka's default partitioner for keyed records: murmur2 of the key, made positive, mod partitions.

The Java client, kafka-python, aiokafka and driftline's SDK all place a keyed record this way, so
records keyed by ``prediction_id`` land on the same partition index whichever of them produced
it: predictions and labels stay co-partitioned. Stage 1's join, the replay of exported files, the
in-process pipeline and the worker's producer all call this one implementation. It needs numpy
only, so the pure pipeline uses it without any Kafka client library.

>>> murmur2(b"abc")
479470107
>>> partition_for_key(b"p-1", 4), partition_for_key(b"p-3", 4)
(0, 3)
>>> partitions_for_keys([b"p-1", b"p-2", b"p-3"], 4).tolist()
[0, 0, 3]
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_M32 = np.uint32(_M)
_WORDS = struct.Struct("<I")  # a little-endian 4-byte block of the key


def murmur2(key: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``key``, unsigned (the Java client's ``Utils.murmur2``).

    >>> [murmur2(k) for k in (b"", b"a", b"abcd")]
    [275646681, 2731586172, 2971317748]
    """
    length = len(key)
    h = _SEED ^ length
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(key[:whole]) if whole else ():
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    extra = length - whole
    if extra >= 3:
        h ^= key[whole + 2] << 16
    if extra >= 2:
        h ^= key[whole + 1] << 8
    if extra >= 1:
        h = ((h ^ key[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def murmur2_many(keys: Sequence[bytes]) -> npt.NDArray[np.uint32]:
    """:func:`murmur2` of each key as a uint32 array, vectorised (the scalar costs a few
    microseconds a key in Python, this a fraction of one on large batches).

    >>> keys = [b"", b"a", b"ab", b"abc", b"abcd", b"0123456789-prediction"]
    >>> murmur2_many(keys).tolist() == [murmur2(k) for k in keys]
    True
    """
    return _murmur2_joined(b"".join(keys), np.fromiter(map(len, keys), dtype=np.int64, count=len(keys)))


def _murmur2_joined(joined_keys: bytes, lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    """:func:`murmur2_many` of the keys laid end to end in ``joined_keys``, of these ``lengths``."""
    n = lengths.size
    if not n:
        return np.empty(0, dtype=np.uint32)
    shortest, longest = int(lengths.min()), int(lengths.max())
    # One row per key, zero padded past its end: the tail's 1-3 bytes read as the little-endian
    # word they start are the three XORs of the scalar hash.
    joined = np.frombuffer(joined_keys, dtype=np.uint8)
    data = np.zeros((n, (longest // 4 + 1) * 4), dtype=np.uint8)
    if shortest == longest:
        data[:, :longest] = joined.reshape(n, longest)
    else:
        data[np.arange(data.shape[1]) < lengths[:, None]] = joined
    words = data.view("<u4")
    whole = lengths >> 2
    # each block's own mixing needs no other block: all at once, one row per word position
    blocks = np.ascontiguousarray(words[:, : longest // 4].T)
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as the hash intends
        blocks *= _M32
        blocks ^= blocks >> np.uint32(24)
        blocks *= _M32
        h = (lengths ^ _SEED).astype(np.uint32)
        if shortest == longest:  # the common batch (ids of one format): no masks
            for block in blocks:
                h *= _M32
                h ^= block
            if longest & 3:
                h ^= words[:, longest // 4]
                h *= _M32
        else:
            mixed = np.empty_like(h)
            for j, block in enumerate(blocks):
                np.multiply(h, _M32, out=mixed)
                mixed ^= block
                np.copyto(h, mixed, where=whole > j)
            np.bitwise_xor(h, words[np.arange(n), whole], out=mixed)
            mixed *= _M32
            np.copyto(h, mixed, where=(lengths & 3) > 0)
        h ^= h >> np.uint32(13)
        h *= _M32
        h ^= h >> np.uint32(15)
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition index Kafka's default partitioner gives a record keyed ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partitions_for_keys(keys: Sequence[bytes], partitions: int) -> npt.NDArray[np.int64]:
    """:func:`partition_for_key` of every key at once (an int64 array)."""
    return _partitions(murmur2_many(keys), partitions)


def partitions_for_texts(texts: Sequence[str], partitions: int) -> npt.NDArray[np.int64]:
    """:func:`partitions_for_keys` of the texts' UTF-8 (lone surrogates passed through), e.g.
    prediction ids as record keys. Texts all ASCII (ids, commonly) are encoded in one call: a
    byte per character, so their lengths are the texts'.

    >>> partitions_for_texts(["p-1", "p-2", "p-3", "pé"], 4).tolist() == partitions_for_keys(
    ...     [b"p-1", b"p-2", b"p-3", "pé".encode()], 4).tolist()
    True
    """
    joined = "".join(texts).encode("utf-8", "surrogatepass")
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if len(joined) != int(lengths.sum()):  # a text beyond ASCII: more bytes than characters
        return partitions_for_keys([text.encode("utf-8", "surrogatepass") for text in texts], partitions)
    return _partitions(_murmur2_joined(joined, lengths), partitions)


def _partitions(hashes: npt.NDArray[np.uint32], partitions: int) -> npt.NDArray[np.int64]:
    return ((hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).astype(np.int64)

