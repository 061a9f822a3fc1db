"""Shared fixtures: the real data folder, a per-session cache and a network blocker."""
from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest


# CI passes GNN_CML_DATA=../shared/data; tests chdir into tmp folders and start subprocesses,
# so pin it to an absolute path once.
if os.environ.get("GNN_CML_DATA"):
    os.environ["GNN_CML_DATA"] = str(Path(os.environ["GNN_CML_DATA"]).resolve())


def data_required() -> bool:
    """CI sets ``GNN_CML_REQUIRE_DATA=1`` (``.ci/run``): missing real data is then a failure, not a skip."""
    return os.environ.get("GNN_CML_REQUIRE_DATA", "").lower() in ("1", "true", "yes", "on")


def skip_or_fail(message: str) -> None:
    """Skip a test whose real data is missing, or fail it when CI requires the data."""
    if data_required():
        pytest.fail(f"{message} (GNN_CML_REQUIRE_DATA is set, so data-dependent tests must not skip)",
                    pytrace=False)
    pytest.skip(message)


def real_data_root() -> Path:
    """``$GNN_CML_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("GNN_CML_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root_state(root: Path) -> dict:
    """Every entry under ``root`` (not following symlinks): its mode, and a file's size and sha256."""
    state = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        entry = {"mode": stat.filemode(st.st_mode)}
        if stat.S_ISREG(st.st_mode):
            entry["size"] = st.st_size
            entry["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        state[str(p.relative_to(root))] = entry
    return state


def state_changes(before: dict, after: dict) -> list:
    """What differs between two :func:`data_root_state` results, one line per entry."""
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changes.append(f"{key}: {before.get(key, 'absent')} -> {after.get(key, 'absent')}")
    return changes


@pytest.fixture(autouse=True, scope="session")
def _data_root_untouched():
    """A test run leaves every file under the real data root with the mode and content it had."""
    root = real_data_root()
    if not root.is_dir():
        yield
        return
    before = data_root_state(root)
    yield
    changes = state_changes(before, data_root_state(root))
    if changes:
        pytest.fail(f"the test run modified the data root {root}: " + "; ".join(changes[:10]), pytrace=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data (``../shared/data``, or ``$GNN_CML_DATA``).

    When absent: skipped on a developer's machine, a failure when ``GNN_CML_REQUIRE_DATA=1`` (CI).
    """
    path = real_data_root()
    if not path.is_dir():
        skip_or_fail(f"real data not found at {path}: set GNN_CML_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gnn_cml_cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(_session_cache, monkeypatch):
    """Processed caches go to a session tmp dir, never next to the shared data."""
    monkeypatch.setenv("GNN_CML_CACHE", str(_session_cache))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, shared_data, _session_cache) -> Path:
    """One tiny finished gnn-cml run on real Cora (2 runs), trained once per session.

    Tests that damage a run work on a copy of it.
    """
    from gnn_cml.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(_session_cache))
        assert main(["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out),
                     "--episodes", "2", "--val-every", "1", "--val-tasks", "2", "--test-tasks", "2",
                     "--runs", "2", "--inner-steps", "1", "--no-progress"]) == 0
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to resolve a host or open a connection."""
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Episode-sized work runs fastest on one thread (and CI's 2 cores may be busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
