"""Graph encoders (the shared extractor ``psi``) that run on an episode's rows only.

Every encoder has ``bind(graph)`` (a :class:`PreparedGraph`), ``prepare(nodes)`` that
builds the parameter-free inputs for those nodes once per episode, and
``forward(inputs, cond=None, training=True)`` that maps them to node features.
``forward`` only reads parameters, so learners call it through
``torch.func.functional_call`` with adapted parameter dicts.

Encoders whose first operation is ``inputs["x"] @ W^T`` name ``W`` in
``input_weight``; ``forward`` then takes that product from ``inputs["xw"]`` when
given (MAML's inner loop tracks it without re-multiplying the wide input rows).
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gnn_cml.errors import require
from gnn_cml.models.graph import PreparedGraph, RowBlock

ACTIVATIONS = {"relu": F.relu, "elu": F.elu, "none": lambda h: h}


def _nodes(nodes) -> np.ndarray:
    return nodes.cpu().numpy() if isinstance(nodes, torch.Tensor) else np.asarray(nodes)


class GraphEncoder(nn.Module):
    """Base class: holds the bound graph (not a parameter) and layer settings."""

    input_weight: Optional[str] = None

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.5,
                 activation: str = "relu", out_activation: Optional[str] = None):
        super().__init__()
        require(layers >= 1, f"an encoder needs at least one layer, got {layers}")
        require(hidden > 0, f"hidden size must be positive, got {hidden}")
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        require(activation in ACTIVATIONS, f"unknown activation '{activation}': use {', '.join(ACTIVATIONS)}")
        self.in_dim, self.hidden, self.num_layers, self.dropout = in_dim, hidden, layers, dropout
        out_activation = activation if out_activation is None else out_activation
        require(out_activation in ACTIVATIONS,
                f"unknown output activation '{out_activation}': use {', '.join(ACTIVATIONS)}")
        self.act = ACTIVATIONS[activation]
        self.out_act = ACTIVATIONS[out_activation]  # after the last layer ('none' in the reference code)
        self.graph: Optional[PreparedGraph] = None

    @property
    def out_dim(self) -> int:
        return self.hidden

    def bind(self, graph: PreparedGraph) -> "GraphEncoder":
        require(graph.num_features == self.in_dim,
                f"encoder expects {self.in_dim} features but the graph has {graph.num_features}")
        self.graph = graph
        return self

    def _drop(self, h: torch.Tensor, training: bool) -> torch.Tensor:
        return F.dropout(h, self.dropout, training=training and self.training)

    @staticmethod
    def _input_product(inputs, weight: torch.Tensor) -> torch.Tensor:
        """``X W^T`` of the input rows, or the inner loop's tracked ``inputs["xw"]``."""
        return inputs["xw"] if "xw" in inputs else inputs["x"].matmul(weight.t())


class GCN(GraphEncoder):
    """Kipf & Welling GCN, ``H' = act(Â H W + b)``, computed exactly on episode rows.

    Layer 1 reads the precomputed ``(Â X)`` rows of ``N^{L-1}(nodes)``; layer ``l``
    multiplies by the ``Â`` block from its input rows to its output rows.
    """

    input_weight = "layers.0.weight"

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.5,
                 activation: str = "relu", out_activation: Optional[str] = None):
        super().__init__(in_dim, hidden, layers, dropout, activation, out_activation)
        dims = [in_dim] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def prepare(self, nodes) -> Dict[str, object]:
        g = self.graph
        rows: List[np.ndarray] = [_nodes(nodes)]
        for _ in range(self.num_layers - 1):
            rows.insert(0, g.neighbourhood(rows[0]))
        return {"x": g.feature_rows(1, rows[0]),
                "adj": [g.adjacency_block(rows[i + 1], rows[i]) for i in range(self.num_layers - 1)]}

    def forward(self, inputs, cond=None, training: bool = True) -> torch.Tensor:
        first = self.layers[0]
        if cond is not None:  # feature-wise modulation of the input, see AMM-GNN
            h = inputs["x"].matmul(first.weight.t() * cond["scale"].reshape(-1, 1)) + first.bias
        else:
            h = self._input_product(inputs, first.weight) + first.bias
        if cond is not None and "shift" in cond:
            h = h + cond["shift"] @ first.weight.t()
        for layer, adj in zip(list(self.layers)[1:], inputs["adj"]):  # a ModuleList slice builds a module
            h = self._drop(self.act(h), training)
            h = adj.matmul(h @ layer.weight.t()) + layer.bias
        return self.out_act(h)


class SGC(GraphEncoder):
    """Simplified GCN (Wu et al. 2019) as in Meta-GNN: ``(Â^K X) W`` with K = ``layers``."""

    input_weight = "linear.weight"

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.0,
                 activation: str = "none", out_activation: Optional[str] = None):
        super().__init__(in_dim, hidden, layers, dropout, activation, out_activation)
        self.linear = nn.Linear(in_dim, hidden)

    def prepare(self, nodes) -> Dict[str, object]:
        return {"x": self.graph.feature_rows(self.num_layers, _nodes(nodes))}

    def forward(self, inputs, cond=None, training: bool = True) -> torch.Tensor:
        h = self._input_product(inputs, self.linear.weight) + self.linear.bias
        return self._drop(self.out_act(h), training)  # one layer: its activation is the output's


class _PyGConvEncoder(GraphEncoder):
    """Message-passing encoders from PyG convs, run on the nodes' L-hop computation graph."""

    def _build(self, conv_factory):
        dims = [self.in_dim] + [self.hidden] * self.num_layers
        self.convs = nn.ModuleList(conv_factory(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def prepare(self, nodes) -> Dict[str, object]:
        g, nodes = self.graph, _nodes(nodes)
        subset = g.neighbourhood(nodes, self.num_layers)
        block = g.adj[subset][:, subset].tocoo()
        keep = block.row != block.col  # convs add their own self-loops
        edge_index = torch.from_numpy(np.vstack([block.col[keep], block.row[keep]]).astype(np.int64))
        x = g.x[subset]
        return {"x": torch.from_numpy((x.toarray() if sp.issparse(x) else x).astype(np.float32)),
                "edge_index": edge_index,
                "out": torch.from_numpy(np.searchsorted(subset, nodes))}

    def forward(self, inputs, cond=None, training: bool = True) -> torch.Tensor:
        h = inputs["x"]
        for i, conv in enumerate(self.convs):
            if i:
                h = self._drop(h, training)
            h = conv(h, inputs["edge_index"])
            h = self.act(h) if i < len(self.convs) - 1 else self.out_act(h)
        return h[inputs["out"]]


class SAGE(_PyGConvEncoder):
    """GraphSAGE (mean aggregator) via ``torch_geometric.nn.SAGEConv``."""

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.5,
                 activation: str = "relu", out_activation: Optional[str] = None):
        super().__init__(in_dim, hidden, layers, dropout, activation, out_activation)
        from torch_geometric.nn import SAGEConv

        self._build(lambda a, b: SAGEConv(a, b))


class GAT(_PyGConvEncoder):
    """Graph attention (single head) via ``torch_geometric.nn.GATConv``."""

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.5,
                 activation: str = "elu", out_activation: Optional[str] = None):
        super().__init__(in_dim, hidden, layers, dropout, activation, out_activation)
        from torch_geometric.nn import GATConv

        self._build(lambda a, b: GATConv(a, b, heads=1))


class SubgraphGCN(GraphEncoder):
    """G-Meta's encoder: each node is embedded from its own h-hop subgraph.

    The GCN runs on ``Â`` restricted to the subgraph (not renormalised, as in the
    reference code) and the node embedding is the mean over the subgraph's nodes
    (``pool='mean'``) or the centre node's row (``pool='center'``, the G-Meta paper).
    """

    input_weight = "layers.0.weight"

    def __init__(self, in_dim: int, hidden: int = 16, layers: int = 2, dropout: float = 0.5,
                 activation: str = "relu", hops: int = 2, pool: str = "mean", out_activation: Optional[str] = None):
        super().__init__(in_dim, hidden, layers, dropout, activation, out_activation)
        require(pool in ("mean", "center"), f"unknown subgraph pooling '{pool}': use mean or center")
        self.hops, self.pool = hops, pool
        dims = [in_dim] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def prepare(self, nodes) -> Dict[str, object]:
        g, nodes = self.graph, _nodes(nodes)
        parts = g.subgraphs(nodes, self.hops)  # cached per node
        subsets = [p.nodes for p in parts]
        sizes = np.array([len(s) for s in subsets])
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        total = int(bounds[-1])
        if parts[0].x_dense is None:
            x = _stack_csr([(p.x_data, p.x_indices, p.x_indptr) for p in parts], g.num_features)
        else:
            x = np.concatenate([p.x_dense for p in parts])
        inputs = {"x": RowBlock.sparse_rows(x)}
        collapse = self.num_layers >= 2 and self.out_act is ACTIVATIONS["none"]
        if collapse:
            # No output activation: pooling commutes with the last layer, pool(Â h W + b) = (pool Â) h W + b,
            # so the last layer needs one n x R row block instead of the R x R subgraph adjacency.
            inputs["pool_adj"] = RowBlock.from_matrix(self.pooled_adjacency(nodes, parts, bounds))
        if self.num_layers > 2 or not collapse:
            blocks = _stack_csr([(p.adj_data, p.adj_indices, p.adj_indptr) for p in parts], total, bounds)
            inputs["adj"] = RowBlock.from_matrix(blocks)
        if not collapse:
            pool = np.zeros((len(nodes), total), np.float32)
            if self.pool == "mean":
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                    pool[i, a:b] = 1.0 / (b - a)
            else:
                pool[np.arange(len(nodes)), bounds[:-1] + np.array([np.searchsorted(s, v) for s, v in
                                                                   zip(subsets, nodes)])] = 1.0
            inputs["pool"] = RowBlock.from_matrix(pool)
        return inputs

    def pooled_adjacency(self, nodes: np.ndarray, parts, bounds: np.ndarray) -> np.ndarray:
        """``pool @ Â_sub`` for the nodes' stacked subgraphs ``parts`` (rows ``bounds[i]:bounds[i+1]``):
        one row per node, its subgraph's mean row of ``Â_sub`` (``pool='mean'``) or its centre's row.
        Each node's row depends on the node only and is cached."""
        # per bound graph: an inductive run rebinds its encoder between phases
        cache = self.__dict__.setdefault("_pool_rows", weakref.WeakKeyDictionary()).setdefault(self.graph, {})
        out = np.zeros((len(nodes), int(bounds[-1])), np.float32)
        for i, (v, part) in enumerate(zip(nodes, parts)):
            key = (int(v), self.hops, self.pool)
            row = cache.get(key)
            if row is None:
                size = len(part.nodes)
                if self.pool == "mean":
                    row = (np.bincount(part.adj_indices, part.adj_data, size) / size).astype(np.float32)
                else:
                    c = int(np.searchsorted(part.nodes, v))
                    lo, hi = part.adj_indptr[c], part.adj_indptr[c + 1]
                    row = np.zeros(size, np.float32)
                    row[part.adj_indices[lo:hi]] = part.adj_data[lo:hi]
                cache[key] = row
            out[i, bounds[i]:bounds[i + 1]] = row
        return out

    def forward(self, inputs, cond=None, training: bool = True) -> torch.Tensor:
        first = self.layers[0]
        h = self._input_product(inputs, first.weight) + first.bias
        later = list(self.layers)[1:]
        for i, layer in enumerate(later):
            h = self._drop(self.act(h), training)
            if i == len(later) - 1 and "pool_adj" in inputs:
                return inputs["pool_adj"].matmul(h @ layer.weight.t()) + layer.bias
            h = inputs["adj"].matmul(h @ layer.weight.t()) + layer.bias
        return inputs["pool"].matmul(self.out_act(h))


def stack_csr_parts(parts, column_offsets=None):
    """Row-stack raw CSR parts ``(data, indices, indptr)`` into one ``(data, indices, indptr)``;
    with ``column_offsets`` part ``i``'s columns shift by ``column_offsets[i]`` (e.g. a
    block-diagonal matrix)."""
    offsets = np.cumsum([0] + [len(d) for d, _, _ in parts])
    indptr = np.concatenate([[0]] + [ptr[1:] + off for (_, _, ptr), off in zip(parts, offsets[:-1])])
    indices = [idx for _, idx, _ in parts] if column_offsets is None else \
        [idx + c for (_, idx, _), c in zip(parts, column_offsets)]
    return np.concatenate([d for d, _, _ in parts]), np.concatenate(indices), indptr


def _stack_csr(parts, width: int, column_offsets=None) -> sp.csr_matrix:
    """:func:`stack_csr_parts` as a scipy CSR matrix ``width`` columns wide."""
    data, indices, indptr = stack_csr_parts(parts, column_offsets)
    return sp.csr_matrix((data, indices, indptr), shape=(int(indptr.shape[0] - 1), int(width)))


ENCODERS = {"gcn": GCN, "sgc": SGC, "sage": SAGE, "gat": GAT, "subgraph_gcn": SubgraphGCN}


def build_encoder(name: str, in_dim: int, **kwargs) -> GraphEncoder:
    require(name in ENCODERS, f"unknown backbone '{name}': use one of {', '.join(ENCODERS)}")
    return ENCODERS[name](in_dim, **kwargs)
