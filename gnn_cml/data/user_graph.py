"""A user's own graph, saved as a plain ``.npz`` file (no pickles)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gnn_cml.data.source import READ_ERRORS, features_tensor
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch and torch_geometric are imported where a graph is loaded, not to list graphs
    import torch
    from torch_geometric.data import Data

_CSR_PARTS = ("x_data", "x_indices", "x_indptr", "x_shape")
_CLASS_KEYS = ("train_classes", "val_classes", "test_classes")
_HOW = "save it with np.savez(path, edge_index=..., x=..., y=...)"



def load_npz_graph(path: Path) -> "Data":
    """Load and validate a user graph from ``path``.

    The archive holds ``edge_index`` (2 x E ints, 0-based), ``y`` (n ints; -1 marks
    an unlabelled node) and the node features, either dense ``x`` (n x F) or CSR
    parts ``x_data``, ``x_indices``, ``x_indptr``, ``x_shape``. Optional
    ``train_classes``/``val_classes``/``test_classes`` fix the class split. ``x`` is dense
    whichever form the file holds, unless it exceeds :data:`~gnn_cml.data.source.DENSE_LIMIT_BYTES`
    (then sparse CSR).
    Every problem raises a one-line :class:`GnnCmlError` naming the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise GnnCmlError(f"graph file {path} does not exist: check the path")

    def fail(problem: str, fix: str = _HOW) -> GnnCmlError:
        return GnnCmlError(f"{path}: {problem}: {fix}")

    try:
        archive = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise fail(f"not a readable .npz archive ({exc})",
                   "the file is truncated or corrupt; save it again with np.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise fail("holds a single .npy array, not an .npz archive")
    with archive:
        keys = set(archive.files)
        arrays = {}
        for key in keys & {"edge_index", "x", "y", *_CSR_PARTS, *_CLASS_KEYS}:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise fail(f"array '{key}' holds pickled Python objects, which are refused",
                               "store plain numeric arrays (e.g. np.asarray(values, dtype=np.int64))"
                               ) from None
                raise fail(f"array '{key}' is unreadable ({exc})",
                           "the file is truncated or corrupt; save it again") from None
            except READ_ERRORS as exc:
                raise fail(f"array '{key}' is unreadable ({exc})",
                           "the file is truncated or corrupt; save it again") from None

    missing = [k for k in ("edge_index", "y") if k not in arrays]
    has_csr = [k for k in _CSR_PARTS if k in arrays]
    if "x" not in arrays and len(has_csr) < len(_CSR_PARTS):
        missing += [k for k in _CSR_PARTS if k not in arrays] if has_csr else ["x"]
    if missing:
        fix = "save all four CSR parts of x (or a dense x)" if has_csr and "x" not in arrays else _HOW
        raise fail(f"missing array(s) {', '.join(repr(k) for k in missing)}", fix)

    y = _labels(arrays["y"], fail)
    n = y.shape[0]
    x = _dense_features(arrays["x"], n, fail) if "x" in arrays else _csr_features(arrays, n, fail)
    edge_index = _edges(arrays["edge_index"], n, fail)
    import torch
    from torch_geometric.data import Data

    data = Data(x=x, edge_index=edge_index, y=torch.from_numpy(y), num_nodes=n)
    for key, classes in _class_split(arrays, y, fail).items():
        setattr(data, key, torch.from_numpy(classes))
    return data


def _ints(a: np.ndarray, name: str, fail) -> np.ndarray:
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise fail(f"'{name}' must hold integers, got dtype {a.dtype}", "store it as np.int64")


def _labels(y: np.ndarray, fail) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(f"'y' must be 1-D (one label per node), got shape {y.shape}", "store y.reshape(-1)")
    y = _ints(y, "y", fail)
    if y.size and y.min() < -1:
        bad = int(np.argmax(y < -1))
        raise fail(f"'y' has label {y[bad]} at node {bad}; labels must be >= 0, or -1 for unlabelled",
                   "renumber the classes from 0 and mark unlabelled nodes with -1")
    if not np.any(y >= 0):
        raise fail("'y' has no labelled node", "give at least one node a class id >= 0")
    return y


def _dense_features(x: np.ndarray, n: int, fail) -> "torch.Tensor":
    if x.ndim != 2 or x.shape[0] != n:
        raise fail(f"'x' must be (num_nodes x features) = ({n} x F) to match 'y', got shape {x.shape}",
                   "give one feature row per label")
    if x.dtype.kind not in "biuf":
        raise fail(f"'x' must be numeric, got dtype {x.dtype}", "store it as np.float32")
    x = x.astype(np.float32)
    _check_finite(x, "x", fail)
    import torch

    return torch.from_numpy(x)


def _csr_features(arrays, n: int, fail) -> "torch.Tensor":
    shape = arrays["x_shape"].reshape(-1)
    if shape.size != 2 or shape.dtype.kind not in "iu" or int(shape[0]) != n:
        raise fail(f"'x_shape' must be [num_nodes, features] = [{n}, F] to match 'y', "
                   f"got {shape.tolist()}", "save x_shape=np.array(x.shape) of the CSR matrix")
    data = arrays["x_data"].reshape(-1)
    if data.dtype.kind not in "biuf":
        raise fail(f"'x_data' must be numeric, got dtype {data.dtype}", "store it as np.float32")
    indices = _ints(arrays["x_indices"].reshape(-1), "x_indices", fail)
    indptr = _ints(arrays["x_indptr"].reshape(-1), "x_indptr", fail)
    try:
        m = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n, int(shape[1])))
        m.check_format(full_check=True)
    except ValueError as exc:
        raise fail(f"the CSR parts of x are inconsistent ({exc})",
                   "save x.data, x.indices, x.indptr and x.shape of one scipy.sparse.csr_matrix"
                   ) from None
    _check_finite(m.data, "x_data", fail)
    return features_tensor(m)


def _check_finite(values: np.ndarray, name: str, fail) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise fail(f"'{name}' has {int(bad.sum())} NaN/inf value(s)",
                   "replace them (e.g. np.nan_to_num) before saving")


def _edges(edge_index: np.ndarray, n: int, fail) -> "torch.Tensor":
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        fix = "transpose it (edge_index.T)" if edge_index.ndim == 2 and edge_index.shape[1] == 2 else \
            "store the sources in row 0 and the targets in row 1"
        raise fail(f"'edge_index' must have shape (2, num_edges), got {edge_index.shape}", fix)
    edge_index = _ints(edge_index, "edge_index", fail)
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        bad = int(edge_index.max() if edge_index.max() >= n else edge_index.min())
        raise fail(f"'edge_index' refers to node {bad}, but there are {n} nodes (ids 0..{n - 1})",
                   "use 0-based node ids below len(y), or add the missing nodes to x and y")
    import torch

    return torch.from_numpy(edge_index)


def _class_split(arrays, y: np.ndarray, fail) -> dict:
    given = {k: _ints(arrays[k].reshape(-1), k, fail) for k in _CLASS_KEYS if k in arrays}
    if given and not {"train_classes", "test_classes"} <= set(given):
        raise fail("a class split needs both 'train_classes' and 'test_classes'",
                   "save both (and optionally 'val_classes'), or none to use a random split")
    num_classes = int(y.max()) + 1
    for key, classes in given.items():
        out = classes[(classes < 0) | (classes >= num_classes)]
        if out.size:
            raise fail(f"'{key}' names class {int(out[0])}, but 'y' has classes 0..{num_classes - 1}",
                       "list only class ids that occur in y")
    return given
