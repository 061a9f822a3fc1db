"""A graph meta-learning experiment: graph -> split -> episodes -> learner -> runs -> results.json."""
from __future__ import annotations

import json
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

from gnn_cml.config import EXECUTION_KEYS, RunConfig, load_yaml, method_label
from gnn_cml.data import cache_root, data_root, load_graph
from gnn_cml.engine import distributed as dist
from gnn_cml.engine import rundir
from gnn_cml.engine.checkpoint import RunFiles, atomic_write_bytes, load_checkpoint, save_checkpoint, write_json
from gnn_cml.engine.metrics import ci_note, fmt_mean_ci, mean_ci95
from gnn_cml.engine.progress import TaskProgress, status
from gnn_cml.engine.trainer import METRICS, Trainer, TrainerConfig, evaluate_tasks
from gnn_cml.errors import GnnCmlError, few, require
from gnn_cml.meta.factory import build_learner, learner_class
from gnn_cml.methods import get as get_method
from gnn_cml.models.graph import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler, TaskSet, default_split, derive_seed
from gnn_cml.sampling.episodes import ResampledTasks, tasks_digest
from gnn_cml.models.inductive import PhaseGraphs, bind_graph

_STREAM = {"train": 1, "val": 2, "test": 3}


@dataclass
class GraphTask:
    """Everything parameter-free an experiment needs, built (and validated) before any file is written."""

    cfg: RunConfig
    data: object
    graph: PreparedGraph
    split: ClassSplit
    graphs: Optional[PhaseGraphs] = None  # the graph each phase sees (--setting)

    @classmethod
    def build(cls, cfg: RunConfig, progress: bool = False) -> "GraphTask":
        where = cfg.graph if str(cfg.graph).endswith(".npz") else f"{cfg.graph} from {data_root(cfg.data_root)}"
        status(f"loading graph {where} ...", progress)
        data = _load_graph(cfg)
        split = default_split(data, seed=cfg.split_seed, counts=cfg.split, rule=cfg.split_rule)
        status(f"loaded {cfg.graph}: {int(data.num_nodes):,} nodes, {int(data.edge_index.shape[1]):,} edges, "
               f"{int(data.num_classes)} classes; class split {len(split.train)}/{len(split.val)}/{len(split.test)} "
               f"(train/val/test)", progress)
        task = cls(cfg, data, None, split)
        # Fail on impossible requests now, before anything is trained or written.
        for part, queries in (("train", cfg.queries), ("val", cfg.queries), ("test", cfg.test_queries)):
            task.sampler(part, queries, seed=0)
        task.graph = PreparedGraph(data, norm=cfg.norm)
        task.graphs = PhaseGraphs.build(data, task.graph, cfg.setting, split.train, split.val)
        if cfg.setting != "transductive":
            status(f"{cfg.setting} setting: training sees {len(task.graphs.train.visible):,} nodes (training "
                   f"classes), validation {len(task.graphs.val.visible):,} (training and validation classes), "
                   f"test all {int(data.num_nodes):,}", progress)
        return task

    def split_provenance(self) -> Dict:
        """Which rule and seed produced the class split (written to ``split.json``)."""
        cfg = self.cfg
        if getattr(self.data, "train_classes", None) is not None and getattr(self.data, "test_classes", None) is not None:
            return {"rule": "upstream", "seed": cfg.split_seed,
                    "description": "the dataset's upstream train/test classes; validation classes drawn from "
                                   "the training classes"}
        descriptions = {"reference": "np.random.seed(seed); test = np.random.choice(classes, n_test); "
                                     "val = np.random.choice(sorted rest, n_val); train = the rest (the reference "
                                     "code behind the paper's Table 3)",
                        "shuffle": "random.Random(seed).shuffle(classes) cut into train/val/test blocks"}
        return {"rule": cfg.split_rule, "seed": cfg.split_seed, "description": descriptions[cfg.split_rule]}

    def sampler(self, part: str, queries: int, seed: int) -> EpisodeSampler:
        cfg = self.cfg
        try:
            return EpisodeSampler(self.data.y, self.split.part(part), cfg.ways, cfg.shots, queries, seed=seed,
                                  labels_per_class=cfg.labels_per_class if part == "train" else None)
        except GnnCmlError as exc:
            message = str(exc)
            if part == "test":  # the test sampler draws --test-queries, not --queries, per class
                message = message.replace("--queries", "--test-queries")
            raise GnnCmlError(f"{part} classes {few(int(c) for c in self.split.part(part))}: {message}") from None

    def test_tasks(self) -> TaskSet:
        cfg = self.cfg
        meta = {"graph": cfg.graph, "split": self.split.to_dict(), "seed": cfg.seed}
        return TaskSet.generate(self.sampler("test", cfg.test_queries, derive_seed(cfg.seed, _STREAM["test"])),
                                cfg.test_tasks, meta)


def _load_graph(cfg: RunConfig):
    """``load_graph``, with damaged data files (truncated pickles, a half-written processed cache)
    reported as one-line :class:`GnnCmlError` instead of a traceback."""
    try:
        return load_graph(cfg.graph, cfg.data_root)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        if str(cfg.graph).endswith(".npz"):
            raise
        root = data_root(cfg.data_root)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:120]
        raise GnnCmlError(f"could not read graph '{cfg.graph}': a file under the data root {root} or the "
                          f"processed cache {cache_root(root)} is truncated or corrupt ({first}): delete the "
                          f"graph's processed/ folder in the cache and restore its raw files") from None


def check_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a non-empty folder that is not a gnn-cml run."""
    if out.exists() or out.is_symlink():
        require(out.is_dir(), f"--out {out} exists and is not a directory: pick another --out")
        if rundir.has_content(out) and (overwrite or resume):
            require((out / "config.yaml").is_file(),
                    f"{out} is not empty and holds no gnn-cml run (no config.yaml), so "
                    f"--{'overwrite' if overwrite else 'resume'} will not touch it: pick another --out")


def prepare_output(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber another run; check a resumed run has the same config."""
    config_path = out / "config.yaml"
    check_output(out, resume, overwrite)
    if out.exists() and rundir.has_content(out):
        if overwrite:
            rundir.clear(out)  # the directory itself stays: this process holds its lock
        elif resume:
            saved = read_run_config(config_path)
            current = cfg.to_dict()
            defaults = RunConfig().to_dict()  # keys added after the run was written hold their defaults
            changed = [k for k in current if k not in ("runs", *EXECUTION_KEYS)
                       and saved.get(k, defaults.get(k)) != current[k]]
            require(not changed, f"--resume with a different config than {config_path} ({', '.join(changed)} "
                                 f"changed): rerun with the saved settings or use --overwrite")
        else:
            raise GnnCmlError(f"output directory {out} exists from another run: pass --resume to continue it "
                              f"or --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GnnCmlError(f"cannot create output directory {out} ({exc.strerror or exc}): "
                          f"pick a writable --out") from None


def run_experiment(cfg: RunConfig, out: Path, resume: bool = False, overwrite: bool = False,
                   task_file: Optional[Path] = None, progress: bool = True) -> Dict:
    """Train ``cfg.runs`` independent runs and write ``results.json`` to ``out``."""
    out = Path(out)
    if dist.is_main():
        check_output(out, resume, overwrite)
    name = method_label(cfg)
    task = GraphTask.build(cfg, progress)
    if task_file is not None:
        tests = TaskSet.load(task_file)
        require(tests.meta.get("ways") == cfg.ways and tests.meta.get("shots") == cfg.shots,
                f"task file {task_file} holds {tests.meta.get('ways')}-way {tests.meta.get('shots')}-shot tasks, "
                f"not {cfg.ways}-way {cfg.shots}-shot: regenerate it or drop --task-file")
        _check_task_file(tests, task, task_file)
    else:
        status(f"drawing {cfg.test_tasks} fixed test tasks ({cfg.ways}-way {cfg.shots}-shot, "
               f"{cfg.test_queries} queries per class)", progress)
        tests = task.test_tasks()
    # Build the learner once, so that a bad backbone/pool/modulation or device fails before anything is written.
    resolve_device(cfg.device)
    learner_class(cfg).check_config(cfg)
    with torch.random.fork_rng(devices=[]):
        probe = build_learner(cfg, task.graph, seed=0)
    if dist.is_main():
        rundir.hold(out)  # one writer per run directory: another process is refused, naming the holder
        try:
            prepare_output(out, cfg, resume, overwrite)
            rundir.verify(out)  # a finished run (sealed by its manifest) resumes only if every file is intact
        except BaseException:
            rundir.release(out)
            raise
        rundir.announce(out)  # pid and host, named in other processes' refusal
        rundir.unseal(out)  # sealed again once finished
        rundir.remove_temp_files(out)
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        write_json(out / "split.json", dict(task.split.to_dict(), **task.split_provenance(),
                                            **task.graphs.describe()))
        _save_test_tasks(tests, out / "test_tasks.npz", progress)
    dist.barrier()
    runs_text = f"{cfg.runs} run{'s' if cfg.runs > 1 else ''}"
    plan = probe.plan()
    if plan:  # e.g. a learner without meta-training says what its runs do instead
        status(f"{name} on {cfg.graph}, {cfg.ways}-way {cfg.shots}-shot: {runs_text}; {plan} -> {out}", progress)
    else:
        status(f"training {name} on {cfg.graph}, {cfg.ways}-way {cfg.shots}-shot: {runs_text} of at most "
               f"{cfg.episodes} episodes (validation every {cfg.val_every}, stop after {cfg.patience} without "
               f"gain) -> {out}", progress)
    started = time.perf_counter()
    earlier_wall = _earlier_wall_time(out) if resume else 0.0
    done: Dict[int, Dict] = {}
    for run in range(cfg.runs):  # runs finished before (--resume) are reported and kept
        record = _finished_run(cfg, run, out / f"run_{run}", resume, progress)
        if record is not None:
            done[run] = record
    todo = [run for run in range(cfg.runs) if run not in done]
    why_not = _why_not_batched(cfg, probe, todo)
    if why_not is None:
        done.update(train_runs_batched(task, tests, todo, out, resume, progress))
    else:
        if cfg.batch_runs and len(todo) > 1 and get_method(cfg.method).meta_trained:
            status(f"training the runs one after another: {why_not}", progress)
        for run in todo:
            done[run] = train_run(task, tests, run, out / f"run_{run}", resume, progress)
    runs: List[Dict] = [done[run] for run in range(cfg.runs)]
    result = summarise(cfg, runs, earlier_wall + time.perf_counter() - started, task.split)
    result["test_tasks_sha256"] = tasks_digest(tests)  # lets pair_runs check two runs saw the same tasks
    if dist.is_main():
        write_json(out / "results.json", result)
        rundir.seal(out)  # manifest.json (every file's sha256), written last
        rundir.release(out)
    acc = result["test_accuracy"]
    status(f"{name} on {cfg.graph} {cfg.ways}-way {cfg.shots}-shot: test accuracy {fmt_mean_ci(acc['mean'], acc['ci95'], unit='%')} "
           f"(mean ± 95% CI over {len(runs)} run{'s' if len(runs) > 1 else ''})"
           + (f"; CI {acc['ci95_note']}" if acc.get("ci95_note") else ""), progress)
    return result


def _earlier_wall_time(out: Path) -> float:
    """The wall time that earlier calls recorded in ``results.json`` (a resumed run adds its own to it;
    the time of a call killed before writing ``results.json`` is not known)."""
    try:
        return float(json.loads((out / "results.json").read_text()).get("wall_time_s") or 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0


def read_run_config(path: Path) -> Dict:
    """A run's saved ``config.yaml``: an empty or unreadable one is an error, never "the defaults"."""
    try:
        empty = not Path(path).read_bytes().strip()
    except OSError as exc:
        raise rundir.io_error(exc, path, "read") from None
    require(not empty, f"{path} is empty, so this run's settings are unknown: restore it, or retrain with "
                       f"--overwrite")
    return load_yaml(path)


def _save_test_tasks(tests: TaskSet, path: Path, progress: bool) -> None:
    """Write the fixed test tasks unless an intact copy is there (a damaged one is rebuilt: the tasks
    are drawn from the seed, or come from --task-file)."""
    if path.exists():
        damage = rundir.zip_damage(path)
        if damage is None:
            return
        status(f"{path} is damaged ({damage}): rewriting it", progress)
    try:
        tests.save(path)
    except OSError as exc:
        raise rundir.io_error(exc, path) from None


def _check_task_file(tests: TaskSet, task: GraphTask, task_file: Path) -> None:
    """Tasks from another graph would index the wrong (or missing) nodes: refuse them."""
    def canonical(name) -> str:
        from gnn_cml.data.registry import graph_info

        if str(name).endswith(".npz"):
            return Path(str(name)).stem
        try:
            return graph_info(str(name)).name
        except GnnCmlError:
            return str(name)

    graph = tests.meta.get("graph")
    require(graph is None or canonical(graph) == canonical(task.cfg.graph),
            f"task file {task_file} holds tasks on graph '{graph}', not '{task.cfg.graph}': "
            f"use a task file written for this graph")
    n, ways = int(task.data.num_nodes), task.cfg.ways
    for e in tests:
        for nodes, labels in ((e.support, e.support_y), (e.query, e.query_y)):
            require(nodes.dim() == 1 and nodes.shape == labels.shape and not nodes.is_floating_point(),
                    f"task file {task_file} is malformed (node and label arrays do not match): regenerate it")
            require(nodes.numel() == 0 or (int(nodes.min()) >= 0 and int(nodes.max()) < n),
                    f"task file {task_file} refers to nodes outside 0..{n - 1} of '{task.cfg.graph}': "
                    f"use a task file written for this graph")
            require(labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < ways),
                    f"task file {task_file} has labels outside 0..{ways - 1}: regenerate it")


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device, or a one-line error naming the fix."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise GnnCmlError(f"unknown --device '{name}': use cpu, cuda or cuda:N") from None
    require(device.type in ("cpu", "cuda"), f"unsupported --device '{name}': use cpu, cuda or cuda:N")
    if device.type == "cuda":
        require(torch.cuda.is_available(), f"--device {name}: torch sees no CUDA GPU here "
                                           f"(torch {torch.__version__}): use --device cpu (the default)")
        require(device.index is None or device.index < torch.cuda.device_count(),
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here: use cuda:0")
    return device


def _finished_run(cfg: RunConfig, run: int, run_dir: Path, resume: bool, progress: bool) -> Optional[Dict]:
    """The record of a run finished before (with ``resume``), or None."""
    result_path = run_dir / "result.json"
    if not (resume and result_path.exists()):
        return None
    record, damage = _read_result(result_path), rundir.zip_damage(run_dir / "model.pt")
    if record is None or damage is not None:  # an unfinished directory (a finished one was verified)
        status(f"{run_label(run, cfg.runs)} · {result_path if record is None else run_dir / 'model.pt'} is damaged: "
               f"rebuilding the run from its last checkpoint", progress)
        for name in ("result.json", "model.pt"):
            (run_dir / name).unlink(missing_ok=True)
        return None
    status(f"{run_label(run, cfg.runs)} · finished before: test accuracy "
           f"{fmt_mean_ci(record['test_accuracy'], record.get('test_ci95'), unit='%')}", progress)
    return record


def _read_result(path: Path) -> Optional[Dict]:
    """A run's ``result.json``, or None when it is cut short or damaged."""
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    except OSError as exc:
        raise rundir.io_error(exc, path, "read") from None
    return record if isinstance(record, dict) and "test_accuracy" in record and "seed" in record else None


def _why_not_batched(cfg: RunConfig, learner, todo: List[int]) -> Optional[str]:
    """Why the runs to do are not trained as one batched computation (None: they are);
    ``learner``: one built from ``cfg`` (its structure is what is checked)."""
    from gnn_cml.meta.fast import why_not_batched

    if not cfg.batch_runs or len(todo) < 2:
        return "--no-batch-runs" if len(todo) > 1 else "one run"
    if torch.device(cfg.device).type != "cpu":  # checked by resolve_device before
        return f"--device {cfg.device} (batched runs are a CPU path)"
    if dist.world_size() > 1:
        return "distributed training (torchrun) splits each meta-batch instead"
    if cfg.meta_batch != 1:
        return "--meta-batch above 1"
    method = get_method(cfg.method)
    if not method.fast_path:
        return f"{method.name}: {method.why_not_fast or 'it declares no fast path'}"
    return why_not_batched(learner)


def _start_run(task: GraphTask, run: int, run_dir: Path, resume: bool, progress: bool):
    """A run's learner, seed and (for meta-trained learners) Trainer, resumed from its checkpoint."""
    cfg = task.cfg
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    seed = derive_seed(cfg.seed, 100 + run)
    label = run_label(run, cfg.runs)
    learner = build_learner(cfg, task.graphs.train, seed=seed)
    if not get_method(cfg.method).meta_trained:  # fit once (e.g. pretraining), no Trainer
        return learner, seed, None
    learner.to(resolve_device(cfg.device))
    val_sampler = task.sampler("val", cfg.queries, derive_seed(seed, _STREAM["val"]))
    val = ResampledTasks(val_sampler, cfg.val_tasks) if cfg.val_resample else TaskSet.generate(val_sampler, cfg.val_tasks)
    hparams = {k: v for k, v in cfg.to_dict().items() if k not in ("data_root",)}
    train_sampler = task.sampler("train", cfg.queries, derive_seed(seed, _STREAM["train"]))
    use_training_nodes = getattr(learner, "use_training_nodes", None)  # learners that draw extra training nodes
    if use_training_nodes is not None:
        use_training_nodes(train_sampler.members)
    trainer = Trainer(
        learner, train_sampler, val,
        TrainerConfig(episodes=cfg.episodes, meta_batch=cfg.meta_batch, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, val_every=cfg.val_every, patience=cfg.patience,
                      metric="accuracy", seed=seed, progress=progress),
        run_dir=run_dir, resume=resume, log_name=label, hparams=dict(hparams, run=run),
        validation_context=lambda: task.graphs.during(learner, "val"))
    return learner, seed, trainer


def _bind_test_graph(task: GraphTask, learner) -> None:
    """After training, the learner reads the test phase's graph (in the inductive setting, the whole graph)."""
    if task.graphs.train is not task.graphs.test:
        bind_graph(learner, task.graphs.test)


def train_runs_batched(task: GraphTask, tests: TaskSet, todo: List[int], out: Path, resume: bool,
                  progress: bool) -> Dict[int, Dict]:
    """The runs ``todo`` trained in lockstep (:func:`gnn_cml.engine.batched.fit_batched`) and tested
    together; each run's files are the same as when trained alone."""
    from gnn_cml.engine.batched import alone_message, evaluate_batched, fit_batched

    cfg = task.cfg
    started = [(run, *_start_run(task, run, out / f"run_{run}", resume, progress)) for run in todo]
    trainers = [trainer for _, _, _, trainer in started]
    label = f"runs {_runs_text(todo)}/{cfg.runs} ({_folders_text(todo)})"
    status(f"training runs {_runs_text(todo)} of {cfg.runs} ({_folders_text(todo)}) as one batched computation",
           progress)
    start = time.perf_counter()
    fit_batched(trainers, progress=progress and dist.is_main(), label=label)
    train_wall = time.perf_counter() - start
    for _, learner, _, _ in started:
        _bind_test_graph(task, learner)
    start = time.perf_counter()
    line = TaskProgress(label, len(tests) * len(todo), enabled=progress and dist.is_main())
    try:
        scores = evaluate_batched([t.model.test_model() for t in trainers], [list(tests)] * len(trainers),
                                  [t.cfg.seed for t in trainers], progress=lambda done, total: line.task(done),
                                  notice=lambda count, rows: status(alone_message(label, "testing", count, rows),
                                                                    progress))
    finally:
        line.close()
    test_wall = time.perf_counter() - start
    test_seconds = test_wall / len(todo)
    status(f"{label} · the batch took {train_wall:.0f} s training (validations included) and {test_wall:.0f} s "
           f"testing; each run's line gives its 1/{len(todo)} share of the training steps and of the testing",
           progress)
    return {run: _finish_run(task, run, out / f"run_{run}", learner, seed, trainer, s, test_seconds, progress,
                             batch=len(todo))
            for (run, learner, seed, trainer), s in zip(started, scores)}


def run_label(run: int, runs: int) -> str:
    """``run 1/5 (run_0)``: the run's number as the console counts it and its folder."""
    return f"run {run + 1}/{runs} (run_{run})"


def _folders_text(runs: List[int]) -> str:
    """``run_0-run_19`` for consecutive runs, else ``run_1,run_4``: the runs' folders."""
    if runs == list(range(runs[0], runs[-1] + 1)):
        return f"run_{runs[0]}-run_{runs[-1]}" if len(runs) > 1 else f"run_{runs[0]}"
    return ",".join(f"run_{r}" for r in runs)


def _runs_text(runs: List[int]) -> str:
    """``1-20`` for consecutive runs, else ``2,5,7`` (1-based)."""
    if runs == list(range(runs[0], runs[-1] + 1)):
        return f"{runs[0] + 1}-{runs[-1] + 1}"
    return ",".join(str(r + 1) for r in runs)


def train_run(task: GraphTask, tests: TaskSet, run: int, run_dir: Path, resume: bool, progress: bool) -> Dict:
    """Train (or fit) run ``run`` alone, test it on ``tests`` and write its ``result.json``; returns its record."""
    learner, seed, trainer = _start_run(task, run, run_dir, resume, progress)
    if trainer is None:
        return _fit_evaluate_run(learner, task, tests, run, run_dir, seed, resume, progress)
    trainer.fit()
    _bind_test_graph(task, learner)
    start = time.perf_counter()
    shown = TaskProgress(trainer.log_name, len(tests), enabled=progress and dist.is_main())
    try:
        scores = trainer.evaluate(tests, progress=shown.task)
    finally:
        shown.close()
    return _finish_run(task, run, run_dir, learner, seed, trainer, scores, time.perf_counter() - start, progress)


def _finish_run(task: GraphTask, run: int, run_dir: Path, learner, seed: int, trainer: Trainer,
                scores: List[float], test_seconds: float, progress: bool, batch: Optional[int] = None) -> Dict:
    """Record a trained run's test scores: ``result.json``, ``model.pt``, TensorBoard, a status line
    (``batch``: how many runs it was trained with in one batched computation)."""
    label = trainer.log_name
    record = _record_run(task.cfg, run, seed, run_dir, learner, scores,
                         best_val_accuracy=100 * (trainer.best_score or 0.0), best_episode=trainer.best_episode,
                         episodes=trainer.episode, stopped_early=trainer.stopped_early,
                         train_seconds=trainer.train_seconds, test_seconds=test_seconds,
                         episodes_per_s=trainer.episode / trainer.train_seconds if trainer.train_seconds else None,
                         **({"batched_runs": batch} if batch else {}))
    trainer.log_test(record["test_accuracy"], {"test_accuracy_ci95": record["test_ci95"]})  # percent
    stop = (f"stopped early at episode {trainer.episode}" if trainer.stopped_early
            else f"{trainer.episode} episodes (the cap)")
    times = f"{trainer.train_seconds:.0f} s training, {test_seconds:.0f} s test"
    if batch:
        times = f"its 1/{batch} share: {trainer.train_seconds:.1f} s of training steps, {test_seconds:.1f} s of testing"
    status(f"{label} · test accuracy {fmt_mean_ci(record['test_accuracy'], record['test_ci95'], unit='%')} (95% CI over "
           f"{len(scores)} test tasks) · best val {100 * (trainer.best_score or 0.0):.1f}% @ episode "
           f"{trainer.best_episode} · {stop} · {times}", progress)
    return record


def _fit_evaluate_run(learner, task: GraphTask, tests: TaskSet, run: int, run_dir: Path, seed: int, resume: bool,
                      progress: bool) -> Dict:
    """A run of a learner without meta-training: ``learner.fit`` (which saves and, on resume, reuses
    what it fitted under ``run_dir``), then ``learner.evaluate`` on the fixed test tasks."""
    cfg = task.cfg
    label = run_label(run, cfg.runs)
    fitted = learner.fit(task, run_dir, seed=seed, resume=resume, progress=progress and dist.is_main(),
                         log_name=f"{label} · {method_label(cfg)}", files=RunFiles())
    _bind_test_graph(task, learner)
    start = time.perf_counter()
    scores = learner.evaluate(tests)
    record = _record_run(cfg, run, seed, run_dir, learner, scores, test_seconds=time.perf_counter() - start, **fitted)
    status(f"{label} · test accuracy {fmt_mean_ci(record['test_accuracy'], record['test_ci95'], unit='%')} (95% CI over "
           f"{len(scores)} test tasks) · fitted in {fitted.get('train_seconds', 0):.0f} s", progress)
    return record


def _record_run(cfg: RunConfig, run: int, seed: int, run_dir: Path, learner, scores: List[float], **fields) -> Dict:
    """A finished run's record (its ``result.json``: test accuracy over the fixed tasks, then ``fields``),
    written with its ``model.pt``."""
    summary = mean_ci95([100 * s for s in scores])
    record = {"run": run, "seed": seed, "test_accuracy": summary["mean"], "test_ci95": summary["ci95"],
              "test_tasks": len(scores), **fields}
    if dist.is_main():
        save_checkpoint(run_dir / "model.pt", {"model": learner.state_dict(), "config": cfg.to_dict()})
        write_json(run_dir / "result.json", record)
    return record


def summarise(cfg: RunConfig, runs: List[Dict], wall: float, split: ClassSplit) -> Dict:
    accs = [r["test_accuracy"] for r in runs]
    episodes = sum(r["episodes"] for r in runs)
    seconds = sum(r["train_seconds"] for r in runs)
    return {
        "graph": cfg.graph, "method": cfg.method, "cml": cfg.cml, "gamma": cfg.gamma if cfg.cml else 0.0,
        "ways": cfg.ways, "shots": cfg.shots,
        "test_accuracy": dict(mean_ci95(accs), runs=accs, unit="percent",
                              note="mean over runs of the per-run mean accuracy on the fixed test tasks; "
                                   "ci95 is a Student-t interval over runs",
                              **_note(len(accs))),
        "mean_within_run_ci95": _mean_defined([r["test_ci95"] for r in runs]),
        "runs": runs, "split": split.to_dict(), "wall_time_s": wall,
        "episodes_per_s": episodes / seconds if seconds and episodes else None, "config": cfg.to_dict(),
        **({"pretrain_seconds": dict(mean_ci95([r["pretrain_seconds"] for r in runs]),
                                     runs=[r["pretrain_seconds"] for r in runs])}
           if all("pretrain_seconds" in r for r in runs) else {}),
    }


def _note(n: int) -> Dict:
    note = ci_note(n)
    return {"ci95_note": note} if note else {}


def _mean_defined(values) -> Optional[float]:
    """Mean of the defined values (None and NaN left out), or None when none is defined."""
    defined = [v for v in values if v is not None and v == v]
    return float(np.mean(defined)) if defined else None


def evaluate_run(out: Path, num_tasks: Optional[int] = None, co_learner: bool = False,
                 progress: bool = False) -> Dict:
    """Re-evaluate every saved run of ``out`` on its fixed test tasks (or ``num_tasks`` new ones)."""
    from gnn_cml.config import resolve

    out = Path(out)
    require((out / "config.yaml").is_file(), f"{out} is not a gnn-cml run directory (no config.yaml): check the path")
    rundir.hold(out, exclusive=False, create=False)  # refused while a process writes the run
    sealed = rundir.manifest(out) is not None
    read_run_config(out / "config.yaml")
    cfg = resolve({}, out / "config.yaml")
    rundir.verify(out, out / "config.yaml")
    if not sealed and (out / "results.json").exists():
        print(f"gnn-cml evaluate: warning: {out} has no {rundir.MANIFEST} (written before gnn-cml sealed runs, or "
              f"removed), so its files cannot be verified", file=sys.stderr)
    require(not co_learner or cfg.cml, f"--co-learner needs a run trained with --cml; {out} has none")
    if co_learner:
        cfg.dagger = True
    task = GraphTask.build(cfg, progress)
    if num_tasks is not None:
        cfg.test_tasks = num_tasks
        tests = task.test_tasks()
    else:
        tests = TaskSet.load(out / "test_tasks.npz")
        rundir.verify(out, out / "test_tasks.npz")
    accs = []
    runs = sorted(out.glob("run_*/model.pt"), key=lambda p: int(p.parent.name.split("_")[1]))
    require(runs, f"{out} has no finished run (run_*/model.pt): train it first or use --resume")
    for k, path in enumerate(runs):
        learner = build_learner(cfg, task.graph)
        state = load_checkpoint(path)
        try:
            learner.load_state_dict(state["model"])
        except (KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise GnnCmlError(f"{path} does not hold this run's model ({first}): "
                              f"retrain with gnn-cml train --overwrite --out {out}") from None
        result_path = path.parent / "result.json"
        require(result_path.is_file(), f"{path.parent} is unfinished (no result.json): "
                                       f"finish it with gnn-cml train --resume --out {out}")
        rundir.verify(out, result_path)
        record = _read_result(result_path)
        require(record is not None, f"{result_path} is cut short or damaged: finish the run again with "
                                    f"gnn-cml train --resume --out {out}")
        rundir.verify(out, path)  # a model altered after the run finished is never used
        run_seed = record["seed"]
        label = f"run {k + 1}/{len(runs)} ({path.parent.name})"
        shown = TaskProgress(label, len(tests), enabled=progress, what="evaluating")
        try:
            scores = evaluate_tasks(learner.test_model(), tests, METRICS["accuracy"], seed=run_seed,
                                    progress=shown.task)
        finally:
            shown.close()
        accs.append(100 * float(np.mean(scores)))
        status(f"{label} · test accuracy {accs[-1]:.2f}% on {len(tests)} tasks", progress)
    rundir.release(out)
    return {"graph": cfg.graph, "method": cfg.method, "cml": cfg.cml, "co_learner": co_learner,
            "test_tasks": len(tests),
            "test_accuracy": dict(mean_ci95(accs), runs=accs, unit="percent", **_note(len(accs)))}
