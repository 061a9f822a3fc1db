"""A transcription of one training task of TLP-FSNC's ``Meta-learning/train_TENT.py`` (TENT).

Written in our own words, operation for operation, from the script's ``pre_train(mode='train')``
with the ``GCN_dense`` whose signature the script calls (the TENT authors' ``base_model_SSL.py``:
a ``generater`` linear layer, weights modulated as ``W * (1 + alpha) + beta``). It is slow on
purpose, as the script: a full-graph embedder, ``torch.nonzero`` on dense adjacency rows to build
every class-ego and query subgraph, a dense GCN per subgraph in a Python loop, and an InfoNCE per
query position. Nothing in the library calls it; tests and benchmarks check gnn-cml's TENT against
it (same weights, same episode: same loss and gradients).

Parameters use the script's layout: GCN and classifier weights are ``(in, out)`` (our
``nn.Linear`` weights transposed); the generator is an ``nn.Linear`` in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# reference name -> (gnn-cml parameter name, stored transposed in gnn-cml)
NAMES = {"emb_w": ("embed.weight", True), "emb_b": ("embed.bias", False),
         "gc1_w": ("encoder.gc1.weight", True), "gc1_b": ("encoder.gc1.bias", False),
         "gc2_w": ("encoder.gc2.weight", True), "gc2_b": ("encoder.gc2.bias", False),
         "gen_w": ("generator.weight", False), "gen_b": ("generator.bias", False),
         "cls_w": ("classifier.weight", True), "cls_b": ("classifier.bias", False)}


@dataclass
class Outcome:
    loss: torch.Tensor
    grads: Dict[str, torch.Tensor]  # reference names (and "co_learner.*" with a co-learner)
    query_embeddings: torch.Tensor  # in episode order


def reference_params(learner) -> Dict[str, torch.Tensor]:
    """Fresh leaves in the script's layout, copied from a gnn-cml TENT (or TENT + CML)."""
    base = getattr(learner, "learner", learner)
    ours = dict(base.named_parameters())
    return {k: (ours[name].t() if flip else ours[name]).detach().clone().requires_grad_()
            for k, (name, flip) in NAMES.items()}


def to_ours(grads: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """Reference-layout gradients under gnn-cml's parameter names."""
    out = {}
    for k, g in grads.items():
        if k in NAMES:
            name, flip = NAMES[k]
            out[prefix + name] = g.t() if flip else g
    return out


def dense_adjacency(graph, dtype=torch.float64) -> torch.Tensor:
    """``D^-1 (A + I)`` of a PreparedGraph, dense (the script densifies its normalised adjacency)."""
    return torch.from_numpy(graph.adj.toarray()).to(dtype)


def dense_features(graph, dtype=torch.float64) -> torch.Tensor:
    import scipy.sparse as sp

    x = graph.x.toarray() if sp.issparse(graph.x) else np.asarray(graph.x)
    return torch.from_numpy(x).to(dtype)


def _modulated_layer(x, adj, weight, bias, w_pair, b_pair):
    """``GraphConvolution_dense`` with generated ``(alpha, beta)`` pairs for weight and bias."""
    support = torch.mm(x, weight * (1 + w_pair[0]) + w_pair[1])
    return torch.mm(adj, support) + bias * (1 + b_pair[0]) + b_pair[1]


def _gcn_dense(p, x, adj, gc1_pairs, gc2_pairs):
    """The script's ``GCN_dense`` in eval mode (``model.eval()`` precedes every call): no dropout."""
    h = F.relu(_modulated_layer(x, adj, p["gc1_w"], p["gc1_b"], *gc1_pairs))
    return _modulated_layer(h, adj, p["gc2_w"], p["gc2_b"], *gc2_pairs)


def _info_nce(anchor, sample, tau):
    """The script's ``InforNCE_Loss``: positives on the diagonal, all other rows negatives."""
    positive = torch.eye(anchor.shape[0], dtype=anchor.dtype)
    negative = 1.0 - positive
    sim = F.normalize(anchor) @ F.normalize(sample).t() / tau
    exp_sim = torch.exp(sim) * (positive + negative)
    log_prob = sim - torch.log(exp_sim.sum(dim=1, keepdim=True))
    per_row = (log_prob * positive).sum(dim=1) / positive.sum(dim=1)
    return -per_row.mean(), sim


def tent_task(params: Dict[str, torch.Tensor], adj: torch.Tensor, features: torch.Tensor,
              support: Sequence[int], query: Sequence[int], ways: int, shots: int,
              train_nodes: Sequence[int], train_labels: Sequence[int], tau: float = 0.5,
              co_learner: Optional[torch.nn.Module] = None, gamma: float = 0.0,
              query_y: Optional[torch.Tensor] = None, adj_sparse: Optional[torch.Tensor] = None) -> Outcome:
    """One training task: the loss the script back-propagates and its gradients.

    ``support`` and ``query`` are class-major (way 0's nodes first), as the script samples them;
    ``train_nodes`` / ``train_labels``: every node of the training classes and its class id
    (the script's ``idx_train`` and ``labels``). With ``co_learner``, CML's term
    ``gamma * CE(co_learner(query embeddings), query_y)`` is added (not in the script).
    ``adj_sparse``: ``adj`` as a torch sparse tensor (the script keeps both), made when missing.
    """
    p = params
    support = [int(v) for v in support]
    query = [int(v) for v in query]
    queries = len(query) // ways
    hidden1, hidden2 = p["gc1_w"].shape
    emb = torch.sparse.mm(adj.to_sparse() if adj_sparse is None else adj_sparse, torch.mm(features, p["emb_w"])) + p["emb_b"]  # GCN_emb

    # node level: one class-ego subgraph per way (pos_node_idx keeps growing across ways, as in the script)
    pos_node_idx, class_graphs = [], []
    for i in range(ways):
        class_pos_idx = support[i * shots:(i + 1) * shots]
        pos_node_idx.extend(class_pos_idx)
        if shots == 1 and torch.nonzero(adj[class_pos_idx, :]).shape[0] == 1:
            sub_adj = adj[class_pos_idx, class_pos_idx].reshape(1, 1)
            sub_feat = emb[class_pos_idx]
        else:
            neighbours = torch.nonzero(adj[class_pos_idx, :].sum(0)).squeeze()
            inner = adj[neighbours, :][:, neighbours]
            sub_adj = torch.eye(neighbours.shape[0] + 1, dtype=adj.dtype)
            sub_adj[1:, 1:] = inner
            sub_feat = torch.cat([emb[pos_node_idx].mean(0, keepdim=True), emb[neighbours]], 0)
        class_graphs.append((sub_adj, sub_feat))

    query_graphs = []
    for node in query:
        if torch.nonzero(adj[node, :]).shape[0] == 1:
            query_graphs.append((adj[node, node].reshape(1, 1), emb[node].unsqueeze(0)))
        else:
            first = torch.nonzero(adj[node, :]).squeeze()
            second = torch.nonzero(adj[first, :].sum(0)).squeeze()
            query_graphs.append((adj[second, :][:, second], emb[second]))

    # class level: generated scale/shift pairs from the mean virtual-node feature
    generate_from = torch.stack([feat[0] for _, feat in class_graphs], 0).mean(0)
    generated = F.linear(generate_from, p["gen_w"], p["gen_b"])
    gc1_part = generated[:(hidden1 + 1) * hidden2 * 2]
    gc2_part = generated[(hidden1 + 1) * hidden2 * 2:]
    gc1_pairs = (gc1_part[:hidden1 * hidden2 * 2].reshape(2, hidden1, hidden2),
                 gc1_part[hidden1 * hidden2 * 2:].reshape(2, hidden2))
    gc2_pairs = (gc2_part[:hidden2 * hidden2 * 2].reshape(2, hidden2, hidden2),
                 gc2_part[hidden2 * hidden2 * 2:].reshape(2, hidden2))

    target_embs = torch.stack([_gcn_dense(p, feat, a, gc1_pairs, gc2_pairs).mean(0) for a, feat in query_graphs], 0)
    class_embs = torch.stack([_gcn_dense(p, feat, a, gc1_pairs, gc2_pairs)[0] for a, feat in class_graphs], 0)

    # task level: InfoNCE per query position, the last one counted twice, plus the supervised term
    by_position = target_embs.reshape(ways, queries, -1).transpose(0, 1)
    loss = 0
    for j in range(queries):
        term, _ = _info_nce(by_position[j], class_embs, tau)
        loss = loss + term / queries
    loss = loss + term
    train_nodes = list(train_nodes)
    logits = torch.mm(emb[train_nodes], p["cls_w"]) + p["cls_b"]
    loss = loss + F.cross_entropy(logits, torch.as_tensor(np.asarray(train_labels), dtype=torch.long))

    leaves = dict(p)
    if co_learner is not None:
        co_loss = F.cross_entropy(co_learner(target_embs), query_y)
        loss = loss + gamma * co_loss
        leaves.update({"co_learner." + k: v for k, v in co_learner.named_parameters()})
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return Outcome(loss.detach(), dict(zip(leaves, grads)), target_embs.detach())


__all__ = ["NAMES", "Outcome", "dense_adjacency", "dense_features", "reference_params", "tent_task", "to_ours"]
