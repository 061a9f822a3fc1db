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
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from gnn_cml.data.source import csr_tensor
from gnn_cml.errors import require

# Row blocks larger than this many dense entries are kept sparse (gather/scatter spmm).
DENSE_BLOCK_LIMIT = 1 << 24
# Feature rows sparser than this (bag-of-words) are kept as CSR: a product with a weight costs
# their non-zeros instead of rows x features.
SPARSE_FEATURE_DENSITY = 0.1


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


class _SparseRowsMatmul(torch.autograd.Function):
    """``M @ w`` (or ``M^T @ w``) for the constant CSR rows ``M`` of a :class:`RowBlock`; the
    backward is the same product with the other orientation, so it is differentiable to any
    order (second-order MAML)."""

    @staticmethod
    def forward(w, block, transpose):
        return block._sparse_product(w, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.block, ctx.transpose = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, grad):
        if grad.requires_grad and torch.is_grad_enabled():
            return _SparseRowsMatmul.apply(grad, ctx.block, not ctx.transpose), None, None
        return ctx.block._sparse_product(grad, not ctx.transpose), None, None


@dataclass
class RowBlock:
    """Rows of a parameter-free matrix, dense or as COO parts; ``@ W`` is differentiable
    to any order and works under ``torch.func`` transforms."""

    dense: Optional[torch.Tensor] = None
    row: Optional[torch.Tensor] = None
    col: Optional[torch.Tensor] = None
    val: Optional[torch.Tensor] = None
    shape: tuple = ()
    host: Optional[sp.csr_matrix] = None  # CSR mode: the rows as scipy CSR (products run in scipy on CPU)
    device: Optional[torch.device] = None  # CSR mode on another device: torch CSR copies, made when needed

    @classmethod
    def sparse_rows(cls, m, max_density: float = SPARSE_FEATURE_DENSITY) -> "RowBlock":
        """Feature rows: CSR mode when ``m`` is a sparse matrix sparser than ``max_density``,
        else as :meth:`from_matrix`."""
        if not sp.issparse(m) or m.shape[0] * m.shape[1] == 0 or m.nnz > max_density * m.shape[0] * m.shape[1]:
            return cls.from_matrix(m)
        return cls(shape=m.shape, host=sp.csr_matrix(m, dtype=np.float32))

    def _sparse_product(self, w: torch.Tensor, transpose: bool) -> torch.Tensor:
        if w.device.type == "cpu":
            m = self.host.T if transpose else self.host  # scipy's CSR.T is CSC: no conversion
            return torch.from_numpy(np.ascontiguousarray(m @ w.detach().numpy())).to(w.dtype)
        cache = self.__dict__.setdefault("_device_csr", {})
        key = (transpose, w.device, w.dtype)
        if key not in cache:
            cache[key] = csr_tensor(self.host.T.tocsr() if transpose else self.host).to(w.device, w.dtype)
        return torch.sparse.mm(cache[key], w)

    def to_dense(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense
        if self.host is not None:
            return torch.from_numpy(self.host.toarray()).to(self.device or "cpu")
        return self.val.new_zeros(self.shape).index_put_((self.row, self.col), self.val, accumulate=True)

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
        if self.host is not None:
            if not (w.requires_grad and torch.is_grad_enabled()):  # no graph to build: skip the Function
                return self._sparse_product(w, False)
            return _SparseRowsMatmul.apply(w, self, False)
        out = w.new_zeros(self.shape[0], w.shape[-1])
        return out.index_add(0, self.row, self.val.to(w.dtype).unsqueeze(-1) * w[self.col])

    def tmatmul(self, g: torch.Tensor) -> torch.Tensor:
        """``M^T g`` (differentiable in ``g``)."""
        if self.dense is not None:
            return self.dense.to(g.dtype).t() @ g
        if self.host is not None:
            if not (g.requires_grad and torch.is_grad_enabled()):
                return self._sparse_product(g, True)
            return _SparseRowsMatmul.apply(g, self, True)
        out = g.new_zeros(self.shape[1], g.shape[-1])
        return out.index_add(0, self.col, self.val.to(g.dtype).unsqueeze(-1) * g[self.row])

    def gram(self, col_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``M diag(w) M^T`` as a dense tensor (``w``: per-column weights, default 1; a single
        weight scales the whole product). Parameter-free; sparse blocks multiply sparsely."""
        if self.dense is not None:
            if col_weights is None or col_weights.numel() == 1:
                out = self.dense @ self.dense.t()
            else:
                out = (self.dense * col_weights.to(self.dense.dtype)) @ self.dense.t()
        else:
            m = self.host if self.host is not None else sp.csr_matrix(
                (self.val.cpu().numpy(), (self.row.cpu().numpy(), self.col.cpu().numpy())), self.shape)
            if col_weights is not None and col_weights.numel() > 1:
                out = m.multiply(col_weights.detach().cpu().numpy().reshape(1, -1)).tocsr().dot(m.T)
            else:
                out = m.dot(m.T)
            device = (self.device or "cpu") if self.host is not None else self.val.device
            out = torch.from_numpy(np.asarray(out.toarray(), dtype=np.float32)).to(device)
        if col_weights is not None and col_weights.numel() == 1:
            out = out * col_weights.reshape(()).to(out.dtype)
        return out

    def to(self, device) -> "RowBlock":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return RowBlock(move(self.dense), move(self.row), move(self.col), move(self.val), self.shape, self.host,
                        torch.device(device) if self.host is not None else None)


@dataclass
class Subgraph:
    """A node's h-hop subgraph as raw CSR arrays: its sorted ``nodes``, ``Â`` restricted to them
    (not renormalised; ``adj_*``) and that block times their features (``x_*`` CSR parts, or
    ``x_dense``). Raw arrays, so that an episode stacks them without per-node scipy objects."""

    nodes: np.ndarray
    adj_data: np.ndarray
    adj_indices: np.ndarray
    adj_indptr: np.ndarray
    x_data: Optional[np.ndarray]
    x_indices: Optional[np.ndarray]
    x_indptr: Optional[np.ndarray]
    x_dense: Optional[np.ndarray]


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
        self._sparse_propagated: Dict[int, object] = {}
        self._subgraphs: Dict[tuple, "Subgraph"] = {}
        self._subgraph_entries = 0

    def feature_rows(self, k: int, nodes: np.ndarray) -> RowBlock:
        """Rows ``nodes`` of ``Â^k X`` as a row block: CSR when sparse enough (bag-of-words), else dense."""
        return RowBlock.sparse_rows(self.sparse_propagated(k)[nodes])

    def sparse_propagated(self, k: int):
        """``Â^k X`` as CSR when ``X`` is sparser than ``SPARSE_FEATURE_DENSITY``, else as :meth:`propagated`."""
        if k not in self._sparse_propagated:
            if sp.issparse(self.x) or np.count_nonzero(self.x) > SPARSE_FEATURE_DENSITY * self.x.size:
                self._sparse_propagated[k] = self.propagated(k)  # already CSR, or too dense for CSR to pay
            else:
                out = sp.csr_matrix(self.x)
                for _ in range(k):
                    out = self.adj.dot(out).tocsr()
                out.sort_indices()
                self._sparse_propagated[k] = out
        return self._sparse_propagated[k]

    # Entries of cached per-node subgraph feature rows kept at most (~8 bytes each).
    SUBGRAPH_CACHE_ENTRIES = 1 << 26

    def subgraphs(self, nodes: np.ndarray, hops: int) -> List["Subgraph"]:
        """Each node's ``hops``-hop subgraph (see :class:`Subgraph`), extracted for all uncached
        nodes at once with vectorised CSR arithmetic, then cached per node while the cache
        holds under ``SUBGRAPH_CACHE_ENTRIES`` feature entries."""
        nodes = [int(v) for v in nodes]
        missing = sorted({v for v in nodes if (v, hops) not in self._subgraphs})
        fresh = dict(zip(missing, self._extract_subgraphs(np.array(missing, dtype=np.int64), hops))) \
            if missing else {}
        for v, entry in fresh.items():
            size = len(entry.x_data) if entry.x_dense is None else entry.x_dense.size
            if self._subgraph_entries + size <= self.SUBGRAPH_CACHE_ENTRIES:
                self._subgraph_entries += size
                self._subgraphs[(v, hops)] = entry
        return [fresh[v] if v in fresh else self._subgraphs[(v, hops)] for v in nodes]

    def _extract_subgraphs(self, centres: np.ndarray, hops: int) -> List["Subgraph"]:
        n = self.num_nodes
        indptr, indices = self.adj.indptr.astype(np.int64), self.adj.indices.astype(np.int64)

        def expand(members):  # flat positions of the CSR entries of every row in members
            starts, lengths = indptr[members], indptr[members + 1] - indptr[members]
            flat = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) \
                + np.arange(int(lengths.sum()))
            return flat, lengths

        keys = centres * n + centres  # (owner, member) pairs as owner * n + member
        for _ in range(hops):
            owner, member = np.divmod(keys, n)
            flat, lengths = expand(member)
            keys = np.union1d(keys, np.repeat(owner, lengths) * n + indices[flat])
        owner, member = np.divmod(keys, n)  # sorted by owner, then member
        first = np.searchsorted(owner, centres)  # where each centre's members start
        flat, lengths = expand(member)
        cand = np.repeat(owner, lengths) * n + indices[flat]
        pos = np.minimum(np.searchsorted(keys, cand), len(keys) - 1)
        keep = keys[pos] == cand
        rows = np.repeat(np.arange(len(keys)), lengths)[keep]  # global row = pair index
        big = sp.csr_matrix((self.adj.data[flat][keep], (rows, pos[keep])), shape=(len(keys), len(keys)))
        features = big.dot(self.sparse_propagated(0)[member])
        sparse = sp.issparse(features)
        features = features.tocsr() if sparse else np.asarray(features, dtype=np.float32)
        bounds = np.concatenate([first, [len(keys)]])
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            lo, hi = big.indptr[a], big.indptr[b]
            block = (big.data[lo:hi], big.indices[lo:hi] - a, big.indptr[a:b + 1] - lo)
            if sparse:
                flo, fhi = features.indptr[a], features.indptr[b]
                x = dict(x_data=features.data[flo:fhi], x_indices=features.indices[flo:fhi],
                         x_indptr=features.indptr[a:b + 1] - flo, x_dense=None)
            else:
                x = dict(x_data=None, x_indices=None, x_indptr=None, x_dense=features[a:b])
            out.append(Subgraph(member[a:b], *block, **x))
        return out

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

    def adjacency_block(self, rows: np.ndarray, cols: np.ndarray) -> RowBlock:
        """``Â[rows][:, cols]`` as a row block (cols must cover the rows' neighbours)."""
        return RowBlock.from_matrix(self.adj[rows][:, cols])

    def torch_adjacency(self) -> torch.Tensor:
        """``Â`` as a torch sparse COO tensor (for full-graph reference computations)."""
        coo = self.adj.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce()
