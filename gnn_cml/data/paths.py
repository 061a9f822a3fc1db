"""Where data lives: the (possibly read-only) data root and a writable cache."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def data_root(root: Optional[PathLike] = None) -> Path:
    """The data root: ``root``, else ``$GNN_CML_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GNN_CML_DATA")
    return Path(env).expanduser() if env else Path("data")


def is_writable(path: Path) -> bool:
    """True when ``path`` (or its nearest existing parent) is meant to be written to.

    Checks the permission bits as well as ``os.access``: root bypasses access
    checks, but a data root shipped without write bits must still be left alone.
    """
    path = Path(path)
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    mode = path.stat().st_mode
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(path, os.W_OK | os.X_OK)


def cache_root(root: Path) -> Path:
    """A writable directory for processed caches belonging to data root ``root``.

    ``$GNN_CML_CACHE`` wins; else the data root itself when writable; else a
    per-root folder under ``~/.cache/gnn-cml`` (so a read-only shared root works).
    """
    env = os.environ.get("GNN_CML_CACHE")
    if env:
        return Path(env).expanduser()
    if is_writable(root):
        return root
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gnn-cml" / digest


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, sha256: Optional[str] = None, size: Optional[int] = None) -> None:
    """Raise a one-line :class:`GnnCmlError` if ``path`` is truncated or corrupt."""
    from gnn_cml.errors import GnnCmlError

    if size is not None and path.stat().st_size != size:
        raise GnnCmlError(
            f"{path} has {path.stat().st_size} bytes, expected {size}: the file is truncated "
            f"or corrupt; delete it and run again to re-download it"
        )
    if sha256 is not None and sha256_of(path) != sha256:
        raise GnnCmlError(
            f"{path} fails its sha256 check: the file is corrupt; delete it and run again "
            f"to re-download it"
        )


@contextmanager
def rollback_on_failure(folder: PathLike) -> Iterator[Path]:
    """Undo what a failed download created in ``folder``: new files, and new folders left empty.

    Files that were there before are kept; so are folders that existed before.
    """
    folder = Path(folder)
    created = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        created.append(probe)  # deepest first
        probe = probe.parent
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield folder
    except BaseException:
        if folder.is_dir():
            for path in set(folder.iterdir()) - before:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise


def missing_files_error(name: str, folder: Path, missing: Sequence[str], total: int, source: str,
                        exc: BaseException):
    """One line naming every missing file of ``name``, where it goes and where it comes from."""
    from gnn_cml.errors import GnnCmlError

    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return GnnCmlError(
        f"could not read {name}: {len(missing)} of {total} file{'s' if total > 1 else ''} missing from "
        f"{folder} ({', '.join(missing)}) and downloading failed ({reason}): put "
        f"{'them' if len(missing) > 1 else 'it'} there (from {source}), run again with internet access, "
        f"or point --root / GNN_CML_DATA at a data root that holds {'them' if len(missing) > 1 else 'it'} "
        f"(see data/README.md)")
