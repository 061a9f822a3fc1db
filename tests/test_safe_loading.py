"""Files from elsewhere never run code: malicious pickles are refused with one line, and the
payload's marker file is never written.

Each payload is an object whose ``__reduce__`` would write a marker file when unpickled; a
sanity check proves that plain ``pickle`` really would run it.
"""
from __future__ import annotations

import builtins
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_cml.cli import main
from gnn_cml.data.user_graph import load_npz_graph
from gnn_cml.errors import GnnCmlError
from gnn_cml.sampling import TaskSet

FAST = ["--episodes", "2", "--val-every", "1", "--val-tasks", "2", "--test-tasks", "2", "--runs", "2",
        "--inner-steps", "1", "--no-progress"]




class Payload:
    """Unpickling this writes ``marker`` (through ``exec``, which torch's own blocklist lets pass)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(path)))  # the payload is real: plain pickle runs it
    assert path.exists()
    path.unlink()
    yield path
    assert not path.exists(), "the malicious payload ran"


def malicious_checkpoint(path: Path, marker: Path, kind: str) -> None:
    if kind == "torch.save":  # a real torch zip checkpoint with the payload inside
        torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload(marker)}, path)
    else:  # a bare (legacy) pickle stream
        path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))


def one_line(capsys, argv, *expected):
    if argv[0] == "evaluate":  # progress (start-up, loading) would add stderr lines before the error
        argv = [*argv, "--no-progress"]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# --- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["torch.save", "raw-pickle"])
def test_evaluate_refuses_a_malicious_model(run_copy, marker, capsys, kind):
    malicious_checkpoint(run_copy / "run_0" / "model.pt", marker, kind)
    one_line(capsys, ["evaluate", run_copy], "refusing to load checkpoint", "model.pt", "could run code",
             "(it names exec)", "delete it and retrain")


@pytest.mark.parametrize("kind", ["torch.save", "raw-pickle"])
def test_resume_refuses_a_malicious_checkpoint(run_copy, marker, capsys, shared_data, kind):
    (run_copy / "results.json").unlink()
    (run_copy / "manifest.json").unlink()  # an unfinished run has no manifest (it is written last)
    for name in ("result.json", "model.pt"):  # run 1 is "unfinished": --resume reads its checkpoint
        (run_copy / "run_1" / name).unlink()
    malicious_checkpoint(run_copy / "run_1" / "checkpoint.pt", marker, kind)
    one_line(capsys, ["train", "--graph", "cora", "--root", shared_data, "--out", run_copy, *FAST, "--resume"],
             "refusing to load checkpoint", "checkpoint.pt", "could run code", "(it names exec)")
    assert not (run_copy / "results.json").exists()


def test_checkpoint_loader_refuses_every_payload_form(tmp_path, marker):
    from gnn_cml.engine.checkpoint import load_checkpoint

    for kind in ("torch.save", "raw-pickle"):
        path = tmp_path / f"{kind}.pt"
        malicious_checkpoint(path, marker, kind)
        with pytest.raises(GnnCmlError, match="could run code"):
            load_checkpoint(path)


# --- fixed task sets --------------------------------------------------------------------------
def malicious_task_file(path: Path, good: Path, marker: Path, key: str) -> None:
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[key] = np.array([Payload(marker)], dtype=object)
    np.savez(path, **arrays)  # object arrays are stored as pickles


@pytest.mark.parametrize("key", ["support", "meta"])
def test_task_file_with_an_object_array_is_refused(run_copy, tmp_path, marker, key):
    evil = tmp_path / "evil_tasks.npz"
    malicious_task_file(evil, run_copy / "test_tasks.npz", marker, key)
    with pytest.raises(GnnCmlError, match="not a valid task-set file"):
        TaskSet.load(evil)


def test_train_refuses_a_malicious_task_file(run_copy, tmp_path, marker, capsys, shared_data):
    evil = tmp_path / "evil_tasks.npz"
    malicious_task_file(evil, run_copy / "test_tasks.npz", marker, "support")
    one_line(capsys, ["train", "--graph", "cora", "--root", shared_data, "--out", tmp_path / "new", *FAST,
                      "--task-file", evil], "evil_tasks.npz is not a valid task-set file", "regenerate it")
    assert not (tmp_path / "new").exists()


def test_evaluate_refuses_a_malicious_test_task_file(run_copy, marker, capsys):
    good = run_copy / "test_tasks.npz"
    malicious_task_file(run_copy / "evil.npz", good, marker, "query")
    (run_copy / "evil.npz").replace(good)
    one_line(capsys, ["evaluate", run_copy], "test_tasks.npz is not a valid task-set file")


# --- user graphs ------------------------------------------------------------------------------
def graph_arrays(n=60):
    rng = np.random.default_rng(0)
    return {"x": rng.random((n, 4)).astype(np.float32), "y": np.arange(n) % 6,
            "edge_index": rng.integers(0, n, (2, 100))}


@pytest.mark.parametrize("key", ["x", "y", "edge_index", "train_classes"])
def test_user_graph_with_a_pickled_array_is_refused(tmp_path, marker, capsys, key):
    arrays = graph_arrays()
    arrays[key] = np.array([Payload(marker)] * 3, dtype=object)
    if key == "train_classes":
        arrays["test_classes"] = np.array([4, 5])
    np.savez(tmp_path / "g.npz", **arrays)
    one_line(capsys, ["train", "--graph", tmp_path / "g.npz", "--out", tmp_path / "run", *FAST],
             f"array '{key}' holds pickled Python objects, which are refused", "plain numeric arrays")
    assert not (tmp_path / "run").exists()


def test_user_graph_extra_pickled_arrays_are_never_read(tmp_path, marker):
    np.savez(tmp_path / "g.npz", **graph_arrays(), notes=np.array([Payload(marker)], dtype=object))
    data = load_npz_graph(tmp_path / "g.npz")
    assert data.num_nodes == 60


# --- data the PyG loaders would unpickle: Planetoid raw files and processed caches -------------
def test_malicious_planetoid_raw_file_is_refused(tmp_path, shared_data, monkeypatch, capsys):
    marker = tmp_path / "PWNED_RAW"
    raw = tmp_path / "root" / "planetoid" / "Cora" / "raw"
    shutil.copytree(shared_data / "planetoid" / "Cora" / "raw", raw)
    (raw / "ind.cora.x").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    monkeypatch.setenv("GNN_CML_CACHE", str(tmp_path / "cache"))
    code = main(["train", "--graph", "cora", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "run"),
                 *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "ind.cora.x" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


def test_malicious_planetoid_pickle_is_refused_by_the_unpickler(tmp_path, marker):
    """Past the checksums (a file not in the known set) the restricted unpickler still refuses."""
    from gnn_cml.data import planetoid

    path = tmp_path / "ind.cora.x"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(GnnCmlError, match="exec") as err:
        planetoid.unpickle_raw(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("graph", ["cora", "coauthor_cs"])
@pytest.mark.parametrize("kind", ["torch", "npz"])
def test_malicious_processed_cache_is_refused(tmp_path, shared_data, monkeypatch, graph, kind):
    """Processed caches are plain ``.npz`` read with allow_pickle=False: a planted pickle never runs."""
    from gnn_cml.data import load_graph

    marker = tmp_path / "PWNED_CACHE"
    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    root = shared_data
    if graph == "coauthor_cs":
        root = tmp_path / "root"
        _write_tiny_gnn_benchmark(root / "coauthor" / "CS" / "raw" / "ms_academic_cs.npz")
    first = load_graph(graph, root)
    processed = next(cache.rglob("processed/*.npz"))
    if kind == "torch":
        torch.save({"data": Payload(marker)}, processed)
    else:
        with np.load(processed, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["x_data"] = np.array([Payload(marker)] * len(arrays["x_data"]), dtype=object)
        np.savez(processed, **arrays)
    again = load_graph(graph, root)  # the damaged cache is rebuilt from the raw files
    assert not marker.exists()
    assert torch.equal(first.edge_index, again.edge_index) and torch.equal(first.y, again.y)
    assert not list(cache.rglob("*.pt"))


def _write_tiny_gnn_benchmark(path):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, f = 12, 5
    adj = sp.csr_matrix(rng.random((n, n)) < 0.3, dtype=np.float32)
    attr = sp.csr_matrix(rng.random((n, f)) < 0.5, dtype=np.float32)
    path.parent.mkdir(parents=True)
    np.savez(path, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
             attr_data=attr.data, attr_indices=attr.indices, attr_indptr=attr.indptr, attr_shape=attr.shape,
             labels=rng.integers(0, 3, n))
