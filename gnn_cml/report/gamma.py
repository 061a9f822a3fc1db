"""Gamma sweep: test accuracy and the paired Δ against gamma = 0 for CML's co-learner weight."""
from __future__ import annotations

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from gnn_cml import methods as registry
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.experiments.paired import finite, pair_runs, t_interval
from gnn_cml.engine.metrics import fmt_mean_ci, fmt_number, fmt_p
from gnn_cml.experiments.executor import executor_from_args
from gnn_cml.experiments.grid import PAPER_SPLIT_SEED, run_gamma_grid
from gnn_cml.report.table3 import QUICK_BANNER, add_output_arguments, add_setting_argument, method_colour, seed_type

GAMMAS = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)
GRAPHS = ("citeseer", "cora")
# The methods whose CML gain the paper reports (Table 3).
METHODS = tuple(m for m in registry.table3_methods() if registry.get(m).paper_table3)
DEFAULT_RUNS = 10
QUICK_SETTINGS = {"graphs": ("citeseer",), "gammas": (0.0, 0.2, 1.0), "runs": 3}


@dataclass
class GammaRow:
    """One (graph, method, gamma) point: accuracy ± t-CI over runs, and Δ vs gamma = 0 ± paired-t CI."""

    graph: str
    setting: str
    method: str
    gamma: float
    runs: int
    mean: Optional[float]
    ci95: Optional[float]
    delta: Optional[float]
    delta_ci95: Optional[float]
    delta_low: Optional[float]
    delta_high: Optional[float]
    wilcoxon_p: Optional[float]
    flags: List[str] = field(default_factory=list)
    wall_time_s: Optional[float] = None


def run_gamma(graphs: Sequence[str], out: Path, methods: Sequence[str] = METHODS, gammas: Sequence[float] = GAMMAS,
              runs: int = DEFAULT_RUNS, ways: int = 2, shots: int = 5, split_seed: int = PAPER_SPLIT_SEED,
              quick: bool = False, resume: bool = False, overwrite: bool = False, data_root: Optional[str] = None,
              seed: int = 0, progress: bool = True, executor=None,
              setting: str = "transductive") -> Tuple[List[GammaRow], List[Tuple[str, str]]]:
    """Run the sweep (:func:`gnn_cml.experiments.grid.run_gamma_grid`; ``executor``: train the points as
    units there first); returns its rows (each gamma paired with gamma = 0 of its graph and method) and the
    skipped graphs."""
    arms, skipped = run_gamma_grid(graphs, out, methods, gammas, runs, ways, shots, split_seed, quick, resume,
                                   overwrite, data_root, seed, progress, executor, setting)
    rows: List[GammaRow] = []
    base = {}
    for arm in arms:
        res = arm.results
        base.setdefault((arm.graph, arm.method), res)  # the first (gamma = 0) arm of each graph and method
        accs = res["test_accuracy"]["runs"]
        t = t_interval(accs)
        st = pair_runs(base[(arm.graph, arm.method)], res)
        gamma = float(res["gamma"])  # 0.0 for the base learner (CML off)
        rows.append(GammaRow(arm.graph, f"{arm.ways}-way {arm.shots}-shot", arm.method, gamma, len(accs), t["mean"],
                             t["ci95"], st["delta"], st["delta_ci95"], st["delta_low"], st["delta_high"],
                             st["wilcoxon_p"], st["flags"], finite(res.get("wall_time_s"))))
    return rows, skipped


def write_reports(rows: List[GammaRow], skipped: List[Tuple[str, str]], out: Path, command: str,
                  split_seed: int = PAPER_SPLIT_SEED, seed: int = 0, quick: bool = False) -> List[Path]:
    """Write gamma.md, gamma.csv, gamma.json and gamma.png to ``out`` (``split_seed``, ``seed``: the class
    split's and the runs' seeds, named in gamma.md; ``quick``: a smoke run, bannered everywhere)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["graph", "setting", "method", "gamma", "runs", "mean", "ci95", "delta", "delta_ci95", "delta_low",
            "delta_high", "wilcoxon_p", "flags", "wall_time_s"]
    with open(out / "gamma.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.graph, r.setting, r.method, f"{r.gamma:g}", r.runs, fmt_number(r.mean), fmt_number(r.ci95), fmt_number(r.delta),
                        fmt_number(r.delta_ci95), fmt_number(r.delta_low), fmt_number(r.delta_high), fmt_p(r.wilcoxon_p),
                        ";".join(r.flags), fmt_number(r.wall_time_s, 1)])
    payload = {"command": command, "split_seed": split_seed, "seed": seed, "quick": quick,
               "rows": [asdict(r) for r in rows],
               "skipped": [{"graph": g, "reason": why} for g, why in skipped]}
    from gnn_cml.engine.checkpoint import write_json  # strict JSON (NaN -> null), written atomically

    write_json(out / "gamma.json", payload)
    split_text = f"class split seed {split_seed}" + (" (the paper's)" if split_seed == PAPER_SPLIT_SEED else "")
    lines = ["# CML gamma sweep (test accuracy, %)", ""] + ([f"**{QUICK_BANNER}**", ""] if quick else []) + [
             f"Command: `{command}`", "",
             "gamma = 0 is the base learner (CML off). Every gamma shares the seeds and fixed test tasks of "
             "gamma = 0, so Δ is paired run by run: mean Δ ± paired-t 95% CI (df = runs − 1) and the two-sided "
             f"Wilcoxon signed-rank p-value. Accuracy: mean ± Student-t 95% CI over runs. One class split: "
             f"{split_text}; run seed {seed} (each run derives its own from it).", "",
             "| graph | setting | method | gamma | runs | accuracy | Δ vs gamma 0 ± paired CI | Wilcoxon p | flags |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "(reference)" if r.gamma == 0 else fmt_mean_ci(r.delta, r.delta_ci95, signed=True)
        lines.append(f"| {r.graph} | {r.setting} | {r.method} | {r.gamma:g} | {r.runs} | "
                     f"{fmt_number(r.mean)} ± {fmt_number(r.ci95)} | {delta} | {'-' if r.gamma == 0 else fmt_p(r.wilcoxon_p)} | "
                     f"{', '.join(f for f in r.flags if r.gamma != 0)} |")
    if skipped:
        lines += ["", "Skipped graphs:", ""] + [f"- {g}: {why}" for g, why in skipped]
    (out / "gamma.md").write_text("\n".join(lines) + "\n")
    paths = [out / "gamma.md", out / "gamma.csv", out / "gamma.json"]
    if rows:
        paths.append(plot(rows, out / "gamma.png", quick))
    return paths


def plot(rows: List[GammaRow], path: Path, quick: bool = False) -> Path:
    """Per graph: accuracy vs gamma (top) and paired Δ vs gamma = 0 with its CI (bottom), one line per method,
    on a symlog gamma axis (linear below 0.05, logarithmic above: gamma = 0 has a place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import offset_copy

    graphs = list(dict.fromkeys((r.graph, r.setting) for r in rows))
    fig, axes = plt.subplots(2, len(graphs), figsize=(4.5 * len(graphs), 6), squeeze=False, sharex=True)
    for j, (graph, setting) in enumerate(graphs):
        top, bottom = axes[0][j], axes[1][j]
        methods = list(dict.fromkeys(r.method for r in rows))
        gammas = sorted({r.gamma for r in rows if r.graph == graph and r.setting == setting})
        for k, method in enumerate(methods):
            got = sorted((r for r in rows if r.graph == graph and r.method == method), key=lambda r: r.gamma)
            if not got:
                continue
            xs = [r.gamma for r in got]
            colour = method_colour(method)
            for ax, ys, err in ((top, [r.mean for r in got], [r.ci95 or 0 for r in got]),
                                (bottom, [r.delta if r.delta is not None else float("nan") for r in got],
                                 [[(r.delta - r.delta_low) if r.delta_low is not None else 0 for r in got],
                                  [(r.delta_high - r.delta) if r.delta_high is not None else 0 for r in got]])):
                # methods side by side: a few points apart on the page, the same gamma on the axis
                shift = offset_copy(ax.transData, fig=fig, x=5 * (k - (len(methods) - 1) / 2), y=0, units="points")
                ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=method, color=colour, transform=shift)
                lo, hi = (err, err) if not isinstance(err[0], list) else err
                ax.update_datalim([(x, y - e) for x, y, e in zip(xs, ys, lo) if y == y] +
                                  [(x, y + e) for x, y, e in zip(xs, ys, hi) if y == y])  # a shifted line is not counted
        for ax in (top, bottom):
            ax.set_xscale("symlog", linthresh=0.05, linscale=0.5)
            ax.set_xticks(gammas)
            ax.set_xticklabels([f"{g:g}" for g in gammas])
            ax.minorticks_off()
            ax.autoscale_view()
            ax.set_xlim(-0.02, max(gammas) * 1.4 if max(gammas) > 0 else 1)
        bottom.axhline(0, color="grey", lw=1, ls="--")
        bottom.set_xlabel("gamma (symlog scale: linear below 0.05, log above)")
        top.set_title(f"{graph} {setting}", fontsize=10)
        top.set_ylabel("test accuracy (%) ± 95% CI")
        bottom.set_ylabel("Δ vs gamma 0 (points) ± paired CI")
    handles, names = axes[0][0].get_legend_handles_labels()
    if quick:
        fig.suptitle(QUICK_BANNER, fontsize=9, color="firebrick")
    fig.tight_layout()
    fig.legend(handles, names, fontsize=8, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               frameon=False)  # below the panels: it hides no point
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def add_arguments(p) -> None:
    p.add_argument("--graphs", help=f"comma-separated graphs (default {','.join(GRAPHS)})")
    p.add_argument("--methods", help=f"comma-separated base learners (default {','.join(METHODS)})")
    p.add_argument("--gammas", help=f"comma-separated gammas, must include 0 (default {','.join(f'{g:g}' for g in GAMMAS)})")
    p.add_argument("--runs", type=int, help=f"paired runs per point (default {DEFAULT_RUNS})")
    p.add_argument("--ways", type=int, default=2, help="N classes per task (default: 2)")
    p.add_argument("--shots", type=int, default=5, help="K support nodes per class (default: 5)")
    p.add_argument("--split-seed", type=seed_type, default=PAPER_SPLIT_SEED,
                   help=f"class split seed (default: {PAPER_SPLIT_SEED}, the paper's)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: citeseer, gammas 0,0.2,1, 3 runs, a few episodes (flags override; default: off)")
    add_setting_argument(p)
    add_output_arguments(p, "results/gamma", "points")


def run(args) -> int:
    quick = QUICK_SETTINGS if args.quick else {}
    graphs = [g.strip() for g in (args.graphs or ",".join(quick.get("graphs", GRAPHS))).split(",") if g.strip()]
    methods = [m.strip().lower() for m in (args.methods or ",".join(METHODS)).split(",") if m.strip()]
    require(graphs, "--graphs is empty: name at least one graph, e.g. --graphs citeseer")
    require(methods, f"--methods is empty: name at least one, e.g. --methods {METHODS[0]}")
    cml_methods = registry.cml_methods()
    for m in methods:
        require(m in cml_methods, f"--methods: '{m}' has no CML variant: use {registry.or_list(cml_methods)}")
    try:
        gammas = [float(g) for g in args.gammas.split(",") if g.strip()] if args.gammas else list(
            quick.get("gammas", GAMMAS))
    except ValueError:
        raise GnnCmlError(f"--gammas must be a comma list of numbers like 0,0.2,1, got {args.gammas!r}") from None
    runs = args.runs if args.runs is not None else quick.get("runs", DEFAULT_RUNS)
    require(runs > 0, f"--runs must be positive, got {runs}")
    rows, skipped = run_gamma(graphs, args.out, methods, gammas, runs, args.ways, args.shots, args.split_seed,
                              args.quick, args.resume, args.overwrite, args.data_root, args.seed,
                              progress=not args.no_progress, executor=executor_from_args(args), setting=args.setting)
    command = ("gnn-cml reproduce gamma " + " ".join(sys.argv[3:])).strip() if len(sys.argv) > 2 \
        else "gnn-cml reproduce gamma"
    paths = write_reports(rows, skipped, args.out, command, args.split_seed, args.seed, args.quick)
    print((Path(args.out) / "gamma.md").read_text())
    for path in paths:
        print(path)
    for g, why in skipped:
        print(f"skipped {g}: {why}")
    return 0
