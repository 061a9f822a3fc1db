"""Meta-training time per episode, paper protocol: gnn-cml's G-Meta / AMM-GNN against the reference.

The reference side is ``tests/reference_code/gmeta_ammgnn.py``, the (test-only) transcription of the reference
scripts' per-task computation that the equivalence tests check against our learners
(G-Meta: a dense GCN on each node's 2-hop subgraph, mean-pooled, a Python loop over
nodes, one ``torch.autograd.grad`` per inner step; AMM-GNN: a full-graph GCN on the
modulated features at every inner step), plus the same Adam update. Our side is the
Trainer's step: drawing the episode, preparing its rows (subgraph extraction included),
20 first-order inner steps, the query loss, backward and Adam. Both run the same
episodes from the same initial weights, one after the other (interleaved, so both see
the same machine load). Before timing, one episode with dropout off must give the same
query loss and meta-gradients on both sides (1e-4, float32). Our per-node 2-hop subgraphs
are extracted once per graph before timing, as in a run (the one-time cost is printed).

    python benchmarks/episode_speed.py            # CiteSeer and Cora, 1- and 5-shot (~3 min)
    python benchmarks/episode_speed.py --quick    # fewer episodes (~1 min)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test-only reference transcription
from _common import (  # noqa: E402
    ReplaySampler, episode_speed_arguments, lap, machine, median_ms, setup, speed_row, table,
)

TOL = 1e-4


def build(graph_name, method, shots, data, graph, dropout=None):
    from gnn_cml.config import resolve
    from gnn_cml.meta.factory import build_learner

    overrides = dict(graph=graph_name, method=method, ways=2, shots=shots)
    if dropout is not None:
        overrides["dropout"] = dropout
    cfg = resolve(overrides)
    return cfg, build_learner(cfg, graph, seed=0)


def reference_step(method, cfg, learner, leaves, optimizer, adj, features, episode, node_sets):
    """One reference meta-training episode: the transcribed task + Adam on the reference leaves."""
    from reference_code import gmeta_ammgnn as ref

    params, modulation = leaves
    optimizer.zero_grad()
    if method == "gmeta":
        out = ref.gmeta_task(params, adj, features, episode.support, episode.support_y, episode.query,
                             episode.query_y, steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=cfg.dropout)
    else:
        out = ref.ammgnn_task(params, modulation, adj, features, episode.support, episode.support_y, episode.query,
                              episode.query_y, node_sets, steps=cfg.inner_steps, lr=cfg.inner_lr,
                              dropout=cfg.dropout)
    for k, g in out.grads.items():
        params[k].grad = g
    for k, g in out.extra_grads.items():
        modulation[k].grad = g
    optimizer.step()
    return out


def check_equal(graph_name, method, shots, data, graph, episode, adj, features):
    """Dropout off, one episode: the reference and our learner agree on loss and meta-gradients."""
    import torch

    from reference_code import gmeta_ammgnn as ref

    cfg, learner = build(graph_name, method, shots, data, graph, dropout=0.0)
    torch.manual_seed(0)
    sets = learner.node_sets(episode) if method == "ammgnn" else None
    if method == "gmeta":
        out = ref.gmeta_task(ref.reference_params(learner), adj, features, episode.support, episode.support_y,
                             episode.query, episode.query_y, steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=0.0)
        expected = ref.to_ours(out.grads)
    else:
        out = ref.ammgnn_task(ref.reference_params(learner), ref.modulation_params(learner), adj, features,
                              episode.support, episode.support_y, episode.query, episode.query_y, sets,
                              steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=0.0)
        expected = {**ref.to_ours(out.grads), **ref.modulation_to_ours(out.extra_grads)}
    torch.manual_seed(0)
    result = learner(episode, train=True)
    result.loss.backward()
    ours = dict(learner.named_parameters())
    worst = max([abs(float(result.loss) - float(out.loss))] +
                [float((ours[k].grad - g).abs().max()) for k, g in expected.items()])
    assert worst <= TOL, f"{graph_name} {method} {shots}-shot: reference and ours differ by {worst:.1e}"
    return worst


def bench(graph_name, method, shots, args, cache):
    import numpy as np
    import torch

    from reference_code import gmeta_ammgnn as ref
    from gnn_cml.data import load_graph
    from gnn_cml.sampling import default_split
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler

    if graph_name not in cache:
        data = load_graph(graph_name, args.root)
        graph = PreparedGraph(data)
        # Steady state of a run: every labelled node's 2-hop subgraph is extracted once per graph and
        # cached (a run visits most of them within its first episodes); the one-time cost is reported.
        start = time.perf_counter()
        graph.subgraphs(np.arange(data.num_nodes), 2)
        print(f"# {graph_name}: 2-hop subgraphs of all {data.num_nodes} nodes extracted once in "
              f"{time.perf_counter() - start:.2f} s", file=sys.stderr, flush=True)
        cache[graph_name] = (data, graph, ref.dense_adjacency(graph), graph.torch_adjacency().float(),
                             ref.dense_features(graph))
    data, graph, dense_adj, sparse_adj, features = cache[graph_name]
    adj = dense_adj if method == "gmeta" else sparse_adj  # as each reference script passes it
    split = default_split(data)
    sampler = EpisodeSampler(data.y, split.train, 2, shots, 5, seed=args.seed)
    n_ref = args.reference_episodes if method == "gmeta" else args.ammgnn_reference_episodes
    episodes = [sampler.sample() for _ in range(args.episodes + 2)]
    worst = check_equal(graph_name, method, shots, data, graph, episodes[0], adj, features)

    cfg, learner = build(graph_name, method, shots, data, graph)
    trainer = Trainer(learner, ReplaySampler(episodes), [],
                      TrainerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, progress=False), tensorboard=False)
    leaves = (ref.reference_params(learner), ref.modulation_params(learner) if method == "ammgnn" else {})
    ref_opt = torch.optim.Adam(list(leaves[0].values()) + list(leaves[1].values()), lr=cfg.lr,
                               weight_decay=cfg.weight_decay)
    ours_ms, ref_ms = [], []
    for i, episode in enumerate(episodes):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.step()
        if i >= 1:  # the first step warms caches up
            ours_ms.append(lap(wall, cpu))
        if 1 <= i <= n_ref:
            sets = torch.stack([torch.from_numpy(np.random.default_rng([args.seed, i, j]).choice(
                torch.cat([episode.support, episode.query]).numpy(), 10, replace=False)) for j in range(2)])
            wall, cpu = time.perf_counter(), time.process_time()
            reference_step(method, cfg, learner, leaves, ref_opt, adj, features, episode, sets)
            ref_ms.append(lap(wall, cpu))
    ref = median_ms(ref_ms)
    row = [graph_name, method, f"2-way {shots}-shot", *speed_row(median_ms(ours_ms), ref, 2, 1)]
    if args.batch_runs:
        batched, _, speed_up = speed_row(batched_step(graph_name, method, shots, data, graph, split, args), ref, 2, 1)
        row += [batched, speed_up]
    return row + [f"{len(ours_ms)} / {len(ref_ms)}", f"{worst:.1e}"]


def batched_step(graph_name, method, shots, data, graph, split, args):
    """Median ms per run-episode of ``args.batch_runs`` runs stepped as one batched computation
    (:class:`gnn_cml.engine.batched.RunBatch`: each run its own weights and episodes), wall / CPU."""
    from gnn_cml.engine.batched import RunBatch
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.meta.factory import build_learner
    from gnn_cml.sampling import EpisodeSampler

    trainers = []
    for r in range(args.batch_runs):
        cfg, _ = build(graph_name, method, shots, data, graph)
        learner = build_learner(cfg, graph, seed=r)
        sampler = EpisodeSampler(data.y, split.train, 2, shots, 5, seed=args.seed + 1000 + r)
        trainers.append(Trainer(learner, sampler, [], TrainerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, seed=r,
                                                                    progress=False), tensorboard=False))
    batch = RunBatch(trainers)
    batch.step()  # warm-up
    times = []
    for _ in range(args.batched_episodes):
        wall, cpu = time.perf_counter(), time.process_time()
        batch.step()
        times.append(lap(wall, cpu))
    return tuple(ms / args.batch_runs for ms in median_ms(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    episode_speed_arguments(parser, 40, "timed episodes of ours per cell", 10, "timed G-Meta reference episodes")
    parser.add_argument("--methods", default="gmeta,ammgnn")
    parser.add_argument("--ammgnn-reference-episodes", type=int, default=3,
                        help="timed AMM-GNN reference episodes (each ~1-3 s)")
    parser.add_argument("--batch-runs", type=int, default=20,
                        help="also time this many runs stepped as one batched computation (0: skip; default 20)")
    parser.add_argument("--batched-episodes", type=int, default=10, help="timed batched episodes per cell")
    parser.add_argument("--quick", action="store_true", help="15 episodes, 4 + 2 reference episodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.reference_episodes, args.ammgnn_reference_episodes = 15, 4, 2
    setup(args.threads)
    import torch

    print(f"# episode speed, paper protocol: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print("# per meta-training episode (episode drawing, preparation, 20 first-order inner steps, query loss, "
          "backward, Adam); medians of interleaved episodes; ms wall / cpu")
    rows, cache = [], {}
    for graph_name in args.graphs.split(","):
        for method in args.methods.split(","):
            for shots in (int(s) for s in args.shots.split(",")):
                rows.append(bench(graph_name.strip(), method.strip(), shots, args, cache))
                print(f"# {' '.join(rows[-1][:3])}: done", file=sys.stderr, flush=True)
    batched = [f"ours, {args.batch_runs} runs batched, ms per run-episode", "speed-up batched"] \
        if args.batch_runs else []
    print(table(["graph", "method", "setting", "ours ms/ep", "reference ms/ep", "speed-up", *batched,
                 "episodes ours / ref", "max |diff| (check)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
