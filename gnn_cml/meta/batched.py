"""A meta-batch of graph tasks as one computation: ``torch.func.vmap`` over the inner loop.

Every task's parameter-free row blocks are zero-padded to the meta-batch's largest
shape and stacked. Padding is exact for the row-block encoders (GCN, SGC, subgraph
GCN): a padded input row only ever meets zero columns of the next ``Â`` or pooling
block, so it changes no output row and receives no gradient.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from gnn_cml.errors import GnnCmlError, require
from gnn_cml.meta.base import MetaLearner
from gnn_cml.meta.cml import CML
from gnn_cml.meta.maml import MAML
from gnn_cml.models.graph import RowBlock
from gnn_cml.sampling.episodes import Episode


def _flatten(inputs, leaves: List[torch.Tensor]):
    """Replace every row block by its leaf index (its dense matrix goes to ``leaves``)."""
    if isinstance(inputs, RowBlock):
        leaves.append(inputs.to_dense())
        return len(leaves) - 1
    if isinstance(inputs, dict):
        return {k: _flatten(v, leaves) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [_flatten(v, leaves) for v in inputs]
    raise TypeError(type(inputs).__name__)


def _unflatten(spec, leaves: Sequence[torch.Tensor]):
    if isinstance(spec, int):
        return RowBlock(dense=leaves[spec], shape=tuple(leaves[spec].shape))
    if isinstance(spec, dict):
        return {k: _unflatten(v, leaves) for k, v in spec.items()}
    return [_unflatten(v, leaves) for v in spec]


def _stack_padded(per_task: List[List[torch.Tensor]]) -> List[torch.Tensor]:
    """Stack each leaf over tasks, zero-padding every dimension to the largest."""
    stacked = []
    for leaf in zip(*per_task):
        shape = [max(t.shape[d] for t in leaf) for d in range(leaf[0].dim())]
        pads = [F.pad(t, [p for d in reversed(range(t.dim())) for p in (0, shape[d] - t.shape[d])]) for t in leaf]
        stacked.append(torch.stack(pads))
    return stacked


def _batched_inputs(learner: MAML, episodes: Sequence[Episode], part: str) -> Tuple[object, List[torch.Tensor]]:
    specs, leaves = [], []
    for episode in episodes:
        task_leaves: List[torch.Tensor] = []
        prepared = learner.encoder.prepare(getattr(episode, part))
        try:
            specs.append(_flatten(prepared, task_leaves))
        except TypeError:
            raise GnnCmlError(f"batched tasks need a row-block encoder (gcn, sgc, subgraph_gcn), not "
                              f"{type(learner.encoder).__name__}: loop over the tasks instead") from None
        leaves.append(task_leaves)
    return specs[0], _stack_padded(leaves)


def batched_maml_loss(learner: MetaLearner, episodes: Sequence[Episode]) -> torch.Tensor:
    """Mean meta-training loss of ``episodes``, equal to averaging ``learner(ep).loss``.

    ``learner`` is a :class:`MAML` on a row-block graph encoder, optionally wrapped
    by :class:`CML`. The inner loops of all tasks run as one vectorised computation
    (second order unless the learner is first order); ``backward()`` on the result
    gives the meta-gradient. Dropout masks are drawn per task but not from the
    same random stream as a loop over the tasks.
    """
    cml = learner if isinstance(learner, CML) else None
    base = cml.learner if cml else learner
    require(isinstance(base, MAML) and type(base).condition is MAML.condition,
            f"batched tasks support MAML (optionally with CML), not {type(base).__name__}: loop over the tasks")
    require(len(episodes) > 0, "a meta-batch needs at least one task")
    require(hasattr(base.encoder, "prepare"), "batched tasks need a graph encoder with episode row blocks")
    support_spec, support = _batched_inputs(base, episodes, "support")
    query_spec, query = _batched_inputs(base, episodes, "query")
    support_y = torch.stack([e.support_y for e in episodes])
    query_y = torch.stack([e.query_y for e in episodes])
    params = dict(base.named_parameters())
    create_graph = not base.first_order

    def task_loss(support_leaves, query_leaves, s_y, q_y):
        adapted = base.adapt(params, _unflatten(support_spec, support_leaves), s_y, create_graph=create_graph,
                             functional=True)
        features, logits = functional_call(base.net, base._net_params(adapted), (_unflatten(query_spec, query_leaves),),
                                           {"training": not base.query_eval})
        loss = base.task_loss(logits, q_y)
        if cml is not None:
            loss = loss + cml.gamma * cml.task_loss(cml.co_learner(features), q_y)
        return loss

    losses = vmap(task_loss, randomness="different")(support, query, support_y, query_y)
    return losses.mean()


__all__ = ["batched_maml_loss"]
