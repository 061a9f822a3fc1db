"""Meta-training time per episode, paper protocol: gnn-cml's TENT against the transcription of its reference.

The reference side is ``tests/reference_code/tent.py``, the transcription of TLP-FSNC's
``train_TENT.py`` per-task computation that ``tests/test_tent.py`` checks our learner against
(a full-graph embedder, ``torch.nonzero`` on dense adjacency rows for every class-ego and query
subgraph, a dense GCN per subgraph in a Python loop, an InfoNCE per query position), plus the
same Adam update. Our side is the Trainer's step: drawing the episode, the query subgraphs
(extracted on first use and cached, as in a run), the forward pass, backward and Adam. Both run
the same episodes from the same initial weights, interleaved (both see the same machine load).
Before timing, one episode in float64 must give the same loss and gradients on both sides (1e-5).

    python benchmarks/tent_speed.py            # CiteSeer and Cora, 1- and 5-shot (~2 min)
    python benchmarks/tent_speed.py --quick    # fewer episodes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import ReplaySampler, episode_speed_arguments, lap, median_ms, print_speed_table, speed_row  # noqa: E402

TOL = 1e-5


def build(graph_name, shots, graph):
    from gnn_cml.config import resolve
    from gnn_cml.meta.factory import build_learner

    cfg = resolve(dict(graph=graph_name, method="tent", ways=2, shots=shots))
    return cfg, build_learner(cfg, graph, seed=0)


def check_equal(graph_name, shots, graph, episode, adj, sparse_adj, features):
    """float64, one episode: the transcription and our learner agree on the loss and every gradient."""
    import torch

    from reference_code import tent as ref

    _, learner = build(graph_name, shots, graph)
    learner = learner.to(torch.float64)
    out = ref.tent_task(ref.reference_params(learner), adj.double(), features.double(), episode.support,
                        episode.query, 2, shots, learner.train_nodes, learner.train_labels,
                        adj_sparse=sparse_adj.double())
    result = learner(episode, train=True)
    result.loss.backward()
    ours = dict(learner.named_parameters())
    worst = max([abs(float(result.loss.detach()) - float(out.loss))] +
                [float((ours[k].grad - g).abs().max()) for k, g in ref.to_ours(out.grads).items()])
    assert worst <= TOL, f"{graph_name} {shots}-shot: the transcription and ours differ by {worst:.1e}"
    return worst


def bench(graph_name, shots, args, cache):
    import torch

    from gnn_cml.data import load_graph
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler
    from gnn_cml.sampling.split import default_split
    from reference_code import tent as ref

    if graph_name not in cache:
        data = load_graph(graph_name, args.root)
        graph = PreparedGraph(data)
        adj = ref.dense_adjacency(graph, torch.float32)
        cache[graph_name] = (data, graph, adj, adj.to_sparse(), ref.dense_features(graph, torch.float32))
    data, graph, adj, sparse_adj, features = cache[graph_name]
    sampler = EpisodeSampler(data.y, default_split(data).train, 2, shots, 5, seed=args.seed)
    episodes = [sampler.sample() for _ in range(args.episodes + 1)]
    worst = check_equal(graph_name, shots, PreparedGraph(data), episodes[0], adj, sparse_adj, features)

    cfg, learner = build(graph_name, shots, graph)
    trainer = Trainer(learner, ReplaySampler(episodes), [],
                      TrainerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, progress=False), tensorboard=False)
    leaves = ref.reference_params(learner)
    ref_opt = torch.optim.Adam(list(leaves.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    nodes, labels = learner.train_nodes, learner.train_labels
    ours_ms, ref_ms = [], []
    for i, episode in enumerate(episodes):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.step()
        if i >= 1:  # the first step warms caches up
            ours_ms.append(lap(wall, cpu))
        if 1 <= i <= args.reference_episodes:
            wall, cpu = time.perf_counter(), time.process_time()
            ref_opt.zero_grad()
            out = ref.tent_task(leaves, adj, features, episode.support, episode.query, 2, shots, nodes, labels,
                                adj_sparse=sparse_adj)
            for k, g in out.grads.items():
                leaves[k].grad = g
            ref_opt.step()
            ref_ms.append(lap(wall, cpu))
    return [graph_name, f"2-way {shots}-shot", *speed_row(median_ms(ours_ms), median_ms(ref_ms)),
            f"{len(ours_ms)} / {len(ref_ms)}", f"{worst:.1e}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    episode_speed_arguments(parser, 60, "timed episodes of ours per cell", 15, "timed reference episodes per cell")
    parser.add_argument("--quick", action="store_true", help="20 episodes of ours, 5 of the reference")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.reference_episodes = 20, 5
    print_speed_table(args, bench, "TENT episode speed, paper protocol",
                      "per meta-training episode (episode, subgraphs, forward, backward, Adam)",
                      "transcription ms/ep", "max |diff| (float64 check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
