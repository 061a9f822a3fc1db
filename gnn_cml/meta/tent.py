"""TENT (Wang et al., KDD 2022, "Task-Adaptive Few-shot Node Classification"), as its reference script runs it.

The reference is TLP-FSNC's ``Meta-learning/train_TENT.py`` (the script behind the benchmark's
TENT numbers), whose model calls (``model.generater``, a ``(2, in, out)`` weight pair per layer)
fit the ``GCN_dense`` of the TENT authors' ``base_model_SSL.py`` (SongW-SW/TENT), not the
``GCN_dense`` stored next to it in TLP-FSNC (that one has no generator and would fail). Per task:

- **Embedder** ``GCN_emb``: one GCN layer ``Â X W + b`` over the whole graph (row-normalised
  ``Â = D^-1 (A + I)``), no activation (its ``forward`` returns before its dropout and second layer).
- **Node level (class-ego subgraphs)**: for way ``i`` a subgraph of the support nodes' 1-hop
  neighbourhood plus a *virtual node* whose feature is a mean of support embeddings. Query node
  ``q``: its 2-hop subgraph (``Â`` restricted to it, not renormalised); its embedding is the mean
  of the adapted GCN's outputs over the subgraph. The class embedding is the adapted GCN's output
  at the virtual node.
- **Class level (generated parameters)**: a linear generator maps the mean of the ways' virtual
  features to a scale and a shift for every entry of both GCN layers' weights and biases,
  ``W' = W * (1 + alpha) + beta`` (elementwise), so the 2-layer GCN (hidden 16, ReLU, no output
  activation) is conditioned on the task's classes.
- **Task level**: an InfoNCE-style loss between query embeddings and the ways' class embeddings
  (cosine similarity / tau, tau = 0.5), i.e. cross-entropy of the query over the task's classes,
  plus a cross-entropy of a linear classifier on the embedder's output of *every* node of the
  training classes (over all the graph's classes).
- **Prediction** (validation and test): a logistic regression (lbfgs, C = 1, multinomial) on the
  l2-normalised embedder outputs of the support nodes, scored on the queries' (TENT's own
  similarity head is used only for the training accuracy).

Where the script differs from the paper (reproduced by default; the paper's choice as an option):

1. The virtual node has no edge (its adjacency row and column are those of the identity), so the
   class embedding is a 2-layer MLP of the virtual feature alone: the neighbours in a class-ego
   subgraph never reach it (the paper links the virtual node to the class's support nodes). We
   compute that MLP directly; no class-ego subgraph is built.
2. The virtual feature of way ``i`` is the mean embedding of the support nodes of ways ``0..i``
   (a running list), not of way ``i`` alone; ``virtual_node='class'`` (``tent_virtual_node: class``)
   uses way ``i``'s own support nodes. With 1 shot, a support node without neighbours uses its own embedding (as the script).
3. The InfoNCE term of the *last* query of every way is added a second time
   (``repeat_last_query=False``, ``tent_last_query: once``, drops it).
4. Prediction by a probe on the embedder's output, not by the adapted similarity head
   (``predict='similarity'``, ``tent_predict: similarity``: the class with the most similar class
   embedding, as the paper).
5. Dropout: the script sets 0.2, but never applies it (the embedder returns before its dropout and
   the conditioned GCN runs in eval mode), so the default is 0 here.
6. The supervised term reads every node of the training classes, even when episodes are limited
   to ``labels_per_class`` labelled nodes (as the script).
7. The script's ``Predictor`` module is in its optimiser but never in its loss; it is left out.

Settings of the script (per-method defaults in ``gnn_cml.methods``): Adam lr 0.05, weight decay
5e-4, hidden 16 (embedder and GCN), at most 2,000 episodes, validation every 50 on 20 tasks, stop
after 10 validations without gain, 5 queries per way in training, 10 at test.

With ``--cml`` the co-learner reads the adapted query embeddings (the ones scored against the
class embeddings): its cross-entropy joins the outer loss with weight gamma, and its gradient
reaches the embedder, the GCN and the generator through the generated, class-conditioned
parameters, TENT's task adaptation in place of MAML's inner gradient steps.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gnn_cml.errors import GnnCmlError, require
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.models.graph import RowBlock
from gnn_cml.models.init import reference_init_
from gnn_cml.sampling.episodes import Episode

VIRTUAL_NODES = ("reference", "class")
PREDICTS = ("probe", "similarity")


class ConditionedGCN(nn.Module):
    """The script's ``GCN_dense`` weights: two ``hidden -> hidden`` GCN layers whose entries a task's
    generated scales and shifts modulate (:meth:`TENT._generated` computes with them)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.gc1, self.gc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out_dim = hidden


class TENT(MetaLearner):
    """TENT on a prepared graph: ``forward(episode, train) -> TaskResult``.

    Args:
        graph: the :class:`~gnn_cml.models.graph.PreparedGraph` (row-normalised ``Â`` as the script).
        num_classes: output size of the supervised classifier (all of the graph's classes, as the script).
        hidden: embedder and GCN width (16).
        tau: InfoNCE temperature (0.5).
        dropout: dropout on the GCN's hidden layer in training (0: the script's effective value).
        virtual_node: ``'reference'`` (running mean over ways 0..i) or ``'class'`` (way i's own).
        repeat_last_query: add the last query's InfoNCE term a second time (the script).
        predict: ``'probe'`` (the script's logistic regression) or ``'similarity'`` (the paper).
        probe_c: inverse L2 strength of the probe (1.0).

    Training needs the labelled nodes of the training classes (:meth:`use_training_labels`;
    :meth:`from_config`, used by ``build_learner``, sets them from the run's class split).

    Example:
        >>> learner = build_learner(resolve(dict(graph="citeseer", method="tent")), graph)
        >>> result = learner(episode, train=True); result.loss.backward()
    """

    # Its weights are adapted per task (generated, class-conditioned), not by inner gradient steps; the
    # adapted query embeddings carry a CML co-learner's gradient back through that adaptation.
    adapts = True

    @classmethod
    def from_config(cls, cfg, graph) -> "TENT":
        """TENT of run config ``cfg`` on ``graph``, with the training classes' labelled nodes bound
        (the class split of ``cfg``: only training-class labels are read)."""
        from gnn_cml.sampling.split import default_split

        data = graph.data
        learner = cls(graph, int(data.num_classes), hidden=cfg.hidden, dropout=cfg.dropout,
                      virtual_node=cfg.option("tent_virtual_node") or "reference",
                      repeat_last_query=(cfg.option("tent_last_query") or "twice") == "twice",
                      predict=cfg.option("tent_predict") or "probe").initialise(cfg.init)
        split = default_split(data, seed=cfg.split_seed, counts=cfg.split, rule=cfg.split_rule)
        y = data.y.cpu().numpy().reshape(-1)
        nodes = np.flatnonzero(np.isin(y, np.asarray(split.train)))
        learner.use_training_labels(nodes, y[nodes])
        return learner

    def __init__(self, graph, num_classes: int, hidden: int = 16, tau: float = 0.5, dropout: float = 0.0,
                 virtual_node: str = "reference", repeat_last_query: bool = True, predict: str = "probe",
                 probe_c: float = 1.0):
        super().__init__()
        require(virtual_node in VIRTUAL_NODES, f"unknown TENT virtual node '{virtual_node}': use "
                                               f"{', '.join(VIRTUAL_NODES)}")
        require(predict in PREDICTS, f"unknown TENT prediction '{predict}': use {', '.join(PREDICTS)}")
        require(tau > 0 and probe_c > 0, f"tau and probe_c must be positive, got {tau} and {probe_c}")
        self.graph, self.hidden, self.tau, self.dropout = graph, int(hidden), float(tau), float(dropout)
        self.virtual_node, self.repeat_last_query, self.predict, self.probe_c = \
            virtual_node, repeat_last_query, predict, float(probe_c)
        h = self.hidden
        self.embed = nn.Linear(graph.num_features, h)  # GCN_emb's single layer
        self.encoder = ConditionedGCN(h)  # GCN_dense: its output is what a CML co-learner reads
        self.generator = nn.Linear(h, 2 * (h + 1) * h * 2)  # scale and shift of every gc1, gc2 entry
        self.classifier = nn.Linear(h, num_classes)
        self.train_nodes: Optional[np.ndarray] = None  # the supervised term's nodes and class ids
        self.train_labels: Optional[torch.Tensor] = None
        self._train_rows: Optional[RowBlock] = None
        indptr = graph.adj.indptr
        self._alone = np.diff(indptr) == 1  # only the self-loop: the script's "one non-zero" test

    def initialise(self, scheme: str = "reference") -> "TENT":
        """``reference``: the script's init (GCN layers, embedder and classifier uniform in
        ``±1/sqrt(out)``; the generator keeps ``nn.Linear``'s default); ``torch``: all defaults."""
        if scheme == "reference":
            for layer in (self.embed, self.encoder, self.classifier):
                reference_init_(layer)
        return self

    def use_training_labels(self, nodes, labels) -> None:
        """The labelled nodes of the training classes and their (original) class ids: the
        supervised term's data. Never give nodes of validation or test classes."""
        nodes = np.asarray(nodes, dtype=np.int64)
        self.train_nodes = nodes
        self.train_labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self._train_rows = self.graph.feature_rows(1, nodes) if len(nodes) else None

    def bind(self, graph) -> "TENT":
        """Read ``graph`` (a :class:`PreparedGraph`) from now on: the phase graphs of the inductive setting
        (training, validation, then the whole graph for the test tasks); the weights are untouched."""
        if graph is not self.graph:
            self.graph = graph
            self._alone = np.diff(graph.adj.indptr) == 1
            if self.train_nodes is not None:
                self._train_rows = graph.feature_rows(1, self.train_nodes) if len(self.train_nodes) else None
        return self

    # --- parameter-free structure ---------------------------------------------------------------
    def _query_blocks(self, query: np.ndarray):
        """All queries' 2-hop subgraphs (sorted members, ``Â`` restricted to them, not renormalised;
        :meth:`PreparedGraph.subgraphs`, extracted at once and cached) as one block-diagonal ``Â``
        (COO RowBlock), the member of every row and the query (segment) each row belongs to."""
        members, rows, cols, vals, owner = [], [], [], [], []
        offset = 0
        for i, sub in enumerate(self.graph.subgraphs(query, 2)):
            size = len(sub.nodes)
            members.append(sub.nodes)
            rows.append(np.repeat(np.arange(size), np.diff(sub.adj_indptr)) + offset)
            cols.append(sub.adj_indices + offset)
            vals.append(sub.adj_data)
            owner.append(np.full(size, i, dtype=np.int64))
            offset += size
        block = RowBlock(row=torch.from_numpy(np.concatenate(rows).astype(np.int64)),
                         col=torch.from_numpy(np.concatenate(cols).astype(np.int64)),
                         val=torch.from_numpy(np.concatenate(vals).astype(np.float32)), shape=(offset, offset))
        return block, np.concatenate(members), torch.from_numpy(np.concatenate(owner))

    # --- the computation ------------------------------------------------------------------------
    def _embed(self, rows: RowBlock) -> torch.Tensor:
        return rows.matmul(self.embed.weight.t()) + self.embed.bias

    def _generated(self, virtual: torch.Tensor):
        """The class-conditioned GCN weights ``(w1, b1, w2, b2)`` in ``(in, out)`` layout."""
        h = self.hidden
        p = self.generator(virtual.mean(0))
        first, second = p[: 2 * (h + 1) * h], p[2 * (h + 1) * h:]
        out = []
        for layer, part in ((self.encoder.gc1, first), (self.encoder.gc2, second)):
            scale_shift_w = part[: 2 * h * h].reshape(2, h, h)
            scale_shift_b = part[2 * h * h:].reshape(2, h)
            out.append(layer.weight.t() * (1 + scale_shift_w[0]) + scale_shift_w[1])
            out.append(layer.bias * (1 + scale_shift_b[0]) + scale_shift_b[1])
        return out

    def _virtual_features(self, support_emb: torch.Tensor, support: np.ndarray, support_y: torch.Tensor,
                          ways: int) -> torch.Tensor:
        onehot = F.one_hot(support_y, ways).to(support_emb.dtype)  # (S, ways)
        sums, counts = onehot.t() @ support_emb, onehot.sum(0)
        if self.virtual_node == "reference":  # running mean over the support nodes of ways 0..i
            sums, counts = sums.cumsum(0), counts.cumsum(0)
        virtual = sums / counts.unsqueeze(1)
        labels = support_y.cpu().numpy()
        if len(labels) == ways:  # 1 shot: a support node with no neighbour is its own class-ego "subgraph"
            lone = np.argsort(labels, kind="stable")
            alone = self._alone[support[lone]]
            if alone.any():
                mask = torch.from_numpy(alone).to(virtual.device).unsqueeze(1)
                virtual = torch.where(mask, support_emb[torch.from_numpy(lone).to(virtual.device)], virtual)
        return virtual

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        device = self.embed.weight.device
        support, query = episode.support.cpu().numpy(), episode.query.cpu().numpy()
        support_y, query_y = episode.support_y.to(device).long(), episode.query_y.to(device).long()
        ways = int(episode.ways if episode.classes is not None else int(support_y.max()) + 1)
        with torch.set_grad_enabled(train):
            block, members, owner = self._query_blocks(query)
            needed, where = np.unique(np.concatenate([support, query, members]), return_inverse=True)
            emb = self._embed(_to(self.graph.feature_rows(1, needed), device))
            pos_support = torch.from_numpy(where[: len(support)]).to(device)
            pos_query = torch.from_numpy(where[len(support): len(support) + len(query)]).to(device)
            pos_members = torch.from_numpy(where[len(support) + len(query):]).to(device)
            support_emb = emb[pos_support]

            virtual = self._virtual_features(support_emb, support, support_y, ways)
            w1, b1, w2, b2 = self._generated(virtual)
            dropout = self.dropout if (train and self.training) else 0.0
            # class embeddings: the adapted GCN at the (edgeless) virtual node is a 2-layer MLP of its feature
            hidden = F.dropout(F.relu(virtual @ w1 + b1), dropout, training=dropout > 0)
            class_emb = hidden @ w2 + b2
            # query embeddings: the adapted GCN on each query's 2-hop subgraph, mean over its nodes
            block = _to(block, device)
            x = emb[pos_members]
            hidden = F.dropout(F.relu(block.matmul(x @ w1) + b1), dropout, training=dropout > 0)
            out = block.matmul(hidden @ w2) + b2
            owner = owner.to(device)
            sizes = torch.bincount(owner, minlength=len(query)).to(out.dtype)
            query_emb = out.new_zeros(len(query), out.shape[1]).index_add(0, owner, out) / sizes.unsqueeze(1)

            sim = F.normalize(query_emb) @ F.normalize(class_emb).t() / self.tau
            contrast = F.cross_entropy(sim, query_y)
            loss, metrics = contrast, {"query_loss": float(contrast.detach())}
            if train:
                if self.repeat_last_query:
                    labels = query_y.cpu().numpy()
                    last = torch.from_numpy(len(labels) - 1 - np.unique(labels[::-1], return_index=True)[1]).to(device)
                    repeated = F.cross_entropy(sim[last], torch.arange(ways, device=device))
                    loss = loss + repeated
                    metrics["repeated_query_loss"] = float(repeated.detach())
                if self._train_rows is None:
                    raise GnnCmlError("TENT's supervised term needs the training classes' labelled nodes: call "
                                      "learner.use_training_labels(nodes, labels) (build_learner does it)")
                # classifier(embedder(rows)) with the two linear maps merged first: the wide sparse rows
                # meet num_classes columns instead of hidden ones
                merged = self.embed.weight.t() @ self.classifier.weight.t()
                logits = _to(self._train_rows, device).matmul(merged) \
                    + (self.embed.bias @ self.classifier.weight.t() + self.classifier.bias)
                supervised = F.cross_entropy(logits, self.train_labels.to(device))
                loss = loss + supervised
                metrics["supervised_loss"] = float(supervised.detach())
        if train or self.predict == "similarity":
            return TaskResult(loss, sim, query_y, query_emb, metrics)
        with torch.no_grad():
            scores = self._probe(emb[pos_support], support_y, emb[pos_query], ways)
            loss = F.cross_entropy(scores, query_y)
        return TaskResult(loss, scores, query_y, query_emb, dict(metrics, query_loss=float(loss)))

    def _probe(self, support_emb, support_y, query_emb, ways: int) -> torch.Tensor:
        """The script's ``LogisticRegression(C, lbfgs, multinomial)`` on l2-normalised embeddings."""
        from gnn_cml.meta.tlp import fit_probes

        zs, zq = F.normalize(support_emb.double()).cpu(), F.normalize(query_emb.double()).cpu()
        # fit_probes solves the binary objective for 2 ways; the multinomial one has half its penalty
        c = 2 * self.probe_c if ways == 2 else self.probe_c
        w, b = fit_probes(zs.unsqueeze(0), support_y.cpu().unsqueeze(0), ways, c)
        return (zq @ w[0].t() + b[0]).to(support_emb.device, support_emb.dtype)


def _to(block: RowBlock, device) -> RowBlock:
    return block if device.type == "cpu" else block.to(device)
