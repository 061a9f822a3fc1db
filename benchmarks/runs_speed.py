"""Throughput of whole runs: R runs trained as one batched computation against R runs one after another.

A run here is what ``gnn-cml train --runs R`` does per run (paper protocol): build the learner,
meta-train with validation every 10 episodes on 20 fixed tasks, test on the 100 fixed test tasks,
write its files (checkpoints, metrics, model, TensorBoard). Episodes are capped and early stopping
is off so that every run does the same work on both sides; both sides run the same seeds and
their per-run test accuracies are compared (float32: equal to rounding). The two sides run
interleaved, repeated, and the median wall time is reported, with the peak resident memory of
the batched side (sampled, a lower bound). Per-node subgraphs are extracted before timing, as a
run's first episodes would.

    python benchmarks/runs_speed.py                     # CiteSeer G-Meta 2-way 1-shot, R = 1, 5, 20
    python benchmarks/runs_speed.py --methods gmeta,ammgnn,maml --shots 1,5 --episodes 100
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, default_threads, machine, setup, table  # noqa: E402


def one_side(task, tests, runs, out: Path, batched: bool):
    from gnn_cml.experiments import graph as experiment

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    if batched:
        records = experiment.train_runs_batched(task, tests, list(range(runs)), out, resume=False, progress=False)
        records = [records[r] for r in range(runs)]
    else:
        records = [experiment.train_run(task, tests, r, out / f"run_{r}", resume=False, progress=False)
                   for r in range(runs)]
    return time.perf_counter() - start, [r["test_accuracy"] for r in records]


def bench(graph: str, method: str, shots: int, runs_list, args, work: Path):
    import numpy as np

    from gnn_cml.config import resolve
    from gnn_cml.experiments.graph import GraphTask

    cfg = resolve(dict(graph=graph, method=method, ways=2, shots=shots, episodes=args.episodes,
                       patience=10 ** 6, data_root=args.root, runs=max(runs_list)))
    task = GraphTask.build(cfg)
    tests = task.test_tasks()
    if cfg.backbone == "subgraph_gcn":
        task.graph.subgraphs(np.arange(task.graph.num_nodes), 2)
    rows = []
    for runs in runs_list:
        cfg.runs = runs
        walls = {False: [], True: []}
        accs, peak = {}, 0.0
        for _ in range(args.repeats):
            for batched in (False, True):
                if batched:
                    with PeakRSS() as mem:
                        wall, acc = one_side(task, tests, runs, work / "batched", True)
                    peak = max(peak, mem.mib)
                else:
                    wall, acc = one_side(task, tests, runs, work / "alone", False)
                walls[batched].append(wall)
                accs[batched] = acc
        diff = max(abs(a - b) for a, b in zip(accs[False], accs[True]))
        alone, together = statistics.median(walls[False]), statistics.median(walls[True])
        rows.append([graph, method, f"2-way {shots}-shot", runs, f"{alone:.1f}", f"{together:.1f}",
                     f"{runs / alone:.2f}", f"{runs / together:.2f}", f"{alone / together:.1f}x", f"{peak:.0f}",
                     f"{diff:.1e}"])
        print(f"# {graph} {method} {shots}-shot R={runs}: done", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default="citeseer")
    parser.add_argument("--methods", default="gmeta")
    parser.add_argument("--shots", default="1")
    parser.add_argument("--runs", default="1,5,20", help="R values (default 1,5,20)")
    parser.add_argument("--episodes", type=int, default=100, help="meta-training episodes per run (default 100)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per R (median; default 2)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="threads for both sides (default $OMP_NUM_THREADS or 1)")
    parser.add_argument("--root", help="data root (default $GNN_CML_DATA)")
    args = parser.parse_args(argv)
    setup(args.threads)
    import torch

    runs_list = [int(r) for r in args.runs.split(",")]
    print(f"# runs per second, paper protocol: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"# each run: {args.episodes} meta-training episodes, validation every 10 on 20 tasks, 100 test tasks, "
          f"files written; medians of {args.repeats} interleaved repeats")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for graph in args.graphs.split(","):
            for method in args.methods.split(","):
                for shots in (int(s) for s in args.shots.split(",")):
                    rows += bench(graph.strip(), method.strip(), shots, runs_list, args, Path(tmp))
    print(table(["graph", "method", "setting", "R", "one after another s", "batched s", "runs/s alone",
                 "runs/s batched", "speed-up", "batched peak MiB", "max |Δ acc| (pt)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
