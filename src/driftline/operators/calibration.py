"""Threshold calibration of CUSUM banks: the threshold of each CUSUM for a target average run length.

A bank of ``K`` CUSUMs (:class:`~driftline.operators.sequential.SequentialDetector`) is given a
target ``arl``, the mean number of no-drift observations between two false alarms.
:func:`calibrate_thresholds` turns the exact law of each CUSUM's increments under the (edge of the
reference's confidence region) no-drift hypothesis, an :class:`IncrementLaw`, into thresholds.

The detector's target ``arl`` is split over its ``K`` CUSUMs by the union bound (each CUSUM gets
ARL ``K * arl``; neighbouring designs are positively correlated, so the bank is conservative).
Every CUSUM's increment law under the (edge-of-region) null is known exactly from the reference
representation: a finite set of values with probabilities (cells, categories, Bernoulli). From it:
the mean ``mu < 0``, the standard deviation, and ``theta`` solving ``E exp(theta z) = 1`` (1 for an
exact likelihood ratio). Then, per CUSUM:

* increments close to normal (a continuous reference and a mean-shift design): Siegmund's (1985)
  corrected diffusion approximation ``ARL(h) = (e^x - x - 1) / (theta |mu|)`` with
  ``x = theta (h + 1.166 sd(z))``, solved for ``h``. Checked against direct simulation: within 3 %
  for normal increments at every grid ``delta``;
* everything else (scale designs, discrete references, Bernoulli designs): the same formula is off
  by up to 3.5x for coarse lattices (a two-valued feature) and 0.3x for rare categories, so
  ``ARL(h)`` is measured by Siegmund's (1976) importance sampling of one CUSUM cycle (from 0 back
  to 0): ``P(cycle reaches h)`` is simulated under the exponentially tilted law ``w e^(theta z)``
  with likelihood-ratio weights ``e^(-theta W)``, the mean cycle length comes from Wald's identity
  (``E[undershoot] / |mu|``), and ``ARL = E[min(L, tau)] / P(hit)``. Bernoulli walks jump between
  "hits" by geometrically distributed gaps, so a rare category costs as little as a common one.
  The smallest ``h`` on a ``0.25 / theta`` grid with ``ARL(h) >= K * arl`` is kept (at most ~30 %
  conservative, Monte-Carlo error ~5-10 %). Where a crossing takes more than :data:`_IS_MAX_STEPS`
  steps the walk is diffusive and the formula is accurate again, so it is used instead.

Measured accuracy, each CUSUM alone at its threshold against its share ``K * arl`` (direct
simulation, 50-2,500 alarms each, per-CUSUM ARL 4e3-6e5): 0.91-1.28 for normal, Poisson(1),
two-valued and sketch references, 0.83-1.39 for categorical and binary banks; the bank-rate
(harmonic) mean is 1.01-1.19. The bank as a whole is more conservative still: on no-drift streams
from the population of a 50,000-value reference it raises 0.25-0.5 of the ``N / arl`` expected
false alarms (union bound over correlated CUSUMs, and the guarantee region); an effective number
of CUSUMs below ``K`` would buy ~0.5-1 nat of threshold, but it grows with the threshold, so a
pilot measured at a low ARL would not be conservative, and it is not applied.

The simulation is seeded from a hash of its inputs, so the same reference always gives the same
thresholds, and results are cached per (reference content, ``arl``) in the process and, with
:func:`share_calibrations`, in a directory the processes of a host share. Calibrating is most of
what building a detector costs: ~0.6-0.9 CPU-s for a 25-feature bank of bench_models' profiles
(~30 ms a feature, mostly importance sampling), ~0.03 s once calibrated.


A mean+0.4 design on normal scores (increments ``0.4 u - 0.08``, near normal: the formula), and
a Bernoulli design for a rate doubling from 0.05 (two-valued: importance sampling):

>>> import numpy as np
>>> u = np.linspace(-4, 4, 801)
>>> w = np.exp(-u**2 / 2) / np.exp(-u**2 / 2).sum()
>>> mean_design = IncrementLaw(0.4 * u - 0.08, w, near_normal=True)
>>> doubling = IncrementLaw(np.log([0.10 / 0.05, 0.90 / 0.95]), np.array([0.05, 0.95]))
>>> [round(float(h), 1) for h in calibrate_thresholds([mean_design], arl=1e6)]
[10.8]
>>> [round(float(h), 1) for h in calibrate_thresholds([doubling], arl=1e6)]
[9.5]
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_RHO = 1.166  # Siegmund's overshoot correction for normal increments, in sd(z) units
_IS_MAX_STEPS = 600  # beyond this expected crossing time the walk is diffusive: use the formula
_IS_PATHS = 1024  # importance-sampling paths per CUSUM (fewer per CUSUM in big banks) ...
_IS_MIN_PATHS = 256
_IS_TOTAL_PATHS = 4096  # ... sharing this budget: the bank's total false-alarm rate averages the errors
_GRID = np.arange(-4, 7) * 0.25  # threshold grid around the formula's h, in units of 1/theta
_CACHE: OrderedDict[tuple[str, float], FloatArray] = OrderedDict()
_CACHE_SIZE = 32_768  # a bank's thresholds, ~400 bytes: every shard of a worker watching 1,000
# models x 25 features finds each reference's calibration here (a miss costs 5-50 ms of CPU)
_SHARED: list[Path] = []  # the directory calibrations are shared through (share_calibrations), if any
_SHARED_VERSION = 1  # in the shared files' names: bump it when the same laws calibrate differently
MIN_THRESHOLD = 2.0**-24
"""Smallest threshold (nats): one fixed-point unit of the detectors' integer CUSUMs."""


# -- calibration ---------------------------------------------------------------------------------


@dataclass
class IncrementLaw:
    """One CUSUM's increments under the (edge-of-region) no-drift law: values ``z``, probabilities ``w``.

    ``near_normal`` marks increments close enough to normal (a mean design on a continuous
    reference) for the corrected diffusion approximation alone.
    """

    z: FloatArray
    w: FloatArray
    near_normal: bool = False


def calibrate_thresholds(nulls: list[IncrementLaw], arl: float) -> FloatArray:
    """Thresholds (nats) giving each CUSUM an ARL of ``len(nulls) * arl`` (cached, deterministic).

    The simulation is seeded from a digest of the laws, so the same laws always give the same
    thresholds; results are kept per (laws, ``arl``) in a bounded cache (:func:`clear_cache`).
    """
    digest = hashlib.blake2b(digest_size=16)
    for null in nulls:
        digest.update(np.ascontiguousarray(null.z).tobytes())
        digest.update(np.ascontiguousarray(null.w).tobytes())
        digest.update(b"N" if null.near_normal else b"-")
    key = (digest.hexdigest(), float(arl))
    cached = _CACHE.get(key)
    if cached is not None:
        _CACHE.move_to_end(key)
        return cached.copy()
    shared = _read_shared(key, len(nulls))
    if shared is not None:
        _remember(key, shared)
        return shared.copy()
    target = len(nulls) * float(arl)
    rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))
    h = np.empty(len(nulls))
    sampled: list[tuple[int, _Walk]] = []
    for j, null in enumerate(nulls):
        walk = _Walk.of(null)
        h[j] = walk.siegmund_threshold(target)
        if walk.theta == math.inf or null.near_normal:
            continue
        if walk.crossing_cost(h[j]) <= _IS_MAX_STEPS:
            sampled.append((j, walk))
    if sampled:
        paths = max(_IS_MIN_PATHS, min(_IS_PATHS, _IS_TOTAL_PATHS // len(sampled)))
        grids = [np.maximum(h[j] + _GRID / walk.theta, 1e-6) for j, walk in sampled]
        arls = _sampled_arl([w for _, w in sampled], grids, paths, rng)
        for (j, walk), grid, arl_grid in zip(sampled, grids, arls, strict=True):
            h[j] = _pick_threshold(grid, arl_grid, target, walk.theta)
    h = np.maximum(h, MIN_THRESHOLD)
    _remember(key, h)
    _write_shared(key, h)
    return h.copy()


def clear_cache() -> None:
    """Forget every cached calibration (the next bank is calibrated from scratch, or read from the
    shared directory)."""
    _CACHE.clear()


def share_calibrations(directory: Path | None) -> None:
    """Share calibrations with every process that shares ``directory`` (None: this process only).

    A calibration depends only on its laws (the reference and the design settings) and ``arl``, and
    costs ~30 ms of CPU per feature (importance sampling): every processor process of a host would
    otherwise calibrate every model's banks again (1,000 models x 25 features: ~12 CPU-minutes
    each), and again when it restarts. Each result is one small file named by its key (the laws'
    digest and ``arl``), written once and renamed into place, so readers never see half a file;
    a missing, unreadable or malformed file is calibrated again. Thresholds are the same either
    way (the simulation is seeded from the same digest).
    """
    _SHARED.clear()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        _SHARED.append(directory)


def _remember(key: tuple[str, float], h: FloatArray) -> None:
    _CACHE[key] = h
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)


def _shared_path(key: tuple[str, float]) -> Path | None:
    if not _SHARED:
        return None
    return _SHARED[0] / f"v{_SHARED_VERSION}-{key[0]}-{key[1].hex()}.f8"


def _read_shared(key: tuple[str, float], size: int) -> FloatArray | None:
    path = _shared_path(key)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:  # not calibrated yet (or unreadable: calibrated again)
        return None
    if len(data) != 8 * size:
        return None
    h = np.frombuffer(data, dtype="<f8").astype(np.float64)
    return h if bool(np.all(h >= MIN_THRESHOLD)) else None  # (NaN fails it too)


def _write_shared(key: tuple[str, float], h: FloatArray) -> None:
    path = _shared_path(key)
    if path is None:
        return
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        part.write_bytes(h.astype("<f8").tobytes())
        os.replace(part, path)
    except OSError:  # a full or read-only disk: this process keeps it in memory only
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _pick_threshold(grid: FloatArray, arl_grid: FloatArray, target: float, theta: float) -> float:
    """The smallest grid threshold whose ARL reaches the target (extrapolated beyond the grid)."""
    ok = np.flatnonzero(arl_grid >= target)
    if not ok.size:
        return float(grid[-1] + math.log(target / max(arl_grid[-1], 1.0)) / theta)
    k = int(ok[0])
    if k == 0:
        return float(grid[0] - math.log(arl_grid[0] / target) / theta)
    return float(grid[k])


@dataclass
class _Walk:
    """The increment law of one CUSUM and its Cramer root."""

    z: FloatArray
    w: FloatArray
    mu: float
    sd: float
    theta: float
    mu_tilted: float
    two_point: bool

    @classmethod
    def of(cls, null: IncrementLaw) -> _Walk:
        keep = null.w > 0
        z, w = null.z[keep].astype(np.float64), null.w[keep] / null.w[keep].sum()
        mu = float(w @ z)
        sd = math.sqrt(float(w @ (z - mu) ** 2))
        if mu >= 0:
            raise ValueError("a design drifts upwards under no drift: it cannot be calibrated")
        theta = _cramer_root(z, w, mu, sd)
        mu_tilted = float(w @ (z * np.exp(theta * z))) if theta < math.inf else math.inf
        return cls(z, w, mu, sd, theta, mu_tilted, z.size == 2)

    def crossing_cost(self, h: float) -> float:
        """Simulation steps to cross ``h`` under the tilted law (jumps, for two-valued increments)."""
        steps = (h + _RHO * self.sd) / self.mu_tilted
        if self.two_point:  # simulated jump to jump, 2x as many per block
            steps *= float(self.w[self.z.argmax()] * math.exp(self.theta * self.z.max())) * 2
        return steps

    def siegmund_threshold(self, target: float) -> float:
        """Solve ``(e^x - x - 1) / (theta |mu|) = target`` for ``h = x / theta - 1.166 sd``."""
        if self.theta == math.inf:
            # No positive increment: the CUSUM never leaves 0 without drift. ln(target) is
            # Lorden's bound ARL >= e^h for an exact likelihood ratio, a sane scale for h.
            return math.log(target)
        rhs = target * self.theta * abs(self.mu)
        x = math.log(rhs + 1.0) + 1.0
        for _ in range(60):  # Newton on e^x - x - 1 - rhs, convex and increasing for x > 0
            step = (math.expm1(x) - x - rhs) / math.expm1(x)
            x -= step
            if abs(step) < 1e-12:
                break
        return max(x / self.theta - _RHO * self.sd, MIN_THRESHOLD)


def _cramer_root(z: FloatArray, w: FloatArray, mu: float, sd: float) -> float:
    """The positive root of ``E exp(theta z) = 1`` (inf when no increment is positive)."""
    zmax = float(z.max())
    if zmax <= 0:
        return math.inf
    theta = max(2 * -mu / (sd * sd), 1e-9) if sd > 0 else 1.0
    limit = 700.0 / zmax
    while theta < limit and float(w @ np.exp(theta * z)) <= 1.0:
        theta *= 2
    theta = min(theta, limit)
    for _ in range(200):  # Newton from the right of the root of a convex function: monotone
        e = np.exp(theta * z)
        step = (float(w @ e) - 1.0) / float(w @ (z * e))
        theta -= step
        if abs(step) <= 1e-13 * theta:
            break
    return theta


def _sampled_arl(walks: list[_Walk], grids: list[FloatArray], paths: int,
                 rng: np.random.Generator) -> list[FloatArray]:
    """ARL at each grid threshold by importance sampling of a CUSUM cycle (Siegmund 1976).

    ``ARL(h) = E[min(L, tau_h)] / P(tau_h < L)`` for a cycle of length ``L`` started at 0; the cycle
    starts with its first positive increment (probability ``P(z > 0)``), ``P(hit)`` is estimated
    under the tilted law with weights ``exp(-theta (W_tau - z_1))``, ``E[L] = E[undershoot] / |mu|``
    (Wald) and ``E[L - tau | hit] = (E[W_tau | hit] + E[undershoot]) / |mu|``.
    """
    two = [k for k, walk in enumerate(walks) if walk.two_point]
    multi = [k for k, walk in enumerate(walks) if not walk.two_point]
    out: list[FloatArray] = [np.empty(0)] * len(walks)
    for group, sampler in ((two, _sample_two_point), (multi, _sample_general)):
        if not group:
            continue
        g_walks = [walks[k] for k in group]
        grid = np.array([grids[k] for k in group])
        p_first, lr, w_tau, undershoot = sampler(g_walks, grid, paths, rng)
        for i, k in enumerate(group):
            walk = g_walks[i]
            rows = slice(i * paths, (i + 1) * paths)
            mass = lr[rows].sum(axis=0)
            p_hit = p_first[i] * mass / paths
            e_w = np.where(mass > 0, (lr[rows] * w_tau[rows]).sum(axis=0) / np.maximum(mass, 1e-300), 0.0)
            eu = undershoot[i]
            with np.errstate(divide="ignore"):
                arl = (eu / p_hit - e_w - eu) / -walk.mu
            out[k] = np.where(p_hit > 0, arl, np.inf)
    return out


def _record(rows: IntArray, path: FloatArray, grid: FloatArray, start: FloatArray, theta: FloatArray,
            passed: IntArray, lr: FloatArray, w_tau: FloatArray) -> npt.NDArray[np.bool_]:
    """Record first passages of grid levels in the block ``path`` of rows ``rows``.

    ``passed[i]`` counts the levels path ``i`` has passed (levels increase, so they pass in
    order); a level counts when reached before the walk dies (<= 0). Returns the rows now done.
    """
    block, levels = path.shape[1], grid.shape[1]
    dead = path <= 0
    death = np.where(dead.any(axis=1), dead.argmax(axis=1), block)
    done = passed[rows]
    nxt = grid[np.arange(rows.size), np.minimum(done, levels - 1)]
    cand = np.flatnonzero((done < levels) & (path.max(axis=1) >= nxt))
    if cand.size:
        top = np.maximum.accumulate(path[cand], axis=1)
        reach = (top[:, :, None] < grid[cand][:, None, :]).sum(axis=1)  # first index at each level
        ok = reach < death[cand, None]
        new = ok & (np.arange(levels)[None, :] >= done[cand, None])
        r, k = np.nonzero(new)
        w_at = path[cand[r], reach[r, k]]
        lr[rows[cand[r]], k] = np.exp(-theta[cand[r]] * (w_at - start[cand[r]]))
        w_tau[rows[cand[r]], k] = w_at
        passed[rows[cand]] = np.maximum(done[cand], ok.sum(axis=1))
    return (death < block) | (passed[rows] >= levels)


def _first_step(pos: FloatArray, grid: FloatArray, lr: FloatArray, w_tau: FloatArray) -> IntArray:
    """Levels passed by the first (untilted) step; their weight is 1."""
    first = pos[:, None] >= grid
    lr[first] = 1.0
    w_tau[first] = np.broadcast_to(pos[:, None], first.shape)[first]
    return first.sum(axis=1).astype(np.int64)


def _sample_two_point(walks: list[_Walk], grid: FloatArray, paths: int,
                      rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Two-valued increments: simulate jump to jump with geometric gaps (cheap for rare jumps)."""
    up = np.array([float(walk.z.max()) for walk in walks])
    down = np.array([float(walk.z.min()) for walk in walks])
    p_up = np.array([float(walk.w[walk.z.argmax()]) for walk in walks])
    theta = np.array([walk.theta for walk in walks])
    p_tilt = np.minimum(p_up * np.exp(theta * up), 1.0)
    d = np.repeat(np.arange(len(walks)), paths)
    total = d.size
    lr = np.zeros((total, grid.shape[1]))
    w_tau = np.zeros((total, grid.shape[1]))
    pos = up[d].copy()
    # the first jump may already cross (then its weight is 1: the first step is not tilted)
    passed = _first_step(pos, grid[d], lr, w_tau)
    alive = passed < grid.shape[1]
    jumps = 16
    for _ in range(40 * _IS_MAX_STEPS // 32):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        gaps = rng.geometric(p_tilt[dr][:, None], size=(rows.size, jumps)) - 1
        path = pos[rows, None] + np.cumsum(gaps * down[dr][:, None] + up[dr][:, None], axis=1)
        # a gap kills the cycle when the walk reaches 0 during it: before the next jump
        before = path - up[dr][:, None]
        death_path = np.where(before <= 0, -1.0, path)
        done = _record(rows, death_path, grid[dr], up[dr], theta[dr], passed, lr, w_tau)
        pos[rows] = path[:, -1]
        alive[rows[done]] = False
    # null cycles from the first jump, for the mean undershoot
    pos = up[d].copy()
    undershoot = np.zeros(total)
    alive = np.ones(total, dtype=bool)
    for _ in range(400 * _IS_MAX_STEPS // 32):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        gaps = rng.geometric(p_up[dr][:, None], size=(rows.size, jumps)) - 1
        steps = gaps * down[dr][:, None] + up[dr][:, None]
        path = pos[rows, None] + np.cumsum(steps, axis=1)
        prev = path - steps
        dead = path - up[dr][:, None] <= 0
        has = dead.any(axis=1)
        i = dead.argmax(axis=1)
        hit_rows = np.flatnonzero(has)
        start = prev[hit_rows, i[hit_rows]]
        misses = np.ceil(start / -down[dr][hit_rows])
        undershoot[rows[hit_rows]] = misses * -down[dr][hit_rows] - start
        alive[rows[hit_rows]] = False
        pos[rows] = path[:, -1]
    eu = (1 - p_up) * -down + p_up * undershoot.reshape(len(walks), paths).mean(axis=1)
    return p_up, lr, w_tau, eu


def _sample_general(walks: list[_Walk], grid: FloatArray, paths: int,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Finitely many increment values: simulate step by step, blocks of steps at a time."""
    n_w = len(walks)
    sizes = np.array([walk.z.size for walk in walks])
    offset = np.concatenate(([0], np.cumsum(sizes)))
    z_all = np.concatenate([walk.z for walk in walks])
    theta = np.array([walk.theta for walk in walks])

    def table(weights: list[FloatArray]) -> tuple[FloatArray, IntArray]:
        # one CDF per walk, shifted by its index, so one searchsorted serves every walk; and the
        # index most draws find in it, by bucket (_lookup)
        cdf = np.concatenate([np.cumsum(wt) / wt.sum() + k for k, wt in enumerate(weights)])
        return cdf, _lookup(cdf, offset)

    tilted = table([walk.w * np.exp(walk.theta * (walk.z - walk.z.max())) for walk in walks])
    null = table([walk.w for walk in walks])
    positive = table([np.where(walk.z > 0, walk.w, 0.0) for walk in walks])
    p_pos = np.array([float(walk.w[walk.z > 0].sum()) for walk in walks])

    def draw(cdf_lut: tuple[FloatArray, IntArray], dr: IntArray, shape: tuple[int, ...]) -> FloatArray:
        # the value at searchsorted(cdf, u + walk) clipped to the walk's slice, looked up by the
        # bucket of u (exact: see _lookup); only draws in a bucket across a CDF step are searched
        cdf, lut = cdf_lut
        u = rng.random(shape)
        walk = dr if len(shape) == 1 else np.broadcast_to(dr[:, None], shape)
        idx = lut[(u * _BUCKETS).astype(np.intp) + walk * _BUCKETS]
        ambiguous = np.flatnonzero(idx < 0)
        if ambiguous.size:
            at = walk.ravel()[ambiguous]
            found = np.searchsorted(cdf, u.ravel()[ambiguous] + at, side="right")
            idx.ravel()[ambiguous] = np.clip(found, offset[at], offset[at + 1] - 1)
        return z_all[idx]

    d = np.repeat(np.arange(n_w), paths)
    total = d.size
    lr = np.zeros((total, grid.shape[1]))
    w_tau = np.zeros((total, grid.shape[1]))
    z1 = draw(positive, d, (total,))
    pos = z1.copy()
    passed = _first_step(pos, grid[d], lr, w_tau)
    alive = passed < grid.shape[1]
    block = 32
    for _ in range(40 * _IS_MAX_STEPS // block):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        path = pos[rows, None] + np.cumsum(draw(tilted, dr, (rows.size, block)), axis=1)
        done = _record(rows, path, grid[dr], z1[rows], theta[dr], passed, lr, w_tau)
        pos[rows] = path[:, -1]
        alive[rows[done]] = False
    # null cycles from a positive first step, for the mean undershoot
    pos = draw(positive, d, (total,))
    undershoot = np.zeros(total)
    alive = np.ones(total, dtype=bool)
    for _ in range(400 * _IS_MAX_STEPS // block):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        path = pos[rows, None] + np.cumsum(draw(null, dr, (rows.size, block)), axis=1)
        dead = path <= 0
        has = np.flatnonzero(dead.any(axis=1))
        undershoot[rows[has]] = -path[has, dead[has].argmax(axis=1)]
        alive[rows[has]] = False
        pos[rows] = path[:, -1]
    eu_neg = np.array([float(walk.w[walk.z <= 0] @ -walk.z[walk.z <= 0]) for walk in walks])
    eu = eu_neg + p_pos * undershoot.reshape(n_w, paths).mean(axis=1)
    return p_pos, lr, w_tau, eu


_BUCKETS = 1 << 12  # lookup buckets of a uniform draw per walk (a power of 2: u * _BUCKETS is exact)


def _lookup(cdf: FloatArray, offset: IntArray) -> IntArray:
    """Per walk ``k`` and bucket ``b``: the value index every ``u`` in ``[b, b + 1) / _BUCKETS``
    draws, ``searchsorted(cdf, u + k, side="right")`` clipped to the walk's slice, or -1 where
    two draws of the bucket may differ.

    Exact, not approximate: ``k + b / _BUCKETS`` is a float, so ``u + k`` rounds into
    ``[k + b / _BUCKETS, k + (b + 1) / _BUCKETS]`` and the (monotone) search of both ends
    bounds every draw of the bucket; a bucket whose ends agree draws that index whatever ``u``.
    """
    walks = offset.size - 1
    edges = (np.arange(walks)[:, None] + np.arange(_BUCKETS + 1)[None, :] / _BUCKETS).ravel()
    lo = offset[:-1, None]
    hi = offset[1:, None] - 1
    found = np.clip(np.searchsorted(cdf, edges, side="right").reshape(walks, _BUCKETS + 1), lo, hi)
    return np.where(found[:, :-1] == found[:, 1:], found[:, :-1], -1).ravel()
