"""``gnn-cml evaluate DIR``: re-evaluate a saved run on its fixed test tasks."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a directory written by `gnn-cml train`")
    p.add_argument("--tasks", type=int, help="evaluate on this many freshly drawn test tasks instead")
    p.add_argument("--co-learner", action="store_true", help="CML-dagger: predict with the co-learner")


def run(args) -> int:
    from gnn_cml.errors import require
    from gnn_cml.experiment import evaluate_run

    require(args.tasks is None or args.tasks > 0, f"--tasks must be positive, got {args.tasks}")
    print(json.dumps(evaluate_run(args.run_dir, args.tasks, args.co_learner), indent=2))
    return 0
