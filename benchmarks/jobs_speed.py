"""A whole Table 3 study with ``--jobs 1`` against ``--jobs 2`` (or more): wall time, peak memory, same tables.

Runs ``gnn-cml reproduce table3`` as a subprocess once per ``--jobs`` value on the same grid, each into
its own folder, and reports the wall time, the speed-up over ``--jobs 1`` and the peak resident memory
of the whole process tree (the command and its workers, summed, sampled every 0.2 s: a lower bound).
The report tables (timing columns aside) must be identical; the script fails otherwise.

The default grid is the paper-split Table 3 study of CiteSeer and Cora: 2 graphs x 2 settings x
(G-Meta, AMM-GNN, MAML) ± CML x 20 runs = 480 runs, 24 units; about 20 minutes per side on 2 idle cores.
It needs an otherwise idle machine to mean anything (target: >= 1.8x on 2 cores).

    python benchmarks/jobs_speed.py                               # the 480-run grid, --jobs 1 vs 2
    python benchmarks/jobs_speed.py --graphs citeseer --quick     # a smoke run: 12 units of a few seconds
    python benchmarks/jobs_speed.py --jobs 1,2,4 --runs 5 --shots 1
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

TIMING = {"episodes_per_s", "wall_time_s"}


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def one_side(cmd, env) -> tuple:
    """Wall seconds and peak tree RSS (bytes) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return wall, peak[0]


def tables(out: Path):
    with open(out / "table3_arms.csv") as fh:
        arms = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]
    return (out / "table3.csv").read_text(), arms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graphs", default="citeseer,cora", help="Table 3 graphs (default: citeseer,cora)")
    p.add_argument("--methods", default="gmeta,ammgnn,maml", help="base learners, each ± CML (default: all three)")
    p.add_argument("--shots", help="only these shot settings, e.g. 1 (default: every setting)")
    p.add_argument("--runs", type=int, default=20, help="runs per arm (default: 20)")
    p.add_argument("--quick", action="store_true", help="reproduce's --quick budget (20 episodes; default: off)")
    p.add_argument("--jobs", default="1,2", help="the --jobs values to compare, the first is the reference "
                                                 "(default: 1,2)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="executor of the sides with jobs > 1 (default: local)")
    p.add_argument("--root", help="data root (default: $GNN_CML_DATA)")
    p.add_argument("--keep", type=Path, help="keep the studies in this folder (default: a temporary one)")
    args = p.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",")]
    base = args.keep or Path(tempfile.mkdtemp(prefix="jobs_speed_"))
    grid = ["--graphs", args.graphs, "--methods", args.methods, "--runs", str(args.runs), "--no-progress"]
    grid += (["--shots", args.shots] if args.shots else []) + (["--quick"] if args.quick else [])
    grid += ["--root", args.root] if args.root else []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with open("/proc/loadavg") as fh:
        load_before = fh.read().split()[0]
    rows, reference, ref_wall = [], None, None
    for j in jobs:
        out = base / f"jobs{j}"
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--jobs", str(j)] + (["--executor", "ray"] if args.executor == "ray" and j != 1 else [])
        cmd = [sys.executable, "-m", "gnn_cml.cli", "reproduce", "table3", *grid, "--out", str(out), *extra]
        print("$ " + " ".join(cmd[1:]), flush=True)
        wall, peak = one_side(cmd, env)
        got = tables(out)
        if reference is None:
            reference, ref_wall = got, wall
        same = got == reference
        rows.append([j, f"{wall:.1f}", f"{ref_wall / wall:.2f}x", f"{peak / 2 ** 30:.2f}", "yes" if same else "NO"])
        if not same:
            print(f"tables differ between --jobs {jobs[0]} and --jobs {j}", file=sys.stderr)
    with open("/proc/loadavg") as fh:
        load_after = fh.read().split()[0]
    units = len(list(base.glob(f"jobs{jobs[0]}/*/*/split_*/*/results.json")))
    print(f"\n# --jobs: {machine()}; {units} units; load average {load_before} before, {load_after} after")
    print(table(["--jobs", "wall s", "speed-up", "peak GiB (tree)", "same tables"], rows))
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if all(r[-1] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
