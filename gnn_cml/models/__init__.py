"""Backbones (graph encoders) and heads."""
from gnn_cml.models.encoders import ENCODERS, GAT, GCN, SAGE, SGC, GraphEncoder, SubgraphGCN, build_encoder
from gnn_cml.models.graph import PreparedGraph, RowBlock, normalized_adjacency
from gnn_cml.models.heads import MLPHead

__all__ = ["ENCODERS", "GAT", "GCN", "GraphEncoder", "MLPHead", "PreparedGraph", "RowBlock", "SAGE", "SGC",
           "SubgraphGCN", "build_encoder", "normalized_adjacency"]
