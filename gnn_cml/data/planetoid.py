"""Cora and CiteSeer from the raw Planetoid files (``ind.<name>.*``), parsed without PyG's dataset class.

Upstream the raw files are Python 2 pickles, which PyG reads with plain ``pickle.load``.
Here they are checked against their known sha256 first and then read with
:class:`_RawUnpickler`, which only builds numpy arrays, scipy CSR/CSC matrices and
plain containers, so a tampered raw file cannot run code. The result (the same
graph as PyG's ``read_planetoid_data``) is cached as a pickle-free ``.npz``.
"""
from __future__ import annotations

import pickle
import warnings
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

import numpy as np
import scipy.sparse as sp

from gnn_cml.data.paths import sha256_of
from gnn_cml.data.source import CACHE_NAME, READ_ERRORS, GraphSource, csr_parts
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch and torch_geometric are imported where a graph is loaded, not to list graphs
    import torch
    from torch_geometric.data import Data

_PYG_NAMES = {"cora": "Cora", "citeseer": "CiteSeer"}
_RAW = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]
URL = "https://github.com/kimiyoung/planetoid/raw/master/data"  # torch_geometric Planetoid.url

# sha256 of the upstream raw files (the same files PyG downloads).
KNOWN_SHA256: Dict[str, str] = {
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
}


def download_url(url: str, folder: str, filename=None, log: bool = True):
    """``torch_geometric.data.download_url``, imported on first use (listing graphs imports no torch)."""
    from torch_geometric.data import download_url as pyg_download_url

    return pyg_download_url(url, folder, filename=filename, log=log)


def raw_files(name: str):
    return [f"ind.{name}.{suffix}" for suffix in _RAW]


# --- the restricted unpickler ------------------------------------------------------------------
def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


# Every global the upstream files reference (seen with pickletools.genops), plus the CSC
# matrix and a few inert builtins (under their Python 2 and 3 module names: ``find_class``
# sees the names as pickled).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("scipy.sparse.csr", "csr_matrix"): lambda: sp.csr_matrix,
    ("scipy.sparse._csr", "csr_matrix"): lambda: sp.csr_matrix,
    ("scipy.sparse.csc", "csc_matrix"): lambda: sp.csc_matrix,
    ("scipy.sparse._csc", "csc_matrix"): lambda: sp.csc_matrix,
    ("collections", "defaultdict"): lambda: __import__("collections").defaultdict,
    **{(mod, n): (lambda n=n: getattr(__import__("builtins"), n))
       for mod in ("builtins", "__builtin__") for n in ("list", "dict", "set", "frozenset", "tuple", "int", "float", "bool", "str", "bytes")},
}


class _RawUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path):
        super().__init__(fh, encoding="latin1")  # pickled under Python 2
        self.path = path

    def find_class(self, module, name):
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise GnnCmlError(f"{self.path} refers to {module}.{name}, which a Planetoid raw file "
                              f"never needs: refusing to load it; restore the upstream file")
        return factory()


def unpickle_raw(path: Path):
    """One pickled raw file, through the restricted unpickler."""
    with open(path, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _RawUnpickler(fh, path).load()


# --- parsing: PyG's read_planetoid_data, in numpy -----------------------------------------------
def _dense(obj, path: Path) -> np.ndarray:
    if sp.issparse(obj):
        obj = obj.toarray()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or obj.dtype == object:
        raise ValueError(f"expected a 2-d numeric matrix, got {type(obj).__name__}")
    return np.asarray(obj, dtype=np.float32)


def _edge_index(graph, num_nodes: int) -> "torch.Tensor":
    """``torch_geometric.io.planetoid.edge_index_from_dict``."""
    if not isinstance(graph, dict):
        raise ValueError(f"expected a dict of adjacency lists, got {type(graph).__name__}")
    rows: List[int] = []
    cols: List[int] = []
    for key, value in graph.items():
        rows += repeat(int(key), len(value))
        cols += [int(v) for v in value]
    import torch
    from torch_geometric.utils import coalesce, remove_self_loops

    edge_index = torch.stack([torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)])
    edge_index, _ = remove_self_loops(edge_index)
    return coalesce(edge_index, num_nodes=num_nodes, sort_by_row=False)


def parse(raw: Path, name: str) -> Dict[str, np.ndarray]:
    """The graph in the raw files under ``raw``, as plain arrays (x as CSR parts)."""
    items = {}
    for suffix in _RAW:
        path = raw / f"ind.{name}.{suffix}"
        try:
            if suffix == "test.index":
                items[suffix] = np.array([int(s) for s in path.read_text().split()], dtype=np.int64)
            elif suffix == "graph":
                items[suffix] = unpickle_raw(path)
            else:
                items[suffix] = _dense(unpickle_raw(path), path)
        except GnnCmlError:
            raise
        except (*READ_ERRORS, pickle.UnpicklingError, IndexError, TypeError, AttributeError) as exc:
            raise _corrupt(path, exc) from None
    x, tx, allx, y, ty, ally = (items[s] for s in ("x", "tx", "allx", "y", "ty", "ally"))
    test_index = items["test.index"]
    sorted_test_index = np.sort(test_index)
    if name == "citeseer":
        # Isolated test nodes leave gaps in the test indices: pad tx/ty with zero rows.
        lo = int(test_index.min())
        span = int(test_index.max()) - lo + 1
        tx_ext = np.zeros((span, tx.shape[1]), dtype=tx.dtype)
        tx_ext[sorted_test_index - lo] = tx
        ty_ext = np.zeros((span, ty.shape[1]), dtype=ty.dtype)
        ty_ext[sorted_test_index - lo] = ty
        tx, ty = tx_ext, ty_ext
    feats = np.concatenate([allx, tx])
    feats[test_index] = feats[sorted_test_index]
    labels = np.concatenate([ally, ty]).argmax(axis=1).astype(np.int64)
    labels[test_index] = labels[sorted_test_index]
    edge_index = _edge_index(items["graph"], num_nodes=len(labels)).numpy()
    csr = sp.csr_matrix(feats)
    return {"x_data": csr.data.astype(np.float32), "x_indices": csr.indices.astype(np.int64),
            "x_indptr": csr.indptr.astype(np.int64), "x_shape": np.array(csr.shape, dtype=np.int64),
            "edge_index": edge_index.astype(np.int64), "y": labels}


def _corrupt(path: Path, exc: BaseException) -> GnnCmlError:
    detail = (str(exc).strip().splitlines() or [""])[0][:120]
    return GnnCmlError(f"could not read {path}: the file is truncated or corrupt ({type(exc).__name__}: "
                       f"{detail}); restore it from {URL}")


# --- the source: locating, verifying, downloading and caching -----------------------------------
class Planetoid(GraphSource):
    """Raw files in ``<root>/planetoid/<Name>/raw`` (the shared layout) or ``<root>/<Name>/raw`` (PyG's)."""

    folder = "planetoid"
    url = f"{URL}/"

    def raw_files(self, name: str) -> List[str]:
        return raw_files(name)

    def raw_dir(self, root: Path, name: str) -> Path:
        for base in (root / self.folder, root):
            candidate = base / _PYG_NAMES[name] / "raw"
            if candidate.is_dir():
                return candidate
        return root / self.folder / _PYG_NAMES[name] / "raw"

    def processed_path(self, cache: Path, name: str) -> Path:
        return cache / self.folder / _PYG_NAMES[name] / "processed" / CACHE_NAME

    def download(self, raw: Path, name: str, fname: str) -> None:
        part = raw / (fname + ".part")
        try:
            download_url(f"{URL}/{fname}", str(raw), filename=part.name, log=False)
            if fname in KNOWN_SHA256 and sha256_of(part) != KNOWN_SHA256[fname]:
                raise GnnCmlError(f"the download of {URL}/{fname} fails its sha256 check: run again, "
                                  f"or fetch the file by hand into {raw}")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(raw / fname)

    def verify(self, paths: Sequence[Path], name: str) -> None:
        """Check every raw file against its known sha256 (catches truncation and tampering)."""
        for path in paths:
            if path.name in KNOWN_SHA256 and sha256_of(path) != KNOWN_SHA256[path.name]:
                raise GnnCmlError(
                    f"could not read {name}: {path} is truncated or corrupt (its sha256 is not the "
                    f"upstream file's): delete it and run again with internet access to re-download it, "
                    f"or copy {URL}/{path.name} there")

    def parse(self, paths: Sequence[Path], name: str) -> Dict[str, np.ndarray]:
        return parse(paths[0].parent, name)

    def to_data(self, arrays: Dict[str, np.ndarray]) -> "Data":
        import torch
        from torch_geometric.data import Data

        x = csr_parts(arrays).toarray()
        return Data(x=torch.from_numpy(x.astype(np.float32, copy=False)),
                    edge_index=torch.from_numpy(arrays["edge_index"]),
                    y=torch.from_numpy(arrays["y"]), num_nodes=int(arrays["x_shape"][0]))


SOURCE = Planetoid()
load, files, available = SOURCE.load, SOURCE.files, SOURCE.available
