"""Run directories: owned by one process, written atomically, sealed by a manifest, verified when read.

- **Ownership**: :func:`hold` takes an OS-level lock (``flock`` on the directory itself) that dies
  with the process, and records the holder (pid, host, start time) in ``.lock``; a second writer is
  refused in one line naming the holder. A lock left by a killed process never blocks: the kernel
  dropped it with the process, and the stale ``.lock`` is only read to name a live holder.
- **Integrity**: :func:`seal` writes ``manifest.json`` (every file of the run with its sha256) last and
  atomically; :func:`verify` compares a file against it; :func:`unseal` removes it before a resumed run
  writes again, so a manifest exists exactly when the directory is finished.
- **Atomic writes**: :func:`atomic_write` writes a temp file, fsyncs and renames; the temp file is
  removed on every failure (out of space, Ctrl-C) and Ctrl-C during the write is deferred until the
  file is complete, so a save is either finished or never started.
- **One-line I/O errors**: :func:`io_error` turns an ``OSError`` into a :class:`GnnCmlError` naming
  the file and the fix.

Example:
    >>> hold(out); announce(out)       # refuses if another process writes ``out``
    >>> atomic_write(out / "x.json", b"{}")
    >>> seal(out); verify(out, out / "x.json")
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import signal
import socket
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Union

from gnn_cml.errors import GnnCmlError

MANIFEST = "manifest.json"
LOCK = ".lock"
_TEMP_MARK = ".tmp"


# --- atomic writes ------------------------------------------------------------------------------
def temp_path(path: Path) -> Path:
    """The temp file a write of ``path`` goes through (hidden, per process)."""
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and _TEMP_MARK in path.name


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) while the block runs, then raise ``KeyboardInterrupt`` after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _write_file(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` and fsync (tests replace this to simulate a full disk)."""
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Union[str, Path], payload: Union[bytes, Callable[[io.BytesIO], None]]) -> None:
    """Write ``payload`` (bytes, or a function writing into a buffer) to ``path`` via temp file + rename.

    The bytes are produced in memory first, so a failing disk never interrupts a serialiser
    halfway (torch's zip writer then fails a second time). Any failure removes the temp file and
    raises a one-line :class:`GnnCmlError`; Ctrl-C waits until the file is complete.
    """
    path = Path(path)
    tmp = temp_path(path)
    with deferred_interrupt():
        if callable(payload):  # serialised with Ctrl-C held back too: torch's zip writer fails twice if cut
            buffer = io.BytesIO()
            payload(buffer)
            payload = buffer.getvalue()
        try:
            _write_file(tmp, payload)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise io_error(exc, path, "write") from None
            raise


def append_line(path: Union[str, Path], line: str) -> None:
    """Append one line to a JSON-lines file, first cutting it back to its last complete line
    (a write cut short by a crash or a full disk leaves a partial last line)."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    with deferred_interrupt():
        try:
            with open(path, "ab+") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        fh.seek(0)
                        keep = fh.read().rfind(b"\n") + 1
                        fh.truncate(keep)
                fh.seek(0, os.SEEK_END)
                _append(fh, data)
        except OSError as exc:
            raise io_error(exc, path, "write") from None


def _append(fh, data: bytes) -> None:
    """Append ``data`` to the open file ``fh`` (tests replace this to simulate a full disk)."""
    fh.write(data)
    fh.flush()


def remove_temp_files(root: Path) -> None:
    """Delete temp files left under ``root`` by a killed process (call only while holding ``root``)."""
    for p in Path(root).rglob(f".*{_TEMP_MARK}*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


# --- one-line I/O errors ------------------------------------------------------------------------
def io_error(exc: OSError, path: Union[str, Path, None] = None, action: str = "write") -> GnnCmlError:
    """``exc`` as a one-line :class:`GnnCmlError` naming the file, the cause and the fix."""
    path = path if path is not None else exc.filename
    where = f" {path}" if path is not None else ""
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        fix = "free some space (or pick another --out), then rerun with --resume to continue"
        what = "no space left on the device"
    elif code == errno.EROFS:
        fix = "pick a writable --out"
        what = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        fix = "fix the permissions or pick another --out" if action == "write" else "fix the file's permissions"
        what = "permission denied"
    else:
        fix = "check the disk and the path, then rerun (with --resume to continue a run)"
        what = exc.strerror or type(exc).__name__
    return GnnCmlError(f"cannot {action}{where}: {what}: {fix}")


# --- ownership ----------------------------------------------------------------------------------
_HELD: Dict[str, list] = {}  # realpath -> [fd, count, exclusive]


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _holder(root: Path) -> str:
    try:
        info = json.loads((root / LOCK).read_text())
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def hold(root: Union[str, Path], exclusive: bool = True, create: bool = True, what: str = "run directory") -> None:
    """Lock ``root`` for this process (``exclusive``: to write; else to read), or refuse in one line.

    Creates ``root`` (with ``create``); writes nothing into it (see :func:`announce`). Re-entrant within
    one process. The lock is released by :func:`release`, :func:`release_all` or
    the death of the process.
    """
    import fcntl

    root = Path(root)
    key = _key(root)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    if create and not root.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GnnCmlError(f"cannot create output directory {root} ({exc.strerror or exc}): "
                              f"pick a writable --out") from None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise io_error(exc, root, "open") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise GnnCmlError(f"{what} {root} is in use by {_holder(root)}: wait for it to finish "
                          f"(or stop it), then rerun") from None
    _HELD[key] = [fd, 1, False]
    if exclusive:  # a record left by a writer that was killed (a live one would hold the lock)
        with contextlib.suppress(OSError):
            (root / LOCK).unlink()


def announce(root: Union[str, Path]) -> None:
    """Record this process (pid, host, start time) in ``root/.lock`` as the holder of ``root``'s lock,
    for the refusal other processes print (call once the directory is checked and about to be written)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
    atomic_write(Path(root) / LOCK, json.dumps(info).encode())
    _HELD[_key(Path(root))][2] = True


def has_content(root: Union[str, Path]) -> bool:
    """Whether ``root`` holds anything but a lock record and temp files (what an empty --out may hold)."""
    return any(p.name != LOCK and not is_temp(p) for p in Path(root).iterdir())


def release(root: Union[str, Path]) -> None:
    """Undo one :func:`hold` of ``root``; the last one drops the OS lock (and the announced ``.lock``)."""
    key = _key(Path(root))
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _HELD[key]
    if entry[2]:
        with contextlib.suppress(OSError):
            (Path(root) / LOCK).unlink()
    os.close(entry[0])


def release_all() -> None:
    """Release every lock this process holds (the CLI calls it on the way out, error or not)."""
    for key in list(_HELD):
        _HELD[key][1] = 1
        release(key)


def holds(root: Union[str, Path]) -> bool:
    return _key(Path(root)) in _HELD


def clear(root: Path) -> None:
    """Delete everything in ``root`` but the lock (``--overwrite``: the locked directory stays)."""
    import shutil

    for p in Path(root).iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# --- manifest -----------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed(root: Path):
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, LOCK) and not is_temp(p):
            yield p


def seal(root: Union[str, Path]) -> None:
    """Write ``manifest.json``: every file under ``root`` with its sha256 (written last, atomically)."""
    root = Path(root)
    files = {p.relative_to(root).as_posix(): sha256(p) for p in _listed(root)}
    atomic_write(root / MANIFEST, (json.dumps({"format": 1, "sha256": files}, indent=1) + "\n").encode())


def unseal(root: Union[str, Path]) -> None:
    """Remove the manifest before a finished directory is written again (e.g. more --runs)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(root) / MANIFEST).unlink()


def manifest(root: Union[str, Path]) -> Optional[Dict[str, str]]:
    """``{relative path: sha256}`` of a sealed directory; None when it has no manifest."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["sha256"]
        if not isinstance(files, dict):
            raise TypeError
    except OSError as exc:
        raise io_error(exc, path, "read") from None
    except (ValueError, KeyError, TypeError):
        raise GnnCmlError(f"{path} is damaged (not a gnn-cml manifest), so the run's files cannot be "
                          f"verified: restore it, or retrain with --overwrite") from None
    return files


def record(root: Union[str, Path], *paths: Union[str, Path]) -> None:
    """Update the entries of ``paths`` in the manifest of a sealed ``root`` (after a deliberate rewrite)."""
    root = Path(root)
    files = manifest(root)
    if files is None:
        return
    for p in paths:
        files[Path(p).resolve().relative_to(root.resolve()).as_posix()] = sha256(Path(p))
    atomic_write(root / MANIFEST, (json.dumps({"format": 1, "sha256": files}, indent=1) + "\n").encode())


def altered(root: Union[str, Path], path: Union[str, Path], files: Optional[Dict[str, str]] = None) -> GnnCmlError:
    rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    return GnnCmlError(f"{path} was altered after the run finished (its sha256 differs from {Path(root) / MANIFEST}): "
                       f"it is not used; restore it, or retrain with gnn-cml train --overwrite --out {root}"
                       if Path(path).exists() else
                       f"{path} is missing ({rel} is listed in {Path(root) / MANIFEST}): restore it, or retrain "
                       f"with gnn-cml train --overwrite --out {root}")


def verify(root: Union[str, Path], *paths: Union[str, Path]) -> None:
    """Refuse (one line naming the file) any of ``paths`` that differs from ``root``'s manifest.

    Without ``paths``: every file the manifest lists that is still there (a missing file cannot be
    used damaged: the reader reports it, --resume rebuilds it). A directory without a manifest passes.
    """
    root = Path(root)
    files = manifest(root)
    if files is None:
        return
    targets = [root / rel for rel in files] if not paths else [Path(p) for p in paths]
    for p in targets:
        rel = p.resolve().relative_to(root.resolve()).as_posix()
        if rel not in files or (not paths and not p.exists()):
            continue
        try:
            same = p.is_file() and sha256(p) == files[rel]
        except OSError as exc:
            raise io_error(exc, p, "read") from None
        if not same:
            raise altered(root, p)


def zip_damage(path: Union[str, Path]) -> Optional[str]:
    """Why the zip container at ``path`` (torch.save, np.savez) is damaged (bad CRC, cut short), or None."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
        return str(exc) or type(exc).__name__
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"bad CRC-32 in its member {bad}" if bad else None
