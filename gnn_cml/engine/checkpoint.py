"""Atomic, pickle-free checkpoints and JSON files."""
from __future__ import annotations

import json
import math
import os
import re
import warnings
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


def strict(obj: Any) -> Any:
    """``obj`` with every NaN/inf float (an undefined value, e.g. the CI of one run) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return strict(obj.item())
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """Strict JSON (``allow_nan=False``): undefined values are written as ``null``, never ``NaN``."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON atomically (temp file + rename): readers never see half a file."""
    atomic_write_bytes(Path(path), (dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """``torch.save`` to a temp file, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _why_refused(text: str) -> str:
    """The informative part of torch's weights-only refusal: which global or opcode it met."""
    name = re.search(r"GLOBAL ([\w.]+)", text)
    if name:
        return f"it names {name.group(1)}"
    opcode = re.search(r"Unsupported operand \d+", text)
    return opcode.group(0) if opcode else "unsupported content"


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise GnnCmlError(f"checkpoint {path} does not exist: train first, or check the run directory")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError for unsafe or corrupt files
        text = str(exc)
        if "Weights only load failed" in text:
            raise GnnCmlError(f"refusing to load checkpoint {path}: it holds Python objects other than tensors, "
                              f"which could run code ({_why_refused(text)}): delete it and retrain; never load "
                              f"checkpoints from an untrusted source") from None
        first = text.strip().splitlines()[0].split(". ")[0][:120] if text.strip() else type(exc).__name__
        raise GnnCmlError(f"checkpoint {path} is truncated or corrupt ({first}): delete it and retrain") from None
    if not isinstance(state, dict):
        raise GnnCmlError(f"checkpoint {path} holds a {type(state).__name__}, not a gnn-cml checkpoint: "
                          f"delete it and retrain")
    return state


class RunFiles:
    """A run folder's checkpoints as a learner's ``fit`` reads and writes them: loaded with
    ``weights_only=True``, written atomically and by the main process only (distributed runs)."""

    @staticmethod
    def load(path: Path) -> Dict[str, Any]:
        return load_checkpoint(path)

    @staticmethod
    def save(path: Path, state: Dict[str, Any]) -> None:
        from gnn_cml.engine import distributed as dist

        if dist.is_main():
            save_checkpoint(path, state)
