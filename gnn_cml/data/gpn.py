"""The GPN few-shot graphs (Ding et al., CIKM 2020): Amazon clothing/electronics and DBLP.

Upstream ``few_shot_data/`` holds, per graph, ``{prefix}_network`` (an edge list
of 0-based node ids, one edge per line, both directions listed) and
``{prefix}_train.mat`` / ``{prefix}_test.mat`` (MATLAB v5 with ``Index`` 1 x n node
ids, ``Label`` n x 1 class ids and ``Attributes`` n x F sparse features). The
classes of the two ``.mat`` files are the fixed meta-train and meta-test classes.
Layout here: ``<root>/gpn/{prefix}_network`` etc.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np
import scipy.io
import scipy.sparse as sp

from gnn_cml.data.paths import is_writable, missing_files_error, rollback_on_failure, verify_file
from gnn_cml.data.source import READ_ERRORS, GraphSource, csr_parts, features_tensor
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch and torch_geometric are imported where a graph is loaded, not to list graphs
    from torch_geometric.data import Data

PREFIXES = {"amazon_clothing": "Amazon_clothing", "amazon_electronics": "Amazon_eletronics",
            "dblp": "dblp"}
URL = "https://github.com/kaize0409/GPN_Few-shot/raw/master/few_shot_data/{}"
# (size in bytes, sha256) of upstream files whose checksums are known.
KNOWN: Dict[str, Tuple[int, str]] = {
    "Amazon_clothing_network":
        (2036322, "6362cf42e3d2eda602a6e237e1be0dfaa35efe7ab8eca0a9027a133c23954b2c"),
    "Amazon_clothing_test.mat":
        (3808608, "7656d0831b4a41f7aad1a9fc7cfb1434b920fa5ed5275a1e74aaefaea68eae81"),
    "Amazon_eletronics_network":
        (999514, "4aa2042f22bf88204552d770b9b8e4d65c6e19b188d44d216525a466ab23f4e1"),
}


def download_url(url: str, folder: str, filename=None, log: bool = True):
    """``torch_geometric.data.download_url``, imported on first use (listing graphs imports no torch)."""
    from torch_geometric.data import download_url as pyg_download_url

    return pyg_download_url(url, folder, filename=filename, log=log)


def raw_files(name: str):
    prefix = PREFIXES[name]
    return [f"{prefix}_network", f"{prefix}_train.mat", f"{prefix}_test.mat"]


def _corrupt(path: Path, exc: Exception) -> GnnCmlError:
    return GnnCmlError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}): delete it "
                       f"and run again to re-download it from {URL.format(path.name)}")


def read_network(path: Path) -> np.ndarray:
    """The edge list of a ``*_network`` file as a (2, E) int64 array."""
    try:
        edges = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except (ValueError, OSError) as exc:
        raise _corrupt(path, exc) from None
    if edges.shape[1] != 2 or (edges.size and edges.min() < 0):
        raise _corrupt(path, ValueError(f"expected lines 'src<TAB>dst' of node ids >= 0, got "
                                        f"{edges.shape[1]} column(s)"))
    return edges.T.copy()


def read_mat(path: Path) -> Tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """``(Index, Label, Attributes)`` of a GPN ``.mat`` file: node ids, class ids, CSR features."""
    try:
        mat = scipy.io.loadmat(str(path))
        index = np.asarray(mat["Index"]).reshape(-1)
        label = np.asarray(mat["Label"]).reshape(-1)
        attr = sp.csr_matrix(mat["Attributes"], dtype=np.float32)
    except (*READ_ERRORS, IndexError, TypeError, NotImplementedError,
            scipy.io.matlab.MatReadError) as exc:
        raise _corrupt(path, exc) from None
    if not len(index) == len(label) == attr.shape[0]:
        raise _corrupt(path, ValueError(
            f"Index has {len(index)} entries, Label {len(label)}, Attributes {attr.shape[0]} rows"))
    if np.any(label != np.round(label)) or np.any(index != np.round(index)):
        raise _corrupt(path, ValueError("Index and Label must hold integers"))
    return index.astype(np.int64), label.astype(np.int64), attr


def parse(network: Path, train_mat: Path, test_mat: Path) -> Dict[str, np.ndarray]:
    """Build the whole graph from the three upstream files, as plain arrays.

    Mirrors upstream ``load_data``: every node listed in a ``.mat`` file gets its
    features and label there (the test file wins on overlap) and class ids are
    renumbered 0..C-1 in sorted order; nodes in neither file get label -1 and
    empty features.
    """
    for path in (network, train_mat, test_mat):
        if path.name in KNOWN:
            verify_file(path, KNOWN[path.name][1], KNOWN[path.name][0])
    edges = read_network(network)
    train, test = read_mat(train_mat), read_mat(test_mat)
    if train[2].shape[1] != test[2].shape[1]:
        raise _corrupt(train_mat, ValueError(
            f"{train[2].shape[1]} features, but {test_mat.name} has {test[2].shape[1]}"))
    index = np.concatenate([train[0], test[0]])
    label = np.concatenate([train[1], test[1]])
    if index.size and index.min() < 0:
        raise _corrupt(train_mat if train[0].min() < 0 else test_mat, ValueError("negative node id"))
    num_nodes = int(max(edges.max(initial=-1), index.max(initial=-1))) + 1
    # The last listing of a node wins, as with upstream's sequential assignment.
    rev_first = np.unique(index[::-1], return_index=True)[1]
    rows = len(index) - 1 - rev_first
    nodes = index[rows]
    select = sp.csr_matrix((np.ones(len(rows), np.float32), (nodes, rows)),
                           shape=(num_nodes, len(index)))
    x = (select @ sp.vstack([train[2], test[2]], format="csr")).tocsr()
    x.sort_indices()
    classes, label = np.unique(label, return_inverse=True)
    y = np.full(num_nodes, -1, dtype=np.int64)
    y[nodes] = label[rows]
    return {"edge_index": edges, "y": y, "x_data": x.data, "x_indices": x.indices,
            "x_indptr": x.indptr, "x_shape": np.array(x.shape, dtype=np.int64),
            "train_classes": np.searchsorted(classes, np.unique(train[1])),
            "test_classes": np.searchsorted(classes, np.unique(test[1]))}


class GpnFiles(GraphSource):
    """The three upstream files of each graph in ``<root>/gpn`` (or, downloaded, ``<cache>/gpn``)."""

    folder = "gpn"
    url = URL.format("<file>")

    def raw_files(self, name: str) -> List[str]:
        return raw_files(name)

    def raw_dir(self, root: Path, name: str) -> Path:
        return root / self.folder

    def processed_path(self, cache: Path, name: str) -> Path:
        return cache / self.folder / "processed" / f"{PREFIXES[name]}.npz"

    def locate(self, root: Path, cache: Path, name: str) -> List[Path]:
        """Each raw file in the data root, else in the cache, else downloaded (all or none)."""
        folders = (root / self.folder, cache / self.folder)
        found = {f: next((d / f for d in folders if (d / f).exists()), None) for f in raw_files(name)}
        missing = [f for f, path in found.items() if path is None]
        if missing:
            target = folders[0] if is_writable(root) else folders[1]
            try:
                with rollback_on_failure(target):
                    for fname in missing:
                        self.download(target, name, fname)
                        found[fname] = target / fname
            except OSError as exc:
                raise missing_files_error(name, folders[0], missing, len(found), self.url, exc) from None
        return list(found.values())

    def download(self, raw: Path, name: str, fname: str) -> None:
        """Fetch ``fname`` into ``raw``, checking it before it takes its final name."""
        url, part = URL.format(fname), raw / f"{fname}.part"
        raw.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        try:
            download_url(url, str(raw), filename=part.name)
            if fname in KNOWN:
                verify_file(part, KNOWN[fname][1], KNOWN[fname][0])
        except OSError:
            part.unlink(missing_ok=True)
            raise
        except GnnCmlError:
            part.unlink()
            raise GnnCmlError(f"the download of {url} fails its size/sha256 check: run again, or "
                              f"fetch the file by hand into {raw}") from None
        part.replace(raw / fname)

    def parse(self, paths: Sequence[Path], name: str) -> Dict[str, np.ndarray]:
        return parse(*paths)

    def to_data(self, arrays: Dict[str, np.ndarray]) -> "Data":
        import torch
        from torch_geometric.data import Data

        return Data(x=features_tensor(csr_parts(arrays)), edge_index=torch.from_numpy(arrays["edge_index"]),
                    y=torch.from_numpy(arrays["y"]), num_nodes=int(arrays["x_shape"][0]),
                    train_classes=torch.from_numpy(arrays["train_classes"]),
                    test_classes=torch.from_numpy(arrays["test_classes"]))


SOURCE = GpnFiles()
load, files, available = SOURCE.load, SOURCE.files, SOURCE.available
