"""A graph meta-learning experiment: graph -> split -> episodes -> learner -> runs -> results.json."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import yaml

from gnn_cml.config import RunConfig, _check_types
from gnn_cml.data import default_split, load_graph
from gnn_cml.engine import distributed as dist
from gnn_cml.engine.checkpoint import load_checkpoint, save_checkpoint, write_json
from gnn_cml.engine.metrics import mean_ci95
from gnn_cml.engine.trainer import METRICS, Trainer, TrainerConfig, evaluate_tasks
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.meta.factory import build_learner
from gnn_cml.models.graph import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler, TaskSet

_STREAM = {"train": 1, "val": 2, "test": 3}


def derive_seed(seed: int, *keys: int) -> int:
    """Independent, reproducible seeds per (run, purpose) from one run seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


@dataclass
class GraphTask:
    """Everything parameter-free an experiment needs, built (and validated) before any file is written."""

    cfg: RunConfig
    data: object
    graph: PreparedGraph
    split: ClassSplit

    @classmethod
    def build(cls, cfg: RunConfig) -> "GraphTask":
        data = load_graph(cfg.graph, cfg.data_root)
        split = default_split(data, seed=cfg.split_seed, counts=cfg.split)
        task = cls(cfg, data, None, split)
        # Fail on impossible requests now, before anything is trained or written.
        for part, queries in (("train", cfg.queries), ("val", cfg.queries), ("test", cfg.test_queries)):
            task.sampler(part, queries, seed=0)
        task.graph = PreparedGraph(data, norm=cfg.norm)
        return task

    def sampler(self, part: str, queries: int, seed: int) -> EpisodeSampler:
        cfg = self.cfg
        try:
            return EpisodeSampler(self.data.y, self.split.part(part), cfg.ways, cfg.shots, queries, seed=seed,
                                  labels_per_class=cfg.labels_per_class if part == "train" else None)
        except GnnCmlError as exc:
            raise GnnCmlError(f"{part} classes {list(self.split.part(part))}: {exc}") from None

    def test_tasks(self) -> TaskSet:
        cfg = self.cfg
        meta = {"graph": cfg.graph, "split": self.split.to_dict(), "seed": cfg.seed}
        return TaskSet.generate(self.sampler("test", cfg.test_queries, derive_seed(cfg.seed, _STREAM["test"])),
                                cfg.test_tasks, meta)


def prepare_output(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber another run; check a resumed run has the same config."""
    config_path = out / "config.yaml"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif resume:
            require(config_path.exists(), f"{out} holds no gnn-cml run to resume: pick another --out")
            saved = yaml.safe_load(config_path.read_text()) or {}
            _check_types(saved, str(config_path))
            current = cfg.to_dict()
            changed = [k for k in current if k != "runs" and saved.get(k) != current[k]]
            require(not changed, f"--resume with a different config than {config_path} ({', '.join(changed)} "
                                 f"changed): rerun with the saved settings or use --overwrite")
        else:
            raise GnnCmlError(f"output directory {out} exists from another run: pass --resume to continue it "
                              f"or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)


def run_experiment(cfg: RunConfig, out: Path, resume: bool = False, overwrite: bool = False,
                   task_file: Optional[Path] = None, progress: bool = True) -> Dict:
    """Train ``cfg.runs`` independent runs and write ``results.json`` to ``out``."""
    out = Path(out)
    task = GraphTask.build(cfg)
    if task_file is not None:
        tests = TaskSet.load(task_file)
        require(tests.meta.get("ways") == cfg.ways and tests.meta.get("shots") == cfg.shots,
                f"task file {task_file} holds {tests.meta.get('ways')}-way {tests.meta.get('shots')}-shot tasks, "
                f"not {cfg.ways}-way {cfg.shots}-shot: regenerate it or drop --test-tasks")
    else:
        tests = task.test_tasks()
    if dist.is_main():
        prepare_output(out, cfg, resume, overwrite)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(out / "split.json", task.split.to_dict())
        if not (out / "test_tasks.npz").exists():
            tests.save(out / "test_tasks.npz")
    dist.barrier()
    started = time.perf_counter()
    runs: List[Dict] = []
    for run in range(cfg.runs):
        runs.append(_one_run(task, tests, run, out / f"run_{run}", resume, progress))
    result = summarise(cfg, runs, time.perf_counter() - started, task.split)
    if dist.is_main():
        write_json(out / "results.json", result)
    return result


def _one_run(task: GraphTask, tests: TaskSet, run: int, run_dir: Path, resume: bool, progress: bool) -> Dict:
    cfg = task.cfg
    result_path = run_dir / "result.json"
    if resume and result_path.exists():
        return json.loads(result_path.read_text())
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    seed = derive_seed(cfg.seed, 100 + run)
    learner = build_learner(cfg, task.graph, seed=seed)
    val = TaskSet.generate(task.sampler("val", cfg.queries, derive_seed(seed, _STREAM["val"])), cfg.val_tasks)
    trainer = Trainer(
        learner, task.sampler("train", cfg.queries, derive_seed(seed, _STREAM["train"])), val,
        TrainerConfig(episodes=cfg.episodes, meta_batch=cfg.meta_batch, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, val_every=cfg.val_every, patience=cfg.patience,
                      metric="accuracy", seed=seed, progress=progress),
        run_dir=run_dir, resume=resume, log_name=f"{cfg.method}{'+cml' if cfg.cml else ''} run {run}")
    trainer.fit()
    start = time.perf_counter()
    scores = trainer.evaluate(tests)
    test_seconds = time.perf_counter() - start
    summary = mean_ci95([100 * s for s in scores])
    record = {"run": run, "seed": seed, "test_accuracy": summary["mean"], "test_ci95": summary["ci95"],
              "test_tasks": len(scores), "best_val_accuracy": 100 * (trainer.best_score or 0.0),
              "best_episode": trainer.best_episode, "episodes": trainer.episode,
              "stopped_early": trainer.stopped_early, "train_seconds": trainer.train_seconds,
              "test_seconds": test_seconds,
              "episodes_per_s": trainer.episode / trainer.train_seconds if trainer.train_seconds else None}
    if dist.is_main():
        save_checkpoint(run_dir / "model.pt", {"model": learner.state_dict(), "config": cfg.to_dict()})
        write_json(result_path, record)
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
                                   "ci95 is a Student-t interval over runs"),
        "mean_within_run_ci95": float(np.mean([r["test_ci95"] for r in runs])),
        "runs": runs, "split": split.to_dict(), "wall_time_s": wall,
        "episodes_per_s": episodes / seconds if seconds else None, "config": cfg.to_dict(),
    }


def evaluate_run(out: Path, num_tasks: Optional[int] = None, co_learner: bool = False,
                 progress: bool = False) -> Dict:
    """Re-evaluate every saved run of ``out`` on its fixed test tasks (or ``num_tasks`` new ones)."""
    from gnn_cml.config import resolve

    out = Path(out)
    require((out / "config.yaml").exists(), f"{out} is not a gnn-cml run directory (no config.yaml): check the path")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    cfg = resolve(saved)
    require(not co_learner or cfg.cml, f"--co-learner needs a run trained with --cml; {out} has none")
    if co_learner:
        cfg.dagger = True
    task = GraphTask.build(cfg)
    if num_tasks is not None:
        cfg.test_tasks = num_tasks
        tests = task.test_tasks()
    else:
        tests = TaskSet.load(out / "test_tasks.npz")
    accs = []
    runs = sorted(out.glob("run_*/model.pt"), key=lambda p: int(p.parent.name.split("_")[1]))
    require(runs, f"{out} has no finished run (run_*/model.pt): train it first or use --resume")
    for path in runs:
        learner = build_learner(cfg, task.graph)
        learner.load_state_dict(load_checkpoint(path)["model"])
        run_seed = json.loads((path.parent / "result.json").read_text())["seed"]
        scores = evaluate_tasks(learner.test_model(), tests, METRICS["accuracy"], seed=run_seed)
        accs.append(100 * float(np.mean(scores)))
    return {"graph": cfg.graph, "method": cfg.method, "cml": cfg.cml, "co_learner": co_learner,
            "test_tasks": len(tests), "test_accuracy": dict(mean_ci95(accs), runs=accs, unit="percent")}
