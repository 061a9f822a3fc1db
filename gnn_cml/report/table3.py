"""Paper Table 3 (few-shot node classification): every method ± CML on the same tasks, paired
comparisons (Δ = CML − base per run), over one or several class splits, beside the paper."""
from __future__ import annotations

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from gnn_cml import methods as registry
from gnn_cml.engine.metrics import fmt_mean_ci, fmt_number, fmt_p
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.experiments.grid import (BASE_METHODS, BASELINES, PAPER_SPLIT_SEED, QUICK, SETTINGS, Grid, label,
                                      method_overrides, parse_split_seeds, run_arm, run_table3_grid,
                                      shared_task_file)
from gnn_cml.experiments.executor import add_executor_arguments, executor_from_args
from gnn_cml.experiments.paired import contains, finite, nested_stats, t_interval

METHODS: List[Tuple[str, bool]] = [(m, cml) for m in BASE_METHODS for cml in (False, True)]
__all__ = ["BASELINES", "BASE_METHODS", "METHODS", "PAPER", "QUICK", "SETTINGS", "PairRow", "Report", "Row",
           "method_overrides", "parse_split_seeds", "run_arm", "run_table3", "shared_task_file", "write_reports"]

PAPER = {}  # mean test accuracy (%) from the paper's Table 3: (graph, shots) -> {arm label: accuracy}
for _m in (registry.get(name) for name in BASE_METHODS):
    for _cell, (_base, _cml) in _m.paper_table3.items():
        PAPER.setdefault(_cell, {}).update({_m.name: _base, f"{_m.name}+cml": _cml})
# Runs default to 3 under --quick (a smoke run), the fewest with an unflagged CI.
QUICK_RUNS = 3
# The banner of every figure and report of a --quick run.
QUICK_BANNER = "QUICK (SMOKE) RUN: few episodes, 3 runs, not comparable to the paper"
DEFAULT_RUNS = 20
SETTING_CHOICES = ("transductive", "inductive")
# --study: the full grid (20 paired runs per cell; 5-shot cells over 5 class splits).
STUDY = {"graphs": "citeseer,cora", "methods": ",".join(BASE_METHODS), "shots": None, "runs": 20,
         "split_seeds": {1: "1", 5: "5"}, "dagger": True}


# One hue per learner in every figure (table3.png, the gamma plot): learners in the registry's order (those
# with named baseline arms by their arms, after them); +cml is a darker shade of its learner's hue, +dagger
# a lighter one.
_COLOUR_ORDER = tuple(m.name for m in registry.BUILTIN if not m.arms) + BASELINES
# matplotlib's tab10, then the dark half of tab20b: 20 distinct hues before any repeats.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252", "#bd9e39",
            "#ad494a", "#a55194")


def method_colour(name: str) -> Tuple[float, float, float]:
    """The RGB colour of an arm (``<method>``, ``<method>+cml``, ``<method>+dagger``, a baseline arm) in every
    figure."""
    base, _, arm = name.partition("+")
    index = _COLOUR_ORDER.index(base) if base in _COLOUR_ORDER else len(_COLOUR_ORDER) + sum(map(ord, base))
    rgb = [int(_PALETTE[index % len(_PALETTE)][k:k + 2], 16) / 255 for k in (1, 3, 5)]
    if arm == "cml":
        return tuple(0.6 * c for c in rgb)
    if arm:
        return tuple(c + 0.5 * (1 - c) for c in rgb)
    return tuple(rgb)


def paper_delta(graph: str, shots: int, method: str, arm: str) -> Optional[float]:
    """The paper's CML − base difference (points), where it prints both numbers (never for dagger)."""
    got = PAPER.get((graph, shots), {})
    if arm != "cml" or method not in got or label(method, True) not in got:
        return None
    return round(got[label(method, True)] - got[method], 2)


@dataclass
class Row:
    """One arm's accuracy in one cell and split (``split`` is a seed, or ``pooled``)."""

    graph: str
    setting: str
    method: str
    mean: Optional[float]
    ci95: Optional[float]
    runs: int
    paper: Optional[float]
    episodes_per_s: Optional[float]
    wall_time_s: Optional[float]
    split: str = str(PAPER_SPLIT_SEED)

    @property
    def paper_in_ci(self) -> str:
        if self.paper is None or self.mean is None or self.ci95 is None or self.ci95 != self.ci95:
            return "-"
        return "yes" if abs(self.paper - self.mean) <= self.ci95 else "no"


@dataclass
class PairRow:
    """Paired comparison of an arm (``cml`` or ``dagger``) with its base learner in one cell.

    ``split`` is a split seed (paired-t CI over that split's runs) or ``pooled`` (Student-t CI over
    the per-split mean Δ; ``pooled_runs_*`` hold the all-runs interval, which assumes no split effect).
    """

    graph: str
    setting: str
    shots: int
    split: str
    method: str
    arm: str
    n: int
    base_mean: Optional[float]
    base_ci95: Optional[float]
    arm_mean: Optional[float]
    arm_ci95: Optional[float]
    delta: Optional[float]
    delta_ci95: Optional[float]
    delta_low: Optional[float]
    delta_high: Optional[float]
    wilcoxon_p: Optional[float]
    paper_delta: Optional[float]
    flags: List[str] = field(default_factory=list)
    interval: str = ""
    split_deltas: List[float] = field(default_factory=list)
    pooled_runs_delta: Optional[float] = None
    pooled_runs_ci95: Optional[float] = None
    pooled_runs_wilcoxon_p: Optional[float] = None

    @property
    def arm_label(self) -> str:
        return f"{self.method}+{self.arm}"

    @property
    def paper_inside(self) -> Optional[bool]:
        return contains(self.paper_delta, self.delta_low, self.delta_high)


@dataclass
class Report:
    rows: List[Row]
    pairs: List[PairRow]
    skipped: List[Tuple[str, str]]
    split_seeds: Dict[str, List[int]]  # "graph WwSs" -> split seeds used


def run_table3(graphs: Sequence[str], out: Path, runs: int = DEFAULT_RUNS, quick: bool = False,
               resume: bool = False, overwrite: bool = False, data_root: Optional[str] = None, seed: int = 0,
               progress: bool = True, methods: Sequence[str] = BASE_METHODS, shots: Optional[Sequence[int]] = None,
               split_seeds: Union[str, int, Dict[int, Union[str, int]]] = 1, dagger: bool = False,
               baselines: Sequence[str] = (), executor=None, setting: str = "transductive", cml: bool = True) -> Report:
    """Run the Table 3 grid (:func:`gnn_cml.experiments.grid.run_table3_grid`; ``executor``: train the arms
    as units there first; ``setting``: transductive or inductive) and tabulate it beside the paper."""
    grid = run_table3_grid(graphs, out, runs, quick, resume, overwrite, data_root, seed, progress, methods, shots,
                           split_seeds, dagger, baselines, executor, setting, cml)
    return table3_report(grid)


def table3_report(grid: Grid) -> Report:
    """Rows (accuracy per arm and split, pooled over splits) and paired comparisons of a finished grid."""
    report = Report([], [], list(grid.skipped), dict(grid.split_seeds))
    for cell in grid.cells:
        _tabulate_cell(report, cell)
    return report


def _tabulate_cell(report: Report, cell) -> None:
    name, shots, seeds = cell.graph, cell.shots, cell.seeds
    setting = f"{cell.ways}-way {shots}-shot"
    paper = PAPER.get((name, shots), {})
    accs: Dict[str, Dict[int, List[float]]] = {}
    for arm in cell.arms:
        res, split_seed = arm.results, arm.split_seed
        acc = res["test_accuracy"]["runs"]
        accs.setdefault(arm.label, {})[split_seed] = acc
        t = t_interval(acc)
        if arm.kind == "dagger":
            row = Row(name, setting, arm.label, t["mean"], t["ci95"], len(acc), None, None, None, str(split_seed))
        elif arm.kind == "baseline":
            row = Row(name, setting, arm.label, t["mean"], t["ci95"], len(acc), None, None,
                      finite(res.get("wall_time_s")), str(split_seed))
        else:
            on_paper = paper if split_seed == PAPER_SPLIT_SEED else {}  # the paper's numbers are on its split
            row = Row(name, setting, arm.label, t["mean"], t["ci95"], len(acc), on_paper.get(arm.label),
                      finite(res.get("episodes_per_s")), finite(res.get("wall_time_s")), str(split_seed))
        report.rows.append(row)
    for method in cell.methods:
        for arm in (("cml", "dagger") if cell.dagger else ("cml",)) if method in cell.with_cml else ():
            nested = nested_stats({s: (accs[method][s], accs[f"{method}+{arm}"][s]) for s in seeds})
            pd = paper_delta(name, shots, method, arm)
            for s, st in nested["per_split"].items():
                report.pairs.append(PairRow(
                    name, setting, shots, s, method, arm, st["n"], st["base"]["mean"], st["base"]["ci95"],
                    st["treated"]["mean"], st["treated"]["ci95"], st["delta"], st["delta_ci95"], st["delta_low"],
                    st["delta_high"], st["wilcoxon_p"], pd if s == str(PAPER_SPLIT_SEED) else None, st["flags"],
                    st["interval"]))
            if len(seeds) > 1:
                b, pr = nested["between_splits"], nested["pooled_runs"]
                report.pairs.append(PairRow(
                    name, setting, shots, "pooled", method, arm, b["n"], b["base"]["mean"], b["base"]["ci95"],
                    b["treated"]["mean"], b["treated"]["ci95"], b["delta"], b["delta_ci95"], b["delta_low"],
                    b["delta_high"], b["wilcoxon_p"], pd, b["flags"], b["interval"], b["split_deltas"],
                    pr["delta"], pr["delta_ci95"], pr["wilcoxon_p"]))
    for lab in list(cell.baselines) if len(seeds) > 1 else []:
        t = t_interval([t_interval(accs[lab][s])["mean"] for s in seeds])
        report.rows.append(Row(name, setting, lab, t["mean"], t["ci95"], len(seeds), None, None, None, "pooled"))
    for method in cell.methods:
        if len(seeds) > 1:
            arms = ([label(method, True)] + ([f"{method}+dagger"] if cell.dagger else [])
                    if method in cell.with_cml else [])
            for lab in [method] + arms:
                t = t_interval([t_interval(accs[lab][s])["mean"] for s in seeds])
                report.rows.append(Row(name, setting, lab, t["mean"], t["ci95"], len(seeds),
                                       paper.get(lab), None, None, "pooled"))


def _yes_no(v: Optional[bool]) -> str:
    return "-" if v is None else ("yes" if v else "no")


def pair_table(pairs: List[PairRow]) -> List[str]:
    """The paired comparison as markdown lines."""
    lines = ["| graph | setting | split | method | runs | base | arm | Δ ± paired CI | Wilcoxon p | paper Δ | "
             "paper's Δ inside our CI? | pooled-runs Δ ± CI | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in pairs:
        pooled = fmt_mean_ci(r.pooled_runs_delta, r.pooled_runs_ci95, signed=True) if r.split == "pooled" else ""
        runs = f"{r.n} splits" if r.split == "pooled" else str(r.n)
        lines.append(f"| {r.graph} | {r.setting} | {r.split} | {r.arm_label} | {runs} | {fmt_mean_ci(r.base_mean, r.base_ci95)} | "
                     f"{fmt_mean_ci(r.arm_mean, r.arm_ci95)} | {fmt_mean_ci(r.delta, r.delta_ci95, signed=True)} | {fmt_p(r.wilcoxon_p)} | "
                     f"{'-' if r.paper_delta is None else f'{r.paper_delta:+.2f}'} | {_yes_no(r.paper_inside)} | "
                     f"{pooled} | {', '.join(r.flags)} |")
    return lines


def write_reports(report: Report, out: Path, command: str, quick: bool = False) -> List[Path]:
    """Write table3.md, table3.csv (paired), table3_arms.csv, table3.json, table3.png, table3_forest.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, pairs = report.rows, report.pairs
    pair_cols = ["graph", "setting", "split", "method", "arm", "n", "n_unit", "base_mean", "base_ci95", "arm_mean",
                 "arm_ci95", "delta", "delta_ci95", "delta_low", "delta_high", "wilcoxon_p", "paper_delta",
                 "paper_delta_in_our_ci", "pooled_runs_delta", "pooled_runs_ci95", "pooled_runs_wilcoxon_p",
                 "flags", "interval"]
    with open(out / "table3.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(pair_cols)
        for r in pairs:
            w.writerow([r.graph, r.setting, r.split, r.method, r.arm, r.n,
                        "splits" if r.split == "pooled" else "runs", fmt_number(r.base_mean), fmt_number(r.base_ci95),
                        fmt_number(r.arm_mean), fmt_number(r.arm_ci95), fmt_number(r.delta), fmt_number(r.delta_ci95), fmt_number(r.delta_low),
                        fmt_number(r.delta_high), fmt_p(r.wilcoxon_p), fmt_number(r.paper_delta), _yes_no(r.paper_inside),
                        fmt_number(r.pooled_runs_delta), fmt_number(r.pooled_runs_ci95), fmt_p(r.pooled_runs_wilcoxon_p),
                        ";".join(r.flags), r.interval])
    with open(out / "table3_arms.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["graph", "setting", "split", "method", "ours_mean", "ours_ci95", "runs", "paper",
                    "paper_in_our_ci", "episodes_per_s", "wall_time_s"])
        for r in rows:
            w.writerow([r.graph, r.setting, r.split, r.method, fmt_number(r.mean), fmt_number(r.ci95), r.runs, fmt_number(r.paper),
                        r.paper_in_ci, fmt_number(r.episodes_per_s, 1), fmt_number(r.wall_time_s, 1)])
    payload = {"command": command, "split_seeds": report.split_seeds,
               "pairs": [dict(asdict(r), paper_delta_in_our_ci=r.paper_inside) for r in pairs],
               "arms": [asdict(r) for r in rows], "skipped": [{"graph": g, "reason": why} for g, why in report.skipped]}
    from gnn_cml.engine.checkpoint import write_json  # strict JSON (NaN -> null), written atomically

    write_json(out / "table3.json", payload)
    lines = ["# Table 3: does CML help? Paired comparisons (test accuracy, %)", "",
             f"Command: `{command}`", "",
             "Base and +CML (and CML-dagger) runs share seeds: the same initial shared weights, episodes and "
             "fixed test tasks, so each run gives one paired difference Δ = arm − base (points). Per split: "
             "each arm's mean ± Student-t 95% CI over runs, Δ ± the paired-t 95% CI (df = runs − 1), and the "
             "two-sided Wilcoxon signed-rank p-value. `pooled` rows (several class splits, runs nested in "
             "splits): the mean of the per-split means ± a t-CI over splits (df = splits − 1; the split is "
             "the unit of replication, so split-to-split variation of the effect is included), Wilcoxon over "
             "the per-split Δ; the pooled-runs column pools every run (assumes no split effect, so it is "
             "narrower). Paper Δ: the paper's Table 3 (+CML − base, on its split 1234, 5 runs, re-drawn "
             "test tasks); it is shown, and compared with our CI, on the paper's split and on the pooled rows. "
             "CML-dagger is evaluated from the CML runs' saved models (the paper has no graph numbers for "
             "it). Flags: few_runs/few_splits = fewer than 3 (CI unreliable), all_zero_differences = Wilcoxon "
             "undefined.", ""]
    lines += pair_table(pairs)
    lines += ["", "## Every arm", "", "| graph | setting | split | method | ours | paper | paper in our CI | runs | "
              "episodes/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.graph} | {r.setting} | {r.split} | {r.method} | {fmt_mean_ci(r.mean, r.ci95)} | {fmt_number(r.paper)} | "
                     f"{r.paper_in_ci} | {r.runs}{' splits' if r.split == 'pooled' else ''} | "
                     f"{fmt_number(r.episodes_per_s, 1)} |")
    if report.split_seeds:
        lines += ["", "Class splits (reference rule; seed 1234 is the paper's): " + "; ".join(
            f"{cell}: {', '.join(map(str, s))}" for cell, s in report.split_seeds.items())]
    if any(r.runs < 3 for r in rows):
        lines += ["", "Note: CIs from fewer than 3 runs are unreliable (from 1 run: undefined, shown as -)."]
    if quick:
        lines += ["", "Note: a quick (smoke) run (`--quick`): few episodes and runs; not comparable to the paper."]
    if report.skipped:
        lines += ["", "Skipped graphs:", ""] + [f"- {g}: {why}" for g, why in report.skipped]
    (out / "table3.md").write_text("\n".join(lines) + "\n")
    paths = [out / "table3.md", out / "table3.csv", out / "table3_arms.csv", out / "table3.json"]
    if rows:
        paths.append(_plot([r for r in rows if r.split == str(PAPER_SPLIT_SEED)] or rows, out / "table3.png", quick))
    if pairs:
        paths.append(forest_plot(pairs, out / "table3_forest.png", quick))
    return paths


def forest_rows(pairs: List[PairRow]) -> List[PairRow]:
    """One row per cell (graph, setting, method, arm): the pooled row if the cell has several splits."""
    pooled = {(r.graph, r.setting, r.method, r.arm) for r in pairs if r.split == "pooled"}
    return [r for r in pairs if r.split == "pooled" or (r.graph, r.setting, r.method, r.arm) not in pooled]


def forest_plot(pairs: List[PairRow], path: Path, quick: bool = False) -> Path:
    """Our Δ with its 95% CI per cell, the paper's Δ as a marker, a zero line (legend right of the axes,
    where it hides no marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = forest_rows(pairs)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.38 * len(rows)))
    ax.axvline(0, color="grey", lw=1, ls="--", zorder=0)
    shown = set()
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        if r.delta is not None:
            lo = r.delta_low if r.delta_low is not None else r.delta
            hi = r.delta_high if r.delta_high is not None else r.delta
            ax.errorbar([r.delta], [y], xerr=[[r.delta - lo], [hi - r.delta]], fmt="o", color="tab:blue", capsize=3,
                        label=None if "ours" in shown else "our Δ ± 95% CI", zorder=2)
            shown.add("ours")
            for d in r.split_deltas:
                ax.scatter([d], [y], s=10, color="tab:blue", alpha=0.35, zorder=1,
                           label=None if "split" in shown else "per-split Δ")
                shown.add("split")
        if r.paper_delta is not None:
            ax.scatter([r.paper_delta], [y], marker="D", s=40, color="tab:red", zorder=3,
                       label=None if "paper" in shown else "paper's Δ")
            shown.add("paper")
    split_txt = lambda r: f"{r.n} splits" if r.split == "pooled" else f"split {r.split}, {r.n} runs"  # noqa: E731
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.graph} {r.setting} {r.arm_label} ({split_txt(r)})" for r in reversed(rows)], fontsize=7)
    ax.set_xlabel("Δ test accuracy, arm − base (points)")
    # fig.suptitle centres on the figure, not on the axes that the long tick labels push right
    title = ("Does CML help? Paired differences per cell\n(per split: paired-t CI over runs; "
             "several splits: t-CI over the per-split mean Δ)")
    fig.suptitle(title + (f"\n{QUICK_BANNER}" if quick else ""), fontsize=9, color="firebrick" if quick else "black")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside the axes
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot(rows: List[Row], path: Path, quick: bool = False) -> Path:
    """Ours (mean ± 95% CI over runs) beside the paper's values, on a y-range that shows the differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = list(dict.fromkeys((r.graph, r.setting) for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 2.4 * len(cells)), 4.4))
    x = np.arange(len(cells))
    shown: List[float] = []
    paper_labelled = False
    for i, m in enumerate(methods):
        got = {(r.graph, r.setting): r for r in rows if r.method == m}
        cml = m.endswith("+cml")
        color = method_colour(m)
        pos = x - 0.4 + width * (i + 0.5)
        means = np.array([got[c].mean if c in got and got[c].mean is not None else np.nan for c in cells], float)
        errs = np.array([got[c].ci95 if c in got and got[c].ci95 is not None and got[c].ci95 == got[c].ci95
                         else 0.0 for c in cells], float)
        ax.errorbar(pos, means, yerr=errs, fmt="s" if cml else "^" if "+" in m else "o", ms=6, color=color, ecolor=color, elinewidth=1.6,
                    capsize=0, markeredgecolor="black" if cml else color, label=f"{m} (ours ± 95% CI)")
        shown += [v for v in means - errs if v == v] + [v for v in means + errs if v == v]
        papers = np.array([got[c].paper if c in got and got[c].paper is not None else np.nan for c in cells], float)
        if np.isfinite(papers).any():
            ax.scatter(pos, papers, marker="D", s=42, facecolor="white", edgecolor="black", linewidth=1.3, zorder=4,
                       label=None if paper_labelled else "paper (Table 3)")
            paper_labelled = True
            shown += [v for v in papers if v == v]
    if shown:  # a y-range around the values, not from 0: differences of a few points stay visible
        lo, hi = min(shown), max(shown)
        pad = max(2.0, 0.08 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    for boundary in x[1:] - 0.5:
        ax.axvline(boundary, color="0.85", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g}\n{s}" for g, s in cells], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="y", color="0.9")
    title = "Table 3 reproduction: ours (mean ± 95% CI over runs) vs paper (◇)"
    if quick:
        title += f"\n{QUICK_BANNER}"
    ax.set_title(title, fontsize=10, color="firebrick" if quick else "black")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(p) -> None:
    p.add_argument("--graphs", help="comma-separated Table 3 graphs (unavailable ones are reported as skipped; "
                                    "default citeseer,amazon_computers,corafull,cora)")
    p.add_argument("--methods", help=f"comma-separated methods (registered names, or a plugin's import path "
                                     f"my_pkg.my_module:MyLearner), each run with and without CML where CML "
                                     f"applies (default {','.join(BASE_METHODS)})")
    p.add_argument("--shots", help="only these shot settings, e.g. 5 (default: every setting of the graph)")
    p.add_argument("--runs", type=int, help=f"paired runs per arm and split (default {DEFAULT_RUNS}; "
                                            f"{QUICK_RUNS} with --quick)")
    p.add_argument("--split-seeds", help="class splits per cell: a count S (the first S seeds from 1234 with "
                                         "distinct test classes; 1234 is the paper's split) or a comma list of "
                                         "seeds like 1234,1240 (default 1)")
    p.add_argument("--baselines", help=f"comma-separated non-meta baselines on the same test tasks: "
                                       f"{', '.join(BASELINES)} (linear probes on a pretrained GCN; pretraining is "
                                       f"transductive and never reads a validation/test label; ~1-2 min per DGI run "
                                       f"on 2 CPU cores; default: none)")
    p.add_argument("--dagger", action="store_true", default=None,
                   help="add CML-dagger arms (the CML runs' saved models predicting with the co-learner; "
                        "default: off, on with --study)")
    p.add_argument("--study", action="store_true",
                   help=f"the full study: {STUDY['graphs']}; {STUDY['methods']} ± CML and CML-dagger; 20 runs; "
                        "1-shot cells on the paper's split, 5-shot cells over 5 split seeds (flags override; default: off)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run of a minute or so per graph ({QUICK_RUNS} runs, few episodes; default: off)")
    p.add_argument("--no-cml", dest="cml", action="store_false",
                   help="base arms only, no +CML (or CML-dagger) arms (default: each method ± CML where CML applies)")
    add_setting_argument(p)
    add_output_arguments(p, "results/table3", "cells")


def add_setting_argument(p, both: bool = False) -> None:
    """``--setting``: what meta-training, pretraining and validation see (docs/settings.md)."""
    choices = SETTING_CHOICES + (("both",) if both else ())
    p.add_argument("--setting", choices=choices, default="transductive",
                   help="transductive: training sees the whole graph (only labels are hidden); inductive: only the "
                        "training (validation: and validation) classes' nodes and their edges, test tasks run on "
                        "the whole graph" + ("; both: each, paired" if both else "") + " (default: transductive)")


def seed_type(text: str) -> int:
    """argparse type of a seed: an integer in 0..2**32 - 1 (numpy's range)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"a seed must be in 0..2**32 - 1, got {value}")
    return value


def add_output_arguments(p, out: str, what: str) -> None:
    """Options every ``reproduce`` report shares: output folder, seed, data root, resume/overwrite."""
    p.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the runs and test tasks (default: 0)")
    p.add_argument("--root", dest="data_root", help="data root (default: $GNN_CML_DATA, else ./data)")
    p.add_argument("--resume", action="store_true", help=f"reuse finished {what}, continue interrupted ones "
                                                         "(default: off)")
    p.add_argument("--overwrite", action="store_true", help=f"replace existing {what} (default: off)")
    p.add_argument("--no-progress", action="store_true", help="print no progress on stderr (default: progress on)")
    add_executor_arguments(p)


def csv_list(text: Optional[str], what: str, lower: bool = True) -> Optional[List[str]]:
    """A comma-separated option as a list (``None`` when not given; empty: a one-line error)."""
    if text is None:
        return None
    items = [t.strip().lower() if lower else t.strip() for t in text.split(",") if t.strip()]
    require(items, f"--{what} is empty: name at least one")
    return items


def run(args) -> int:
    study = STUDY if args.study else {}
    graphs = csv_list(args.graphs or study.get("graphs") or "citeseer,amazon_computers,corafull,cora", "graphs")
    methods = [registry.normalise(m) for m in
               csv_list(args.methods or study.get("methods") or ",".join(BASE_METHODS), "methods", lower=False)]
    shots = None
    if args.shots:
        try:
            shots = [int(s) for s in csv_list(args.shots, "shots")]
        except ValueError:
            raise GnnCmlError(f"--shots must be a comma list of integers like 1,5, got {args.shots!r}") from None
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else study.get("runs", DEFAULT_RUNS))
    require(runs > 0, f"--runs must be positive, got {runs}")
    split_seeds = args.split_seeds if args.split_seeds is not None else study.get("split_seeds", 1)
    dagger = bool(args.dagger if args.dagger is not None else study.get("dagger", False))
    report = run_table3(graphs, args.out, runs, args.quick, args.resume, args.overwrite, args.data_root, args.seed,
                        progress=not args.no_progress, methods=methods, shots=shots, split_seeds=split_seeds,
                        dagger=dagger, baselines=csv_list(args.baselines, "baselines") if args.baselines else (),
                        executor=executor_from_args(args), setting=args.setting, cml=args.cml)
    command = ("gnn-cml reproduce table3 " + " ".join(sys.argv[3:])).strip() if len(sys.argv) > 2 \
        else "gnn-cml reproduce table3"
    paths = write_reports(report, args.out, command, args.quick)
    print((Path(args.out) / "table3.md").read_text())
    for path in paths:
        print(path)
    for g, why in report.skipped:
        print(f"skipped {g}: {why}")
    return 0
