"""Interruption and resume, NaN stops and memory over long runs.

A ``gnn-cml train`` on real Cora is SIGKILLed twice (once in the middle of writing a
checkpoint, once between checkpoints in its second run) and finished with ``--resume``:
``results.json``, every ``metrics.jsonl`` line and the saved models must equal those of
an uninterrupted run with the same seed exactly (timings excluded).
"""
from __future__ import annotations

import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_cml.cli import main
from gnn_cml.engine.checkpoint import load_checkpoint
from helpers import without_keys

REPO = Path(__file__).resolve().parents[1]
# 2 runs x 30 episodes, a checkpoint every 5 episodes (6 per run), one run after the other (the kill
# points below count checkpoints in that order; batched runs are interrupted in test_batched_runs.py).
ARGS = ["--graph", "cora", "--ways", "2", "--shots", "1", "--episodes", "30", "--val-every", "5",
        "--val-tasks", "3", "--test-tasks", "5", "--runs", "2", "--inner-steps", "1", "--seed", "7",
        "--no-batch-runs", "--no-progress"]
TIMING_KEYS = {"train_seconds", "test_seconds", "episodes_per_s", "wall_time_s", "seconds"}




def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def untimed(obj):
    return without_keys(obj, TIMING_KEYS)


def metrics(run_dir: Path):
    return [untimed(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(out: Path, ref: Path):
    a, b = json.loads((out / "results.json").read_text()), json.loads((ref / "results.json").read_text())
    assert untimed(a) == untimed(b)  # test accuracies, per-run values, episodes, best episodes, split, config
    assert a["test_accuracy"]["runs"] == b["test_accuracy"]["runs"]
    for run in range(2):
        assert metrics(out / f"run_{run}") == metrics(ref / f"run_{run}")
        mine, theirs = (load_checkpoint(d / f"run_{run}" / "model.pt")["model"] for d in (out, ref))
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    with np.load(out / "test_tasks.npz") as f, np.load(ref / "test_tasks.npz") as g:
        assert all(np.array_equal(f[k], g[k]) for k in f.files)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data, _session_cache):
    """The uninterrupted run (in-process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(_session_cache))
        assert main(["train", *ARGS, "--root", str(shared_data), "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["episodes"] for r in result["runs"]] == [30, 30]
    return out


# Dies (SIGKILL, no cleanup) half-way through writing its KILL_AT-th checkpoint to disk.
KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    from gnn_cml.engine import rundir
    KILL_AT = int(os.environ["KILL_AT"])
    real_write, calls = rundir._write_file, [0]

    def write(path, payload):
        if "checkpoint.pt" in path.name:
            calls[0] += 1
            if calls[0] == KILL_AT:
                with open(path, "wb") as fh:
                    fh.write(payload[: len(payload) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real_write(path, payload)

    rundir._write_file = write
    from gnn_cml.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_twice_then_resume_equals_an_uninterrupted_run(tmp_path, shared_data, reference):
    out = tmp_path / "run"
    cli = ["train", *ARGS, "--root", str(shared_data), "--out", str(out)]

    # 1. killed while writing the 3rd checkpoint of run 0 (episode 15)
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DURING_WRITE)
    proc = subprocess.run([sys.executable, str(driver), *cli], env=dict(env(), KILL_AT="3"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run0 = out / "run_0"
    temps = list(run0.glob(".checkpoint.pt.tmp*"))
    assert len(temps) == 1, "the half-written checkpoint is a temp file beside checkpoint.pt"
    with pytest.raises(Exception):
        torch.load(temps[0], weights_only=True)
    state = load_checkpoint(run0 / "checkpoint.pt")  # the previous checkpoint, intact
    assert state["episode"] == 10 and len(state["history"]) == 2
    assert len((run0 / "metrics.jsonl").read_text().splitlines()) == 3  # one line past the checkpoint
    assert not (out / "results.json").exists() and not (run0 / "result.json").exists()

    # 2. resumed with the real CLI, SIGKILLed again once run 1 has its first checkpoint
    proc = subprocess.Popen([sys.executable, "-m", "gnn_cml.cli", *cli, "--resume"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "run_1" / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert (run0 / "result.json").exists() and not (out / "results.json").exists()
    assert not list(run0.glob(".checkpoint.pt.tmp*")), "resume removes the half-written temp file"
    assert load_checkpoint(out / "run_1" / "checkpoint.pt")["episode"] < 30

    # 3. resumed to the end (in-process)
    assert main(cli + ["--resume"]) == 0
    assert_same_run(out, reference)


def test_resume_of_a_finished_run_changes_nothing(tmp_path, shared_data, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    assert main(["train", *ARGS, "--root", str(shared_data), "--out", str(out), "--resume"]) == 0
    assert_same_run(out, reference)


def test_kill_before_the_first_checkpoint_leaves_no_stale_metrics(tmp_path, shared_data, reference):
    """Killed after a metrics line but before the first checkpoint of run 1: the restart of run 1
    must not keep that line (metrics.jsonl would otherwise hold a duplicate episode)."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "results.json").unlink()
    (out / "manifest.json").unlink()  # an unfinished run has no manifest (it is written last)
    run1 = out / "run_1"
    first_line = (run1 / "metrics.jsonl").read_text().splitlines()[0]
    shutil.rmtree(run1)
    run1.mkdir()
    (run1 / "metrics.jsonl").write_text(first_line + "\n")
    (run1 / ".checkpoint.pt.tmp4242").write_bytes(b"half a checkpoint")
    assert main(["train", *ARGS, "--root", str(shared_data), "--out", str(out), "--resume"]) == 0
    assert_same_run(out, reference)
    assert not list(run1.glob(".checkpoint.pt.tmp*"))


# --- NaN / inf -----------------------------------------------------------------------------------
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, shared_data, capsys, monkeypatch,
                                                              poison):
    from gnn_cml.meta.maml import MAML

    forward, calls = MAML.forward, [0]

    def poisoned(self, episode, train=True):
        result = forward(self, episode, train)
        if train and self.training:
            calls[0] += 1
            if calls[0] == 8:  # the 8th training episode; checkpoints were written at 3 and 6
                if poison == "loss":
                    result.loss = result.loss * float("nan")
                else:  # finite loss, NaN meta-gradient (the where/sqrt trap)
                    p = next(self.parameters())
                    result.loss = result.loss + torch.where(torch.tensor(False), torch.sqrt(-1 - p.sum().abs()),
                                                            torch.tensor(0.0))
                    assert math.isfinite(float(result.loss.detach()))
        return result

    monkeypatch.setattr(MAML, "forward", poisoned)
    out = tmp_path / "run"
    code = main(["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out), "--episodes", "20",
                 "--val-every", "3", "--val-tasks", "2", "--test-tasks", "2", "--runs", "1", "--inner-steps", "1",
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    what = "training loss became nan" if poison == "loss" else "meta-gradient became NaN/inf"
    assert f"{what} at episode 8" in err[0] and "at episode 6" in err[0] and "lower --lr" in err[0], err[0]
    state = load_checkpoint(out / "run_0" / "checkpoint.pt")
    assert state["episode"] == 6
    for weights in (state["model"], state["best_state"]):
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert not (out / "results.json").exists() and not (out / "run_0" / "model.pt").exists()


def test_absurd_learning_rate_stops_with_a_clear_message(tmp_path, shared_data, capsys):
    """Adam's first step at lr 1e30 moves every weight by ~1e30: episode 2's loss is NaN."""
    out = tmp_path / "run"
    code = main(["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out), "--episodes", "30",
                 "--val-every", "1", "--val-tasks", "1", "--test-tasks", "2", "--runs", "1", "--inner-steps", "1",
                 "--lr", "1e30", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "the training loss became nan at episode 2" in err[0] and "lower --lr or --inner-lr" in err[0], err[0]
    state = load_checkpoint(out / "run_0" / "checkpoint.pt")
    assert state["episode"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (out / "results.json").exists()


# --- memory over many episodes ---------------------------------------------------------------
def test_memory_stays_flat(tmp_path, monkeypatch):
    """No tensor (or autograd graph) survives an episode: the live-tensor count is the same at
    episode 100 and 400, and RSS grows by less than a generous 50 MB. Second-order MAML+CML on a
    small generated graph keeps it fast; benchmarks/memory_long_run.py does Cora over 10,000."""
    psutil = pytest.importorskip("psutil")
    from gnn_cml.config import resolve
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.experiments.graph import GraphTask
    from gnn_cml.meta.factory import build_learner
    from gnn_cml.sampling import TaskSet

    rng = np.random.default_rng(0)
    n = 400
    np.savez(tmp_path / "g.npz", x=rng.random((n, 64)).astype(np.float32), y=np.arange(n) % 6,
             edge_index=rng.integers(0, n, (2, 2000)))
    cfg = resolve({"graph": str(tmp_path / "g.npz"), "cml": True, "inner_steps": 2, "patience": 10**9})
    task = GraphTask.build(cfg)
    learner = build_learner(cfg, task.graph, seed=1)
    val = TaskSet.generate(task.sampler("val", 5, 2), 2)
    trainer = Trainer(learner, task.sampler("train", 5, 1), val,
                      TrainerConfig(episodes=400, val_every=50, patience=10**9, progress=False),
                      run_dir=tmp_path / "run", tensorboard=False)
    proc, seen, step = psutil.Process(), {}, trainer.step

    def measured():
        result = step()
        if trainer.episode in (100, 400):
            gc.collect()
            tensors = sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)
            seen[trainer.episode] = (proc.memory_info().rss, tensors)
        return result

    trainer.step = measured
    trainer.fit()
    (rss100, t100), (rss400, t400) = seen[100], seen[400]
    assert t400 <= t100, (t100, t400)
    assert rss400 - rss100 < 50 * 2**20, (rss100 / 2**20, rss400 / 2**20)


def test_resampled_validation_tasks_differ_each_time_and_resume_exactly(tmp_path, shared_data):
    """--val-resample: fresh validation tasks at every validation (as the reference scripts), and a run
    killed mid-way resumes to the same result (the validation sampler's state is checkpointed)."""
    from gnn_cml.sampling import EpisodeSampler
    from gnn_cml.sampling.episodes import ResampledTasks

    tasks = ResampledTasks(EpisodeSampler(np.arange(30) % 3, [0, 1, 2], 2, 1, 2, seed=0), 4)
    first, second = [torch.cat([e.support, e.query]) for e in tasks], [torch.cat([e.support, e.query]) for e in tasks]
    assert len(first) == 4 and not all(torch.equal(a, b) for a, b in zip(first, second))

    args = [a for a in ARGS if a != "--no-progress"] + ["--no-progress", "--val-resample", "--root", str(shared_data)]
    ref = tmp_path / "ref"
    assert main(["train", *args, "--out", str(ref)]) == 0
    assert "val_resample: true" in (ref / "config.yaml").read_text()
    out = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DURING_WRITE)
    proc = subprocess.run([sys.executable, str(driver), "train", *args, "--out", str(out)],
                          env=dict(env(), KILL_AT="4"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert main(["train", *args, "--out", str(out), "--resume"]) == 0
    assert_same_run(out, ref)
    fixed = tmp_path / "fixed"  # the same run with one fixed validation set validates on other tasks
    assert main(["train", *[a for a in args if a != "--val-resample"], "--out", str(fixed)]) == 0
    assert metrics(fixed / "run_0") != metrics(ref / "run_0")
