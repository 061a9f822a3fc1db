"""CoraFull, Amazon Computers and Coauthor CS from the ``.npz`` archives PyG downloads.

Raw files are the ``.npz`` archives of graph2gauss (CoraFull) and shchur/gnn-benchmark
(the others), at the URLs of PyG's ``CitationFull``/``Amazon``/``Coauthor`` classes.
They are parsed here like PyG's ``read_npz`` (never through PyG's dataset classes,
whose ``processed/data.pt`` may be unpickled) and cached as a pickle-free ``.npz``.
Wide bag-of-words features stay sparse: ``x`` is a torch sparse CSR tensor when the
dense matrix would pass :data:`DENSE_LIMIT_BYTES`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from gnn_cml.data.source import CACHE_NAME, READ_ERRORS, GraphSource, csr_parts, features_tensor
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch and torch_geometric are imported where a graph is loaded, not to list graphs
    from torch_geometric.data import Data


def download_url(url: str, folder: str, filename=None, log: bool = True):
    """``torch_geometric.data.download_url``, imported on first use (listing graphs imports no torch)."""
    from torch_geometric.data import download_url as pyg_download_url

    return pyg_download_url(url, folder, filename=filename, log=log)


class _Spec(NamedTuple):
    cls: str  # the PyG dataset class in torch_geometric.datasets (only its download URL is used)
    pyg_name: str  # its ``name`` argument
    folder: str  # <root>/<folder>/<dir>/raw/<raw> is our layout
    dir: str  # the dataset folder PyG uses under its root
    raw: str


_SPECS = {
    "corafull": _Spec("CitationFull", "Cora", "citationfull", "cora", "cora.npz"),
    "amazon_computers": _Spec("Amazon", "Computers", "amazon", "Computers",
                              "amazon_electronics_computers.npz"),
    "coauthor_cs": _Spec("Coauthor", "CS", "coauthor", "CS", "ms_academic_cs.npz"),
}


def parse_npz(path) -> Dict[str, np.ndarray]:
    """PyG's ``read_npz`` (binary features, no self-loops, undirected) as plain arrays, x as CSR parts."""
    try:
        with np.load(path, allow_pickle=False) as f:
            attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]),
                                 shape=tuple(f["attr_shape"]))
            adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]),
                                shape=tuple(f["adj_shape"])).tocoo()
            y = np.asarray(f["labels"]).astype(np.int64)
    except READ_ERRORS as exc:
        raise GnnCmlError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}): delete it and run "
            f"again to re-download it") from None
    attr.sum_duplicates()
    attr.eliminate_zeros()
    attr.data[:] = 1
    n = attr.shape[0]
    import torch
    from torch_geometric.utils import remove_self_loops, to_undirected

    edge_index = torch.from_numpy(np.stack([adj.row, adj.col]).astype(np.int64))
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=n)
    return {"x_data": attr.data.astype(np.float32), "x_indices": attr.indices.astype(np.int64),
            "x_indptr": attr.indptr.astype(np.int64), "x_shape": np.array(attr.shape, dtype=np.int64),
            "edge_index": edge_index.numpy(), "y": y}


def _to_data(arrays: Dict[str, np.ndarray]) -> "Data":
    import torch
    from torch_geometric.data import Data

    attr = csr_parts(arrays)
    return Data(x=features_tensor(attr), edge_index=torch.from_numpy(arrays["edge_index"]),
                y=torch.from_numpy(arrays["y"]), num_nodes=attr.shape[0])


def read_npz(path: str) -> "Data":
    """PyG's ``read_npz`` (binary features, no self-loops, undirected) without densifying ``x``."""
    return _to_data(parse_npz(path))


class PygArchives(GraphSource):
    """One ``.npz`` archive per graph in ``<root>/<folder>/<dir>/raw`` (ours) or ``<root>/<dir>/raw`` (PyG's)."""

    def raw_files(self, name: str) -> List[str]:
        return [_SPECS[name].raw]

    def raw_dir(self, root: Path, name: str) -> Path:
        spec = _SPECS[name]
        for base in (root / spec.folder, root):
            candidate = base / spec.dir / "raw"
            if (candidate / spec.raw).exists():
                return candidate
        return root / spec.folder / spec.dir / "raw"

    def processed_path(self, cache: Path, name: str) -> Path:
        spec = _SPECS[name]
        return cache / spec.folder / spec.dir / "processed" / CACHE_NAME

    def source(self, name: str) -> str:
        return _url(_SPECS[name])

    def download(self, raw: Path, name: str, fname: str) -> None:
        part = raw / (fname + ".part")
        try:
            download_url(_url(_SPECS[name]), str(raw), filename=part.name, log=False)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(raw / fname)

    def fingerprint(self, paths: Sequence[Path]) -> np.ndarray:
        s = os.stat(paths[0])
        return np.array([self.cache_version, s.st_size, s.st_mtime_ns, s.st_ino], dtype=np.int64)

    def parse(self, paths: Sequence[Path], name: str) -> Dict[str, np.ndarray]:
        return parse_npz(paths[0])

    def to_data(self, arrays: Dict[str, np.ndarray]) -> "Data":
        return _to_data(arrays)


def _url(spec: _Spec) -> str:
    import torch_geometric.datasets

    url = getattr(torch_geometric.datasets, spec.cls).url
    return url.format(spec.dir) if "{}" in url else url + spec.raw


SOURCE = PygArchives()
load, files, available = SOURCE.load, SOURCE.files, SOURCE.available
