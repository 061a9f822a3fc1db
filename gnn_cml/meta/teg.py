"""TEG (Kim et al., "Task-Equivariant Graph Few-shot Learning", KDD 2023), as its authors' code computes it.

Per task (N ways, K shots, M queries per class):

1. **Graph embedder**: one GCN layer, ``Â drop(X) W + b`` with GCNConv's
   ``Â = D^-1/2 (A + I) D^-1/2`` (``norm: sym``), dropout 0.5 on the *input features*,
   64 units, no activation. Computed exactly on the task's rows (the reference runs it on the
   whole graph every episode; only the task nodes' rows are ever read).
2. **Embedder loss**: prototypes (class means of the support embeddings) and
   ``log_softmax(-squared distance)`` for the queries, negative log-likelihood.
3. **Task-specific embeddings**: the task nodes' embeddings are the *coordinates* of an
   equivariant GNN (EGNN, Satorras et al. 2021); their *invariant features* are structural:
   ``1 / (d + 1)`` with ``d`` the hop distance from each of 16 virtual anchor nodes (0 where
   unreachable). Anchor ``i`` (0-based) is linked to ``max(1, int(n / 2^(i+1)))`` random nodes;
   distances are measured in the graph plus all anchors. Drawn once per run (per seed).
4. **Task embedder**: LayerNorm on the coordinates, then 2 EGNN layers on the task graph, a
   complete *bipartite* graph between support and query nodes (no support-support or
   query-query edges). Per directed edge ``i <- j``: message
   ``m_ij = MLP_m([h_i, h_j, |x_i - x_j|^2])`` (2 layers, SiLU, 64 units); coordinates
   ``x_i += mean_j (x_i - x_j) MLP_x(m_ij)`` (MLP_x: 64-64-1, SiLU, last layer without bias,
   Xavier gain 0.001); features ``h_i += MLP_h([h_i, sum_j m_ij])`` (SiLU, back to 16).
5. **Task loss**: prototypes and ``log_softmax(-squared distance)`` on the output coordinates.
   The outer loss is ``teg_gamma * task loss + (1 - teg_gamma) * embedder loss`` (0.5).

Training: Adam, lr 0.001, weight decay 5e-4 on every parameter, one task per update, no inner
loop. The authors run 10 epochs of 50 episodes (an epoch 0 without updates first) and report
the test accuracy (50 random test tasks) at the best of 11 validations on 50 random tasks. Our
defaults: 500 episodes, validation every 50 on 50 tasks, patience 10 (never stops early), the
harness's fixed validation and test tasks.

Where the authors' code differs from the paper (or says what the paper leaves open), we follow
the code:

- LayerNorm on the GCN embeddings before the EGNN. Per-node LayerNorm is not rotation- or
  translation-equivariant, so the task embedder is equivariant in the normalised coordinates,
  not in the graph embedder's output as the paper's argument assumes.
- The task graph links support and query nodes only (bipartite), and coordinate updates
  average over neighbours (EGNN's ``C = 1/|N(i)|``); feature updates sum messages and are
  residual.
- The final layer's feature update never reaches the loss; we skip computing it (its
  parameters exist, as in the reference, and get no gradient).
- Queries are scored by squared Euclidean distance to class-mean prototypes on both the GCN
  and the EGNN side; there is no classifier layer.
- GCNConv initialisation (Glorot weight, zero bias) for the GCN, PyTorch defaults elsewhere
  (``init: reference``; ``init: torch`` gives the GCN layer ``nn.Linear``'s default).

What we change, and why: the structural features' anchors are drawn from the run's seed with
NumPy (the reference uses Python's ``random``), and shortest paths come from SciPy's
breadth-first search instead of networkx (the same distances; tests/test_teg.py checks them
against a networkx transcription on CiteSeer); the features are saved with the weights. The
untrained model is not validated (the reference's epoch 0 is), and model selection keeps the
first best validation (the reference, on ties, the last).

``--cml`` is refused: CML's co-learner reads features adapted by an *inner loop*, and its
gradient reaches the shared extractor through those inner updates. TEG has no inner loop
(its task adaptation is a forward pass) and no classifier head to pair a co-learner with;
a co-learner here would be a plain auxiliary classifier on fixed class indices, not CML.

The method's declaration (defaults, options ``teg_gamma``, ``anchors``, ``egnn_layers``) is its
entry in :mod:`gnn_cml.methods`; docs/methods/teg.md has the details.

Example:
    >>> cfg = resolve(dict(graph="citeseer", method="teg", ways=2, shots=1))  # doctest: +SKIP
    >>> learner = build_learner(cfg, PreparedGraph(data, norm=cfg.norm), seed=0)  # doctest: +SKIP
    >>> result = learner(episode, train=True); result.loss.backward()  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse import csgraph
from torch import nn

from gnn_cml.errors import require
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.models.graph import PreparedGraph, RowBlock
from gnn_cml.sampling.episodes import Episode

# --- structural (invariant) features ----------------------------------------------------------------
def anchor_members(num_nodes: int, anchors: int, seed: int) -> List[np.ndarray]:
    """The nodes each virtual anchor links to: anchor ``i`` (0-based) to ``max(1, int(n / 2^(i+1)))``
    distinct nodes drawn uniformly from ``seed``."""
    rng = np.random.default_rng([seed, 8887])
    return [np.sort(rng.choice(num_nodes, max(1, int(num_nodes / 2 ** (i + 1))), replace=False))
            for i in range(anchors)]


def anchor_features(structure: sp.spmatrix, members: List[np.ndarray]) -> np.ndarray:
    """``(n, anchors)``: ``1 / (d + 1)`` with ``d`` the hop distance of each node from each virtual
    anchor in the undirected graph ``structure`` plus every anchor's links; 0 where unreachable.

    Args:
        structure: any ``(n, n)`` matrix whose non-zeros are the graph's edges (values ignored).
        members: per anchor, the nodes it links to (:func:`anchor_members`).
    """
    n, count = structure.shape[0], len(members)
    coo = sp.coo_matrix(structure)
    hub = np.concatenate([np.full(len(m), n + i, dtype=np.int64) for i, m in enumerate(members)])
    linked = np.concatenate([np.asarray(m, dtype=np.int64) for m in members])
    rows = np.concatenate([coo.row, hub, linked])
    cols = np.concatenate([coo.col, linked, hub])
    graph = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n + count, n + count))
    dist = csgraph.shortest_path(graph, method="D", directed=False, unweighted=True, indices=n + np.arange(count))
    return (1.0 / (dist[:, :n] + 1.0)).T.astype(np.float32)  # 1 / (inf + 1) = 0: unreachable


# --- graph embedder ------------------------------------------------------------------------------
class InputDropoutGCN(nn.Module):
    """One GCN layer after dropout on the input features, ``Â drop(X) W + b`` (PyG's GCNConv after
    ``F.dropout``), on episode rows.

    Without dropout it reads the precomputed ``(Â X)`` rows of the nodes; with it, the nodes'
    ``Â`` rows and the raw feature rows of their neighbours (one mask per feature row, as a mask
    over the whole graph gives).
    """

    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        require(0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}")
        self.linear = nn.Linear(in_dim, hidden)
        self.in_dim, self.hidden, self.dropout = in_dim, hidden, dropout
        self.graph = None

    @property
    def out_dim(self) -> int:
        return self.hidden

    def bind(self, graph: PreparedGraph) -> "InputDropoutGCN":
        require(graph.num_features == self.in_dim,
                f"encoder expects {self.in_dim} features but the graph has {graph.num_features}")
        self.graph = graph
        return self

    def prepare(self, nodes, drop: bool) -> Dict[str, object]:
        """Parameter-free rows for ``nodes``; ``drop``: for a pass with input dropout."""
        g = self.graph
        nodes = nodes.cpu().numpy() if isinstance(nodes, torch.Tensor) else np.asarray(nodes)
        if not (drop and self.dropout > 0):
            return {"ax": g.feature_rows(1, nodes)}
        around = g.neighbourhood(nodes, 1)
        return {"adj": g.adjacency_block(nodes, around), "x": g.sparse_propagated(0)[around]}

    def forward(self, inputs: Dict[str, object], training: bool = True) -> torch.Tensor:
        weight, bias = self.linear.weight, self.linear.bias
        if "ax" in inputs:
            return inputs["ax"].matmul(weight.t()) + bias
        x = inputs["x"]
        if sp.issparse(x):  # dropout touches only the non-zeros (a dropped zero stays zero)
            keep = torch.rand(x.nnz) >= self.dropout
            scaled = keep.numpy().astype(np.float32) / (1.0 - self.dropout)
            x = RowBlock.sparse_rows(sp.csr_matrix((x.data * scaled, x.indices, x.indptr), shape=x.shape))
            h = x.matmul(weight.t())
        else:
            rows = torch.as_tensor(np.ascontiguousarray(x), dtype=weight.dtype, device=weight.device)
            h = F.dropout(rows, self.dropout, training=True) @ weight.t()
        return inputs["adj"].matmul(h) + bias


# --- task embedder (EGNN on the support-query graph) -------------------------------------------------
class EquivariantLayer(nn.Module):
    """One EGNN layer on the complete bipartite support-query graph, dense over its edges.

    ``h``: invariant (structural) features, ``x``: coordinates (embeddings). See the module
    docstring for the update rules.
    """

    def __init__(self, feature_dim: int, width: int):
        super().__init__()
        self.message = nn.Sequential(nn.Linear(2 * feature_dim + 1, width), nn.SiLU(), nn.Linear(width, width),
                                     nn.SiLU())
        last = nn.Linear(width, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coordinate = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                        last)
        self.feature = nn.Sequential(nn.Linear(feature_dim + width, width), nn.SiLU(),
                                     nn.Linear(width, feature_dim))

    def _messages(self, h_to, h_from, sq_dist):
        a, b = sq_dist.shape
        pair = torch.cat([h_to.unsqueeze(1).expand(a, b, -1), h_from.unsqueeze(0).expand(a, b, -1),
                          sq_dist.unsqueeze(-1)], -1)
        return self.message(pair)  # (a, b, width): messages to each of a from each of b

    def forward(self, h_s, h_q, x_s, x_q, update_features: bool = True):
        diff = x_q.unsqueeze(1) - x_s.unsqueeze(0)  # (Q, S, d): query minus support
        sq_dist = diff.pow(2).sum(-1)
        to_q = self._messages(h_q, h_s, sq_dist)
        to_s = self._messages(h_s, h_q, sq_dist.t())
        new_x_q = x_q + (diff * self.coordinate(to_q)).mean(1)
        new_x_s = x_s - (diff.transpose(0, 1) * self.coordinate(to_s)).mean(1)
        if update_features:
            h_q = h_q + self.feature(torch.cat([h_q, to_q.sum(1)], -1))
            h_s = h_s + self.feature(torch.cat([h_s, to_s.sum(1)], -1))
        return h_s, h_q, new_x_s, new_x_q


class TaskEmbedder(nn.Module):
    """LayerNorm on the coordinates, then ``layers`` :class:`EquivariantLayer` s; returns the
    support and query coordinates."""

    def __init__(self, feature_dim: int, width: int, layers: int = 2):
        super().__init__()
        require(layers >= 1, f"egnn_layers must be >= 1, got {layers}")
        self.layers = nn.ModuleList(EquivariantLayer(feature_dim, width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, h_s, h_q, x_s, x_q) -> Tuple[torch.Tensor, torch.Tensor]:
        x_s, x_q = self.norm(x_s), self.norm(x_q)
        for i, layer in enumerate(self.layers):
            h_s, h_q, x_s, x_q = layer(h_s, h_q, x_s, x_q, update_features=i < len(self.layers) - 1)
        return x_s, x_q


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``-|q - c_k|^2`` for class means ``c_k`` of the support rows (no matmul shortcut, so it is
    exact in float64)."""
    ways = int(support_y.max()) + 1
    onehot = F.one_hot(support_y, ways).to(support.dtype)
    prototypes = (onehot / onehot.sum(0, keepdim=True)).t() @ support
    return -(query.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)


class TEG(MetaLearner):
    """Task-Equivariant Graph few-shot learning: a GCN graph embedder, an EGNN task embedder over
    task-specific embeddings, prototype scoring on both (see the module docstring).

    Args:
        encoder: a bound :class:`InputDropoutGCN`.
        structure: ``(num_nodes, anchors)`` structural features (:func:`anchor_features`).
        egnn_layers: EGNN layers of the task embedder.
        teg_gamma: weight of the task embedder's loss; the graph embedder's gets ``1 - teg_gamma``.

    Example:
        >>> result = TEG(encoder, structure)(episode, train=True)  # doctest: +SKIP
    """

    adapts = False  # no inner loop (see the module docstring on --cml)

    @classmethod
    def from_config(cls, cfg, graph: PreparedGraph) -> "TEG":
        """TEG on ``graph`` with the run's ``hidden``, ``dropout``, ``init`` and its own options
        (``teg_gamma``, ``anchors``, ``egnn_layers``); the anchors come from the run's seed (drawn from
        torch's generator, which the caller has seeded)."""
        cls.check_config(cfg)
        seed = int(torch.randint(0, 2 ** 31 - 1, ()))
        return build_teg(graph, cfg.hidden, cfg.dropout, cfg.option("anchors"), cfg.option("egnn_layers"),
                         cfg.option("teg_gamma"), seed, cfg.init)

    @classmethod
    def check_config(cls, cfg) -> None:
        require(cfg.backbone == "gcn" and cfg.layers == 1,
                f"teg's graph embedder is one GCN layer (backbone gcn, layers 1), got backbone {cfg.backbone} with "
                f"{cfg.layers} layer(s): drop --backbone and 'layers' for --method teg")
        gamma = cfg.option("teg_gamma")
        require(gamma is not None and 0 <= gamma <= 1,
                f"teg_gamma must be in [0, 1], got {gamma}: e.g. --teg-gamma 0.5")

    def __init__(self, encoder: InputDropoutGCN, structure: torch.Tensor, egnn_layers: int = 2,
                 teg_gamma: float = 0.5):
        super().__init__()
        require(0.0 <= teg_gamma <= 1.0, f"teg_gamma must be in [0, 1], got {teg_gamma}")
        self.encoder = encoder
        self.embedder = TaskEmbedder(structure.shape[1], encoder.out_dim, egnn_layers)
        self.teg_gamma = float(teg_gamma)
        # Saved with the weights: a rebuilt learner (gnn-cml evaluate, --resume) draws other anchors.
        self.register_buffer("structure", structure)

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        device = self.structure.device
        if episode.support_y.device != device:
            episode = episode.to(device)
        shots = len(episode.support)
        nodes = torch.cat([episode.support, episode.query])
        inputs = self.encoder.prepare(nodes, drop=train and self.training)
        if device.type != "cpu":
            inputs = {k: v.to(device) if isinstance(v, RowBlock) else v for k, v in inputs.items()}
        with torch.set_grad_enabled(train):
            z = self.encoder(inputs, training=train)
            z_s, z_q = z[:shots], z[shots:]
            embedder_loss = self.task_loss(prototype_logits(z_s, episode.support_y, z_q), episode.query_y)
            h = self.structure.to(z.dtype)
            x_s, x_q = self.embedder(h[episode.support], h[episode.query], z_s, z_q)
            logits = prototype_logits(x_s, episode.support_y, x_q)
            task_loss = self.task_loss(logits, episode.query_y)
            loss = self.teg_gamma * task_loss + (1 - self.teg_gamma) * embedder_loss
        metrics = {"query_loss": float(task_loss.detach()), "embedder_loss": float(embedder_loss.detach())}
        return TaskResult(loss, logits, episode.query_y, x_q, metrics)


def initialise_teg_(learner: TEG, scheme: str) -> TEG:
    """``reference``: the GCN layer as PyG's GCNConv (Glorot weight, zero bias), as TEG's code;
    ``torch``: ``nn.Linear``'s default. The task embedder keeps its own (PyTorch's) init."""
    if scheme == "reference":
        with torch.no_grad():
            nn.init.xavier_uniform_(learner.encoder.linear.weight)
            learner.encoder.linear.bias.zero_()
    return learner


def build_teg(graph: PreparedGraph, hidden: int, dropout: float, anchors: int, egnn_layers: int, teg_gamma: float,
              seed: int, init: str = "reference") -> TEG:
    """A TEG learner on ``graph`` (weights from torch's current RNG; anchors from ``seed``)."""
    require(anchors >= 1, f"anchors must be >= 1, got {anchors}")
    members = anchor_members(graph.num_nodes, anchors, seed)
    structure = torch.from_numpy(anchor_features(graph.adj, members))
    learner = TEG(InputDropoutGCN(graph.num_features, hidden, dropout).bind(graph), structure, egnn_layers,
                  teg_gamma)
    return initialise_teg_(learner, init)


__all__ = ["EquivariantLayer", "InputDropoutGCN", "TEG", "TaskEmbedder", "anchor_features",
           "anchor_members", "build_teg", "initialise_teg_", "prototype_logits"]
