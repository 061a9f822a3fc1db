"""Per-graph precomputation shared by every episode, and episode row blocks.

A few-shot episode touches only its support and query nodes. For an L-layer GCN
the output rows ``T`` depend on ``N^{L-1}(T)`` rows of the first layer, whose
input ``(Â X)`` does not depend on any parameter. :class:`PreparedGraph` holds
the normalised adjacency ``Â`` and ``Â X`` (sparse when ``X`` is sparse) once
per graph; encoders slice the rows an episode needs into small dense
:class:`RowBlock` s, so each inner step costs a few hundred rows, not the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from gnn_cml.errors import require

# Row blocks larger than this many dense entries are kept sparse (gather/scatter spmm).
DENSE_BLOCK_LIMIT = 1 << 24


def to_scipy_features(x: torch.Tensor):
    """Node features as a scipy CSR matrix (sparse input) or a float32 ndarray (dense)."""
    if x.layout == torch.sparse_csr:
        return sp.csr_matrix((x.values().numpy().astype(np.float32), x.col_indices().numpy(),
                              x.crow_indices().numpy()), shape=tuple(x.shape))
    if x.is_sparse:
        x = x.coalesce()
        i = x.indices().numpy()
        return sp.csr_matrix((x.values().numpy().astype(np.float32), (i[0], i[1])), shape=tuple(x.shape))
    return x.detach().cpu().numpy().astype(np.float32, copy=False)


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int, norm: str = "row",
                         self_loops: bool = True) -> sp.csr_matrix:
    """``D^-1 (A + I)`` (``norm='row'``) or ``D^-1/2 (A + I) D^-1/2`` (``'sym'``) as CSR."""
    require(norm in ("row", "sym"), f"unknown adjacency normalisation '{norm}': use row or sym")
    ei = edge_index.cpu().numpy()
    a = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])), shape=(num_nodes, num_nodes))
    a.sum_duplicates()
    a.data[:] = 1.0
    if self_loops:
        a = (a + sp.identity(num_nodes, dtype=np.float32, format="csr")).tocsr()
    deg = np.asarray(a.sum(1)).reshape(-1)
    deg[deg == 0] = 1.0
    if norm == "row":
        return sp.diags(1.0 / deg).dot(a).astype(np.float32).tocsr()
    d = sp.diags(1.0 / np.sqrt(deg))
    return d.dot(a).dot(d).astype(np.float32).tocsr()


@dataclass
class RowBlock:
    """Rows of a parameter-free matrix, dense or as COO parts; ``@ W`` is differentiable
    to any order and works under ``torch.func`` transforms."""

    dense: Optional[torch.Tensor] = None
    row: Optional[torch.Tensor] = None
    col: Optional[torch.Tensor] = None
    val: Optional[torch.Tensor] = None
    shape: tuple = ()

    @classmethod
    def from_matrix(cls, m, limit: int = DENSE_BLOCK_LIMIT) -> "RowBlock":
        if not sp.issparse(m):
            return cls(dense=torch.as_tensor(np.ascontiguousarray(m), dtype=torch.float32), shape=m.shape)
        if m.shape[0] * m.shape[1] <= limit:
            return cls(dense=torch.from_numpy(m.toarray().astype(np.float32)), shape=m.shape)
        m = m.tocoo()
        return cls(row=torch.from_numpy(m.row.astype(np.int64)), col=torch.from_numpy(m.col.astype(np.int64)),
                   val=torch.from_numpy(m.data.astype(np.float32)), shape=m.shape)

    def matmul(self, w: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            return self.dense.to(w.dtype) @ w
        out = w.new_zeros(self.shape[0], w.shape[-1])
        return out.index_add(0, self.row, self.val.to(w.dtype).unsqueeze(-1) * w[self.col])

    def tmatmul(self, g: torch.Tensor) -> torch.Tensor:
        """``M^T g`` (differentiable in ``g``)."""
        if self.dense is not None:
            return self.dense.to(g.dtype).t() @ g
        out = g.new_zeros(self.shape[1], g.shape[-1])
        return out.index_add(0, self.col, self.val.to(g.dtype).unsqueeze(-1) * g[self.row])

    def gram(self) -> torch.Tensor:
        """``M M^T`` as a dense tensor (parameter-free; sparse blocks multiply sparsely)."""
        if self.dense is not None:
            return self.dense @ self.dense.t()
        m = sp.csr_matrix((self.val.cpu().numpy(), (self.row.cpu().numpy(), self.col.cpu().numpy())), self.shape)
        return torch.from_numpy(m.dot(m.T).toarray()).to(self.val.device)

    def to(self, device) -> "RowBlock":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return RowBlock(move(self.dense), move(self.row), move(self.col), move(self.val), self.shape)


class PreparedGraph:
    """Parameter-free structure of one graph: ``Â``, ``Â^k X`` and neighbourhoods.

    Everything is computed lazily once and cached; large feature matrices stay sparse.
    """

    def __init__(self, data: Data, norm: str = "row", self_loops: bool = True):
        self.num_nodes = int(data.num_nodes)
        self.norm = norm
        self.adj = normalized_adjacency(data.edge_index, self.num_nodes, norm, self_loops)
        self.x = to_scipy_features(data.x)
        self.num_features = int(self.x.shape[1])
        self._propagated: Dict[int, object] = {0: self.x}
        self._structure = self.adj.copy()
        self._structure.data[:] = 1.0

    def propagated(self, k: int):
        """``Â^k X`` (scipy CSR if X is sparse, else ndarray), cached."""
        if k not in self._propagated:
            prev = self.propagated(k - 1)
            out = self.adj.dot(prev)
            self._propagated[k] = out.tocsr() if sp.issparse(out) else np.asarray(out, dtype=np.float32)
        return self._propagated[k]

    def neighbourhood(self, nodes: np.ndarray, hops: int = 1) -> np.ndarray:
        """Sorted nodes within ``hops`` of ``nodes`` in ``Â``'s pattern (self-loops included)."""
        frontier = np.unique(nodes)
        for _ in range(hops):
            frontier = np.union1d(frontier, self._structure[frontier].indices)
        return frontier

    def rows(self, matrix, nodes: np.ndarray) -> RowBlock:
        return RowBlock.from_matrix(matrix[nodes])

    def adjacency_block(self, rows: np.ndarray, cols: np.ndarray) -> RowBlock:
        """``Â[rows][:, cols]`` as a row block (cols must cover the rows' neighbours)."""
        return RowBlock.from_matrix(self.adj[rows][:, cols])

    def torch_adjacency(self) -> torch.Tensor:
        """``Â`` as a torch sparse COO tensor (for full-graph reference computations)."""
        coo = self.adj.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce()
