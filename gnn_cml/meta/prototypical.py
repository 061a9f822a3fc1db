"""Metric-based baselines without an inner loop: ProtoNet and GPN."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gnn_cml.meta.base import MetaLearner, TaskResult, encoder_for
from gnn_cml.models.init import initialise_
from gnn_cml.sampling.episodes import Episode


def _prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                      weights: torch.Tensor = None) -> torch.Tensor:
    ways = int(support_y.max()) + 1
    w = torch.ones(len(support), device=support.device) if weights is None else weights
    onehot = torch.nn.functional.one_hot(support_y, ways).to(support.dtype) * w.unsqueeze(1)
    prototypes = (onehot / onehot.sum(0, keepdim=True)).t() @ support
    return -torch.cdist(query, prototypes).pow(2)


class ProtoNet(MetaLearner):
    """Prototypical networks (Snell et al. 2017) on a graph encoder: class means of the
    support embeddings; queries scored by negative squared Euclidean distance."""

    adapts = False

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    @classmethod
    def from_config(cls, cfg, graph) -> "ProtoNet":
        return initialise_(cls(encoder_for(cfg, graph)), cfg.init)

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        with torch.set_grad_enabled(train):
            s = self.encoder(self.encoder.prepare(episode.support), training=train)
            q = self.encoder(self.encoder.prepare(episode.query), training=train)
            logits = _prototype_logits(s, episode.support_y, q)
            loss = self.task_loss(logits, episode.query_y)
        return TaskResult(loss, logits, episode.query_y, q, {"query_loss": float(loss.detach())})


class GPN(MetaLearner):
    """Graph Prototypical Networks (Ding et al. 2020): prototypes weighted by node
    importance, ``sigmoid(log(degree) * score)`` normalised within each class, where
    ``score`` comes from a second GNN (the scorer)."""

    adapts = False

    def __init__(self, encoder: nn.Module, scorer: nn.Module, scorer_head: nn.Module):
        super().__init__()
        self.encoder, self.scorer, self.scorer_head = encoder, scorer, scorer_head
        graph = encoder.graph
        degree = np.diff(graph.adj.indptr).astype(np.float32)  # includes the self-loop, so >= 1
        self.register_buffer("log_degree", torch.from_numpy(np.log(degree)), persistent=False)

    @classmethod
    def from_config(cls, cfg, graph) -> "GPN":
        scorer = encoder_for(cfg, graph)
        return initialise_(cls(encoder_for(cfg, graph), scorer, nn.Linear(cfg.hidden, 1)), cfg.init)

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        with torch.set_grad_enabled(train):
            s = self.encoder(self.encoder.prepare(episode.support), training=train)
            q = self.encoder(self.encoder.prepare(episode.query), training=train)
            score = self.scorer_head(self.scorer(self.scorer.prepare(episode.support), training=train)).squeeze(-1)
            importance = torch.sigmoid(self.log_degree[episode.support] * score)
            ways = int(episode.support_y.max()) + 1
            per_class = torch.zeros(ways).index_add(0, episode.support_y, importance)
            weights = importance / per_class[episode.support_y]
            logits = _prototype_logits(s, episode.support_y, q, weights)
            loss = self.task_loss(logits, episode.query_y)
        return TaskResult(loss, logits, episode.query_y, q, {"query_loss": float(loss.detach())})
