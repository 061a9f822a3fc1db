"""What every graph loader shares, the way PyG's ``InMemoryDataset`` does it: raw files under the
data root, fetched when missing, checked, parsed once and cached as a pickle-free ``.npz`` keyed by
the raw files' fingerprint.

A loader subclasses :class:`GraphSource` and says where its raw files are (:meth:`raw_dir`,
:meth:`raw_files`), how to fetch one (:meth:`download`), check them (:meth:`verify`: our sha256
checks), parse them into plain arrays (:meth:`parse`) and turn those into a PyG ``Data``
(:meth:`to_data`); :meth:`GraphSource.load` does the rest. Loaders import torch and torch_geometric
only where a graph is loaded, so that listing graphs (``gnn-cml datasets``) imports neither.
"""
from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from gnn_cml.data.paths import is_writable, missing_files_error, rollback_on_failure

# Every loader's rule for node features: ``data.x`` is a dense float32 tensor when the dense matrix
# takes at most this many bytes, else a sparse CSR tensor (the wide bag-of-words graphs).
DENSE_LIMIT_BYTES = 100 * 2 ** 20
# What a damaged archive raises while numpy reads it.
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
CACHE_NAME = "gnn_cml_graph.npz"


def read_npz_cache(processed: Path, fingerprint: np.ndarray) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of a pickle-free ``.npz`` cache, or None when missing, stale or damaged."""
    if not processed.exists():
        return None
    try:
        with np.load(processed, allow_pickle=False) as f:
            if np.array_equal(f["fingerprint"], fingerprint):
                return {k: f[k] for k in f.files if k != "fingerprint"}
    except READ_ERRORS:
        pass  # a damaged cache is rebuilt from the raw files
    return None


def write_npz_cache(processed: Path, fingerprint: np.ndarray, arrays: Dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and their source ``fingerprint`` atomically (temp file + rename)."""
    processed.parent.mkdir(parents=True, exist_ok=True)
    tmp = processed.with_name(f"{processed.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, fingerprint=fingerprint, **arrays)
        tmp.replace(processed)
    except OSError:
        tmp.unlink(missing_ok=True)  # an unwritable cache only costs re-parsing next time


def csr_tensor(matrix: sp.spmatrix):
    """A scipy sparse matrix as a float32 torch sparse CSR tensor."""
    import torch

    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sum_duplicates()
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on first use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape)


def features_tensor(matrix: sp.spmatrix):
    """Sparse node features as ``data.x``: dense float32 when it fits :data:`DENSE_LIMIT_BYTES`, else CSR."""
    import torch

    n, f = matrix.shape
    if n * f * 4 > DENSE_LIMIT_BYTES:
        return csr_tensor(matrix)
    return torch.from_numpy(sp.csr_matrix(matrix, dtype=np.float32).toarray())


def csr_parts(arrays: Dict[str, np.ndarray]) -> sp.csr_matrix:
    """The CSR matrix stored as ``x_data``, ``x_indices``, ``x_indptr``, ``x_shape`` arrays."""
    return sp.csr_matrix((arrays["x_data"], arrays["x_indices"], arrays["x_indptr"]), shape=tuple(arrays["x_shape"]))


class GraphSource:
    """A family of graphs read from raw files (one instance per loader module).

    Example::

        class MySource(GraphSource):
            folder = "mine"
            def raw_files(self, name): return [f"{name}.npz"]
            def download(self, raw, name, fname): download_url(URL + fname, str(raw))
            def parse(self, paths, name): return dict(np.load(paths[0], allow_pickle=False))
            def to_data(self, arrays): return Data(...)
    """

    folder: str = ""  # <root>/<folder>/... holds the raw files, <cache>/<folder>/... the processed cache
    cache_version: int = 1
    url: str = ""  # where the raw files come from (named in messages)

    # --- what a loader defines -------------------------------------------------------------
    def raw_files(self, name: str) -> List[str]:
        raise NotImplementedError

    def raw_dir(self, root: Path, name: str) -> Path:
        """Where the raw files of ``name`` are under ``root`` (downloads go here)."""
        return root / self.folder / name / "raw"

    def download(self, raw: Path, name: str, fname: str) -> None:
        """Fetch raw file ``fname`` into folder ``raw`` (an ``OSError`` when offline)."""
        raise OSError(f"{type(self).__name__} cannot download")

    def source(self, name: str) -> str:
        """Where the raw files of ``name`` come from (named in the missing-files message)."""
        return self.url

    def verify(self, paths: Sequence[Path], name: str) -> None:
        """Refuse truncated or tampered raw files (a one-line error); default: accept."""

    def parse(self, paths: Sequence[Path], name: str) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def to_data(self, arrays: Dict[str, np.ndarray]):
        raise NotImplementedError

    def processed_path(self, cache: Path, name: str) -> Path:
        return self.raw_dir(cache, name).parent / "processed" / CACHE_NAME

    def fingerprint(self, paths: Sequence[Path]) -> np.ndarray:
        """What the processed cache is keyed by: the cache version, and each raw file's size and mtime."""
        stats = [os.stat(p) for p in paths]
        return np.array([self.cache_version] + [v for s in stats for v in (s.st_size, s.st_mtime_ns)],
                        dtype=np.int64)

    # --- shared ----------------------------------------------------------------------------
    def files(self, root: Path, name: str) -> List[Path]:
        """Every raw file ``name`` needs, where it is looked for under ``root``."""
        raw = self.raw_dir(root, name)
        return [raw / f for f in self.raw_files(name)]

    def available(self, root: Path, name: str) -> bool:
        return all(p.exists() for p in self.files(root, name))

    def locate(self, root: Path, cache: Path, name: str) -> List[Path]:
        """The raw files: under the data root, else downloaded (into the root, or into the cache when the
        root is read-only; files already there are kept). A failed download leaves nothing behind."""
        if self.available(root, name):
            return self.files(root, name)
        wanted = self.files(root, name)
        missing = [p.name for p in wanted if not p.exists()]
        raw = self.raw_dir(root if is_writable(root) else cache, name)
        try:
            with rollback_on_failure(raw):
                for fname in self.raw_files(name):
                    if not (raw / fname).exists():
                        raw.mkdir(parents=True, exist_ok=True)
                        self.download(raw, name, fname)
        except OSError as exc:
            raise missing_files_error(name, wanted[0].parent, missing, len(wanted), self.source(name), exc) from None
        return [raw / f for f in self.raw_files(name)]

    def load(self, root: Path, cache: Path, name: str):
        """Graph ``name`` as a PyG ``Data``: raw files located (and fetched), checked, parsed or read from
        the processed cache under ``cache``."""
        paths = self.locate(root, cache, name)
        self.verify(paths, name)
        fingerprint = self.fingerprint(paths)
        processed = self.processed_path(cache, name)
        arrays = read_npz_cache(processed, fingerprint)
        if arrays is None:
            arrays = self.parse(paths, name)
            write_npz_cache(processed, fingerprint, arrays)
        return self.to_data(arrays)
