"""Loaders for every upstream format, on real GPN files and on tiny files in the exact layouts."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import scipy.sparse as sp
import torch
from torch_geometric.utils import is_undirected

from gnn_cml.data import graph_info, load_graph
from gnn_cml.sampling import default_split
from gnn_cml.data import gpn, ogb_datasets
from gnn_cml.data.user_graph import load_npz_graph
from gnn_cml.errors import GnnCmlError

CLOTHING = ("Amazon_clothing_network", "Amazon_clothing_test.mat")


def snapshot(root: Path):
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def make_read_only(root: Path, inside: Path) -> None:
    """Drop write permission on ``root`` and everything in it. ``root`` must lie in the test's
    temporary folder ``inside``, and a symlink is refused rather than followed: its target may be
    the user's own data (the real data root is never chmod-ed)."""
    root = Path(root)
    assert root.resolve().is_relative_to(Path(inside).resolve()), f"{root} is outside {inside}"
    for p in [root, *root.rglob("*")]:
        assert not p.is_symlink(), f"{p} is a symlink: copy the file into the temporary folder instead"
        p.chmod(p.lstat().st_mode & ~0o222)


def to_scipy(x: torch.Tensor) -> sp.csr_matrix:
    assert x.layout == torch.sparse_csr
    return sp.csr_matrix((x.values().numpy(), x.col_indices().numpy(), x.crow_indices().numpy()),
                         shape=tuple(x.shape))


# --------------------------------------------------------------------------- GPN (real files)

@pytest.fixture(scope="module")
def gpn_real(shared_data):
    folder = shared_data / "gpn"
    if not all((folder / f).is_file() for f in CLOTHING):
        skip_or_fail(f"real GPN files {CLOTHING} not under {folder}")
    return folder


@pytest.fixture(scope="module")
def clothing_train_mat(gpn_real, tmp_path_factory) -> Path:
    """``Amazon_clothing_train.mat`` in the upstream format: the other nodes, the other 57 classes."""
    test = scipy.io.loadmat(str(gpn_real / "Amazon_clothing_test.mat"))
    num_nodes, num_features = 24919, test["Attributes"].shape[1]
    test_classes = np.unique(test["Label"]).astype(np.int64)
    train_classes = np.setdiff1d(np.arange(77), test_classes)
    index = np.setdiff1d(np.arange(num_nodes), test["Index"].ravel())
    rng = np.random.default_rng(0)
    label = rng.permutation(train_classes[np.arange(len(index)) % len(train_classes)])
    rows = np.repeat(np.arange(len(index)), 18)  # ~18 words per node, counts as upstream
    cols = rng.integers(0, num_features, len(rows))
    attributes = sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(index), num_features))
    path = tmp_path_factory.mktemp("gpn_train") / "Amazon_clothing_train.mat"
    scipy.io.savemat(str(path), {"Index": index[None, :].astype(np.int64),
                                 "Attributes": attributes,
                                 "Label": label[:, None].astype(np.float64)})
    return path


def gpn_root(tmp_path: Path, real: Path, train: Path = None) -> Path:
    """A data root in ``tmp_path`` holding copies (never links) of the real GPN files, so tests may
    chmod, truncate or replace them without touching the real data root."""
    folder = tmp_path / "root" / "gpn"
    folder.mkdir(parents=True)
    for name in CLOTHING:
        shutil.copy2(real / name, folder / name)
    if train is not None:
        shutil.copy2(train, folder / train.name)
    return tmp_path / "root"


def test_gpn_parsers_on_real_upstream_files(gpn_real):
    edges = gpn.read_network(gpn_real / "Amazon_clothing_network")
    assert edges.shape == (2, 183360)
    assert int(edges.max()) + 1 == 24919
    pairs = set(zip(edges[0].tolist(), edges[1].tolist()))
    assert len(pairs) == 183360 and all((b, a) in pairs for a, b in pairs)  # both directions listed
    assert len({(min(p), max(p)) for p in pairs}) == 91680
    index, label, attributes = gpn.read_mat(gpn_real / "Amazon_clothing_test.mat")
    assert index.shape == (9360,) and len(np.unique(index)) == 9360
    assert len(np.unique(label)) == 20
    assert attributes.shape == (9360, 9034) and attributes.format == "csr"
    electronics = gpn.read_network(gpn_real / "Amazon_eletronics_network")
    assert electronics.shape == (2, 87112) and int(electronics.max()) + 1 == 42318


def test_gpn_end_to_end_with_generated_train_file(gpn_real, clothing_train_mat, tmp_path, monkeypatch,
                                                  no_network):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    root = gpn_root(tmp_path, gpn_real, clothing_train_mat)
    assert graph_info("amazon_clothing").available(root)
    data = load_graph("amazon_clothing", root=root)
    info = graph_info("amazon_clothing")
    assert data.num_nodes == info.nodes == 24919
    assert data.edge_index.shape[1] == info.edges == 183360
    assert is_undirected(data.edge_index, num_nodes=data.num_nodes)
    assert data.x.layout == torch.sparse_csr and tuple(data.x.shape) == (24919, 9034)
    assert data.num_classes == info.classes == 77 and int(data.y.min()) == 0

    index, label, attributes = gpn.read_mat(gpn_real / "Amazon_clothing_test.mat")
    x = to_scipy(data.x)
    assert (x[index] != attributes).nnz == 0  # features land on the upstream node ids
    assert torch.equal(data.y[torch.from_numpy(index)], torch.from_numpy(label))
    assert data.test_classes.tolist() == np.unique(label).tolist()
    assert len(data.train_classes) == 57 and not set(data.train_classes.tolist()) & set(label.tolist())

    split = default_split(data, seed=3)
    assert list(split.test) == data.test_classes.tolist()
    assert (len(split.train), len(split.val), len(split.test)) == info.split == (40, 17, 20)
    assert set(split.train) | set(split.val) == set(data.train_classes.tolist())

    processed = cache / "gpn" / "processed" / "Amazon_clothing.npz"
    with np.load(processed, allow_pickle=False) as f:  # plain arrays, no pickle
        assert int(f["x_shape"][0]) == 24919
    again = load_graph("amazon_clothing", root=root)
    assert torch.equal(again.edge_index, data.edge_index) and torch.equal(again.y, data.y)
    assert torch.equal(again.x.values(), data.x.values())


def test_gpn_missing_train_file_offline_names_it(gpn_real, tmp_path, no_network):
    root = gpn_root(tmp_path, gpn_real)
    assert not graph_info("amazon_clothing").available(root)
    with pytest.raises(GnnCmlError) as err:
        load_graph("amazon_clothing", root=root)
    message = str(err.value)
    assert "Amazon_clothing_train.mat" in message and str(root / "gpn") in message
    assert "\n" not in message
    assert not (root / "gpn" / "Amazon_clothing_train.mat.part").exists()


def test_gpn_download_goes_to_cache_for_read_only_root(gpn_real, clothing_train_mat, tmp_path,
                                                       monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    root = gpn_root(tmp_path, gpn_real)
    make_read_only(root, tmp_path)
    before = snapshot(root)
    urls = []

    def fake_download(url, folder, filename=None, log=True):
        urls.append(url)
        shutil.copyfile(clothing_train_mat, Path(folder) / filename)

    monkeypatch.setattr(gpn, "download_url", fake_download)
    data = load_graph("amazon_clothing", root=root)
    assert urls == [gpn.URL.format("Amazon_clothing_train.mat")]
    assert (cache / "gpn" / "Amazon_clothing_train.mat").is_file()
    assert snapshot(root) == before and data.num_nodes == 24919


def test_gpn_corrupt_download_is_rejected(gpn_real, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "gpn").mkdir(parents=True)

    def bad_download(url, folder, filename=None, log=True):
        Path(folder, filename).write_bytes(b"<html>rate limited</html>")

    monkeypatch.setattr(gpn, "download_url", bad_download)
    with pytest.raises(GnnCmlError, match="size/sha256"):
        load_graph("amazon_clothing", root=root)
    assert not any((root / "gpn").iterdir())  # nothing half-downloaded is kept


def test_gpn_truncated_files(gpn_real, clothing_train_mat, tmp_path):
    root = gpn_root(tmp_path, gpn_real, clothing_train_mat)
    test_mat = root / "gpn" / "Amazon_clothing_test.mat"
    test_mat.unlink()
    data = (gpn_real / "Amazon_clothing_test.mat").read_bytes()
    test_mat.write_bytes(data[: len(data) // 2])
    with pytest.raises(GnnCmlError, match="truncated or corrupt; delete it") as err:
        load_graph("amazon_clothing", root=root)
    assert str(test_mat) in str(err.value)

    train_mat = root / "gpn" / "Amazon_clothing_train.mat"
    train_mat.unlink()
    train_mat.write_bytes(clothing_train_mat.read_bytes()[:5000])
    test_mat.unlink()
    shutil.copy2(gpn_real / "Amazon_clothing_test.mat", test_mat)
    with pytest.raises(GnnCmlError, match="truncated or corrupt") as err:
        load_graph("amazon_clothing", root=root)
    assert str(train_mat) in str(err.value) and "delete it" in str(err.value)


# --------------------------------------------------------------------------- PyG npz archives

def write_gnn_benchmark_npz(path: Path, num_nodes=12, num_features=9, classes=3, seed=0):
    """An archive laid out like graph2gauss / shchur gnn-benchmark files (with pickled extras)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, 30)
    dst = rng.integers(0, num_nodes, 30)
    adj = sp.csr_matrix((np.ones(30, np.float32), (src, dst)), shape=(num_nodes, num_nodes))
    attr = sp.random(num_nodes, num_features, density=0.3, format="csr", random_state=seed,
                     data_rvs=lambda k: rng.integers(1, 4, k).astype(np.float32))
    labels = np.arange(num_nodes) % classes
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr,
             adj_shape=np.array(adj.shape), attr_data=attr.data, attr_indices=attr.indices,
             attr_indptr=attr.indptr, attr_shape=np.array(attr.shape), labels=labels,
             node_names=np.array([f"n{i}" for i in range(num_nodes)]),
             idx_to_class=np.array({i: f"class {i}" for i in range(classes)}, dtype=object))
    return adj, attr, labels


def expected_edges(adj: sp.csr_matrix) -> set:
    coo = adj.tocoo()
    pairs = {(int(a), int(b)) for a, b in zip(coo.row, coo.col) if a != b}
    return pairs | {(b, a) for a, b in pairs}


@pytest.mark.parametrize("name, raw", [
    ("corafull", "citationfull/cora/raw/cora.npz"),
    ("amazon_computers", "amazon/Computers/raw/amazon_electronics_computers.npz"),
    ("coauthor_cs", "coauthor/CS/raw/ms_academic_cs.npz"),
    ("amazon_computers", "Computers/raw/amazon_electronics_computers.npz"),  # PyG's own layout
])
def test_pyg_npz_layouts_load_offline(name, raw, tmp_path, no_network):
    adj, attr, labels = write_gnn_benchmark_npz(tmp_path / raw)
    assert graph_info(name).available(tmp_path)
    data = load_graph(name, root=tmp_path)
    assert data.x.layout == torch.strided and data.x.shape == attr.shape
    assert torch.equal(data.x, torch.from_numpy((attr.toarray() > 0).astype(np.float32)))
    assert torch.equal(data.y, torch.from_numpy(labels))
    assert set(zip(*data.edge_index.tolist())) == expected_edges(adj)


def test_pyg_wide_features_stay_sparse(tmp_path, monkeypatch):
    from gnn_cml.data import source

    monkeypatch.setattr(source, "DENSE_LIMIT_BYTES", 100)
    _, attr, _ = write_gnn_benchmark_npz(tmp_path / "citationfull/cora/raw/cora.npz")
    data = load_graph("corafull", root=tmp_path)
    assert data.x.layout == torch.sparse_csr
    assert (to_scipy(data.x) != (attr > 0).astype(np.float32)).nnz == 0
    # CoraFull's real size would be 690 MB dense: it must take the sparse path.
    info = graph_info("corafull")
    assert info.nodes * info.features * 4 > 100 * 2 ** 20 * 6  # the dense limit (source.DENSE_LIMIT_BYTES)


def test_pyg_read_only_root_and_stale_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    roots = []
    for seed, n in ((0, 12), (1, 15)):
        root = tmp_path / f"root{seed}"
        write_gnn_benchmark_npz(root / "coauthor/CS/raw/ms_academic_cs.npz", num_nodes=n, seed=seed)
        make_read_only(root, tmp_path)
        roots.append((root, snapshot(root), n))
    for root, before, n in roots:  # one cache, two data roots: the second must not reuse the first
        data = load_graph("coauthor_cs", root=root)
        assert data.num_nodes == n
        assert snapshot(root) == before
    assert (cache / "coauthor" / "CS" / "processed" / "gnn_cml_graph.npz").is_file()


def test_pyg_truncated_npz(tmp_path):
    path = tmp_path / "amazon/Computers/raw/amazon_electronics_computers.npz"
    write_gnn_benchmark_npz(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(GnnCmlError, match="truncated or corrupt") as err:
        load_graph("amazon_computers", root=tmp_path)
    assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_pyg_missing_offline(tmp_path, no_network):
    with pytest.raises(GnnCmlError) as err:
        load_graph("corafull", root=tmp_path)
    message = str(err.value)
    assert "graph2gauss" in message and str(tmp_path / "citationfull" / "cora" / "raw") in message


# --------------------------------------------------------------------------- OGB folder layout

def write_csv_gz(path: Path, rows: np.ndarray, fmt: str) -> None:
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, rows, fmt=fmt, delimiter=",")


def write_ogb_arxiv(root: Path, num_nodes=20, num_edges=40, seed=0):
    """``<root>/ogbn_arxiv`` as OGB's arxiv.zip unpacks it."""
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_arxiv"
    (folder / "raw").mkdir(parents=True)
    (folder / "split" / "time").mkdir(parents=True)
    (folder / "RELEASE_v1.txt").write_text("ogbn-arxiv v1\n")
    edges = rng.integers(0, num_nodes, (num_edges, 2))
    feats = rng.normal(size=(num_nodes, 128)).astype(np.float32)
    labels = rng.integers(0, 5, (num_nodes, 1))
    write_csv_gz(folder / "raw" / "edge.csv.gz", edges, "%d")
    write_csv_gz(folder / "raw" / "node-feat.csv.gz", feats, "%.6f")
    write_csv_gz(folder / "raw" / "node-label.csv.gz", labels, "%d")
    write_csv_gz(folder / "raw" / "node_year.csv.gz", rng.integers(2000, 2020, (num_nodes, 1)), "%d")
    write_csv_gz(folder / "raw" / "num-node-list.csv.gz", np.array([[num_nodes]]), "%d")
    write_csv_gz(folder / "raw" / "num-edge-list.csv.gz", np.array([[num_edges]]), "%d")
    for part, ids in zip(("train", "valid", "test"), np.array_split(np.arange(num_nodes), 3)):
        write_csv_gz(folder / "split" / "time" / f"{part}.csv.gz", ids[:, None], "%d")
    return edges, feats, labels[:, 0]


def test_ogb_layout_loads_offline_without_prompting(tmp_path, monkeypatch, no_network):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("OGB prompted for input"))
    edges, feats, labels = write_ogb_arxiv(tmp_path / "root")
    root = tmp_path / "root"
    make_read_only(root, tmp_path)
    before = snapshot(root)
    assert graph_info("arxiv").available(root)
    data = load_graph("ogbn-arxiv", root=root)
    assert data.num_nodes == 20 and data.x.dtype == torch.float32
    assert torch.allclose(data.x, torch.from_numpy(feats), atol=1e-6)
    assert torch.equal(data.y, torch.from_numpy(labels))
    pairs = {(int(a), int(b)) for a, b in edges if a != b}
    assert set(zip(*data.edge_index.tolist())) == pairs | {(b, a) for a, b in pairs}
    assert snapshot(root) == before
    processed = cache / "ogbn_arxiv" / "processed" / "gnn_cml_graph.npz"
    with np.load(processed, allow_pickle=False) as f:
        assert f["x"].shape == (20, 128)
    assert torch.equal(load_graph("arxiv", root=root).x, data.x)


def test_ogb_missing_offline(tmp_path, no_network):
    with pytest.raises(GnnCmlError) as err:
        load_graph("ogbn_arxiv", root=tmp_path)
    message = str(err.value)
    assert "snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip" in message
    assert str(tmp_path / "ogbn_arxiv" / "raw") in message and "\n" not in message
    assert not list(tmp_path.glob("*.zip"))


def test_ogb_corrupt_csv(tmp_path):
    write_ogb_arxiv(tmp_path)
    edge = tmp_path / "ogbn_arxiv" / "raw" / "edge.csv.gz"
    edge.write_bytes(edge.read_bytes()[:-20])
    with pytest.raises(GnnCmlError, match="truncated or corrupt") as err:
        ogb_datasets.load(tmp_path, tmp_path / "cache", "ogbn_arxiv")
    assert str(edge) in str(err.value)


# --------------------------------------------------------------------------- user .npz graphs

def user_arrays(n=6):
    return {"edge_index": np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]),
            "x": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
            "y": np.array([0, 0, 1, 1, 2, -1])}


def save(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "g.npz"
    np.savez(path, **arrays)
    return path


def test_user_graph_dense_and_split(tmp_path):
    arrays = user_arrays()
    path = save(tmp_path, **arrays, train_classes=np.array([0]), val_classes=np.array([1]),
                test_classes=np.array([2]))
    data = load_graph(str(path))
    assert data.name == "g" and data.num_nodes == 6 and data.num_classes == 3
    assert torch.equal(data.x, torch.from_numpy(arrays["x"]))
    assert data.edge_index.shape[1] == 10 and is_undirected(data.edge_index)
    split = default_split(data)
    assert (split.train, split.val, split.test) == ((0,), (1,), (2,))


def test_user_graph_csr_parts(tmp_path):
    arrays = user_arrays()
    x = sp.csr_matrix(arrays.pop("x"))
    data = load_npz_graph(save(tmp_path, **arrays, x_data=x.data, x_indices=x.indices,
                               x_indptr=x.indptr, x_shape=np.array(x.shape)))
    # One rule for every graph: x is dense when it fits (as Cora, CiteSeer), whatever the file holds.
    assert data.x.layout == torch.strided and data.x.dtype == torch.float32
    assert np.array_equal(data.x.numpy(), x.toarray())


def test_user_graph_csr_beyond_the_dense_limit_stays_sparse(tmp_path, monkeypatch):
    from gnn_cml.data import source

    monkeypatch.setattr(source, "DENSE_LIMIT_BYTES", 10)
    arrays = user_arrays()
    x = sp.csr_matrix(arrays.pop("x"))
    data = load_npz_graph(save(tmp_path, **arrays, x_data=x.data, x_indices=x.indices,
                               x_indptr=x.indptr, x_shape=np.array(x.shape)))
    assert data.x.layout == torch.sparse_csr
    assert np.array_equal(data.x.to_dense().numpy(), x.toarray())


def _without(key):
    arrays = user_arrays()
    del arrays[key]
    return arrays


def _with(**changes):
    return {**user_arrays(), **changes}


BAD_GRAPHS = {
    "missing y": (_without("y"), r"missing array\(s\) 'y'"),
    "missing x": (_without("x"), r"missing array\(s\) 'x'"),
    "missing csr part": ({**_without("x"), "x_data": np.ones(2), "x_indices": np.array([0, 1]),
                          "x_shape": np.array([6, 3])}, r"missing array\(s\) 'x_indptr'.*all four CSR parts"),
    "edge_index transposed": (_with(edge_index=np.array([[0, 1], [1, 2], [2, 3]])),
                              r"shape \(2, num_edges\).*transpose it"),
    "x rows": (_with(x=np.ones((5, 3), np.float32)), r"must be \(num_nodes x features\)"),
    "y 2-D": (_with(y=np.zeros((3, 2), np.int64)), "'y' must be 1-D"),
    "label < -1": (_with(y=np.array([0, 0, 1, 1, -2, -1])), "label -2 at node 4"),
    "float labels": (_with(y=np.array([0, 0.5, 1, 1, 2, 2])), "'y' must hold integers"),
    "class out of range": (_with(train_classes=np.array([0, 7]), test_classes=np.array([2])),
                           "'train_classes' names class 7"),
    "split without test": (_with(train_classes=np.array([0])), "needs both 'train_classes'"),
    "nan feature": (_with(x=np.full((6, 3), np.nan, np.float32)), "'x' has 18 NaN/inf"),
    "inf csr feature": ({**_without("x"), "x_data": np.array([1.0, np.inf]),
                         "x_indices": np.array([0, 1]), "x_indptr": np.array([0, 1, 2, 2, 2, 2, 2]),
                         "x_shape": np.array([6, 3])}, "'x_data' has 1 NaN/inf"),
    "bad csr": ({**_without("x"), "x_data": np.ones(2), "x_indices": np.array([0, 9]),
                 "x_indptr": np.array([0, 1, 2, 2, 2, 2, 2]), "x_shape": np.array([6, 3])},
                "CSR parts of x are inconsistent"),
    "edge to missing node": (_with(edge_index=np.array([[0, 1], [1, 6]])), "refers to node 6"),
    "negative edge": (_with(edge_index=np.array([[0, -1], [1, 2]])), "refers to node -1"),
    "pickle inside": (_with(y=np.array([0, 1, "a", None, 2, 3], dtype=object)),
                      "pickled Python objects, which are refused"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_user_graph_errors_name_the_fix(case, tmp_path):
    arrays, pattern = BAD_GRAPHS[case]
    path = save(tmp_path, **arrays)
    with pytest.raises(GnnCmlError, match=pattern) as err:
        load_graph(str(path))
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert message.count(":") >= 2  # "<path>: <problem>: <fix>"


def test_user_graph_truncated_and_non_archive(tmp_path):
    path = save(tmp_path, **user_arrays())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GnnCmlError, match="truncated or corrupt"):
        load_npz_graph(path)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(GnnCmlError, match="single .npy array"):
        load_npz_graph(npy)
    with pytest.raises(GnnCmlError, match="does not exist"):
        load_npz_graph(tmp_path / "nope.npz")
    assert os.path.exists(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), data=st.data())
def test_user_graph_round_trip(tmp_path, n, data):
    """Any valid graph comes back with the same features/labels and its symmetrised simple edges."""
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=30))
    y = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)))
    y[0] = max(y[0], 0)
    x = np.array(data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=2 * n, max_size=2 * n)),
                 dtype=np.float32).reshape(n, 2)
    edge_index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    graph = load_graph(str(save(tmp_path, edge_index=edge_index, x=x, y=y)))
    assert torch.equal(graph.x, torch.from_numpy(x)) and torch.equal(graph.y, torch.from_numpy(y))
    simple = {(a, b) for a, b in pairs if a != b}
    assert set(zip(*graph.edge_index.tolist())) == simple | {(b, a) for a, b in simple}
    assert graph.edge_index.shape[1] == len(simple | {(b, a) for a, b in simple})


# --------------------------------------------------------------------------- the data root stays as it was

def test_make_read_only_refuses_symlinks_and_paths_outside(tmp_path):
    outside = tmp_path / "user_data" / "graph.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"mine")
    outside.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    (root / "graph.bin").symlink_to(outside)
    with pytest.raises(AssertionError, match="symlink"):
        make_read_only(root, tmp_path)
    with pytest.raises(AssertionError, match="outside"):
        make_read_only(outside.parent, root)
    assert outside.stat().st_mode & 0o777 == 0o644 and outside.read_bytes() == b"mine"


def test_data_root_state_sees_mode_and_content_changes(tmp_path):
    from conftest import data_root_state, state_changes

    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "a").chmod(0o644)
    before = data_root_state(tmp_path)
    (tmp_path / "a").chmod(0o444)
    assert state_changes(before, data_root_state(tmp_path)) == [
        "a: " + str(before["a"]) + " -> " + str(dict(before["a"], mode="-r--r--r--"))]
    (tmp_path / "a").chmod(0o644)
    (tmp_path / "a").write_bytes(b"2")
    assert any("sha256" in c for c in state_changes(before, data_root_state(tmp_path)))


def test_gpn_tests_leave_a_writable_data_root_as_it_was(gpn_real, tmp_path):
    """The GPN tests that chmod their data root, run against a writable copy of the real GPN files:
    every file keeps its mode and content (they once chmod-ed the real files through symlinks)."""
    import subprocess
    import sys

    from conftest import data_root_state, state_changes

    root = tmp_path / "data"
    shutil.copytree(gpn_real, root / "gpn")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    before = data_root_state(root)
    env = dict(os.environ, GNN_CML_DATA=str(root), GNN_CML_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "read_only and gpn", f"--basetemp={tmp_path / 'inner'}"],
                          env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert state_changes(before, data_root_state(root)) == []
