"""``gnn-cml evaluate DIR``: re-evaluate a saved run on its fixed test tasks."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Re-evaluate every finished run of a run directory on its fixed test tasks (or on freshly
drawn ones) and print the test accuracy as JSON on stdout. Progress goes to stderr."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.add_argument("run_dir", type=Path, help="a directory written by `gnn-cml train`")
    p.add_argument("--tasks", type=int, metavar="N",
                   help="evaluate on N freshly drawn test tasks instead (default: the run's test_tasks.npz)")
    p.add_argument("--co-learner", action="store_true",
                   help="CML-dagger: predict with the co-learner (runs trained with --cml; default: off)")
    p.add_argument("--no-progress", action="store_true", help="print only the JSON result (default: progress on "
                                                              "stderr)")


def run(args) -> int:
    from gnn_cml.engine.checkpoint import dumps
    from gnn_cml.errors import require
    from gnn_cml.experiments.graph import evaluate_run

    require(args.tasks is None or args.tasks > 0, f"--tasks must be positive, got {args.tasks}")
    result = evaluate_run(args.run_dir, args.tasks, args.co_learner, progress=not args.no_progress)
    print(dumps(result, indent=2))
    return 0
