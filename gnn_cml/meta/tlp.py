"""Transductive linear probing (TLP, Tan et al., LoG 2022): the strongest non-meta baselines.

A GCN encoder is pretrained once per run on the whole graph, then frozen; every few-shot
task is solved by a logistic-regression probe fitted on the support nodes' embeddings and
scored on the query nodes. Three pretrainings (``--pretrain``):

- ``dgi``: Deep Graph Infomax (``torch_geometric.nn.DeepGraphInfomax``: its bilinear
  discriminator and loss): one GCN layer, PReLU, 512 units, negatives by a row permutation of
  the features, Adam lr 0.001, no weight decay, the lowest-loss encoder kept and training
  stopped after 20 epochs without a lower loss (DGI's and TLP's settings). Smaller than TLP:
  at most ``pretrain_epochs`` = 300 epochs (TLP: 10,000; on 2 busy CPU cores an epoch on
  CiteSeer cost ~0.3 s, and DGI's patience rule alone ran ~480 epochs on Cora).
- ``grace``: GRACE: two views by edge dropping (``torch_geometric.utils.dropout_edge``) and
  feature-column masking, a 2-layer GCN, a 2-layer ELU projection head and the symmetric
  InfoNCE loss at temperature tau. Per-graph rates, tau, width, lr and weight decay are TLP's
  ``fs_config.yaml`` (Cora: 128 units, ReLU, lr 5e-4, tau 0.4; CiteSeer: 256 units, PReLU,
  lr 1e-3, tau 0.9). Smaller than TLP: GRACE's published 200 epochs (TLP: up to 10,000); the
  N x N similarity costs ~1 s per epoch on Cora on 2 busy cores.
- ``supervised``: a 2-layer GCN (hidden 16, ReLU, dropout 0.5, no output activation: the
  meta-learners' backbone) plus a linear classifier, trained with cross-entropy on the labelled
  nodes of the *training classes only* (Kipf & Welling's Adam lr 0.01, weight decay 5e-4,
  200 epochs); the probe reads the 16-d GCN output. (TLP's own "supervised" variant is a
  supervised-contrastive loss; this is the plain classifier.) Trained on C classes, that output
  collapses onto their (C - 1)-dimensional discriminant (:func:`embedding_stats`; README, "Why
  the supervised probe sits at chance"), so the probe separates two unseen classes only as far
  as they differ along it.

Every encoder is initialised as ``GCNConv`` (Glorot weights, zero bias), runs on GCNConv's
``D^-1/2 (A+I) D^-1/2`` (``norm: sym``, tlp's default) and reads row-normalised features
(PyG's ``NormalizeFeatures``, as DGI and GRACE).

What pretraining reads: the whole graph's structure and features (``--setting transductive``, as
TLP; ``inductive``: the subgraph induced by the training classes' nodes, see
:mod:`gnn_cml.models.inductive`);
``dgi`` and ``grace`` read no label at all, ``supervised`` reads only the labels of nodes
whose class is a training class (:func:`training_labels` selects them before any model sees
them). No label of a validation or test class is read before the probe sees a task's support
set. TLP early-stops its pretraining on validation-class few-shot accuracy; we do not (fixed
epochs, or DGI's label-free loss patience), so the validation classes are not used at all.

Probe: embeddings min-max scaled per dimension over all nodes (TLP's ``MinMaxScaler``;
``probe_scale: none`` skips it), then L2-regularised logistic regression with scikit-learn's
objective (``C = probe_c``, default 1.0, as TLP; binary for 2 ways, multinomial otherwise;
unpenalised intercept), solved for all tasks at once by L-BFGS in float64 over the span of
each task's support embeddings (``probe_solver: torch``, default), or per task by scikit-learn
(``sklearn``, TLP's solver). Both reach the same optimum; on 100 CiteSeer tasks with 512-d DGI
embeddings (2 busy cores) torch took 1.4 s (1-shot) / 2.1 s (5-shot), scikit-learn 29 s / 40 s.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gnn_cml import methods
from gnn_cml.data.paths import cache_root, data_root
from gnn_cml.data.source import csr_tensor
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.sampling.episodes import Episode

METHOD = methods.get("tlp")  # the declaration: options, defaults (gnn_cml/methods.py)
PRETRAINS = next(o.choices for o in METHOD.options if o.name == "pretrain")

# GRACE per graph, from TLP's GRACE/fs_config.yaml (epochs: GRACE's published 200, see above).
_GRACE = {
    "cora": dict(hidden=128, activation="relu", lr=5e-4, tau=0.4, edge_drop=(0.2, 0.4), feature_drop=(0.3, 0.4)),
    "citeseer": dict(hidden=256, activation="prelu", lr=1e-3, tau=0.9, edge_drop=(0.2, 0.0),
                     feature_drop=(0.3, 0.2)),
}
_GRACE_OTHER = dict(hidden=256, activation="relu", lr=1e-3, tau=0.7, edge_drop=(0.4, 0.1), feature_drop=(0.0, 0.2))


def pretrain_settings(cfg, graph_name: str = "") -> Dict:
    """The settings pretraining ``cfg.pretrain`` uses on ``graph_name`` (config overrides applied)."""
    name = cfg.option("pretrain") or "dgi"
    if name == "dgi":
        s = dict(layers=1, hidden=512, activation="prelu", dropout=0.0, lr=1e-3, weight_decay=0.0, epochs=300,
                 patience=20)
    elif name == "grace":
        s = dict(layers=2, dropout=0.0, weight_decay=1e-5, epochs=200, patience=None,
                 **_GRACE.get(str(graph_name).lower(), _GRACE_OTHER))
        s["edge_drop"], s["feature_drop"] = list(s["edge_drop"]), list(s["feature_drop"])
    else:
        s = dict(layers=2, hidden=16, activation="relu", dropout=0.5, lr=0.01, weight_decay=5e-4, epochs=200,
                 patience=None)
    for key, field in (("epochs", "pretrain_epochs"), ("lr", "pretrain_lr"), ("hidden", "pretrain_hidden")):
        if cfg.option(field) is not None:
            s[key] = cfg.option(field)
    return dict(pretrain=name, **s)


# --- the whole graph as torch tensors ----------------------------------------------------------
def sym_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` of a (possibly edge-dropped) graph, as GCNConv normalises it."""
    loops = torch.arange(num_nodes)
    row = torch.cat([edge_index[0], loops])
    col = torch.cat([edge_index[1], loops])
    deg = torch.zeros(num_nodes).index_add_(0, col, torch.ones(col.numel()))
    val = deg[row].rsqrt() * deg[col].rsqrt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_coo_tensor(torch.stack([col, row]), val, (num_nodes, num_nodes),
                                       check_invariants=False).coalesce().to_sparse_csr()


class _SparseInputProduct(torch.autograd.Function):
    """``X @ W`` for a fixed CSR ``X``; the backward multiplies by ``X^T`` built once per graph
    instead of transposing ``X`` on every call."""

    @staticmethod
    def forward(ctx, w, x, xt):
        ctx.xt = xt
        return x @ w

    @staticmethod
    def backward(ctx, grad):
        return ctx.xt @ grad, None, None


class FullGraph:
    """Row-normalised features (sparse), ``Â`` (the run's normalisation) and the edge list of a
    :class:`PreparedGraph`; of a restricted one (``visible`` set, the inductive setting) only the
    visible nodes' rows, renumbered ``0..len(visible)-1`` (their induced subgraph)."""

    def __init__(self, graph):
        x = graph.x if sp.issparse(graph.x) else sp.csr_matrix(graph.x)
        adj = graph.adj
        self.visible = getattr(graph, "visible", None)
        if self.visible is not None:  # unseen nodes have no edge: the block is the induced subgraph's Â
            x, adj = sp.csr_matrix(x)[self.visible], adj[self.visible][:, self.visible]
        rowsum = np.asarray(abs(x).sum(1)).reshape(-1)
        rowsum[rowsum == 0] = 1.0
        x = sp.diags(1.0 / rowsum).dot(x)  # NormalizeFeatures, as DGI and GRACE
        self.x, self.xt = csr_tensor(x), csr_tensor(x.T)
        self.adj = csr_tensor(adj)
        a = adj.tocoo()
        off = a.row != a.col
        self.edge_index = torch.from_numpy(np.vstack([a.col[off], a.row[off]]).astype(np.int64))
        self.num_nodes, self.num_features = int(adj.shape[0]), int(graph.num_features)

    def local(self, nodes: torch.Tensor) -> torch.Tensor:
        """Graph node ids as rows of this graph (the identity unless restricted)."""
        if self.visible is None:
            return nodes
        return torch.from_numpy(np.searchsorted(self.visible, nodes.numpy()))


class GCNEncoder(nn.Module):
    """Full-graph GCN ``H' = act(Â H W + b)`` (activation on every layer's output, as GRACE/DGI),
    dropout between layers. ``perm`` permutes the input rows (DGI's corruption, computed as a
    permutation of ``X W``); ``feature_mask`` zeroes input columns (GRACE's feature masking,
    computed as a mask on the rows of ``W``)."""

    def __init__(self, in_dim: int, hidden: int, layers: int = 1, activation: str = "prelu", dropout: float = 0.0,
                 last_activation: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = nn.ModuleList(nn.PReLU() if activation == "prelu" else nn.ReLU() for _ in range(layers))
        self.dropout, self.last_activation, self.out_dim = dropout, last_activation, hidden
        for layer in self.layers:  # GCNConv's initialisation: Glorot weights, zero bias
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, perm: Optional[torch.Tensor] = None,
                feature_mask: Optional[torch.Tensor] = None, xt: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.pair(x, adj, perm, feature_mask, xt=xt)[0]

    def pair(self, x: torch.Tensor, adj: torch.Tensor, perm: Optional[torch.Tensor] = None,
             feature_mask: Optional[torch.Tensor] = None, corrupt: bool = False, xt: Optional[torch.Tensor] = None):
        """The embeddings, and with ``corrupt`` also those of the row-permuted input ``perm``
        (DGI's negatives), sharing the one ``X W`` product."""
        first = self.layers[0]
        w = first.weight.t() if feature_mask is None else first.weight.t() * feature_mask.unsqueeze(1)
        xw = _SparseInputProduct.apply(w, x, xt) if xt is not None else x @ w
        inputs = [xw if perm is None or corrupt else xw[perm]] + ([xw[perm]] if corrupt else [])
        outs = []
        for h in inputs:
            h = adj @ h + first.bias
            for i, layer in enumerate(self.layers):
                if i:
                    h = F.dropout(h, self.dropout, self.training)
                    h = adj @ (h @ layer.weight.t()) + layer.bias
                if i < len(self.layers) - 1 or self.last_activation:
                    h = self.acts[i](h)
            outs.append(h)
        return outs[0], (outs[1] if corrupt else None)


def build_encoder(settings: Dict, in_dim: int) -> GCNEncoder:
    return GCNEncoder(in_dim, settings["hidden"], settings["layers"], settings["activation"], settings["dropout"],
                      last_activation=settings["pretrain"] != "supervised")


# --- pretraining ---------------------------------------------------------------------------------
def training_labels(y, train_classes: Sequence[int]):
    """Nodes of the training classes and their labels ``0..len(train_classes)-1``: the only labels
    supervised pretraining sees (every other node's label is dropped here)."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    classes = np.asarray(sorted(int(c) for c in train_classes))
    nodes = np.flatnonzero(np.isin(y, classes))
    return torch.from_numpy(nodes), torch.from_numpy(np.searchsorted(classes, y[nodes])).long()


class _EpochsProgress:
    """Pretraining progress on stderr: a tqdm bar on a terminal; elsewhere (a pipe, a log file)
    plain lines without carriage returns, one at the start, one every 30 s at most, one at the end."""

    def __init__(self, total: int, desc: str, progress: bool):
        from gnn_cml.engine.progress import Line, is_terminal  # lazy: progress is the engine's

        self.total, self.desc, self.bar, self.line = total, desc, None, None
        if not progress:
            return
        if is_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        else:
            self.line = Line(progress)
            self.line.update(f"{desc} · epoch 0 (at most {total})", force=True)

    def update(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.line is not None:
            self.line.update(f"{self.desc} · epoch {epoch} (at most {self.total}) · loss {loss:.4f}")

    def close(self, epoch: int, loss: float, seconds: float) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.line is not None:
            self.line.update(f"{self.desc} · done: {epoch} epochs in {seconds:.0f} s · loss {loss:.4f}", force=True)


def pretrain(settings: Dict, graph: FullGraph, seed: int, train_nodes=None, train_labels=None,
             progress: bool = False, log_name: str = "pretrain") -> Tuple[GCNEncoder, Dict]:
    """Pretrain an encoder on the whole graph; returns it (eval mode) and what happened.

    ``train_nodes``/``train_labels`` (from :func:`training_labels`) are read by ``supervised``
    only; ``dgi`` and ``grace`` take no labels.
    """
    torch.manual_seed(seed)
    name = settings["pretrain"]
    encoder = build_encoder(settings, graph.num_features)
    start = time.perf_counter()
    if name == "dgi":
        from torch_geometric.nn import DeepGraphInfomax

        model = DeepGraphInfomax(
            settings["hidden"], encoder=encoder,
            summary=lambda z, *args, **kwargs: torch.sigmoid(z.mean(dim=0)),
            corruption=lambda x, adj, perm=None: (x, adj, torch.randperm(graph.num_nodes)))

        def loss_fn():  # = model(x, adj) with the corruption above, but X W computed once for both
            pos, neg = encoder.pair(graph.x, graph.adj, torch.randperm(graph.num_nodes), corrupt=True,
                                    xt=graph.xt)
            return model.loss(pos, neg, model.summary(pos))
    elif name == "grace":
        from torch_geometric.utils import dropout_edge

        hidden = settings["hidden"]
        model = nn.ModuleDict({"encoder": encoder, "proj": nn.Sequential(nn.Linear(hidden, hidden), nn.ELU(),
                                                                         nn.Linear(hidden, hidden))})
        tau = settings["tau"]

        def view(edge_p: float, feature_p: float) -> torch.Tensor:
            edge_index = dropout_edge(graph.edge_index, p=edge_p)[0]
            mask = (torch.rand(graph.num_features) >= feature_p).float()
            return model["proj"](encoder(graph.x, sym_adjacency(edge_index, graph.num_nodes), feature_mask=mask,
                                              xt=graph.xt))

        def semi_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            refl = torch.exp(a @ a.t() / tau)
            between = torch.exp(a @ b.t() / tau)
            return -torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag()))

        def loss_fn():
            h1 = F.normalize(view(settings["edge_drop"][0], settings["feature_drop"][0]))
            h2 = F.normalize(view(settings["edge_drop"][1], settings["feature_drop"][1]))
            return 0.5 * (semi_loss(h1, h2) + semi_loss(h2, h1)).mean()
    elif name == "supervised":
        if train_nodes is None or train_labels is None:
            raise GnnCmlError("supervised pretraining needs the training classes' labelled nodes")
        classes = int(train_labels.max()) + 1 if train_labels.numel() else 1
        model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(settings["hidden"], classes)})

        def loss_fn():
            z = encoder(graph.x, graph.adj, xt=graph.xt)
            return F.cross_entropy(model["head"](z[train_nodes]), train_labels)
    else:
        raise GnnCmlError(f"unknown pretraining '{name}': use one of {', '.join(PRETRAINS)}")

    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    patience = settings.get("patience")
    best, best_state, bad, epoch, loss_value = math.inf, None, 0, 0, math.nan
    bar = _EpochsProgress(settings["epochs"], log_name, progress)
    model.train()
    for epoch in range(1, settings["epochs"] + 1):
        optimizer.zero_grad()
        loss = loss_fn()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise GnnCmlError(f"{name} pretraining loss became {loss_value} at epoch {epoch}: lower --pretrain-lr "
                              f"and rerun with --overwrite")
        loss.backward()
        optimizer.step()
        bar.update(epoch, loss_value)
        if patience:  # DGI: keep the lowest-loss encoder, stop after `patience` epochs without a new low
            if loss_value < best:
                best, bad = loss_value, 0
                best_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    seconds = time.perf_counter() - start
    bar.close(epoch, loss_value, seconds)
    if best_state is not None:
        encoder.load_state_dict(best_state)
    encoder.eval()
    info = {"epochs": epoch, "final_loss": loss_value, "best_loss": None if best == math.inf else best,
            "seconds": seconds}
    return encoder, info


# What a pretrained encoder depends on: a run may reuse another run's encoders when these agree.
# DGI and GRACE read no label, so their encoders do not depend on the class split either.
# The setting decides which nodes pretraining sees; inductive DGI/GRACE encoders depend on the split too.
PRETRAIN_KEYS = ("graph", "norm", "seed", "setting", "pretrain", "pretrain_epochs", "pretrain_lr", "pretrain_hidden")
_KEY_DEFAULTS = {"setting": "transductive"}  # keys added later: what a run written before them used
SPLIT_KEYS = ("split", "split_seed", "split_rule", "labels_per_class")


def _value(cfg, key: str):
    return cfg.option(key) if key in METHOD.option_names else getattr(cfg, key)


def check_pretrained(cfg) -> Optional[Path]:
    """``pretrained`` as a folder whose encoders this run may reuse; one-line errors otherwise."""
    if not cfg.option("pretrained"):
        return None
    from gnn_cml.config import load_yaml

    folder = Path(cfg.option("pretrained"))
    if not (folder / "config.yaml").is_file():
        raise GnnCmlError(f"--pretrained {folder} is not a gnn-cml run directory (no config.yaml): give the --out "
                          f"of an earlier --method tlp run")
    saved = load_yaml(folder / "config.yaml")
    if saved.get("method") != "tlp":
        raise GnnCmlError(f"--pretrained {folder} is a {saved.get('method')} run, not a tlp run: give the --out of "
                          f"an earlier --method tlp run")
    keys = PRETRAIN_KEYS + (SPLIT_KEYS if cfg.option("pretrain") == "supervised" or cfg.setting == "inductive" else ())
    differ = [k for k in keys if saved.get(k, _KEY_DEFAULTS.get(k)) != _value(cfg, k)]
    if differ:
        raise GnnCmlError(f"--pretrained {folder} was pretrained with other settings ({', '.join(differ)} differ), "
                          f"so its encoders are not this run's: match them or drop --pretrained")
    return folder


# --- the encoder cache --------------------------------------------------------------------------
# Pretrained encoders are cached under <cache root>/encoders/<key>.pt, the key a digest of everything
# pretraining reads: its settings, the run's seed, the exact graph it sees (features and normalised
# adjacency: the setting and, inductively, the split are in there) and, for supervised, the labelled nodes.
# A DGI/GRACE encoder of the transductive setting thus serves every class split, shot and way of a graph.
ENCODER_CACHE_ENV = "GNN_CML_ENCODER_CACHE"  # "off": pretrain in every run, as before the cache
_CACHE_FORMAT = 1


def _digest_tensor(h, t: torch.Tensor) -> None:
    if t.layout == torch.sparse_csr:
        for part in (t.crow_indices(), t.col_indices(), t.values()):
            _digest_tensor(h, part)
        return
    t = t.detach().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())


def encoder_cache_key(settings: Dict, graph: "FullGraph", seed: int, nodes=None, labels=None) -> str:
    """The cache key of the encoder ``pretrain(settings, graph, seed, nodes, labels)`` returns."""
    h = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, "torch": torch.__version__, "seed": int(seed),
                                   "settings": settings}, sort_keys=True).encode())
    for t in (graph.x, graph.adj, graph.edge_index) + tuple(v for v in (nodes, labels) if v is not None):
        _digest_tensor(h, t)
    return h.hexdigest()


def encoder_cache_dir(root=None) -> Optional[Path]:
    """Where pretrained encoders are cached (``None`` when ``$GNN_CML_ENCODER_CACHE`` is ``off``)."""
    if os.environ.get(ENCODER_CACHE_ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    return cache_root(data_root(root)) / "encoders"


# --- the probe ---------------------------------------------------------------------------------
def embedding_stats(z: torch.Tensor, y, classes: Sequence[int]) -> Dict[str, float]:
    """How much of ``z`` (nodes x d) a probe can use to tell ``classes`` apart (their first two):
    ``effective_rank`` of the centred embeddings of the classes' nodes (``(sum s)^2 / sum s^2`` over
    singular values s; 1: all on one line), ``top_ratio`` (largest over second singular value),
    ``separation`` (distance of the two class means over the mean of the classes' root total
    variances; 0: the means coincide) and ``constant_dims`` (share of dimensions constant on them)."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    z = z.double()
    nodes = torch.from_numpy(np.flatnonzero(np.isin(y, list(classes))))
    zc = z[nodes] - z[nodes].mean(0)
    sv = torch.linalg.svdvals(zc)
    a, b = (z[torch.from_numpy(np.flatnonzero(y == c))] for c in list(classes)[:2])
    spread = 0.5 * (a.var(0).sum().sqrt() + b.var(0).sum().sqrt())
    return {"effective_rank": float(sv.sum() ** 2 / (sv ** 2).sum()),
            "top_ratio": float(sv[0] / sv[1]) if len(sv) > 1 and sv[1] > 0 else math.inf,
            "separation": float((a.mean(0) - b.mean(0)).norm() / spread) if spread > 0 else 0.0,
            "constant_dims": float((zc.abs().max(0).values == 0).double().mean())}


def minmax(z: torch.Tensor) -> torch.Tensor:
    """Scale every dimension to [0, 1] over all nodes (sklearn's MinMaxScaler, as TLP)."""
    lo, hi = z.min(0).values, z.max(0).values
    span = hi - lo
    span[span == 0] = 1.0
    return (z - lo) / span


def fit_probes(zs: torch.Tensor, ys: torch.Tensor, ways: int, c: float = 1.0, max_iter: int = 500):
    """Logistic-regression probes for a stack of tasks: ``zs`` (T, S, d) support embeddings,
    ``ys`` (T, S) labels. Minimises, per task, sklearn's objective
    ``C * sum_i CE_i + penalty`` with the binary (2 ways) or multinomial L2 penalty and an
    unpenalised intercept. By the representer theorem the optimal weights lie in the span of the
    task's support embeddings: with ``Z^T = Q R`` (reduced QR), ``W = B Q^T``, the logits are
    ``R^T B^T`` and ``||W|| = ||B||``, so each task is an S-dimensional problem (S x ways numbers
    instead of d x ways) as well conditioned as the original one. All tasks at once by L-BFGS
    (a sum of independent convex problems has every task's optimum as its optimum).
    Returns weights (T, ways, d) and bias (T, ways)."""
    zs = zs.double()
    q, r = torch.linalg.qr(zs.transpose(1, 2))  # (T, d, S), (T, S, S)
    # Softmax with 2 classes: the optimum is W = [-w/2, w/2], so ||W||^2 / C equals sklearn's binary ||w||^2 / (2C).
    lam = (1.0 if ways == 2 else 0.5) / c
    w = torch.zeros(zs.shape[0], ways, r.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(zs.shape[0], ways, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    targets = ys.reshape(-1)

    def closure():
        opt.zero_grad()
        logits = torch.einsum("trs,twr->tsw", r, w) + b.unsqueeze(1)
        loss = F.cross_entropy(logits.reshape(-1, ways), targets, reduction="sum") + lam * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return torch.einsum("twr,tdr->twd", w.detach(), q), b.detach()


def probe_logits(z: torch.Tensor, tasks: Sequence[Episode], ways: int, c: float = 1.0,
                 solver: str = "torch") -> List[torch.Tensor]:
    """Query logits of a probe per task on frozen embeddings ``z`` (all nodes)."""
    if solver == "sklearn":
        from sklearn.linear_model import LogisticRegression

        out = []
        zn = z.double().numpy()
        for e in tasks:
            clf = LogisticRegression(C=c, max_iter=1000).fit(zn[e.support.numpy()], e.support_y.numpy())
            scores = clf.decision_function(zn[e.query.numpy()])
            scores = np.stack([-scores / 2, scores / 2], 1) if scores.ndim == 1 else scores
            out.append(torch.from_numpy(scores))
        return out
    out: List[torch.Tensor] = []
    groups: Dict[int, List[int]] = {}
    for i, e in enumerate(tasks):  # stack tasks with the same support size
        groups.setdefault(int(e.support.numel()), []).append(i)
    logits: Dict[int, torch.Tensor] = {}
    for idx in groups.values():
        zs = torch.stack([z[tasks[i].support] for i in idx])
        ys = torch.stack([tasks[i].support_y for i in idx]).long()
        w, b = fit_probes(zs, ys, ways, c)
        for j, i in enumerate(idx):
            logits[i] = z[tasks[i].query].double() @ w[j].t() + b[j]
    return [logits[i] for i in range(len(tasks))]


def _graph_name(graph: str) -> str:
    from gnn_cml.data.registry import graph_info

    return graph_info(str(graph)).name


def _read_cached(files, path: Optional[Path]) -> Optional[Dict]:
    """A cached encoder, or ``None`` when there is none or it cannot be read (it is pretrained again)."""
    if path is None or not path.is_file():
        return None
    try:
        saved = files.load(path)
        return saved if isinstance(saved, dict) and {"encoder", "pretrain"} <= set(saved) else None
    except GnnCmlError:
        return None


def _write_cached(files, path: Path, state: Dict) -> None:
    """Cache an encoder; a cache that cannot be written (read-only, full) only costs later runs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.save(path, state)
    except (OSError, GnnCmlError):
        pass


class TLP(MetaLearner):
    """A frozen pretrained encoder plus one logistic-regression probe per task.

    Not meta-trained (declared ``meta_trained=False``): the experiment calls :meth:`fit` once per run
    (pretraining, or loading ``encoder.pt`` of a finished pretraining) and :meth:`evaluate` on
    the fixed test tasks. ``forward(episode)`` probes a single task, so ``gnn-cml evaluate``
    works as for every learner. The state dict is the encoder's.
    """

    adapts = False

    @classmethod
    def from_config(cls, cfg, graph) -> "TLP":
        name = "" if str(cfg.graph).endswith(".npz") else _graph_name(cfg.graph)
        return cls(pretrain_settings(cfg, name), graph, cfg.ways, cfg.option("probe_c"), cfg.option("probe_solver"),
                   cfg.option("probe_scale"))

    @classmethod
    def check_config(cls, cfg) -> None:
        check_pretrained(cfg)
    def plan(self) -> str:
        """What each run does, for the experiment's header line."""
        s = self.settings
        how = {"dgi": "Deep Graph Infomax", "grace": "GRACE (contrastive views)",
               "supervised": "cross-entropy on the training classes' labels"}.get(s["pretrain"], s["pretrain"])
        stop = f", stops after {s['patience']} without a lower loss" if s.get("patience") else ""
        return (f"each run pretrains a GCN with {how} (at most {s['epochs']} epochs{stop}), then fits "
                f"one logistic probe per test task on its support nodes (C = {self.probe_c:g}); no meta-training, "
                f"no validation")

    def __init__(self, settings: Dict, graph, ways: int, probe_c: float = 1.0, probe_solver: str = "torch",
                 probe_scale: str = "minmax"):
        super().__init__()
        self.settings, self.ways, self.probe_c, self.probe_solver = settings, ways, probe_c, probe_solver
        self.probe_scale = probe_scale
        self._prepared = graph
        self._graph: Optional[FullGraph] = None
        self.encoder = build_encoder(settings, graph.num_features)
        self._z: Optional[torch.Tensor] = None

    @property
    def graph(self) -> FullGraph:
        if self._graph is None:
            self._graph = FullGraph(self._prepared)
        return self._graph

    def bind(self, graph) -> "TLP":
        """Read ``graph`` (a :class:`PreparedGraph`) from now on: :meth:`fit` pretrains on the graph
        bound then, the probes read embeddings of the graph bound when they run."""
        if graph is not self._prepared:
            self._prepared, self._graph, self._z = graph, None, None
        return self

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        self._z = None  # embeddings of the previous weights
        return super().load_state_dict(state, strict=strict, assign=assign)

    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        if self._z is None:
            self.encoder.eval()
            z = self.encoder(self.graph.x, self.graph.adj, xt=self.graph.xt).double()
            self._z = minmax(z) if self.probe_scale == "minmax" else z
        return self._z

    # --- the experiment's fit/evaluate path ----------------------------------------------------
    def fit(self, task, run_dir: Path, seed: int, resume: bool = False, progress: bool = True,
            log_name: str = "", files=None) -> Dict:
        """Pretrain (or, with ``resume``, reload ``run_dir/encoder.pt``); returns the run's record.

        Args:
            files: the run folder's checkpoint reader/writer (``load(path)``, ``save(path, state)``;
                the experiment passes :class:`gnn_cml.engine.checkpoint.RunFiles`). Without it
                nothing is read or written: the encoder is pretrained in memory.
        """
        path = Path(run_dir) / "encoder.pt"
        if files is None:
            if resume or task.cfg.option("pretrained"):
                raise GnnCmlError("resuming or reusing a pretrained encoder needs the run folder's files: "
                                  "pass files=RunFiles()")
        save = files.save if files is not None else (lambda *args: None)
        source = path if resume and path.exists() else None
        shared = check_pretrained(task.cfg)
        if source is None and shared is not None:
            source = shared / Path(run_dir).name / "encoder.pt"
            if not source.is_file():
                raise GnnCmlError(f"--pretrained {shared} has no {Path(run_dir).name}/encoder.pt: finish that run "
                                  f"first (gnn-cml train --resume --out {shared}) or drop --pretrained")
        if source is not None:
            saved = files.load(source)
            try:
                self.load_state_dict(saved["encoder"])
                info = dict(saved["pretrain"])
            except (KeyError, TypeError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
                raise GnnCmlError(f"{source} does not hold this run's encoder ({first}): delete it to pretrain "
                                  f"again, or use --overwrite") from None
            if progress:  # stderr: stdout holds only the JSON summary
                from gnn_cml.engine.progress import status

                status(f"{log_name}: reusing the pretrained encoder in {source}")
            if source != path:  # the run keeps its own copy
                save(path, {"encoder": self.state_dict(), "pretrain": info})
            info["reused"] = True
        else:
            nodes = labels = None
            if self.settings["pretrain"] == "supervised":
                nodes, labels = training_labels(task.data.y, task.split.train)
                nodes = self.graph.local(nodes)
            folder = encoder_cache_dir(task.cfg.data_root) if files is not None else None
            cached = folder / f"{encoder_cache_key(self.settings, self.graph, seed, nodes, labels)}.pt" \
                if folder is not None else None
            saved = _read_cached(files, cached)
            if saved is not None:  # the same pretraining, done by an earlier run (another split or shot)
                self.load_state_dict(saved["encoder"])
                info = dict(saved["pretrain"], reused="cache")
                if progress:
                    from gnn_cml.engine.progress import status

                    status(f"{log_name}: reusing the cached pretrained encoder {cached}")
            else:
                encoder, info = pretrain(self.settings, self.graph, seed, nodes, labels, progress=progress,
                                         log_name=f"{log_name} pretrain")
                self.encoder.load_state_dict(encoder.state_dict())
                info = dict(info, reused=False)
            self._z = None
            state = {"encoder": self.state_dict(), "pretrain": {k: v for k, v in info.items() if k != "reused"}}
            save(path, state)
            if cached is not None and saved is None:
                _write_cached(files, cached, state)
        return {"pretrain": self.settings["pretrain"], "pretrain_settings": self.settings,
                "pretrain_seconds": info["seconds"], "pretrain_epochs": info["epochs"],
                "pretrain_loss": info["final_loss"], "pretrain_reused": info["reused"],
                "episodes": 0, "train_seconds": info["seconds"]}

    def evaluate(self, tasks: Sequence[Episode]) -> List[float]:
        """Per-task query accuracy of the probes (fitted on each task's support set)."""
        tasks = list(tasks)
        logits = probe_logits(self.embeddings(), tasks, self.ways, self.probe_c, self.probe_solver)
        return [float((lg.argmax(-1) == e.query_y).double().mean()) for lg, e in zip(logits, tasks)]

    def forward(self, episode: Episode, train: bool = False) -> TaskResult:
        logits = probe_logits(self.embeddings(), [episode], self.ways, self.probe_c, self.probe_solver)[0]
        return TaskResult(loss=F.cross_entropy(logits, episode.query_y), logits=logits, targets=episode.query_y)
