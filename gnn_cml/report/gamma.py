"""Gamma sweep: test accuracy and the paired Δ against gamma = 0 for CML's co-learner weight."""
from __future__ import annotations

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from gnn_cml import methods as registry
from gnn_cml.config import resolve
from gnn_cml.data import graph_info, load_graph
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.report.paired import finite, pair_runs, t_interval
from gnn_cml.report.table3 import PAPER_SPLIT_SEED, add_output_arguments, QUICK, _fmt, _p, _signed, run_arm, shared_task_file

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
              seed: int = 0, progress: bool = True) -> Tuple[List[GammaRow], List[Tuple[str, str]]]:
    """Train every (graph, method, gamma) with the same seeds and test tasks; returns rows and skipped graphs.

    gamma = 0 is run as the base learner (CML off): with gamma = 0 the co-learner adds nothing to the
    meta-gradient, and the engine tests check that this is the same computation. Every other gamma is
    paired with it run by run (same initial weights, episodes and test tasks).
    Layout: ``out/<graph>/<W>w<S>s/split_<seed>/{test_tasks.npz, <method>_gamma<g>/}``.
    """
    out = Path(out)
    require(0.0 in [float(g) for g in gammas], "--gammas must include 0 (the paired reference)")
    require(all(g >= 0 for g in gammas), f"--gammas must be >= 0, got {list(gammas)}")
    gammas = sorted(set(float(g) for g in gammas))
    rows: List[GammaRow] = []
    skipped: List[Tuple[str, str]] = []
    for g in graphs:
        name = graph_info(g).name
        try:
            load_graph(name, data_root)
        except GnnCmlError as exc:
            skipped.append((name, str(exc)))
            continue
        where = out / name / f"{ways}w{shots}s" / f"split_{split_seed}"
        for method in methods:
            base = None
            for gamma in gammas:
                overrides = dict(graph=name, method=method, cml=gamma > 0, gamma=gamma if gamma > 0 else 0.2,
                                 ways=ways, shots=shots, runs=runs, seed=seed, split_seed=split_seed,
                                 data_root=data_root, **(QUICK if quick else {}))
                cfg = resolve(overrides)
                task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
                res = run_arm(cfg, where / f"{method}_gamma{gamma:g}", task_file, resume, overwrite, progress)
                accs = res["test_accuracy"]["runs"]
                t = t_interval(accs)
                if base is None:
                    base = res
                st = pair_runs(base, res)
                rows.append(GammaRow(name, f"{ways}-way {shots}-shot", method, gamma, len(accs), t["mean"], t["ci95"],
                                     st["delta"], st["delta_ci95"], st["delta_low"], st["delta_high"],
                                     st["wilcoxon_p"], st["flags"], finite(res.get("wall_time_s"))))
    return rows, skipped


def write_reports(rows: List[GammaRow], skipped: List[Tuple[str, str]], out: Path, command: str) -> List[Path]:
    """Write gamma.md, gamma.csv, gamma.json and gamma.png to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["graph", "setting", "method", "gamma", "runs", "mean", "ci95", "delta", "delta_ci95", "delta_low",
            "delta_high", "wilcoxon_p", "flags", "wall_time_s"]
    with open(out / "gamma.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.graph, r.setting, r.method, f"{r.gamma:g}", r.runs, _fmt(r.mean), _fmt(r.ci95), _fmt(r.delta),
                        _fmt(r.delta_ci95), _fmt(r.delta_low), _fmt(r.delta_high), _p(r.wilcoxon_p),
                        ";".join(r.flags), _fmt(r.wall_time_s, 1)])
    payload = {"command": command, "rows": [asdict(r) for r in rows],
               "skipped": [{"graph": g, "reason": why} for g, why in skipped]}
    from gnn_cml.engine.checkpoint import write_json  # strict JSON (NaN -> null), written atomically

    write_json(out / "gamma.json", payload)
    lines = ["# CML gamma sweep (test accuracy, %)", "", f"Command: `{command}`", "",
             "gamma = 0 is the base learner (CML off). Every gamma shares the seeds and fixed test tasks of "
             "gamma = 0, so Δ is paired run by run: mean Δ ± paired-t 95% CI (df = runs − 1) and the two-sided "
             "Wilcoxon signed-rank p-value. Accuracy: mean ± Student-t 95% CI over runs. One class split "
             "(seed given in the command; 1234 is the paper's).", "",
             "| graph | setting | method | gamma | runs | accuracy | Δ vs gamma 0 ± paired CI | Wilcoxon p | flags |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "(reference)" if r.gamma == 0 else _signed(r.delta, r.delta_ci95)
        lines.append(f"| {r.graph} | {r.setting} | {r.method} | {r.gamma:g} | {r.runs} | "
                     f"{_fmt(r.mean)} ± {_fmt(r.ci95)} | {delta} | {'-' if r.gamma == 0 else _p(r.wilcoxon_p)} | "
                     f"{', '.join(f for f in r.flags if r.gamma != 0)} |")
    if skipped:
        lines += ["", "Skipped graphs:", ""] + [f"- {g}: {why}" for g, why in skipped]
    (out / "gamma.md").write_text("\n".join(lines) + "\n")
    paths = [out / "gamma.md", out / "gamma.csv", out / "gamma.json"]
    if rows:
        paths.append(plot(rows, out / "gamma.png"))
    return paths


def plot(rows: List[GammaRow], path: Path) -> Path:
    """Per graph: accuracy vs gamma (top) and paired Δ vs gamma = 0 with its CI (bottom), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = list(dict.fromkeys((r.graph, r.setting) for r in rows))
    fig, axes = plt.subplots(2, len(graphs), figsize=(4.5 * len(graphs), 6), squeeze=False, sharex=True)
    for j, (graph, setting) in enumerate(graphs):
        top, bottom = axes[0][j], axes[1][j]
        for k, method in enumerate(dict.fromkeys(r.method for r in rows)):
            got = sorted((r for r in rows if r.graph == graph and r.method == method), key=lambda r: r.gamma)
            if not got:
                continue
            xs = [i + 0.08 * (k - 0.5) for i in range(len(got))]  # categorical gamma axis (0 cannot be logged)
            top.errorbar(xs, [r.mean for r in got], yerr=[r.ci95 or 0 for r in got], fmt="o-", capsize=3, label=method)
            d = [r.delta if r.delta is not None else float("nan") for r in got]
            lo = [(r.delta - r.delta_low) if r.delta_low is not None else 0 for r in got]
            hi = [(r.delta_high - r.delta) if r.delta_high is not None else 0 for r in got]
            bottom.errorbar(xs, d, yerr=[lo, hi], fmt="o-", capsize=3, label=method)
            labels = [f"{r.gamma:g}" for r in got]
        bottom.axhline(0, color="grey", lw=1, ls="--")
        bottom.set_xticks(range(len(labels)))
        bottom.set_xticklabels(labels)
        bottom.set_xlabel("gamma")
        top.set_title(f"{graph} {setting}", fontsize=10)
        top.set_ylabel("test accuracy (%) ± 95% CI")
        bottom.set_ylabel("Δ vs gamma 0 (points) ± paired CI")
        top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(p) -> None:
    p.add_argument("--graphs", help=f"comma-separated graphs (default {','.join(GRAPHS)})")
    p.add_argument("--methods", help=f"comma-separated base learners (default {','.join(METHODS)})")
    p.add_argument("--gammas", help=f"comma-separated gammas, must include 0 (default {','.join(f'{g:g}' for g in GAMMAS)})")
    p.add_argument("--runs", type=int, help=f"paired runs per point (default {DEFAULT_RUNS})")
    p.add_argument("--ways", type=int, default=2, help="N classes per task (default: 2)")
    p.add_argument("--shots", type=int, default=5, help="K support nodes per class (default: 5)")
    p.add_argument("--split-seed", type=int, default=PAPER_SPLIT_SEED,
                   help=f"class split seed (default: {PAPER_SPLIT_SEED}, the paper's)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: citeseer, gammas 0,0.2,1, 3 runs, a few episodes (flags override; default: off)")
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
                              progress=not args.no_progress)
    command = ("gnn-cml reproduce gamma " + " ".join(sys.argv[3:])).strip() if len(sys.argv) > 2 \
        else "gnn-cml reproduce gamma"
    paths = write_reports(rows, skipped, args.out, command)
    print((Path(args.out) / "gamma.md").read_text())
    for path in paths:
        print(path)
    for g, why in skipped:
        print(f"skipped {g}: {why}")
    return 0
