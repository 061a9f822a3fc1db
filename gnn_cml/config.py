"""Run configuration: defaults, per-method defaults, YAML files and CLI overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from gnn_cml.errors import GnnCmlError, require

METHODS = ("maml", "metagnn", "gmeta", "ammgnn", "protonet", "gpn")


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
    labels_per_class: Optional[int] = None
    episodes: int = 2000
    meta_batch: int = 1
    lr: float = 0.001
    weight_decay: float = 0.0
    inner_steps: int = 20
    inner_lr: float = 0.05
    test_inner_steps: Optional[int] = None
    first_order: bool = False
    backbone: str = "gcn"
    hidden: int = 16
    layers: int = 2
    dropout: float = 0.5
    norm: str = "row"
    pool: str = "mean"
    modulation: str = "scalar"
    query_eval: bool = False
    val_every: int = 10
    val_tasks: int = 20
    patience: int = 10
    test_tasks: int = 100
    runs: int = 5
    seed: int = 0
    data_root: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# What the protocol behind the paper's Table 3 uses per method (PAPER.md).
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "maml": {"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001},
    "metagnn": {"backbone": "sgc", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001, "dropout": 0.0},
    "gmeta": {"backbone": "subgraph_gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.005,
              "weight_decay": 5e-4, "query_eval": True},
    "ammgnn": {"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.1, "lr": 0.01, "weight_decay": 5e-4},
    "protonet": {"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0},
    "gpn": {"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0, "hidden": 16},
}

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


def _coerce(key: str, value: Any) -> Any:
    default = _FIELDS[key].default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int) and not isinstance(default, bool) and value is not None:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float) and value is not None:
            return float(value)
    except (TypeError, ValueError):
        raise GnnCmlError(f"config key '{key}' must be a {type(default).__name__}, got {value!r}") from None
    return value


def validate(cfg: RunConfig) -> None:
    """Reject impossible values with messages that name the fix."""
    for key in ("ways", "shots", "queries", "test_queries", "episodes", "meta_batch", "hidden", "layers",
                "val_every", "val_tasks", "patience", "test_tasks", "runs"):
        require(getattr(cfg, key) > 0, f"{key} must be positive, got {getattr(cfg, key)}: e.g. --{key.replace('_', '-')} 1")
    for key in ("lr", "inner_lr"):
        require(getattr(cfg, key) > 0, f"{key} must be positive, got {getattr(cfg, key)}: e.g. --{key.replace('_', '-')} 0.01")
    require(cfg.inner_steps >= 0, f"inner_steps must be >= 0, got {cfg.inner_steps}")
    require(cfg.gamma >= 0, f"gamma must be >= 0, got {cfg.gamma}")
    require(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    require(0 <= cfg.dropout < 1, f"dropout must be in [0, 1), got {cfg.dropout}")
    require(cfg.norm in ("row", "sym"), f"norm must be row or sym, got {cfg.norm!r}")
    require(not cfg.cml or cfg.method not in ("protonet", "gpn"),
            f"--cml needs a gradient-based method; {cfg.method} has no inner loop: use maml, metagnn, gmeta or ammgnn")
    if cfg.split is not None:
        require(isinstance(cfg.split, (list, tuple)) and len(cfg.split) == 3,
                f"split must be three class counts (train, val, test), got {cfg.split!r}")
