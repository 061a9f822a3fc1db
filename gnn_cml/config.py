"""Run configuration: defaults, per-method defaults, YAML files and CLI overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from gnn_cml import methods
from gnn_cml.errors import GnnCmlError, require


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
    method: str = _opt(methods.BUILTIN[0].name,
                       "meta-learner: " + ", ".join(f"{m.name} ({m.summary})" for m in methods.BUILTIN)
                       + ", or a plugin's import path my_pkg.my_module:MyLearner",
                       metavar="|".join(methods.builtin_names()))
    cml: bool = _opt(False, f"add CML's co-learner (gradient augmentation) to a {'/'.join(methods.cml_methods())} run")
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
    pool: str = _opt("mean", "subgraph pooling of the subgraph_gcn backbone", cli=False)
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
                                  + ", ".join(m.name for m in methods.BUILTIN if m.fast_path)
                                  + ", each +CML); --no-batch-runs trains them one after another")
    seed: int = _opt(0, "seed of the runs (each run derives its own)")
    data_root: Optional[str] = _opt(None, "data root", flag="--root", metavar="DIR",
                                    default_text="$GNN_CML_DATA, else ./data")
    # The run method's own options (declared in gnn_cml/methods.py), None where unset; in config.yaml they
    # are flat keys like the fields above, and `gnn-cml train` has an option for each.
    options: Dict[str, Any] = field(default_factory=dict, metadata={"cli": False, "help": ""})

    def to_dict(self) -> Dict[str, Any]:
        """The flat ``config.yaml`` mapping: every field, then the method's own options."""
        values = dataclasses.asdict(self)
        options = values.pop("options")
        return {**values, **options}

    def option(self, name: str) -> Any:
        """The value of the run method's own option ``name`` (None when unset)."""
        return self.options.get(name)


# Per-graph protocol defaults: the TLP setting of Table 3, and the GPN protocol (N-way K-shot,
# 20 queries per class, 50 fixed test tasks) for the GPN sets.
_GPN = {"ways": 5, "shots": 5, "queries": 20, "test_queries": 20, "test_tasks": 50}
GRAPH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "corafull": {"ways": 5}, "coauthor_cs": {"ways": 5}, "ogbn_arxiv": {"ways": 5},
    "amazon_clothing": _GPN, "amazon_electronics": _GPN, "dblp": _GPN,
}

_FIELDS = {f.name: f for f in fields(RunConfig) if f.name != "options"}


def _option(name: str) -> Optional[methods.Option]:
    owner = methods.option_owners().get(name)
    return next(o for o in owner.options if o.name == name) if owner else None


def method_label(cfg: RunConfig) -> str:
    """The method as summaries and default run folders name it: its declared name, the value of its
    ``label_option`` (e.g. a pretraining, so that variants never share a folder) and ``+cml``."""
    method = methods.get(cfg.method)
    variant = cfg.option(method.label_option) if method.label_option else None
    return method.name + (f"-{variant}" if variant else "") + ("+cml" if cfg.cml else "")


def describe_default(name: str) -> str:
    """The default of config key ``name`` as ``train --help`` shows it, with its per-method/graph values."""
    option = _option(name) if name not in _FIELDS else None
    if option is not None:
        default, default_text = None, option.default_text
    else:
        default = _FIELDS[name].default
        if default is dataclasses.MISSING:
            default = _FIELDS[name].default_factory()
        default_text = _FIELDS[name].metadata.get("default_text")
    def show(value: Any) -> Any:
        if isinstance(value, bool):
            return "on" if value else "off"
        return "none" if value is None else value

    text = f"default: {default_text or show(default)}"
    if default_text:  # the text already says every value (e.g. a method's own settings)
        return text
    parts = []
    by_method: Dict[Any, List[str]] = {}
    for method in methods.BUILTIN:
        values = method.defaults
        if name in values and values[name] != default:
            by_method.setdefault(values[name], []).append(method.name)
    parts += [f"{show(v)} for {', '.join(ms)}" for v, ms in by_method.items()]
    by_graph: Dict[Any, List[str]] = {}
    for graph, values in GRAPH_DEFAULTS.items():
        if name in values and values[name] != default:
            by_graph.setdefault(values[name], []).append(graph)
    parts += [f"{show(v)} on {', '.join(gs)}" for v, gs in by_graph.items()]
    if parts:
        text += "; " + "; ".join(parts) + "; a run's resolved value is in its config.yaml"
    return text


def _known_keys(method: Optional[methods.Method] = None) -> List[str]:
    """Every config key: the fields, the built-in methods' options, and ``method``'s own (a plugin's)."""
    keys = list(_FIELDS) + list(methods.option_owners())
    return keys + [k for k in (method.option_names if method else ()) if k not in keys]


def _check_types(values: Dict[str, Any], source: str, method: Optional[methods.Method] = None) -> None:
    known = _known_keys(method)
    for key, value in values.items():
        if key not in known:
            close = [k for k in known if k.startswith(key[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise GnnCmlError(f"unknown config key '{key}' in {source}{hint}: valid keys are {', '.join(known)}")


def load_yaml(path, check_keys: bool = True) -> Dict[str, Any]:
    """Read a YAML config file, refusing malformed YAML and (``check_keys``) unknown keys."""
    path = Path(path)
    require(path.is_file(), f"config file {path} does not exist: check the --config path")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise GnnCmlError(f"config file {path} is not valid YAML{where}: fix its syntax") from None
    require(isinstance(values, dict), f"config file {path} must be a mapping of key: value lines")
    if check_keys:
        _check_types(values, str(path), _method_of(values))
    return values


def _method_of(values: Dict[str, Any]) -> Optional[methods.Method]:
    """The declaration of a plugin method named in ``values`` (for its option keys), else None."""
    name = values.get("method")
    return methods.get(name) if isinstance(name, str) and methods.is_plugin_path(name) else None


def resolve(overrides: Dict[str, Any], config_file=None) -> RunConfig:
    """Defaults < graph defaults < method defaults < YAML file < explicit overrides (CLI flags)."""
    file_values = load_yaml(config_file, check_keys=False) if config_file else {}
    method = methods.get(overrides.get("method") or file_values.get("method") or RunConfig.method)
    if config_file:
        _check_types(file_values, str(config_file), method)
    _check_types(overrides, "the command line", method)
    graph = overrides.get("graph") or file_values.get("graph") or RunConfig.graph
    graph_defaults = {}
    if not str(graph).endswith(".npz"):
        from gnn_cml.data.registry import graph_info

        graph_defaults = GRAPH_DEFAULTS.get(graph_info(str(graph)).name, {})
    values = {**graph_defaults, **method.defaults, **file_values,
              **{k: v for k, v in overrides.items() if v is not None}}
    values["method"] = methods.normalise(overrides.get("method") or file_values.get("method") or RunConfig.method)
    _refuse_foreign_options(values, method)
    options = {o.name: _coerce_option(o, values.get(o.name)) for o in method.options}
    cfg = RunConfig(**{k: _coerce(k, v) for k, v in values.items() if k in _FIELDS}, options=options)
    validate(cfg)
    return cfg


def _refuse_foreign_options(values: Dict[str, Any], method: methods.Method) -> None:
    """Another method's options are refused when set (a saved config's ``None`` is no setting)."""
    given: Dict[str, List[str]] = {}
    for key, owner in methods.option_owners().items():
        if owner.name != method.name and key not in method.option_names and values.get(key) is not None:
            given.setdefault(owner.name, []).append(key)
    for owner, keys in given.items():
        raise GnnCmlError(f"{', '.join(keys)} only apply to --method {owner}, not {method.name}: drop "
                          f"{', '.join(_hint(k, '...').split(' ')[0] for k in keys)} or use --method {owner}")


def _coerce_option(option: methods.Option, value: Any) -> Any:
    """``value`` as the type the method's ``option`` declares (None stays None)."""
    if value is None:
        return None
    key = option.name
    try:
        if option.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if option.type == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        kind = "an integer" if option.type == "int" else "a number"
        raise GnnCmlError(f"config key '{key}' must be {kind}, got {value!r}") from None
    if option.type == "path":
        require(isinstance(value, (str, Path)), f"config key '{key}' must be a folder path, got {value!r}")
        return str(value)
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_OPTIONAL_INT = ("labels_per_class", "test_inner_steps")
_OPTIONAL_FLOAT: Tuple[str, ...] = ()


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
        if key == "data_root":
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
    if name not in _FIELDS:
        option = _option(name)
        return option.cli_flag if option else None
    meta = _FIELDS[name].metadata
    if not meta.get("cli", True):
        return None
    return meta.get("flag") or f"--{name.replace('_', '-')}"


CLI_KEYS = tuple(name for name in _FIELDS if cli_flag(name))


def _hint(key: str, example: Any) -> str:
    flag = cli_flag(key)
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
    _validate_method(cfg)
    if cfg.split is not None:
        require(isinstance(cfg.split, (list, tuple)) and len(cfg.split) == 3,
                f"split must be three class counts (train, val, test), got {cfg.split!r}")


def _validate_method(cfg: RunConfig) -> None:
    """What the run's method declares: CML only where it applies; its own options' values."""
    method = methods.get(cfg.method)
    require(not cfg.cml or method.cml,
            f"--cml needs a gradient-based method with an inner loop; {method.name} ({method.summary}) has none: "
            f"drop --cml, or use {methods.or_list(methods.cml_methods())}")
    for option in method.options:
        value = cfg.option(option.name)
        if option.choices:
            require(value in option.choices, f"{option.name} must be one of {', '.join(option.choices)}, got "
                                             f"{value!r}: e.g. {_hint(option.name, option.choices[0])}")
        if option.positive and value is not None:
            if option.type == "int":
                require(value > 0, f"{option.name} must be positive, got {value}: e.g. {_hint(option.name, 1)}")
            else:
                require(value > 0 and math.isfinite(value), f"{option.name} must be a positive finite number, "
                                                            f"got {value}: e.g. {_hint(option.name, 1.0)}")
