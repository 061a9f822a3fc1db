"""``gnn-cml reproduce {table3,gamma,regression,omniglot}``: one command per table of the paper."""
from __future__ import annotations

import argparse
import importlib

TARGETS = {
    "table3": ("gnn_cml.report.table3", "Few-shot node classification (paper Table 3), paired base vs +CML."),
    "gamma": ("gnn_cml.report.gamma", "CML gamma sweep: accuracy and paired gain vs gamma = 0."),
    "regression": ("gnn_cml.benchmarks.regression", "Sinusoid regression, MAML vs MAML+CML (paper Fig. 2)."),
    "omniglot": ("gnn_cml.benchmarks.image", "Omniglot 5-way 1/5-shot and the 20-way one-shot runs."),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", metavar="TARGET")
    sub.required = True
    for name, (module, help_text) in TARGETS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        q = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(q)
        q.set_defaults(_target=mod.run)


def run(args) -> int:
    return int(args._target(args) or 0)
