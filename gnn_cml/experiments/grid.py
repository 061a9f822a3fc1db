"""Grids of arms on shared fixed test tasks: the Table 3 cells (every method ± CML over class splits)
and the gamma sweep. Runs the experiments and returns their results; :mod:`gnn_cml.report.table3`
and :mod:`gnn_cml.report.gamma` turn them into tables and plots.

Layout: ``out/<graph>/<W>w<S>s/split_<seed>/{test_tasks.npz, <arm>/}``; an arm is a run directory
of :func:`gnn_cml.experiments.graph.run_experiment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from gnn_cml import methods as registry
from gnn_cml.config import EXECUTION_KEYS, resolve
from gnn_cml.data import graph_info, load_graph
from gnn_cml.engine import rundir
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.experiments.executor import Unit, clear_markers, run_units
from gnn_cml.experiments.paired import link_pair, load_results, pair_runs, t_interval
from gnn_cml.sampling import ClassSplit, default_split, distinct_split_seeds

# (graph, ways, shots) cells of Table 3, plus Cora as an extra.
SETTINGS: Dict[str, List[Tuple[int, int]]] = {
    "citeseer": [(2, 1), (2, 5)],
    "amazon_computers": [(2, 1), (2, 5)],
    "corafull": [(5, 1), (5, 5)],
    "cora": [(2, 1), (2, 5)],
}
BASE_METHODS = registry.table3_methods()
# Named variants of non-meta baselines (declared by their methods as `arms`), on the same fixed test tasks as
# the meta-learners (unpaired arms: they share no weights with them).
BASELINES = tuple(registry.table3_arms())
PAPER_SPLIT_SEED = 1234
# Training budget of --quick (a smoke run).
QUICK = {"episodes": 20, "val_every": 10, "val_tasks": 5, "test_tasks": 20, "inner_steps": 5}


def method_overrides(arm: str, quick: bool = False) -> Dict:
    """Config overrides of a Table 3 baseline arm name (the method's declared overrides)."""
    method, overrides = registry.table3_arms()[arm]
    return {"method": method.name, **overrides, **(method.quick if quick else {})}


def label(method: str, cml: bool) -> str:
    return f"{method}+cml" if cml else method


def arm_config(name: str, ways: int, shots: int, split_seed: int, arm: str, runs: int, quick: bool, data_root,
               seed: int, given: Optional[Dict[str, str]] = None, setting: str = "transductive"):
    """The run config of one Table 3 arm: ``<method>``, ``<method>+cml`` or a baseline arm name
    (``given``: arm names -> the --methods entries, e.g. a plugin's import path; ``setting``: what
    training sees, docs/settings.md)."""
    common = dict(graph=name, ways=ways, shots=shots, runs=runs, seed=seed, split_seed=split_seed, setting=setting,
                  data_root=data_root, **(QUICK if quick else {}))
    if arm in BASELINES:
        overrides = dict(common, **method_overrides(arm, quick))
        # --quick's inner-loop budget does not apply to a method without an inner loop (it keeps 0 steps)
        adapts = registry.get(overrides["method"]).adapts
        return resolve({k: v for k, v in overrides.items() if adapts or k != "inner_steps"})
    method, _, extra = arm.partition("+")
    return resolve(dict(common, method=(given or {}).get(method, method), cml=extra == "cml"))


def point_config(name: str, method: str, gamma: float, ways: int, shots: int, runs: int, seed: int,
                 split_seed: int, data_root, quick: bool, setting: str = "transductive"):
    """The run config of one gamma-sweep point (gamma = 0: the base learner, CML off)."""
    return resolve(dict(graph=name, method=method, cml=gamma > 0, gamma=gamma if gamma > 0 else 0.2, ways=ways,
                        shots=shots, runs=runs, seed=seed, split_seed=split_seed, data_root=data_root, setting=setting,
                        **(QUICK if quick else {})))


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
    require(seeds and all(0 <= s <= 2**32 - 1 for s in seeds),
            f"--split-seeds needs seeds in 0..2**32 - 1, got {text!r}")
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
    from gnn_cml.experiments.graph import run_experiment  # torch: imported when an arm runs

    done = Path(run_dir) / "results.json"
    # An arm is finished once sealed by its manifest; one killed before that (or written before manifests
    # existed) is resumed by run_experiment, which reports its finished runs and seals it.
    if resume and done.exists() and (Path(run_dir) / rundir.MANIFEST).exists():
        rundir.hold(run_dir)  # not while another process writes it; drops a killed writer's lock record
        try:
            rundir.remove_temp_files(run_dir)  # a writer killed while sealing the finished arm
            rundir.verify(run_dir)  # a finished arm is reused only if every file is as it was written
            saved = load_results(done)
        finally:
            rundir.release(run_dir)
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

    if path.exists() and rundir.zip_damage(path) is None:  # a damaged one is drawn again (same seed, same tasks)
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
    rundir.record(cml_dir, path)  # the CML run's manifest lists it
    return dagger


@dataclass
class Arm:
    """One finished arm of a cell and split: its label (``<method>``, ``<method>+cml``, ``<method>+dagger``
    or a baseline's arm name), its base method, its kind (``base``, ``cml``, ``dagger`` or ``baseline``)
    and its results."""

    graph: str
    ways: int
    shots: int
    split_seed: int
    label: str
    method: str
    kind: str
    results: Dict


@dataclass
class Cell:
    graph: str
    ways: int
    shots: int
    seeds: List[int]
    methods: List[str]  # base methods, in order
    with_cml: List[str]  # those paired with a +CML arm
    baselines: List[str]
    dagger: bool
    arms: List[Arm] = field(default_factory=list)  # in the order they ran


@dataclass
class Grid:
    cells: List[Cell]
    skipped: List[Tuple[str, str]]
    split_seeds: Dict[str, List[int]]  # "graph WwSs" -> split seeds used


def run_table3_grid(graphs: Sequence[str], out: Path, runs: int, quick: bool = False, resume: bool = False,
                    overwrite: bool = False, data_root: Optional[str] = None, seed: int = 0, progress: bool = True,
                    methods: Sequence[str] = BASE_METHODS, shots: Optional[Sequence[int]] = None,
                    split_seeds: Union[str, int, Dict[int, Union[str, int]]] = 1, dagger: bool = False,
                    baselines: Sequence[str] = (), executor=None, setting: str = "transductive",
                    cml: bool = True) -> Grid:
    """Run the Table 3 grid on the graphs available locally.

    Every (graph, setting) cell is repeated over the class splits named by ``split_seeds`` (a
    ``--split-seeds`` value, or a dict shots -> value); each split has its own fixed test tasks,
    shared by every method of that split. Base and +CML arms share ``seed``, so their runs are
    paired; ``dagger`` adds CML-dagger arms evaluated from the CML runs' saved models. ``methods``
    are registered names or plugins' import paths (arms are named by their declared names).
    Layout: ``out/<graph>/<W>w<S>s/split_<seed>/{test_tasks.npz, <method>[+cml]/}``.
    ``executor`` (:mod:`gnn_cml.experiments.executor`): train the arms as units there first (worker
    processes, Ray); the files and the results equal those of a serial run. ``setting``: transductive
    or inductive (what training sees; the test tasks are the same in both). ``cml=False``: base arms only.
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
    for b in baselines:
        require(b in BASELINES, f"unknown Table 3 baseline '{b}': use {', '.join(BASELINES)}")
    grid = Grid([], [], {})
    cells = []  # every cell's split seeds first, so a bad --split-seeds fails before anything is trained
    for name in names:
        try:  # downloads when online; offline without files -> skipped, with the loader's reason
            data = load_graph(name, data_root)
        except GnnCmlError as exc:
            grid.skipped.append((name, str(exc)))
            continue
        for ways, k in SETTINGS[name]:
            if shots is not None and k not in shots:
                continue
            spec = split_seeds.get(k, 1) if isinstance(split_seeds, dict) else split_seeds
            seeds = parse_split_seeds(spec, int(data.num_classes), graph_info(name).split)
            grid.split_seeds[f"{name} {ways}w{k}s"] = seeds
            cells.append((name, ways, k, seeds))
    with_cml = [m for m in given if cml and registry.get(given[m]).cml]
    rundir.hold(out, what="reproduce output folder")  # one process per output tree
    rundir.announce(out)
    if executor is not None:  # every arm as a unit on the executor; the cells below only read them back
        run_units(table3_units(cells, out, runs, quick, resume, overwrite, data_root, seed, progress, given,
                               with_cml, baselines, setting), executor, out, progress)
        if dagger:
            run_units(dagger_units(cells, out, with_cml, resume), executor, out, progress)
        resume, overwrite = True, False
    else:
        clear_markers(out)  # left by a study with --jobs/--executor that was killed
    for name, ways, k, seeds in cells:
        cell = Cell(name, ways, k, seeds, list(given), with_cml, list(baselines), dagger)
        _run_cell(cell, given, out / name / f"{ways}w{k}s", runs, quick, resume, overwrite, data_root, seed,
                  progress, setting)
        grid.cells.append(cell)
    rundir.release(out)
    return grid


def _run_cell(cell: Cell, given: Dict[str, str], folder: Path, runs, quick, resume, overwrite, data_root, seed,
              progress, setting: str = "transductive") -> None:
    name, ways, shots = cell.graph, cell.ways, cell.shots
    for split_seed in cell.seeds:
        where = folder / f"split_{split_seed}"
        for method in cell.methods:
            results = {}
            for cml in (False, True) if method in cell.with_cml else (False,):
                cfg = arm_config(name, ways, shots, split_seed, label(method, cml), runs, quick, data_root, seed, given,
                                 setting)
                task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
                res = run_arm(cfg, where / label(method, cml), task_file, resume, overwrite, progress)
                results[cml] = res
                cell.arms.append(Arm(name, ways, shots, split_seed, label(method, cml), method,
                                     "cml" if cml else "base", res))
            if method not in cell.with_cml:
                continue
            link_pair(where / method, where / label(method, True))  # writes paired_with into the CML run
            if cell.dagger:
                d = dagger_arm(where / label(method, True), results[False], resume)
                cell.arms.append(Arm(name, ways, shots, split_seed, f"{method}+dagger", method, "dagger", d))
        for baseline in cell.baselines:  # unpaired arms on the same fixed test tasks
            cfg = arm_config(name, ways, shots, split_seed, baseline, runs, quick, data_root, seed, setting=setting)
            task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
            res = run_arm(cfg, where / baseline, task_file, resume, overwrite, progress)
            cell.arms.append(Arm(name, ways, shots, split_seed, baseline, baseline, "baseline", res))


def table3_units(cells, out: Path, runs, quick, resume, overwrite, data_root, seed, progress, given: Dict[str, str],
                 with_cml: Sequence[str], baselines=(), setting: str = "transductive") -> List[Unit]:
    """Every arm of the grid as a unit (each writes its run folder, as :func:`_run_cell` would); the
    shared test tasks of each split are written here first."""
    units = []
    for name, ways, k, seeds in cells:
        for split_seed in seeds:
            where = Path(out) / name / f"{ways}w{k}s" / f"split_{split_seed}"
            arms = [label(m, c) for m in given for c in ((False, True) if m in with_cml else (False,))]
            for arm in arms + list(baselines):
                cfg = arm_config(name, ways, k, split_seed, arm, runs, quick, data_root, seed, given, setting)
                task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
                units.append(Unit(f"{name} {ways}w{k}s split_{split_seed} {arm}", run_arm,
                                  dict(cfg=cfg, run_dir=where / arm, task_file=task_file, resume=resume,
                                       overwrite=overwrite, progress=progress),
                                  retry_kwargs=dict(resume=True, overwrite=False)))
    return units


def dagger_units(cells, out: Path, methods: Sequence[str], resume) -> List[Unit]:
    """CML-dagger evaluations of the finished CML arms, as units (``dagger.json`` in each CML run)."""
    return [Unit(f"{name} {ways}w{k}s split_{s} {m}+dagger", dagger_unit,
                 dict(cml_dir=Path(out) / name / f"{ways}w{k}s" / f"split_{s}" / label(m, True),
                      base_dir=Path(out) / name / f"{ways}w{k}s" / f"split_{s}" / m, resume=resume),
                 retry_kwargs=dict(resume=True))
            for name, ways, k, seeds in cells for s in seeds for m in methods]


def dagger_unit(cml_dir: Path, base_dir: Path, resume: bool) -> None:
    """A unit: :func:`dagger_arm` of a finished CML arm, paired with its base arm."""
    dagger_arm(cml_dir, load_results(base_dir), resume)


def run_gamma_grid(graphs: Sequence[str], out: Path, methods: Sequence[str], gammas: Sequence[float], runs: int,
                   ways: int = 2, shots: int = 5, split_seed: int = PAPER_SPLIT_SEED, quick: bool = False,
                   resume: bool = False, overwrite: bool = False, data_root: Optional[str] = None, seed: int = 0,
                   progress: bool = True, executor=None,
                   setting: str = "transductive") -> Tuple[List[Arm], List[Tuple[str, str]]]:
    """Train every (graph, method, gamma) with the same seeds and test tasks; returns the arms (label
    ``<method>_gamma<g>``, in order: per graph and method, ascending gamma) and the skipped graphs.

    gamma = 0 is run as the base learner (CML off): with gamma = 0 the co-learner adds nothing to the
    meta-gradient, and the engine tests check that this is the same computation. Every other gamma is
    paired with it run by run (same initial weights, episodes and test tasks).
    Layout: ``out/<graph>/<W>w<S>s/split_<seed>/{test_tasks.npz, <method>_gamma<g>/}``.
    """
    out = Path(out)
    require(0.0 in [float(g) for g in gammas], "--gammas must include 0 (the paired reference)")
    require(all(g >= 0 for g in gammas), f"--gammas must be >= 0, got {list(gammas)}")
    gammas = sorted(set(float(g) for g in gammas))
    arms: List[Arm] = []
    skipped: List[Tuple[str, str]] = []
    rundir.hold(out, what="reproduce output folder")  # one process per output tree
    rundir.announce(out)
    names = []
    for g in graphs:
        name = graph_info(g).name
        try:
            load_graph(name, data_root)
        except GnnCmlError as exc:
            skipped.append((name, str(exc)))
            continue
        names.append(name)

    def points(overwrite: bool):
        """Each (graph, method, gamma) in order, with its config, shared test-task file and run folder."""
        for name in names:
            where = out / name / f"{ways}w{shots}s" / f"split_{split_seed}"
            for method in methods:
                for gamma in gammas:
                    cfg = point_config(name, method, gamma, ways, shots, runs, seed, split_seed, data_root, quick,
                                       setting)
                    task_file = shared_task_file(cfg, where / "test_tasks.npz", overwrite)
                    yield name, method, gamma, cfg, task_file, where / f"{method}_gamma{gamma:g}"

    if executor is not None:  # every point as a unit on the executor; the loop below only reads them back
        units = [Unit(f"{name} {ways}w{shots}s {method} gamma {gamma:g}", run_arm,
                      dict(cfg=cfg, run_dir=run_dir, task_file=task_file, resume=resume, overwrite=overwrite,
                           progress=progress),
                      retry_kwargs=dict(resume=True, overwrite=False))
                 for name, method, gamma, cfg, task_file, run_dir in points(overwrite)]
        run_units(units, executor, out, progress)
        resume, overwrite = True, False
    else:
        clear_markers(out)  # left by a study with --jobs/--executor that was killed
    for name, method, gamma, cfg, task_file, run_dir in points(overwrite):
        res = run_arm(cfg, run_dir, task_file, resume, overwrite, progress)
        arms.append(Arm(name, ways, shots, split_seed, f"{method}_gamma{gamma:g}", method,
                        "cml" if gamma > 0 else "base", res))
    rundir.release(out)
    return arms, skipped
