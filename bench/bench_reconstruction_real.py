"""The reconstruction detector (issue 16's per-event multivariate signal) on the real streams.

    .venv/bin/python bench/bench_reconstruction_real.py

As the pipeline builds it: the multivariate section of the first 5,000 rows (``driftline profile
build``'s reference), every row's reconstruction error, and an episode monitor calibrated on the
reference's errors at the per-feature false-alarm rate bench_episodes uses, fed the later rows in
order. Prints episodes opened / escalated per 10,000 later rows beside the reference's and the later
rows' mean error, to compare with the univariate episodes of row (11) on the same rows.
"""

from __future__ import annotations

import numpy as np
from bench_episodes import MODEL_ARL, REAL, REFERENCE_ROWS, feed, load

from driftline.operators.episodes import EpisodeMonitor
from driftline.operators.model_watch import MultivariateReference, multivariate_section
from driftline.operators.sequential import feature_arl


def main() -> int:
    for name in REAL:
        data = load(name, None)
        section = multivariate_section({c: x[:REFERENCE_ROWS].tolist() for c, x in data.items()})
        if section is None:
            print(f"{name}: no multivariate section (too few numeric features or rows)")
            continue
        ref = MultivariateReference.from_section(section)
        errors, _ = ref.errors_and_distances(np.column_stack([data[f] for f in ref.features]))
        arl = feature_arl(MODEL_ARL, len(data))
        monitor = EpisodeMonitor.from_reference(errors[:REFERENCE_ROWS], arl=arl)
        rest = errors[REFERENCE_ROWS:]
        events = feed(monitor, rest)
        per_10k = 1e4 / rest.size
        opened, escalated = (sum(e.kind == k for e in events) for k in ("opened", "escalated"))
        print(f"{name}: {rest.size:,} rows after a {REFERENCE_ROWS:,}-row reference, {len(ref.features)} "
              f"features: __reconstruction__ episodes opened {opened * per_10k:.2f} and escalated "
              f"{escalated * per_10k:.2f} per 10,000 rows; mean error {errors[:REFERENCE_ROWS].mean():.2f} "
              f"(reference) vs {rest.mean():.2f} (later rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
