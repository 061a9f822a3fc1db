"""Command-line options of ``gnn-cml reproduce regression`` and ``reproduce omniglot``.

Kept free of torch so that ``--help`` answers at once; the benchmark modules import their
defaults from here.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Sequence

REGRESSION_ITERATIONS = 10000
REGRESSION_TEST_TASKS = 600
# One meta-batch of 4 second-order Omniglot tasks costs about 0.7-1.1 s on a 2-core CPU (1-shot and 5-shot,
# MAML or CML; OMP_NUM_THREADS=1 when other jobs share the cores), an evaluation task about 0.08 s. 400
# episodes per run (1.3% of the paper's 30,000) keep a full `reproduce omniglot` (1- and 5-shot, both
# methods, one seed, 600 test tasks) under about 30 minutes there; raise --iterations on faster hardware.
OMNIGLOT_ITERATIONS = 400
OMNIGLOT_SEEDS = (0,)
OMNIGLOT_TEST_TASKS = 600


def int_list(text: str) -> List[int]:
    """argparse type for ``1,5``-style lists of non-negative integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 0 or max(values) > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers in 0..2**32 - 1, got '{text}'")
    return values


def add_common_arguments(p: argparse.ArgumentParser, out: str, shots: Sequence[int], seeds: Sequence[int],
                         iterations: int, quick: str) -> None:
    """The options every benchmark takes: --out, --quick, --seeds, --shots, --iterations, --resume."""
    join = lambda v: ",".join(map(str, v))  # noqa: E731
    p.add_argument("--out", type=Path, default=Path(out), metavar="DIR", help=f"output directory (default: {out})")
    p.add_argument("--quick", action="store_true", help=f"a smoke run ({quick}; default: off)")
    p.add_argument("--seeds", type=int_list, default=list(seeds), metavar="S,S",
                   help=f"comma-separated seeds (default: {join(seeds)})")
    p.add_argument("--shots", type=int_list, default=list(shots), metavar="K,K",
                   help=f"comma-separated K (default: {join(shots)})")
    p.add_argument("--iterations", type=int, default=iterations, metavar="N",
                   help=f"meta-training episodes per run (default: {iterations})")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints "
                                                         "(default: off)")
    p.add_argument("--no-progress", action="store_true", help="print no progress on stderr (default: progress on)")
    from gnn_cml.experiments.executor import add_executor_arguments  # torch-free, like this module

    add_executor_arguments(p)


def add_regression_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``gnn-cml reproduce regression``."""
    add_common_arguments(p, "results/regression", shots=(5, 10, 20), seeds=(0, 1, 2),
                         iterations=REGRESSION_ITERATIONS, quick="150 episodes per run, about 1.5 minutes on 2 CPU cores")
    p.add_argument("--test-tasks", type=int, default=REGRESSION_TEST_TASKS, metavar="N",
                   help=f"fixed test tasks per seed (default: {REGRESSION_TEST_TASKS})")


def add_omniglot_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``gnn-cml reproduce omniglot``."""
    add_common_arguments(p, "results/omniglot", shots=(1, 5), seeds=OMNIGLOT_SEEDS, iterations=OMNIGLOT_ITERATIONS,
                         quick="20 episodes per run and 40 test tasks, a minute or two on 2 CPU cores")
    p.add_argument("--ways", type=int, default=5, metavar="N", help="N of the N-way tasks (default: 5)")
    p.add_argument("--test-tasks", type=int, default=OMNIGLOT_TEST_TASKS, metavar="N",
                   help=f"fixed test tasks per seed (default: {OMNIGLOT_TEST_TASKS})")
    p.add_argument("--root", dest="data_root", metavar="DIR",
                   help="data root holding omniglot/ (default: $GNN_CML_DATA, else ./data)")
