"""COSMIC (Wang et al., "Contrastive Meta-Learning for Few-shot Node Classification", KDD 2023).

A node is embedded from its own small subgraph; the encoder is meta-trained episode by episode
with a supervised contrastive loss between each node's embedding and its subgraph's summary,
on the task's subgraphs plus "mixed-up" subgraphs that act as extra, hard classes. At meta-test
a logistic-regression probe is fitted on the support embeddings of each task.

What the authors' public code (``SongW-SW/COSMIC``: ``train.py``, ``utils_mp.py``,
``subgcon.py``, ``model.py``, ``loss.py``) computes, which this module follows by default:

- **Subgraphs**: for node ``v``, ten steps of personalised PageRank from ``v``
  (``x <- 0.15 e_v + (0.85 P) x`` with ``P`` the column-normalised adjacency), scores
  ``x_u / deg(u)``, the top ``subgraph_size`` (20) nodes with ``v`` moved to position 0, and the
  graph's edges among them.
- **Encoder**: one GCN layer (``D^-1/2 (A+I) D^-1/2`` of the subgraph, weight ``in x hidden``
  with hidden 1024), PReLU, row-wise L2 normalisation. A node's embedding ``z`` is its own row
  (position 0); the subgraph's summary ``s`` is the mean of all of its rows.
- **Loss**: supervised contrastive loss (SupCon, temperature 0.07, base temperature 0.07) over the
  two views ``z`` and ``s`` of every subgraph in the batch, positives = same label.
- **The batch of one training step** is N-way K-shot nodes of the training classes (our
  episode's support set; the query set is not used by the loss) plus 25 mixed subgraphs: 5
  training classes x 5 nodes ("extra" nodes) are drawn; mixed subgraph ``i`` takes the structure
  of extra node ``i``'s subgraph padded to 20 nodes, the features
  ``lam * pad(X_support_i) + (1 - lam) * pad(X_extra_i)`` with one ``lam ~ Beta(10 sim, 1)`` per
  row, and label ``5 + j`` when extra node ``i`` is from the ``j``-th drawn class.
- **Meta-test**: sklearn ``LogisticRegression`` (C = 1) on the support ``z``, predicting the queries.
- **Defaults**: Adam lr 0.001, no weight decay, at most 10,000 episodes, validation every 10,
  patience 10, 100 test tasks, 10 queries per test class (our harness's defaults agree).

Where the code differs from the paper (arXiv 2306.15154), and what we do (``mixup='reference'``
reproduces the code; ``mixup='pairs'`` is our reading of the intent: mixed subgraph ``i`` mixes
support node ``i mod N*K`` with extra node ``i``, ``lam ~ Beta(10 sigmoid(-cos(m_support, m_extra)), 1)``
from the pair's feature means, no repeated features; ``mixup='none'`` trains on the task's subgraphs only):

- The paper's similarity-sensitive mix-up draws ``lam`` from the similarity between a support
  subgraph and a subgraph of another class and mixes structure as well as features. In the code
  the similarity is the diagonal ``sigmoid(-cos(m_i, m_i))`` of subgraph feature means (so
  ``sigmoid(-1)``, or 0.5 for an all-zero mean), the adjacency is "mixed" with itself (the same
  structure; its edge weights are never passed to the GCN), and only the first N*K mixed
  subgraphs get their own features: for ``i >= N*K`` indexing the support list fails, the bare
  ``except`` keeps the previous mixed feature block, so the remaining mixed subgraphs repeat the
  features of subgraph ``N*K - 1`` (with their own structures and labels). We reproduce all three.
- The code draws its training nodes and the extra nodes from classes ``0 .. T-1`` (``id_by_class[c]``
  for ``c in range(len(train_class))``) instead of the training classes of its split, which reads
  validation and test classes; our episodes and extra nodes come from the training classes only.
- The code draws 5 extra classes, which fails on graphs with fewer training classes (CiteSeer has
  2, Cora 3); we draw ``min(5, T)``. Extra labels are ``N + j`` (the code's ``5 + j``; the loss
  only compares labels, so the two agree for N <= 5 and ours never collides for N > 5).
- The code pads to a hard-coded 20 rows; we pad to ``subgraph_size``.
- Our graphs drop duplicate edges and self-loops (the code's PageRank would count them).
- PageRank ties (frequent) are broken as the code breaks them, by running the same per-node scipy
  operations and numpy ``argsort``: a batched PageRank picks other tied nodes for about half of
  CiteSeer's nodes. Subgraphs are computed once per node a run touches, cached per graph.
- The probe is gnn-cml's L-BFGS solution of sklearn's objective (``meta.tlp.fit_probes``).
- Validation: the code validates on 100 fresh tasks with 10 queries; we use the harness's validation
  (``--val-tasks 100 --val-resample`` is the code's protocol).
- Randomness: the code uses Python's ``random`` and torch's global generator; ours draws every
  mix-up choice from a NumPy generator seeded from torch's generator, which the trainer reseeds
  per task, so runs are reproducible and resume exactly.

``--cml`` is refused: COSMIC has no inner loop (the outer loss is the contrastive loss of the
unadapted encoder, and test tasks are solved by a probe), so there are no adapted features for
CML's co-learner to read; a co-learner's loss would only be a second supervised loss on the
encoder, not gradient augmentation.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gnn_cml.errors import GnnCmlError, require
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.models.graph import PreparedGraph, RowBlock
from gnn_cml.sampling.episodes import Episode

MIXUPS = ("reference", "pairs", "none")


class PPRSubgraphs:
    """Each node's top-``size`` personalised-PageRank subgraph, as the authors' code extracts it.

    Args:
        graph: the prepared graph (its adjacency pattern without self-loops is used).
        size: nodes per subgraph (the node itself first).
        order: power-iteration steps of the PageRank.
        alpha: the probability of following an edge.

    Example:
        >>> nodes, rows, cols = PPRSubgraphs(graph).get(5)   # nodes[0] == 5
    """

    def __init__(self, graph: PreparedGraph, size: int = 20, order: int = 10, alpha: float = 0.85):
        require(size >= 1, f"subgraph_size must be positive, got {size}")
        self.size, self.order, self.alpha = int(size), int(order), float(alpha)
        a = graph.adj.tocsr(copy=True)
        a.data[:] = 1.0
        a.setdiag(0)
        a.eliminate_zeros()
        self.adj = a.astype(np.float64).tocsr()
        self.adj.sort_indices()
        self.degree = np.asarray(self.adj.sum(1)).reshape(-1)
        col_sums = np.asarray(self.adj.sum(0)).reshape(-1)
        col_sums[col_sums == 0] = 1.0
        # alpha * (column-normalised A), in CSC with sorted indices as the reference multiplies it
        # (the order of PageRank's nonzeros decides ties between equal scores)
        step = self.adj.tocsc()
        step.sort_indices()
        step.data = 1.0 / np.repeat(col_sums, np.diff(step.indptr))
        self.step = self.alpha * step
        self.num_nodes = self.adj.shape[0]
        self.features = graph.sparse_propagated(0)  # CSR when sparse enough (bag-of-words), else dense
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def ranked(self, v: int) -> np.ndarray:
        """The subgraph's nodes: ``v`` first, then by decreasing PageRank score / degree."""
        start = sp.csc_matrix((np.ones(1), ([v], [0])), shape=(self.num_nodes, 1))
        x = start
        for _ in range(self.order):
            x = (1 - self.alpha) * start + self.step @ x
        scores = x.data / (self.degree[x.indices] + 1e-9)
        top = np.array(x.indices[scores.argsort()[::-1][: self.size]])
        at = np.flatnonzero(top == v)
        if at.size == 0:
            top = np.concatenate([[v], top])
        else:
            top[at[0]], top[0] = top[0], top[at[0]]
        return top[: self.size]

    def get(self, v: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(nodes, rows, cols)``: the subgraph's nodes and its edges as local positions (both ways)."""
        v = int(v)
        hit = self._cache.get(v)
        if hit is None:
            nodes = self.ranked(v)
            block = self.adj[nodes][:, nodes].tocoo()
            hit = (nodes, block.row.astype(np.int64), block.col.astype(np.int64))
            self._cache[v] = hit
        return hit


_SUBGRAPHS: "weakref.WeakKeyDictionary[PreparedGraph, Dict[tuple, PPRSubgraphs]]" = weakref.WeakKeyDictionary()


def ppr_subgraphs(graph: PreparedGraph, size: int = 20, order: int = 10, alpha: float = 0.85) -> PPRSubgraphs:
    """The graph's :class:`PPRSubgraphs` (one per graph and setting, shared by every run)."""
    per_graph = _SUBGRAPHS.setdefault(graph, {})
    key = (int(size), int(order), float(alpha))
    if key not in per_graph:
        per_graph[key] = PPRSubgraphs(graph, *key)
    return per_graph[key]


def supcon_loss(views: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of ``views`` (B, V, d), L2-normalised.

    Every one of the ``B*V`` rows is an anchor; its positives are the other rows with its label
    (its other views included); the denominator runs over all other rows.
    """
    b, v, _ = views.shape
    rows = views.transpose(0, 1).reshape(b * v, -1)  # view-major, as the reference stacks them
    y = labels.repeat(v)
    sim = rows @ rows.t() / temperature
    self_mask = torch.eye(b * v, dtype=torch.bool, device=rows.device)
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positive = (y.unsqueeze(0) == y.unsqueeze(1)) & ~self_mask
    mean_pos = (log_prob * positive).sum(1) / positive.sum(1)
    return -(temperature / base_temperature) * mean_pos.mean()


@dataclass
class MixupDraws:
    """The random choices of one training task's mix-up (see :meth:`COSMIC.draw_mixup`).

    Mixed subgraph ``i`` has extra node ``i``'s structure and label and the features
    ``lam[i] * pad(X_support[source[i]]) + (1 - lam[i]) * pad(X_extra[partner[i]])`` (row-wise).

    ``extra``: the extra nodes (M,), grouped by class; ``extra_labels``: their labels ``N + j``;
    ``lam``: (M, subgraph_size) row weights of the support side; ``source``, ``partner``: (M,)
    positions in the support set and among the extra nodes. ``'reference'``: both ``min(i, N*K - 1)``
    (past the support count the code repeats the last mixed features, ``lam`` included);
    ``'pairs'``: ``i mod N*K`` and ``i``.
    """

    extra: np.ndarray
    extra_labels: np.ndarray
    lam: np.ndarray
    source: np.ndarray
    partner: np.ndarray


class COSMIC(MetaLearner):
    """COSMIC's subgraph contrastive learner (see the module docstring for the exact computation).

    Args:
        graph: the prepared graph.
        hidden: embedding size (1024 in the authors' code).
        subgraph_size: nodes per PageRank subgraph (20).
        temperature: SupCon temperature (0.07; the base temperature is the same).
        mixup: ``'reference'`` (the authors' code), ``'pairs'`` (ours: every mixed subgraph mixes its own
            support/extra pair, ``lam`` from the pair's similarity) or ``'none'``.
        mixup_classes, mixup_nodes: extra training classes and nodes per class (5, 5).
        concentration: ``lam ~ Beta(concentration * sim, 1)`` (10).
        ppr_order, ppr_alpha: PageRank steps and follow probability (10, 0.85).
        init: ``'reference'`` (the authors': Glorot weight, zero bias) or ``'torch'`` (nn.Linear's).
        probe_c: inverse L2 strength of the meta-test logistic probe (1, sklearn's default).

    Example:
        >>> learner = COSMIC(graph)
        >>> learner.use_training_nodes(sampler.members)   # the training classes' nodes
        >>> result = learner(episode, train=True); result.loss.backward()
    """

    adapts = False

    @classmethod
    def from_config(cls, cfg, graph: PreparedGraph) -> "COSMIC":
        """COSMIC on ``graph`` with the run's ``hidden``, ``init`` and its own options (``subgraph_size``,
        ``temperature``, ``mixup``; declared in :mod:`gnn_cml.methods`)."""
        return cls(graph, hidden=cfg.hidden, subgraph_size=cfg.option("subgraph_size"),
                   temperature=cfg.option("temperature"), mixup=cfg.option("mixup"), init=cfg.init)

    def __init__(self, graph: PreparedGraph, hidden: int = 1024, subgraph_size: int = 20,
                 temperature: float = 0.07, mixup: str = "reference", mixup_classes: int = 5,
                 mixup_nodes: int = 5, concentration: float = 10.0, ppr_order: int = 10, ppr_alpha: float = 0.85,
                 init: str = "reference", probe_c: float = 1.0):
        super().__init__()
        require(mixup in MIXUPS, f"unknown mixup '{mixup}': use {', '.join(MIXUPS)}")
        require(hidden > 0, f"hidden size must be positive, got {hidden}")
        require(temperature > 0, f"temperature must be positive, got {temperature}")
        self.graph = graph
        self.hidden, self.subgraph_size, self.temperature = int(hidden), int(subgraph_size), float(temperature)
        self.mixup, self.mixup_classes, self.mixup_nodes = mixup, int(mixup_classes), int(mixup_nodes)
        self.concentration, self.probe_c = float(concentration), float(probe_c)
        self.ppr_order, self.ppr_alpha = int(ppr_order), float(ppr_alpha)
        require(init in ("reference", "torch"), f"unknown init '{init}': use reference or torch")
        # (in, hidden): the sparse feature rows multiply a row-major weight without a copy
        self.weight = nn.Parameter(torch.empty(graph.num_features, self.hidden))
        self.bias = nn.Parameter(torch.empty(self.hidden))
        self.prelu = nn.PReLU(self.hidden)
        with torch.no_grad():
            if init == "reference":  # PyG's GCNConv: Glorot weight, zero bias (PReLU starts at 0.25)
                nn.init.xavier_uniform_(self.weight)
                self.bias.zero_()
            else:  # nn.Linear's
                bound = 1 / graph.num_features ** 0.5
                self.weight.uniform_(-bound, bound)
                self.bias.uniform_(-bound, bound)
        self._training_nodes: Optional[List[np.ndarray]] = None

    def bind(self, graph: PreparedGraph) -> "COSMIC":
        """Read ``graph`` from now on (the inductive setting's phase graphs; each has its own subgraphs)."""
        self.graph = graph
        return self

    @property
    def subgraphs(self) -> PPRSubgraphs:
        return ppr_subgraphs(self.graph, self.subgraph_size, self.ppr_order, self.ppr_alpha)

    @property
    def out_dim(self) -> int:
        return self.hidden

    def use_training_nodes(self, nodes_by_class: Sequence[np.ndarray]) -> "COSMIC":
        """The nodes of each training class, from which the mix-up draws its extra nodes."""
        self._training_nodes = [np.asarray(n, dtype=np.int64) for n in nodes_by_class]
        return self

    # --- random draws ---------------------------------------------------------------------------
    def _unit_means(self, nodes) -> np.ndarray:
        """Each node's subgraph feature mean, divided by its norm + 1e-9 (the code's ``l2_normalize``)."""
        out = np.zeros((len(nodes), self.graph.num_features))
        for i, v in enumerate(nodes):
            m = np.asarray(self.graph.x[self.subgraphs.get(v)[0]].mean(0), dtype=np.float64).reshape(-1)
            out[i] = m / (np.sqrt((m * m).sum()) + 1e-9)
        return out

    def similarity(self, nodes, others=None) -> np.ndarray:
        """The mix-up similarity ``sigmoid(-cos)`` of subgraph feature means: of each node with itself
        (the code's diagonal), or with the node at the same position of ``others``."""
        a = self._unit_means(nodes)
        b = a if others is None else self._unit_means(others)
        return 1.0 / (1.0 + np.exp((a * b).sum(1)))

    def draw_mixup(self, episode: Episode, rng: np.random.Generator) -> Optional[MixupDraws]:
        """The extra nodes, their labels and the mixing weights of one training task."""
        if self.mixup == "none":
            return None
        if self._training_nodes is None:
            raise GnnCmlError("COSMIC's mix-up needs the training classes' nodes: call "
                              "learner.use_training_nodes(train_sampler.members) first, or use mixup='none'")
        pool = self._training_nodes
        classes = rng.choice(len(pool), min(self.mixup_classes, len(pool)), replace=False)
        extra, labels = [], []
        ways = int(episode.support_y.max()) + 1
        for j, c in enumerate(classes):
            picked = rng.choice(pool[c], min(self.mixup_nodes, len(pool[c])), replace=False)
            extra.append(picked)
            labels.append(np.full(len(picked), ways + j))
        extra, labels = np.concatenate(extra), np.concatenate(labels)
        support = episode.support.cpu().numpy()
        order = np.arange(len(extra))
        if self.mixup == "reference":
            source = partner = np.minimum(order, len(support) - 1)  # the code's stale features past N*K
            sim = self.similarity(support[source])
        else:
            source, partner = order % len(support), order
            sim = self.similarity(support[source], extra)
        lam = rng.beta(self.concentration * sim[:, None], 1.0, size=(len(extra), self.subgraph_size))
        return MixupDraws(extra, labels, lam[source] if self.mixup == "reference" else lam, source, partner)

    # --- the encoder ----------------------------------------------------------------------------
    def _blocks(self, nodes: np.ndarray, padded: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised adjacencies (G, R, R) and pooling weights (G, R) of the nodes' subgraphs;
        ``padded``: the empty slots are isolated nodes that count in the mean (mixed subgraphs)."""
        r = self.subgraph_size
        adj = np.zeros((len(nodes), r, r))
        pool = np.zeros((len(nodes), r))
        for g, v in enumerate(nodes):
            sub, rows, cols = self.subgraphs.get(v)
            n = r if padded else len(sub)
            adj[g, rows, cols] = 1.0
            adj[g, np.arange(n), np.arange(n)] += 1.0
            deg = adj[g].sum(1)
            inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
            adj[g] *= inv[:, None] * inv[None, :]
            pool[g, :n] = 1.0 / n
        return torch.from_numpy(adj), torch.from_numpy(pool)

    def _rows(self, nodes: np.ndarray) -> Tuple[RowBlock, np.ndarray]:
        """The stacked feature rows of the nodes' subgraphs and, per node, each slot's row index
        (the extra last row, index ``total``, is all zeros: padding)."""
        subs = [self.subgraphs.get(v)[0] for v in nodes]
        sizes = np.array([len(s) for s in subs])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        total = int(sizes.sum())
        index = np.full((len(nodes), self.subgraph_size), total, dtype=np.int64)
        for g, (a, n) in enumerate(zip(starts, sizes)):
            index[g, :n] = a + np.arange(n)
        return RowBlock.sparse_rows(self.subgraphs.features[np.concatenate(subs)]), index

    def _encode(self, h: torch.Tensor, adj: torch.Tensor, pool: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """GCN on the stacked subgraphs from their input products ``h`` (G, R, hidden): node rows
        ``z`` (the centre, slot 0) and subgraph summaries (mean of the rows)."""
        adj, pool = adj.to(h), pool.to(h)
        h = torch.bmm(adj, h) + self.bias
        # PReLU over the last dimension (F.prelu's channels are dim 1); at 0 its slope, as F.prelu's gradient
        out = F.normalize(torch.where(h > 0, h, self.prelu.weight * h), dim=-1)
        return out[:, 0], (pool.unsqueeze(-1) * out).sum(1)

    def _products(self, nodes: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
        """``X W`` of the nodes' subgraph rows (plus a zero row for padding) and the slot index."""
        x, index = self._rows(nodes)
        xw = x.matmul(self.weight)
        return torch.cat([xw, xw.new_zeros(1, xw.shape[1])]), index

    def embed(self, nodes) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(z, summary)`` of the nodes from their own subgraphs."""
        nodes = np.asarray(nodes.cpu() if isinstance(nodes, torch.Tensor) else nodes, dtype=np.int64)
        xw, index = self._products(nodes)
        adj, pool = self._blocks(nodes, padded=False)
        return self._encode(xw[torch.from_numpy(index)], adj, pool)

    def views(self, episode: Episode, draws: Optional[MixupDraws],
              also: Optional[np.ndarray] = None) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """The (B, 2, hidden) node/summary views of the training batch, its labels, and the node
        embeddings of ``also`` (e.g. the queries; from the same feature product, outside the loss)."""
        support = episode.support.cpu().numpy().astype(np.int64)
        labels = episode.support_y.cpu()
        extra = draws.extra if draws is not None else np.zeros(0, np.int64)
        also = np.zeros(0, np.int64) if also is None else np.asarray(also, np.int64)
        k, m = len(support), len(extra)
        xw, index = self._products(np.concatenate([support, extra, also]))
        rows = xw[torch.from_numpy(index)]  # (S + M + A, R, hidden)
        parts, adjs, pools = [rows[:k]], [], []
        for nodes, padded in ((support, False), (extra, True), (also, False)):
            if len(nodes):
                adj, pool = self._blocks(nodes, padded)
                adjs.append(adj)
                pools.append(pool)
        if m:
            lam = torch.from_numpy(draws.lam).to(xw).unsqueeze(-1)
            parts.append(lam * rows[torch.from_numpy(draws.source)]
                         + (1 - lam) * rows[k + torch.from_numpy(draws.partner)])
            labels = torch.cat([labels, torch.from_numpy(draws.extra_labels).to(labels.dtype)])
        parts.append(rows[k + m:])
        z, s = self._encode(torch.cat(parts), torch.cat(adjs), torch.cat(pools))
        views = torch.stack([z[: k + m], s[: k + m]], 1)
        return views, labels, (z[k + m:] if len(also) else None)

    # --- one task -------------------------------------------------------------------------------
    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        if train:
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,))))
            views, labels, zq = self.views(episode, self.draw_mixup(episode, rng), episode.query.cpu().numpy())
            loss = supcon_loss(views, labels.to(views.device), self.temperature, self.temperature)
            with torch.no_grad():  # a training accuracy for the logs (the loss ignores the queries): nearest class mean
                zq = zq.detach()
                ways = int(episode.support_y.max()) + 1
                zs = views[: len(episode.support), 0]
                onehot = F.one_hot(episode.support_y.to(zs.device), ways).to(zs.dtype)
                logits = zq @ ((onehot / onehot.sum(0)).t() @ zs).t()
            return TaskResult(loss, logits, episode.query_y, zq, {"contrastive_loss": float(loss.detach())})
        from gnn_cml.meta.tlp import fit_probes  # the sklearn-equivalent logistic probe

        with torch.no_grad():
            zs = self.embed(episode.support)[0].double()
            zq = self.embed(episode.query)[0].double()
            ways = int(episode.support_y.max()) + 1
            w, b = fit_probes(zs.unsqueeze(0).cpu(), episode.support_y.long().unsqueeze(0).cpu(), ways, self.probe_c)
            logits = zq.cpu() @ w[0].t() + b[0]
            loss = F.cross_entropy(logits, episode.query_y.cpu())
        return TaskResult(loss, logits, episode.query_y.cpu(), zq, {"query_loss": float(loss)})


__all__ = ["COSMIC", "MIXUPS", "MixupDraws", "PPRSubgraphs", "ppr_subgraphs", "supcon_loss"]
