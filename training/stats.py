"""The one statistic every report shares: a mean with its percentile-bootstrap CI."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

#: Resamples per CI; the generator is seeded, so a rerun reports the same interval.
BOOTSTRAP = 1000


def bootstrap_ci(values: Sequence[Optional[float]], seed: int, n: int = BOOTSTRAP) -> Optional[dict[str, Any]]:
    """Mean and a 95% percentile-bootstrap CI of the mean, ``None`` values skipped (``None`` when none are left)."""
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return None
    mean = float(vals.mean())
    if vals.size < 2:
        return {"mean": mean, "ci": [mean, mean], "n": int(vals.size)}
    rng = np.random.default_rng(seed)
    means = vals[rng.integers(0, vals.size, size=(n, vals.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": mean, "ci": [float(lo), float(hi)], "n": int(vals.size)}


__all__ = ["BOOTSTRAP", "bootstrap_ci"]
