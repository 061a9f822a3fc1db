"""Cooperative Meta-Learning (Shin et al., UAI 2024) as a thin wrapper over a gradient learner."""
from __future__ import annotations

import torch
from torch import nn

from gnn_cml.errors import require
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.sampling.episodes import Episode


class CML(MetaLearner):
    """Adds a co-learner ``phi`` whose query loss on the *adapted* features joins the outer loss.

    ``phi`` is never adapted in the inner loop; its gradient reaches the shared
    extractor through the inner updates (gradient augmentation) with weight
    ``gamma``. At meta-test the co-learner is dropped (:meth:`test_model` returns
    the base learner), unless ``dagger=True`` (CML-dagger: predict with ``phi`` on
    the adapted extractor). ``gamma = 0`` trains exactly the base learner.
    """

    adapts = True

    def __init__(self, learner: MetaLearner, co_learner: nn.Module, gamma: float = 0.2, dagger: bool = False):
        super().__init__(learner.task_loss)
        require(learner.adapts, f"CML needs a gradient-based learner with an inner loop; {type(learner).__name__} "
                                f"has none (its class sets adapts = False)")
        require(gamma >= 0, f"gamma must be >= 0, got {gamma}")
        self.learner, self.co_learner = learner, co_learner
        self.gamma, self.dagger = float(gamma), dagger

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:
        result = self.learner(episode, train)
        with torch.set_grad_enabled(train):
            co_logits = self.co_learner(result.features)
            co_loss = self.task_loss(co_logits, result.targets)
        metrics = dict(result.metrics, co_loss=float(co_loss.detach()))
        logits = co_logits if (self.dagger and not train) else result.logits
        loss = result.loss + self.gamma * co_loss if train else result.loss
        return TaskResult(loss, logits, result.targets, result.features, metrics)

    def test_model(self) -> MetaLearner:
        return self if self.dagger else self.learner.test_model()
