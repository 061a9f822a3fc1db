"""What the regression and image experiments share (sinusoid regression and Omniglot).

Each of :mod:`gnn_cml.experiments.regression` and :mod:`gnn_cml.experiments.image` exposes
its ``run_*`` function plus ``run(args)`` for ``gnn-cml reproduce regression`` and
``gnn-cml reproduce omniglot``. This module holds what both share: training one method with the shared
:class:`~gnn_cml.engine.trainer.Trainer`, summarising per-seed scores, learning-curve
plots and the common command-line options.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from gnn_cml.experiments.options import add_common_arguments, int_list
from gnn_cml.engine.metrics import fmt_mean_ci, mean_ci95
from gnn_cml.errors import require
from gnn_cml.sampling.seeds import derive_seed

# Light on purpose (no torch at import): `gnn-cml reproduce <target> --help` imports only this
# package and its options module; the engine is imported where a benchmark runs.

# (label, with CML) for the two methods every benchmark compares.
METHODS = (("maml", False), ("maml+cml", True))


def train(learner, sampler, val_tasks, config: "TrainerConfig", run_dir: Path, resume: bool,
          name: str) -> "Trainer":
    """Meta-train ``learner`` with the shared Trainer; ``run_dir`` is cleared first unless resuming."""
    from gnn_cml.engine.trainer import Trainer

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
    return fmt_mean_ci(stats["mean"], stats["ci95"], digits)


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# MAML vs MAML+CML must be told apart in print and in grey scale: colour, line style and marker differ.
# MAML is drawn thinner and on top, so that it stays visible where the two coincide.
STYLES = {"maml": dict(color="C0", ls="--", marker="o", lw=1.8, zorder=4),
          "maml+cml": dict(color="C3", ls="-", marker="s", lw=2.8, zorder=3)}


def style(method: str, index: int = 0) -> Dict:
    return dict(STYLES.get(method, dict(color=f"C{index}", ls="-", marker="^", lw=2.0, zorder=3)))


QUICK_LABEL = "QUICK (SMOKE) RUN: few episodes, not a result"


def plot_curves(panels: Dict[str, Dict[str, List[List[Dict]]]], key: str, path: Path, ylabel: str,
                scale: float = 1.0, quick: bool = False) -> Path:
    """Validation ``key`` (times ``scale``) against episode, one panel per entry of ``panels``.

    Each panel maps a method to its runs' Trainer histories: one thin line per seed and a
    thick mean over seeds per method. Panels share their y axis so they can be compared.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, (title, methods) in zip(axes[0], panels.items()):
        for i, (method, runs) in enumerate(methods.items()):
            st = style(method, i)
            for h in runs:
                values = [scale * r[key] if r[key] is not None else np.nan for r in h]
                ax.plot([r["episode"] for r in h], values, color=st["color"], ls=st["ls"], alpha=0.3, lw=0.8)
            length = min(len(h) for h in runs)
            mean = np.mean([[scale * r[key] if r[key] is not None else np.nan for r in h[:length]] for h in runs],
                           axis=0)
            ax.plot([r["episode"] for r in runs[0][:length]], mean, color=st["color"], ls=st["ls"], lw=st["lw"],
                    zorder=st["zorder"], marker=st["marker"], markevery=max(1, length // 8), ms=5,
                    label=f"{method} (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''})")
        ax.set_xlabel("meta-training episode")
        ax.set_title(title, fontsize=10)
        ax.grid(color="0.9")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    if quick:
        fig.suptitle(QUICK_LABEL, color="firebrick", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
           "int_list", "plot_curves", "pyplot", "style", "summarise", "train"]
