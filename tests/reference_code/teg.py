"""A transcription of TEG's per-task computation (sung-won-kim/TEG: ``model.py`` ``train_epoch``,
``layers/GCN.py``, ``layers/EGNN.py``, the structural features of ``embedder.py``), in our words.

Test-only: tests/test_teg.py and benchmarks/teg_speed.py check gnn-cml's :class:`~gnn_cml.meta.teg.TEG`
against it (same weights, same episode: same loss and gradients). It keeps the reference's way of
computing: PyG's ``GCNConv`` over the *whole graph* every episode (its normalisation cached, as
``cached=True``), the task graph as an explicit edge list, EGNN aggregation by ``scatter_add_``
over edges, the structural features by networkx breadth-first search. The reference needs no
library we lack (its scatter helpers are plain ``torch.scatter_add_``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv


def structural_features(edge_index: torch.Tensor, num_nodes: int, members: List[Sequence[int]]) -> torch.Tensor:
    """``embedder.py``: anchor ``i`` gets id ``num_nodes + i`` and edges to ``members[i]`` (the
    reference draws them with ``random.sample``); a networkx graph of every edge; per anchor and
    node ``1 / (shortest path length + 1)``, ``1 / (inf + 1) = 0`` for nodes it cannot reach
    (or that are in no edge at all)."""
    edges = edge_index
    for i, chosen in enumerate(members):
        hub = torch.full((len(chosen),), num_nodes + i, dtype=torch.long)
        linked = torch.as_tensor(list(chosen), dtype=torch.long)
        edges = torch.cat([edges, torch.stack([torch.cat([hub, linked]), torch.cat([linked, hub])])], 1)
    graph = nx.Graph()
    graph.add_edges_from(edges.t().tolist())
    columns = []
    for i in range(len(members)):
        lengths = nx.single_source_shortest_path_length(graph, num_nodes + i)
        columns.append([1 / (lengths.get(j, np.inf) + 1) for j in range(num_nodes)])
    return torch.tensor(columns).t()


class ReferenceGCN(nn.Module):
    """``layers/GCN.py``: dropout on the input features, then one ``GCNConv``."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.conv1 = GCNConv(in_dim, out_dim, cached=True, normalize=True)
        self.dropout = dropout

    def forward(self, x, edge_index):
        return self.conv1(F.dropout(x, p=self.dropout, training=self.training), edge_index)


def _segment_mean(data, segment, count):
    out = data.new_zeros(count, data.size(1)).scatter_add_(0, segment.unsqueeze(-1).expand_as(data), data)
    n = data.new_zeros(count, data.size(1)).scatter_add_(0, segment.unsqueeze(-1).expand_as(data),
                                                        torch.ones_like(data))
    return out / n.clamp(min=1)


def _segment_sum(data, segment, count):
    return data.new_zeros(count, data.size(1)).scatter_add_(0, segment.unsqueeze(-1).expand_as(data), data)


class ReferenceEGCL(nn.Module):
    """``layers/EGNN.py`` ``EGCL``: per directed edge (row <- col) a message from the two
    structural features and the squared coordinate distance; coordinates move by the mean over
    edges of ``(x_row - x_col) * trans_mlp(msg)``; features by ``posi_mlp([p, sum msg])``, residual."""

    def __init__(self, raw_dim: int, hid_dim: int):
        super().__init__()
        last = nn.Linear(hid_dim, 1, bias=False)
        self.msg_mlp = nn.Sequential(nn.Linear(2 * raw_dim + 1, hid_dim), nn.SiLU(), nn.Linear(hid_dim, hid_dim),
                                     nn.SiLU())
        self.trans_mlp = nn.Sequential(nn.Linear(hid_dim, hid_dim), nn.SiLU(), nn.Linear(hid_dim, hid_dim), nn.SiLU(),
                                       last)
        self.posi_mlp = nn.Sequential(nn.Linear(raw_dim + hid_dim, hid_dim), nn.SiLU(), nn.Linear(hid_dim, raw_dim))

    def forward(self, edge_index, p, x):
        row, col = edge_index
        diff = x[row] - x[col]
        sq = (diff ** 2).sum(1).unsqueeze(1)
        msg = self.msg_mlp(torch.cat([p[row], p[col], sq], 1))
        x = x + _segment_mean(diff * self.trans_mlp(msg), row, x.size(0))
        p = p + self.posi_mlp(torch.cat([p, _segment_sum(msg, row, p.size(0))], 1))
        return p, x


class ReferenceEGNN(nn.Module):
    """``EGNN``: LayerNorm on the coordinates, then ``n_layers`` EGCLs."""

    def __init__(self, str_dim: int, in_dim: int, n_layers: int):
        super().__init__()
        self.gcls = nn.ModuleList(ReferenceEGCL(str_dim, in_dim) for _ in range(n_layers))
        self.LayerNorm = nn.LayerNorm(in_dim)

    def forward(self, p, x, edge_index):
        x = self.LayerNorm(x)
        for layer in self.gcls:
            p, x = layer(edge_index, p, x)
        return p, x


def task_edge_index(n_support: int, n_query: int) -> torch.Tensor:
    """``model.py``'s task graph: every query (ids after the supports) to every support, both ways."""
    queries = torch.arange(n_support, n_support + n_query).repeat_interleave(n_support)
    supports = torch.arange(n_support).repeat(n_query)
    return torch.stack([torch.cat([queries, supports]), torch.cat([supports, queries])])


def euclidean_dist(x, y):
    n, m, d = x.size(0), y.size(0), x.size(1)
    return (x.unsqueeze(1).expand(n, m, d) - y.unsqueeze(0).expand(n, m, d)).pow(2).sum(2)


@dataclass
class TaskOutcome:
    loss: torch.Tensor
    output: torch.Tensor  # log-probabilities of the queries (task embedder)
    output_gcn: torch.Tensor


def teg_task(gcn: ReferenceGCN, egnn: ReferenceEGNN, features, edge_index, structure, support, query, query_y,
             ways: int, shots: int, gamma: float = 0.5) -> TaskOutcome:
    """One training episode of ``train_epoch`` (the loss before ``backward``). ``support``/``query``
    are class-major node ids (``task_generator_in_class``), ``query_y`` the relabelled classes."""
    support, query = torch.as_tensor(support), torch.as_tensor(query)
    embeddings = gcn(features, edge_index)
    embeds = torch.cat([embeddings[support], embeddings[query]])
    strs = torch.cat([structure[support], structure[query]])
    s = len(support)
    proto_gcn = embeds[:s].view(ways, shots, -1).mean(1)
    output_gcn = F.log_softmax(-euclidean_dist(embeds[s:], proto_gcn), dim=1)
    strs, embeds = egnn(strs, embeds, task_edge_index(s, len(query)))
    proto = embeds[:s].view(ways, shots, -1).mean(1)
    output = F.log_softmax(-euclidean_dist(embeds[s:], proto), dim=1)
    loss = gamma * F.nll_loss(output, query_y) + (1 - gamma) * F.nll_loss(output_gcn, query_y)
    return TaskOutcome(loss, output, output_gcn)


# --- weights: ours -> the reference layout, and gradients back --------------------------------------
def names_to_ours(egnn_layers: int) -> Dict[str, str]:
    """Reference parameter name -> gnn-cml TEG parameter name."""
    names = {"gcn.conv1.lin.weight": "encoder.linear.weight", "gcn.conv1.bias": "encoder.linear.bias",
             "egnn.LayerNorm.weight": "embedder.norm.weight", "egnn.LayerNorm.bias": "embedder.norm.bias"}
    parts = {"msg_mlp": "message", "trans_mlp": "coordinate", "posi_mlp": "feature"}
    for i in range(egnn_layers):
        for ref, ours in parts.items():
            for j in (0, 2, 4):
                for kind in ("weight", "bias"):
                    names[f"egnn.gcls.{i}.{ref}.{j}.{kind}"] = f"embedder.layers.{i}.{ours}.{j}.{kind}"
    return names


def from_ours(learner, dropout: float = 0.0):
    """A :class:`ReferenceGCN` and :class:`ReferenceEGNN` holding copies of ``learner``'s weights
    (its dtype), and the reference-name -> our-name map of their parameters."""
    ours = dict(learner.named_parameters())
    dtype = ours["encoder.linear.weight"].dtype
    in_dim, hidden = learner.encoder.in_dim, learner.encoder.hidden
    gcn = ReferenceGCN(in_dim, hidden, dropout).to(dtype)
    egnn = ReferenceEGNN(learner.structure.shape[1], hidden, len(learner.embedder.layers)).to(dtype)
    modules = {"gcn": gcn, "egnn": egnn}
    names = {}
    for ref, mine in names_to_ours(len(learner.embedder.layers)).items():
        owner, rest = ref.split(".", 1)
        found = dict(modules[owner].named_parameters())
        if rest in found:
            with torch.no_grad():
                found[rest].copy_(ours[mine])
            names[ref] = mine
    gcn.eval()  # dropout off unless the caller turns training on
    return gcn, egnn, names


def gradients(gcn, egnn, names: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """The reference modules' ``.grad`` under our parameter names (zeros where none reached)."""
    found = {**{f"gcn.{k}": v for k, v in gcn.named_parameters()},
             **{f"egnn.{k}": v for k, v in egnn.named_parameters()}}
    return {names[k]: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in found.items() if k in names}


__all__ = ["ReferenceEGCL", "ReferenceEGNN", "ReferenceGCN", "TaskOutcome", "from_ours", "gradients",
           "names_to_ours", "structural_features", "task_edge_index", "teg_task"]
