"""The one meta-training loop, shared by graph, regression and image benchmarks.

It knows nothing about graphs: it draws episodes from a sampler, asks the
learner for each task's :class:`TaskResult`, averages the outer objective over a
meta-batch, steps the outer optimiser, validates on fixed tasks, keeps the best
state, stops early, checkpoints atomically and resumes exactly.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from gnn_cml.engine import distributed as dist
from gnn_cml.engine.checkpoint import load_checkpoint, save_checkpoint
from gnn_cml.engine.metrics import finite, mean_ci95
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.sampling.episodes import Episode


def accuracy(result: TaskResult) -> float:
    return float((result.logits.argmax(-1) == result.targets).float().mean())


def query_mse(result: TaskResult) -> float:
    return float(torch.nn.functional.mse_loss(result.logits.detach(), result.targets))


METRICS: Dict[str, Callable[[TaskResult], float]] = {"accuracy": accuracy, "mse": query_mse}
HIGHER_IS_BETTER = {"accuracy": True, "mse": False}


def task_seed(seed: int, episode: int, index: int) -> int:
    """The torch seed for task ``index`` of meta-training episode ``episode`` (-1: evaluation).

    Reseeding per task makes dropout masks independent of how tasks are spread
    over processes and of where a run was interrupted.
    """
    return int(np.random.SeedSequence([seed, episode + 1, index]).generate_state(1)[0])


def seed_task(seed: int) -> None:
    """Seed the generators a task draws from: the CPU's (episode rows, AMM-GNN's node sets, dropout
    on CPU) and, where CUDA is in use, every GPU's (dropout masks there)."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


@dataclass
class TrainerConfig:
    episodes: int = 2000
    meta_batch: int = 1
    lr: float = 0.001
    weight_decay: float = 0.0
    val_every: int = 10
    patience: int = 10
    metric: str = "accuracy"
    seed: int = 0
    progress: bool = True


class Trainer:
    """Meta-train ``model`` on ``sampler`` episodes, validating on ``val_tasks``.

    ``run_dir`` (optional) receives ``metrics.jsonl`` (one JSON line per
    validation), ``checkpoint.pt`` and TensorBoard logs. With ``resume=True`` an
    existing checkpoint is continued; the result equals an uninterrupted run.
    """

    def __init__(self, model: MetaLearner, sampler, val_tasks: Sequence[Episode], config: TrainerConfig,
                 run_dir: Optional[Path] = None, resume: bool = False, log_name: str = "train",
                 tensorboard: bool = True, hparams: Optional[Dict] = None):
        # A fixed task list, or a resampling task source (``get_state``: fresh tasks at every validation).
        self.val_tasks = val_tasks if hasattr(val_tasks, "get_state") else list(val_tasks)
        self.model, self.sampler, self.cfg = model, sampler, config
        if config.metric not in METRICS:
            raise GnnCmlError(f"unknown metric '{config.metric}': use {', '.join(METRICS)}")
        self.metric, self.higher = METRICS[config.metric], HIGHER_IS_BETTER[config.metric]
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.run_dir = Path(run_dir) if run_dir else None
        self.log_name = log_name  # progress label, e.g. "run 2/5"
        self.hparams = hparams  # logged to TensorBoard with add_hparams at the end of fit()
        self.episode = 0
        self.best_score: Optional[float] = None
        self.best_episode = 0
        self.best_state = copy.deepcopy(model.state_dict())
        self.bad_validations = 0
        self.history: List[Dict] = []
        self.train_seconds = 0.0
        self.stopped_early = False
        self._checkpoint_episode = 0
        self._writer = None
        if self.run_dir is not None and dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path)
            try:
                self._restore(state)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                raise GnnCmlError(f"checkpoint {self.checkpoint_path} does not belong to this run ({first}): "
                                  f"delete it to restart this run, or use --overwrite") from None
        elif self.run_dir is not None and dist.is_main():
            # A fresh start: metric lines of a run killed before its first checkpoint are stale.
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        if self.run_dir is not None and dist.is_main():
            for stale in self.run_dir.glob(".checkpoint.pt.tmp*"):  # half-written by a killed process
                stale.unlink(missing_ok=True)
        if tensorboard and self.run_dir and dist.is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._writer = None

    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.run_dir / "checkpoint.pt" if self.run_dir else None

    # --- one meta-update ------------------------------------------------------------------------
    def step(self) -> Dict[str, float]:
        """One meta-training episode: a meta-batch of tasks, one outer update."""
        cfg = self.cfg
        episodes = [self.sampler.sample() for _ in range(cfg.meta_batch)]  # every rank draws the whole batch
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)
        losses, scores = [], []
        for index in dist.my_share(range(cfg.meta_batch)):
            seed_task(task_seed(cfg.seed, self.episode, index))
            result = self.model(episodes[index], train=True)
            (result.loss / cfg.meta_batch).backward()
            losses.append(float(result.loss.detach()))
            scores.append(self.metric(result))
        for p in self.model.parameters():  # same optimiser behaviour on every rank and in one process
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        totals = dist.reduce_gradients_and_stats(self.model, [sum(losses), sum(scores)])
        return self.apply_update(totals[0] / cfg.meta_batch, totals[1] / cfg.meta_batch)

    def apply_update(self, loss: float, score: float) -> Dict[str, float]:
        """Step the optimiser on the gradients in ``.grad`` (after checking them) and count the episode."""
        self.check_update(loss, all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters()))
        self.optimizer.step()
        self.episode += 1
        return {"loss": loss, self.cfg.metric: score}

    def check_update(self, loss: float, finite_grads: bool) -> None:
        """Refuse to step on a non-finite loss or meta-gradient: stepping would poison the weights
        (and the next checkpoint). Shared with the batched runs (:mod:`gnn_cml.engine.batched`)."""
        if not math.isfinite(loss) or not finite_grads:
            what = f"training loss became {loss}" if not math.isfinite(loss) else "meta-gradient became NaN/inf"
            if self.checkpoint_path and self.checkpoint_path.exists():
                where = (f"; the last good checkpoint ({self.checkpoint_path}) is kept, "
                         f"at episode {self._checkpoint_episode}")
            else:
                where = "; no checkpoint was written yet"
            who = f"{self.log_name}: " if self.log_name.startswith("run ") else ""
            raise GnnCmlError(f"{who}the {what} at episode {self.episode + 1}{where}: lower --lr or --inner-lr "
                              f"and rerun with --overwrite")

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, tasks: Sequence[Episode], model: Optional[MetaLearner] = None,
                 progress: Optional[Callable[[int], None]] = None) -> List[float]:
        """Per-task metric of ``model`` (default: the meta-test model) on ``tasks``."""
        return evaluate_tasks(model or self.model.test_model(), tasks, self.metric, seed=self.cfg.seed,
                              progress=progress)

    def _better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.higher else score < self.best_score

    # --- the loop -------------------------------------------------------------------------------
    def fit(self) -> "Trainer":
        from gnn_cml.engine.progress import TrainProgress

        cfg = self.cfg
        progress = TrainProgress(self.log_name, cfg.metric, cfg.patience, cfg.episodes,
                                 enabled=cfg.progress and dist.is_main())
        if self.best_score is not None:
            progress.validated(self.episode, self.history[-1][f"val_{cfg.metric}"] if self.history else
                               self.best_score, self.best_score, self.best_episode, self.bad_validations)
        progress.start(self.episode)
        window: List[Dict[str, float]] = []
        try:
            while self.episode < cfg.episodes and not self.stopped_early:
                start = time.perf_counter()
                window.append(self.step())
                self.train_seconds += time.perf_counter() - start
                progress.episode(self.episode)
                if self.episode % cfg.val_every == 0 or self.episode == cfg.episodes:
                    self.validate(window)
                    window = []
                    progress.validated(self.episode, self.history[-1][f"val_{cfg.metric}"], self.best_score,
                                       self.best_episode, self.bad_validations,
                                       final=self.stopped_early or self.episode >= cfg.episodes)
            progress.finish(self.episode, self.stopped_early)
        finally:
            progress.close()
            self.flush_log()
        self.model.load_state_dict(self.best_state)
        return self

    def log_test(self, value: float, extra: Optional[Dict[str, float]] = None) -> None:
        """Log the test score (``test/<metric>``; accuracy in percent, as ``metrics.jsonl``) and the run's
        hyperparameters to TensorBoard, then close it."""
        if self._writer is None:
            return
        metric = self.cfg.metric
        self._writer.add_scalar(f"test/{metric}", value, self.episode)
        if self.hparams:
            hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in self.hparams.items()}
            best = self.best_score
            if best is not None and metric == "accuracy":
                best = 100 * best
            metrics = {f"hparam/test_{metric}": value, f"hparam/best_val_{metric}": best,
                       **{f"hparam/{k}": v for k, v in (extra or {}).items()}}
            self._writer.add_hparams(hparams, {k: v for k, v in metrics.items() if v is not None}, run_name=".")
        self.close_writer()

    def flush_log(self) -> None:
        """Write buffered TensorBoard events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def validate(self, window: List[Dict[str, float]], scores: Optional[List[float]] = None) -> None:
        """Validate (``scores``: the validation tasks' metric when computed elsewhere, e.g. batched),
        update the best state and early stopping, log and checkpoint."""
        cfg = self.cfg
        if scores is None:
            scores = self.evaluate(self.val_tasks)
        val = float(np.mean(scores))
        improved = self._better(val)
        if improved:
            self.best_score, self.best_episode = val, self.episode
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.bad_validations = 0
        else:
            self.bad_validations += 1
            self.stopped_early = self.bad_validations >= cfg.patience
        record = {"episode": self.episode, "train_loss": finite(np.mean([w["loss"] for w in window])),
                  f"train_{cfg.metric}": finite(np.mean([w[cfg.metric] for w in window])),
                  f"val_{cfg.metric}": finite(val), f"best_val_{cfg.metric}": finite(self.best_score),
                  "seconds": round(self.train_seconds, 3)}
        self.history.append(record)
        if dist.is_main() and self.run_dir:
            line = metrics_line(record, cfg.metric)
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(line, allow_nan=False) + "\n")
            if self._writer is not None:
                # Tags are shared by every run (train/loss, val/accuracy, ...): each run has its own
                # directory, so TensorBoard overlays runs and methods on one chart per tag.
                tags = {"train_loss": "train/loss", f"train_{cfg.metric}": f"train/{cfg.metric}",
                        f"val_{cfg.metric}": f"val/{cfg.metric}", f"best_val_{cfg.metric}": f"val/best_{cfg.metric}"}
                for key, tag in tags.items():
                    if line[key] is not None:
                        self._writer.add_scalar(tag, line[key], self.episode)
            save_checkpoint(self.checkpoint_path, self.state())
            self._checkpoint_episode = self.episode

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self) -> Dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "best_state": self.best_state, "episode": self.episode, "best_score": self.best_score,
                "best_episode": self.best_episode, "bad_validations": self.bad_validations,
                "stopped_early": self.stopped_early, "history": self.history,
                "sampler": self.sampler.get_state(), "train_seconds": self.train_seconds,
                "val_tasks": self.val_tasks.get_state() if hasattr(self.val_tasks, "get_state") else None}

    def _restore(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_state = state["best_state"]
        for key in ("episode", "best_score", "best_episode", "bad_validations", "stopped_early", "history",
                    "train_seconds"):
            setattr(self, key, state[key])
        self.sampler.set_state(state["sampler"])
        if hasattr(self.val_tasks, "set_state") and state.get("val_tasks") is not None:
            self.val_tasks.set_state(state["val_tasks"])
        self._checkpoint_episode = self.episode
        if self.run_dir is not None:  # drop metric lines written after the checkpoint
            path = self.run_dir / "metrics.jsonl"
            if path.exists():
                lines = path.read_text().splitlines()[: len(self.history)]
                path.write_text("".join(line + "\n" for line in lines))


def metrics_line(record: Dict, metric: str) -> Dict:
    """A validation record as ``metrics.jsonl`` stores it: accuracies in percent, like ``results.json``
    and the console, with ``"unit": "percent"`` (lines without a unit, from older runs, hold fractions)."""
    if metric != "accuracy":
        return record
    line = {k: (None if v is None else round(100 * v, 4)) if k.endswith("accuracy") else v for k, v in record.items()}
    return dict(line, unit="percent")


def evaluate_tasks(model: MetaLearner, tasks: Sequence[Episode], metric: Callable[[TaskResult], float],
                   seed: int = 0, progress: Optional[Callable[[int], None]] = None) -> List[float]:
    """Meta-test ``model`` on every task (inner-loop adaptation, no outer graph).

    ``progress(done)`` is called after each task (e.g. :meth:`TaskProgress.task`).
    """
    was_training = model.training
    model.eval()
    scores = []
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        for i, task in enumerate(tasks):
            seed_task(task_seed(seed, -1, i))
            scores.append(metric(model(task, train=False)))
            if progress is not None:
                progress(i + 1)
    model.train(was_training)
    return scores


__all__ = ["Trainer", "TrainerConfig", "evaluate_tasks", "mean_ci95", "task_seed", "METRICS"]
