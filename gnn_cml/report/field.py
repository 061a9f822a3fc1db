"""The field's table (``gnn-cml reproduce field``): every graph few-shot learner, with and without CML,
beside linear probes on self-supervised embeddings (TLP-DGI, TLP-GRACE), on the same fixed test tasks,
over several class splits, in the transductive or the inductive setting.

Two questions, one table: which learners beat the best linear probe, and does CML help any of them?
Per cell (setting, graph, N-way K-shot) and arm: mean ± 95% CI, rank, paired Δ against the cell's best
probe and, for ``+cml`` arms, paired Δ against the base learner. With both settings in one ``--out``,
also the inductive − transductive Δ of every arm run in both, and whether the ranking changes.

Intervals: with several class splits the split is the unit of replication: an arm's mean is the mean
of its per-split means ± a Student-t CI over splits (df = splits − 1), and a paired Δ is the mean of the
per-split mean differences ± a t-CI over splits (:func:`gnn_cml.experiments.paired.nested_stats`,
``between_splits``). Within a split, arms are paired by run: run r of every arm has the same seed and all
arms answer the same fixed test tasks (probes share no weights with the learners; the pairing removes the
split's and the test tasks' difficulty, not a shared initialisation). With one split, the intervals are
over runs (paired-t for Δ).

Layout: ``out/<setting>/`` is a Table 3 grid (:func:`gnn_cml.experiments.grid.run_table3_grid`; its own
``table3.*`` reports included) plus ``field_spec.json`` (what was run there, so a later call with the
other setting reports both); ``out/field.{md,csv,json}``, ``out/field_<setting>.png`` and, with both
settings, ``out/inductive.{md,csv}`` and ``out/inductive.png``.
"""
from __future__ import annotations

import csv
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gnn_cml import methods as registry
from gnn_cml.engine.metrics import fmt_mean_ci, fmt_number, fmt_p
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.experiments.executor import executor_from_args
from gnn_cml.experiments.grid import BASELINES, Grid, run_table3_grid
from gnn_cml.experiments.paired import load_results, nested_stats, t_interval
from gnn_cml.report.table3 import (QUICK_BANNER, QUICK_RUNS, SETTING_CHOICES, csv_list, add_output_arguments,
                                   add_setting_argument, method_colour, table3_report, write_reports)

# Every registered learner (methods with named baseline arms take part as those arms), and the probes.
FIELD_METHODS = registry.field_methods()
FIELD_BASELINES = registry.field_arms()
FIELD_GRAPHS = ("citeseer", "cora")
DEFAULT_RUNS = 20
DEFAULT_SPLITS = 5
SPEC = "field_spec.json"


@dataclass
class FieldRow:
    """One arm in one cell (setting, graph, N-way K-shot), over the cell's class splits."""

    setting: str
    graph: str
    ways: int
    shots: int
    arm: str  # <method>, <method>+cml or a probe's arm name
    method: str
    kind: str  # base, cml or probe
    splits: List[int]
    runs: int  # runs per split
    mean: Optional[float]
    ci95: Optional[float]
    split_means: List[float]
    rank: int = 0
    vs_probe: Optional[Dict] = None  # paired Δ = arm − the cell's best probe
    vs_base: Optional[Dict] = None  # +cml arms: paired Δ = arm − base learner
    wall_s: float = 0.0  # training + testing wall time, summed over splits

    @property
    def cell(self) -> Tuple[str, str, int, int]:
        return self.setting, self.graph, self.ways, self.shots

    @property
    def cell_name(self) -> str:
        return f"{self.graph} {self.ways}-way {self.shots}-shot"


@dataclass
class SettingRow:
    """An arm run in both settings: inductive − transductive, paired (same seeds, splits, test tasks)."""

    graph: str
    ways: int
    shots: int
    arm: str
    transductive: Optional[float]
    transductive_ci95: Optional[float]
    inductive: Optional[float]
    inductive_ci95: Optional[float]
    delta: Dict
    rank_transductive: int = 0
    rank_inductive: int = 0


@dataclass
class FieldReport:
    rows: List[FieldRow]
    settings: List[SettingRow] = field(default_factory=list)
    rank_change: Dict[str, Dict] = field(default_factory=dict)  # "graph WwSs" -> Kendall's tau, best arms
    specs: Dict[str, Dict] = field(default_factory=dict)  # setting -> field_spec.json
    split_seeds: Dict[str, List[int]] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


# --- statistics -------------------------------------------------------------------------------------
def _paired(base: Dict[int, List[float]], treated: Dict[int, List[float]]) -> Dict:
    """Δ = treated − base over the common splits: the between-splits interval with several splits, the
    paired-t interval over runs with one."""
    seeds = [s for s in base if s in treated]
    require(seeds, "two arms without a common class split cannot be paired")
    nested = nested_stats({s: (base[s], treated[s]) for s in seeds})
    st = nested["between_splits"] if len(seeds) > 1 else nested["per_split"][str(seeds[0])]
    out = {k: st[k] for k in ("n", "delta", "delta_ci95", "delta_low", "delta_high", "wilcoxon_p", "flags")}
    out["unit"] = "splits" if len(seeds) > 1 else "runs"
    if len(seeds) > 1:
        out["split_deltas"] = st["split_deltas"]
    return out


def _summary(per_split: Dict[int, List[float]]) -> Tuple[Optional[float], Optional[float], List[float]]:
    means = [t_interval(v)["mean"] for v in per_split.values()]
    t = t_interval(means if len(per_split) > 1 else next(iter(per_split.values())))
    return t["mean"], t["ci95"], means


def _ranks(values: Sequence[Optional[float]]) -> List[int]:
    """Competition ranks: 1 + the number of strictly higher values (ties share a rank)."""
    vals = [v if v is not None else float("-inf") for v in values]
    return [1 + sum(w > v for w in vals) for v in vals]


def field_rows(setting: str, grid: Grid) -> List[FieldRow]:
    """The rows of one setting's finished grid: every arm per cell, ranked, with its paired Δs."""
    rows: List[FieldRow] = []
    for cell in grid.cells:
        accs: Dict[str, Dict[int, List[float]]] = {}
        walls: Dict[str, float] = {}
        kinds: Dict[str, Tuple[str, str]] = {}
        for arm in cell.arms:
            if arm.kind == "dagger":
                continue
            accs.setdefault(arm.label, {})[arm.split_seed] = list(arm.results["test_accuracy"]["runs"])
            walls[arm.label] = walls.get(arm.label, 0.0) + float(arm.results.get("wall_time_s") or 0.0)
            kinds[arm.label] = (arm.method, "probe" if arm.kind == "baseline" else arm.kind)
        cell_rows = []
        for lab, per_split in accs.items():
            mean, ci, means = _summary(per_split)
            method, kind = kinds[lab]
            cell_rows.append(FieldRow(setting, cell.graph, cell.ways, cell.shots, lab, method, kind,
                                      sorted(per_split), min(len(v) for v in per_split.values()), mean, ci, means,
                                      wall_s=walls[lab]))
        for r, rank in zip(cell_rows, _ranks([r.mean for r in cell_rows])):
            r.rank = rank
        probes = [r for r in cell_rows if r.kind == "probe"]
        best = max(probes, key=lambda r: r.mean if r.mean is not None else float("-inf")) if probes else None
        for r in cell_rows:
            if best is not None and r is not best:
                r.vs_probe = dict(_paired(accs[best.arm], accs[r.arm]), probe=best.arm)
            if r.kind == "cml" and r.method in accs:
                r.vs_base = _paired(accs[r.method], accs[r.arm])
        rows += sorted(cell_rows, key=lambda r: (r.rank, r.arm))
    return rows


def setting_rows(grids: Dict[str, Grid]) -> Tuple[List[SettingRow], Dict[str, Dict]]:
    """Inductive − transductive per arm run in both settings (paired: the same seeds, class splits and
    fixed test tasks, checked), and the ranking of those arms in each setting."""
    from scipy.stats import kendalltau

    if not {"transductive", "inductive"} <= set(grids):
        return [], {}
    arms: Dict[str, Dict[Tuple, Dict]] = {}
    for setting, grid in grids.items():
        for cell in grid.cells:
            for arm in cell.arms:
                if arm.kind != "dagger":
                    arms.setdefault(setting, {})[(cell.graph, cell.ways, cell.shots, arm.label, arm.split_seed)] = \
                        arm.results
    rows: List[SettingRow] = []
    changes: Dict[str, Dict] = {}
    cells = list(dict.fromkeys(k[:3] for k in arms["transductive"] if k in arms["inductive"]))
    for graph, ways, shots in cells:
        labels = list(dict.fromkeys(k[3] for k in arms["transductive"] if k[:3] == (graph, ways, shots)
                                    and k in arms["inductive"]))
        cell_rows = []
        for lab in labels:
            per = {s: {} for s in ("transductive", "inductive")}
            for setting in per:
                for (g, w, k, a, seed), res in arms[setting].items():
                    if (g, w, k, a) == (graph, ways, shots, lab):
                        per[setting][seed] = res
            seeds = [s for s in per["transductive"] if s in per["inductive"]]
            for s in seeds:
                t, i = per["transductive"][s], per["inductive"][s]
                require(t.get("test_tasks_sha256") == i.get("test_tasks_sha256"),
                        f"{graph} {lab} split {s}: the two settings were tested on different test tasks: rerun "
                        f"both with the same --seed")
            acc = {st: {s: list(per[st][s]["test_accuracy"]["runs"]) for s in seeds} for st in per}
            n = min(min(len(v) for v in acc[st].values()) for st in acc)
            acc = {st: {s: v[:n] for s, v in a.items()} for st, a in acc.items()}  # the common runs
            mt, ct, _ = _summary(acc["transductive"])
            mi, ci, _ = _summary(acc["inductive"])
            cell_rows.append(SettingRow(graph, ways, shots, lab, mt, ct, mi, ci,
                                        _paired(acc["transductive"], acc["inductive"])))
        for r, a, b in zip(cell_rows, _ranks([r.transductive for r in cell_rows]),
                           _ranks([r.inductive for r in cell_rows])):
            r.rank_transductive, r.rank_inductive = a, b
        tau = kendalltau([r.transductive for r in cell_rows], [r.inductive for r in cell_rows]) \
            if len(cell_rows) > 1 else None
        best = {st: [r.arm for r in cell_rows if getattr(r, f"rank_{st}") == 1] for st in ("transductive", "inductive")}
        changes[f"{graph} {ways}w{shots}s"] = {
            "kendall_tau": None if tau is None or tau.statistic != tau.statistic else float(tau.statistic),
            "best_transductive": best["transductive"], "best_inductive": best["inductive"],
            "arms": len(cell_rows), "order_changed": any(r.rank_transductive != r.rank_inductive for r in cell_rows)}
        rows += sorted(cell_rows, key=lambda r: (r.rank_inductive, r.arm))
    return rows, changes


# --- running ----------------------------------------------------------------------------------------
def run_field(out: Path, setting: str, graphs: Sequence[str] = FIELD_GRAPHS, methods: Sequence[str] = FIELD_METHODS,
              baselines: Sequence[str] = FIELD_BASELINES, runs: int = DEFAULT_RUNS, split_seeds=DEFAULT_SPLITS,
              shots: Optional[Sequence[int]] = None, cml: bool = True, quick: bool = False, resume: bool = False,
              overwrite: bool = False, data_root=None, seed: int = 0, progress: bool = True, executor=None,
              command: str = "") -> FieldReport:
    """Run the field grid of ``setting`` (``both``: transductive, then inductive) into ``out/<setting>``
    and report every setting found in ``out``."""
    from gnn_cml.engine.checkpoint import write_json

    out = Path(out)
    for setting_name in (SETTING_CHOICES if setting == "both" else (setting,)):
        spec = {"command": command, "graphs": list(graphs), "methods": list(methods), "baselines": list(baselines),
                "runs": runs, "split_seeds": split_seeds, "shots": None if shots is None else list(shots),
                "cml": cml, "quick": quick, "seed": seed}
        start = time.perf_counter()
        grid = run_table3_grid(graphs, out / setting_name, runs, quick, resume, overwrite, data_root, seed, progress,
                               methods, shots, split_seeds, False, baselines, executor, setting_name, cml)
        spec["wall_time_s"] = time.perf_counter() - start
        write_reports(table3_report(grid), out / setting_name, command, quick)
        write_json(out / setting_name / SPEC, spec)
    return field_report(out, data_root, progress)


def field_report(out: Path, data_root=None, progress: bool = False) -> FieldReport:
    """The report of every setting run into ``out`` (read back from the finished arms; nothing trains)."""
    out = Path(out)
    grids: Dict[str, Grid] = {}
    report = FieldReport([])
    for setting in SETTING_CHOICES:
        path = out / setting / SPEC
        if not path.is_file():
            continue
        spec = load_results(path)
        try:
            grid = run_table3_grid(spec["graphs"], out / setting, spec["runs"], spec["quick"], True, False, data_root,
                                   spec["seed"], progress, spec["methods"], spec["shots"], spec["split_seeds"], False,
                                   spec["baselines"], None, setting, spec["cml"])
        except GnnCmlError as exc:
            raise GnnCmlError(f"{out / setting} is not finished ({exc}): rerun its command with --resume") from None
        grids[setting] = grid
        report.specs[setting] = spec
        report.rows += field_rows(setting, grid)
        report.split_seeds.update(grid.split_seeds)
        report.skipped += [s for s in grid.skipped if s not in report.skipped]
    require(grids, f"{out} holds no field study: run gnn-cml reproduce field --out {out} first")
    report.settings, report.rank_change = setting_rows(grids)
    return report


# --- writing ----------------------------------------------------------------------------------------
def _fmt_delta(d: Optional[Dict]) -> str:
    if not d:
        return "-"
    return f"{fmt_mean_ci(d['delta'], d['delta_ci95'], signed=True)} [{fmt_number(d['delta_low'])}, " \
           f"{fmt_number(d['delta_high'])}]"


def _unit(rows: Sequence[FieldRow]) -> str:
    r = rows[0]
    return f"{len(r.splits)} class splits x {r.runs} runs" if len(r.splits) > 1 else f"1 class split, {r.runs} runs"


def write_field(report: FieldReport, out: Path) -> List[Path]:
    """field.md/.csv/.json, field_<setting>.png and, with both settings, inductive.md/.csv and inductive.png."""
    from gnn_cml.engine.checkpoint import write_json

    out = Path(out)
    quick = any(s.get("quick") for s in report.specs.values())
    lines = ["# The field: which graph few-shot learners beat a linear probe, and does CML help any of them?", ""]
    if quick:
        lines += [f"**{QUICK_BANNER}**", ""]
    for setting, spec in report.specs.items():
        lines += [f"{setting}: `{spec.get('command') or 'gnn-cml reproduce field'}` "
                  f"(that call: {spec.get('wall_time_s', 0) / 60:.1f} min wall)", ""]
    lines += ["Test accuracy (%) on the same fixed test tasks for every arm of a class split. Mean ± 95% CI: with "
              "several class splits, the mean of the per-split means ± a Student-t interval over splits (df = "
              "splits − 1, the split is the unit of replication); with one, over runs. Δ vs probe = arm − the "
              "cell's best linear probe, paired within each split by run (same seed, same test tasks), interval "
              "as above (between splits), [low, high] its bounds. CML Δ = +CML − base, paired the same way (same "
              "initial shared weights and episodes too). Rank 1 = highest mean. Wall = training and testing time "
              "of the arm, summed over splits (pretraining reused from the encoder cache costs nothing).", ""]
    cells = list(dict.fromkeys(r.cell for r in report.rows))
    for cell in cells:
        rows = [r for r in report.rows if r.cell == cell]
        lines += [f"## {cell[0]}: {rows[0].cell_name} ({_unit(rows)})", "",
                  "| rank | arm | accuracy | Δ vs best probe | CML Δ (vs base) | wall (s) |", "|---|---|---|---|---|---|"]
        for r in rows:
            probe = "(best probe)" if r.kind == "probe" and r.vs_probe is None else _fmt_delta(r.vs_probe)
            lines.append(f"| {r.rank} | {r.arm} | {fmt_mean_ci(r.mean, r.ci95)} | {probe} | {_fmt_delta(r.vs_base)} | "
                         f"{r.wall_s:.0f} |")
        lines.append("")
    lines += _cost_lines(report.rows)
    if report.split_seeds:
        lines += ["Class splits (seed 1234 is the paper's): " + "; ".join(
            f"{c}: {', '.join(map(str, s))}" for c, s in report.split_seeds.items()), ""]
    if report.skipped:
        lines += ["Skipped graphs:", ""] + [f"- {g}: {why}" for g, why in report.skipped] + [""]
    (out / "field.md").write_text("\n".join(lines))
    cols = ["setting", "graph", "ways", "shots", "rank", "arm", "method", "kind", "splits", "runs_per_split", "mean",
            "ci95", "vs_probe", "vs_probe_delta", "vs_probe_ci95", "vs_probe_low", "vs_probe_high", "vs_probe_wilcoxon_p",
            "cml_delta", "cml_ci95", "cml_low", "cml_high", "cml_wilcoxon_p", "interval_unit", "wall_s"]
    with open(out / "field.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in report.rows:
            p, b = r.vs_probe or {}, r.vs_base or {}
            w.writerow([r.setting, r.graph, r.ways, r.shots, r.rank, r.arm, r.method, r.kind, len(r.splits), r.runs,
                        fmt_number(r.mean), fmt_number(r.ci95), p.get("probe", ""), fmt_number(p.get("delta")),
                        fmt_number(p.get("delta_ci95")), fmt_number(p.get("delta_low")), fmt_number(p.get("delta_high")),
                        fmt_p(p.get("wilcoxon_p")), fmt_number(b.get("delta")), fmt_number(b.get("delta_ci95")),
                        fmt_number(b.get("delta_low")), fmt_number(b.get("delta_high")), fmt_p(b.get("wilcoxon_p")),
                        "splits" if len(r.splits) > 1 else "runs", f"{r.wall_s:.1f}"])
    write_json(out / "field.json", {"specs": report.specs, "split_seeds": report.split_seeds,
                                    "rows": [asdict(r) for r in report.rows],
                                    "settings": [asdict(r) for r in report.settings],
                                    "rank_change": report.rank_change,
                                    "skipped": [{"graph": g, "reason": why} for g, why in report.skipped]})
    paths = [out / "field.md", out / "field.csv", out / "field.json"]
    for setting in dict.fromkeys(r.setting for r in report.rows):
        paths.append(field_plot([r for r in report.rows if r.setting == setting], out / f"field_{setting}.png", quick))
    if report.settings:
        paths += write_settings(report, out, quick)
    return paths


def _cost_lines(rows: Sequence[FieldRow]) -> List[str]:
    """What each arm cost: wall time summed over cells and splits, and per run."""
    cost: Dict[Tuple[str, str], List[float]] = {}
    for r in rows:
        c = cost.setdefault((r.setting, r.arm), [0.0, 0])
        c[0] += r.wall_s
        c[1] += r.runs * len(r.splits)
    lines = ["## What each arm cost", "", "| setting | arm | wall (min) | runs | s per run |", "|---|---|---|---|---|"]
    for (setting, arm), (wall, n) in sorted(cost.items(), key=lambda kv: (kv[0][0], -kv[1][0])):
        lines.append(f"| {setting} | {arm} | {wall / 60:.1f} | {n} | {wall / max(n, 1):.1f} |")
    total = sum(c[0] for c in cost.values())
    return lines + ["", f"Sum over arms: {total / 60:.1f} min of arm wall time (with --jobs N, N arms ran at once).", ""]


def write_settings(report: FieldReport, out: Path, quick: bool) -> List[Path]:
    rows = report.settings
    lines = ["# Inductive − transductive: does the setting change who wins?", "",
             "Every arm run in both settings, paired: the same seeds (initial weights, episodes as node ids), class "
             "splits and fixed test tasks (checked by their digests); only what training, pretraining and validation "
             "see differs (docs/settings.md). Δ = inductive − transductive, mean of the per-split mean differences ± "
             "a t-CI over splits ([low, high]; one split: paired-t over runs). Ranks are among the arms run in both "
             "settings.", ""]
    for cell, change in report.rank_change.items():
        sub = [r for r in rows if f"{r.graph} {r.ways}w{r.shots}s" == cell]
        tau = change["kendall_tau"]
        lines += [f"## {cell}", "",
                  f"Best transductive: {', '.join(change['best_transductive'])}; best inductive: "
                  f"{', '.join(change['best_inductive'])}; Kendall's tau between the two orders "
                  f"{'-' if tau is None else f'{tau:.2f}'} over {change['arms']} arms.", "",
                  "| arm | transductive (rank) | inductive (rank) | Δ inductive − transductive | Wilcoxon p |",
                  "|---|---|---|---|---|"]
        for r in sub:
            lines.append(f"| {r.arm} | {fmt_mean_ci(r.transductive, r.transductive_ci95)} ({r.rank_transductive}) | "
                         f"{fmt_mean_ci(r.inductive, r.inductive_ci95)} ({r.rank_inductive}) | {_fmt_delta(r.delta)} | "
                         f"{fmt_p(r.delta.get('wilcoxon_p'))} |")
        lines.append("")
    (out / "inductive.md").write_text("\n".join(lines))
    with open(out / "inductive.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["graph", "ways", "shots", "arm", "transductive", "transductive_ci95", "rank_transductive",
                    "inductive", "inductive_ci95", "rank_inductive", "delta", "delta_ci95", "delta_low", "delta_high",
                    "wilcoxon_p", "unit"])
        for r in rows:
            d = r.delta
            w.writerow([r.graph, r.ways, r.shots, r.arm, fmt_number(r.transductive), fmt_number(r.transductive_ci95),
                        r.rank_transductive, fmt_number(r.inductive), fmt_number(r.inductive_ci95), r.rank_inductive,
                        fmt_number(d["delta"]), fmt_number(d["delta_ci95"]), fmt_number(d["delta_low"]),
                        fmt_number(d["delta_high"]), fmt_p(d["wilcoxon_p"]), d["unit"]])
    return [out / "inductive.md", out / "inductive.csv", settings_plot(rows, out / "inductive.png", quick)]


# --- figures ----------------------------------------------------------------------------------------
def _panels(cells: Sequence[Tuple[str, int, int]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = list(dict.fromkeys(c[0] for c in cells))
    settings = list(dict.fromkeys(c[1:] for c in cells))
    fig, axes = plt.subplots(len(graphs), len(settings), squeeze=False,
                             figsize=(5.2 * len(settings), 0.6 + 3.8 * len(graphs)))
    where = {c: axes[graphs.index(c[0])][settings.index(c[1:])] for c in cells}
    for c in set((g, *s) for g in graphs for s in settings) - set(cells):
        axes[graphs.index(c[0])][settings.index(c[1:])].axis("off")
    return plt, fig, where


def field_plot(rows: Sequence[FieldRow], path: Path, quick: bool = False) -> Path:
    """Per cell, arms ordered by mean accuracy (best on top; label: mean and rank), each at its paired Δ
    against the cell's best probe with that Δ's 95% CI; the best probe is the zero line. (Arms' own
    intervals over class splits are wide because the splits differ in difficulty; the paired Δ is what
    says whether an arm beats the probe.)"""
    cells = list(dict.fromkeys((r.graph, r.ways, r.shots) for r in rows))
    plt, fig, where = _panels(cells)
    for cell, ax in where.items():
        sub = sorted([r for r in rows if (r.graph, r.ways, r.shots) == cell],
                     key=lambda r: r.mean if r.mean is not None else float("-inf"))
        probes = [r for r in sub if r.kind == "probe"]
        best = probes[-1] if probes else None
        ax.axvline(0.0, color="black", ls="--", lw=1.2, zorder=1,
                   label=f"best probe ({best.arm}, {fmt_number(best.mean)})" if best else "no probe")
        for y, r in enumerate(sub):
            marker = "s" if r.kind == "probe" else "D" if r.kind == "cml" else "o"
            d = r.vs_probe
            if d is None:  # the best probe itself
                ax.plot([0.0], [y], marker, color=method_colour(r.arm), ms=6, zorder=3)
                continue
            lo = d["delta"] - (d["delta_low"] if d["delta_low"] is not None else d["delta"])
            hi = (d["delta_high"] if d["delta_high"] is not None else d["delta"]) - d["delta"]
            ax.errorbar([d["delta"]], [y], xerr=[[lo], [hi]], fmt=marker, color=method_colour(r.arm), capsize=2,
                        ms=5, zorder=2)
        ax.set_yticks(range(len(sub)))
        ax.set_yticklabels([f"{r.arm} {fmt_number(r.mean, 1)} (#{r.rank})" for r in sub], fontsize=8)
        ax.set_title(f"{cell[0]} {cell[1]}-way {cell[2]}-shot ({_unit(sub)})", fontsize=9)
        ax.set_xlabel("accuracy − best probe (points), paired 95% CI", fontsize=8)
        ax.grid(axis="x", color="0.92")
        ax.legend(fontsize=7, loc="upper left")  # the top arms sit near 0, on the right
    setting = rows[0].setting if rows else ""
    title = (f"Which learners beat a linear probe? ({setting}; ordered by mean accuracy, shown after each name; "
             f"◆ +CML, ■ probe)")
    fig.suptitle(title + (f"\n{QUICK_BANNER}" if quick else ""), fontsize=10, color="firebrick" if quick else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def settings_plot(rows: Sequence[SettingRow], path: Path, quick: bool = False) -> Path:
    """Per cell, every arm's inductive − transductive Δ with its 95% CI (ordered by Δ), a zero line."""
    cells = list(dict.fromkeys((r.graph, r.ways, r.shots) for r in rows))
    plt, fig, where = _panels(cells)
    for cell, ax in where.items():
        sub = sorted([r for r in rows if (r.graph, r.ways, r.shots) == cell], key=lambda r: r.delta["delta"])
        ax.axvline(0, color="black", ls="--", lw=1, zorder=0)
        for y, r in enumerate(sub):
            d = r.delta
            lo = d["delta"] - (d["delta_low"] if d["delta_low"] is not None else d["delta"])
            hi = (d["delta_high"] if d["delta_high"] is not None else d["delta"]) - d["delta"]
            ax.errorbar([d["delta"]], [y], xerr=[[lo], [hi]], fmt="o", color=method_colour(r.arm), capsize=2, ms=5)
        ax.set_yticks(range(len(sub)))
        ax.set_yticklabels([f"{r.arm} (#{r.rank_transductive}→#{r.rank_inductive})" for r in sub], fontsize=8)
        ax.set_title(f"{cell[0]} {cell[1]}-way {cell[2]}-shot", fontsize=9)
        ax.set_xlabel("Δ accuracy, inductive − transductive (points, 95% CI)", fontsize=8)
        ax.grid(axis="x", color="0.92")
    title = "What the inductive setting costs each arm (rank transductive → inductive)"
    fig.suptitle(title + (f"\n{QUICK_BANNER}" if quick else ""), fontsize=10, color="firebrick" if quick else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- command line -----------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--graphs", help=f"comma-separated graphs (default {','.join(FIELD_GRAPHS)})")
    p.add_argument("--methods", help=f"comma-separated learners (registered names or plugins' import paths), each "
                                     f"± CML where CML applies (default: every registered learner, "
                                     f"{','.join(FIELD_METHODS)})")
    p.add_argument("--baselines", help=f"comma-separated linear-probe arms, of {', '.join(BASELINES)} (default "
                                       f"{','.join(FIELD_BASELINES)}; the best of them is each cell's reference)")
    p.add_argument("--shots", help="only these shot settings, e.g. 5 (default: 1 and 5)")
    p.add_argument("--runs", type=int, help=f"paired runs per arm and class split (default {DEFAULT_RUNS}; "
                                            f"{QUICK_RUNS} with --quick); a finished study grows with --resume")
    p.add_argument("--split-seeds", help=f"class splits per cell: a count S (the first S seeds from 1234 with "
                                         f"distinct test classes) or a comma list (default {DEFAULT_SPLITS})")
    p.add_argument("--no-cml", dest="cml", action="store_false",
                   help="base arms only (default: each learner ± CML where CML applies)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the reports from the settings already run into --out")
    p.add_argument("--quick", action="store_true", help=f"a smoke run ({QUICK_RUNS} runs, few episodes; default: off)")
    add_setting_argument(p, both=True)
    add_output_arguments(p, "results/field", "arms")


def run(args) -> int:
    command = ("gnn-cml reproduce field " + " ".join(sys.argv[3:])).strip() if len(sys.argv) > 2 \
        else "gnn-cml reproduce field"
    if args.report_only:
        report = field_report(args.out, args.data_root, progress=not args.no_progress)
    else:
        methods = [registry.normalise(m) for m in csv_list(args.methods, "methods", lower=False) or FIELD_METHODS]
        baselines = csv_list(args.baselines, "baselines") or list(FIELD_BASELINES)
        shots = None
        if args.shots:
            try:
                shots = [int(s) for s in csv_list(args.shots, "shots")]
            except ValueError:
                raise GnnCmlError(f"--shots must be a comma list of integers like 1,5, got {args.shots!r}") from None
        runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else DEFAULT_RUNS)
        require(runs > 0, f"--runs must be positive, got {runs}")
        report = run_field(args.out, args.setting, csv_list(args.graphs, "graphs") or list(FIELD_GRAPHS), methods,
                           baselines, runs, args.split_seeds if args.split_seeds is not None else DEFAULT_SPLITS,
                           shots, args.cml, args.quick, args.resume, args.overwrite, args.data_root, args.seed,
                           progress=not args.no_progress, executor=executor_from_args(args), command=command)
    paths = write_field(report, args.out)
    print((Path(args.out) / "field.md").read_text())
    for path in paths:
        print(path)
    return 0
