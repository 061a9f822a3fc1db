"""Every way a user can get the input wrong ends in one line on stderr and exit code 2.

For each bad input the real CLI runs (in-process through ``gnn_cml.cli.main``, and a few
through ``python -m gnn_cml.cli`` to check the process itself) and we assert: exit code 2,
exactly one stderr line that names the problem and the fix, no traceback, and nothing
written: no output directory, no ``results.json``, an existing run left byte-for-byte alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnn_cml.cli import main
from gnn_cml.errors import GnnCmlError
from gnn_cml.sampling import EpisodeSampler

REPO = Path(__file__).resolve().parents[1]
FAST = ["--episodes", "2", "--val-every", "1", "--val-tasks", "2", "--test-tasks", "2", "--runs", "1",
        "--inner-steps", "1", "--no-progress"]




# --- helpers -----------------------------------------------------------------------------------
def snapshot(root: Path):
    """Every path under ``root`` with its size and content hash: to prove nothing was written."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else None
    return out


def one_line_error(capsys, argv, *expected, where: Path = None):
    """Run ``gnn-cml argv`` in-process; return its single stderr line after the common checks."""
    before = snapshot(where) if where is not None else None
    if argv[0] == "evaluate":  # progress (start-up, loading) would add stderr lines before the error
        argv = [*argv, "--no-progress"]
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (code, captured.err)
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith(f"gnn-cml {argv[0]}: error: "), line
    for text in expected:
        assert text in line, (text, line)
    if where is not None:
        assert snapshot(where) == before, "bad input changed files"
    return line


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working directory: anything written relative to the cwd would show up here."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def train(shared_data, out, *extra):
    return ["train", "--graph", "cora", "--root", shared_data, "--out", out, *FAST, *extra]


# --- train: flags and their values ------------------------------------------------------------
BAD_FLAGS = [
    ("unknown-graph", ["--graph", "coraa"], ["unknown graph 'coraa'", "cora, citeseer", ".npz"]),
    ("unknown-method", ["--method", "mamll"], ["unknown method 'mamll'", "maml", "protonet", "gpn"]),
    ("ways-above-split", ["--ways", "3"], ["val classes", "3-way tasks need 3 classes", "--ways 2 or fewer"]),
    ("shots+queries-above-class", ["--shots", "100", "--queries", "200"],
     ["shots + queries = 300", "lower --shots or --queries"]),
    ("test-queries-above-class", ["--test-queries", "1000"], ["test classes", "lower --shots or --test-queries"]),
    ("empty-split", ["--split", "0,2,2"], ["split counts must be positive", "--split 3,2,2"]),
    ("empty-test-split", ["--split", "3,2,0"], ["split counts must be positive", "--split 3,2,2"]),
    ("split-too-big", ["--split", "3,2,20"], ["needs 25 classes but the graph has 7", "smaller counts"]),
    ("ways-0", ["--ways", "0"], ["ways must be at least 2, got 0", "--ways 2"]),
    ("ways-negative", ["--ways", "-2"], ["ways must be at least 2, got -2", "--ways 2"]),
    ("shots-negative", ["--shots", "-1"], ["shots must be positive, got -1", "--shots 1"]),
    ("queries-0", ["--queries", "0"], ["queries must be positive", "--queries 1"]),
    ("test-queries-0", ["--test-queries", "0"], ["test_queries must be positive", "--test-queries 1"]),
    ("lr-0", ["--lr", "0"], ["lr must be a positive finite number, got 0.0", "--lr 0.01"]),
    ("lr-negative", ["--lr", "-0.5"], ["lr must be a positive finite number", "--lr 0.01"]),
    ("lr-nan", ["--lr", "nan"], ["lr must be a positive finite number, got nan", "--lr 0.01"]),
    ("lr-inf", ["--lr", "inf"], ["lr must be a positive finite number, got inf", "--lr 0.01"]),
    ("inner-lr-negative", ["--inner-lr", "-1"], ["inner_lr must be a positive finite number", "--inner-lr 0.01"]),
    ("inner-lr-0", ["--inner-lr", "0"], ["inner_lr must be a positive finite number", "--inner-lr 0.01"]),
    ("inner-steps-negative", ["--inner-steps", "-1"], ["inner_steps must be >= 0", "--inner-steps 20"]),
    ("episodes-0", ["--episodes", "0"], ["episodes must be positive, got 0", "--episodes 1"]),
    ("meta-batch-0", ["--meta-batch", "0"], ["meta_batch must be positive", "--meta-batch 1"]),
    ("val-every-0", ["--val-every", "0"], ["val_every must be positive", "--val-every 1"]),
    ("val-tasks-0", ["--val-tasks", "0"], ["val_tasks must be positive", "--val-tasks 1"]),
    ("test-tasks-0", ["--test-tasks", "0"], ["test_tasks must be positive", "--test-tasks 1"]),
    ("runs-0", ["--runs", "0"], ["runs must be positive", "--runs 1"]),
    ("patience-0", ["--patience", "0"], ["patience must be positive", "--patience 1"]),
    ("gamma-negative", ["--cml", "--gamma", "-1"], ["gamma must be a finite number >= 0", "--gamma 0.2"]),
    ("seed-negative", ["--seed", "-1"], ["seed must be >= 0", "--seed 0"]),
    ("unknown-backbone", ["--backbone", "transformer"], ["unknown backbone 'transformer'", "gcn, sgc"]),
    ("cml-without-inner-loop", ["--method", "protonet", "--cml"], ["gradient-based", "use maml"]),
    ("missing-task-file", ["--task-file", "nope.npz"], ["nope.npz is not a valid task-set file", "regenerate"]),
    ("missing-config", ["--config", "nope.yaml"], ["config file nope.yaml does not exist", "--config path"]),
    ("missing-user-graph", ["--graph", "nope.npz"], ["graph file nope.npz does not exist", "check the path"]),
]


@pytest.mark.parametrize("flags,expected", [c[1:] for c in BAD_FLAGS], ids=[c[0] for c in BAD_FLAGS])
def test_bad_flag_values(work, shared_data, capsys, flags, expected):
    one_line_error(capsys, train(shared_data, work / "run", *flags), *expected, where=work)
    assert not (work / "run").exists()


@pytest.mark.parametrize("flags,name", [(["--ways", "abc"], "--ways"), (["--lr", "fast"], "--lr"),
                                        (["--split", "3,2"], "--split"), (["--norm", "max"], "--norm")])
def test_malformed_flag_types_are_argparse_errors(work, shared_data, capsys, flags, name):
    """argparse itself rejects these (usage line + one error line, exit 2): acceptable for flag types."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in train(shared_data, work / "run", *flags)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"gnn-cml train: error: argument {name}")
    assert not (work / "run").exists()


# --- YAML configs -----------------------------------------------------------------------------
BAD_YAML = [
    ("malformed", "ways: [2\nshots: 1\n", ["is not valid YAML at line", "fix its syntax"]),
    ("tab-indented", "ways: 2\n\tshots: 1\n", ["is not valid YAML", "fix its syntax"]),
    ("unknown-key", "wayz: 2\n", ["unknown config key 'wayz'", "did you mean ways", "valid keys are"]),
    ("unknown-key-typo", "inner_lrr: 0.1\n", ["unknown config key 'inner_lrr'", "inner_lr"]),
    ("not-a-mapping", "- ways\n- shots\n", ["must be a mapping of key: value lines"]),
    ("wrong-type-int", "ways: two\n", ["config key 'ways' must be an integer, got 'two'"]),
    ("fractional-int", "shots: 1.5\n", ["config key 'shots' must be an integer, got 1.5"]),
    ("null-int", "queries: null\n", ["config key 'queries' must be an integer, got None"]),
    ("bool-as-int", "ways: true\n", ["config key 'ways' must be an integer, got True"]),
    ("wrong-type-float", "lr: fast\n", ["config key 'lr' must be a number, got 'fast'"]),
    ("wrong-type-bool", "cml: maybe\n", ["config key 'cml' must be true or false, got 'maybe'"]),
    ("split-string", "split: '3,2,2'\n", ["config key 'split' must be three class counts", "[3, 2, 2]"]),
    ("split-junk", "split: [3, 2, a]\n", ["config key 'split' must be three class counts"]),
    ("co-hidden-junk", "cml: true\nco_hidden: abc\n", ["config key 'co_hidden' must be a list", "[16]"]),
    ("co-hidden-negative", "cml: true\nco_hidden: [-1]\n", ["co_hidden must list positive layer sizes"]),
    ("labels-per-class-negative", "labels_per_class: -1\n", ["labels_per_class must be positive, got -1"]),
    ("labels-per-class-too-big", "labels_per_class: 100000\n", ["fewer than labels_per_class=100000", "lower it"]),
    ("test-inner-steps-negative", "test_inner_steps: -1\n", ["test_inner_steps must be >= 0"]),
    ("hidden-0", "hidden: 0\n", ["hidden must be positive", "'hidden: 1' in the --config file"]),
    ("dropout-1", "dropout: 1.0\n", ["dropout must be in [0, 1)"]),
    ("norm", "norm: max\n", ["norm must be row or sym"]),
    ("weight-decay-inf", "weight_decay: .inf\n", ["weight_decay must be a finite number >= 0"]),
    ("pool", "method: gmeta\npool: max\n", ["unknown subgraph pooling 'max'", "mean or center"]),
    ("modulation", "method: ammgnn\nmodulation: film\n", ["modulation must be one of reference, scalar, feature, got 'film'"]),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML])
def test_bad_yaml_config(work, shared_data, capsys, text, expected):
    config = work / "config.yaml"
    config.write_text(text)
    one_line_error(capsys, train(shared_data, work / "run", "--config", config), *expected, where=work)
    assert not (work / "run").exists()


def test_bad_yaml_data_root(work, capsys):
    (work / "config.yaml").write_text("data_root: 5\n")
    one_line_error(capsys, ["train", "--graph", "cora", "--out", work / "run", *FAST, "--config",
                            work / "config.yaml"], "config key 'data_root' must be a folder path", where=work)


# --- a user graph .npz ------------------------------------------------------------------------
def _good_arrays(n=120, f=6, c=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.random((n, f)).astype(np.float32), "y": np.arange(n) % c,
            "edge_index": np.stack([rng.integers(0, n, 400), rng.integers(0, n, 400)])}


def _edit(**changes):
    arrays = _good_arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value(arrays[key]) if callable(value) else value
    return arrays


def _set(a, index, value):
    a = a.copy()
    a[index] = value
    return a


BAD_GRAPHS = [
    ("missing-edge-index", dict(edge_index=None), ["missing array(s) 'edge_index'", "np.savez"]),
    ("missing-y", dict(y=None), ["missing array(s) 'y'", "np.savez"]),
    ("missing-x", dict(x=None), ["missing array(s) 'x'", "np.savez"]),
    ("x-rows", dict(x=lambda x: x[:-3]), ["'x' must be (num_nodes x features) = (120 x F)", "got shape (117, 6)"]),
    ("x-1d", dict(x=lambda x: x[:, 0]), ["'x' must be (num_nodes x features)"]),
    ("edges-transposed", dict(edge_index=lambda e: e.T), ["must have shape (2, num_edges)", "edge_index.T"]),
    ("edges-3-rows", dict(edge_index=lambda e: np.concatenate([e, e[:1]])), ["must have shape (2, num_edges)"]),
    ("y-2d", dict(y=lambda y: np.stack([y, y])), ["'y' must be 1-D", "y.reshape(-1)"]),
    ("label-below-minus-1", dict(y=lambda y: _set(y, 3, -5)), ["label -5 at node 3", "renumber the classes"]),
    ("label-fractional", dict(y=lambda y: y + 0.5), ["'y' must hold integers", "np.int64"]),
    ("no-labels", dict(y=lambda y: np.full_like(y, -1)), ["'y' has no labelled node"]),
    ("split-class-out-of-range", dict(train_classes=np.array([0, 1, 2]), test_classes=np.array([3, 9])),
     ["'test_classes' names class 9", "classes 0..5"]),
    ("nan-features", dict(x=lambda x: _set(x, (2, 1), np.nan)), ["'x' has 1 NaN/inf value(s)", "np.nan_to_num"]),
    ("inf-features", dict(x=lambda x: _set(x, (4, 0), -np.inf)), ["'x' has 1 NaN/inf value(s)", "np.nan_to_num"]),
    ("edge-to-missing-node", dict(edge_index=lambda e: _set(e, (1, 5), 130)),
     ["refers to node 130, but there are 120 nodes", "0-based node ids"]),
    ("negative-edge", dict(edge_index=lambda e: _set(e, (0, 5), -1)), ["refers to node -1"]),
    ("string-features", dict(x=lambda x: x.astype(str)), ["'x' must be numeric", "np.float32"]),
    ("two-classes", dict(y=lambda y: y % 2), ["graph has 2 classes", "at least 3"]),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in BAD_GRAPHS], ids=[c[0] for c in BAD_GRAPHS])
def test_bad_user_graph(work, capsys, changes, expected):
    path = work / "graph.npz"
    np.savez(path, **_edit(**changes))
    line = one_line_error(capsys, ["train", "--graph", path, "--out", work / "run", *FAST,
                                   "--test-queries", "2"], *expected, where=work)
    if "classes" not in changes and "y" not in changes or "label" in expected[0] or "'y'" in expected[0]:
        assert str(path) in line  # loader messages name the file
    assert not (work / "run").exists()


def test_good_user_graph_trains(work, capsys):
    """The base of the cases above is itself a valid graph (so each case breaks one thing)."""
    path = work / "graph.npz"
    np.savez(path, **_good_arrays())
    assert main(["train", "--graph", str(path), "--out", str(work / "run"), *FAST, "--test-queries", "2"]) == 0
    assert (work / "run" / "results.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "single-npy"])
def test_corrupt_user_graph_file(work, capsys, damage):
    path = work / "graph.npz"
    np.savez(path, **_good_arrays())
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with open(path, "wb") as fh:
            np.save(fh, np.arange(3))
    one_line_error(capsys, ["train", "--graph", path, "--out", work / "run", *FAST], str(path), "save",
                   where=work)
    assert not (work / "run").exists()


# --- damaged Planetoid data -------------------------------------------------------------------
def _copy_cora(shared_data, dest: Path) -> Path:
    raw = dest / "planetoid" / "Cora" / "raw"
    shutil.copytree(shared_data / "planetoid" / "Cora" / "raw", raw)
    return raw


@pytest.mark.parametrize("name,keep", [("ind.cora.x", 0.5), ("ind.cora.graph", 0.9), ("ind.cora.allx", 0.0)])
def test_truncated_planetoid_raw_file(work, tmp_path, shared_data, capsys, monkeypatch, name, keep):
    root = tmp_path / "root"
    raw = _copy_cora(shared_data, root)
    monkeypatch.setenv("GNN_CML_CACHE", str(tmp_path / "cache"))  # force processing of the damaged copy
    blob = (raw / name).read_bytes()
    (raw / name).write_bytes(blob[: int(len(blob) * keep)])
    one_line_error(capsys, ["train", "--graph", "cora", "--root", root, "--out", work / "run", *FAST],
                   "could not read", "cora", where=work)
    assert not (work / "run").exists()


def test_corrupt_processed_cache(work, tmp_path, shared_data, capsys, monkeypatch):
    """A cache half-written by a killed process must not turn into a traceback forever after."""
    from gnn_cml.data import load_graph

    cache = tmp_path / "cache"
    monkeypatch.setenv("GNN_CML_CACHE", str(cache))
    first = load_graph("cora", shared_data)
    processed = next(cache.rglob("processed/*.npz"))
    processed.write_bytes(processed.read_bytes()[:1000])
    again = load_graph("cora", shared_data)  # rebuilt from the (checksummed) raw files
    assert torch.equal(first.x, again.x) and torch.equal(first.edge_index, again.edge_index)
    with np.load(processed, allow_pickle=False) as f:
        assert f["y"].shape == (2708,)


def test_missing_planetoid_files_offline(work, tmp_path, capsys, no_network):
    root = tmp_path / "empty_root"
    root.mkdir()
    one_line_error(capsys, ["train", "--graph", "cora", "--root", root, "--out", work / "run", *FAST],
                   "could not read cora", "GNN_CML_DATA")
    assert not (work / "run").exists()


def test_truncated_planetoid_index_file_is_detected(work, tmp_path, shared_data, capsys, monkeypatch):
    root = tmp_path / "root"
    raw = _copy_cora(shared_data, root)
    monkeypatch.setenv("GNN_CML_CACHE", str(tmp_path / "cache"))
    blob = (raw / "ind.cora.test.index").read_bytes()
    (raw / "ind.cora.test.index").write_bytes(blob[: len(blob) // 2])
    line = one_line_error(capsys, ["train", "--graph", "cora", "--root", root, "--out", work / "run", *FAST],
                          "truncated or corrupt", "sha256")
    assert str(raw / "ind.cora.test.index") in line


# --- output directories ----------------------------------------------------------------------
@pytest.fixture
def run_copy(finished_run, work):
    out = work / "old_run"
    shutil.copytree(finished_run, out)
    return out


def test_existing_run_is_refused(run_copy, shared_data, capsys, work):
    one_line_error(capsys, train(shared_data, run_copy), "exists from another run", "--resume", "--overwrite",
                   where=work)


def test_resume_with_a_different_config_is_refused(run_copy, shared_data, capsys, work):
    one_line_error(capsys, train(shared_data, run_copy, "--lr", "0.5", "--resume"),
                   "--resume with a different config", "lr", "--overwrite", where=work)


def test_resume_with_a_corrupt_saved_config(run_copy, shared_data, capsys, work):
    (run_copy / "config.yaml").write_text("ways: [2\n")
    one_line_error(capsys, train(shared_data, run_copy, "--resume"), "is not valid YAML", where=work)


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_overwrite_or_resume_never_touch_a_folder_that_is_not_a_run(work, shared_data, capsys, flag):
    precious = work / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    one_line_error(capsys, train(shared_data, precious, flag), "holds no gnn-cml run", f"--{flag[2:]}",
                   "pick another --out", where=work)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_out_is_a_file(work, shared_data, capsys):
    (work / "file").write_text("x")
    one_line_error(capsys, train(shared_data, work / "file"), "exists and is not a directory", where=work)


def test_out_cannot_be_created(work, shared_data, capsys):
    (work / "file").write_text("x")
    one_line_error(capsys, train(shared_data, work / "file" / "run"), "cannot create output directory",
                   "pick a writable --out", where=work)


def test_overwrite_replaces_a_real_run(run_copy, shared_data, capsys):
    assert main([str(a) for a in train(shared_data, run_copy, "--overwrite", "--runs", "1")]) == 0
    assert not (run_copy / "run_1").exists() and (run_copy / "results.json").exists()


# --- task files -------------------------------------------------------------------------------
def test_task_file_from_another_graph(work, shared_data, capsys, finished_run):
    args = ["train", "--graph", "citeseer", "--root", shared_data, "--out", work / "run", *FAST,
            "--task-file", finished_run / "test_tasks.npz"]
    one_line_error(capsys, args, "holds tasks on graph 'cora', not 'citeseer'", where=work)
    assert not (work / "run").exists()


def test_task_file_with_other_ways(work, shared_data, capsys, finished_run):
    one_line_error(capsys, train(shared_data, work / "run", "--shots", "2", "--task-file",
                                 finished_run / "test_tasks.npz"),
                   "holds 2-way 1-shot tasks, not 2-way 2-shot", "drop --task-file", where=work)


def test_task_file_with_nodes_outside_the_graph(work, shared_data, capsys, finished_run):
    with np.load(finished_run / "test_tasks.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["query"] = arrays["query"] + 100000
    np.savez(work / "tasks.npz", **arrays)
    one_line_error(capsys, train(shared_data, work / "run", "--task-file", work / "tasks.npz"),
                   "refers to nodes outside 0..2707", where=work)


@pytest.mark.parametrize("damage", ["labels-out-of-range", "shape-mismatch", "float-nodes"])
def test_task_file_malformed(work, shared_data, capsys, finished_run, damage):
    with np.load(finished_run / "test_tasks.npz") as f:
        arrays = {k: f[k] for k in f.files}
    if damage == "labels-out-of-range":
        arrays["query_y"] = arrays["query_y"] + 5
        expected = "has labels outside 0..1"
    elif damage == "shape-mismatch":
        arrays["support_y"] = arrays["support_y"][:, :1]
        expected = "is malformed"
    else:
        arrays["support"] = arrays["support"].astype(np.float32)
        expected = "is malformed"
    np.savez(work / "tasks.npz", **arrays)
    one_line_error(capsys, train(shared_data, work / "run", "--task-file", work / "tasks.npz"), expected,
                   "regenerate it", where=work)


def test_task_file_is_garbage(work, shared_data, capsys):
    (work / "tasks.npz").write_bytes(b"not a zip")
    one_line_error(capsys, train(shared_data, work / "run", "--task-file", work / "tasks.npz"),
                   "is not a valid task-set file", "regenerate it", where=work)


# --- evaluate ---------------------------------------------------------------------------------
def test_evaluate_a_folder_that_is_not_a_run(work, capsys):
    (work / "notes.txt").write_text("hi")
    one_line_error(capsys, ["evaluate", work], "is not a gnn-cml run directory (no config.yaml)",
                   "check the path", where=work)


def test_evaluate_a_missing_folder(work, capsys):
    one_line_error(capsys, ["evaluate", work / "nope"], "is not a gnn-cml run directory", where=work)


def test_evaluate_a_run_without_models(run_copy, capsys, work):
    for p in run_copy.glob("run_*/model.pt"):
        p.unlink()
    one_line_error(capsys, ["evaluate", run_copy], "has no finished run", "--resume", where=work)


def test_evaluate_an_unfinished_run(run_copy, capsys, work):
    (run_copy / "run_1" / "result.json").unlink()
    one_line_error(capsys, ["evaluate", run_copy], "run_1 is unfinished (no result.json)", "--resume",
                   where=work)


def test_evaluate_with_a_corrupt_config(run_copy, capsys, work):
    (run_copy / "config.yaml").write_text("graph: cora\n  ways: [\n")
    one_line_error(capsys, ["evaluate", run_copy], "is not valid YAML", where=work)


def test_evaluate_with_an_unknown_key_in_the_config(run_copy, capsys, work):
    (run_copy / "config.yaml").write_text((run_copy / "config.yaml").read_text() + "devise: cpu\n")
    one_line_error(capsys, ["evaluate", run_copy], "unknown config key 'devise'", "config.yaml", where=work)


def test_evaluate_a_model_of_another_shape(run_copy, capsys, work):
    state = torch.load(run_copy / "run_0" / "model.pt", weights_only=True)
    state["model"] = {k: torch.zeros(3) for k in state["model"]}
    torch.save(state, run_copy / "run_0" / "model.pt")
    one_line_error(capsys, ["evaluate", run_copy], "does not hold this run's model", "--overwrite", where=work)


def test_evaluate_a_truncated_model(run_copy, capsys, work):
    path = run_copy / "run_0" / "model.pt"
    path.write_bytes(path.read_bytes()[:200])
    one_line_error(capsys, ["evaluate", run_copy], "is truncated or corrupt", "retrain", where=work)


def test_evaluate_with_missing_test_tasks(run_copy, capsys, work):
    (run_copy / "test_tasks.npz").unlink()
    one_line_error(capsys, ["evaluate", run_copy], "test_tasks.npz is not a valid task-set file", where=work)


@pytest.mark.parametrize("argv,expected", [
    (["--tasks", "0"], "--tasks must be positive"),
    (["--co-learner"], "--co-learner needs a run trained with --cml"),
])
def test_evaluate_bad_flags(run_copy, capsys, work, argv, expected):
    one_line_error(capsys, ["evaluate", run_copy, *argv], expected, where=work)


# --- the real process: one line on the real stderr, nothing else ----------------------------
@pytest.fixture
def warm_cache(shared_data):
    """Process Cora into the session cache first, so PyG's 'Processing...' is not part of the test."""
    from gnn_cml.data import load_graph

    load_graph("cora", shared_data)


def test_real_process_one_line(work, shared_data, warm_cache):
    """``python -m gnn_cml.cli`` itself: exit 2, one stderr line, empty stdout, nothing written."""
    np.savez(work / "nan.npz", **_edit(x=lambda x: _set(x, (2, 1), np.nan)))
    (work / "bad.yaml").write_text("wayz: 2\n")
    (work / "taken").mkdir()
    (work / "taken" / "config.yaml").write_text("graph: cora\n")
    cases = [
        (["train", "--graph", "nosuch", "--out", work / "run"], "unknown graph 'nosuch'"),
        (["train", "--graph", work / "nan.npz", "--config", work / "bad.yaml"], "unknown config key 'wayz'"),
        (["train", "--graph", work / "nan.npz", "--out", work / "run"], "NaN/inf"),
        (["train", "--graph", "cora", "--root", shared_data, "--out", work / "taken"],
         "exists from another run"),
        (["evaluate", work, "--no-progress"], "not a gnn-cml run directory"),
    ]
    before = snapshot(work)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "gnn_cml.cli", *map(str, argv),
                               *(FAST if argv[0] == "train" else [])], cwd=work, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv, _ in cases]
    for (argv, expected), proc in zip(cases, procs):
        stdout, stderr = proc.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2, (argv, stderr)
        assert len(lines) == 1 and expected in lines[0], (argv, stderr)
        assert lines[0].startswith(f"gnn-cml {argv[0]}: error: ")
        assert "Traceback" not in stderr and stdout == ""
    assert snapshot(work) == before
    assert not list(work.rglob("results.json"))


# --- EpisodeSampler: valid disjoint episodes or GnnCmlError, never anything else -------------
count = st.one_of(st.integers(-2, 8), st.sampled_from([2.5, "2", None, True]))


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 12), min_size=0, max_size=6), unlabelled=st.integers(0, 5),
       ways=count, shots=count, queries=count, labels_per_class=st.one_of(st.none(), st.integers(1, 10)),
       seed=st.integers(0, 2**32 - 1), perm_seed=st.integers(0, 1000))
def test_episode_sampler_is_valid_or_refuses(sizes, unlabelled, ways, shots, queries, labels_per_class, seed,
                                              perm_seed):
    # class c has sizes[c] labelled nodes (0 = a class named in the split without nodes)
    y = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)] + [np.full(unlabelled, -1)]).astype(np.int64)
    y = np.random.default_rng(perm_seed).permutation(y)
    classes = list(range(len(sizes)))
    try:
        sampler = EpisodeSampler(torch.from_numpy(y), classes, ways, shots, queries, seed=seed,
                                 labels_per_class=labels_per_class)
    except GnnCmlError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # accepted: the request must have been satisfiable
    assert isinstance(ways, int) and isinstance(shots, int) and isinstance(queries, int)
    assert 0 < ways <= len(classes) and shots > 0 and queries > 0
    for _ in range(3):
        e = sampler.sample()
        support, query = e.support.numpy(), e.query.numpy()
        assert len(support) == ways * shots and len(query) == ways * queries
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        assert not set(support) & set(query)
        assert len(set(e.classes.tolist())) == ways and set(e.classes.tolist()) <= set(classes)
        assert sorted(e.support_y.tolist()) == sorted(list(range(ways)) * shots)
        assert sorted(e.query_y.tolist()) == sorted(list(range(ways)) * queries)
        # every node carries the label of the class its way stands for
        assert (y[support] == e.classes.numpy()[e.support_y.numpy()]).all()
        assert (y[query] == e.classes.numpy()[e.query_y.numpy()]).all()
