"""Run configuration: defaults, per-method defaults, YAML files and CLI overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from gnn_cml.errors import GnnCmlError, require

METHODS = ("maml", "metagnn", "gmeta", "ammgnn", "protonet", "gpn", "tlp")


def _opt(default: Any = None, help: str = "", *, factory=None, flag: Optional[str] = None,
         choices: Optional[Sequence[str]] = None, cli: bool = True, metavar: Optional[str] = None,
         default_text: Optional[str] = None):
    """A RunConfig field with what ``gnn-cml train --help`` shows for it (the one source of truth).

    ``cli=False``: settable only in a ``--config`` YAML file. ``flag``: the option name when it
    is not ``--field-name``. ``choices``: the allowed values (checked by :func:`validate`).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "cli": cli,
            "metavar": metavar, "default_text": default_text}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# Settings that change how a run is computed, not what: a resumed or reused run may differ in them.
EXECUTION_KEYS = ("data_root", "batch_runs", "device")


@dataclass
class RunConfig:
    """Everything that defines a graph meta-learning run (saved as ``config.yaml``)."""

    graph: str = _opt("citeseer", "graph name (see `gnn-cml datasets`) or a path to your own .npz graph",
                      metavar="NAME")
    method: str = _opt("maml", "meta-learner: maml (GCN + MAML), metagnn (SGC + MAML), gmeta (subgraph GCN + "
                               "MAML), ammgnn (feature modulation + MAML), protonet, gpn, or tlp (linear probes on a pretrained "
                               "GCN, no meta-training)",
                       metavar="|".join(METHODS))
    cml: bool = _opt(False, "add CML's co-learner (gradient augmentation) to a maml/metagnn/gmeta/ammgnn run")
    gamma: float = _opt(0.2, "weight of the co-learner's loss in the outer objective (with --cml)")
    dagger: bool = _opt(False, "CML-dagger: predict with the co-learner at test time (with --cml)")
    co_hidden: List[int] = _opt(help="hidden layer sizes of the co-learner", factory=lambda: [16], cli=False)
    ways: int = _opt(2, "N: classes per task")
    shots: int = _opt(1, "K: labelled support nodes per class")
    queries: int = _opt(5, "query nodes per class in training and validation tasks")
    test_queries: int = _opt(10, "query nodes per class in the fixed test tasks")
    split: Optional[List[int]] = _opt(None, "train,val,test class counts, e.g. 3,2,2", metavar="TRAIN,VAL,TEST",
                                      default_text="the graph's split in `gnn-cml datasets`")
    split_seed: int = _opt(1234, "seed of the class split (1234: the paper's code)")
    split_rule: str = _opt("reference", "how classes are split: reference (np.random.choice, the paper's code) "
                                        "or shuffle (random.shuffle, as TLP's scripts)",
                           choices=("reference", "shuffle"))
    labels_per_class: Optional[int] = _opt(None, "use only this many labelled nodes per training class", cli=False)
    episodes: int = _opt(1000, "the most meta-training episodes per run (early stopping usually ends sooner)")
    meta_batch: int = _opt(1, "tasks per meta-update")
    lr: float = _opt(0.001, "outer (Adam) learning rate")
    weight_decay: float = _opt(0.0, "Adam weight decay", cli=False)
    inner_steps: int = _opt(20, "inner-loop gradient steps per task")
    inner_lr: float = _opt(0.05, "inner-loop step size")
    test_inner_steps: Optional[int] = _opt(None, "inner steps at meta-test (default: inner_steps)", cli=False)
    first_order: bool = _opt(True, "first-order inner loop, as the paper's code (--second-order: back-propagate "
                                   "through the inner updates)", flag="--first-order")
    init: str = _opt("reference", "weight init: reference (uniform +-1/sqrt(out_features), the paper's code) or "
                                  "torch (nn.Linear's)", choices=("reference", "torch"))
    backbone: str = _opt("gcn", "encoder: gcn, sgc, sage, gat or subgraph_gcn", metavar="NAME")
    hidden: int = _opt(16, "hidden units of the encoder", cli=False)
    layers: int = _opt(2, "encoder layers", cli=False)
    dropout: float = _opt(0.5, "encoder dropout", cli=False)
    out_activation: str = _opt("none", "activation on the GCN output", choices=("none", "relu", "elu"))
    norm: str = _opt("row", "adjacency normalisation: row (D^-1 (A+I)) or sym (D^-1/2 (A+I) D^-1/2)",
                     choices=("row", "sym"))
    pool: str = _opt("mean", "subgraph pooling of gmeta", cli=False)
    modulation: str = _opt("reference", "AMM-GNN feature modulation: reference (per feature column, the paper's "
                                        "code), scalar or feature", choices=("reference", "scalar", "feature"))
    query_eval: bool = _opt(False, "query pass in eval mode (no dropout) during meta-training", cli=False)
    val_every: int = _opt(10, "validate every this many episodes")
    val_tasks: int = _opt(20, "validation tasks per validation")
    val_resample: bool = _opt(False, "draw fresh validation tasks at every validation, as the reference scripts "
                                     "do, instead of one fixed set per run")
    patience: int = _opt(10, "stop a run after this many validations without gain")
    test_tasks: int = _opt(100, "fixed test tasks (the same for every run and method)")
    runs: int = _opt(5, "independent runs (the 95% CI is over runs; 3 or more make it meaningful)")
    device: str = _opt("cpu", "where the learner runs: cpu (the fast path for episode-sized work) or cuda / cuda:N "
                              "(a GPU; runs are then trained one after another)", metavar="DEVICE")
    batch_runs: bool = _opt(True, "train the runs as one batched computation where the learner allows it (first-order "
                                  "maml, gmeta, ammgnn, each +CML); --no-batch-runs trains them one after another")
    seed: int = _opt(0, "seed of the runs (each run derives its own)")
    data_root: Optional[str] = _opt(None, "data root", flag="--root", metavar="DIR",
                                    default_text="$GNN_CML_DATA, else ./data")
    # --method tlp only (None elsewhere; tlp's defaults in METHOD_DEFAULTS and gnn_cml/meta/tlp.py)
    pretrain: Optional[str] = _opt(None, "--method tlp: dgi (Deep Graph Infomax), grace (GRACE contrastive) or "
                                         "supervised (GCN classifier on the training classes). Pretraining sees the "
                                         "whole graph's structure and features (transductive, as TLP) but never a "
                                         "label of a validation or test class", default_text="dgi with tlp")
    pretrain_epochs: Optional[int] = _opt(None, "--method tlp: pretraining epochs (dgi: the most, stops after 20 "
                                                "without a lower loss)",
                                          default_text="dgi 300, grace 200, supervised 200")
    pretrain_lr: Optional[float] = _opt(None, "--method tlp: pretraining Adam learning rate",
                                        default_text="the pretraining method's")
    pretrain_hidden: Optional[int] = _opt(None, "--method tlp: embedding size",
                                          default_text="dgi 512, grace 128 on Cora / 256, supervised 16")
    probe_c: Optional[float] = _opt(None, "--method tlp: inverse L2 strength of the logistic probe",
                                    default_text="1")
    probe_solver: Optional[str] = _opt(None, "--method tlp: torch (all tasks' probes at once by L-BFGS) or sklearn",
                                       default_text="torch")
    probe_scale: Optional[str] = _opt(None, "--method tlp: embedding scaling before the probe: minmax (per "
                                            "dimension over all nodes, as TLP) or none", default_text="minmax")
    pretrained: Optional[str] = _opt(None, "--method tlp: reuse the pretrained encoders (run_<r>/encoder.pt) of "
                                           "this earlier tlp run directory (same graph, seed and pretraining; "
                                           "supervised: and class split), e.g. the 1-shot run for a 5-shot one",
                                     metavar="DIR", default_text="pretrain anew")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# What the reference code behind the paper's Table 3 uses per method (PAPER.md, "The reference
# code, exactly"). Shared by every graph method: the reference class split, the reference
# initialisation, no activation on the GCN output, a first-order inner loop (RunConfig defaults).
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "maml": {"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001},
    "metagnn": {"backbone": "sgc", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001, "dropout": 0.0},
    "gmeta": {"backbone": "subgraph_gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.005,
              "weight_decay": 5e-4, "query_eval": True, "episodes": 1000},
    "ammgnn": {"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.1, "lr": 0.01, "weight_decay": 5e-4,
               "query_eval": True, "episodes": 500},
    "protonet": {"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0},
    "gpn": {"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0, "hidden": 16},
    # Not meta-trained: pretraining on the whole graph (GCNConv's D^-1/2 (A+I) D^-1/2) + per-task probes.
    "tlp": {"backbone": "gcn", "norm": "sym", "inner_steps": 0, "pretrain": "dgi", "probe_c": 1.0,
            "probe_solver": "torch", "probe_scale": "minmax"},
}
TLP_KEYS = ("pretrain", "pretrain_epochs", "pretrain_lr", "pretrain_hidden", "probe_c", "probe_solver", "probe_scale",
            "pretrained")

# Per-graph protocol defaults: the TLP setting of Table 3, and the GPN protocol (N-way K-shot,
# 20 queries per class, 50 fixed test tasks) for the GPN sets.
_GPN = {"ways": 5, "shots": 5, "queries": 20, "test_queries": 20, "test_tasks": 50}
GRAPH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "corafull": {"ways": 5}, "coauthor_cs": {"ways": 5}, "ogbn_arxiv": {"ways": 5},
    "amazon_clothing": _GPN, "amazon_electronics": _GPN, "dblp": _GPN,
}

_FIELDS = {f.name: f for f in fields(RunConfig)}


def describe_default(name: str) -> str:
    """The default of config key ``name`` as ``train --help`` shows it, with its per-method/graph values."""
    default = _FIELDS[name].default
    if default is dataclasses.MISSING:
        default = _FIELDS[name].default_factory()
    def show(value: Any) -> Any:
        if isinstance(value, bool):
            return "on" if value else "off"
        return "none" if value is None else value

    text = f"default: {_FIELDS[name].metadata.get('default_text') or show(default)}"
    parts = []
    by_method: Dict[Any, List[str]] = {}
    for method, values in METHOD_DEFAULTS.items():
        if name in values and values[name] != default:
            by_method.setdefault(values[name], []).append(method)
    parts += [f"{show(v)} for {', '.join(ms)}" for v, ms in by_method.items()]
    by_graph: Dict[Any, List[str]] = {}
    for graph, values in GRAPH_DEFAULTS.items():
        if name in values and values[name] != default:
            by_graph.setdefault(values[name], []).append(graph)
    parts += [f"{show(v)} on {', '.join(gs)}" for v, gs in by_graph.items()]
    if parts:
        text += "; " + "; ".join(parts) + "; a run's resolved value is in its config.yaml"
    return text


def _check_types(values: Dict[str, Any], source: str) -> None:
    for key, value in values.items():
        if key not in _FIELDS:
            close = [k for k in _FIELDS if k.startswith(key[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GnnCmlError(f"unknown config key '{key}' in {source}{hint}: valid keys are {', '.join(_FIELDS)}")


def load_yaml(path) -> Dict[str, Any]:
    """Read a YAML config file, refusing unknown keys and malformed YAML."""
    path = Path(path)
    require(path.is_file(), f"config file {path} does not exist: check the --config path")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise GnnCmlError(f"config file {path} is not valid YAML{where}: fix its syntax") from None
    require(isinstance(values, dict), f"config file {path} must be a mapping of key: value lines")
    _check_types(values, str(path))
    return values


def resolve(overrides: Dict[str, Any], config_file=None) -> RunConfig:
    """Defaults < graph defaults < method defaults < YAML file < explicit overrides (CLI flags)."""
    file_values = load_yaml(config_file) if config_file else {}
    _check_types(overrides, "the command line")
    method = str(overrides.get("method") or file_values.get("method") or RunConfig.method).lower()
    require(method in METHODS, f"unknown method '{method}': use one of {', '.join(METHODS)}")
    graph = overrides.get("graph") or file_values.get("graph") or RunConfig.graph
    graph_defaults = {}
    if not str(graph).endswith(".npz"):
        from gnn_cml.data.registry import graph_info

        graph_defaults = GRAPH_DEFAULTS.get(graph_info(str(graph)).name, {})
    values = {**graph_defaults, **METHOD_DEFAULTS[method], **file_values,
              **{k: v for k, v in overrides.items() if v is not None}}
    values["method"] = method
    cfg = RunConfig(**{k: _coerce(k, v) for k, v in values.items()})
    validate(cfg)
    return cfg


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_OPTIONAL_INT = ("labels_per_class", "test_inner_steps", "pretrain_epochs", "pretrain_hidden")
_OPTIONAL_FLOAT = ("pretrain_lr", "probe_c")


def _coerce(key: str, value: Any) -> Any:
    """``value`` as the type of config key ``key``; a one-line error for anything else."""
    default = _FIELDS[key].default

    def bad(kind: str) -> GnnCmlError:
        return GnnCmlError(f"config key '{key}' must be {kind}, got {value!r}")

    def as_int(v: Any) -> int:
        if isinstance(v, bool) or v is None:
            raise ValueError
        if isinstance(v, float) and not v.is_integer():
            raise ValueError
        return int(v)

    try:
        if key in _OPTIONAL_INT:
            return None if value is None else as_int(value)
        if key in _OPTIONAL_FLOAT:
            if isinstance(value, bool):
                raise ValueError
            return None if value is None else float(value)
        if key in ("data_root", "pretrained"):
            if value is not None and not isinstance(value, (str, Path)):
                raise bad("a folder path")
            return None if value is None else str(value)
        if key == "split":
            if value is None:
                return None
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise bad("three class counts (train, val, test) like [3, 2, 2]")
            try:
                return [as_int(v) for v in value]
            except (TypeError, ValueError):
                raise bad("three class counts (train, val, test) like [3, 2, 2]") from None
        if key == "co_hidden":
            values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
            if not isinstance(values, (list, tuple)):
                raise bad("a list of hidden layer sizes like [16]")
            try:
                return [as_int(v) for v in values]
            except (TypeError, ValueError):
                raise bad("a list of hidden layer sizes like [16]") from None
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            raise bad("true or false")
        if isinstance(default, int):
            return as_int(value)
        if isinstance(default, float):
            if isinstance(value, bool) or value is None:
                raise ValueError
            return float(value)
        if isinstance(default, str) and not isinstance(value, str):
            raise bad("a string")
    except GnnCmlError:
        raise
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(type(default), "an integer")
        raise bad(kind) from None
    return value


def cli_flag(name: str) -> Optional[str]:
    """The ``gnn-cml train`` option of config key ``name`` (None: only in a --config file)."""
    meta = _FIELDS[name].metadata
    if not meta.get("cli", True):
        return None
    return meta.get("flag") or f"--{name.replace('_', '-')}"


CLI_KEYS = tuple(name for name in _FIELDS if cli_flag(name))


def _hint(key: str, example: Any) -> str:
    flag = cli_flag(key) if key in _FIELDS else None
    return f"{flag} {example}" if flag else f"'{key}: {example}' in the --config file"


def validate(cfg: RunConfig) -> None:
    """Reject impossible values with messages that name the fix."""
    for key in ("ways", "shots", "queries", "test_queries", "episodes", "meta_batch", "hidden", "layers",
                "val_every", "val_tasks", "patience", "test_tasks", "runs"):
        require(getattr(cfg, key) > 0, f"{key} must be positive, got {getattr(cfg, key)}: e.g. {_hint(key, 1)}")
    for key in ("lr", "inner_lr"):
        value = getattr(cfg, key)
        require(value > 0 and math.isfinite(value),
                f"{key} must be a positive finite number, got {value}: e.g. {_hint(key, 0.01)}")
    require(cfg.inner_steps >= 0, f"inner_steps must be >= 0, got {cfg.inner_steps}: e.g. {_hint('inner_steps', 20)}")
    require(cfg.test_inner_steps is None or cfg.test_inner_steps >= 0,
            f"test_inner_steps must be >= 0, got {cfg.test_inner_steps}: e.g. {_hint('test_inner_steps', 20)}")
    require(cfg.gamma >= 0 and math.isfinite(cfg.gamma),
            f"gamma must be a finite number >= 0, got {cfg.gamma}: e.g. {_hint('gamma', 0.2)}")
    require(cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay),
            f"weight_decay must be a finite number >= 0, got {cfg.weight_decay}: e.g. {_hint('weight_decay', 0)}")
    require(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}: e.g. {_hint('seed', 0)}")
    require(cfg.labels_per_class is None or cfg.labels_per_class > 0,
            f"labels_per_class must be positive, got {cfg.labels_per_class}: e.g. {_hint('labels_per_class', 10)} "
            f"(or leave it out to use every labelled node)")
    require(all(h > 0 for h in cfg.co_hidden),
            f"co_hidden must list positive layer sizes, got {cfg.co_hidden}: e.g. {_hint('co_hidden', [16])} ([] for a linear co-learner)")
    require(0 <= cfg.dropout < 1, f"dropout must be in [0, 1), got {cfg.dropout}: e.g. {_hint('dropout', 0.5)}")
    require(cfg.norm in ("row", "sym"), f"norm must be row or sym, got {cfg.norm!r}: e.g. {_hint('norm', 'row')}")
    for key in ("split_rule", "init", "out_activation", "modulation"):
        allowed = _FIELDS[key].metadata["choices"]
        require(getattr(cfg, key) in allowed, f"{key} must be one of {', '.join(allowed)}, got "
                                              f"{getattr(cfg, key)!r}: e.g. {_hint(key, allowed[0])}")
    _validate_tlp(cfg)
    require(not cfg.cml or cfg.method not in ("protonet", "gpn"),
            f"--cml needs a gradient-based method; {cfg.method} has no inner loop: use maml, metagnn, gmeta or ammgnn")
    if cfg.split is not None:
        require(isinstance(cfg.split, (list, tuple)) and len(cfg.split) == 3,
                f"split must be three class counts (train, val, test), got {cfg.split!r}")


def _validate_tlp(cfg: RunConfig) -> None:
    """--method tlp: a known pretraining and probe; its settings refused on other methods."""
    if cfg.method != "tlp":
        given = [k for k in TLP_KEYS if getattr(cfg, k) is not None]
        require(not given, f"{', '.join(given)} only apply to --method tlp, not {cfg.method}: drop "
                           f"{', '.join(_hint(k, '...').split(' ')[0] for k in given)} or use --method tlp")
        return
    require(not cfg.cml, "--cml needs a meta-learner with an inner loop; tlp pretrains an encoder and fits a "
                         "probe per task: drop --cml, or use --method maml, metagnn, gmeta or ammgnn")
    from gnn_cml.meta.tlp import PRETRAINS, PROBE_SCALES, PROBE_SOLVERS

    for key, allowed in (("pretrain", PRETRAINS), ("probe_solver", PROBE_SOLVERS), ("probe_scale", PROBE_SCALES)):
        require(getattr(cfg, key) in allowed, f"{key} must be one of {', '.join(allowed)}, got "
                                              f"{getattr(cfg, key)!r}: e.g. {_hint(key, allowed[0])}")
    for key, example in (("pretrain_epochs", 200), ("pretrain_hidden", 512)):
        value = getattr(cfg, key)
        require(value is None or value > 0, f"{key} must be positive, got {value}: e.g. {_hint(key, example)}")
    for key, example in (("pretrain_lr", 0.001), ("probe_c", 1.0)):
        value = getattr(cfg, key)
        require(value is None or (value > 0 and math.isfinite(value)),
                f"{key} must be a positive finite number, got {value}: e.g. {_hint(key, example)}")
