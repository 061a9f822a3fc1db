"""A test-only transcription of one COSMIC training step as the authors' code computes it.

Source: ``SongW-SW/COSMIC`` (``utils_mp.py``: ``PPR``, ``Subgraph.build`` and ``Subgraph.search``
with ``interp=True``; ``model.py``: ``Encoder`` with ``GCNConv``, ``Pool`` with mean pooling;
``subgcon.py``: ``SugbCon.forward`` and ``loss``; ``loss.py``: ``SupConLoss``). Written in our own
words, operation for operation, with PyG's ``GCNConv``, ``Batch``, ``to_dense_adj``,
``dense_to_sparse`` and ``global_mean_pool`` as the authors use them, and sklearn's ``normalize``
for the PageRank matrix. Deliberately slow: one PageRank per node, dense features, PyG batches.

The random choices (the extra nodes and the feature mixing weights) are inputs, so that the
check can hand both sides the same draws; the adjacency mixing weights are drawn here from their
own generator, since they cannot change the result (the code mixes each adjacency with itself and
never passes the edge weights to the GCN). Nothing in ``gnn_cml`` imports this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

REF_PAD = 20  # the code pads every mixed subgraph to 20 rows


class ReferencePPR:
    """``PPR`` + ``Subgraph.build``: each node's top-``maxsize`` PageRank nodes and local edges."""

    def __init__(self, edge_index: np.ndarray, num_nodes: int, maxsize: int = 20, n_order: int = 10,
                 alpha: float = 0.85):
        from sklearn.preprocessing import normalize

        ei = np.asarray(edge_index)
        self.adj = sp.csc_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=[num_nodes, num_nodes])
        self.P = normalize(self.adj, norm="l1", axis=0)
        self.d = np.array(self.adj.sum(1)).squeeze()
        self.maxsize, self.n_order, self.alpha, self.num_nodes = maxsize, n_order, alpha, num_nodes
        self.built: Dict[tuple, tuple] = {}
        self.neighbours: Dict[int, set] = {i: set() for i in range(num_nodes)}
        for u, v in zip(ei[0], ei[1]):
            self.neighbours[int(u)].add(int(v))
            self.neighbours[int(v)].add(int(u))

    def search(self, seed: int) -> np.ndarray:
        x = sp.csc_matrix((np.ones(1), ([seed], np.zeros(1, dtype=int))), shape=[self.num_nodes, 1])
        r = x.copy()
        for _ in range(self.n_order):
            x = (1 - self.alpha) * r + self.alpha * self.P @ x
        scores = x.data / (self.d[x.indices] + 1e-9)
        idx = scores.argsort()[::-1][: self.maxsize]
        neighbour = np.array(x.indices[idx])
        at = np.where(neighbour == seed)[0]
        if at.size == 0:
            neighbour = np.append(np.array([seed]), neighbour)
        else:
            at = at[0]
            neighbour[at], neighbour[0] = neighbour[0], neighbour[at]
        return neighbour

    def subgraph(self, seed: int, features: torch.Tensor):
        """``Data(x, edge_index)`` of the node's subgraph (edges in both directions, set order); kept per
        node, as ``Subgraph.build`` stores every node's subgraph before training."""
        from torch_geometric.data import Data

        key = (int(seed), id(features))
        if key in self.built:
            return self.built[key]
        nodes = self.search(seed)[: self.maxsize]
        position = {int(v): i for i, v in enumerate(nodes)}
        members = set(position)
        src: List[int] = []
        dst: List[int] = []
        for v in nodes:
            linked = [position[u] for u in self.neighbours[int(v)] & members]
            src += [position[int(v)]] * len(linked)
            dst += linked
        self.built[key] = Data(features[torch.from_numpy(nodes)], torch.LongTensor([src, dst])), nodes
        return self.built[key]


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                base_temperature: float = 0.07) -> torch.Tensor:
    """``SupConLoss(contrast_mode='all')`` of ``features`` (B, views, d)."""
    b = features.shape[0]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).to(features.dtype)
    views = features.shape[1]
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = torch.matmul(contrast, contrast.T) / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    mask = mask.repeat(views, views)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(b * views).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return torch.mean((-(temperature / base_temperature) * mean_log_prob_pos).view(views, b))


@dataclass
class StepOutcome:
    loss: torch.Tensor
    grads: Dict[str, torch.Tensor]  # "weight" (in, hidden as GCNConv.lin.weight^T), "bias", "prelu"
    concentration: np.ndarray  # the Beta parameter the code would draw each mixed subgraph's weights with
    nodes: Dict[int, np.ndarray]  # each subgraph's nodes


def cosmic_step(params: Dict[str, torch.Tensor], ppr: ReferencePPR, features: torch.Tensor,
                support: Sequence[int], support_y: Sequence[int], extra: Sequence[List[int]],
                lam: np.ndarray, temperature: float = 0.07, adj_seed: int = 0) -> StepOutcome:
    """One training step's loss and gradients (``train()``'s ``interp=True`` branch).

    Args:
        params: ``weight`` (hidden, in), ``bias`` (hidden,), ``prelu`` (hidden,) leaves.
        ppr: the subgraph extractor; ``features``: dense node features (the code's ``data.x``).
        support, support_y: the N-way K-shot nodes and their labels 0..N-1.
        extra: the extra nodes per drawn class (the code's ``random.sample`` results).
        lam: (M, 20) feature mixing weights of the support side, one row per mixed subgraph
            (the code's ``m.sample([20, 1])``; rows past the support count are never used).
    """
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import GCNConv, global_mean_pool
    from torch_geometric.utils import dense_to_sparse, to_dense_adj

    dtype = params["weight"].dtype
    conv = GCNConv(features.shape[1], params["weight"].shape[0]).to(dtype)
    conv_params = {"lin.weight": params["weight"], "bias": params["bias"]}  # the leaves themselves
    nodes_of: Dict[int, np.ndarray] = {}

    def sub(v):
        data, nodes = ppr.subgraph(int(v), features)
        nodes_of[int(v)] = nodes
        return data

    def pad(x):
        return torch.cat([x, torch.zeros([REF_PAD - x.shape[0], x.shape[1]], dtype=x.dtype)], 0) \
            if x.shape[0] < REF_PAD else x

    batch, index, size, x, x_features = [], [], 0, [], []
    for v in support:
        g = sub(v)
        batch.append(Data(g.x, g.edge_index, torch.ones(g.edge_index.shape[1])))
        index.append(size)
        size += g.x.size(0)
        x.append(pad(g.x))
        x_features.append(g.x.mean(0))
    extra_nodes = [v for group in extra for v in group]
    temp, x_temp = [], []
    for v in extra_nodes:
        g = sub(v)
        temp.append(Data(g.x, g.edge_index, torch.ones(g.edge_index.shape[1])))
        x_temp.append(pad(g.x))
        x_features.append(g.x.mean(0))
    x_features = torch.stack(x_features, 0).float()
    unit = x_features / (x_features.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-9)
    simi = torch.sigmoid(-unit.matmul(unit.t()))
    temp = Batch().from_data_list(temp)
    dense_adj = to_dense_adj(temp.edge_index, temp.batch, max_num_nodes=REF_PAD).to(dtype)
    adj_rng = np.random.default_rng(adj_seed)
    concentration = []
    x_interp = None
    for i in range(len(extra_nodes)):
        sim = simi[i, i]  # the code's target_idx = i
        concentration.append(float(sim * 10))
        lam_adj = torch.from_numpy(adj_rng.beta(float(sim * 10), 1, size=dense_adj[i].shape)).to(dtype)
        interp_adj = dense_adj[i] * lam_adj + dense_adj[i] * (1 - lam_adj)
        edge_index, edge_attr = dense_to_sparse(interp_adj)
        row_lam = torch.from_numpy(np.asarray(lam[i])).to(dtype).reshape(-1, 1)
        try:
            x_interp = x[i] * row_lam + x_temp[i] * (1 - row_lam)
        except IndexError:  # the code's bare except: the previous mixed features stay
            pass
        index.append(size)
        size += x_interp.size(0)
        batch.append(Data(x_interp, edge_index, edge_attr))
    labels = list(support_y)
    for j, group in enumerate(extra):
        labels.extend([j + 5] * len(group))
    batch = Batch().from_data_list(batch)
    index = torch.tensor(index)
    # SugbCon.forward(x, edge_index, batch, index): edge_attr stays None
    hidden = torch.func.functional_call(conv, conv_params, (batch.x, batch.edge_index))
    hidden = F.prelu(hidden, params["prelu"])
    hidden = F.normalize(hidden)
    z, summary = hidden[index], global_mean_pool(hidden, batch.batch)
    loss = supcon_loss(torch.cat([z.unsqueeze(1), summary.unsqueeze(1)], dim=1), torch.LongTensor(labels),
                       temperature, temperature)
    names = ("weight", "bias", "prelu")
    grads = torch.autograd.grad(loss, [params[k] for k in names])
    return StepOutcome(loss.detach(), dict(zip(names, grads)), np.array(concentration), nodes_of)


def reference_params(learner) -> Dict[str, torch.Tensor]:
    """Fresh leaves holding a gnn-cml COSMIC learner's weights (GCNConv's ``lin.weight`` layout)."""
    return {"weight": learner.weight.t().detach().clone().requires_grad_(),
            "bias": learner.bias.detach().clone().requires_grad_(),
            "prelu": learner.prelu.weight.detach().clone().requires_grad_()}


def to_ours(grads: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {"weight": grads["weight"].t(), "bias": grads["bias"], "prelu.weight": grads["prelu"]}
