"""AMM-GNN (Wang et al. 2020): task-conditioned feature modulation before a GCN, with MAML."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gnn_cml.errors import require
from gnn_cml.meta.maml import MAML, Params
from gnn_cml.sampling.episodes import Episode


class AMMGNN(MAML):
    """MAML on a GCN whose input features are modulated per task.

    Two random sets of ``set_size`` task nodes each give, through a learned linear
    map ``R^set_size -> R`` applied to every feature column, per-feature vectors
    ``alpha`` and ``beta``. ``modulation='scalar'`` (the reference code behind the
    paper's numbers) scales the features by ``1 + scale * mean(alpha)``;
    ``'feature'`` (the AMM-GNN paper) uses ``X (1 + alpha) + beta`` feature-wise.
    The outer loss subtracts ``scale * (cos(alpha_1, alpha_2) + cos(beta_1, beta_2))``.
    Modulation parameters are meta-learned only (not adapted in the inner loop).
    Both forms are exact on episode rows: column scaling commutes with ``Â``.
    """

    def __init__(self, encoder, head, set_size: int = 10, scale: float = 0.01,
                 modulation: str = "scalar", **maml_kwargs):
        super().__init__(encoder, head, **maml_kwargs)
        require(modulation in ("scalar", "feature"), f"unknown modulation '{modulation}': use scalar or feature")
        require(modulation == "scalar" or encoder.graph is None or encoder.graph.norm == "row",
                "feature-wise AMM-GNN modulation needs the row-normalised adjacency: use --norm row")
        self.set_size, self.scale, self.modulation = set_size, scale, modulation
        self.alpha_net = nn.Linear(set_size, 1)
        self.beta_net = nn.Linear(set_size, 1)

    def _task_features(self, episode: Episode) -> torch.Tensor:
        nodes = torch.cat([episode.support, episode.query])
        pick = lambda: nodes[torch.randint(len(nodes), (self.set_size,))] if len(nodes) < self.set_size \
            else nodes[torch.randperm(len(nodes))[: self.set_size]]  # noqa: E731
        chosen = torch.stack([pick(), pick()]).reshape(-1).numpy()
        x = self.encoder.graph.x[chosen]
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        return torch.from_numpy(x.astype(np.float32)).reshape(2, self.set_size, -1)

    def condition(self, episode: Episode, params: Params, train: bool):
        rows = self._task_features(episode).transpose(1, 2)  # (2 sets, features, set_size)
        alpha = (rows @ params["alpha_net.weight"].t()).squeeze(-1) + params["alpha_net.bias"]
        beta = (rows @ params["beta_net.weight"].t()).squeeze(-1) + params["beta_net.bias"]
        similarity = F.cosine_similarity(alpha[0], alpha[1], dim=0) + F.cosine_similarity(beta[0], beta[1], dim=0)
        if self.modulation == "scalar":
            cond = {"scale": (1 + self.scale * alpha.mean()).reshape(1)}
        else:
            cond = {"scale": 1 + alpha.mean(0), "shift": beta.mean(0)}
        return cond, -self.scale * similarity
