"""Heads: the meta-learner's linear classifier ``theta`` and the CML co-learner ``phi``."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from gnn_cml.errors import require


class MLPHead(nn.Module):
    """``Linear -> ReLU -> ... -> Linear``; with no hidden layers, a single linear layer.

    Inputs with more than two dimensions (conv feature maps) are flattened first.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = ()):
        super().__init__()
        require(out_dim > 0 and in_dim > 0, f"head sizes must be positive, got {in_dim} -> {out_dim}")
        dims = [in_dim, *hidden, out_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(nn.Flatten(), *layers)

    def forward(self, features):
        return self.net(features)
