"""Meta-batches over processes (torch.distributed, gloo): same parameters as one process, rank 0 writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from gnn_cml.config import resolve
from gnn_cml.experiments.graph import run_experiment

WORLD = 2
# dropout stays at 0.5: per-task seeds must make the masks independent of the rank layout
SETTINGS = {"graph": "cora", "method": "maml", "cml": True, "ways": 2, "shots": 1, "meta_batch": 4,
            "episodes": 6, "val_every": 3, "val_tasks": 3, "test_tasks": 4, "runs": 1, "inner_steps": 3}
CLI_ARGS = ["train", "--graph", "cora", "--method", "maml", "--cml", "--ways", "2", "--shots", "1",
            "--meta-batch", "4", "--episodes", "6", "--val-every", "3", "--val-tasks", "3", "--test-tasks", "4",
            "--runs", "1", "--inner-steps", "3", "--no-progress"]


def _worker(rank: int, init_file: str, cfg, out_root: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        run_experiment(cfg, Path(out_root) / f"rank{rank}", progress=False)
    finally:
        torch_dist.destroy_process_group()


def _model(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_params(a, b, tol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tol, rtol=0), (key, (a[key] - b[key]).abs().max())


@pytest.fixture
def one_thread():
    """Both sides of a comparison run single-threaded, like the workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_follow_one_process_and_only_rank_0_writes(shared_data, tmp_path, one_thread):
    cfg = resolve(dict(SETTINGS, data_root=str(shared_data)))
    single = run_experiment(cfg, tmp_path / "single", progress=False)  # also fills the data cache
    mp.spawn(_worker, args=(str(tmp_path / "pg_init"), cfg, str(tmp_path)), nprocs=WORLD, join=True)

    assert not (tmp_path / "rank1").exists(), "rank 1 wrote files"
    ours, ref = tmp_path / "rank0", tmp_path / "single"
    for name in ("results.json", "config.yaml", "split.json", "test_tasks.npz", "run_0/model.pt",
                 "run_0/checkpoint.pt", "run_0/metrics.jsonl", "run_0/result.json"):
        assert (ours / name).is_file(), name
    # checkpoint.pt holds the parameters after the last step, model.pt the best validated ones
    _assert_same_params(_model(ours / "run_0/checkpoint.pt"), _model(ref / "run_0/checkpoint.pt"))
    _assert_same_params(_model(ours / "run_0/model.pt"), _model(ref / "run_0/model.pt"))
    spread = json.loads((ours / "results.json").read_text())
    assert spread["test_accuracy"]["runs"] == single["test_accuracy"]["runs"]
    lines = [[json.loads(line) for line in (d / "run_0/metrics.jsonl").read_text().splitlines()] for d in (ours, ref)]
    for a, b in zip(*lines):
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)


def test_cli_train_under_torchrun(shared_data, tmp_path, one_thread):
    from gnn_cml.cli import main

    env = dict(os.environ, GNN_CML_DATA=str(shared_data), OMP_NUM_THREADS="1")
    assert main(CLI_ARGS + ["--root", str(shared_data), "--out", str(tmp_path / "single")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "gnn_cml", *CLI_ARGS, "--out", str(tmp_path / "torchrun")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"test_accuracy"') == 1, "only rank 0 prints the summary"

    def files(root):
        return sorted(str(p.relative_to(root).parent if "tensorboard" in p.parts else p.relative_to(root))
                      for p in root.rglob("*") if p.is_file())

    assert files(tmp_path / "torchrun") == files(tmp_path / "single")
    _assert_same_params(_model(tmp_path / "torchrun/run_0/checkpoint.pt"),
                        _model(tmp_path / "single/run_0/checkpoint.pt"))
