"""Paired comparisons of two arms that share seeds (base vs +CML): per-run differences, paired-t CI,
Wilcoxon signed-rank test, and a nested analysis over several class splits.

Every result is strict-JSON-friendly: numbers are floats or ``None`` (never NaN), and anything
that makes a number unreliable or missing is named in ``flags``:

- ``few_runs``: fewer than 3 paired values, so the t interval has at most 1 degree of freedom
  and is too wide (or, with 1 value, missing) to mean much;
- ``no_interval``: fewer than 2 values, no interval at all;
- ``all_zero_differences``: every difference is exactly 0 (the arms computed the same thing);
  the Wilcoxon test is undefined (``wilcoxon_p`` is ``None``) and the interval is [0, 0];
- ``no_wilcoxon``: the Wilcoxon p-value could not be computed (fewer than 2 values).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from gnn_cml.engine.metrics import MIN_RUNS_FOR_CI, finite, mean_ci95
from gnn_cml.errors import GnnCmlError, require



def t_interval(values: Sequence[float]) -> Dict:
    """Mean and the half-width of a two-sided 95% Student-t interval over ``values`` (``None`` if n < 2)."""
    s = mean_ci95(values)
    n, mean = s["n"], finite(s["mean"])
    out = {"n": n, "mean": mean, "std": None, "ci95": None, "low": None, "high": None}
    if n >= 2:
        half = s["ci95"]
        out.update(std=finite(s["std"]), ci95=finite(half), low=finite(s["mean"] - half),
                   high=finite(s["mean"] + half))
    return out


def wilcoxon_p(differences: Sequence[float]) -> Tuple[Optional[float], List[str]]:
    """Two-sided Wilcoxon signed-rank p-value of ``differences`` (``None`` and a flag when undefined)."""
    d = np.asarray(list(differences), dtype=np.float64)
    if len(d) < 2:
        return None, ["no_wilcoxon"]
    if np.all(d == 0):
        return None, ["all_zero_differences"]
    from scipy.stats import wilcoxon

    return finite(wilcoxon(d).pvalue), []


def paired_stats(base: Sequence[float], treated: Sequence[float]) -> Dict:
    """Paired comparison of two arms whose i-th values share a seed: Δ_i = treated_i − base_i.

    Returns each arm's mean ± t-CI, the per-run differences, mean Δ with its paired-t 95% CI
    (``delta_ci95`` is the half-width; ``delta_low``/``delta_high`` the bounds), the paired-t
    p-value and the two-sided Wilcoxon signed-rank p-value (scipy), and ``flags`` (module doc).
    """
    b = np.asarray(list(base), dtype=np.float64)
    c = np.asarray(list(treated), dtype=np.float64)
    require(len(b) == len(c), f"paired arms need the same number of runs, got {len(b)} and {len(c)}")
    require(len(b) > 0, "a paired comparison needs at least one run in each arm")
    require(bool(np.all(np.isfinite(b)) and np.all(np.isfinite(c))), "paired arms hold a NaN or infinite value")
    d = c - b
    delta = t_interval(d)
    p_wilcoxon, flags = _wilcoxon_and_flags(d, "few_runs")
    p_t = None
    if len(d) >= 2 and np.all(d == 0):
        delta.update(ci95=0.0, low=0.0, high=0.0)
        if "all_zero_differences" not in flags:
            flags.append("all_zero_differences")
    elif len(d) >= 2:
        from scipy.stats import ttest_rel

        p_t = finite(ttest_rel(c, b).pvalue)
    return {"n": len(d), "base": _arm(b), "treated": _arm(c), "differences": [float(x) for x in d],
            "delta": delta["mean"], "delta_std": delta["std"], "delta_ci95": delta["ci95"],
            "delta_low": delta["low"], "delta_high": delta["high"], "t_p": p_t, "wilcoxon_p": p_wilcoxon,
            "interval": "paired Student-t 95% CI of the mean per-run difference (df = n - 1)", "flags": flags}


def _wilcoxon_and_flags(differences, few: str) -> Tuple[Optional[float], List[str]]:
    """The Wilcoxon p-value of ``differences`` and the flags of a sample that small (``few``: its name)."""
    flags: List[str] = []
    if len(differences) < MIN_RUNS_FOR_CI:
        flags.append(few)
    if len(differences) < 2:
        flags.append("no_interval")
    p, more = wilcoxon_p(differences)
    return p, flags + [f for f in more if f not in flags]


def _arm(values: np.ndarray) -> Dict:
    t = t_interval(values)
    return {"mean": t["mean"], "ci95": t["ci95"], "runs": [float(x) for x in values]}


def nested_stats(splits: Mapping[Union[int, str], Tuple[Sequence[float], Sequence[float]]]) -> Dict:
    """Paired analysis over several class splits, runs nested in splits.

    ``splits`` maps a split seed to its (base runs, treated runs), paired within the split.
    Returns ``per_split`` (``paired_stats`` of each split) and two pooled summaries:

    - ``between_splits`` (the primary interval): the per-split mean Δ, then a Student-t 95% CI over
      splits (df = splits - 1). The split is the unit of replication, so this interval includes
      how much the effect varies from one class split to another; with one split it is ``None``.
      Its Wilcoxon p-value is over the per-split mean Δ (with 5 splits it cannot go below 0.0625).
    - ``pooled_runs``: every run's Δ pooled, t-interval with df = runs - 1 and Wilcoxon over runs.
      It assumes runs are exchangeable across splits (the effect does not depend on the split);
      when it does, this interval is too narrow, so it is reported beside, never instead of,
      ``between_splits``.
    Arm means in ``between_splits`` are likewise means of per-split means ± a t-CI over splits.
    """
    require(len(splits) > 0, "a nested analysis needs at least one class split")
    per_split = {str(k): paired_stats(b, c) for k, (b, c) in splits.items()}
    means = [s["delta"] for s in per_split.values()]
    between = t_interval(means)
    p_between, flags = _wilcoxon_and_flags(means, "few_splits")
    base_means = [s["base"]["mean"] for s in per_split.values()]
    treated_means = [s["treated"]["mean"] for s in per_split.values()]
    all_base = [x for s in per_split.values() for x in s["base"]["runs"]]
    all_treated = [x for s in per_split.values() for x in s["treated"]["runs"]]
    pooled = paired_stats(all_base, all_treated)
    pooled["interval"] = ("paired Student-t 95% CI over all runs of all splits (df = runs - 1); assumes runs are "
                          "exchangeable across splits, too narrow if the effect varies by split")
    return {
        "splits": list(per_split), "per_split": per_split,
        "between_splits": {
            "n": len(means), "base": _arm_of_means(base_means), "treated": _arm_of_means(treated_means),
            "split_deltas": means, "delta": between["mean"], "delta_std": between["std"],
            "delta_ci95": between["ci95"], "delta_low": between["low"], "delta_high": between["high"],
            "wilcoxon_p": p_between, "flags": flags,
            "interval": "Student-t 95% CI over the per-split mean differences (df = splits - 1); runs nested "
                        "in splits, the split is the unit of replication"},
        "pooled_runs": pooled,
    }


def _arm_of_means(means: Sequence[float]) -> Dict:
    t = t_interval(means)
    return {"mean": t["mean"], "ci95": t["ci95"], "split_means": [float(x) for x in means]}


def contains(value: Optional[float], low: Optional[float], high: Optional[float]) -> Optional[bool]:
    """Whether ``value`` lies in [low, high]; ``None`` when any of them is missing."""
    if value is None or low is None or high is None:
        return None
    return bool(low <= value <= high)


# -- pairing two results.json -----------------------------------------------------------------

def _describe(results: Mapping, key: str):
    cfg = results.get("config") or {}
    if key == "seed":
        return cfg.get("seed")
    if key == "split_seed":
        return cfg.get("split_seed")
    if key == "runs":
        return len((results.get("test_accuracy") or {}).get("runs") or [])
    if key == "run_seeds":
        return [r.get("seed") for r in results.get("runs") or []]
    return results.get(key, cfg.get(key))


def pair_runs(base_results: Mapping, cml_results: Mapping, check_method: bool = True) -> Dict:
    """Paired statistics of two ``results.json`` dicts, after checking they are truly paired.

    Paired means: same graph, method (unless ``check_method=False``), ways, shots, seed, class split
    (seed and classes), number of runs and per-run seeds, and the same test-task digest when both
    results carry one. Anything else raises a one-line :class:`GnnCmlError` naming what differs.
    """
    for name, r in (("base", base_results), ("cml", cml_results)):
        require(isinstance(r, Mapping) and isinstance(r.get("test_accuracy"), Mapping)
                and isinstance(r["test_accuracy"].get("runs"), list),
                f"the {name} results have no per-run test accuracies (test_accuracy.runs): not a results.json")
    keys = ["graph", "ways", "shots", "seed", "split_seed", "split", "runs", "run_seeds"]
    if check_method:
        keys.insert(1, "method")
    differ = [f"{k} {_describe(base_results, k)!r} vs {_describe(cml_results, k)!r}" for k in keys
              if _describe(base_results, k) != _describe(cml_results, k)]
    ha, hb = base_results.get("test_tasks_sha256"), cml_results.get("test_tasks_sha256")
    if ha and hb and ha != hb:
        differ.append("test tasks (test_tasks_sha256 differs)")
    require(not differ, "the runs are not paired (" + "; ".join(differ) + "): compare runs with the same "
                        "graph, ways, shots, seed, class split, runs and test tasks")
    stats = paired_stats(base_results["test_accuracy"]["runs"], cml_results["test_accuracy"]["runs"])
    stats["checked"] = keys + (["test_tasks_sha256"] if ha and hb else [])
    return stats


def load_results(run_dir: Union[str, Path]) -> Dict:
    """``results.json`` of a run directory (or the file itself), with a one-line error when missing."""
    path = Path(run_dir)
    path = path / "results.json" if path.is_dir() else path
    require(path.is_file(), f"{path} does not exist: finish the run first (gnn-cml train --resume)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GnnCmlError(f"{path} is not valid JSON: rerun the run or restore the file") from None


def link_pair(base_dir: Union[str, Path], cml_dir: Union[str, Path]) -> Dict:
    """Check two run directories are paired and write ``paired_with`` + the paired numbers into the
    CML run's ``results.json``; returns the paired statistics."""
    from gnn_cml.engine.checkpoint import write_json

    base_dir, cml_dir = Path(base_dir), Path(cml_dir)
    cml = load_results(cml_dir)
    stats = pair_runs(load_results(base_dir), cml)
    try:
        rel = str(Path(base_dir.resolve()).relative_to(cml_dir.resolve().parent))
        rel = str(Path("..") / rel)
    except ValueError:
        rel = str(base_dir.resolve())
    cml["paired_with"] = rel
    cml["paired"] = {k: stats[k] for k in ("n", "differences", "delta", "delta_ci95", "delta_low", "delta_high",
                                           "t_p", "wilcoxon_p", "interval", "flags", "checked")}
    write_json(cml_dir / "results.json", cml)
    return stats
