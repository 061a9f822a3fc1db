"""Paper Table 3 (few-shot node classification): run every method on the same tasks, report beside the paper."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gnn_cml.config import resolve
from gnn_cml.data import graph_info, load_graph
from gnn_cml.errors import GnnCmlError, require

# (graph, ways, shots) cells of Table 3, plus Cora as an extra.
SETTINGS: Dict[str, List[Tuple[int, int]]] = {
    "citeseer": [(2, 1), (2, 5)],
    "amazon_computers": [(2, 1), (2, 5)],
    "corafull": [(5, 1), (5, 5)],
    "cora": [(2, 1), (2, 5)],
}
METHODS: List[Tuple[str, bool]] = [("gmeta", False), ("gmeta", True), ("ammgnn", False), ("ammgnn", True),
                                   ("maml", False), ("maml", True), ("tlp-dgi", False), ("tlp-supervised", False)]
PAPER = {  # mean test accuracy (%) from the paper's Table 3
    ("citeseer", 1): {"gmeta": 55.15, "gmeta+cml": 61.17, "ammgnn": 54.53, "ammgnn+cml": 61.13},
    ("citeseer", 5): {"gmeta": 64.53, "gmeta+cml": 76.07, "ammgnn": 62.93, "ammgnn+cml": 66.88},
    ("amazon_computers", 1): {"gmeta": 70.57, "gmeta+cml": 72.26, "ammgnn": 74.29, "ammgnn+cml": 78.91},
    ("amazon_computers", 5): {"gmeta": 85.96, "gmeta+cml": 87.10, "ammgnn": 80.10, "ammgnn+cml": 86.68},
    ("corafull", 1): {"gmeta": 60.44, "gmeta+cml": 60.49, "ammgnn": 58.77, "ammgnn+cml": 63.27},
    ("corafull", 5): {"gmeta": 75.84, "gmeta+cml": 76.02, "ammgnn": 75.61, "ammgnn+cml": 76.19},
}
QUICK = {"runs": 1, "episodes": 20, "val_every": 10, "val_tasks": 5, "test_tasks": 20, "inner_steps": 5}
# Non-meta baselines, named tlp-<pretraining>: linear probes on a pretrained GCN (gnn_cml/meta/tlp.py).
QUICK_TLP = {"pretrain_epochs": 5}


def method_overrides(method: str, quick: bool = False) -> Dict:
    """Config overrides of a METHODS name: 'tlp-dgi' is --method tlp --pretrain dgi."""
    if not method.startswith("tlp-"):
        return {"method": method}
    return {"method": "tlp", "pretrain": method[4:], **(QUICK_TLP if quick else {})}


def label(method: str, cml: bool) -> str:
    return f"{method}+cml" if cml else method


@dataclass
class Row:
    graph: str
    setting: str
    method: str
    mean: Optional[float]
    ci95: Optional[float]
    runs: int
    paper: Optional[float]
    episodes_per_s: Optional[float]
    wall_time_s: Optional[float]

    @property
    def paper_in_ci(self) -> str:
        if self.paper is None or self.mean is None or self.ci95 is None or self.ci95 != self.ci95:
            return "-"
        return "yes" if abs(self.paper - self.mean) <= self.ci95 else "no"


def run_table3(graphs: Sequence[str], out: Path, runs: int = 5, quick: bool = False, resume: bool = False,
               overwrite: bool = False, data_root: Optional[str] = None, seed: int = 0,
               progress: bool = True) -> Tuple[List[Row], List[Tuple[str, str]]]:
    """Run the Table 3 grid on the graphs available locally; returns rows and skipped graphs."""
    from gnn_cml.experiment import GraphTask, run_experiment

    out = Path(out)
    names = [graph_info(g).name for g in graphs]
    for name in names:
        require(name in SETTINGS, f"graph '{name}' is not part of Table 3: use {', '.join(SETTINGS)}")
    rows: List[Row] = []
    skipped: List[Tuple[str, str]] = []
    for name in names:
        try:  # downloads when online; offline without files -> skipped, with the loader's reason
            load_graph(name, data_root)
        except GnnCmlError as exc:
            skipped.append((name, str(exc)))
            continue
        for ways, shots in SETTINGS[name]:
            cell = out / name / f"{ways}w{shots}s"
            cell.mkdir(parents=True, exist_ok=True)
            task_file = cell / "test_tasks.npz"
            for method, cml in METHODS:
                overrides = dict(graph=name, cml=cml, ways=ways, shots=shots, runs=runs,
                                 seed=seed, data_root=data_root)
                if quick:
                    overrides.update(QUICK, runs=min(runs, QUICK["runs"]))
                overrides.update(method_overrides(method, quick))
                cfg = resolve(overrides)
                if not task_file.exists():
                    GraphTask.build(cfg).test_tasks().save(task_file)
                run_dir = cell / label(method, cml)
                done = run_dir / "results.json"
                if resume and done.exists():
                    result = json.loads(done.read_text())
                else:
                    result = run_experiment(cfg, run_dir, resume=resume, overwrite=overwrite,
                                            task_file=task_file, progress=progress)
                acc = result["test_accuracy"]
                rows.append(Row(name, f"{ways}-way {shots}-shot", label(method, cml), acc["mean"], acc["ci95"],
                                len(acc["runs"]), PAPER.get((name, shots), {}).get(label(method, cml)),
                                result.get("episodes_per_s"), result.get("wall_time_s")))
    return rows, skipped


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def write_reports(rows: List[Row], skipped: List[Tuple[str, str]], out: Path, command: str) -> List[Path]:
    """Write table3.md, table3.csv and table3.png to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table3.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["graph", "setting", "method", "ours_mean", "ours_ci95", "runs", "paper", "paper_in_our_ci",
                    "episodes_per_s", "wall_time_s"])
        for r in rows:
            w.writerow([r.graph, r.setting, r.method, _fmt(r.mean), _fmt(r.ci95), r.runs, _fmt(r.paper),
                        r.paper_in_ci, _fmt(r.episodes_per_s, 1), _fmt(r.wall_time_s, 1)])
    lines = ["# Table 3: few-shot node classification (test accuracy, %)", "",
             f"Command: `{command}`", "",
             "Ours: mean over runs of the per-run accuracy on the same fixed test tasks for every method, "
             "± the half-width of a Student-t 95% CI over runs. The paper reports means over 5 runs "
             "(its reference code re-draws test tasks at each validation gain).", "",
             "| graph | setting | method | ours | paper | paper in our CI | runs | episodes/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.graph} | {r.setting} | {r.method} | {_fmt(r.mean)} ± {_fmt(r.ci95)} | {_fmt(r.paper)} | "
                     f"{r.paper_in_ci} | {r.runs} | {_fmt(r.episodes_per_s, 1)} |")
    if skipped:
        lines += ["", "Skipped graphs:", ""] + [f"- {g}: {why}" for g, why in skipped]
    (out / "table3.md").write_text("\n".join(lines) + "\n")
    paths = [out / "table3.md", out / "table3.csv"]
    if rows:
        paths.append(_plot(rows, out / "table3.png"))
    return paths


def _plot(rows: List[Row], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = list(dict.fromkeys((r.graph, r.setting) for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(cells)), 4))
    x = np.arange(len(cells))
    for i, m in enumerate(methods):
        got = {(r.graph, r.setting): r for r in rows if r.method == m}
        means = [got[c].mean if c in got and got[c].mean is not None else np.nan for c in cells]
        errs = [got[c].ci95 if c in got and got[c].ci95 is not None and got[c].ci95 == got[c].ci95 else 0
                for c in cells]
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width, yerr=errs, capsize=2, label=m)
        papers = [got[c].paper if c in got and got[c].paper is not None else np.nan for c in cells]
        ax.scatter(pos, papers, marker="_", s=120, color="black", zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g}\n{s}" for g, s in cells], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Table 3 reproduction (bars: ours ± 95% CI; black ticks: paper)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(p) -> None:
    p.add_argument("--graphs", default="citeseer,amazon_computers,corafull,cora",
                   help="comma-separated Table 3 graphs (unavailable ones are reported as skipped)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (1 run, few episodes)")
    p.add_argument("--out", type=Path, default=Path("results/table3"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", dest="data_root", help="data root (default $GNN_CML_DATA or ./data)")
    p.add_argument("--resume", action="store_true", help="reuse finished cells, continue interrupted ones")
    p.add_argument("--overwrite", action="store_true", help="replace existing cells")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import sys

    require(args.runs > 0, f"--runs must be positive, got {args.runs}")
    graphs = [g for g in args.graphs.split(",") if g.strip()]
    require(graphs, "--graphs is empty: name at least one graph, e.g. --graphs citeseer")
    rows, skipped = run_table3(graphs, args.out, args.runs, args.quick, args.resume, args.overwrite,
                               args.data_root, args.seed, progress=not args.no_progress)
    command = "gnn-cml reproduce table3 " + " ".join(sys.argv[3:]) if len(sys.argv) > 2 else "gnn-cml reproduce table3"
    for path in write_reports(rows, skipped, args.out, command.strip()):
        print(path)
    for g, why in skipped:
        print(f"skipped {g}: {why}")
    return 0
