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


MODULATIONS = ("reference", "scalar", "feature")


class AMMGNN(MAML):
    """MAML on a GCN whose input features are modulated per task.

    Two random sets of ``set_size`` task nodes (drawn without replacement from the
    support and query nodes) each give, through a learned linear map ``R^set_size -> R``
    applied to every feature column, per-feature vectors ``alpha_j`` and ``beta_j``.

    - ``modulation='reference'`` (default; the reference script behind the paper's
      Table 3): the GCN reads ``X * (1 + scale * (alpha_1 + alpha_2) / 2)``, one factor per
      feature column; ``beta`` only enters the regulariser.
    - ``'scalar'``: one factor for the whole task, ``1 + scale * mean(alpha)``.
    - ``'feature'`` (the AMM-GNN paper's FiLM form): ``X (1 + alpha) + beta`` feature-wise.

    The outer loss subtracts ``scale * (cos(alpha_1, alpha_2) + cos(beta_1, beta_2))``.
    Modulation parameters are meta-learned only (not adapted in the inner loop). Every
    form is exact on episode rows: column scaling commutes with ``Â``.
    """

    def __init__(self, encoder, head, set_size: int = 10, scale: float = 0.01,
                 modulation: str = "reference", **maml_kwargs):
        super().__init__(encoder, head, **maml_kwargs)
        require(modulation in MODULATIONS, f"unknown modulation '{modulation}': use {', '.join(MODULATIONS)}")
        require(modulation != "feature" or encoder.graph is None or encoder.graph.norm == "row",
                "feature-wise AMM-GNN modulation needs the row-normalised adjacency: use --norm row")
        self.set_size, self.scale, self.modulation = set_size, scale, modulation
        self.alpha_net = nn.Linear(set_size, 1)
        self.beta_net = nn.Linear(set_size, 1)

    @classmethod
    def config_kwargs(cls, cfg):
        return dict(super().config_kwargs(cfg), modulation=cfg.modulation)

    def node_sets(self, episode: Episode) -> torch.Tensor:
        """The two random node sets (2, set_size) of this task, from torch's default generator."""
        nodes = torch.cat([episode.support, episode.query])
        if len(nodes) < self.set_size:  # too few task nodes for a set without repeats
            return nodes[torch.randint(len(nodes), (2, self.set_size))]
        return torch.stack([nodes[torch.randperm(len(nodes))[: self.set_size]] for _ in range(2)])

    def task_features(self, episode: Episode) -> torch.Tensor:
        chosen = self.node_sets(episode).reshape(-1).cpu().numpy()
        x = self.encoder.graph.x[chosen]
        x = x.toarray() if sp.issparse(x) else np.asarray(x)
        return torch.from_numpy(x.astype(np.float32)).reshape(2, self.set_size, -1)

    def condition(self, episode: Episode, params: Params, train: bool):
        rows = self.task_features(episode).transpose(1, 2)  # (2 sets, features, set_size)
        weight = params["alpha_net.weight"]
        rows = rows.to(weight.device, weight.dtype)
        alpha = (rows @ weight.t()).squeeze(-1) + params["alpha_net.bias"]
        beta = (rows @ params["beta_net.weight"].t()).squeeze(-1) + params["beta_net.bias"]
        similarity = (F.cosine_similarity(alpha[0], alpha[1], dim=0, eps=1e-6)
                      + F.cosine_similarity(beta[0], beta[1], dim=0, eps=1e-6))
        if self.modulation == "reference":
            cond = {"scale": 1 + self.scale * alpha.mean(0)}
        elif self.modulation == "scalar":
            cond = {"scale": (1 + self.scale * alpha.mean()).reshape(1)}
        else:
            cond = {"scale": 1 + alpha.mean(0), "shift": beta.mean(0)}
        return cond, -self.scale * similarity
