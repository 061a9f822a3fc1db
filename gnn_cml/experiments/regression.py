"""Few-shot sinusoid regression (paper Fig. 2): MAML vs MAML+CML on the shared engine.

Tasks are ``y = A sin(x - b)`` with amplitude ``A ~ U[0.1, 5]``, phase ``b ~ U[0, pi]``
and inputs ``x ~ U[-5, 5]`` (Finn et al. 2017). The learner is an MLP 1-40-40-1 (ReLU):
the encoder ``psi`` is 1-40-40, the head ``theta`` is ``Linear(40, 1)``. MAML takes one
inner step at 0.01 on the K support points; the outer optimiser is Adam 1e-3 over
meta-batches of 4 tasks; the loss is the MSE. CML adds a co-learner with one hidden
layer of 40 (gamma 0.2). The paper shows Fig. 2 without numbers; we report the test
MSE after one inner step on fixed tasks, the same tasks for both methods.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from gnn_cml.experiments.options import REGRESSION_ITERATIONS, add_regression_arguments
from gnn_cml.experiments.common import (METHODS, check_common, command_line, derive_seed, fmt,
                                plot_curves, pyplot, style, summarise, train)
from gnn_cml.experiments.common import QUICK_LABEL
from gnn_cml.engine import rundir
from gnn_cml.engine.checkpoint import write_json
from gnn_cml.engine.trainer import TrainerConfig
from gnn_cml.errors import require
from gnn_cml.experiments.executor import Unit, clear_markers, executor_from_args, run_units
from gnn_cml.meta.base import MetaLearner
from gnn_cml.meta.factory import with_cml
from gnn_cml.meta.maml import MAML
from gnn_cml.sampling.episodes import Episode

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, float(np.pi))
X_RANGE = (-5.0, 5.0)
HIDDEN = 40
INNER_LR, INNER_STEPS, META_BATCH, LR, GAMMA = 0.01, 1, 4, 1e-3, 0.2
DEFAULT_ITERATIONS = REGRESSION_ITERATIONS
EVAL_QUERIES = 100  # query points per validation/test task (training uses K, as MAML)
VAL_TASKS, VALIDATIONS = 100, 50
QUICK = {"iterations": 150, "val_tasks": 20, "validations": 5}
_STREAM = {"train": 1, "val": 2, "test": 3, "init": 4, "plot": 5}


class SinusoidSampler:
    """K-shot sinusoid tasks: ``support``/``query`` are ``x`` as ``[n, 1]`` float tensors, targets ``y``."""

    def __init__(self, shots: int, queries: int, seed: int = 0):
        require(shots > 0 and queries > 0, f"shots and queries must be positive, got {shots} and {queries}")
        self.shots, self.queries = int(shots), int(queries)
        self.rng = np.random.default_rng(seed)

    def draw(self, num_tasks: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``num_tasks`` tasks at once: amplitudes ``[T]``, phases ``[T]``, ``x`` and ``y`` ``[T, K+Q, 1]``."""
        amplitude = self.rng.uniform(*AMPLITUDE, size=num_tasks)
        phase = self.rng.uniform(*PHASE, size=num_tasks)
        x = self.rng.uniform(*X_RANGE, size=(num_tasks, self.shots + self.queries, 1))
        return amplitude, phase, x, sinusoid(x, amplitude[:, None, None], phase[:, None, None])

    def tasks(self, num_tasks: int) -> List[Episode]:
        """``num_tasks`` episodes drawn in one vectorised call."""
        _, _, x, y = self.draw(num_tasks)
        return [_episode(x[i], y[i], self.shots) for i in range(num_tasks)]

    def sample(self) -> Episode:
        return self.tasks(1)[0]

    def get_state(self) -> Dict:
        """The RNG state (plain Python types), for checkpoints."""
        return self.rng.bit_generator.state

    def set_state(self, state: Dict) -> None:
        self.rng.bit_generator.state = state


def sinusoid(x, amplitude, phase):
    """``amplitude * sin(x - phase)``."""
    return amplitude * np.sin(x - phase)


def _episode(x: np.ndarray, y: np.ndarray, shots: int) -> Episode:
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Episode(t(x[:shots]), t(y[:shots]), t(x[shots:]), t(y[shots:]), classes=None)


def mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(predictions, targets)


def build_learner(cml: bool, seed: int, gamma: float = GAMMA) -> MetaLearner:
    """MLP 1-40-40-1 MAML (one inner step at 0.01, MSE), optionally with a 40-hidden CML co-learner.

    The base learner's initial weights depend only on ``seed``, with or without CML.
    """
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(1, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
    learner = MAML(encoder, nn.Linear(HIDDEN, 1), inner_steps=INNER_STEPS, inner_lr=INNER_LR, task_loss=mse)
    return with_cml(learner, HIDDEN, 1, gamma=gamma, hidden=(HIDDEN,), seed=seed) if cml else learner


def train_run(shots: int, seed: int, method: str, cml: bool, iterations: int, val: List[Episode], val_every: int,
              out: Path, resume: bool, progress: bool):
    """Meta-train one (K, seed, method) run into ``out/runs/K{k}/seed{s}/{method}``; returns (learner, trainer)."""
    key = lambda stream: derive_seed(seed, shots, _STREAM[stream])  # noqa: E731
    learner = build_learner(cml, key("init"))
    config = TrainerConfig(episodes=iterations, meta_batch=META_BATCH, lr=LR, val_every=val_every,
                           patience=iterations // val_every + 1, metric="mse", seed=key("init"), progress=progress)
    trainer = train(learner, SinusoidSampler(shots, shots, key("train")), val, config,
                    out / "runs" / f"K{shots}" / f"seed{seed}" / method, resume, f"K={shots} {method} s{seed}")
    return learner, trainer


def regression_unit(shots: int, seed: int, method: str, cml: bool, iterations: int, val_tasks: int, val_every: int,
                    out: Path, resume: bool, progress: bool) -> None:
    """A unit of ``reproduce regression``: one run's meta-training (its checkpoint is what it leaves)."""
    val = SinusoidSampler(shots, EVAL_QUERIES, derive_seed(seed, shots, _STREAM["val"])).tasks(val_tasks)
    train_run(shots, seed, method, cml, iterations, val, val_every, Path(out), resume, progress)


def run_regression(shots_list: Sequence[int] = (5, 10, 20), seeds: Sequence[int] = (0, 1, 2),
                   iterations: int = DEFAULT_ITERATIONS, test_tasks: int = 600,
                   out: Path = Path("results/regression"), quick: bool = False, resume: bool = False,
                   progress: bool = True, command: Optional[str] = None, executor=None) -> Dict:
    """Train MAML and MAML+CML per K and seed, test both on the same fixed tasks, write the reports.

    ``executor`` (``gnn_cml.experiments.executor``): train the runs as units there first; testing and
    the reports then read their checkpoints (same numbers as a serial run).

    Writes ``regression.md``, ``regression.csv``, ``regression.json``, ``regression.png``
    (Fig. 2 style fits) and ``regression_curves.png`` (validation MSE) to ``out``; each
    run's ``metrics.jsonl`` and checkpoint go to ``out/runs/K{k}/seed{s}/{method}``.
    """
    require(len(shots_list) > 0 and len(seeds) > 0, "give at least one K and one seed")
    require(test_tasks >= 1, f"test_tasks must be positive, got {test_tasks}")
    out = Path(out)
    rundir.hold(out, what="reproduce output folder")  # one process per output tree (creates it)
    rundir.announce(out)
    iterations = min(iterations, QUICK["iterations"]) if quick else iterations
    val_tasks = QUICK["val_tasks"] if quick else VAL_TASKS
    val_every = max(1, iterations // (QUICK["validations"] if quick else VALIDATIONS))
    started = time.perf_counter()
    if executor is not None:  # every (K, seed, method) trained as a unit; the loop below reads them back
        units = [Unit(f"K={shots} seed {seed} {method}", regression_unit,
                      dict(shots=shots, seed=seed, method=method, cml=cml, iterations=iterations, val_tasks=val_tasks,
                           val_every=val_every, out=out, resume=resume, progress=progress),
                      retry_kwargs=dict(resume=True))
                 for shots in shots_list for seed in seeds for method, cml in METHODS]
        run_units(units, executor, out, progress)
        resume = True
    else:
        clear_markers(out)  # left by a study with --jobs/--executor that was killed
    cells, histories, fitted = [], {}, {}
    for shots in shots_list:
        scores: Dict[str, Dict[int, List[float]]] = {m: {} for m, _ in METHODS}
        runs = []
        for seed in seeds:
            key = lambda stream: derive_seed(seed, shots, _STREAM[stream])  # noqa: E731
            val = SinusoidSampler(shots, EVAL_QUERIES, key("val")).tasks(val_tasks)
            tests = SinusoidSampler(shots, EVAL_QUERIES, key("test")).tasks(test_tasks)
            for method, cml in METHODS:
                learner, trainer = train_run(shots, seed, method, cml, iterations, val, val_every, out, resume,
                                             progress)
                scores[method][seed] = trainer.evaluate(tests)
                histories.setdefault(shots, {}).setdefault(method, []).append(trainer.history)
                runs.append({"seed": seed, "method": method, "test_mse": float(np.mean(scores[method][seed])),
                             "best_val_mse": trainer.best_score, "best_episode": trainer.best_episode,
                             "episodes": trainer.episode, "train_seconds": trainer.train_seconds})
                if seed == seeds[0]:
                    fitted.setdefault(shots, {})[method] = learner.test_model()
        diffs = {s: list(np.subtract(scores["maml+cml"][s], scores["maml"][s])) for s in seeds}
        cells.append({"shots": shots, "methods": {m: summarise(scores[m]) for m, _ in METHODS},
                      "cml_minus_maml": dict(summarise(diffs),
                                             cml_lower_on_seeds=sum(float(np.mean(d)) < 0 for d in diffs.values())),
                      "runs": runs})
    wall = time.perf_counter() - started
    result = {"benchmark": "sinusoid regression", "metric": "test MSE after one inner step (lower is better)",
              "command": command or command_line("regression"), "quick": quick, "wall_time_s": wall,
              "config": {"shots": list(shots_list), "seeds": list(seeds), "iterations": iterations,
                         "meta_batch": META_BATCH, "lr": LR, "inner_lr": INNER_LR, "inner_steps": INNER_STEPS,
                         "gamma": GAMMA, "co_learner_hidden": [HIDDEN], "train_queries": "K",
                         "eval_queries": EVAL_QUERIES, "val_tasks": val_tasks, "val_every": val_every,
                         "test_tasks": test_tasks, "amplitude": AMPLITUDE, "phase": PHASE, "x_range": X_RANGE},
              "cells": cells,
              "histories": {str(k): v for k, v in histories.items()}}
    write_json(out / "regression.json", result)
    _write_tables(result, out)
    plot_fits(fitted, derive_seed(seeds[0], _STREAM["plot"]), out / "regression.png", quick)
    plot_curves({f"sinusoid K = {k}: validation MSE ({val_tasks} tasks)": per for k, per in histories.items()},
                "val_mse", out / "regression_curves.png", "validation MSE", quick=quick)
    rundir.release(out)
    return result


def _write_tables(result: Dict, out: Path) -> None:
    with open(out / "regression.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["K", "method", "mse_mean_over_seeds", "mse_ci95_over_seeds", "mse_mean_over_tasks",
                    "mse_ci95_over_tasks", "seeds", "tasks_per_seed"])
        for cell in result["cells"]:
            for method, s in cell["methods"].items():
                w.writerow([cell["shots"], method, f"{s['over_seeds']['mean']:.5f}", f"{s['over_seeds']['ci95']:.5f}",
                            f"{s['over_tasks']['mean']:.5f}", f"{s['over_tasks']['ci95']:.5f}",
                            s["over_seeds"]["n"], result["config"]["test_tasks"]])
    cfg = result["config"]
    lines = ["# Few-shot sinusoid regression (paper Fig. 2): test MSE after one inner step", "",
             f"Command: `{result['command']}`", "",
             f"{cfg['iterations']} meta-training episodes per run (meta-batch {cfg['meta_batch']}, Adam "
             f"{cfg['lr']}, inner lr {cfg['inner_lr']}, gamma {cfg['gamma']}), seeds {cfg['seeds']}; each seed "
             f"tests both methods on the same {cfg['test_tasks']} fixed tasks with {cfg['eval_queries']} query "
             f"points each. The model kept is the one with the best validation MSE ({cfg['val_tasks']} fixed "
             f"tasks). The paper shows this experiment as a figure only: it prints no numbers to compare with.",
             "", "Over seeds: mean of the per-seed mean MSE ± Student-t 95% CI over seeds. Over tasks: all test "
             "tasks of all seeds pooled. CML − MAML: paired per-task difference (negative = CML better).", "",
             "| K | method | MSE over seeds | MSE over tasks | per seed |", "|---|---|---|---|---|"]
    for cell in result["cells"]:
        for method, s in cell["methods"].items():
            per_seed = ", ".join(f"{v:.3f}" for v in s["per_seed"].values())
            lines.append(f"| {cell['shots']} | {method} | {fmt(s['over_seeds'])} | {fmt(s['over_tasks'])} | "
                         f"{per_seed} |")
        d = cell["cml_minus_maml"]
        lines.append(f"| {cell['shots']} | CML − MAML | {fmt(d['over_seeds'])} | {fmt(d['over_tasks'])} | "
                     f"CML lower on {d['cml_lower_on_seeds']}/{d['over_seeds']['n']} seeds |")
    lines += ["", f"Wall time: {result['wall_time_s']:.0f} s. Figures: `regression.png` (fits after one inner "
              "step, first seed), `regression_curves.png` (validation MSE)."]
    (out / "regression.md").write_text("\n".join(lines) + "\n")


def plot_fits(fitted: Dict[int, Dict[str, MetaLearner]], seed: int, path: Path, quick: bool = False) -> Path:
    """Fig. 2 style: one sinusoid, K support points, MAML's and CML's fit after one inner step, per K.

    Panels share both axes; MAML is dashed blue, MAML+CML solid red; the legend sits below the
    panels so that it covers no point.
    """
    plt = pyplot()
    rng = np.random.default_rng(seed)
    amplitude, phase = rng.uniform(*AMPLITUDE), rng.uniform(*PHASE)
    grid = np.linspace(*X_RANGE, 200)[:, None]
    fig, axes = plt.subplots(1, len(fitted), figsize=(4.2 * len(fitted), 3.8), squeeze=False, sharex=True,
                             sharey=True)
    for ax, (shots, models) in zip(axes[0], fitted.items()):
        x = rng.uniform(*X_RANGE, size=(shots, 1))
        episode = _episode(np.concatenate([x, grid]), sinusoid(np.concatenate([x, grid]), amplitude, phase), shots)
        ax.plot(grid, episode.query_y.numpy(), color="black", lw=2.2, label="ground truth")
        for i, (method, model) in enumerate(models.items()):
            model.eval()
            pred = model(episode, train=False).logits.detach().numpy()
            st = style(method, i)
            ax.plot(grid, pred, color=st["color"], ls=st["ls"], lw=st["lw"], zorder=st["zorder"],
                    label=f"{method} (after 1 inner step)")
        ax.scatter(x, episode.support_y.numpy(), marker="^", s=40, color="gold", edgecolor="black", zorder=4,
                   label="support points")
        ax.set_title(f"K = {shots}")
        ax.set_xlabel("x")
        ax.grid(color="0.9")
    axes[0][0].set_ylabel("y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    title = f"Sinusoid (A = {amplitude:.2f}, phase = {phase:.2f}): fits after one inner step"
    if quick:
        title += f"\n{QUICK_LABEL}"
    fig.suptitle(title, color="firebrick" if quick else "black", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


add_arguments = add_regression_arguments


def run(args) -> int:
    """Entry point of ``gnn-cml reproduce regression``."""
    check_common(args)
    result = run_regression(args.shots, args.seeds, args.iterations, args.test_tasks, args.out, args.quick,
                            args.resume, progress=not args.no_progress, executor=executor_from_args(args))
    for cell in result["cells"]:
        print(f"K={cell['shots']}: " + ", ".join(f"{m} {fmt(s['over_seeds'])}" for m, s in cell["methods"].items()))
    print(Path(args.out) / "regression.md")
    return 0
