"""OutlierScorer.outliers_of_scores: the exact flags of the column-by-column distances."""

from __future__ import annotations

import numpy as np

from driftline.operators.outliers import OutlierScorer


def test_flags_equal_the_exact_distances_flags_also_at_the_threshold() -> None:
    rng = np.random.default_rng(21)
    a = rng.normal(size=20_000)
    reference = {"a": a, "b": 0.8 * a + 0.6 * rng.normal(size=20_000),
                 **{f"x{j}": rng.lognormal(size=20_000) for j in range(8)}}
    scorer = OutlierScorer.from_reference(reference)
    features = scorer.features
    rows = [scorer.scores.transform({f: rng.normal(size=3_000) * 1.5 for f in features})]
    # rows placed at the threshold's distance, up to a few units in the last place: the products
    # cannot decide those, the exact distance does
    centre, precision = scorer._centre, scorer._precision
    directions = rng.normal(size=(2_000, len(features)))
    lengths = np.sqrt(np.einsum("ij,jk,ik->i", directions, precision, directions))
    wobble = 1.0 + rng.integers(-4, 5, size=2_000) * np.finfo(np.float64).eps
    rows.append(centre + directions * (scorer.threshold / lengths * wobble)[:, None])
    for z in rows:
        z = np.asfortranarray(z)
        exact = scorer.distances_of_scores(z) > scorer.threshold
        flags = scorer.outliers_of_scores(z)
        assert flags.dtype == np.bool_
        assert np.array_equal(flags, exact)
        assert 0 < int(exact.sum()) < exact.size
