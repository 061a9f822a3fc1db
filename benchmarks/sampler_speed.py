"""Episodes per second of ``gnn_cml.sampling.EpisodeSampler``.

On real Cora (2,708 nodes, all 7 classes and its 3 default training classes) and
on a random label vector of ogbn-arxiv's size (169,343 nodes, 40 classes).

    python benchmarks/sampler_speed.py           # ~20 s
    python benchmarks/sampler_speed.py --quick
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_threads, machine, setup, table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5000, help="episodes per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads (sets OMP_NUM_THREADS)")
    parser.add_argument("--root", help="data root for Cora (default $GNN_CML_DATA)")
    parser.add_argument("--quick", action="store_true", help="1,000 episodes x 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.repeats = 1000, 3
    setup(args.threads)
    import numpy as np

    from gnn_cml.data import load_graph
    from gnn_cml.sampling import EpisodeSampler

    cora = load_graph("cora", args.root).y.numpy()
    arxiv_size = np.random.default_rng(0).integers(0, 40, 169343)
    cases = [("cora", cora, range(7), 5, 5, 10), ("cora", cora, (0, 1, 2), 2, 1, 5),
             ("cora", cora, (0, 1, 2), 2, 5, 5), ("169k labels", arxiv_size, range(40), 5, 5, 10),
             ("169k labels", arxiv_size, range(40), 20, 5, 20)]
    rows = []
    for name, y, classes, ways, shots, queries in cases:
        start = time.perf_counter()
        sampler = EpisodeSampler(y, classes, ways, shots, queries, seed=0)
        build_ms = 1000 * (time.perf_counter() - start)
        sampler.sample()
        per_episode = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.episodes):
                sampler.sample()
            per_episode.append(1e6 * (time.perf_counter() - start) / args.episodes)
        us = statistics.median(per_episode)
        rows.append([name, len(y), len(classes), f"{ways}-way {shots}-shot {queries}-query", f"{build_ms:.1f}",
                     f"{us:.1f}", f"{1e6 / us:,.0f}"])
    print(f"# episode sampler: {machine()}; median of {args.repeats} x {args.episodes} episodes")
    print(table(["labels", "nodes", "classes", "task", "construct ms", "us/episode", "episodes/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
