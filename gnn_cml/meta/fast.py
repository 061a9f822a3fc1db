"""The fast path, public face: the closed-form inner loop's eligibility and many runs as one computation.

- :func:`why_not_closed_form` (from :mod:`gnn_cml.meta.closed_form`, the kernel that
  :meth:`MAML.adapt` uses for first-order steps) and :func:`why_not_batched` name why a learner
  does not take the fast path (``None``: it does); the method registry's ``fast_path`` declares
  whether a method may take it at all (``gnn_cml/methods.py``);
- :func:`prepare_task`, :func:`stacked_parameters` and :func:`batched_forward` run R runs' tasks
  at once (:mod:`gnn_cml.engine.batched` drives them).

Batched runs (``gnn-cml train --runs R``):

R runs of the paper protocol differ in their weights, episodes and random draws, not in the
computation, and one run's task is too small to keep a CPU core busy: most of its time is
per-operation overhead. Here the R runs' tasks of one meta-training episode (or every run's
validation and test tasks) go through one computation:

- each task is prepared per run exactly as :meth:`MAML.forward` would (episode rows, AMM-GNN's
  random node sets and dropout masks drawn from the run's seeded generator in the same order);
- the first-order inner loops of all tasks run as one batched closed-form loop
  (:func:`gnn_cml.meta.closed_form.numpy_loop` on arrays with a leading task dimension,
  zero-padded to the largest task: a padded row meets only zero columns of ``P``, so it changes
  no output and no gradient);
- the query pass, the co-learner (``torch.func.vmap`` over the runs' stacked co-learner
  parameters) and AMM-GNN's modulation run on the runs' parameters stacked with
  ``torch.stack``, so one ``backward()`` leaves every run's meta-gradient in its own
  parameters' ``.grad`` and each run keeps its own optimiser, early stopping and best state.

Supported: MAML on a GCN, G-Meta (subgraph GCN) and AMM-GNN (reference modulation), each
optionally with CML, in the first-order protocol; :func:`why_not_batched` names why anything else
falls back to training runs one after another. ``tests/test_batched_runs.py`` checks that
batched runs equal the same runs trained alone.

Memory: no product array of the batched path (a bucket's or chunk's tasks x rows x rows Gram and
support-query blocks) has more than ``min(MAX_BLOCK_ENTRIES, closed_form.MAX_GRAM_ENTRIES)``
entries when it holds several tasks, and none more than ``MAX_GRAM_ENTRIES`` for one task: a task
whose own products would pass that (:func:`past_gram_cap`; G-Meta's stacked 2-hop subgraphs around
hubs of an ogbn-arxiv-sized graph) is solved alone by its run's learner (:func:`forward_alone`),
whose closed form refuses it in the same way, so it takes the autograd inner loop, as when the run
is trained alone. The engine says so on a status line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from gnn_cml.meta import closed_form
from gnn_cml.meta.closed_form import adapt as closed_form_adapt, why_not as why_not_closed_form  # noqa: F401
from gnn_cml.meta.ammgnn import AMMGNN
from gnn_cml.meta.cml import CML
from gnn_cml.meta.maml import MAML
from gnn_cml.models.encoders import SubgraphGCN, stack_csr_parts
from gnn_cml.models.graph import RowBlock
from gnn_cml.sampling.episodes import Episode

# Tasks per batched evaluation chunk, at most; and the most entries of one padded product array
# (tasks x rows x rows: Gram and support-query blocks) in a chunk or inner-loop bucket, which bounds
# the memory of large subgraphs (Cora's 5-shot G-Meta tasks) to a few hundred MB.
EVAL_CHUNK = 128
MAX_BLOCK_ENTRIES = 2 ** 24
# Entries of the products kept per fixed task between evaluations (1 MiB in float32); larger ones
# (big subgraphs) are recomputed, so that 20 runs x 20 validation tasks stay a few hundred MB.
MAX_SHARED_ENTRIES = 2 ** 18


def block_entries() -> int:
    """The most entries of one padded product array of several tasks (a bucket or a chunk)."""
    return min(MAX_BLOCK_ENTRIES, closed_form.MAX_GRAM_ENTRIES)


def _parts(learner) -> Tuple[MAML, Optional[CML]]:
    return (learner.learner, learner) if isinstance(learner, CML) else (learner, None)


def why_not_batched(learner) -> Optional[str]:
    """Why ``learner``'s runs cannot be trained as one batched computation (``None`` when they can):
    the closed form's conditions (:func:`why_not_closed_form`) plus what the batched code covers."""
    base, _ = _parts(learner)
    if type(base) not in (MAML, AMMGNN):
        return f"{type(base).__name__} is not a MAML-style learner"
    if isinstance(base, AMMGNN) and base.modulation != "reference":
        return f"AMM-GNN modulation '{base.modulation}' (only 'reference')"
    if not base.first_order:
        return "second-order inner loops (only the first-order paper protocol)"
    return why_not_closed_form(base)


def _forms_cross(base, train: bool) -> bool:
    """Whether :func:`batched_forward` forms the support-query product ``X_q X_s^T`` (evaluation,
    except for AMM-GNN's per-task factors: there, and in training, the adapted first layer is formed)."""
    return not train and not isinstance(base, AMMGNN)


def past_gram_cap(learner, support_rows: int, query_rows: int, train: bool) -> bool:
    """Whether a task's own products in :func:`batched_forward` would pass ``closed_form.MAX_GRAM_ENTRIES``
    entries: its support Gram matrix (``support_rows^2``, the bound of the single-run closed form) or,
    where it is formed, its query-support product. Such a task is solved by :func:`forward_alone`."""
    cap = closed_form.MAX_GRAM_ENTRIES
    base, _ = _parts(learner)
    return support_rows * support_rows > cap or (_forms_cross(base, train) and support_rows * query_rows > cap)


def forward_alone(learner, episode: Episode, params: Dict[str, torch.Tensor], run: int, train: bool):
    """``learner(episode, train)`` with run ``run``'s slice of the stacked ``params``: the path of a
    run trained alone (seed the generator first, as the Trainer does), differentiable to ``params``
    when ``train``. Returns the learner's :class:`~gnn_cml.meta.base.TaskResult`."""
    return functional_call(learner, {k: v[run] for k, v in params.items()}, (episode,), {"train": train})


@dataclass
class PreparedTask:
    """One task of one run, ready for the batched computation: parameter-free rows and the
    random draws :meth:`MAML.forward` makes, in its order."""

    x_support: object  # RowBlock or RawRows
    prop_support: torch.Tensor
    x_query: object
    prop_query: torch.Tensor
    support_y: torch.Tensor
    query_y: torch.Tensor
    amm_rows: Optional[torch.Tensor] = None  # AMM-GNN: features of the two node sets (2, F, set_size)
    inner_masks: Optional[torch.Tensor] = None  # (steps, support rows, hidden), already divided by keep
    query_mask: Optional[torch.Tensor] = None  # (query rows, hidden)
    # Parameter-free products of the rows (X_s X_s^T + 1, X_q X_s^T), kept for tasks evaluated again
    # and shared by every run's copy of the same episode (see :func:`batched_forward`).
    shared: Optional[Dict[str, torch.Tensor]] = None


class RawRows:
    """Feature rows as raw CSR arrays; the scipy-backed :class:`RowBlock` is built only when a
    per-task product needs it (batched products read the arrays directly)."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: Tuple[int, int]):
        self.data, self.indices, self.indptr, self.shape = data, indices, indptr, shape
        self._block: Optional[RowBlock] = None

    @property
    def block(self) -> RowBlock:
        if self._block is None:
            m = sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)
            self._block = RowBlock(shape=self.shape, host=m)
        return self._block

    def matmul(self, w):
        return self.block.matmul(w)

    def tmatmul(self, g):
        return self.block.tmatmul(g)

    def gram(self, col_weights=None):
        return self.block.gram(col_weights)


def _csr_parts(rows) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if isinstance(rows, RawRows):
        return rows.data, rows.indices, rows.indptr
    if isinstance(rows, RowBlock) and rows.host is not None and rows.device is None:
        return rows.host.data, rows.host.indices, rows.host.indptr
    return None


def _subgraph_side(enc, nodes: np.ndarray):
    """:meth:`SubgraphGCN.prepare` for the collapsed 2-layer encoder, with the rows as raw arrays
    (no scipy matrix per task): the nodes' stacked subgraph rows (``Â_sub X``) and ``P`` =
    pooling times ``Â_sub``; None when the features are dense."""
    parts = enc.graph.subgraphs(nodes, enc.hops)
    if parts[0].x_dense is not None:
        return None
    bounds = np.concatenate([[0], np.cumsum([len(p.nodes) for p in parts])])
    data, indices, indptr = stack_csr_parts([(p.x_data, p.x_indices, p.x_indptr) for p in parts])
    x = RawRows(data.astype(np.float32, copy=False), indices, indptr, (int(bounds[-1]), enc.graph.num_features))
    return x, torch.from_numpy(enc.pooled_adjacency(nodes, parts, bounds))


def graph_inputs(learner, episode: Episode):
    """The episode's parameter-free inputs (support and query): shareable between runs."""
    base, _ = _parts(learner)
    enc = base.encoder
    if isinstance(enc, SubgraphGCN):
        support = _subgraph_side(enc, episode.support.numpy())
        if support is not None:
            return (*support, *_subgraph_side(enc, episode.query.numpy()))
    support_in, query_in = base.inputs(episode)
    return (support_in["x"], closed_form.propagation(enc, support_in, torch.float32),
            query_in["x"], closed_form.propagation(enc, query_in, torch.float32))


def prepare_task(learner, episode: Episode, train: bool, inputs=None,
                 shared: Optional[Dict[str, torch.Tensor]] = None) -> PreparedTask:
    """``episode`` for ``learner``, drawing from torch's default generator what ``learner(episode,
    train)`` would draw, in the same order (seed the generator first, as the Trainer does).
    ``inputs``/``shared``: the episode's :func:`graph_inputs` and a product cache, when several
    runs evaluate the same episode."""
    base, _ = _parts(learner)
    x_s, prop_s, x_q, prop_q = inputs if inputs is not None else graph_inputs(learner, episode)
    dtype = base.net.head.net[1].weight.dtype
    task = PreparedTask(x_s, prop_s, x_q, prop_q, episode.support_y, episode.query_y,
                        shared=shared if shared is not None else ({} if not train else None))
    if isinstance(base, AMMGNN):
        task.amm_rows = base.task_features(episode).transpose(1, 2).to(dtype)
    enc = base.encoder
    dropout = enc.dropout if train and base.training and enc.training else 0.0
    if base.inner_steps > 0:
        task.inner_masks = closed_form.dropout_masks((base.inner_steps, x_s.shape[0], enc.hidden), dropout, dtype)
    if not base.query_eval:
        task.query_mask = closed_form.dropout_masks((x_q.shape[0], enc.hidden), dropout, dtype)
    return task


def stacked_parameters(learners: Sequence, grad: bool = False) -> Dict[str, torch.Tensor]:
    """Every parameter stacked over runs (``grad``: differentiable back to each run's tensors)."""
    named = [dict(m.named_parameters()) for m in learners]
    if grad:
        return {k: torch.stack([p[k] for p in named]) for k in named[0]}
    with torch.no_grad():
        return {k: torch.stack([p[k].detach() for p in named]) for k in named[0]}


def _pad(arrays: Sequence[torch.Tensor], rows: int, cols: Optional[int] = None, dim: int = 0) -> torch.Tensor:
    """Stack 2-D tensors, zero-padding dimension ``dim`` to ``rows`` (and dim 1 to ``cols``)."""
    out = []
    for a in arrays:
        pad = [0, 0, 0, 0]
        if dim == 0:
            pad[3] = rows - a.shape[0]
        if cols is not None:
            pad[1] = cols - a.shape[1]
        out.append(F.pad(a, pad) if any(pad) else a)
    return torch.stack(out)


class _Rows:
    """The wide input rows of P tasks as sparse blocks, so that one product serves every task:

    - :meth:`matmul_t`: task ``i``'s ``X_i W_{owner(i)}^T`` for the runs' weights ``W`` (R, H, F):
      the rows of task ``i`` with columns shifted by ``owner(i) * F`` times the runs' ``W^T``
      stacked to ``(R F, H)`` (several tasks of one run share its weights, no copies);
    - :meth:`cross`: every task's ``X_i diag(w_i) Y_i^T`` (Gram and support-query products), one
      product of blocks shifted per task (block diagonal), scattered into a padded (P, n, m) array.

    Tasks' rows may be scaled per column first (``col_scale``: (P, F), AMM-GNN's modulation).
    """

    def __init__(self, blocks: Sequence, owners: Sequence[int], runs: int,
                 col_scale: Optional[np.ndarray] = None):
        self.blocks, self.owners, self.runs = blocks, list(owners), runs
        self.sizes = [b.shape[0] for b in blocks]
        self.rows = max(self.sizes)
        self.width = blocks[0].shape[1]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        # where each task's rows go in the padded (P, rows, H) layout
        self.index = torch.from_numpy(np.concatenate([np.arange(n) + i * self.rows for i, n in enumerate(self.sizes)]))
        self.parts = [_csr_parts(b) for b in blocks]
        self.sparse = all(p is not None for p in self.parts)
        if self.sparse and col_scale is not None:
            self.parts = [(d * col_scale[i][idx], idx, ptr) for i, (d, idx, ptr) in enumerate(self.parts)]
        self.col_scale = col_scale
        self._blocks: Dict[str, sp.csr_matrix] = {}

    def _block(self, by: str) -> sp.csr_matrix:
        """The rows with task ``i``'s columns shifted by ``owner(i) * F`` (``by='owner'``) or ``i * F``."""
        if by not in self._blocks:
            shift = self.owners if by == "owner" else range(len(self.blocks))
            width = (self.runs if by == "owner" else len(self.blocks)) * self.width
            data, indices, indptr = stack_csr_parts(self.parts, [k * self.width for k in shift])
            self._blocks[by] = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, width))
        return self._blocks[by]

    def _scatter(self, flat: torch.Tensor) -> torch.Tensor:
        count, hidden = len(self.blocks), flat.shape[-1]
        out = flat.new_zeros(count * self.rows, hidden).index_copy(0, self.index, flat)
        return out.reshape(count, self.rows, hidden)

    def matmul_t(self, w: torch.Tensor) -> torch.Tensor:
        """Task ``i``'s ``X_i w_{owner(i)}^T`` for ``w`` (R, H, F), zero-padded to (P, rows, H);
        differentiable in ``w``."""
        if not self.sparse:
            scale = (lambda i: 1.0) if self.col_scale is None else \
                (lambda i: torch.from_numpy(self.col_scale[i]).to(w.dtype)[:, None])  # noqa: E731
            return _pad([b.matmul(w[o].t() * scale(i)) for i, (b, o) in enumerate(zip(self.blocks, self.owners))],
                        self.rows)
        block = self._block("owner")
        rows = RowBlock(shape=block.shape, host=block)
        return self._scatter(rows.matmul(w.transpose(1, 2).reshape(-1, w.shape[1])))

    def tmatmul(self, g: torch.Tensor) -> torch.Tensor:
        """Task ``i``'s ``X_i^T g_i`` for padded ``g`` (P, rows, H): (P, F, H) (no graph)."""
        if not self.sparse:
            out = [b.tmatmul(g[i, :n]) for i, (b, n) in enumerate(zip(self.blocks, self.sizes))]
            if self.col_scale is not None:
                out = [o * torch.from_numpy(self.col_scale[i]).to(o.dtype)[:, None] for i, o in enumerate(out)]
            return torch.stack(out)
        block = self._block("task")
        flat = g.reshape(-1, g.shape[-1])[self.index]
        return RowBlock(shape=block.shape, host=block).tmatmul(flat).reshape(len(self.blocks), self.width, -1)

    def cross(self, other: "_Rows", dtype) -> torch.Tensor:
        """Every task's ``X_i Y_i^T`` (both scaled as built), zero-padded to (P, rows, other.rows),
        rounded through float32 as :meth:`RowBlock.gram` is."""
        count, n, m = len(self.blocks), self.rows, other.rows
        if not (self.sparse and other.sparse):
            def dense(rows, i):
                x = rows.blocks[i].to_dense() if hasattr(rows.blocks[i], "to_dense") else \
                    rows.blocks[i].block.to_dense()
                x = x.to(torch.float64)
                return x if rows.col_scale is None else x * torch.from_numpy(rows.col_scale[i])
            return _pad([(dense(self, i) @ dense(other, i).t()).float().to(dtype) for i in range(count)], n, m)
        product = self._block("task").dot(other._block("task").T).tocoo()
        task = np.repeat(np.arange(count), self.sizes)[product.row]
        flat = task * n * m + (product.row - self.starts[task]) * m + (product.col - other.starts[task])
        out = np.zeros(count * n * m, np.float32)
        out[flat] = product.data
        return torch.from_numpy(out.reshape(count, n, m)).to(dtype)

    def valid(self, dtype) -> torch.Tensor:
        """(P, rows): 1 on each task's real rows, 0 on padding."""
        return (torch.arange(self.rows)[None, :] < torch.tensor(self.sizes)[:, None]).to(dtype)


class _FirstOrder(torch.autograd.Function):
    """The adapted value ``new`` forward, the identity to the meta-parameter backward (first-order
    MAML's ``w + (w' - w).detach()`` without two passes over the wide first layer)."""

    @staticmethod
    def forward(ctx, meta: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return new.view_as(new)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _amm_condition(params: Dict[str, torch.Tensor], rows: torch.Tensor, scale: float):
    """AMM-GNN's reference modulation for stacked runs: per-feature factors (R, F) and the
    regulariser (R,), as :meth:`AMMGNN.condition` computes them per run."""
    def linear(name):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (R, 1, S), (R, 1)
        return (rows @ w[:, None].transpose(-1, -2)).squeeze(-1) + b[:, None]  # (R, 2, F)

    alpha, beta = linear("alpha_net"), linear("beta_net")
    similarity = (F.cosine_similarity(alpha[:, 0], alpha[:, 1], dim=-1, eps=1e-6)
                  + F.cosine_similarity(beta[:, 0], beta[:, 1], dim=-1, eps=1e-6))
    return 1 + scale * alpha.mean(1), -scale * similarity


def _buckets(sizes: Sequence[int], waste: float = 1.5) -> List[List[int]]:
    """Task indices grouped by size (sorted), a group closing when padding it to its largest task
    would cost more than ``waste`` times its tasks' own ``rows^2`` (the inner loop's Gram product)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    groups: List[List[int]] = []
    own = 0.0
    for i in order:
        n2 = float(sizes[i]) ** 2
        if groups and (len(groups[-1]) + 1) * n2 <= min(waste * (own + n2), block_entries()):
            groups[-1].append(i)
            own += n2
        else:
            groups.append([i])
            own = n2
    return groups


def _fill_shared(tasks: Sequence[PreparedTask], dtype) -> None:
    """Compute the missing ``gram`` / ``cross`` products of the tasks' shared caches, once per episode."""
    todo, seen = [], set()
    for t in tasks:
        if "gram" not in t.shared and id(t.shared) not in seen:
            seen.add(id(t.shared))
            todo.append(t)
    if not todo:
        return
    support = _Rows([t.x_support for t in todo], [0] * len(todo), 1)
    query = _Rows([t.x_query for t in todo], [0] * len(todo), 1)
    valid = support.valid(dtype)
    gram = support.cross(support, dtype) + valid[:, :, None] * valid[:, None, :]
    cross = query.cross(support, dtype)
    for i, t in enumerate(todo):
        ns, nq = support.sizes[i], query.sizes[i]
        t.shared["gram"], t.shared["cross"] = gram[i, :ns, :ns].clone(), cross[i, :nq, :ns].clone()


def batched_forward(learner, tasks: Sequence[PreparedTask], params: Dict[str, torch.Tensor], train: bool,
                    owners: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
    """Task ``i`` of ``tasks`` solved by run ``owners[i]`` (default ``i``) of a learner built like
    ``learner`` (its structure and settings only are read), whose parameters are ``params``
    stacked over runs.

    Returns per-task ``loss`` (P,) — the outer objective ``learner(episode, train)`` returns,
    differentiable to ``params`` when ``train`` — and query ``logits`` (P, m, C) (the
    co-learner's with CML-dagger at meta-test) with their ``targets``.

    At evaluation (many runs' copies of the same fixed tasks) the adapted first layer is not formed:
    its product with the query rows is ``X_q W^T - lr (X_q X_s^T) C`` (``C``: the summed inner-loop
    gradients with respect to the support pre-activations), with ``X_s X_s^T`` and ``X_q X_s^T``
    computed once per episode and shared by every run evaluating it (except for AMM-GNN, whose
    factors differ per task). Tasks go through the inner loop in buckets of similar size.
    """
    base, cml = _parts(learner)
    prefix = "learner." if cml is not None else ""
    count = len(tasks)
    runs = next(iter(params.values())).shape[0]
    owners = list(range(count)) if owners is None else list(owners)
    own = torch.tensor(owners)
    same = owners == list(range(runs))
    per_task = {k: (v if same else v[own]) for k, v in params.items() if k != prefix + closed_form.W1}
    w1 = params[prefix + closed_form.W1]  # (runs, H, F)
    b1, w2, b2, wh, bh = (per_task[prefix + k] for k in closed_form.KEYS[1:])
    dtype, lr = w1.dtype, base.inner_lr
    steps = base.inner_steps if train else base.test_inner_steps
    ways = wh.shape[1]
    scale = regulariser = None
    if isinstance(base, AMMGNN):
        amm = {k[len(prefix):]: v for k, v in per_task.items() if k.startswith(prefix)}
        scale, regulariser = _amm_condition(amm, torch.stack([t.amm_rows for t in tasks]), base.scale)
    s_np = None if scale is None else scale.detach().numpy()
    support = _Rows([t.x_support for t in tasks], owners, runs, s_np)
    # The adapted first layer is formed in training (one per run, cheaper than the support-query
    # product on large subgraphs) and for AMM-GNN's per-task factors; evaluation uses X_q X_s^T.
    materialise = scale is not None or train
    query = None if materialise else _Rows([t.x_query for t in tasks], owners, runs)
    adapted = {"b1": b1, "w2": w2, "b2": b2, "wh": wh, "bh": bh}
    coef_t = None
    if steps:  # the inner loops: closed form, tasks of similar size at once, no graph
        with torch.no_grad():
            n = support.rows
            coef = np.zeros((count, n, w1.shape[1]), dtype=np.float64 if dtype == torch.float64 else np.float32)
            w2n, b2n, whn, bhn = (p.detach().numpy().copy() for p in (w2, b2, wh, bh))
            cached = scale is None and all(t.shared is not None for t in tasks)
            if cached:  # parameter-free products, once per episode
                _fill_shared(tasks, dtype)
            for bucket in _buckets(support.sizes):
                sub = [tasks[i] for i in bucket]
                rows = _Rows([t.x_support for t in sub], [owners[i] for i in bucket], runs,
                             None if s_np is None else s_np[bucket])
                nb = rows.rows
                z = (rows.matmul_t(w1.detach()) + b1.detach()[bucket][:, None, :]).numpy()
                if cached:
                    gram = _pad([t.shared["gram"].to(dtype) for t in sub], nb, nb)
                else:
                    valid = rows.valid(dtype)
                    gram = rows.cross(rows, dtype) + valid[:, :, None] * valid[:, None, :]
                prop = _pad([t.prop_support.to(dtype) for t in sub], sub[0].prop_support.shape[0], nb, dim=1).numpy()
                masks = None
                if sub[0].inner_masks is not None:
                    masks = torch.stack([F.pad(t.inner_masks, [0, 0, 0, nb - t.inner_masks.shape[1]]) for t in sub],
                                        1).numpy()
                support_y = torch.stack([t.support_y for t in sub]).numpy()
                parts = [a[bucket] for a in (w2n, b2n, whn, bhn)]
                coef_b = np.zeros_like(z)
                with np.errstate(all="ignore"):  # divergence shows up as a non-finite loss, reported by the Trainer
                    closed_form.numpy_loop(z, gram.numpy(), prop, np.ascontiguousarray(np.swapaxes(prop, -1, -2)),
                                            np.eye(ways, dtype=z.dtype)[support_y], 1.0 / support_y.shape[1],
                                            *parts, masks, steps, lr, coef_b)
                coef[bucket, :nb] = coef_b
                for a, part in zip((w2n, b2n, whn, bhn), parts):
                    a[bucket] = part
            coef_t = torch.from_numpy(coef)
            new = {"b1": b1.detach() - lr * coef_t.sum(-2), "w2": torch.from_numpy(w2n), "b2": torch.from_numpy(b2n),
                   "wh": torch.from_numpy(whn), "bh": torch.from_numpy(bhn)}
            if materialise:
                w1_own = w1.detach() if same else w1.detach()[own]
                new["w1"] = w1_own - lr * support.tmatmul(coef_t).transpose(1, 2).to(dtype)
        # first order: the outer gradient reaches the meta-parameters through the identity
        adapted = {k: _FirstOrder.apply(adapted[k], v) if adapted[k].requires_grad else v for k, v in new.items()
                   if k != "w1"}
        if materialise:
            meta_w1 = w1 if same else w1[own]  # tasks of some runs only (others solved alone)
            adapted["w1"] = _FirstOrder.apply(meta_w1, new["w1"]) if w1.requires_grad else new["w1"]
    with torch.set_grad_enabled(train):  # the query pass, differentiable
        if materialise:
            first = adapted["w1"] if steps else (w1 if same else w1[own])
            if scale is not None:
                first = first * scale[:, None, :]
            h = _Rows([t.x_query for t in tasks], list(range(count)), count).matmul_t(first)
        else:
            h = query.matmul_t(w1)
            if coef_t is not None:  # - lr X_q X_s^T C: the inner loop's change of the first layer
                if all(t.shared is not None for t in tasks):
                    cross = _pad([t.shared["cross"].to(dtype) for t in tasks], query.rows, support.rows)
                else:
                    cross = query.cross(support, dtype)
                h = h - lr * (cross @ coef_t.to(dtype))
                for t in tasks:  # large products are recomputed rather than kept for every fixed task
                    if t.shared and t.shared["gram"].numel() + t.shared["cross"].numel() > MAX_SHARED_ENTRIES:
                        t.shared.clear()
        h = torch.relu(h + adapted["b1"][:, None, :])
        if train and tasks[0].query_mask is not None:
            h = h * _pad([t.query_mask for t in tasks], h.shape[1])
        prop_q = _pad([t.prop_query.to(dtype) for t in tasks], tasks[0].prop_query.shape[0], h.shape[1], dim=1)
        features = prop_q @ (h @ adapted["w2"].transpose(-1, -2)) + adapted["b2"][:, None, :]
        logits = features @ adapted["wh"].transpose(-1, -2) + adapted["bh"][:, None, :]
        query_y = torch.stack([t.query_y for t in tasks])

        def task_loss(lg):
            return F.cross_entropy(lg.reshape(-1, ways), query_y.reshape(-1), reduction="none").reshape(count, -1).mean(1)

        loss = task_loss(logits)
        if regulariser is not None:
            loss = loss + regulariser
        if cml is not None and (train or cml.dagger):
            co_params = {k[len("co_learner."):]: v for k, v in per_task.items() if k.startswith("co_learner.")}
            co = cml.co_learner
            co_logits = vmap(lambda p, f: functional_call(co, p, (f,)))(co_params, features)
            if train:
                loss = loss + cml.gamma * task_loss(co_logits)
            else:
                logits = co_logits
    return {"loss": loss, "logits": logits, "targets": query_y}


__all__ = ["EVAL_CHUNK", "PreparedTask", "batched_forward", "block_entries", "closed_form_adapt", "forward_alone",
           "graph_inputs", "past_gram_cap", "prepare_task", "stacked_parameters", "why_not_batched",
           "why_not_closed_form"]
