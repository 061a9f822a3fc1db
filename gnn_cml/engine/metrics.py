"""Summary statistics for reports."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np


def finite(value) -> Optional[float]:
    """``value`` as a float, or ``None`` when it is missing or not finite (strict JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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


MIN_RUNS_FOR_CI = 3


def ci_note(n: int, what: str = "runs") -> "str | None":
    """A warning for a 95% CI from fewer than :data:`MIN_RUNS_FOR_CI` values (None when there are enough)."""
    if n >= MIN_RUNS_FOR_CI:
        return None
    if n < 2:
        return f"undefined: a 95% CI needs at least 2 {what} (this has {n}); use 3 or more"
    return (f"unreliable: a 95% CI from only {n} {what} (Student t with {n - 1} degree of freedom) is "
            f"very wide; use 3 or more")


def fmt_number(value: Optional[float], digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; ``-`` when it is undefined (None or NaN)."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def fmt_mean_ci(mean: Optional[float], ci: Optional[float], digits: int = 2, unit: str = "",
                signed: bool = False) -> str:
    """``74.31 ± 2.10`` (``unit`` after the mean, e.g. ``%``; ``signed``: ``+1.20 ± 0.80``, never ``-0.00``);
    ``-`` for an undefined mean, ``± -`` for an undefined CI (one run).

    Example::

        fmt_mean_ci(74.312, 2.1, unit="%")   # '74.31% ± 2.10'
    """
    if mean is None:
        return "-"
    shown = f"{round(mean, digits) + 0.0:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{shown}{unit} ± {fmt_number(ci, digits)}"


def fmt_p(p: Optional[float]) -> str:
    """A p-value: three decimals, scientific notation below 0.001, ``-`` when undefined."""
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
