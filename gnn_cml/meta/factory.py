"""Build a learner (optionally CML-wrapped) from a :class:`RunConfig` and a graph, through the registry."""
from __future__ import annotations

import torch

from gnn_cml import methods
from gnn_cml.errors import require
from gnn_cml.meta.base import MetaLearner
from gnn_cml.meta.cml import CML
from gnn_cml.models.graph import PreparedGraph
from gnn_cml.models.heads import MLPHead
from gnn_cml.models.init import initialise_


def with_cml(learner: MetaLearner, features: int, ways: int, gamma: float, hidden=(16,),
             dagger: bool = False, seed: int = 0, init: str = "torch") -> CML:
    """Wrap ``learner`` with a freshly initialised co-learner (``init``: as the head).

    The co-learner is initialised from its own seed so that the base learner's
    initial weights (and therefore ``gamma = 0`` runs) do not depend on CML.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 104729)
        co_learner = initialise_(MLPHead(features, ways, hidden), init)
    return CML(learner, co_learner, gamma=gamma, dagger=dagger)


def learner_class(cfg) -> type:
    """The learner class of ``cfg.method`` (a subclass of :class:`MetaLearner`)."""
    cls = methods.get(cfg.method).learner_class()
    require(isinstance(cls, type) and issubclass(cls, MetaLearner),
            f"method '{cfg.method}': its learner {cls!r} is not a gnn_cml.meta.base.MetaLearner subclass")
    return cls


def build_learner(cfg, graph: PreparedGraph, seed: int = 0) -> MetaLearner:
    """The learner named by ``cfg.method`` on ``graph``, initialised from ``seed``; with ``cfg.cml``,
    wrapped with CML's co-learner (methods declaring ``cml=True`` only; the config refuses others).

    Example::

        cfg = resolve({"graph": "citeseer", "cml": True})
        learner = build_learner(cfg, GraphTask.build(cfg).graph, seed=1)
    """
    method = methods.get(cfg.method)
    cls = learner_class(cfg)
    torch.manual_seed(seed)
    learner = cls.from_config(cfg, graph)
    if cfg.cml and method.cml:
        learner = with_cml(learner, learner.encoder.out_dim, cfg.ways, cfg.gamma, cfg.co_hidden, cfg.dagger, seed,
                           init=cfg.init)
    return learner
