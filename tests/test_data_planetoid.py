"""Cora and CiteSeer from the real Planetoid files, read from a read-only data root."""
from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail
import torch
from torch_geometric.utils import is_undirected

from gnn_cml.data import graph_info, load_graph, planetoid
from gnn_cml.sampling import default_split
from gnn_cml.errors import GnnCmlError

EXPECTED = {"cora": (2708, 10556, 1433, 7), "citeseer": (3327, 9104, 3703, 6)}


def snapshot(root: Path):
    """Every path under ``root`` with its size and mtime: to prove nothing was written there."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def planetoid_root(shared_data):
    if not (shared_data / "planetoid" / "Cora" / "raw").is_dir():
        skip_or_fail(f"no Planetoid files under {shared_data / 'planetoid'}")
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
    processed = cache / "planetoid" / "Cora" / "processed" / "gnn_cml_graph.npz"
    with np.load(processed, allow_pickle=False) as f:  # plain arrays, no pickle
        assert {"x_data", "x_indices", "x_indptr", "x_shape", "edge_index", "y"} <= set(f.files)
    assert not (cache / "planetoid" / "Cora" / "raw").exists()  # raw files are read in place
    assert torch.equal(data.edge_index, again.edge_index) and torch.equal(data.x, again.x)
    assert second < max(first, 1.0)  # the second load reads the processed cache


def test_available_needs_every_raw_file(planetoid_root, tmp_path):
    assert graph_info("cora").available(planetoid_root)
    assert graph_info("citeseer").available(planetoid_root)
    partial = tmp_path / "planetoid" / "Cora" / "raw"
    partial.mkdir(parents=True)
    (partial / "ind.cora.x").symlink_to(planetoid_root / "planetoid" / "Cora" / "raw" / "ind.cora.x")
    assert not graph_info("cora").available(tmp_path)


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_same_graph_as_pyg_planetoid(planetoid_root, tmp_path, name):
    """Our restricted parse gives exactly PyG's ``Planetoid`` graph (run on a trusted writable copy)."""
    from torch_geometric.datasets import Planetoid

    folder = planetoid._PYG_NAMES[name]
    shutil.copytree(planetoid_root / "planetoid" / folder / "raw", tmp_path / "pyg" / folder / "raw")
    ref = Planetoid(str(tmp_path / "pyg"), folder)[0]
    ours = planetoid.load(planetoid_root, tmp_path / "cache", name)
    cached = planetoid.load(planetoid_root, tmp_path / "cache", name)  # from the .npz cache
    for data in (ours, cached):
        assert torch.equal(data.x, ref.x) and torch.equal(data.y, ref.y)
        assert torch.equal(data.edge_index, ref.edge_index)


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "ind.cora.x"
    bad.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(GnnCmlError, match="builtins.open|io.open") as err:
        planetoid.unpickle_raw(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_changed_raw_file_invalidates_cache(planetoid_root, tmp_path):
    """The cache is keyed on the raw files' sizes and mtimes: touching one reprocesses."""
    root = tmp_path / "root"
    shutil.copytree(planetoid_root / "planetoid" / "Cora", root / "planetoid" / "Cora")
    cache = tmp_path / "cache"
    first = planetoid.load(root, cache, "cora")
    processed = cache / "planetoid" / "Cora" / "processed" / "gnn_cml_graph.npz"
    stamp = processed.stat().st_mtime_ns
    planetoid.load(root, cache, "cora")
    assert processed.stat().st_mtime_ns == stamp  # reused
    graph = root / "planetoid" / "Cora" / "raw" / "ind.cora.graph"
    os.utime(graph, ns=(graph.stat().st_atime_ns, graph.stat().st_mtime_ns + 10 ** 9))
    again = planetoid.load(root, cache, "cora")
    assert processed.stat().st_mtime_ns != stamp  # rebuilt
    assert torch.equal(first.edge_index, again.edge_index)
    processed.write_bytes(processed.read_bytes()[:1000])  # a damaged cache is rebuilt too
    assert torch.equal(planetoid.load(root, cache, "cora").x, first.x)


def test_processing_prints_nothing(planetoid_root, tmp_path, capfd):
    planetoid.load(planetoid_root, tmp_path / "cache", "citeseer")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
