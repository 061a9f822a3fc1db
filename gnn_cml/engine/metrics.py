"""Summary statistics for reports."""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np


def mean_ci95(values: Sequence[float]) -> Dict[str, float]:
    """Mean and the half-width of a two-sided 95% confidence interval (Student t)."""
    v = np.asarray(list(values), dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "std": float("nan"), "n": 0}
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * std / math.sqrt(n))
    else:
        half = float("nan")
    return {"mean": float(v.mean()), "ci95": half, "std": std, "n": n}
