"""What one meta-training episode costs on large graphs: G-Meta, AMM-GNN and MAML (± CML), 5-way 5-shot.

Generated graphs of two real sizes (``_common.synthetic_graph``: heavy-tailed, Pareto 2.5 source
weights, so hubs exist; labels uniform):

- CoraFull size: 19,793 nodes, ~126,842 directed edges, 8,710 sparse bag-of-words features
  (0.6% dense, ~52 words a node), 70 classes;
- ogbn-arxiv size: 169,343 nodes, ~2,315,598 directed edges, 128 dense features, 40 classes.

Per graph: the degree tail and the size of G-Meta's 2-hop subgraphs (a random sample of nodes and
the largest hubs: nodes, ``Â`` entries, feature entries, extraction time). Per learner (the paper
protocol's config for the graph name, 5-way 5-shot, the Trainer's own step: meta-batch, inner
loop, backward, Adam): median and slowest wall ms per episode after one warm-up, the process's
resident memory after the episodes and the peak extra memory during them (sampled: a lower bound).
A last G-Meta row times episodes whose first support node is the graph's largest hub.

    python benchmarks/scale_episode.py                 # both sizes, 10 timed episodes each
    python benchmarks/scale_episode.py --quick         # 3 timed episodes
    python benchmarks/scale_episode.py --sizes corafull --methods gmeta
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, default_threads, machine, rss, setup, synthetic_graph, table  # noqa: E402

SIZES = {
    "corafull": dict(nodes=19793, edges=126842, features=8710, classes=70, density=0.006),
    # ogbn-arxiv's degrees have a far longer tail than CoraFull's: Pareto shape 1.3 gives a largest degree of ~13,000 like the real graph
    "ogbn_arxiv": dict(nodes=169343, edges=2315598, features=128, classes=40, tail=1.3),
}
WAYS, SHOTS = 5, 5


def subgraph_stats(graph, data, seed: int, sample: int = 500, hubs: int = 5):
    """Sizes of 2-hop subgraphs: a random sample of nodes, then the ``hubs`` highest-degree nodes."""
    import numpy as np

    deg = np.diff(graph.adj.indptr)
    rng = np.random.default_rng(seed)
    rows = []

    def sizes(nodes):
        start = time.perf_counter()
        parts = graph._extract_subgraphs(np.asarray(nodes, dtype=np.int64), 2)  # uncached: the real cost
        took = time.perf_counter() - start
        n = np.array([len(p.nodes) for p in parts])
        a = np.array([len(p.adj_data) for p in parts])
        f = np.array([len(p.x_data) if p.x_dense is None else p.x_dense.size for p in parts])
        return n, a, f, took

    n, a, f, took = sizes(np.sort(rng.choice(data.num_nodes, sample, replace=False)))
    rows.append([f"{sample} random nodes (median / p99 / max)",
                 f"{int(np.median(n)):,} / {int(np.percentile(n, 99)):,} / {n.max():,}",
                 f"{int(np.median(a)):,} / {int(np.percentile(a, 99)):,} / {a.max():,}",
                 f"{int(np.median(f)):,} / {int(np.percentile(f, 99)):,} / {f.max():,}",
                 f"{1000 * took / sample:.1f}"])
    top = np.argsort(-deg)[:hubs]
    for v in top:
        n, a, f, took = sizes([v])
        rows.append([f"hub {v} (degree {deg[v]:,})", f"{n[0]:,} ({100 * n[0] / data.num_nodes:.0f}% of the graph)",
                     f"{a[0]:,}", f"{f[0]:,}", f"{1000 * took:.0f}"])
    return deg, top, rows


def bench_learner(name, method, cml, data, graph, episodes, hub=None):
    """Median and slowest ms per Trainer step over ``episodes`` (after one warm-up), RSS and peak."""
    import numpy as np
    import torch

    from gnn_cml.config import resolve
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.meta.factory import build_learner
    from gnn_cml.sampling import EpisodeSampler

    cfg = resolve(dict(graph=name, method=method, cml=cml, ways=WAYS, shots=SHOTS))
    learner = build_learner(cfg, graph, seed=0)
    sampler = EpisodeSampler(data.y, range(int(data.y.max()) + 1), WAYS, SHOTS, cfg.queries, seed=0)
    if hub is not None:  # the hub as the first support node of every episode (labels unchanged)
        draw = sampler.sample

        def sample():
            e = draw()
            support = e.support.clone()
            support[0] = int(hub)
            return type(e)(support, e.support_y, e.query, e.query_y, e.classes)

        sampler.sample = sample
    trainer = Trainer(learner, sampler, [], TrainerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                          meta_batch=cfg.meta_batch, progress=False),
                      tensorboard=False)
    trainer.step()  # warm-up
    times = []
    with PeakRSS() as peak:
        for _ in range(episodes):
            start = time.perf_counter()
            trainer.step()
            times.append(1000 * (time.perf_counter() - start))
    label = f"{method}{'+cml' if cml else ''}" + (" (hub in every episode)" if hub is not None else "")
    del trainer, learner
    torch.set_num_threads(torch.get_num_threads())
    return [label, cfg.meta_batch, f"{statistics.median(times):,.0f}", f"{max(times):,.0f}",
            f"{rss() / 2 ** 30:.2f}", f"{peak.mib:,.0f}"], np.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(SIZES), help=f"graph sizes (default: {','.join(SIZES)})")
    p.add_argument("--methods", default="gmeta,ammgnn,maml", help="learners, each ± CML (default: all three)")
    p.add_argument("--episodes", type=int, default=10, help="timed episodes per learner (default: 10)")
    p.add_argument("--quick", action="store_true", help="3 timed episodes (default: off)")
    p.add_argument("--no-hub", action="store_true", help="skip the G-Meta episodes with a hub (default: run them)")
    p.add_argument("--threads", type=int, default=default_threads(), help="threads (sets OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    episodes = 3 if args.quick else args.episodes
    setup(args.threads)
    import torch

    from gnn_cml.models import PreparedGraph

    with open("/proc/loadavg") as fh:
        load = fh.read().split()[0]
    print(f"# scale: {machine()}, torch {torch.__version__}, {args.threads} thread(s), load average {load}")
    for size in args.sizes.split(","):
        spec = SIZES[size]
        start = time.perf_counter()
        data = synthetic_graph(**spec, seed=args.seed)
        graph = PreparedGraph(data)
        graph.propagated(1)
        print(f"\n## {size}-sized: {data.num_nodes:,} nodes, {data.edge_index.shape[1]:,} directed edges, "
              f"{spec['features']:,} {'sparse' if spec.get('density') else 'dense'} features, {spec['classes']} "
              f"classes (generated and prepared in {time.perf_counter() - start:.1f} s; RSS {rss() / 2 ** 30:.2f} GiB)")
        deg, hubs, rows = subgraph_stats(graph, data, args.seed)
        print(f"\ndegrees: median {int(statistics.median(deg.tolist()))}, max {deg.max():,}; G-Meta's 2-hop subgraphs:\n")
        print(table(["centre", "nodes", "Â entries", "feature entries", "extraction ms (per node)"], rows))
        rows = []
        for method in args.methods.split(","):
            for cml in (False, True):
                print(f"  {size} {method}{'+cml' if cml else ''} ...", file=sys.stderr, flush=True)
                rows.append(bench_learner(size, method, cml, data, graph, episodes)[0])
        if "gmeta" in args.methods and not args.no_hub:
            print(f"  {size} gmeta with a hub ...", file=sys.stderr, flush=True)
            rows.append(bench_learner(size, "gmeta", False, data, graph, episodes, hub=hubs[0])[0])
        print(f"\nper meta-training episode ({WAYS}-way {SHOTS}-shot, {episodes} timed):\n")
        print(table(["learner", "meta-batch", "median ms", "slowest ms", "RSS after GiB", "episode peak extra MiB"],
                    rows))
        del graph, data
    return 0


if __name__ == "__main__":
    sys.exit(main())
