"""A mergeable relative-error quantile sketch (the DDSketch idea).

A positive value ``v`` falls in bucket ``k = ceil(log_gamma(v))``, i.e. ``(gamma**(k-1), gamma**k]``
with ``gamma = (1 + a) / (1 - a)``; the bucket's representative ``2 * gamma**k / (gamma + 1)`` is
within relative error ``a`` of every value in it. Negative values use a second store keyed by
``|v|`` (mirrored: ``v`` in ``(-gamma**k, -gamma**(k-1)]``), and exact zeros have their own count.
Counts are integers, so merging two sketches is exact, associative and commutative: stage 2 gets
the same sketch whatever order partials arrive in.

Each store keeps at most ``max_buckets`` consecutive keys; beyond that the lowest keys (the
magnitudes nearest zero) collapse into the lowest kept key. The kept range only depends on the
highest key ever seen, so collapsing is order-independent too. Quantiles inside the collapsed
range lose their accuracy guarantee (it takes a dynamic range of about gamma**max_buckets, ~1e9 at
the defaults, per sign).

>>> import numpy as np
>>> s = QuantileSketch()
>>> s.add_many(np.arange(1.0, 1001.0))
>>> s.count
1000
>>> abs(s.quantile(0.5) - 500.0) / 500.0 <= 0.005
True
>>> t = QuantileSketch.from_dict(s.to_dict())
>>> t == s
True
>>> s.histogram(np.array([250.0, 750.0])).tolist()
[249, 500, 251]
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Ordinals place every bucket of both stores on one integer axis (negatives, zero, positives) so two
# sketches with the same gamma can be compared bucket by bucket without float comparisons. Keys of
# float64 magnitudes stay far below 2**40 for any sensible relative accuracy.
_ORDINAL_OFFSET = 1 << 40


_NO_COUNTS: IntArray = np.zeros(0, dtype=np.int64)
_NO_COUNTS.flags.writeable = False


class _Store:
    """Dense integer counts for consecutive bucket keys ``offset .. offset + len(counts) - 1``."""

    __slots__ = ("counts", "max_buckets", "offset")

    def __init__(self, max_buckets: int) -> None:
        self.max_buckets = max_buckets
        self.offset = 0
        self.counts: IntArray = _NO_COUNTS  # never written in place: a store replaces its counts

    @property
    def total(self) -> int:
        # an empty store (an under-filled window's merged sketch) needs no numpy reduction (~3 us)
        return int(self.counts.sum()) if self.counts.size else 0

    def add_keys(self, keys: IntArray) -> None:
        lo = int(keys.min())
        counts = np.bincount(keys - lo).astype(np.int64, copy=False)  # a new array: held as it is
        if self.counts.size:
            self._add_dense(lo, counts)
        else:
            self._keep(lo, counts)

    def add_store(self, other: _Store) -> None:
        if other.counts.size:
            self._add_dense(other.offset, other.counts)

    def add_stores(self, others: list[_Store]) -> None:
        """Add every store of ``others`` at once: one array over their keys' span, not one a store
        (the same counts as adding them one by one: the kept span depends on the highest key only)."""
        parts = [(store.offset, store.counts) for store in others if store.counts.size]
        if len(parts) < 2:
            for offset, counts in parts:
                self._add_dense(offset, counts)
            return
        if self.counts.size:
            parts.append((self.offset, self.counts))
        lo = min(offset for offset, _ in parts)
        merged = np.zeros(max(offset + counts.size for offset, counts in parts) - lo, dtype=np.int64)
        for offset, counts in parts:
            merged[offset - lo : offset - lo + counts.size] += counts
        self._keep(lo, merged)

    def _add_dense(self, offset: int, counts: IntArray) -> None:
        if not self.counts.size:
            self._keep(offset, counts.copy())
        else:
            lo = min(self.offset, offset)
            hi = max(self.offset + self.counts.size, offset + counts.size)
            merged = np.zeros(hi - lo, dtype=np.int64)
            merged[self.offset - lo : self.offset - lo + self.counts.size] += self.counts
            merged[offset - lo : offset - lo + counts.size] += counts
            self._keep(lo, merged)

    def _keep(self, offset: int, counts: IntArray) -> None:
        """Hold ``counts`` (an array of this store's own) from key ``offset``, the lowest keys beyond
        ``max_buckets`` collapsed into the lowest kept one."""
        if counts.size > self.max_buckets:
            cut = counts.size - self.max_buckets
            kept = counts[cut:].copy()
            kept[0] += int(counts[:cut].sum())
            offset, counts = offset + cut, kept
        self.offset, self.counts = offset, counts

    def to_list(self) -> list[int]:
        return [self.offset, *self.counts.tolist()] if self.counts.size else []

    def load(self, data: list[int]) -> None:
        if data:
            self.offset, self.counts = int(data[0]), np.asarray(data[1:], dtype=np.int64)

    def nonzero(self) -> tuple[IntArray, IntArray]:
        idx = np.flatnonzero(self.counts)
        return idx.astype(np.int64) + self.offset, self.counts[idx]


def _nonzero_of(stores: list[_Store]) -> tuple[IntArray, IntArray, IntArray]:
    """The keys and counts of ``stores``' nonzero buckets (each store's ascending, the stores one
    after the other) and how many each store has."""
    sizes = [store.counts.size for store in stores]
    if not sum(sizes):
        return _NO_COUNTS, _NO_COUNTS, np.zeros(len(stores), dtype=np.int64)
    counts = np.concatenate([store.counts for store in stores])
    found = np.flatnonzero(counts)
    bounds = np.cumsum([0, *sizes])
    # a bucket's key: its place in its store plus the store's offset
    shift = np.repeat(np.array([store.offset for store in stores], dtype=np.int64) - bounds[:-1], sizes)
    return found + shift[found], counts[found], np.diff(np.searchsorted(found, bounds))


def _ranks(sizes: IntArray) -> IntArray:
    """0, 1, ..., size - 1 for each of ``sizes``, one after the other.

    >>> _ranks(np.array([2, 0, 3])).tolist()
    [0, 1, 0, 1, 2]
    """
    ends = np.cumsum(sizes)
    return np.arange(int(ends[-1]) if sizes.size else 0) - np.repeat(ends - sizes, sizes)


def _roundest(lower: float, upper: float, start: float) -> float:
    """The value in ``(lower, upper]`` with the fewest significant digits, rounding ``start``."""
    for digits in range(1, 18):
        candidate = float(f"{start:.{digits}g}")
        if lower < candidate <= upper:
            return candidate
    return upper


@lru_cache(maxsize=16)
def _log_gamma(relative_accuracy: float) -> tuple[float, float]:
    """``log(gamma)`` and its inverse for a relative accuracy: a window's statistics make several
    sketches per feature (every partial parsed, every merge), nearly all with the default."""
    log_gamma = math.log((1.0 + relative_accuracy) / (1.0 - relative_accuracy))
    return log_gamma, 1.0 / log_gamma


RELATIVE_ACCURACY = 0.005
"""The windows' sketches' relative accuracy: a reference sketch is compared with them bucket by
bucket, so a profile's must have the same."""
MAX_BUCKETS = 2048
"""The buckets a sketch's store keeps by default, as every window's sketch does (sketches merge only
with one of the same size)."""
_COUNT_BOUND = 2**62  # a count several sketches add up to stays in int64
_KEY_BOUND = 2**20  # bucket keys of finite doubles at RELATIVE_ACCURACY: within +-71,000


class QuantileSketch:
    """Relative-error quantiles, CDF and histograms of a stream of finite floats."""

    _STATE = ("_inv_log_gamma", "_log_gamma", "_neg", "_pos", "max_buckets", "relative_accuracy", "zero")
    """What a sketch pickles (as before its buckets were kept): not its derived ``_buckets``."""
    __slots__ = ("_buckets", *_STATE)

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY, max_buckets: int = MAX_BUCKETS) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if max_buckets < 1:
            raise ValueError("max_buckets must be positive")
        self.relative_accuracy = relative_accuracy
        self.max_buckets = max_buckets
        self._log_gamma, self._inv_log_gamma = _log_gamma(relative_accuracy)
        self.zero = 0
        self._pos = _Store(max_buckets)
        self._neg = _Store(max_buckets)
        self._buckets: tuple[IntArray, FloatArray, IntArray] | None = None

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        # what pickle kept before the buckets were cached: the counts, not what is derived from them
        return None, {name: getattr(self, name) for name in self._STATE}

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        for name, value in state[1].items():
            setattr(self, name, value)
        self._buckets = None

    @property
    def count(self) -> int:
        return self.zero + self._pos.total + self._neg.total

    @property
    def empty(self) -> bool:
        """Whether no value was added, without :attr:`count`'s sums (a store holds counts only
        where it was given a value; a parsed one may list zero counts: not empty, a count of 0).

        >>> sketch = QuantileSketch()
        >>> sketch.empty, sketch.add_many(np.array([0.0])), sketch.empty
        (True, None, False)
        """
        return not (self.zero or self._pos.counts.size or self._neg.counts.size)

    def add_many(self, values: FloatArray) -> None:
        """Add finite values (the caller filters NaN/inf: they have no bucket)."""
        values = np.asarray(values, dtype=np.float64)
        if not values.size:
            return
        self._buckets = None
        lo = values.min()
        if lo > 0.0:  # the common all-positive case skips the sign split
            self._pos.add_keys(self._keys(values))
            return
        pos = values[values > 0.0]
        neg = values[values < 0.0]
        self.zero += int(values.size - pos.size - neg.size)
        if pos.size:
            self._pos.add_keys(self._keys(pos))
        if neg.size:
            # Negative buckets hold |v| in [gamma**(k-1), gamma**k), i.e. v in (-gamma**k, -gamma**(k-1)]:
            # every bucket is then closed at its upper end, which quantile_edges relies on.
            self._neg.add_keys(np.floor(np.log(-neg) * self._inv_log_gamma).astype(np.int64) + 1)

    def merge(self, other: QuantileSketch) -> None:
        """Add ``other``'s counts into this sketch (exact; order does not matter)."""
        if (other.relative_accuracy, other.max_buckets) != (self.relative_accuracy, self.max_buckets):
            raise ValueError("cannot merge sketches with different relative_accuracy or max_buckets")
        self._buckets = None
        self.zero += other.zero
        self._pos.add_store(other._pos)
        self._neg.add_store(other._neg)

    def merge_all(self, others: list[QuantileSketch]) -> None:
        """Add every sketch of ``others`` at once: what merging each in turn gives, with one array
        a store (stage 2 merges a window's sketch of each shard, ~28 columns a window).

        >>> parts = [QuantileSketch() for _ in range(3)]
        >>> for i, part in enumerate(parts):
        ...     part.add_many(np.array([-2.0, 0.0, 1.5]) * 10.0**i)
        >>> one, each = QuantileSketch(), QuantileSketch()
        >>> one.merge_all(parts)
        >>> for part in parts:
        ...     each.merge(part)
        >>> one == each, one.count
        (True, 9)
        """
        for other in others:
            if (other.relative_accuracy, other.max_buckets) != (self.relative_accuracy, self.max_buckets):
                raise ValueError("cannot merge sketches with different relative_accuracy or max_buckets")
        self._buckets = None
        self.zero += sum(other.zero for other in others)
        self._pos.add_stores([other._pos for other in others])
        self._neg.add_stores([other._neg for other in others])

    def quantile(self, q: float) -> float:
        return float(self.quantiles(np.array([q]))[0])

    def quantiles(self, qs: FloatArray) -> FloatArray:
        """Representative of the bucket holding the element of rank ``floor(q * (n - 1))``.

        That is numpy's ``method='lower'`` quantile, within relative error ``a``; NaN when empty.
        """
        qs = np.asarray(qs, dtype=np.float64)
        if self.empty:
            return np.full(qs.shape, np.nan)
        _, reps, counts = self.buckets()
        if not counts.size:  # a parsed sketch whose stores list only zero counts: empty as well
            return np.full(qs.shape, np.nan)
        return reps[self._rank_index(qs, counts)]

    def quantile_edges(self, qs: FloatArray) -> FloatArray:
        """Histogram edges at quantiles ``qs``: the shortest decimal inside each quantile's bucket.

        Any number between a bucket's lower and upper bound splits the buckets the same way in
        :meth:`histogram`, so the roundest one is taken: integer data gets integer edges, and the
        bin an edge opens holds the values equal to it.
        """
        qs = np.asarray(qs, dtype=np.float64)
        if not self.count:
            return np.full(qs.shape, np.nan)
        ords, reps, counts = self.buckets()
        idx = self._rank_index(qs, counts)
        lows, highs = self._bounds(ords[idx])
        return np.array([_roundest(lo, hi, r) for lo, hi, r in zip(lows, highs, reps[idx], strict=True)])

    def cdf(self, xs: FloatArray) -> FloatArray:
        """Share of values whose bucket representative is ``<= x``; NaN when empty."""
        xs = np.asarray(xs, dtype=np.float64)
        n = self.count
        if n == 0:
            return np.full(xs.shape, np.nan)
        _, reps, counts = self.buckets()
        cum = np.concatenate(([0], np.cumsum(counts)))
        return cum[np.searchsorted(reps, xs, side="right")] / n

    def histogram(self, edges: FloatArray,
                  buckets: tuple[IntArray, FloatArray, IntArray] | None = None) -> IntArray:
        """Counts in ``(-inf, e0), [e0, e1), ..., [ek, inf)``.

        A bucket counts in the bin that holds its upper bound; a value equal to an edge therefore
        lands in the bin the edge opens (values up to ``2a`` below the edge may join it).
        ``buckets``: this sketch's :meth:`buckets` when the caller already has them.
        """
        edges = np.asarray(edges, dtype=np.float64)
        ords, _, counts = self.buckets() if buckets is None else buckets
        bins = np.searchsorted(edges, self._bounds(ords)[1], side="right")
        out = np.zeros(edges.size + 1, dtype=np.int64)
        np.add.at(out, bins, counts)
        return out

    def buckets(self) -> tuple[IntArray, FloatArray, IntArray]:
        """Non-empty buckets in ascending value order: (ordinals, representatives, counts); read-only.

        Ordinals are integers comparable across sketches with the same relative accuracy. Kept until
        the sketch changes: a scored window's sketch is read for its scores and again for its row's
        quantiles.
        """
        if self._buckets is None:
            self._buckets = self._find_buckets()
        return self._buckets

    @staticmethod
    def find_buckets(sketches: list[QuantileSketch]) -> None:
        """Find the :meth:`buckets` of every sketch of ``sketches`` that has none kept, at once: each
        store's nonzero counts and representatives over all of them in a few numpy calls, not ~15
        a sketch (a scored window reads ~20 features' buckets). Each sketch then keeps what
        :meth:`buckets` finds alone, element for element.

        >>> sketches = [QuantileSketch() for _ in range(3)]
        >>> for i, sketch in enumerate(sketches):
        ...     sketch.add_many(np.array([-1.5, 0.0, 2.0, 2.0 + i]))
        >>> QuantileSketch.find_buckets(sketches)
        >>> alone = QuantileSketch.from_dict(sketches[2].to_dict()).buckets()
        >>> all((a == b).all() for a, b in zip(sketches[2].buckets(), alone))
        True
        """
        todo = [sketch for sketch in sketches if sketch._buckets is None]
        if len(todo) < 2 or len({sketch._log_gamma for sketch in todo}) > 1:
            for sketch in todo:
                sketch.buckets()
            return
        log_gamma = todo[0]._log_gamma
        scale = 2.0 / (1.0 + math.exp(log_gamma))
        nkeys, ncounts, nsizes = _nonzero_of([sketch._neg for sketch in todo])
        pkeys, pcounts, psizes = _nonzero_of([sketch._pos for sketch in todo])
        zeros = np.array([sketch.zero for sketch in todo], dtype=np.int64)
        has_zero = (zeros > 0).astype(np.int64)
        # each sketch's buckets: its negative ones backwards (their values descend as their keys
        # ascend), its zero bucket if any, its positive ones; every bucket placed at once
        sizes = nsizes + has_zero + psizes
        ends = np.cumsum(sizes)
        starts = ends - sizes
        nplace = np.repeat(starts + nsizes - 1, nsizes) - _ranks(nsizes)  # backwards from the zero
        pplace = np.repeat(starts + nsizes + has_zero, psizes) + _ranks(psizes)
        zplace = (starts + nsizes)[has_zero > 0]
        total = int(ends[-1])
        ords, reps, counts = np.zeros(total, dtype=np.int64), np.zeros(total), np.zeros(total, dtype=np.int64)
        ords[nplace], reps[nplace], counts[nplace] = (-_ORDINAL_OFFSET - nkeys,
                                                      -np.exp(nkeys * log_gamma) * scale, ncounts)
        ords[pplace], reps[pplace], counts[pplace] = (_ORDINAL_OFFSET + pkeys,
                                                      np.exp(pkeys * log_gamma) * scale, pcounts)
        counts[zplace] = zeros[has_zero > 0]  # (its ordinal and representative are 0)
        for whole in (ords, reps, counts):
            whole.flags.writeable = False  # and so each sketch's views: shared until a sketch changes
        for sketch, start, stop in zip(todo, starts.tolist(), ends.tolist(), strict=True):
            sketch._buckets = ords[start:stop], reps[start:stop], counts[start:stop]

    def _find_buckets(self) -> tuple[IntArray, FloatArray, IntArray]:
        nkeys, ncounts = self._neg.nonzero()
        pkeys, pcounts = self._pos.nonzero()
        scale = 2.0 / (1.0 + math.exp(self._log_gamma))
        parts_o = [-_ORDINAL_OFFSET - nkeys[::-1]]
        parts_r = [-np.exp(nkeys[::-1] * self._log_gamma) * scale]
        parts_c = [ncounts[::-1]]
        if self.zero:
            parts_o.append(np.zeros(1, dtype=np.int64))
            parts_r.append(np.zeros(1))
            parts_c.append(np.array([self.zero], dtype=np.int64))
        parts_o.append(_ORDINAL_OFFSET + pkeys)
        parts_r.append(np.exp(pkeys * self._log_gamma) * scale)
        parts_c.append(pcounts)
        found = np.concatenate(parts_o), np.concatenate(parts_r), np.concatenate(parts_c)
        for part in found:
            part.flags.writeable = False  # shared by every caller until the sketch changes
        return found

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form; stores are ``[offset, count, count, ...]``."""
        return {
            "alpha": self.relative_accuracy,
            "max_buckets": self.max_buckets,
            "zero": self.zero,
            "pos": self._pos.to_list(),
            "neg": self._neg.to_list(),
        }

    @classmethod
    def checked(cls, d: Any) -> QuantileSketch:
        """:meth:`from_dict` of a dict from outside (a published profile's sketch): ValueError
        unless it is one :meth:`to_dict` could have written (counts non-negative integers that an
        int64 holds, ``max_buckets`` a positive integer). A window partial's sketches, parsed on the
        hot path, get the cheaper :meth:`is_windows`.

        >>> QuantileSketch.checked({"alpha": 0.005, "max_buckets": 2048, "zero": 0, "pos": [3, 1, None],
        ...                         "neg": []})
        Traceback (most recent call last):
        ...
        ValueError: sketch: TypeError: pos is not a list of integers
        """
        try:
            if type(d) is not dict:
                raise TypeError(f"a sketch is a JSON object, not {type(d).__name__}")
            for name in ("max_buckets", "zero"):
                if type(d[name]) is not int or not 0 <= d[name] < 2**62:
                    raise ValueError(f"{name} is not a non-negative integer (below 2**62)")
            for name in ("pos", "neg"):
                store = d[name]
                if type(store) is not list:
                    raise TypeError(f"{name} is not a list of integers")
                if store:  # one C conversion: a profile's 25 sketches are ~40,000 numbers
                    numbers = np.array(store)
                    if numbers.dtype.kind != "i" or numbers.ndim != 1:  # None, floats, past int64: not "i"
                        raise TypeError(f"{name} is not a list of integers")
                    if numbers[1:].min(initial=0) < 0 or np.abs(numbers).max() >= 2**62:
                        raise ValueError(f"{name} holds a negative or out-of-range count")
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"sketch: {type(err).__name__}: {err}") from err

    def is_windows(self) -> bool:
        """Whether this (parsed) sketch is one a window makes: the windows' accuracy and size, a
        zero count an int64 sum holds, bucket keys where finite doubles fall (+-71,000 at that
        accuracy). A partial's sketch of another kind raised where its window was merged; its
        bucket counts are not walked (a numpy pass a store, on every filled window's partials).

        >>> QuantileSketch().is_windows(), QuantileSketch(0.01).is_windows()
        (True, False)
        """
        pos, neg = self._pos, self._neg
        return (self.relative_accuracy == RELATIVE_ACCURACY and self.max_buckets == MAX_BUCKETS
                and type(self.zero) is int and 0 <= self.zero < _COUNT_BOUND
                and -_KEY_BOUND <= pos.offset <= _KEY_BOUND and -_KEY_BOUND <= neg.offset <= _KEY_BOUND
                and pos.counts.size <= MAX_BUCKETS and neg.counts.size <= MAX_BUCKETS)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileSketch:
        sketch = cls(float(d["alpha"]), int(d["max_buckets"]))
        sketch.zero = int(d["zero"])
        sketch._pos.load(d["pos"])
        sketch._neg.load(d["neg"])
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"QuantileSketch(relative_accuracy={self.relative_accuracy}, count={self.count})"

    def _rank_index(self, qs: FloatArray, counts: IntArray) -> IntArray:
        # The first bucket whose cumulative count exceeds the rank holds that rank's element
        # (``counts``: the buckets' counts, which the caller has: building them is most of the cost;
        # their cumulative sum ends at the sketch's count).
        cumulative = np.cumsum(counts)
        ranks = np.floor(np.clip(qs, 0.0, 1.0) * (int(cumulative[-1]) - 1))
        return np.searchsorted(cumulative, ranks, side="right")

    def _bounds(self, ordinals: IntArray) -> tuple[FloatArray, FloatArray]:
        """(lower, upper] value bounds of buckets; the zero bucket's lower bound is -inf."""
        pos, neg = ordinals > 0, ordinals < 0
        keys = np.where(pos, ordinals - _ORDINAL_OFFSET, -_ORDINAL_OFFSET - ordinals)
        keys = np.where(pos | neg, keys, 0)
        top = np.exp(keys * self._log_gamma)
        below = np.exp((keys - 1) * self._log_gamma)
        upper = np.where(pos, top, np.where(neg, -below, 0.0))
        lower = np.where(pos, below, np.where(neg, -top, -np.inf))
        return lower, upper

    def _keys(self, magnitudes: FloatArray) -> IntArray:
        return np.ceil(np.log(magnitudes) * self._inv_log_gamma).astype(np.int64)
