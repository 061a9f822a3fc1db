"""ogbn-arxiv in OGB's on-disk layout, read without OGB's interactive dataset classes.

OGB's ``NodePropPredDataset`` asks on stdin before (re)downloading and caches with
``torch.load``; here the raw CSVs of ``<root>/ogbn_arxiv/raw/`` are read with
pandas and cached as a pickle-free ``.npz``. A missing dataset is downloaded
from OGB's canonical URL (``master.csv``) and unpacked the way OGB does it.
"""
from __future__ import annotations

import importlib.util
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

import numpy as np

from gnn_cml.data.paths import is_writable, missing_files_error, rollback_on_failure
from gnn_cml.data.source import GraphSource
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch and torch_geometric are imported where a graph is loaded, not to list graphs
    from torch_geometric.data import Data

_OGB_NAMES = {"ogbn_arxiv": "ogbn-arxiv"}
RAW_FILES = ("edge.csv.gz", "node-feat.csv.gz", "node-label.csv.gz", "num-node-list.csv.gz")


def meta_info(name: str) -> Dict[str, str]:
    """OGB's ``master.csv`` entry for ``name`` (download URL, version, ...)."""
    import pandas as pd

    # Located without importing ogb: its import starts a thread that asks PyPI for updates.
    package = Path(importlib.util.find_spec("ogb").submodule_search_locations[0])
    master = package / "nodeproppred" / "master.csv"
    return dict(pd.read_csv(master, index_col=0, keep_default_na=False)[_OGB_NAMES[name]])


def dataset_dir(root: Path, name: str) -> Path:
    """OGB's folder for ``name`` under ``root``: ``<root>/ogbn_arxiv``."""
    return root / name


def _download(target_root: Path, name: str) -> Path:
    """Download and unzip OGB's archive into ``target_root/<name>``, as OGB itself does."""
    from ogb.utils.url import download_url, extract_zip

    info, folder = meta_info(name), dataset_dir(target_root, name)
    zip_path = target_root / info["url"].rpartition("/")[2]
    zip_path.unlink(missing_ok=True)  # OGB would reuse a partial archive
    try:
        with rollback_on_failure(target_root):
            target_root.mkdir(parents=True, exist_ok=True)
            download_url(info["url"], str(target_root))
            extract_zip(str(zip_path), str(target_root))
    except (OSError, RuntimeError, zipfile.BadZipFile) as exc:
        wanted = files(target_root, name)
        raise missing_files_error(name, wanted[0].parent, [p.name for p in wanted if not p.exists()],
                                  len(wanted), f"{info['url']}, unzipped", exc) from None
    finally:
        zip_path.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.move(str(target_root / info["download_name"]), str(folder))
    return folder


def _read_csv(path: Path, dtype) -> np.ndarray:
    import pandas as pd

    try:
        return pd.read_csv(path, compression="gzip", header=None, dtype=dtype).to_numpy()
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise GnnCmlError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}): delete "
            f"{path.parent.parent} and run again to re-download it") from None


def parse(raw: Path) -> Dict[str, np.ndarray]:
    """``edge_index``, ``x`` and ``y`` (NaN labels -> -1) from OGB's raw CSV files."""
    num_nodes = int(_read_csv(raw / "num-node-list.csv.gz", np.int64).reshape(-1)[0])
    edges = _read_csv(raw / "edge.csv.gz", np.int64)
    x = _read_csv(raw / "node-feat.csv.gz", np.float32)
    labels = _read_csv(raw / "node-label.csv.gz", np.float64).reshape(-1)
    problems = [
        (edges.ndim != 2 or edges.shape[1] != 2, "edge.csv.gz must have 2 columns"),
        (edges.size > 0 and (edges.min() < 0 or edges.max() >= num_nodes),
         f"edge.csv.gz has node ids outside 0..{num_nodes - 1}"),
        (x.shape[0] != num_nodes, f"node-feat.csv.gz has {x.shape[0]} rows, not {num_nodes}"),
        (labels.shape[0] != num_nodes, f"node-label.csv.gz has {labels.shape[0]} rows, not {num_nodes}"),
    ]
    for bad, problem in problems:
        if bad:
            raise GnnCmlError(f"{raw}: {problem}: the files are inconsistent; delete "
                              f"{raw.parent} and run again to re-download it")
    y = np.where(np.isnan(labels), -1, labels).astype(np.int64)
    return {"edge_index": edges.T.copy(), "x": x, "y": y}


class OgbArchive(GraphSource):
    """OGB's layout: ``<root>/ogbn_arxiv/raw/*.csv.gz``, downloaded as OGB's zip archive."""

    def raw_files(self, name: str) -> List[str]:
        return list(RAW_FILES)

    def raw_dir(self, root: Path, name: str) -> Path:
        return dataset_dir(root, name) / "raw"

    def locate(self, root: Path, cache: Path, name: str) -> List[Path]:
        folder = next((dataset_dir(r, name) for r in (root, cache) if self.available(r, name)), None)
        if folder is None:
            folder = _download(root if is_writable(root) else cache, name)
        return [folder / "raw" / f for f in RAW_FILES]

    def parse(self, paths: Sequence[Path], name: str) -> Dict[str, np.ndarray]:
        return parse(paths[0].parent)

    def to_data(self, arrays: Dict[str, np.ndarray]) -> "Data":
        import torch
        from torch_geometric.data import Data

        return Data(x=torch.from_numpy(arrays["x"]), edge_index=torch.from_numpy(arrays["edge_index"]),
                    y=torch.from_numpy(arrays["y"]), num_nodes=int(arrays["x"].shape[0]))


SOURCE = OgbArchive()
load, files, available = SOURCE.load, SOURCE.files, SOURCE.available
