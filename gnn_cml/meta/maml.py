"""MAML (Finn et al. 2017) over any ``encoder + head`` pair, stateless in the inner loop."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn
from torch.func import functional_call, grad

from gnn_cml.errors import require
from gnn_cml.meta import closed_form
from gnn_cml.meta.base import MetaLearner, TaskResult, encoder_for
from gnn_cml.models.graph import RowBlock
from gnn_cml.models.heads import MLPHead
from gnn_cml.models.init import initialise_
from gnn_cml.sampling.episodes import Episode

Params = Dict[str, torch.Tensor]
_XW = "<input product>"  # inner-loop key of the tracked X W^T (never a parameter name)


def _to(inputs, device):
    """Prepared episode inputs (row blocks, tensors, nested dicts/lists) moved to ``device``."""
    if isinstance(inputs, (RowBlock, torch.Tensor)):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: _to(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_to(v, device) for v in inputs)
    return inputs


class EncoderHead(nn.Module):
    """``head(encoder(inputs))``; graph encoders also get the conditioning and train flag."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        self._graph_style = hasattr(encoder, "prepare")

    def forward(self, inputs, cond=None, training: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._graph_style:
            features = self.encoder(inputs, cond=cond, training=training)
        else:
            features = self.encoder(inputs)
        return features, self.head(features)


def _autograd_grad(loss_fn, create_graph: bool):
    """``torch.func.grad(loss_fn)`` for a dict of tensors, through ``torch.autograd.grad``."""

    def step(params: Params) -> Params:
        with torch.enable_grad():
            params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
            grads = torch.autograd.grad(loss_fn(params), list(params.values()), create_graph=create_graph,
                                        allow_unused=True, materialize_grads=True)
        return dict(zip(params, grads))

    return step


class MAML(MetaLearner):
    """Model-agnostic meta-learning.

    The inner loop maps the meta-parameters to task parameters with ``inner_steps``
    gradient steps (``torch.autograd.grad`` on a ``functional_call``; no module is
    mutated). Second order by default: the outer gradient flows through the inner
    updates; ``first_order=True`` drops those terms. ``adapt`` names the parameter
    prefixes adapted in the inner loop (default: everything, as in the paper).

    Any encoder works: graph encoders (with ``prepare(nodes)``) get their episode
    rows built once per task; other modules receive the episode tensors directly.
    """

    adapts = True

    def __init__(self, encoder: nn.Module, head: nn.Module, inner_steps: int = 20,
                 inner_lr: float = 0.05, first_order: bool = False, test_inner_steps: Optional[int] = None,
                 adapt: Iterable[str] = ("encoder", "head"), query_eval: bool = False, task_loss=None,
                 fast_inner: bool = True):
        super().__init__(task_loss)
        require(inner_steps >= 0, f"inner steps must be >= 0, got {inner_steps}")
        require(inner_lr > 0, f"inner learning rate must be positive, got {inner_lr}")
        self.net = EncoderHead(encoder, head)
        self.inner_steps, self.inner_lr, self.first_order = int(inner_steps), float(inner_lr), first_order
        self.test_inner_steps = int(inner_steps if test_inner_steps is None else test_inner_steps)
        self.adapt_prefixes = tuple(f"net.{p}." for p in adapt)
        self.query_eval = query_eval
        self.fast_inner = fast_inner  # closed-form first-order inner loop where it applies (closed_form.py)

    @classmethod
    def from_config(cls, cfg, graph) -> "MAML":
        """The run's encoder (``cfg.backbone``) and a linear head, re-drawn by ``cfg.init``."""
        encoder = encoder_for(cfg, graph)
        learner = cls(encoder, MLPHead(encoder.out_dim, cfg.ways), **cls.config_kwargs(cfg))
        # Reference init re-draws every linear layer (encoder, head, AMM-GNN's modulation maps) from
        # the run's seed; 'torch' keeps the nn.Linear defaults drawn above.
        return initialise_(learner, cfg.init)

    @classmethod
    def config_kwargs(cls, cfg) -> Dict:
        """Constructor arguments read from the run config (beyond encoder and head)."""
        return dict(inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, first_order=cfg.first_order,
                    test_inner_steps=cfg.test_inner_steps, query_eval=cfg.query_eval)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def inputs(self, episode: Episode):
        """Parameter-free inputs for the support and query sets (episode rows for graphs), on the
        learner's device (rows are built on the CPU)."""
        prepare = getattr(self.encoder, "prepare", None)
        if prepare is None:
            return episode.support, episode.query
        support, query = prepare(episode.support), prepare(episode.query)
        device = next(self.parameters()).device
        if device.type != "cpu":
            support, query = _to(support, device), _to(query, device)
        return support, query

    def condition(self, episode: Episode, params: Params, train: bool):
        """Task conditioning computed from meta-parameters (AMM-GNN overrides it)."""
        return None, None

    def split_params(self, params: Params) -> Tuple[Params, Params]:
        adapted = {k: v for k, v in params.items() if k.startswith(self.adapt_prefixes)}
        return adapted, {k: v for k, v in params.items() if k not in adapted}

    def _net_params(self, params: Params) -> Params:
        return {k[len("net."):]: v for k, v in params.items() if k.startswith("net.")}

    def _tracked_input(self, adapted: Params, inputs, cond, steps: int) -> Optional[str]:
        """The adapted input weight ``W`` whose product ``X W^T`` the inner loop can track
        through the Gram matrix ``X X^T`` (see :meth:`adapt`), when that is cheaper."""
        name = getattr(self.encoder, "input_weight", None)
        key = f"net.encoder.{name}"
        if name is None or not steps or cond is not None or key not in adapted or not isinstance(inputs, dict) \
                or not isinstance(inputs.get("x"), RowBlock):
            return None
        rows, width = inputs["x"].shape
        hidden = adapted[key].shape[0]
        # multiplying by X costs ~4 rows*width*hidden per step; the Gram route rows*rows*(width + 4 steps hidden)
        return key if rows * (width + 4 * steps * hidden) < 4 * steps * width * hidden else None

    def adapt(self, params: Params, inputs, targets, cond=None, steps: Optional[int] = None,
              create_graph: bool = True, functional: bool = False) -> Params:
        """Return task parameters after ``steps`` inner gradient steps on (inputs, targets).

        Gradients come from ``torch.autograd.grad`` (less overhead per operation), or
        from ``torch.func.grad`` with ``functional=True``, which works inside
        ``torch.func`` transforms (the batched path's ``vmap``).

        Each step changes the input weight by ``-lr * G^T X`` (``G``: the loss gradient
        with respect to ``X W^T``), so after t steps ``X W_t^T = X W^T - lr * (X X^T) C_t``
        with ``C_t`` the sum of the ``G``. When an encoder names its ``input_weight``
        and ``X`` has far fewer rows than columns (bag-of-words features), the loop
        tracks ``X W_t^T`` this way and forms ``W_t`` once at the end: the wide rows
        are multiplied a few times per task instead of four times per step. The
        result is the same up to float rounding.
        """
        adapted, fixed = self.split_params(params)
        steps = self.inner_steps if steps is None else steps
        if not create_graph and closed_form.applies(self, adapted, inputs, cond, functional):
            dropout = self.encoder.dropout if (self.training and self.encoder.training) else 0.0
            return {**fixed, **closed_form.adapt(self, adapted, inputs, targets, cond, steps, self.inner_lr, dropout)}
        tracked = self._tracked_input(adapted, inputs, cond, steps)
        if tracked is not None:
            x = inputs["x"]
            weight = adapted.pop(tracked)
            base, gram = x.matmul(weight.t()), x.gram().to(weight.dtype)
            coef = torch.zeros_like(base)

        def support_loss(adapted_params: Params) -> torch.Tensor:
            adapted_params = dict(adapted_params)
            step_inputs = inputs if tracked is None else {**inputs, "xw": adapted_params.pop(_XW)}
            merged = self._net_params({**fixed, **adapted_params})
            _, logits = functional_call(self.net, merged, (step_inputs,), {"cond": cond, "training": True})
            return self.task_loss(logits, targets)

        step_grad = grad(support_loss) if functional else _autograd_grad(support_loss, create_graph)
        for _ in range(steps):
            if tracked is not None:
                adapted[_XW] = torch.addmm(base, gram, coef, alpha=-self.inner_lr)
            grads = step_grad(adapted)
            if not create_graph:
                grads = {k: g.detach() for k, g in grads.items()}
            if tracked is not None:
                coef = coef + grads.pop(_XW)
                del adapted[_XW]
            adapted = {k: torch.add(adapted[k], grads[k], alpha=-self.inner_lr) for k in adapted}
        if tracked is not None:
            adapted[tracked] = weight - self.inner_lr * x.tmatmul(coef).t()
        return {**fixed, **adapted}

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        device = next(self.parameters()).device
        if episode.support_y.device != device:
            episode = episode.to(device)
        support_in, query_in = self.inputs(episode)
        params = dict(self.named_parameters())
        if not train:
            params = {k: v.detach() for k, v in params.items()}
        cond, extra = self.condition(episode, params, train)
        adapted = self.adapt(params, support_in, episode.support_y, cond,
                             steps=self.inner_steps if train else self.test_inner_steps,
                             create_graph=train and not self.first_order)
        with torch.set_grad_enabled(train):
            features, logits = functional_call(
                self.net, self._net_params(adapted), (query_in,),
                {"cond": cond, "training": train and not self.query_eval})
            loss = self.task_loss(logits, episode.query_y)
        metrics = {"query_loss": float(loss.detach())}
        if extra is not None:
            metrics["regulariser"] = float(extra.detach())
            loss = loss + extra
        return TaskResult(loss, logits, episode.query_y, features, metrics)
