"""The ``gnn-cml`` command line: one module per subcommand in ``gnn_cml.commands``.

Printing help imports neither torch nor torch_geometric: command modules import them inside
``run``, so ``gnn-cml --help`` and ``gnn-cml <command> --help`` answer at once
(``benchmarks/help_time.py`` measures it).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from gnn_cml.errors import GnnCmlError

DESCRIPTION = "Few-shot node classification with meta-learning and CML (Cooperative Meta-Learning, UAI 2024)."
EPILOG = """Run `gnn-cml COMMAND --help` for a command's options and their defaults.
Data: --root DIR, else $GNN_CML_DATA, else ./data (see data/README.md)."""

# subcommand name -> help; gnn_cml.commands.<name> exposes add_arguments(parser) and run(args)
COMMANDS = {
    "datasets": "list the known graphs: size, default class split, which files are present locally",
    "train": "meta-train a learner on a graph (optionally with CML) and test it",
    "evaluate": "re-evaluate a saved run on its fixed test tasks",
    "reproduce": "reproduce the paper's experiments (table3, gamma, regression, omniglot)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnn-cml", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from gnn_cml import __version__

    parser.add_argument("--version", action="version", version=f"gnn-cml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"gnn_cml.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gnn_cml.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "datasets" and not getattr(args, "no_progress", True) and os.environ.get("RANK", "0") == "0":
        # Importing torch and torch_geometric takes seconds: say so before the silence.
        print(f"gnn-cml {args.command}: starting (loading torch) ...", file=sys.stderr, flush=True)
    if "OMP_NUM_THREADS" not in os.environ and args.command != "datasets":  # datasets computes nothing
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
