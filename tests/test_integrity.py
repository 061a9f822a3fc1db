"""A run directory is owned by one process, verified when read, and never silently wrong (issue 18).

Each section matches a numbered point of the issue: (1) ownership with two real processes and a
stale lock, (2) evaluate refuses damaged finished runs, (3) a full disk, a read-only or unwritable
--out and Ctrl-C during a save end in one line with no temp file left and resume identically,
(4) damaged or undecodable files and out-of-range seeds end in one line, (5) damage never survives
a --resume, (6) --ways 1 is refused and long value lists are cut short.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_cml.cli import main
from gnn_cml.engine import rundir
from gnn_cml.engine.checkpoint import load_checkpoint
from helpers import without_keys

REPO = Path(__file__).resolve().parents[1]
# 2 batched runs x 8 episodes on real Cora, a checkpoint every 2 episodes.
ARGS = ["--graph", "cora", "--ways", "2", "--shots", "1", "--episodes", "8", "--val-every", "2",
        "--val-tasks", "3", "--test-tasks", "5", "--runs", "2", "--inner-steps", "1", "--seed", "3",
        "--patience", "100", "--no-progress"]
TIMING_KEYS = {"train_seconds", "test_seconds", "episodes_per_s", "wall_time_s", "seconds",
               "batched_runs"}  # how a run was executed (resumed alone or batched), not what it found


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def train(shared_data, out, *extra):
    return ["train", *ARGS, "--root", str(shared_data), "--out", str(out), *extra]


def run_cli(capsys, argv):
    """``gnn-cml argv`` in-process: (exit code, non-empty stderr lines)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def one_line(capsys, argv, *expected, code=2):
    got, lines = run_cli(capsys, argv)
    assert got == code and len(lines) == 1, (got, lines)
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def temp_files(root: Path):
    return [p for p in Path(root).rglob("*") if ".tmp" in p.name]


def metrics(run_dir: Path):
    return [without_keys(json.loads(line), TIMING_KEYS) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(out: Path, ref: Path):
    """Same per-run accuracies, results (timings aside), metric lines and models as ``ref``."""
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, ref))
    assert a["test_accuracy"]["runs"] == b["test_accuracy"]["runs"]
    assert without_keys(a, TIMING_KEYS) == without_keys(b, TIMING_KEYS)
    for run in range(2):
        assert metrics(out / f"run_{run}") == metrics(ref / f"run_{run}")
        mine, theirs = (load_checkpoint(d / f"run_{run}" / "model.pt")["model"] for d in (out, ref))
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    rundir.verify(out)  # sealed again, and intact
    assert (out / rundir.MANIFEST).exists() and not temp_files(out) and not (out / rundir.LOCK).exists()


def flip(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(count):
        data[middle + i] ^= 0xFF
    path.write_bytes(bytes(data))


def unfinish(out: Path) -> None:
    """Make ``out`` look killed after its last checkpoint of run 2 (run 1 finished, nothing sealed)."""
    for name in ("results.json", rundir.MANIFEST, "run_1/result.json", "run_1/model.pt"):
        (out / name).unlink()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data, _session_cache):
    """The undisturbed run (in-process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(_session_cache))
        assert main(train(shared_data, out)) == 0
    return out


@pytest.fixture
def run_copy(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


# --- 1. ownership ---------------------------------------------------------------------------------
# Trains like `gnn-cml train`, but waits after its second checkpoint until killed.
PAUSED_TRAIN = textwrap.dedent("""
    import sys, time
    from gnn_cml.engine.trainer import Trainer
    validate = Trainer.validate

    def paused(self, *args, **kwargs):
        validate(self, *args, **kwargs)
        if self.episode >= 4:
            print("paused", flush=True)
            time.sleep(600)

    Trainer.validate = paused
    from gnn_cml.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_two_processes_one_run_directory(tmp_path, shared_data, reference, capsys):
    """A second process is refused (naming the holder) while the first writes; once the first is
    killed, its stale lock does not block, and --resume ends equal to the undisturbed run."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, *train(shared_data, out)], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "paused", first.stderr.read()
        holder = f"pid {first.pid} on {socket.gethostname()}"
        # a real second process, as a user would start it
        second = subprocess.run([sys.executable, "-m", "gnn_cml.cli", *train(shared_data, out, "--resume")],
                                env=env(), capture_output=True, text=True, timeout=600)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert "is in use by " + holder in lines[0] and "wait for it to finish" in lines[0]
        one_line(capsys, train(shared_data, out, "--overwrite"), "is in use by " + holder)  # this process
        one_line(capsys, ["evaluate", out, "--no-progress"], "is in use by " + holder)
        assert (out / "run_0" / "checkpoint.pt").exists() and not (out / "results.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert json.loads((out / rundir.LOCK).read_text())["pid"] == first.pid  # stale: the kernel dropped the lock
    assert main(train(shared_data, out, "--resume")) == 0
    assert_same_run(out, reference)


def test_reproduce_output_folder_is_owned(tmp_path, shared_data, capsys):
    out = tmp_path / "table3"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gnn_cml.engine import rundir; "
                               "rundir.hold(sys.argv[1]); rundir.announce(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(600)", str(out)], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line(capsys, ["reproduce", "table3", "--quick", "--graphs", "citeseer", "--root", shared_data,
                          "--out", out, "--resume", "--no-progress"], f"is in use by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert list(out.iterdir()) == [out / rundir.LOCK]  # nothing trained or written


def test_lock_is_reentrant_and_released(tmp_path):
    rundir.hold(tmp_path / "d")
    rundir.hold(tmp_path / "d")
    rundir.announce(tmp_path / "d")
    rundir.release(tmp_path / "d")
    assert rundir.holds(tmp_path / "d") and (tmp_path / "d" / rundir.LOCK).exists()
    rundir.release(tmp_path / "d")
    assert not rundir.holds(tmp_path / "d") and not (tmp_path / "d" / rundir.LOCK).exists()


# --- 2. evaluate never reports numbers from damaged files -----------------------------------------
def test_evaluate_an_intact_run(run_copy, reference, capsys):
    assert main(["evaluate", str(run_copy), "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["method"] == "maml" and len(got["test_accuracy"]["runs"]) == 2


@pytest.mark.parametrize("damage,expected", [
    ("empty-config", ["config.yaml is empty", "settings are unknown"]),
    ("random-config", ["config.yaml is not YAML text"]),
    ("flipped-model", ["run_0/model.pt is truncated or corrupt", "bad CRC-32"]),
    ("resaved-model", ["run_0/model.pt was altered after the run finished", "not used", "--overwrite"]),
    ("edited-result", ["run_1/result.json was altered after the run finished"]),
    ("edited-config", ["config.yaml was altered after the run finished"]),
    ("empty-result", ["run_0/result.json was altered after the run finished"]),
    ("truncated-tasks", ["test_tasks.npz is not a valid task-set file"]),
    ("flipped-tasks", ["test_tasks.npz is not a valid task-set file", "CRC"]),
    ("resaved-tasks", ["test_tasks.npz was altered after the run finished"]),
    ("damaged-manifest", ["manifest.json is damaged"]),
])
def test_evaluate_refuses_a_damaged_finished_run(run_copy, capsys, damage, expected):
    if damage == "empty-config":
        (run_copy / "config.yaml").write_text("")
    elif damage == "random-config":
        (run_copy / "config.yaml").write_bytes(np.random.default_rng(0).bytes(2000))
    elif damage == "flipped-model":
        flip(run_copy / "run_0" / "model.pt")
    elif damage == "resaved-model":  # a valid file with other weights: only the manifest can tell
        state = torch.load(run_copy / "run_0" / "model.pt", weights_only=True)
        state["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()}
        torch.save(state, run_copy / "run_0" / "model.pt")
    elif damage == "edited-result":
        record = json.loads((run_copy / "run_1" / "result.json").read_text())
        (run_copy / "run_1" / "result.json").write_text(json.dumps(dict(record, seed=record["seed"] + 1)))
    elif damage == "edited-config":
        (run_copy / "config.yaml").write_text((run_copy / "config.yaml").read_text() + "# edited\n")
    elif damage == "empty-result":
        (run_copy / "run_0" / "result.json").write_text("")
    elif damage == "truncated-tasks":
        path = run_copy / "test_tasks.npz"
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "flipped-tasks":
        flip(run_copy / "test_tasks.npz", 16)
    elif damage == "resaved-tasks":
        with np.load(run_copy / "test_tasks.npz") as f:
            arrays = {k: f[k] for k in f.files}
        arrays["query"] = arrays["query"][:, ::-1].copy()
        np.savez(run_copy / "test_tasks.npz", **arrays)
    elif damage == "damaged-manifest":
        (run_copy / rundir.MANIFEST).write_text("{")
    one_line(capsys, ["evaluate", run_copy, "--no-progress"], *expected)


def test_evaluate_an_unfinished_run_with_a_cut_result(run_copy, capsys):
    unfinish(run_copy)
    (run_copy / "run_0" / "result.json").write_text('{"run": 0, "se')
    one_line(capsys, ["evaluate", run_copy, "--no-progress"], "run_0/result.json is cut short or damaged",
             "train --resume")


def test_evaluate_warns_when_nothing_can_be_verified(run_copy, capsys):
    (run_copy / rundir.MANIFEST).unlink()
    code, lines = run_cli(capsys, ["evaluate", run_copy, "--no-progress"])
    assert code == 0 and len(lines) == 1 and "cannot be verified" in lines[0]


def test_resume_with_a_damaged_checkpoint_names_the_file(run_copy, shared_data, capsys):
    unfinish(run_copy)
    flip(run_copy / "run_1" / "checkpoint.pt")
    line = one_line(capsys, train(shared_data, run_copy, "--resume"), "run_1/checkpoint.pt is truncated or corrupt")
    assert "nan" not in line and "--lr" not in line


# --- 3. I/O failures: one line, no temp file, and --resume completes identically ------------------
class FailingWrites:
    """Replace rundir's file writes: the ``at``-th one writes half its bytes, then raises ``exc``
    (``"sigint"``: sends Ctrl-C to this process half-way and goes on)."""

    def __init__(self, monkeypatch, at: int, exc):
        self.calls, self.at, self.exc = 0, at, exc
        self.real_write, self.real_append = rundir._write_file, rundir._append
        monkeypatch.setattr(rundir, "_write_file", self.write)
        monkeypatch.setattr(rundir, "_append", self.append)

    def _hit(self) -> bool:
        self.calls += 1
        return self.calls == self.at

    def write(self, path, payload):
        if not self._hit():
            return self.real_write(path, payload)
        with open(path, "wb") as fh:
            fh.write(payload[: len(payload) // 2])
        if self.exc == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            return self.real_write(path, payload)
        raise self.exc

    def append(self, fh, data):
        if not self._hit():
            return self.real_append(fh, data)
        fh.write(data[: len(data) // 2])
        fh.flush()
        if self.exc == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            fh.write(data[len(data) // 2:])
            return fh.flush()
        raise self.exc


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# 25 writes in all: .lock, config.yaml, split.json, then per validation and run a metric line and a
# checkpoint, then model.pt and result.json per run, results.json and (last) manifest.json
@pytest.mark.parametrize("at", [1, 5, 12, 22, 25])
def test_full_disk_is_one_line_and_resumes_identically(run_copy, tmp_path, shared_data, reference, capsys,
                                                       monkeypatch, at):
    out = tmp_path / "full"
    failing = FailingWrites(monkeypatch, at, ENOSPC)
    one_line(capsys, train(shared_data, out), "no space left on the device", "rerun with --resume")
    assert failing.calls == at and not temp_files(tmp_path)
    monkeypatch.undo()
    assert main(train(shared_data, out, "--resume")) == 0
    assert_same_run(out, reference)


def test_full_disk_while_writing_the_test_tasks(tmp_path, shared_data, capsys, monkeypatch):
    real = np.savez

    def savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez)
    one_line(capsys, train(shared_data, tmp_path / "run"), "cannot write", "test_tasks.npz",
             "no space left on the device")
    assert not temp_files(tmp_path)
    monkeypatch.setattr(np, "savez", real)


@pytest.mark.parametrize("code,expected", [(errno.EROFS, ["read-only", "pick a writable --out"]),
                                           (errno.EACCES, ["permission denied", "pick another --out"]),
                                           (errno.EIO, ["Input/output error"])])
def test_unwritable_out_is_one_line(tmp_path, shared_data, capsys, monkeypatch, code, expected):
    (tmp_path / "empty").mkdir()
    FailingWrites(monkeypatch, 1, OSError(code, os.strerror(code)))
    one_line(capsys, train(shared_data, tmp_path / "empty"), "cannot write", *expected)
    assert list((tmp_path / "empty").iterdir()) == []


def test_every_reproduce_target_reports_a_full_disk_in_one_line(tmp_path, shared_data, capsys, monkeypatch):
    for target, extra in (("table3", ["--graphs", "citeseer", "--methods", "gmeta", "--runs", "1"]),
                          ("gamma", ["--graphs", "citeseer", "--methods", "gmeta", "--runs", "1", "--gammas", "0,1"])):
        FailingWrites(monkeypatch, 1, ENOSPC)
        one_line(capsys, ["reproduce", target, "--quick", *extra, "--root", shared_data, "--out",
                          tmp_path / target, "--no-progress"], "no space left on the device")
        assert not temp_files(tmp_path)


def test_regression_reports_a_full_disk_in_one_line(tmp_path, capsys, monkeypatch):
    FailingWrites(monkeypatch, 1, ENOSPC)
    one_line(capsys, ["reproduce", "regression", "--quick", "--shots", "5", "--seeds", "0", "--iterations", "2",
                      "--test-tasks", "2", "--out", tmp_path / "reg", "--no-progress"],
             "no space left on the device")
    assert not temp_files(tmp_path)


def test_ctrl_c_during_a_save_finishes_it(tmp_path, shared_data, reference, capsys, monkeypatch):
    out = tmp_path / "run"
    failing = FailingWrites(monkeypatch, 5, "sigint")  # Ctrl-C half-way through the first checkpoint
    code, lines = run_cli(capsys, train(shared_data, out))
    assert code == 130 and lines == ["gnn-cml train: interrupted; rerun with --resume to continue"]
    assert failing.calls == 5 and not temp_files(out)
    assert load_checkpoint(out / "run_0" / "checkpoint.pt")["episode"] == 2  # the save was finished
    monkeypatch.undo()
    assert main(train(shared_data, out, "--resume")) == 0
    assert_same_run(out, reference)


def test_ctrl_c_that_abandons_a_save_leaves_no_temp_file(tmp_path, shared_data, reference, capsys, monkeypatch):
    out = tmp_path / "run"
    FailingWrites(monkeypatch, 5, KeyboardInterrupt())
    code, lines = run_cli(capsys, train(shared_data, out))
    assert code == 130 and len(lines) == 1 and not temp_files(out)
    monkeypatch.undo()
    assert main(train(shared_data, out, "--resume")) == 0
    assert_same_run(out, reference)


# --- 4. damaged inputs and bad seeds: one line --------------------------------------------------------
@pytest.mark.parametrize("flags,expected", [
    (["--split-seed", "-1"], "split_seed must be >= 0 and <= 2**32 - 1"),
    (["--split-seed", "99999999999"], "got 99999999999"),
    (["--seed", str(2**32)], "seed must be >= 0 and <= 2**32 - 1"),
])
def test_seeds_out_of_range(tmp_path, shared_data, capsys, flags, expected):
    one_line(capsys, train(shared_data, tmp_path / "run", *flags), expected)
    assert not (tmp_path / "run").exists()


def test_reproduce_seeds_out_of_range(tmp_path, shared_data, capsys):
    for argv in (["table3", "--seed", "-1"], ["table3", "--split-seeds", f"1234,{2**32}"], ["gamma", "--split-seed", "-5"],
                 ["regression", "--seeds", str(2**40)]):
        code, lines = run_cli(capsys, ["reproduce", *argv, "--out", tmp_path / "r", "--no-progress"])
        assert code == 2 and lines[-1].count("error") == 1 and "2**32 - 1" in lines[-1], lines
    assert not (tmp_path / "r").exists()


def test_random_bytes_config(tmp_path, shared_data, capsys):
    (tmp_path / "c.yaml").write_bytes(np.random.default_rng(1).bytes(2000))
    one_line(capsys, train(shared_data, tmp_path / "run", "--config", tmp_path / "c.yaml"), "is not YAML text")


def test_random_bytes_run_config_on_resume(run_copy, shared_data, capsys):
    (run_copy / "config.yaml").write_bytes(np.random.default_rng(2).bytes(2000))
    one_line(capsys, train(shared_data, run_copy, "--resume"), "config.yaml is not YAML text")


def test_empty_run_config_on_resume(run_copy, shared_data, capsys):
    unfinish(run_copy)
    (run_copy / "config.yaml").write_text("")
    one_line(capsys, train(shared_data, run_copy, "--resume"), "config.yaml is empty")


def test_damaged_arm_of_reproduce_on_resume(run_copy, capsys):
    """``reproduce --resume`` reuses a finished arm only after verifying it (random-bytes results.json)."""
    from gnn_cml.config import resolve
    from gnn_cml.errors import GnnCmlError
    from gnn_cml.experiments.paired import load_results
    from gnn_cml.experiments.grid import run_arm

    (run_copy / "results.json").write_bytes(np.random.default_rng(3).bytes(500))
    cfg = resolve({}, run_copy / "config.yaml")
    with pytest.raises(GnnCmlError, match="results.json was altered after the run finished"):
        run_arm(cfg, run_copy, run_copy / "test_tasks.npz", resume=True, overwrite=False, progress=False)
    with pytest.raises(GnnCmlError, match="is not valid JSON"):
        load_results(run_copy)


# --- 5. damage never survives --resume ------------------------------------------------------------
@pytest.mark.parametrize("name", ["test_tasks.npz", "run_0/model.pt", "run_1/metrics.jsonl", "split.json"])
def test_resume_of_a_damaged_finished_run_is_refused(run_copy, shared_data, capsys, name):
    flip(run_copy / name, 8)
    one_line(capsys, train(shared_data, run_copy, "--resume"), f"{name} was altered after the run finished")


@pytest.mark.parametrize("damage", ["cut-metrics", "random-metrics", "flipped-tasks", "flipped-model-run0",
                                    "empty-result-run0", "temp-files"])
def test_resume_rebuilds_damaged_partial_files(run_copy, shared_data, reference, damage):
    unfinish(run_copy)
    if damage == "cut-metrics":
        path = run_copy / "run_1" / "metrics.jsonl"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "random-metrics":
        (run_copy / "run_1" / "metrics.jsonl").write_bytes(np.random.default_rng(4).bytes(500))
    elif damage == "flipped-tasks":
        flip(run_copy / "test_tasks.npz", 16)
    elif damage == "flipped-model-run0":
        flip(run_copy / "run_0" / "model.pt")
    elif damage == "empty-result-run0":
        (run_copy / "run_0" / "result.json").write_text("")
    else:
        (run_copy / "run_0" / ".checkpoint.pt.tmp99999").write_bytes(b"half")
        (run_copy / ".test_tasks.npz.tmp99999").write_bytes(b"half")
    assert main(train(shared_data, run_copy, "--resume")) == 0
    assert_same_run(run_copy, reference)


def test_append_cuts_a_partial_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    rundir.append_line(path, '{"c": 3}')
    assert path.read_text() == '{"a": 1}\n{"c": 3}\n'
    path.write_text('{"a": 1}')  # no complete line at all
    rundir.append_line(path, '{"c": 3}')
    assert path.read_text() == '{"c": 3}\n'


# --- 6. 1-way tasks, long value lists ---------------------------------------------------------------
def test_one_way_is_refused(tmp_path, shared_data, capsys):
    one_line(capsys, train(shared_data, tmp_path / "run", "--ways", "1"), "ways must be at least 2, got 1",
             "--ways 2")


def test_messages_name_a_few_values_and_the_count(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 10, n)
    y[0] = 1000
    np.savez(tmp_path / "own.npz", edge_index=np.stack([np.arange(n - 1), np.arange(1, n)]),
             x=rng.normal(size=(n, 8)).astype(np.float32), y=y)
    line = one_line(capsys, ["train", "--graph", tmp_path / "own.npz", "--out", tmp_path / "run", "--ways", "2",
                             "--shots", "1", "--no-progress"], "in all)")
    assert len(line) < 400, line
