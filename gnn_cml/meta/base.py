"""The learner contract: what every meta-learner returns for one task and what it provides.

A method is declared once (:class:`gnn_cml.methods.Method`: name, defaults, options, capabilities)
and implemented by a subclass of :class:`MetaLearner`; :func:`gnn_cml.meta.factory.build_learner`
turns a run config into a learner through the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import nn

from gnn_cml.sampling.episodes import Episode


@dataclass
class TaskResult:
    """Outcome of one task: the outer objective and what CML or metrics need.

    ``loss`` is the term this task adds to the outer objective; ``logits`` are the
    query predictions; ``features`` are the *adapted* extractor's query features
    (what a CML co-learner reads); ``metrics`` are floats for logs.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    features: Optional[torch.Tensor] = None
    metrics: Dict[str, float] = field(default_factory=dict)


class MetaLearner(nn.Module):
    """A model that solves one episode: ``forward(episode, train=True) -> TaskResult``.

    What a learner provides:

    - :meth:`from_config` (classmethod): build it from the run config and the prepared graph;
      the caller seeds torch's generator first and adds CML's co-learner afterwards when the run
      asks for it and the method declares ``cml=True``.
    - :meth:`forward`: one task's loss (the outer objective's term), query logits, and the query
      features a co-learner reads (``None`` if it has none). ``train=False`` is meta-test mode
      (no dropout in the query pass, no second-order graph).
    - :meth:`test_model`: the model evaluated at meta-test (CML returns its base learner here);
      :meth:`plan` (optional): a line saying what a run does, when that is not meta-training.
    - ``adapts``: True when ``forward`` adapts the weights in an inner loop (CML needs one).
    - a method declared with ``meta_trained=False`` also provides ``fit(task, run_dir, seed,
      resume=False, progress=True, log_name="", files=None) -> dict`` (fields merged into the run's
      record; what it fits is read and written under ``run_dir`` through ``files``, a
      :class:`~gnn_cml.engine.checkpoint.RunFiles` the experiment passes) and ``evaluate(tasks) ->
      [accuracy per task]``, instead of being trained by the Trainer.

    Args:
        task_loss: turns predictions into a loss (default: cross-entropy; MSE for regression).

    Example::

        from gnn_cml.meta.base import MetaLearner, TaskResult, encoder_for
        from gnn_cml.models.heads import MLPHead

        class HeadOnly(MetaLearner):
            @classmethod
            def from_config(cls, cfg, graph):
                return cls(encoder_for(cfg, graph), cfg.ways)

            def __init__(self, encoder, ways):
                super().__init__()
                self.encoder, self.head = encoder, MLPHead(encoder.out_dim, ways)

            def forward(self, episode, train=True):
                q = self.encoder(self.encoder.prepare(episode.query), training=train)
                logits = self.head(q)
                return TaskResult(self.task_loss(logits, episode.query_y), logits, episode.query_y, q)
    """

    adapts: bool = False

    def __init__(self, task_loss=None):
        super().__init__()
        self.task_loss = task_loss or nn.functional.cross_entropy

    @classmethod
    def from_config(cls, cfg, graph) -> "MetaLearner":
        """Build the learner of run config ``cfg`` on ``graph`` (a :class:`~gnn_cml.models.graph.PreparedGraph`).

        Args:
            cfg: the resolved :class:`~gnn_cml.config.RunConfig` (``cfg.option(name)`` reads the
                method's own options).
            graph: the run's prepared graph (features, normalised adjacency).
        """
        raise NotImplementedError(f"{cls.__name__} does not implement from_config(cfg, graph)")

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse, with a one-line :class:`~gnn_cml.errors.GnnCmlError`, a config this learner cannot
        run, before any file is written (default: accept)."""

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:  # pragma: no cover
        raise NotImplementedError

    def test_model(self) -> "MetaLearner":
        """The model used at meta-test (CML returns its base learner here)."""
        return self

    def plan(self) -> Optional[str]:
        """What each run does, for the experiment's header line, when the Trainer's episode budget does
        not describe it (e.g. a learner without meta-training); None: the default header."""
        return None


def encoder_for(cfg, graph, **extra) -> nn.Module:
    """The run's graph encoder (``cfg.backbone``, ``hidden``, ``layers``, ``dropout``, ...) bound to ``graph``.

    Args:
        cfg: the run config.
        graph: the prepared graph.
        extra: further keyword arguments of the encoder.
    """
    from gnn_cml.models.encoders import build_encoder

    kwargs = dict(hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout, **extra)
    if cfg.backbone != "sgc":  # SGC's single layer keeps its own (linear) activation
        kwargs["out_activation"] = cfg.out_activation
    if cfg.backbone == "subgraph_gcn":
        kwargs["pool"] = cfg.pool
    return build_encoder(cfg.backbone, graph.num_features, **kwargs).bind(graph)
