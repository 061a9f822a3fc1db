"""Atomic, pickle-free checkpoints and JSON files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

import torch

from gnn_cml.errors import GnnCmlError


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """``torch.save`` to a temp file, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, never code."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GnnCmlError(f"checkpoint {path} does not exist: train first, or check the run directory") from None
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError for unsafe or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GnnCmlError(f"refusing to load checkpoint {path}: it is corrupt or holds objects other than "
                          f"tensors ({first[:120]}); delete it and retrain") from None
