"""Run configuration: defaults, per-method defaults, YAML files and CLI overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from gnn_cml.errors import GnnCmlError, require

METHODS = ("maml", "metagnn", "gmeta", "ammgnn", "protonet", "gpn", "tlp")


@dataclass
class RunConfig:
    """Everything that defines a graph meta-learning run (saved as ``config.yaml``)."""

    graph: str = "citeseer"
    method: str = "maml"
    cml: bool = False
    gamma: float = 0.2
    dagger: bool = False
    co_hidden: List[int] = field(default_factory=lambda: [16])
    ways: int = 2
    shots: int = 1
    queries: int = 5
    test_queries: int = 10
    split: Optional[List[int]] = None
    split_seed: int = 1234
    split_rule: str = "reference"
    labels_per_class: Optional[int] = None
    episodes: int = 1000
    meta_batch: int = 1
    lr: float = 0.001
    weight_decay: float = 0.0
    inner_steps: int = 20
    inner_lr: float = 0.05
    test_inner_steps: Optional[int] = None
    first_order: bool = True
    init: str = "reference"
    backbone: str = "gcn"
    hidden: int = 16
    layers: int = 2
    dropout: float = 0.5
    out_activation: str = "none"
    norm: str = "row"
    pool: str = "mean"
    modulation: str = "reference"
    query_eval: bool = False
    val_every: int = 10
    val_tasks: int = 20
    patience: int = 10
    test_tasks: int = 100
    runs: int = 5
    seed: int = 0
    data_root: Optional[str] = None
    # --method tlp only (None elsewhere; tlp's defaults in METHOD_DEFAULTS and gnn_cml/meta/tlp.py)
    pretrain: Optional[str] = None
    pretrain_epochs: Optional[int] = None
    pretrain_lr: Optional[float] = None
    pretrain_hidden: Optional[int] = None
    probe_c: Optional[float] = None
    probe_solver: Optional[str] = None
    probe_scale: Optional[str] = None
    pretrained: Optional[str] = None

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


def _hint(key: str, example: Any) -> str:
    from gnn_cml.commands.train import OVERRIDES

    return f"--{key.replace('_', '-')} {example}" if key in OVERRIDES else f"'{key}: {example}' in the --config file"


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
    for key, allowed in (("split_rule", ("reference", "shuffle")), ("init", ("reference", "torch")),
                         ("out_activation", ("none", "relu", "elu")),
                         ("modulation", ("reference", "scalar", "feature"))):
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
