"""CUSUM threshold calibration: the importance sampler's bucket lookup draws exactly what a search
of the CDF would, so thresholds stay what they were (pinned bit for bit); calibrations shared
through a directory are the same thresholds, read instead of sampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftline.operators import calibration
from driftline.operators.calibration import _BUCKETS, IncrementLaw, _lookup, calibrate_thresholds


def _searched(cdf: np.ndarray, offset: np.ndarray, u: np.ndarray, walk: np.ndarray) -> np.ndarray:
    """What the sampler drew before the lookup: a search of ``u + walk``, clipped to the walk."""
    return np.clip(np.searchsorted(cdf, u + walk, side="right"), offset[walk], offset[walk + 1] - 1)


def test_the_lookup_draws_what_a_search_of_the_cdf_draws_at_every_bucket_edge() -> None:
    rng = np.random.default_rng(3)
    # walks of 2-300 values, some with tiny and zero probabilities (many CDF steps in one bucket)
    weights = [rng.dirichlet(np.full(n, a)) for n, a in ((2, 1.0), (300, 0.05), (17, 1.0), (60, 0.3))]
    weights[2][[0, 5, 16]] = 0.0
    offset = np.concatenate(([0], np.cumsum([w.size for w in weights])))
    cdf = np.concatenate([np.cumsum(w) / w.sum() + k for k, w in enumerate(weights)])
    lut = _lookup(cdf, offset)
    edges = np.arange(_BUCKETS + 1) / _BUCKETS
    u = np.concatenate([edges[:-1], np.nextafter(edges[1:], 0.0), rng.random(200_000),
                        np.nextafter(cdf % 1.0, 0.0), cdf % 1.0, np.nextafter(cdf % 1.0, 1.0)])
    u = u[(u >= 0) & (u < 1)]
    for k in range(len(weights)):
        walk = np.full(u.size, k)
        idx = lut[(u * _BUCKETS).astype(np.intp) + walk * _BUCKETS]
        sure = idx >= 0
        assert sure.mean() > 0.9  # most draws need no search
        assert np.array_equal(idx[sure], _searched(cdf, offset, u[sure], walk[sure]))


def _laws() -> list[IncrementLaw]:
    rng = np.random.default_rng(7)
    laws = []
    for cells, shift in ((40, 0.3), (200, 0.5), (12, 0.8)):
        w = rng.dirichlet(np.ones(cells))
        x = np.sort(rng.normal(size=cells))
        laws.append(IncrementLaw(shift * x - shift * shift / 2 - 0.05, w))
    laws.append(IncrementLaw(np.log([0.10 / 0.05, 0.90 / 0.95]), np.array([0.05, 0.95])))
    return laws


def test_sampled_thresholds_are_the_ones_calibrated_before_the_lookup() -> None:
    # three discrete laws (step by step sampler) and a Bernoulli one (jump to jump), as calibrated
    # by the search-based sampler before it (fe63f91)
    calibration.clear_cache()
    got = calibrate_thresholds(_laws(), arl=1e5)
    pinned = ["0x1.32c53295f33abp+2", "0x1.7606755e9c0f3p+2", "0x1.dbf5c74407f8cp+1", "0x1.13cd926eb48afp+3"]
    assert [float(h).hex() for h in got] == pinned


def test_a_shared_directory_gives_another_process_the_same_thresholds_without_sampling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    laws = _laws()
    try:
        calibration.share_calibrations(tmp_path)
        calibration.clear_cache()
        first = calibrate_thresholds(laws, arl=1e5)
        files = list(tmp_path.iterdir())
        assert len(files) == 1 and files[0].stat().st_size == 8 * len(laws)
        calibration.clear_cache()  # as another process (or this one restarted) would start

        def no_sampling(*args: object) -> None:
            raise AssertionError("sampled again")

        monkeypatch.setattr(calibration, "_sampled_arl", no_sampling)
        assert np.array_equal(calibrate_thresholds(laws, arl=1e5), first)
        # a malformed file is calibrated again, and rewritten
        files[0].write_bytes(b"\0" * 8)
        calibration.clear_cache()
        with pytest.raises(AssertionError, match="sampled again"):
            calibrate_thresholds(laws, arl=1e5)
        monkeypatch.undo()
        calibration.clear_cache()
        assert np.array_equal(calibrate_thresholds(laws, arl=1e5), first)
        assert files[0].stat().st_size == 8 * len(laws)
        assert [f.name for f in tmp_path.iterdir()] == [files[0].name]  # no part files left
    finally:
        calibration.share_calibrations(None)
        calibration.clear_cache()

