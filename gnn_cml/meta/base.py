"""What every meta-learner returns for one task, and the interface the Trainer uses."""
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

    ``train=False`` is meta-test mode (no dropout in the query pass, no second-order
    graph). ``task_loss`` turns predictions into a loss (cross-entropy or MSE).
    """

    def __init__(self, task_loss=None):
        super().__init__()
        self.task_loss = task_loss or nn.functional.cross_entropy

    def forward(self, episode: Episode, train: bool = True) -> TaskResult:  # pragma: no cover
        raise NotImplementedError

    def test_model(self) -> "MetaLearner":
        """The model used at meta-test (CML returns its base learner here)."""
        return self
