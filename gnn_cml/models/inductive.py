"""Which part of the graph each phase of a run sees: the transductive and inductive settings.

``transductive`` (the default, as every published number of the field's table): meta-training,
pretraining, validation and test all run on the whole graph; only labels are hidden.

``inductive`` (as the inductive linear-probing study, Mathavan, Tan et al. 2023):

- ``train`` (meta-training episodes, TLP pretraining): the subgraph induced by the nodes whose
  label is a training class;
- ``val`` (validation tasks, early stopping): the subgraph induced by the nodes of the training
  and validation classes;
- ``test`` (the fixed test tasks): the whole graph, with the trained weights (nothing retrained).

Nodes of no listed class (unlabelled nodes, classes outside the split) count as unseen: they
appear only at test. A restricted graph keeps the node ids of the whole graph, so episodes,
samplers and checkpoints need no remapping; an unseen node is left with no edge and zero features,
so no message reaches a seen node from it and every quantity computed on seen nodes (``Â`` and its
degrees included) is that of the induced subgraph. Whole-graph computations (TLP's pretraining)
take the seen rows only (:attr:`PreparedGraph.visible`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.data import Data

from gnn_cml.errors import require
from gnn_cml.models.graph import PreparedGraph, to_scipy_features

SETTINGS = ("transductive", "inductive")
PHASES = ("train", "val", "test")


def nodes_of(y, classes: Sequence[int]) -> np.ndarray:
    """Sorted ids of the nodes whose label is one of ``classes``."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    return np.flatnonzero(np.isin(y, np.asarray(list(classes), dtype=np.int64)))


def restricted_graph(data: Data, nodes: np.ndarray, norm: str = "row") -> PreparedGraph:
    """``data`` restricted to ``nodes``: the other nodes keep their ids but lose their features and
    every edge (see the module docstring); ``visible`` records ``nodes``."""
    n = int(data.num_nodes)
    seen = np.zeros(n, dtype=bool)
    seen[nodes] = True
    edge_index = data.edge_index.cpu()
    keep = torch.from_numpy(seen)[edge_index[0]] & torch.from_numpy(seen)[edge_index[1]]
    x = to_scipy_features(data.x)
    mask = sp.diags(seen.astype(np.float32))
    x = mask.dot(x).tocsr() if sp.issparse(x) else x * seen[:, None].astype(np.float32)
    if sp.issparse(x):
        x.eliminate_zeros()
        x = torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)),
                                    torch.from_numpy(x.indices.astype(np.int64)),
                                    torch.from_numpy(x.data.astype(np.float32)), x.shape)
    else:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    restricted = Data(x=x, edge_index=edge_index[:, keep], num_nodes=n)
    if getattr(data, "y", None) is not None:  # labels of the seen nodes only (unseen: -1), for learners that
        y = data.y.clone()                     # bind the training classes' labelled nodes (TENT)
        y[torch.from_numpy(~seen)] = -1
        restricted.y = y
    if "num_classes" in data:
        restricted.num_classes = data.num_classes
    graph = PreparedGraph(restricted, norm=norm)
    graph.visible = np.asarray(nodes, dtype=np.int64)
    return graph


def bind_graph(module: nn.Module, graph: PreparedGraph) -> None:
    """Point every part of ``module`` that reads a graph (``bind(graph)``: graph encoders, TLP) at
    ``graph``; the weights are untouched."""
    for part in module.modules():
        if callable(getattr(part, "bind", None)):
            part.bind(graph)


@dataclass
class PhaseGraphs:
    """The graph each phase of a run sees (one object for all three in the transductive setting)."""

    setting: str
    train: PreparedGraph
    val: PreparedGraph
    test: PreparedGraph
    classes: Dict[str, Sequence[int]]

    @classmethod
    def build(cls, data: Data, full: PreparedGraph, setting: str, train_classes: Sequence[int],
              val_classes: Sequence[int]) -> "PhaseGraphs":
        """The phases' graphs of ``data`` (``full``: its :class:`PreparedGraph`) in ``setting``."""
        require(setting in SETTINGS, f"unknown setting '{setting}': use {' or '.join(SETTINGS)}")
        classes = {"train": list(train_classes), "val": list(train_classes) + list(val_classes), "test": None}
        if setting == "transductive":
            return cls(setting, full, full, full, classes)
        train = restricted_graph(data, nodes_of(data.y, classes["train"]), full.norm)
        val = restricted_graph(data, nodes_of(data.y, classes["val"]), full.norm)
        return cls(setting, train, val, full, classes)

    def __getitem__(self, phase: str) -> PreparedGraph:
        require(phase in PHASES, f"unknown phase '{phase}': use {', '.join(PHASES)}")
        return getattr(self, phase)

    @contextmanager
    def during(self, learner: nn.Module, phase: str, after: str = "train") -> Iterator[None]:
        """``learner`` bound to ``phase``'s graph inside the block, to ``after``'s when it ends
        (nothing to do in the transductive setting)."""
        if self[phase] is self[after]:
            yield
            return
        bind_graph(learner, self[phase])
        try:
            yield
        finally:
            bind_graph(learner, self[after])

    def describe(self) -> Dict:
        """What each phase sees (written to ``split.json``)."""
        def counts(graph: PreparedGraph, classes: Optional[Sequence[int]]) -> Dict:
            seen = graph.visible
            off = graph.adj.tocoo()
            edges = int((off.row != off.col).sum())  # directed entries of A, self-loops left out
            return {"classes": "all" if classes is None else [int(c) for c in classes],
                    "nodes": int(graph.num_nodes if seen is None else len(seen)), "directed_edges": edges}

        if self.setting == "transductive":
            whole = counts(self.test, None)
            return {"setting": self.setting, "phases": {p: whole for p in PHASES},
                    "setting_description": "every phase (meta-training, pretraining, validation, test) sees the "
                                           "whole graph's nodes, features and edges; only labels outside the "
                                           "phase's classes are hidden"}
        return {"setting": self.setting,
                "phases": {"train": counts(self.train, self.classes["train"]),
                           "val": counts(self.val, self.classes["val"]), "test": counts(self.test, None)},
                "setting_description": "meta-training and pretraining see the subgraph induced by the training "
                                       "classes' nodes; validation (early stopping) the subgraph induced by the "
                                       "training and validation classes' nodes; test tasks the whole graph, with "
                                       "the trained weights"}
