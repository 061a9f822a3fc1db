"""Build a learner (optionally CML-wrapped) from a :class:`RunConfig` and a graph."""
from __future__ import annotations

import torch
from torch import nn

from gnn_cml.config import RunConfig
from gnn_cml.meta.ammgnn import AMMGNN
from gnn_cml.meta.base import MetaLearner
from gnn_cml.meta.cml import CML
from gnn_cml.meta.maml import MAML
from gnn_cml.meta.prototypical import GPN, ProtoNet
from gnn_cml.models.encoders import build_encoder
from gnn_cml.models.graph import PreparedGraph
from gnn_cml.models.heads import MLPHead
from gnn_cml.models.init import initialise_


def _encoder(cfg: RunConfig, graph: PreparedGraph, **extra) -> nn.Module:
    kwargs = dict(hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout, **extra)
    if cfg.backbone != "sgc":  # SGC's single layer keeps its own (linear) activation
        kwargs["out_activation"] = cfg.out_activation
    if cfg.backbone == "subgraph_gcn":
        kwargs["pool"] = cfg.pool
    return build_encoder(cfg.backbone, graph.num_features, **kwargs).bind(graph)


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


def _graph_name(graph: str) -> str:
    if str(graph).endswith(".npz"):
        return ""
    from gnn_cml.data.registry import graph_info

    return graph_info(str(graph)).name


def build_learner(cfg: RunConfig, graph: PreparedGraph, seed: int = 0) -> MetaLearner:
    """The learner named by ``cfg.method`` on ``graph``, initialised from ``seed``."""
    torch.manual_seed(seed)
    maml_kwargs = dict(inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, first_order=cfg.first_order,
                       test_inner_steps=cfg.test_inner_steps, query_eval=cfg.query_eval)
    if cfg.method == "tlp":  # no meta-training: a pretrained encoder plus per-task probes
        from gnn_cml.meta.tlp import TLP, pretrain_settings

        return TLP(pretrain_settings(cfg, _graph_name(cfg.graph)), graph, cfg.ways, cfg.probe_c, cfg.probe_solver,
                   cfg.probe_scale)
    if cfg.method == "protonet":
        return initialise_(ProtoNet(_encoder(cfg, graph)), cfg.init)
    if cfg.method == "gpn":
        scorer = _encoder(cfg, graph)
        return initialise_(GPN(_encoder(cfg, graph), scorer, nn.Linear(cfg.hidden, 1)), cfg.init)
    encoder = _encoder(cfg, graph)
    head = MLPHead(encoder.out_dim, cfg.ways)
    if cfg.method == "ammgnn":
        learner = AMMGNN(encoder, head, modulation=cfg.modulation, **maml_kwargs)
    else:  # maml, metagnn (SGC backbone), gmeta (subgraph GCN backbone)
        learner = MAML(encoder, head, **maml_kwargs)
    # Reference init re-draws every linear layer (encoder, head, AMM-GNN's modulation maps) from
    # the run's seed; 'torch' keeps the nn.Linear defaults drawn above.
    initialise_(learner, cfg.init)
    if cfg.cml:
        learner = with_cml(learner, encoder.out_dim, cfg.ways, cfg.gamma, cfg.co_hidden, cfg.dagger, seed,
                           init=cfg.init)
    return learner
