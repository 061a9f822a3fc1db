"""Cora and CiteSeer via PyG's ``Planetoid`` (raw files as the Planetoid repo serves them)."""
from __future__ import annotations

from pathlib import Path

from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

from gnn_cml.data.paths import is_writable, mirror_raw
from gnn_cml.errors import GnnCmlError

_PYG_NAMES = {"cora": "Cora", "citeseer": "CiteSeer"}
_RAW = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]


def raw_files(name: str):
    return [f"ind.{name}.{suffix}" for suffix in _RAW]


def _raw_dir(root: Path, name: str) -> Path:
    # Accept both <root>/planetoid/Cora/raw (the shared layout) and <root>/Cora/raw (PyG's).
    for base in (root / "planetoid", root):
        candidate = base / _PYG_NAMES[name] / "raw"
        if candidate.is_dir():
            return candidate
    return root / "planetoid" / _PYG_NAMES[name] / "raw"


def available(root: Path, name: str) -> bool:
    raw = _raw_dir(root, name)
    return all((raw / f).exists() for f in raw_files(name))


def load(root: Path, cache: Path, name: str) -> Data:
    raw = _raw_dir(root, name)
    if available(root, name) and raw.parent.parent != cache / "planetoid" and not is_writable(raw.parent):
        # Read-only root: process from links in the writable cache.
        mirror_raw(raw, cache / "planetoid" / _PYG_NAMES[name] / "raw", raw_files(name))
        base = cache / "planetoid"
    elif available(root, name):
        base = raw.parent.parent
    else:
        base = (root if is_writable(root) else cache) / "planetoid"  # downloads land here
    try:
        dataset = Planetoid(str(base), _PYG_NAMES[name])
    except (OSError, ValueError, EOFError) as exc:
        raise GnnCmlError(
            f"could not read {name} from {base / _PYG_NAMES[name]} ({exc}): delete that folder "
            f"and run again with internet access, or point GNN_CML_DATA at a complete copy"
        ) from None
    data = dataset[0]
    return Data(x=data.x, edge_index=data.edge_index, y=data.y)
