"""Graph datasets as PyG ``Data``: registry and loaders (class splits: :mod:`gnn_cml.sampling`)."""
from __future__ import annotations

from gnn_cml.data.paths import cache_root, data_root
from gnn_cml.data.registry import GRAPHS, GraphInfo, graph_info, list_graphs, load_graph

__all__ = ["GRAPHS", "GraphInfo", "cache_root", "data_root", "graph_info", "list_graphs", "load_graph"]
