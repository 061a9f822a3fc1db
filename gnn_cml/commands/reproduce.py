"""``gnn-cml reproduce {table3,field,gamma,regression,omniglot}``: one command per experiment of the paper."""
from __future__ import annotations

import argparse
import importlib

# target -> (module that runs it, module:function adding its options (imports no torch), help)
TARGETS = {
    "table3": ("gnn_cml.report.table3", "gnn_cml.report.table3:add_arguments",
               "few-shot node classification, every method beside the paper's Table 3"),
    "field": ("gnn_cml.report.field", "gnn_cml.report.field:add_arguments",
              "the field's table: every learner ± CML beside linear probes, transductive and inductive"),
    "gamma": ("gnn_cml.report.gamma", "gnn_cml.report.gamma:add_arguments",
              "CML's gamma sweep: accuracy and paired gain against gamma = 0"),
    "regression": ("gnn_cml.experiments.regression", "gnn_cml.experiments.options:add_regression_arguments",
                   "sinusoid regression, MAML vs MAML+CML (the paper's Fig. 2)"),
    "omniglot": ("gnn_cml.experiments.image", "gnn_cml.experiments.options:add_omniglot_arguments",
                 "Omniglot 5-way 1/5-shot and the 20 canonical 20-way one-shot runs"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", metavar="TARGET")
    sub.required = True
    for name, (module, options, help_text) in TARGETS.items():
        options_module, function = options.split(":")
        try:
            add = getattr(importlib.import_module(options_module), function)
        except ModuleNotFoundError as exc:
            if exc.name != options_module:
                raise
            continue
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add(q)
        q.set_defaults(_target=module)


def run(args) -> int:
    return int(importlib.import_module(args._target).run(args) or 0)
