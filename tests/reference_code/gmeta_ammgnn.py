"""A transcription of the per-task computation of the reference code behind the paper's Table 3.

The reference scripts (TLP-FSNC, ``Meta-learning/G-Meta/train_G-Meta.py`` and
``Meta-learning/AMM-GNN/train_AMM.py`` with ``base_model_SSL.py``) are written in our
own words here, operation for operation, so that tests and speed benchmarks can check
gnn-cml's learners against them on real data: same weights, same episode, same query
loss and meta-gradients. It is test-only (not installed with gnn-cml); it is slow on
purpose (a Python loop over nodes, a dense GCN per subgraph, a full-graph GCN per
inner step, one ``torch.autograd.grad`` per step), as the reference is.

Parameters use the reference layout: ``gc1_w`` is ``(in, out)`` (our ``nn.Linear``
weight transposed), likewise ``gc2_w`` and the classifier ``w``. The inner loop is
first order: gradients are taken without ``create_graph`` and the adapted weights are
``w - lr * g``, so the outer loss reaches the meta-parameters through the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

ORDER = ("gc1_w", "gc1_b", "gc2_w", "gc2_b", "w", "b")


def reference_params(learner) -> Dict[str, torch.Tensor]:
    """The reference-layout leaves of a gnn-cml MAML-family learner (GCN or subgraph GCN + linear head).

    Returns fresh leaf tensors (copies) that require grad; ``to_ours`` maps their
    gradients back to gnn-cml parameter names.
    """
    base = getattr(learner, "learner", learner)  # unwrap CML
    enc, head = base.net.encoder, base.net.head
    layers = list(enc.layers)
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 2 and len(linear) == 1, "the reference code has a 2-layer GCN and a linear head"
    values = (layers[0].weight.t(), layers[0].bias, layers[1].weight.t(), layers[1].bias,
              linear[0].weight.t(), linear[0].bias)
    return {k: v.detach().clone().requires_grad_() for k, v in zip(ORDER, values)}


def to_ours(grads: Dict[str, torch.Tensor], prefix: str = "net.") -> Dict[str, torch.Tensor]:
    """Reference-layout gradients under gnn-cml's parameter names (weights transposed back)."""
    names = {"gc1_w": "encoder.layers.0.weight", "gc1_b": "encoder.layers.0.bias",
             "gc2_w": "encoder.layers.1.weight", "gc2_b": "encoder.layers.1.bias",
             "w": "head.net.1.weight", "b": "head.net.1.bias"}
    return {prefix + names[k]: (g.t() if k.endswith("w") else g) for k, g in grads.items()}


def gcn_dense(x: torch.Tensor, adj: torch.Tensor, gc1_w, gc1_b, gc2_w, gc2_b, dropout: float = 0.5,
              training: bool = True) -> torch.Tensor:
    """``GCN_dense``: ``relu(adj (x W1) + b1)`` -> dropout -> ``adj (h W2) + b2``, no output activation.

    ``adj`` may be a dense or a torch sparse matrix (the AMM-GNN script passes the sparse one).
    """
    mm = torch.sparse.mm if adj.is_sparse else torch.mm
    h = F.relu(mm(adj, torch.mm(x, gc1_w)) + gc1_b)
    h = F.dropout(h, dropout, training=training)
    return mm(adj, torch.mm(h, gc2_w)) + gc2_b


def gmeta_subgraph(adj: torch.Tensor, features: torch.Tensor, node: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference's 2-hop subgraph of ``node``: the dense row-normalised adjacency restricted
    to the nodes reachable in two steps (not renormalised) and their features."""
    if torch.nonzero(adj[node, :]).shape[0] == 1:  # only the self-loop
        return adj[node, node].reshape(1, 1), features[node].unsqueeze(0)
    neighbours = torch.nonzero(adj[node, :]).squeeze()
    neighbours = torch.nonzero(adj[neighbours, :].sum(0)).squeeze()
    return adj[neighbours, :][:, neighbours], features[neighbours]


@dataclass
class TaskOutcome:
    """The query loss (outer objective of one task), query logits and meta-gradients (reference layout)."""

    loss: torch.Tensor
    logits: torch.Tensor
    grads: Dict[str, torch.Tensor]
    extra_grads: Dict[str, torch.Tensor]


def _first_order_inner_loop(params: Dict[str, torch.Tensor], support_loss: Callable, steps: int,
                            lr: float) -> List[torch.Tensor]:
    fast = [params[k] for k in ORDER]
    for _ in range(steps):
        grads = torch.autograd.grad(support_loss(fast), fast)
        fast = [p - lr * g for g, p in zip(grads, fast)]
    return fast


def _outcome(loss, logits, params, extra: Dict[str, torch.Tensor]) -> TaskOutcome:
    leaves = [params[k] for k in ORDER] + list(extra.values())
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves)]
    return TaskOutcome(loss.detach(), logits.detach(), dict(zip(ORDER, grads[: len(ORDER)])),
                       dict(zip(extra, grads[len(ORDER):])))


def gmeta_task(params: Dict[str, torch.Tensor], adj: torch.Tensor, features: torch.Tensor,
               support: Sequence[int], support_y: torch.Tensor, query: Sequence[int], query_y: torch.Tensor,
               steps: int = 20, lr: float = 0.05, dropout: float = 0.5, training: bool = True,
               co_learner: Optional[torch.nn.Module] = None, gamma: float = 0.0) -> TaskOutcome:
    """One G-Meta task as the reference computes it.

    Each node is its own dense 2-hop subgraph; the GCN runs on it and the node's
    embedding is the mean over the subgraph's rows. The inner loop runs in train mode
    (dropout) when ``training``; the query pass always in eval mode. ``co_learner``
    (optional) adds CML's ``gamma * CE(co_learner(query embeddings))`` to the loss.
    """
    support_graphs = [gmeta_subgraph(adj, features, int(v)) for v in support]
    query_graphs = [gmeta_subgraph(adj, features, int(v)) for v in query]

    def embed(graphs, weights, train):
        return torch.stack([gcn_dense(f, a, *weights[:4], dropout=dropout, training=train).mean(0)
                            for a, f in graphs], 0)

    def support_loss(weights):
        return F.cross_entropy(torch.mm(embed(support_graphs, weights, training), weights[4]) + weights[5],
                               support_y)

    fast = _first_order_inner_loop(params, support_loss, steps, lr)
    emb = embed(query_graphs, fast, False)
    logits = torch.mm(emb, fast[4]) + fast[5]
    loss = F.cross_entropy(logits, query_y)
    extra = {}
    if co_learner is not None:
        loss = loss + gamma * F.cross_entropy(co_learner(emb), query_y)
        extra = dict(co_learner.named_parameters())
    return _outcome(loss, logits, params, extra)


def ammgnn_task(params: Dict[str, torch.Tensor], modulation: Dict[str, torch.Tensor], adj: torch.Tensor,
                features: torch.Tensor, support: Sequence[int], support_y: torch.Tensor, query: Sequence[int],
                query_y: torch.Tensor, node_sets: torch.Tensor, steps: int = 20, lr: float = 0.1,
                dropout: float = 0.5, training: bool = True, scale: float = 0.01,
                co_learner: Optional[torch.nn.Module] = None, gamma: float = 0.0) -> TaskOutcome:
    """One AMM-GNN task as the reference computes it.

    ``modulation`` holds ``alpha_w (10, 1)``, ``alpha_b``, ``beta_w``, ``beta_b`` (reference
    layout); ``node_sets`` the two (10,) node sets. The full-graph GCN runs at every inner
    step on ``features * (1 + scale * (alpha_1 + alpha_2) / 2)``; the loss subtracts
    ``scale * (cos(alpha_1, alpha_2) + cos(beta_1, beta_2))``.
    """
    x1, x2 = features[node_sets[0]], features[node_sets[1]]
    alpha_1 = (torch.mm(x1.t(), modulation["alpha_w"]) + modulation["alpha_b"]).t()
    alpha_2 = (torch.mm(x2.t(), modulation["alpha_w"]) + modulation["alpha_b"]).t()
    beta_1 = (torch.mm(x1.t(), modulation["beta_w"]) + modulation["beta_b"]).t()
    beta_2 = (torch.mm(x2.t(), modulation["beta_w"]) + modulation["beta_b"]).t()
    modulated = features * (1 + (alpha_1 + alpha_2) / 2 * scale)
    support, query = list(map(int, support)), list(map(int, query))

    def support_loss(weights):
        emb = gcn_dense(modulated, adj, *weights[:4], dropout=dropout, training=training)
        return F.cross_entropy(torch.mm(emb[support], weights[4]) + weights[5], support_y)

    fast = _first_order_inner_loop(params, support_loss, steps, lr)
    emb = gcn_dense(modulated, adj, *fast[:4], dropout=dropout, training=False)[query]
    logits = torch.mm(emb, fast[4]) + fast[5]
    cos = torch.nn.CosineSimilarity(dim=1, eps=1e-6)
    loss = F.cross_entropy(logits, query_y) - scale * (
        cos(alpha_1.mean(0, keepdim=True), alpha_2.mean(0, keepdim=True)).squeeze()
        + cos(beta_1.mean(0, keepdim=True), beta_2.mean(0, keepdim=True)).squeeze())
    if co_learner is not None:
        loss = loss + gamma * F.cross_entropy(co_learner(emb), query_y)
    extra = dict(modulation)
    if co_learner is not None:
        extra.update(co_learner.named_parameters())
    return _outcome(loss, logits, params, extra)


def modulation_params(learner) -> Dict[str, torch.Tensor]:
    """AMM-GNN's modulation maps of a gnn-cml learner in the reference layout (fresh leaves)."""
    base = getattr(learner, "learner", learner)
    values = {"alpha_w": base.alpha_net.weight.t(), "alpha_b": base.alpha_net.bias,
              "beta_w": base.beta_net.weight.t(), "beta_b": base.beta_net.bias}
    return {k: v.detach().clone().requires_grad_() for k, v in values.items()}


def modulation_to_ours(grads: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    names = {"alpha_w": "alpha_net.weight", "alpha_b": "alpha_net.bias",
             "beta_w": "beta_net.weight", "beta_b": "beta_net.bias"}
    return {names[k]: (g.t() if k.endswith("w") else g) for k, g in grads.items() if k in names}


def dense_adjacency(graph, dtype=torch.float32) -> torch.Tensor:
    """The row-normalised ``D^-1 (A + I)`` of a :class:`PreparedGraph` as a dense tensor (as the reference)."""
    return torch.from_numpy(graph.adj.toarray()).to(dtype)


def dense_features(graph, dtype=torch.float32) -> torch.Tensor:
    import numpy as np
    import scipy.sparse as sp

    x = graph.x.toarray() if sp.issparse(graph.x) else np.asarray(graph.x)
    return torch.from_numpy(x).to(dtype)


__all__ = ["ORDER", "TaskOutcome", "ammgnn_task", "dense_adjacency", "dense_features", "gcn_dense",
           "gmeta_subgraph", "gmeta_task", "modulation_params", "modulation_to_ours", "reference_params",
           "to_ours"]
