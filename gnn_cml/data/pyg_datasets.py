"""CoraFull, Amazon Computers and Coauthor CS via PyG's dataset classes.

Raw files are the ``.npz`` archives PyG downloads (graph2gauss for CoraFull,
shchur/gnn-benchmark for the others). Wide bag-of-words features stay sparse:
``x`` is a torch sparse CSR tensor when the dense matrix would pass
:data:`DENSE_LIMIT_BYTES`.
"""
from __future__ import annotations

import os
import pickle
import urllib.error
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.datasets import Amazon, CitationFull, Coauthor
from torch_geometric.utils import remove_self_loops, to_undirected

from gnn_cml.data.paths import is_writable, mirror_raw
from gnn_cml.data.user_graph import READ_ERRORS, csr_tensor
from gnn_cml.errors import GnnCmlError

DENSE_LIMIT_BYTES = 100 * 2 ** 20


class _Spec(NamedTuple):
    cls: type  # the PyG dataset class
    pyg_name: str  # its ``name`` argument
    folder: str  # <root>/<folder>/<dir>/raw/<raw> is our layout
    dir: str  # the dataset folder PyG uses under its root
    raw: str


_SPECS = {
    "corafull": _Spec(CitationFull, "Cora", "citationfull", "cora", "cora.npz"),
    "amazon_computers": _Spec(Amazon, "Computers", "amazon", "Computers",
                              "amazon_electronics_computers.npz"),
    "coauthor_cs": _Spec(Coauthor, "CS", "coauthor", "CS", "ms_academic_cs.npz"),
}


def read_npz(path: str) -> Data:
    """PyG's ``read_npz`` (binary features, no self-loops, undirected) without densifying ``x``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]),
                                 shape=tuple(f["attr_shape"]))
            adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]),
                                shape=tuple(f["adj_shape"])).tocoo()
            y = torch.from_numpy(f["labels"]).long()
    except READ_ERRORS as exc:
        raise GnnCmlError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}): delete it and run "
            f"again to re-download it") from None
    attr.sum_duplicates()
    attr.eliminate_zeros()
    attr.data[:] = 1
    n, f = attr.shape
    x = csr_tensor(attr) if n * f * 4 > DENSE_LIMIT_BYTES else torch.from_numpy(
        attr.toarray().astype(np.float32))
    edge_index = torch.from_numpy(np.stack([adj.row, adj.col]).astype(np.int64))
    edge_index, _ = remove_self_loops(edge_index)
    return Data(x=x, edge_index=to_undirected(edge_index, num_nodes=n), y=y, num_nodes=n)


def _sparse_process(self) -> None:
    self.save([read_npz(self.raw_paths[0])], self.processed_paths[0])


# PyG's classes with only ``process`` swapped for the sparse-aware reader.
_CLASSES = {spec.cls: type(spec.cls.__name__, (spec.cls,), {"process": _sparse_process})
            for spec in _SPECS.values()}


def _raw_dir(root: Path, name: str) -> Path:
    # Accept <root>/<folder>/<dir>/raw (our layout) and <root>/<dir>/raw (PyG's, root = PyG root).
    spec = _SPECS[name]
    for base in (root / spec.folder, root):
        candidate = base / spec.dir / "raw"
        if (candidate / spec.raw).exists():
            return candidate
    return root / spec.folder / spec.dir / "raw"


def available(root: Path, name: str) -> bool:
    return (_raw_dir(root, name) / _SPECS[name].raw).exists()


def _url(spec: _Spec) -> str:
    return spec.cls.url.format(spec.dir) if "{}" in spec.cls.url else spec.cls.url + spec.raw


def _mirror(raw: Path, cached_raw: Path, filename: str) -> bool:
    """Link ``raw/filename`` into the cache; True when a link to another file was replaced."""
    src, dst = raw / filename, cached_raw / filename
    stale = dst.is_symlink() or dst.exists()
    stale = stale and not (dst.exists() and os.path.samefile(src, dst))
    if stale:  # the cache served another data root before: its processed graph is stale too
        dst.unlink()
    mirror_raw(raw, cached_raw, [filename])
    return stale


def load(root: Path, cache: Path, name: str) -> Data:
    spec = _SPECS[name]
    raw = _raw_dir(root, name)
    force = False
    if available(root, name) and is_writable(raw.parent):
        base = raw.parent.parent
    elif available(root, name):
        # Read-only root: process from a link in the writable cache.
        base = cache / spec.folder
        force = _mirror(raw, base / spec.dir / "raw", spec.raw)
    else:
        base = (root if is_writable(root) else cache) / spec.folder  # downloads land here
    where = base / spec.dir
    try:
        dataset = _CLASSES[spec.cls](str(base), spec.pyg_name, force_reload=force)
    except GnnCmlError:
        raise
    except (urllib.error.URLError, TimeoutError) as exc:
        raise GnnCmlError(
            f"{name} is not under {raw} and downloading it failed ({exc}): run again with internet "
            f"access, or put {_url(spec)} into {raw}") from None
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise GnnCmlError(
            f"could not read {name} from {where} ({type(exc).__name__}: {exc}): delete "
            f"{where / 'processed'} and run again") from None
    data = dataset[0]
    x = data.x
    if x.layout == torch.strided and x.numel() * x.element_size() > DENSE_LIMIT_BYTES:
        x = csr_tensor(sp.csr_matrix(x.numpy()))  # a cache processed by plain PyG
    return Data(x=x, edge_index=data.edge_index, y=data.y, num_nodes=data.num_nodes)
