"""A MAML+CML episode on a generated graph of ogbn-arxiv's size, without densifying anything.

169,343 nodes, ~2.3M directed edges, 128 dense features, 40 classes. Reports the
one-off precomputation (normalised ``Â`` and ``Â X``: time and memory), then the
time and peak extra memory of 5-way 5-shot MAML+CML episodes (2-layer GCN, 20
second-order inner steps, 10 queries per class), and checks that no episode tensor
has a graph-sized dimension.

    python benchmarks/large_graph.py            # ~1 min
    python benchmarks/large_graph.py --quick
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, default_threads, machine, setup, rss, synthetic_graph, table  # noqa: E402

ARXIV_SIZE = dict(nodes=169343, edges=2315598, features=128, classes=40)


def block_tensors(inputs):
    """Every tensor of an episode's parameter-free inputs."""
    if isinstance(inputs, dict):
        return [t for v in inputs.values() for t in block_tensors(v)]
    if isinstance(inputs, list):
        return [t for v in inputs for t in block_tensors(v)]
    return [t for t in (inputs.dense, inputs.row, inputs.col, inputs.val) if t is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="timed episodes")
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads (sets OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 timed episodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = 3
    setup(args.threads)
    import numpy as np
    import torch

    from fullgraph_speed import build_model
    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler

    print(f"# large graph: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    start = time.perf_counter()
    data = synthetic_graph(**ARXIV_SIZE, seed=args.seed)
    gen_s = time.perf_counter() - start
    base_rss = rss()
    with PeakRSS() as prep_mem:
        start = time.perf_counter()
        graph = PreparedGraph(data)
        graph.propagated(1)
        prep_s = time.perf_counter() - start
    kept = (rss() - base_rss) / 2 ** 20
    model = build_model(graph)
    sampler = EpisodeSampler(data.y, range(ARXIV_SIZE["classes"]), 5, 5, 10, seed=args.seed)
    episodes = [sampler.sample() for _ in range(args.episodes + 1)]

    def episode_step(episode):
        model.zero_grad(set_to_none=True)
        model(episode, train=True).loss.backward()

    with PeakRSS() as episode_mem:  # the first episode also warms up
        episode_step(episodes[0])
    wall, cpu, rows, largest = [], [], [], 0
    for episode in episodes[1:]:
        support, query = model.learner.inputs(episode)
        tensors = block_tensors(support) + block_tensors(query)
        largest = max(largest, max(t.numel() for t in tensors))
        assert all(max(t.shape) < data.num_nodes for t in tensors), "an episode tensor spans the whole graph"
        rows.append(support["x"].shape[0] + query["x"].shape[0])
        w, c = time.perf_counter(), time.process_time()
        episode_step(episode)
        wall.append(1000 * (time.perf_counter() - w))
        cpu.append(1000 * (time.process_time() - c))
    print(f"# {data.num_nodes:,} nodes, {data.edge_index.shape[1]:,} directed edges, {data.x.shape[1]} dense "
          f"features, {ARXIV_SIZE['classes']} classes; generated in {gen_s:.1f} s")
    print(table(["precompute s", "precompute peak MiB", "kept MiB (Â, ÂX)", "episode rows (mean)",
                 "largest episode tensor (entries)", "ms/episode wall / cpu", "episode peak MiB"],
                [[f"{prep_s:.2f}", f"{prep_mem.mib:.0f}", f"{kept:.0f}", f"{np.mean(rows):.0f}", f"{largest:,}",
                  f"{statistics.median(wall):.1f} / {statistics.median(cpu):.1f}", f"{episode_mem.mib:.1f}"]]))
    dense_gib = data.num_nodes ** 2 * 4 / 2 ** 30
    print(f"# for scale: a dense Â would take {dense_gib:,.0f} GiB; Â X takes "
          f"{data.num_nodes * data.x.shape[1] * 4 / 2 ** 20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
