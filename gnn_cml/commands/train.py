"""``gnn-cml train``: meta-train one method on one graph, test it, write a run directory."""
from __future__ import annotations

import argparse
import json
import os
import typing
from dataclasses import fields
from pathlib import Path

from gnn_cml import methods
from gnn_cml.config import RunConfig, cli_flag, describe_default, method_label, resolve

_OPTION_TYPES = {"int": int, "float": float, "str": str, "path": str}

DESCRIPTION = """Meta-train a few-shot node classifier on a graph (optionally with CML), test it on fixed
test tasks, and write a run directory (config.yaml, results.json, per-run metrics and models).

Settings, lowest first: built-in defaults < per-graph defaults < per-method defaults < --config
FILE.yaml < options. Where a default depends on --method or --graph the option says so; the run
directory's config.yaml holds the values a run actually used."""

_EXAMPLE = methods.table3_methods()[0]
EPILOG = f"""examples:
  gnn-cml train --graph cora --method {_EXAMPLE} --cml --ways 2 --shots 5
  gnn-cml train --config configs/citeseer.yaml --out runs/citeseer-{_EXAMPLE}-cml
Progress goes to stderr (one line per validation when stderr is not a terminal); the final JSON
summary line goes to stdout."""


def _split(text: str):
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated class counts like 3,2,2, got {text!r}")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated class counts like 3,2,2, got {text!r}")
    return parts


def _scalar_type(annotation: str):
    """The argparse type of a RunConfig annotation (``int``, ``Optional[float]``, ...)."""
    for name, kind in (("int", int), ("float", float), ("str", str)):
        if annotation in (name, f"Optional[{name}]"):
            return kind
    raise TypeError(f"no command-line type for {annotation}")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per RunConfig field that has a flag: name, type, default and help from the dataclass."""
    group = p.add_argument_group("run settings (also valid as keys of a --config YAML file)")
    for f in fields(RunConfig):
        flag = cli_flag(f.name)
        if flag is None:
            continue
        meta = f.metadata
        help_text = f"{meta['help']} ({describe_default(f.name)})".replace("%", "%%")
        kwargs = dict(dest=f.name, help=help_text)
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if f.name == "first_order":
            group.add_argument("--first-order", action="store_const", const=True, **kwargs)
            group.add_argument("--second-order", dest=f.name, action="store_const", const=False,
                               help="back-propagate through the inner updates (second-order MAML)")
            continue
        if f.type in ("bool", bool) and f.default is True:  # on by default: --name / --no-name
            group.add_argument(flag, action="store_const", const=True, **kwargs)
            group.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const=False,
                               help=f"turn {flag} off (default: {flag} is on)")
        elif f.type in ("bool", bool):
            group.add_argument(flag, action="store_const", const=True, **kwargs)
        elif f.name == "split":
            group.add_argument(flag, type=_split, **kwargs)
        elif f.name == "method":
            group.add_argument(flag, type=methods.normalise, **kwargs)
        else:
            annotation = f.type if isinstance(f.type, str) else typing.get_type_hints(RunConfig)[f.name].__name__
            group.add_argument(flag, type=_scalar_type(annotation), choices=meta.get("choices"), **kwargs)
    for option in methods.option_owners():  # the built-in methods' own options
        add_method_option(group, option)


def add_method_option(group, name: str) -> None:
    """The ``train`` option of a method's own setting ``name`` (its declared type; choices are checked
    by the config, so that a wrong value names the method)."""
    option = next(o for m in methods.BUILTIN for o in m.options if o.name == name)
    kwargs = dict(dest=name, help=f"{option.help} ({describe_default(name)})".replace("%", "%%"),
                  type=_OPTION_TYPES[option.type])
    if option.metavar:
        kwargs["metavar"] = option.metavar
    group.add_argument(option.cli_flag, **kwargs)


def _config_keys():
    """Every key ``train``'s options set: RunConfig fields with a flag, then the methods' options."""
    return [f.name for f in fields(RunConfig) if cli_flag(f.name)] + list(methods.option_owners())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description, p.epilog = DESCRIPTION, EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_options(p)
    io = p.add_argument_group("files and output")
    io.add_argument("--config", type=Path, metavar="FILE.yaml",
                    help="YAML file with any of the run settings (default: none)")
    io.add_argument("--task-file", type=Path, metavar="FILE.npz",
                    help="fixed test tasks to evaluate on, e.g. another run's test_tasks.npz (default: drawn "
                         "from --seed)")
    io.add_argument("--out", type=Path, metavar="DIR",
                    help=f"run directory (default: runs/<graph>-<method>[-<pretrain>][-cml]-<N>w<K>s, e.g. "
                         f"runs/cora-{_EXAMPLE}-cml-2w1s, runs/cora-{next(iter(methods.table3_arms()))}-2w1s)")
    io.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (default: off)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing run in --out (default: off)")
    io.add_argument("--no-progress", action="store_true",
                    help="print no progress, only the final JSON line (default: progress on stderr)")


def run(args) -> int:
    from gnn_cml.engine import distributed as dist
    from gnn_cml.engine.progress import status
    from gnn_cml.experiments.graph import run_experiment

    overrides = {key: getattr(args, key) for key in _config_keys()}
    cfg = resolve(overrides, args.config)
    out = args.out or Path("runs") / f"{Path(cfg.graph).stem}-{method_label(cfg).replace('+', '-')}-{cfg.ways}w{cfg.shots}s"
    if dist.init_from_env():  # first loads fill the data cache: rank 0, then one process per other machine
        from gnn_cml.data import load_graph

        local_main = os.environ.get("LOCAL_RANK", "0") == "0"
        for turn in (dist.is_main(), local_main and not dist.is_main()):
            if turn:
                load_graph(cfg.graph, cfg.data_root)
            dist.barrier()
    result = run_experiment(cfg, out, resume=args.resume, overwrite=args.overwrite, task_file=args.task_file,
                            progress=not args.no_progress)
    if dist.is_main():
        acc = result["test_accuracy"]
        line = {"out": str(out), "test_accuracy": _round(acc["mean"]), "ci95": _round(acc["ci95"]),
                "runs": len(acc["runs"]), "episodes_per_s": _round(result["episodes_per_s"]),
                "wall_time_s": round(result["wall_time_s"], 1)}
        if acc.get("ci95_note"):
            line["ci95_note"] = acc["ci95_note"]
        status(f"results: {out / 'results.json'}", enabled=not args.no_progress)
        print(json.dumps(line, allow_nan=False))
    return 0


def _round(value):
    return None if value is None or value != value else round(value, 2)
