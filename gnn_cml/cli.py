"""The ``gnn-cml`` command line: one module per subcommand in ``gnn_cml.commands``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from gnn_cml.errors import GnnCmlError

# subcommand name -> module in gnn_cml.commands exposing add_arguments(parser) and run(args)
COMMANDS = {
    "datasets": "Known graphs: size, default class split, local availability.",
    "train": "Meta-train a learner on a graph (optionally with CML) and test it.",
    "evaluate": "Re-evaluate a saved run on fixed test tasks.",
    "reproduce": "Reproduce the paper's tables (table3, gamma, regression, omniglot).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnn-cml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"gnn_cml.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gnn_cml.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        # Episode-sized work is fastest on one thread; more threads slow it down on busy machines
        # (benchmarks/RESULTS.md). OMP_NUM_THREADS chooses otherwise.
        import torch

        torch.set_num_threads(1)
    try:
        return int(args._run(args) or 0)
    except GnnCmlError as exc:
        print(f"gnn-cml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gnn-cml {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
