"""Paper Table 3 (few-shot node classification): every method ± CML on the same tasks, paired
comparisons (Δ = CML − base per run), over one or several class splits, beside the paper."""
from __future__ import annotations

import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from gnn_cml import methods as registry
from gnn_cml.config import EXECUTION_KEYS, resolve
from gnn_cml.data import default_split, graph_info, load_graph
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.report.paired import contains, finite, link_pair, load_results, nested_stats, pair_runs, t_interval
from gnn_cml.sampling import ClassSplit, distinct_split_seeds

# (graph, ways, shots) cells of Table 3, plus Cora as an extra.
SETTINGS: Dict[str, List[Tuple[int, int]]] = {
    "citeseer": [(2, 1), (2, 5)],
    "amazon_computers": [(2, 1), (2, 5)],
    "corafull": [(5, 1), (5, 5)],
    "cora": [(2, 1), (2, 5)],
}
BASE_METHODS = registry.table3_methods()
METHODS: List[Tuple[str, bool]] = [(m, cml) for m in BASE_METHODS for cml in (False, True)]
# Named variants of non-meta baselines (declared by their methods as `arms`), on the same fixed test tasks as the meta-learners (unpaired arms: they share no weights with them).
BASELINES = tuple(registry.table3_arms())


def method_overrides(arm: str, quick: bool = False) -> Dict:
    """Config overrides of a Table 3 baseline arm name (the method's declared overrides)."""
    method, overrides = registry.table3_arms()[arm]
    return {"method": method.name, **overrides, **(method.quick if quick else {})}


PAPER = {}  # mean test accuracy (%) from the paper's Table 3: (graph, shots) -> {arm label: accuracy}
for _m in (registry.get(name) for name in BASE_METHODS):
    for _cell, (_base, _cml) in _m.paper_table3.items():
        PAPER.setdefault(_cell, {}).update({_m.name: _base, f"{_m.name}+cml": _cml})
PAPER_SPLIT_SEED = 1234
# Training budget of --quick (a smoke run); runs default to 3 there, the fewest with an unflagged CI.
QUICK = {"episodes": 20, "val_every": 10, "val_tasks": 5, "test_tasks": 20, "inner_steps": 5}
QUICK_RUNS = 3
DEFAULT_RUNS = 20
# --study: the full grid of issue 11 (20 paired runs per cell; 5-shot cells over 5 class splits).
STUDY = {"graphs": "citeseer,cora", "methods": ",".join(BASE_METHODS), "shots": None, "runs": 20,
         "split_seeds": {1: "1", 5: "5"}, "dagger": True}


def label(method: str, cml: bool) -> str:
    return f"{method}+cml" if cml else method


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


def parse_split_seeds(spec: Union[str, int], classes: int, counts: Sequence[int]) -> List[int]:
    """``--split-seeds``: an int S -> the first S seeds with distinct test classes from 1234 (the
    paper's split first); a comma list (``1234,1240`` or ``1300,``) -> those seeds, which must give
    pairwise different test-class sets."""
    text = str(spec).strip()
    require(text, "--split-seeds is empty: give a count like 5 or a list like 1234,1240")
    try:
        if "," not in text:
            return distinct_split_seeds(classes, counts, int(text), first=PAPER_SPLIT_SEED)
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise GnnCmlError(f"--split-seeds must be a count like 5 or a comma list of seeds like 1234,1240, "
                          f"got {text!r}") from None
    require(seeds and all(s >= 0 for s in seeds), f"--split-seeds needs non-negative seeds, got {text!r}")
    seen: Dict[frozenset, int] = {}
    for s in seeds:
        test = frozenset(ClassSplit.from_counts(classes, counts, s).test)
        require(test not in seen, f"split seeds {seen.get(test)} and {s} give the same test classes "
                                  f"{sorted(test)}: drop one, or pass a count to get distinct splits")
        seen[test] = s
    return seeds


def run_arm(cfg, run_dir: Path, task_file: Path, resume: bool, overwrite: bool, progress: bool) -> Dict:
    """Train (or, with ``resume``, reuse) one arm on the shared test tasks; returns its results.

    A finished arm is reused only when its saved config equals ``cfg`` (execution settings such as the data root aside); with more
    ``runs`` it is extended, and any other change is refused by ``run_experiment``.
    """
    from gnn_cml.experiments.graph import run_experiment

    done = Path(run_dir) / "results.json"
    if resume and done.exists():
        saved = load_results(done)
        mine = cfg.to_dict()
        defaults = type(cfg)().to_dict()  # keys added after the arm was written hold their defaults
        if all(saved.get("config", {}).get(k, defaults.get(k)) == v for k, v in mine.items() if k not in EXECUTION_KEYS):
            return saved
    return run_experiment(cfg, run_dir, resume=resume, overwrite=overwrite, task_file=task_file, progress=progress)


def shared_task_file(cfg, path: Path, overwrite: bool = False) -> Path:
    """The fixed test tasks of ``cfg``'s graph, split and seed, written once and shared by all arms.

    An existing file from other settings (e.g. a ``--quick`` run's 20 tasks) is replaced with
    ``overwrite`` and refused otherwise.
    """
    from gnn_cml.experiments.graph import GraphTask
    from gnn_cml.sampling import TaskSet

    if path.exists():
        tasks = TaskSet.load(path)
        split = default_split(load_graph(cfg.graph, cfg.data_root), cfg.split_seed, cfg.split, cfg.split_rule)
        want = {"seed": cfg.seed, "ways": cfg.ways, "shots": cfg.shots, "queries": cfg.test_queries,
                "split": split.to_dict()}
        differ = [k for k, v in want.items() if tasks.meta.get(k) != v]
        differ += ["number of tasks"] if len(tasks) != cfg.test_tasks else []
        if not differ:
            return path
        require(overwrite, f"{path} holds test tasks for other settings ({', '.join(differ)} differ): "
                           f"pass --overwrite to redo this cell, or pick another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    GraphTask.build(cfg).test_tasks().save(path)
    return path


def dagger_arm(cml_dir: Path, base: Dict, resume: bool) -> Dict:
    """CML-dagger accuracies of a finished CML run, from its saved models (no retraining), paired with
    ``base``; cached in ``dagger.json`` of the CML run."""
    from gnn_cml.engine.checkpoint import write_json
    from gnn_cml.experiments.graph import evaluate_run

    path = Path(cml_dir) / "dagger.json"
    if resume and path.exists():
        saved = load_results(path)
        if saved.get("runs") == load_results(cml_dir).get("runs"):  # same finished CML runs
            return saved
    cml = load_results(cml_dir)
    got = evaluate_run(cml_dir, co_learner=True)
    accs = got["test_accuracy"]["runs"]
    dagger = {k: cml[k] for k in ("graph", "method", "ways", "shots", "split", "config", "runs",
                                  "test_tasks_sha256") if k in cml}
    dagger.update(co_learner=True, test_accuracy={**t_interval(accs), "runs": accs, "unit": "percent"},
                  note="CML-dagger: the CML run's saved models, predicting with the co-learner "
                       "(gnn-cml evaluate --co-learner)", paired_with="..")
    stats = pair_runs(base, dagger)
    dagger["paired"] = {k: stats[k] for k in ("n", "differences", "delta", "delta_ci95", "delta_low", "delta_high",
                                              "t_p", "wilcoxon_p", "flags")}
    write_json(path, dagger)
    return dagger


def run_table3(graphs: Sequence[str], out: Path, runs: int = DEFAULT_RUNS, quick: bool = False,
               resume: bool = False, overwrite: bool = False, data_root: Optional[str] = None, seed: int = 0,
               progress: bool = True, methods: Sequence[str] = BASE_METHODS, shots: Optional[Sequence[int]] = None,
               split_seeds: Union[str, int, Dict[int, Union[str, int]]] = 1, dagger: bool = False,
               baselines: Sequence[str] = ()) -> Report:
    """Run the Table 3 grid on the graphs available locally.

    Every (graph, setting) cell is repeated over the class splits named by ``split_seeds`` (a
    ``--split-seeds`` value, or a dict shots -> value); each split has its own fixed test tasks,
    shared by every method of that split. Base and +CML arms share ``seed``, so their runs are
    paired; ``dagger`` adds CML-dagger arms evaluated from the CML runs' saved models.
    Layout: ``out/<graph>/<W>w<S>s/split_<seed>/{test_tasks.npz, <method>[+cml]/}``.
    """
    out = Path(out)
    names = [graph_info(g).name for g in graphs]
    for name in names:
        require(name in SETTINGS, f"graph '{name}' is not part of Table 3: use {', '.join(SETTINGS)}")
    given = {}  # arm name -> the --methods entry (a registered name or a plugin's import path)
    for m in methods:
        try:
            given[registry.get(m).name] = m
        except GnnCmlError as exc:
            raise GnnCmlError(f"unknown Table 3 method '{m}': use {', '.join(BASE_METHODS)}, another of "
                              f"{', '.join(registry.available())} or a plugin's import path ({exc})") from None
    methods = list(given)
    for b in baselines:
        require(b in BASELINES, f"unknown Table 3 baseline '{b}': use {', '.join(BASELINES)}")
    report = Report([], [], [], {})
    cells = []  # every cell's split seeds first, so a bad --split-seeds fails before anything is trained
    for name in names:
        try:  # downloads when online; offline without files -> skipped, with the loader's reason
            data = load_graph(name, data_root)
        except GnnCmlError as exc:
            report.skipped.append((name, str(exc)))
            continue
        for ways, k in SETTINGS[name]:
            if shots is not None and k not in shots:
                continue
            spec = split_seeds.get(k, 1) if isinstance(split_seeds, dict) else split_seeds
            seeds = parse_split_seeds(spec, int(data.num_classes), graph_info(name).split)
            report.split_seeds[f"{name} {ways}w{k}s"] = seeds
            cells.append((name, ways, k, seeds))
    for name, ways, k, seeds in cells:
        _run_cell(report, name, ways, k, seeds, out / name / f"{ways}w{k}s", runs, quick, resume, overwrite,
                  data_root, seed, progress, methods, dagger, baselines, given)
    return report


def _run_cell(report: Report, name, ways, shots, seeds, cell: Path, runs, quick, resume, overwrite, data_root,
              seed, progress, methods, dagger, baselines=(), given=None) -> None:
    given = given or {}
    with_cml = {m for m in methods if registry.get(given.get(m, m)).cml}
    setting = f"{ways}-way {shots}-shot"
    paper = PAPER.get((name, shots), {})
    accs: Dict[str, Dict[int, List[float]]] = {}
    for split_seed in seeds:
        where = cell / f"split_{split_seed}"
        on_paper = paper if split_seed == PAPER_SPLIT_SEED else {}  # the paper's numbers are on its split
        for method in methods:
            results = {}
            for cml in (False, True) if method in with_cml else (False,):
                overrides = dict(graph=name, method=given.get(method, method), cml=cml, ways=ways, shots=shots, runs=runs, seed=seed,
                                 split_seed=split_seed, data_root=data_root, **(QUICK if quick else {}))
                cfg = resolve(overrides)
                task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
                run_dir = where / label(method, cml)
                res = run_arm(cfg, run_dir, task_file, resume, overwrite, progress)
                results[cml] = res
                acc = res["test_accuracy"]["runs"]
                accs.setdefault(label(method, cml), {})[split_seed] = acc
                t = t_interval(acc)
                report.rows.append(Row(name, setting, label(method, cml), t["mean"], t["ci95"], len(acc),
                                       on_paper.get(label(method, cml)), finite(res.get("episodes_per_s")),
                                       finite(res.get("wall_time_s")), str(split_seed)))
            if method not in with_cml:
                continue
            link_pair(where / method, where / label(method, True))  # writes paired_with into the CML run
            if dagger:
                d = dagger_arm(where / label(method, True), results[False], resume)
                accs.setdefault(f"{method}+dagger", {})[split_seed] = d["test_accuracy"]["runs"]
                t = t_interval(d["test_accuracy"]["runs"])
                report.rows.append(Row(name, setting, f"{method}+dagger", t["mean"], t["ci95"],
                                       len(d["test_accuracy"]["runs"]), None, None, None, str(split_seed)))
        for baseline in baselines:  # unpaired arms on the same fixed test tasks
            overrides = dict(graph=name, ways=ways, shots=shots, runs=runs, seed=seed, split_seed=split_seed,
                             data_root=data_root, **(QUICK if quick else {}), **method_overrides(baseline, quick))
            # --quick's inner-loop budget does not apply to a method without an inner loop (it keeps 0 steps)
            adapts = registry.get(overrides["method"]).adapts
            cfg = resolve({k: v for k, v in overrides.items() if adapts or k != "inner_steps"})
            task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
            res = run_arm(cfg, where / baseline, task_file, resume, overwrite, progress)
            acc = res["test_accuracy"]["runs"]
            accs.setdefault(baseline, {})[split_seed] = acc
            t = t_interval(acc)
            report.rows.append(Row(name, setting, baseline, t["mean"], t["ci95"], len(acc), None, None,
                                   finite(res.get("wall_time_s")), str(split_seed)))
    for method in methods:
        for arm in (("cml", "dagger") if dagger else ("cml",)) if method in with_cml else ():
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
    for lab in list(baselines) if len(seeds) > 1 else []:
        t = t_interval([t_interval(accs[lab][s])["mean"] for s in seeds])
        report.rows.append(Row(name, setting, lab, t["mean"], t["ci95"], len(seeds), None, None, None, "pooled"))
    for method in methods:
        if len(seeds) > 1:
            arms = [label(method, True)] + ([f"{method}+dagger"] if dagger else []) if method in with_cml else []
            for lab in [method] + arms:
                t = t_interval([t_interval(accs[lab][s])["mean"] for s in seeds])
                report.rows.append(Row(name, setting, lab, t["mean"], t["ci95"], len(seeds),
                                       paper.get(lab), None, None, "pooled"))


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def _pm(mean: Optional[float], ci: Optional[float]) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {_fmt(ci)}"


def _signed(mean: Optional[float], ci: Optional[float]) -> str:
    return "-" if mean is None else f"{round(mean, 2) + 0.0:+.2f} ± {_fmt(ci)}"  # + 0.0: no "-0.00"


def _p(p: Optional[float]) -> str:
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _yes_no(v: Optional[bool]) -> str:
    return "-" if v is None else ("yes" if v else "no")


def pair_table(pairs: List[PairRow]) -> List[str]:
    """The paired comparison as markdown lines."""
    lines = ["| graph | setting | split | method | runs | base | arm | Δ ± paired CI | Wilcoxon p | paper Δ | "
             "paper's Δ inside our CI? | pooled-runs Δ ± CI | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in pairs:
        pooled = _signed(r.pooled_runs_delta, r.pooled_runs_ci95) if r.split == "pooled" else ""
        runs = f"{r.n} splits" if r.split == "pooled" else str(r.n)
        lines.append(f"| {r.graph} | {r.setting} | {r.split} | {r.arm_label} | {runs} | {_pm(r.base_mean, r.base_ci95)} | "
                     f"{_pm(r.arm_mean, r.arm_ci95)} | {_signed(r.delta, r.delta_ci95)} | {_p(r.wilcoxon_p)} | "
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
                        "splits" if r.split == "pooled" else "runs", _fmt(r.base_mean), _fmt(r.base_ci95),
                        _fmt(r.arm_mean), _fmt(r.arm_ci95), _fmt(r.delta), _fmt(r.delta_ci95), _fmt(r.delta_low),
                        _fmt(r.delta_high), _p(r.wilcoxon_p), _fmt(r.paper_delta), _yes_no(r.paper_inside),
                        _fmt(r.pooled_runs_delta), _fmt(r.pooled_runs_ci95), _p(r.pooled_runs_wilcoxon_p),
                        ";".join(r.flags), r.interval])
    with open(out / "table3_arms.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["graph", "setting", "split", "method", "ours_mean", "ours_ci95", "runs", "paper",
                    "paper_in_our_ci", "episodes_per_s", "wall_time_s"])
        for r in rows:
            w.writerow([r.graph, r.setting, r.split, r.method, _fmt(r.mean), _fmt(r.ci95), r.runs, _fmt(r.paper),
                        r.paper_in_ci, _fmt(r.episodes_per_s, 1), _fmt(r.wall_time_s, 1)])
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
        lines.append(f"| {r.graph} | {r.setting} | {r.split} | {r.method} | {_pm(r.mean, r.ci95)} | {_fmt(r.paper)} | "
                     f"{r.paper_in_ci} | {r.runs}{' splits' if r.split == 'pooled' else ''} | "
                     f"{_fmt(r.episodes_per_s, 1)} |")
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
        paths.append(forest_plot(pairs, out / "table3_forest.png"))
    return paths


def forest_rows(pairs: List[PairRow]) -> List[PairRow]:
    """One row per cell (graph, setting, method, arm): the pooled row if the cell has several splits."""
    pooled = {(r.graph, r.setting, r.method, r.arm) for r in pairs if r.split == "pooled"}
    return [r for r in pairs if r.split == "pooled" or (r.graph, r.setting, r.method, r.arm) not in pooled]


def forest_plot(pairs: List[PairRow], path: Path) -> Path:
    """Our Δ with its 95% CI per cell, the paper's Δ as a marker, a zero line."""
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
    fig.suptitle("Does CML help? Paired differences per cell\n(per split: paired-t CI over runs; "
                 "several splits: t-CI over the per-split mean Δ)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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
    palette = plt.get_cmap("tab20").colors  # pairs: dark (with CML) and light (base) of one hue
    bases = list(dict.fromkeys(m.replace("+cml", "") for m in methods))
    shown: List[float] = []
    paper_labelled = False
    for i, m in enumerate(methods):
        got = {(r.graph, r.setting): r for r in rows if r.method == m}
        hue, cml = bases.index(m.replace("+cml", "")), m.endswith("+cml")
        color = palette[(2 * hue + (0 if cml else 1)) % len(palette)]
        pos = x - 0.4 + width * (i + 0.5)
        means = np.array([got[c].mean if c in got and got[c].mean is not None else np.nan for c in cells], float)
        errs = np.array([got[c].ci95 if c in got and got[c].ci95 is not None and got[c].ci95 == got[c].ci95
                         else 0.0 for c in cells], float)
        ax.errorbar(pos, means, yerr=errs, fmt="s" if cml else "o", ms=6, color=color, ecolor=color, elinewidth=1.6,
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
        title += "\nQUICK (SMOKE) RUN: few episodes, 3 runs, not comparable to the paper"
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
                   help=f"issue 11's full study: {STUDY['graphs']}; {STUDY['methods']} ± CML and CML-dagger; 20 runs; "
                        "1-shot cells on the paper's split, 5-shot cells over 5 split seeds (flags override; default: off)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run of a minute or so per graph ({QUICK_RUNS} runs, few episodes; default: off)")
    add_output_arguments(p, "results/table3", "cells")


def add_output_arguments(p, out: str, what: str) -> None:
    """Options every ``reproduce`` report shares: output folder, seed, data root, resume/overwrite."""
    p.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    p.add_argument("--seed", type=int, default=0, help="seed of the runs and test tasks (default: 0)")
    p.add_argument("--root", dest="data_root", help="data root (default: $GNN_CML_DATA, else ./data)")
    p.add_argument("--resume", action="store_true", help=f"reuse finished {what}, continue interrupted ones "
                                                         "(default: off)")
    p.add_argument("--overwrite", action="store_true", help=f"replace existing {what} (default: off)")
    p.add_argument("--no-progress", action="store_true", help="print no progress on stderr (default: progress on)")


def _csv(text: Optional[str], what: str, lower: bool = True) -> Optional[List[str]]:
    if text is None:
        return None
    items = [t.strip().lower() if lower else t.strip() for t in text.split(",") if t.strip()]
    require(items, f"--{what} is empty: name at least one")
    return items


def run(args) -> int:
    study = STUDY if args.study else {}
    graphs = _csv(args.graphs or study.get("graphs") or "citeseer,amazon_computers,corafull,cora", "graphs")
    methods = [registry.normalise(m) for m in
               _csv(args.methods or study.get("methods") or ",".join(BASE_METHODS), "methods", lower=False)]
    shots = None
    if args.shots:
        try:
            shots = [int(s) for s in _csv(args.shots, "shots")]
        except ValueError:
            raise GnnCmlError(f"--shots must be a comma list of integers like 1,5, got {args.shots!r}") from None
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else study.get("runs", DEFAULT_RUNS))
    require(runs > 0, f"--runs must be positive, got {runs}")
    split_seeds = args.split_seeds if args.split_seeds is not None else study.get("split_seeds", 1)
    dagger = bool(args.dagger if args.dagger is not None else study.get("dagger", False))
    report = run_table3(graphs, args.out, runs, args.quick, args.resume, args.overwrite, args.data_root, args.seed,
                        progress=not args.no_progress, methods=methods, shots=shots, split_seeds=split_seeds,
                        dagger=dagger, baselines=_csv(args.baselines, "baselines") if args.baselines else ())
    command = ("gnn-cml reproduce table3 " + " ".join(sys.argv[3:])).strip() if len(sys.argv) > 2 \
        else "gnn-cml reproduce table3"
    paths = write_reports(report, args.out, command, args.quick)
    print((Path(args.out) / "table3.md").read_text())
    for path in paths:
        print(path)
    for g, why in report.skipped:
        print(f"skipped {g}: {why}")
    return 0
