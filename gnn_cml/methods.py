"""The one registry of methods: what each method declares, and how a name becomes a learner.

A *method* is a :class:`Method` declaration (name, one-line summary, paper, per-method defaults,
its own options, capabilities) plus a learner class implementing the contract of
:class:`gnn_cml.meta.base.MetaLearner` (``from_config``, ``forward(episode, train)``,
``test_model``). Everything that lists methods (``--method`` choices and help, per-method
defaults in ``train --help``, error messages, ``reproduce table3 --methods``, whether CML
applies, whether runs can be batched) is derived from :data:`BUILTIN` and the plugins found by
:func:`get`; no other module of the package names a method.

This module imports no torch (``gnn-cml train --help`` reads it); a learner class is imported only
when a run builds it.

Plugins: ``--method my_pkg.my_module:MyLearner`` (also ``method:`` in YAML and in ``reproduce
table3 --methods``) names a learner class with a ``method`` attribute (a :class:`Method`; its
``learner`` may be left out) or a :class:`Method` object; installed packages can register names
in the entry-point group ``gnn_cml.methods`` (``my_method = "my_pkg.my_module:MyLearner"``).

Example::

    from gnn_cml.methods import Method, get
    get("gmeta").defaults["lr"]        # 0.005
    get("tlp").cml                     # False: no inner loop for CML to act on
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from gnn_cml.errors import GnnCmlError, require

ENTRY_POINT_GROUP = "gnn_cml.methods"


@dataclass(frozen=True)
class Option:
    """A setting that belongs to one method: a config key (YAML) and a ``gnn-cml train`` option.

    Args:
        name: the config key (``pretrain_epochs``); the option is ``--pretrain-epochs`` unless ``flag``.
        help: the help text of ``train --help``.
        type: ``int``, ``float``, ``str`` or ``path`` (a folder; stored as a string).
        choices: the allowed values (checked by the config's validation).
        positive: numbers must be > 0 (and finite).
        default_text: what help shows as the default when it is not one value.
        metavar, flag: as argparse's.

    A run's value is ``None`` unless set by the method's ``defaults``, a YAML file or the option.

    Example::

        Option("probe_c", "inverse L2 strength of the logistic probe", "float", positive=True)
    """

    name: str
    help: str
    type: str = "str"
    choices: Optional[Tuple[str, ...]] = None
    positive: bool = False
    default_text: Optional[str] = None
    metavar: Optional[str] = None
    flag: Optional[str] = None

    @property
    def cli_flag(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"


@dataclass(frozen=True)
class Method:
    """What a method is, declared once; the registry and every listing read it from here.

    Args:
        name: the ``--method`` name (lower case; folder names and report labels use it).
        summary: one line, shown in ``--method`` help (``"GCN + MAML"``).
        learner: the learner class, or its import path ``"module:Class"`` (imported when a run builds
            it). The class implements :class:`gnn_cml.meta.base.MetaLearner`.
        paper: the paper it comes from (a short citation).
        defaults: per-method defaults: run-config keys (``lr``, ``backbone``, ...) and the method's own
            options; they sit between the graph's defaults and a YAML file / the command line.
        options: settings only this method reads (:class:`Option`); refused on other methods.
        adapts: adapts the shared weights in an inner loop (MAML-style).
        cml: CML's co-learner applies (default: ``adapts``; CML needs an inner loop).
        meta_trained: trained episode by episode by the Trainer; ``False``: the learner's
            ``fit(task, run_dir, seed, ...)`` and ``evaluate(tasks)`` run instead (e.g. TLP).
        fast_path: the closed-form inner loop and batched runs (:mod:`gnn_cml.meta.fast`) may apply;
            whether they do is checked per run (:func:`gnn_cml.meta.fast.why_not_batched`).
        why_not_fast: when ``fast_path`` is False, the reason a user reads.
        table3: position among ``reproduce table3``'s default arms (``None``: not a default arm).
        paper_table3: the CML paper's Table 3 numbers ``{(graph, shots): (base, +cml)}`` (%).
        arms: named variants for ``reproduce table3 --baselines`` (``{"tlp-dgi": {"pretrain": "dgi"}}``).
        field_arms: those of ``arms`` that ``reproduce field`` compares every learner with by default
            (the reference probes; the best of them per cell is the table's reference line).
        quick: overrides under ``--quick`` (smoke runs), on top of the shared quick budget.
        label_option: an own option whose value joins the method's name in labels and default run
            folders (``tlp-dgi``), so that its variants never share a folder.

    Example (the ``tent`` entry of ``BUILTIN`` below shows one with its own options)::

        Method("protonet", "prototypical networks on a GCN", "gnn_cml.meta.prototypical:ProtoNet",
               paper="Snell et al., NeurIPS 2017", defaults={"lr": 0.005, "inner_steps": 0})
    """

    name: str
    summary: str
    learner: Union[str, type, None] = None
    paper: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Tuple[Option, ...] = ()
    adapts: bool = False
    cml: Optional[bool] = None
    meta_trained: bool = True
    fast_path: bool = False
    why_not_fast: str = ""
    table3: Optional[int] = None
    paper_table3: Mapping[Tuple[str, int], Tuple[float, float]] = field(default_factory=dict)
    arms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    field_arms: Tuple[str, ...] = ()
    quick: Mapping[str, Any] = field(default_factory=dict)
    label_option: Optional[str] = None

    def __post_init__(self):
        if self.cml is None:
            object.__setattr__(self, "cml", self.adapts)

    @property
    def option_names(self) -> Tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def learner_class(self) -> type:
        """The learner class (imported now when given as ``"module:Class"``)."""
        if isinstance(self.learner, str):
            return _import(self.learner, f"method '{self.name}'")
        require(self.learner is not None, f"method '{self.name}' names no learner class: set Method(learner=...)")
        return self.learner


# Shared by the MAML-style graph methods: the reference code behind the paper's Table 3 (docs/protocol.md): reference class split, reference initialisation, no activation on
# the GCN output and a first-order inner loop are the RunConfig defaults.
_NO_INNER = "no inner loop to put in closed form"
_UNSET = "unset outside its method"
_TLP_OPTIONS = (
    Option("pretrain", "--method tlp: dgi (Deep Graph Infomax), grace (GRACE contrastive) or supervised (GCN "
                       "classifier on the training classes). Pretraining sees the whole graph's structure and "
                       "features (--setting transductive, as TLP; inductive: the training classes' nodes only) "
                       "but never a label of a validation or test class",
           choices=("dgi", "grace", "supervised"), default_text="dgi"),
    Option("pretrain_epochs", "--method tlp: pretraining epochs (dgi: the most, stops after 20 without a lower loss)",
           "int", positive=True, default_text="dgi 300, grace 200, supervised 200"),
    Option("pretrain_lr", "--method tlp: pretraining Adam learning rate", "float", positive=True,
           default_text="the pretraining method's"),
    Option("pretrain_hidden", "--method tlp: embedding size", "int", positive=True,
           default_text="dgi 512, grace 128 on Cora and 256 elsewhere, supervised 16"),
    Option("probe_c", "--method tlp: inverse L2 strength of the logistic probe", "float", positive=True,
           default_text="1"),
    Option("probe_solver", "--method tlp: torch (all tasks' probes at once by L-BFGS) or sklearn",
           choices=("torch", "sklearn"), default_text="torch"),
    Option("probe_scale", "--method tlp: embedding scaling before the probe: minmax (per dimension over all "
                          "nodes, as TLP) or none", choices=("minmax", "none"), default_text="minmax"),
    Option("pretrained", "--method tlp: reuse the pretrained encoders (run_<r>/encoder.pt) of another tlp run "
                         "directory (same graph, seed and pretraining; supervised: and class split), e.g. the "
                         "1-shot run for a 5-shot one", "path", metavar="DIR", default_text="pretrain anew"),
)

BUILTIN: Tuple[Method, ...] = (
    Method("maml", "GCN + MAML", "gnn_cml.meta.maml:MAML", paper="Finn et al., ICML 2017",
           defaults={"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001},
           adapts=True, fast_path=True, table3=2),
    Method("metagnn", "SGC + MAML", "gnn_cml.meta.maml:MAML", paper="Meta-GNN, Zhou et al., CIKM 2019",
           defaults={"backbone": "sgc", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001, "dropout": 0.0},
           adapts=True, why_not_fast="its SGC encoder has no closed-form inner loop (only 2-layer GCN and "
                                     "subgraph-GCN encoders have one)"),
    Method("gmeta", "subgraph GCN + MAML", "gnn_cml.meta.maml:MAML", paper="G-Meta, Huang & Zitnik, NeurIPS 2020",
           defaults={"backbone": "subgraph_gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.005,
                     "weight_decay": 5e-4, "query_eval": True, "episodes": 1000},
           adapts=True, fast_path=True, table3=0,
           paper_table3={("citeseer", 1): (55.15, 61.17), ("citeseer", 5): (64.53, 76.07),
                         ("amazon_computers", 1): (70.57, 72.26), ("amazon_computers", 5): (85.96, 87.10),
                         ("corafull", 1): (60.44, 60.49), ("corafull", 5): (75.84, 76.02)}),
    Method("ammgnn", "feature modulation + MAML", "gnn_cml.meta.ammgnn:AMMGNN", paper="AMM-GNN, Wang et al., CIKM 2020",
           defaults={"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.1, "lr": 0.01, "weight_decay": 5e-4,
                     "query_eval": True, "episodes": 500},
           adapts=True, fast_path=True, table3=1,
           paper_table3={("citeseer", 1): (54.53, 61.13), ("citeseer", 5): (62.93, 66.88),
                         ("amazon_computers", 1): (74.29, 78.91), ("amazon_computers", 5): (80.10, 86.68),
                         ("corafull", 1): (58.77, 63.27), ("corafull", 5): (75.61, 76.19)}),
    Method("tent", "class-conditioned GCN + InfoNCE, as TLP-FSNC's script",
           "gnn_cml.meta.tent:TENT", paper="TENT, Wang et al., KDD 2022",
           # train_TENT.py: its dropout 0.2 is never applied (docs/methods/tent.md)
           defaults={"backbone": "gcn", "inner_steps": 0, "lr": 0.05, "weight_decay": 5e-4, "hidden": 16,
                     "dropout": 0.0, "episodes": 2000, "val_every": 50, "val_tasks": 20, "patience": 10,
                     "tent_virtual_node": "reference", "tent_last_query": "twice", "tent_predict": "probe"},
           options=(Option("tent_virtual_node", "--method tent: virtual-node feature of way i: reference (mean "
                                                "embedding of the support nodes of ways 0..i, the script) or class "
                                                "(way i's own support nodes, the paper)",
                           choices=("reference", "class"), metavar="reference|class"),
                    Option("tent_last_query", "--method tent: the last query's InfoNCE term counted twice (the "
                                              "script) or once", choices=("twice", "once"), metavar="twice|once"),
                    Option("tent_predict", "--method tent: validation/test prediction: probe (logistic regression "
                                           "on the embedder's output, the script) or similarity (the most similar "
                                           "class embedding, the paper)", choices=("probe", "similarity"),
                           metavar="probe|similarity")),
           adapts=True, cml=True, why_not_fast=_NO_INNER),
    Method("protonet", "prototypical networks on a GCN", "gnn_cml.meta.prototypical:ProtoNet",
           paper="Snell et al., NeurIPS 2017",
           defaults={"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0},
           why_not_fast=_NO_INNER),
    Method("gpn", "graph prototypical networks", "gnn_cml.meta.prototypical:GPN", paper="Ding et al., CIKM 2020",
           defaults={"backbone": "gcn", "lr": 0.005, "weight_decay": 5e-4, "inner_steps": 0, "hidden": 16},
           why_not_fast=_NO_INNER),
    # Not meta-trained: pretraining on the whole graph (GCNConv's D^-1/2 (A+I) D^-1/2) + per-task probes.
    Method("tlp", "linear probes on a pretrained GCN, no meta-training", "gnn_cml.meta.tlp:TLP",
           paper="Tan et al., LoG 2022",
           defaults={"backbone": "gcn", "norm": "sym", "inner_steps": 0, "pretrain": "dgi", "probe_c": 1.0,
                     "probe_solver": "torch", "probe_scale": "minmax"},
           options=_TLP_OPTIONS, meta_trained=False, why_not_fast="no meta-training",
           arms={"tlp-dgi": {"pretrain": "dgi"}, "tlp-grace": {"pretrain": "grace"},
                 "tlp-supervised": {"pretrain": "supervised"}},
           field_arms=("tlp-dgi", "tlp-grace"),
           quick={"pretrain_epochs": 5}, label_option="pretrain"),
    # TEG's code (argument.py, configuration.yaml, model.py): a 1-layer GCN of 64 units on GCNConv's
    # D^-1/2 (A+I) D^-1/2, input dropout 0.5, Adam 0.001 with weight decay 5e-4, 10 epochs of 50 episodes
    # validated once per epoch on 50 tasks (no early stopping).
    Method("teg", "GCN + equivariant GNN over task embeddings, prototypes; no inner loop", "gnn_cml.meta.teg:TEG",
           paper="Kim et al., KDD 2023",
           defaults={"backbone": "gcn", "norm": "sym", "layers": 1, "hidden": 64, "dropout": 0.5, "lr": 0.001,
                     "weight_decay": 5e-4, "inner_steps": 0, "episodes": 500, "val_every": 50, "val_tasks": 50,
                     "patience": 10, "teg_gamma": 0.5, "anchors": 16, "egnn_layers": 2},
           options=(Option("teg_gamma", "--method teg: weight of the task embedder's (EGNN) prototype loss; the graph "
                                        "embedder's gets 1 - teg_gamma (in [0, 1])", "float", default_text="0.5"),
                    Option("anchors", "--method teg: virtual anchor nodes of the structural features", "int",
                           positive=True, default_text="16"),
                    Option("egnn_layers", "--method teg: EGNN layers of the task embedder", "int", positive=True,
                           default_text="2")),
           why_not_fast=_NO_INNER),
    # The authors' train.py: Adam 0.001, hidden 1024, PageRank subgraphs of 20 nodes, SupCon at 0.07, at most
    # 10,000 episodes; no inner loop, no dropout (gnn_cml/meta/cosmic.py lists where code and paper differ).
    Method("cosmic", "subgraph contrastive meta-learning with mix-up, a logistic probe per test task",
           "gnn_cml.meta.cosmic:COSMIC", paper="Wang et al., KDD 2023",
           defaults={"hidden": 1024, "lr": 0.001, "weight_decay": 0.0, "episodes": 10000, "inner_steps": 0,
                     "dropout": 0.0, "subgraph_size": 20, "temperature": 0.07, "mixup": "reference"},
           options=(Option("subgraph_size", "--method cosmic: nodes per personalised-PageRank subgraph", "int",
                           positive=True, default_text=_UNSET),
                    Option("temperature", "--method cosmic: temperature of the supervised contrastive loss",
                           "float", positive=True, default_text=_UNSET),
                    Option("mixup", "--method cosmic: reference (the authors' code: mixed subgraphs of 5 nodes "
                                    "from each of up to 5 training classes as extra classes), pairs (ours: each "
                                    "mixed subgraph its own support/extra pair, weights from the pair's "
                                    "similarity) or none (the task's subgraphs only)",
                           choices=("reference", "pairs", "none"), default_text=_UNSET)),
           why_not_fast="no inner loop to put in closed form (a contrastive loss on the encoder)"),
)

_BY_NAME: Dict[str, Method] = {m.name: m for m in BUILTIN}


def builtin_names() -> Tuple[str, ...]:
    return tuple(_BY_NAME)


def is_plugin_path(name: str) -> bool:
    """``my_pkg.my_module:MyLearner`` (an import path) rather than a registered name."""
    return ":" in str(name)


def normalise(name: str) -> str:
    """A ``--method`` value as stored: registered names in lower case, import paths as given."""
    name = str(name).strip()
    return name if is_plugin_path(name) else name.lower()


def _entry_points() -> Dict[str, Any]:
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in found}


def available() -> Tuple[str, ...]:
    """Every registered name: the built-in methods, then installed plugins' entry points."""
    return builtin_names() + tuple(n for n in _entry_points() if n not in _BY_NAME)


def _import(path: str, what: str):
    module_name, _, attr = path.partition(":")
    require(module_name and attr, f"{what}: '{path}' is not an import path: write it as my_pkg.my_module:MyLearner")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GnnCmlError(f"{what}: cannot import module '{module_name}' ({exc}): install it or put its folder on "
                          f"PYTHONPATH") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        require(obj is not None, f"{what}: module '{module_name}' has no '{attr}': check the name after the colon")
    return obj


def _as_method(obj, source: str) -> Method:
    """A :class:`Method` from what a plugin path or entry point names (a Method, or a learner class
    carrying one as its ``method`` attribute)."""
    if isinstance(obj, Method):
        require(obj.name not in _BY_NAME, f"{source} declares the name '{obj.name}' of a built-in method: "
                                          f"give its Method another name")
        return obj
    declared = getattr(obj, "method", None)
    require(isinstance(obj, type) and isinstance(declared, Method),
            f"{source} is neither a gnn_cml.methods.Method nor a learner class with a `method = Method(...)` "
            f"attribute: see 'Adding a method' in the README")
    require(declared.name not in _BY_NAME, f"{source} declares the name '{declared.name}' of a built-in method: "
                                           f"give its Method another name")
    return declared if declared.learner is not None else dataclasses.replace(declared, learner=obj)


def get(name: str) -> Method:
    """The declaration of ``name``: a built-in method, an entry point of an installed plugin, or an import
    path ``my_pkg.my_module:MyLearner``; a one-line error naming the choices otherwise."""
    name = normalise(name)
    if name in _BY_NAME:
        return _BY_NAME[name]
    if is_plugin_path(name):
        return _as_method(_import(name, f"--method {name}"), f"--method {name}")
    entry = _entry_points().get(name)
    if entry is not None:
        try:
            obj = entry.load()
        except ImportError as exc:
            raise GnnCmlError(f"--method {name}: the installed plugin's entry point {entry.value} does not import "
                              f"({exc}): reinstall that package") from None
        return _as_method(obj, f"entry point {name} ({entry.value})")
    raise GnnCmlError(f"unknown method '{name}': use one of {', '.join(available())}, or an import path "
                      f"my_pkg.my_module:MyLearner")


def option_owners() -> Dict[str, Method]:
    """Each built-in method's own option keys -> that method."""
    return {o.name: m for m in BUILTIN for o in m.options}


def cml_methods() -> Tuple[str, ...]:
    """Built-in methods CML applies to (gradient-based, with an inner loop)."""
    return tuple(m.name for m in BUILTIN if m.cml)


def table3_methods() -> Tuple[str, ...]:
    """``reproduce table3``'s default arms, in their table order."""
    return tuple(m.name for m in sorted((m for m in BUILTIN if m.table3 is not None), key=lambda m: m.table3))


def table3_arms() -> Dict[str, Tuple[Method, Mapping[str, Any]]]:
    """Named variants for ``reproduce table3 --baselines``: arm name -> (method, overrides)."""
    return {arm: (m, overrides) for m in BUILTIN for arm, overrides in m.arms.items()}


def field_arms() -> Tuple[str, ...]:
    """``reproduce field``'s default baseline arms (the reference linear probes)."""
    return tuple(arm for m in BUILTIN for arm in m.field_arms)


def field_methods() -> Tuple[str, ...]:
    """``reproduce field``'s default learners: every built-in method without named baseline arms."""
    return tuple(m.name for m in BUILTIN if not m.arms)


def or_list(names: Sequence[str]) -> str:
    """``a, b, c or d``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
