"""Non-graph benchmarks of the paper on the same engine: sinusoid regression and Omniglot.

Each benchmark module exposes its ``run_*`` function plus ``add_arguments(parser)`` /
``run(args)`` for ``gnn-cml reproduce regression`` and ``gnn-cml reproduce omniglot``.
This package module holds what both share: training one method with the shared
:class:`~gnn_cml.engine.trainer.Trainer`, summarising per-seed scores, learning-curve
plots and the common command-line options.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from gnn_cml.engine.metrics import mean_ci95
from gnn_cml.engine.trainer import Trainer, TrainerConfig
from gnn_cml.errors import require

# (label, with CML) for the two methods every benchmark compares.
METHODS = (("maml", False), ("maml+cml", True))


def derive_seed(seed: int, *keys: int) -> int:
    """Independent, reproducible seeds per (run seed, setting, purpose)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def train(learner, sampler, val_tasks, config: TrainerConfig, run_dir: Path, resume: bool, name: str) -> Trainer:
    """Meta-train ``learner`` with the shared Trainer; ``run_dir`` is cleared first unless resuming."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(learner, sampler, val_tasks, config, run_dir=run_dir, resume=resume, log_name=name,
                   tensorboard=False).fit()


def summarise(per_seed: Dict[int, List[float]], scale: float = 1.0) -> Dict:
    """Mean ± 95% CI over seeds of the per-seed mean, and over all test tasks pooled."""
    means = [scale * float(np.mean(v)) for v in per_seed.values()]
    pooled = [scale * s for v in per_seed.values() for s in v]
    return {"over_seeds": mean_ci95(means), "over_tasks": mean_ci95(pooled),
            "per_seed": {str(k): m for k, m in zip(per_seed, means)}}


def fmt(stats: Dict, digits: int = 3) -> str:
    """``mean ± ci95`` (``ci95`` is ``-`` for a single value)."""
    ci = stats["ci95"]
    return f"{stats['mean']:.{digits}f} ± {'-' if ci != ci else f'{ci:.{digits}f}'}"


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(panels: Dict[str, Dict[str, List[List[Dict]]]], key: str, path: Path, ylabel: str,
                scale: float = 1.0) -> Path:
    """Validation ``key`` (times ``scale``) against episode, one panel per entry of ``panels``.

    Each panel maps a method to its runs' Trainer histories: one thin line per seed and a
    thick mean over seeds per method.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, methods) in zip(axes[0], panels.items()):
        for i, (method, runs) in enumerate(methods.items()):
            for h in runs:
                ax.plot([r["episode"] for r in h], [scale * r[key] for r in h], color=f"C{i}", alpha=0.3, lw=0.8)
            length = min(len(h) for h in runs)
            mean = np.mean([[scale * r[key] for r in h[:length]] for h in runs], axis=0)
            ax.plot([r["episode"] for r in runs[0][:length]], mean, color=f"C{i}", lw=2,
                    label=f"{method} (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''})")
        ax.set_xlabel("meta-training episode")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def int_list(text: str) -> List[int]:
    """argparse type for ``1,5``-style lists of non-negative integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got '{text}'")
    return values


def add_common_arguments(p: argparse.ArgumentParser, out: str, shots: Sequence[int], seeds: Sequence[int],
                         iterations: int) -> None:
    """The options every benchmark takes: --out, --quick, --seeds, --shots, --iterations, --resume."""
    join = lambda v: ",".join(map(str, v))  # noqa: E731
    p.add_argument("--out", type=Path, default=Path(out), help=f"output directory (default {out})")
    p.add_argument("--quick", action="store_true", help="a smoke run of a minute or two (few episodes)")
    p.add_argument("--seeds", type=int_list, default=list(seeds), help=f"comma-separated seeds (default {join(seeds)})")
    p.add_argument("--shots", type=int_list, default=list(shots), help=f"comma-separated K (default {join(shots)})")
    p.add_argument("--iterations", type=int, default=iterations,
                   help=f"meta-training episodes per run (default {iterations})")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_common(args) -> None:
    """Reject impossible values of the common options with one-line errors."""
    require(args.iterations > 0, f"--iterations must be positive, got {args.iterations}")
    require(min(args.shots) > 0, f"--shots must be positive, got {args.shots}")


def command_line(target: str) -> str:
    """The command that produced a report, for its header."""
    if len(sys.argv) > 1 and sys.argv[1] == "reproduce":
        return " ".join(["gnn-cml", *sys.argv[1:]])
    return f"gnn-cml reproduce {target} (called as {Path(sys.argv[0]).name})"


__all__ = ["METHODS", "add_common_arguments", "check_common", "command_line", "derive_seed", "fmt",
           "int_list", "plot_curves", "pyplot", "summarise", "train"]
