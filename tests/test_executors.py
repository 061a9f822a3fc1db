"""A study gives the same files and tables whatever runs its units: in this process, in worker
processes (``--jobs 2``) or as Ray tasks on a local 2-CPU Ray cluster, with a worker killed
mid-unit, and resumed on another executor after the whole study was killed.

The grid: CiteSeer, MAML ± CML and CML-dagger, 1- and 5-shot, ``--quick``, 2 runs (4 training units, then
2 dagger units), on real data.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import data_required
from gnn_cml.cli import main
from gnn_cml.experiments.executor import MARKERS

GRID = ["--graphs", "citeseer", "--methods", "maml", "--quick", "--runs", "2", "--dagger", "--no-progress"]
ARMS = [f"citeseer/2w{k}s/split_1234/{arm}" for k in (1, 5) for arm in ("maml", "maml+cml")]
TIMING = {"episodes_per_s", "wall_time_s"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Serial runs here and in the workers all use one thread (as the CLI does by default)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """A short-lived local Ray cluster of 2 CPUs for this module's tests."""
    try:
        import ray
    except ModuleNotFoundError:
        if data_required():  # CI installs gnn-cml[ray]: the Ray tests must run there
            pytest.fail("ray is not installed: pip install -e '.[test,ray]'", pytrace=False)
        pytest.skip("ray is not installed (pip install gnn-cml[ray])")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def reproduce(out: Path, root: Path, *extra: str) -> None:
    assert main(["reproduce", "table3", *GRID, "--root", str(root), "--out", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def serial(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("serial") / "study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(tmp_path_factory.mktemp("cache")))
        reproduce(out, shared_data)
    return out


def per_run_accuracies(out: Path):
    got = {}
    for arm in ARMS:
        results = json.loads((out / arm / "results.json").read_text())
        got[arm] = results["test_accuracy"]["runs"]
        for run in range(2):
            record = json.loads((out / arm / f"run_{run}" / "result.json").read_text())
            got[f"{arm} run {run} best_episode"] = record.get("best_episode")
    return got


def tables(out: Path):
    """Every report table, timing columns aside."""
    with open(out / "table3_arms.csv") as fh:
        arms = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]
    md = [line.rsplit("|", 2)[0] if line.startswith("| citeseer") and "episodes" not in line else line
          for line in (out / "table3.md").read_text().splitlines() if not line.startswith("Command:")]
    payload = json.loads((out / "table3.json").read_text())
    payload.pop("command")
    for row in payload["arms"]:
        for key in TIMING:
            row.pop(key)
    return (out / "table3.csv").read_text(), arms, md, payload


def assert_same_study(out: Path, reference: Path) -> None:
    assert per_run_accuracies(out) == per_run_accuracies(reference)
    assert tables(out) == tables(reference)
    assert not (out / MARKERS).exists(), "the executor's markers are removed when the study ends"
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "tensorboard" not in p.parts)  # noqa: E731
    assert files(out) == files(reference), "a unit writes exactly what a serial run writes"


def test_jobs_2_and_ray_give_the_serial_study(serial, shared_data, tmp_path, ray_cluster):
    reproduce(tmp_path / "jobs2", shared_data, "--jobs", "2")
    assert_same_study(tmp_path / "jobs2", serial)
    reproduce(tmp_path / "ray", shared_data, "--executor", "ray")
    assert_same_study(tmp_path / "ray", serial)


class Killer(threading.Thread):
    """SIGKILLs the worker of the first unit seen mid-unit (its arm started, not finished)."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.killed, self.stop = out, None, False

    def run(self):
        while not self.stop and self.killed is None:
            for marker in sorted((self.out / MARKERS).glob("*/unit_*.pid")):
                arm = self.out / ARMS[int(marker.stem.split("_")[1])]
                try:
                    pid = int(marker.read_text())
                except (OSError, ValueError):
                    continue
                if (arm / "config.yaml").exists() and not (arm / "results.json").exists():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (arm, pid)
                    return
            time.sleep(0.02)


@pytest.mark.parametrize("executor", [["--jobs", "2"], ["--executor", "ray"]], ids=["jobs2", "ray"])
def test_a_worker_killed_mid_unit_costs_only_its_unit(executor, serial, shared_data, tmp_path, request, capsys):
    if "ray" in executor:
        request.getfixturevalue("ray_cluster")
    out = tmp_path / "study"
    killer = Killer(out)
    killer.start()
    try:
        assert main(["reproduce", "table3", *[a for a in GRID if a != "--no-progress"], "--root", str(shared_data),
                     "--out", str(out), *executor]) == 0
    finally:
        killer.stop = True
        killer.join()
    assert killer.killed is not None, "no worker was caught mid-unit"
    if "--jobs" in executor:
        assert "worker died" in capsys.readouterr().err
    assert_same_study(out, serial)


def test_resume_across_executors(serial, shared_data, tmp_path, ray_cluster):
    """Start with --jobs 2, kill the whole study mid-grid, finish on Ray and (from a copy) serially."""
    out = tmp_path / "study"
    cli = [sys.executable, "-m", "gnn_cml.cli", "reproduce", "table3", *GRID, "--root", str(shared_data),
           "--out", str(out), "--jobs", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, "the study ended before it could be killed: " + proc.stderr.read().decode()
            assert time.monotonic() < deadline
            done = [a for a in ARMS if (out / a / "results.json").exists()]
            started = [a for a in ARMS if (out / a / "config.yaml").exists() and a not in done]
            if done and started:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()
    assert not (out / "table3.csv").exists()
    shutil.copytree(out, tmp_path / "copy")
    reproduce(out, shared_data, "--executor", "ray", "--resume")
    assert_same_study(out, serial)
    reproduce(tmp_path / "copy", shared_data, "--resume")
    assert_same_study(tmp_path / "copy", serial)


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "-1"], "--jobs must be 0"),
    (["--address", "auto"], "--address needs --executor ray"),
    (["--executor", "ray", "--address", "auto", "--jobs", "2"], "drop --jobs"),
])
def test_bad_executor_options_fail_in_one_line_before_any_output(flags, message, tmp_path, shared_data, capsys):
    out = tmp_path / "study"
    assert main(["reproduce", "table3", *GRID, "--root", str(shared_data), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items()
                if not any(w in k for w in ("seconds", "time", "command"))}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def test_regression_units_on_2_workers_give_the_serial_numbers(tmp_path):
    from gnn_cml.experiments.executor import LocalExecutor
    from gnn_cml.experiments.regression import run_regression

    kw = dict(shots_list=(5,), seeds=(0, 1), iterations=10, test_tasks=50, quick=True, progress=False)
    serial = run_regression(out=tmp_path / "serial", **kw)
    jobs = run_regression(out=tmp_path / "jobs2", executor=LocalExecutor(2), **kw)
    assert json.dumps(_without_timing(jobs), sort_keys=True) == json.dumps(_without_timing(serial), sort_keys=True)
    assert not (tmp_path / "jobs2" / MARKERS).exists()


def test_omniglot_units_on_2_workers_give_the_serial_numbers(tmp_path, shared_data):
    from gnn_cml.experiments.executor import LocalExecutor
    from gnn_cml.experiments.image import run_omniglot

    if not (shared_data / "omniglot").is_dir():
        pytest.skip("no omniglot data")
    kw = dict(shots_list=(1,), ways=5, iterations=2, seeds=(0,), quick=True, test_tasks=10, root=shared_data,
              progress=False)
    serial = run_omniglot(out=tmp_path / "serial", **kw)
    jobs = run_omniglot(out=tmp_path / "jobs2", executor=LocalExecutor(2), **kw)
    # json: the one-seed CIs are NaN, which is never == NaN
    assert json.dumps(_without_timing(jobs), sort_keys=True) == json.dumps(_without_timing(serial), sort_keys=True)


@pytest.mark.parametrize("executor", ["jobs2", "ray"])
def test_a_failing_unit_stops_the_study_with_its_one_line_error(executor, tmp_path, request):
    from gnn_cml.errors import GnnCmlError, require
    from gnn_cml.experiments.executor import LocalExecutor, RayExecutor, Unit

    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    units = [Unit("fine unit", os.getpid), Unit("bad unit", require, dict(condition=False, message="pick another --x"))]
    with pytest.raises(GnnCmlError, match="^bad unit: pick another --x$"):
        (LocalExecutor(2) if executor == "jobs2" else RayExecutor()).run(units, tmp_path, progress=False)
    assert not (tmp_path / MARKERS).exists()
