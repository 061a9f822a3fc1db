"""Cora and CiteSeer from the real Planetoid files, read from a read-only data root."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from torch_geometric.utils import is_undirected

from gnn_cml.data import default_split, graph_info, load_graph

EXPECTED = {"cora": (2708, 10556, 1433, 7), "citeseer": (3327, 9104, 3703, 6)}


def snapshot(root: Path):
    """Every path under ``root`` with its size and mtime: to prove nothing was written there."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def planetoid_root(shared_data):
    if not (shared_data / "planetoid" / "Cora" / "raw").is_dir():
        pytest.skip(f"no Planetoid files under {shared_data / 'planetoid'}")
    return shared_data


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_real_counts_and_canonical_edges(planetoid_root, name):
    data = load_graph(name, root=planetoid_root)
    nodes, edges, features, classes = EXPECTED[name]
    assert (data.num_nodes, data.edge_index.shape[1], data.x.shape[1], data.num_classes) == \
        (nodes, edges, features, classes)
    assert data.x.shape == (nodes, features) and data.x.dtype == torch.float32
    assert data.y.shape == (nodes,) and int(data.y.min()) == 0
    ei = data.edge_index
    assert is_undirected(ei, num_nodes=nodes)
    assert not bool((ei[0] == ei[1]).any()), "self-loops left in"
    assert torch.unique(ei[0] * nodes + ei[1]).numel() == edges, "duplicate edges"
    info = graph_info(name)
    assert (info.nodes, info.edges, info.features, info.classes) == EXPECTED[name]
    split = default_split(data)
    assert tuple(map(len, (split.train, split.val, split.test))) == info.split


def test_read_only_root_is_untouched(planetoid_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    before = snapshot(planetoid_root / "planetoid")
    start = time.perf_counter()
    data = load_graph("Cora", root=planetoid_root)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = load_graph("cora", root=planetoid_root)
    second = time.perf_counter() - start
    assert snapshot(planetoid_root / "planetoid") == before
    assert (cache / "planetoid" / "Cora" / "processed").is_dir()
    assert os.path.samefile(cache / "planetoid" / "Cora" / "raw" / "ind.cora.graph",
                            planetoid_root / "planetoid" / "Cora" / "raw" / "ind.cora.graph")
    assert torch.equal(data.edge_index, again.edge_index) and torch.equal(data.x, again.x)
    assert second < max(first, 1.0)  # the second load reads the processed cache


def test_available_needs_every_raw_file(planetoid_root, tmp_path):
    assert graph_info("cora").available(planetoid_root)
    assert graph_info("citeseer").available(planetoid_root)
    partial = tmp_path / "planetoid" / "Cora" / "raw"
    partial.mkdir(parents=True)
    (partial / "ind.cora.x").symlink_to(planetoid_root / "planetoid" / "Cora" / "raw" / "ind.cora.x")
    assert not graph_info("cora").available(tmp_path)
