"""Meta-training time per episode of COSMIC: gnn-cml's learner against the authors' computation.

The reference side is ``tests/reference_code/cosmic.py``, the test-only transcription of one
training step of the authors' code (``Subgraph.search`` with the mix-up, PyG ``GCNConv`` on a
``Batch`` of dense subgraph features, PReLU, L2 normalisation, mean pooling, ``SupConLoss``),
followed by the same Adam update. Our side is what a run does per episode: the mix-up draws, the
subgraph rows (sparse feature rows, one ``X W`` product shared by the mixed subgraphs), the GCN on
stacked 20-node blocks, SupCon, the query embeddings for the logged accuracy, backward and Adam.
Both sides get the same episodes and the same mix-up draws, interleaved (same machine load).
Subgraphs are extracted before timing on both sides, as the authors' ``Subgraph.build`` does
once per graph (the one-time costs are printed). Before timing, one episode in float64 must give
the same loss and gradients on both sides (1e-5, relative to the largest entry where above 1).

    python benchmarks/cosmic_speed.py            # CiteSeer and Cora, 2-way 1- and 5-shot
    python benchmarks/cosmic_speed.py --quick    # fewer episodes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import episode_speed_arguments, lap, median_ms, print_speed_table, speed_row  # noqa: E402

TOL = 1e-5


def _draws(learner, episode, seed):
    import numpy as np
    import torch

    torch.manual_seed(seed)  # forward() derives its generator the same way after this seed
    return learner.draw_mixup(episode, np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)))))


def _groups(draws):
    import numpy as np

    return [list(draws.extra[draws.extra_labels == label]) for label in np.unique(draws.extra_labels)]


def bench(graph_name, shots, args, cache):
    import numpy as np
    import torch

    from gnn_cml.config import resolve
    from gnn_cml.data import load_graph
    from gnn_cml.meta.factory import build_learner
    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler, default_split
    from reference_code import cosmic as ref

    if graph_name not in cache:
        data = load_graph(graph_name, args.root)
        cache[graph_name] = (data, PreparedGraph(data), ref.ReferencePPR(data.edge_index.numpy(), data.num_nodes))
    data, graph, ppr = cache[graph_name]
    cfg = resolve(dict(graph=graph_name, method="cosmic", ways=2, shots=shots))
    split = default_split(data)
    sampler = EpisodeSampler(data.y, split.train, 2, shots, 5, seed=args.seed)
    episodes = [sampler.sample() for _ in range(args.episodes + 1)]

    # equality first (float64)
    check = build_learner(cfg, graph, seed=0).double().use_training_nodes(sampler.members)
    draws = [_draws(check, e, 1000 + i) for i, e in enumerate(episodes)]
    start = time.perf_counter()
    for e, d in zip(episodes, draws):  # our subgraphs of every node the episodes touch
        for v in np.concatenate([e.support.numpy(), e.query.numpy(), d.extra]):
            check.subgraphs.get(int(v))
    ours_once = time.perf_counter() - start
    x64, x32 = data.x.double(), data.x.float()
    start = time.perf_counter()
    for e, d in zip(episodes, draws):  # the reference's, as Subgraph.build stores them
        for v in np.concatenate([e.support.numpy(), d.extra]):
            ppr.subgraph(int(v), x64)
            ppr.subgraph(int(v), x32)
    ref_once = (time.perf_counter() - start) / 2
    print(f"# {graph_name} {shots}-shot: subgraphs of the touched nodes extracted once: ours {ours_once:.1f} s, "
          f"reference {ref_once:.1f} s", file=sys.stderr, flush=True)
    temperature = cfg.option("temperature")
    out = ref.cosmic_step(ref.reference_params(check), ppr, x64, episodes[0].support.tolist(),
                          episodes[0].support_y.tolist(), _groups(draws[0]), draws[0].lam, temperature)
    torch.manual_seed(1000)
    result = check(episodes[0], train=True)
    result.loss.backward()
    ours = dict(check.named_parameters())
    worst = abs(float(result.loss.detach()) - float(out.loss))
    for name, g in ref.to_ours(out.grads).items():
        worst = max(worst, float((ours[name].grad - g).abs().max()) / max(1.0, float(g.abs().max())))
    assert worst <= TOL, f"{graph_name} {shots}-shot: reference and ours differ by {worst:.1e}"

    learner = build_learner(cfg, graph, seed=0).use_training_nodes(sampler.members)
    optimizer = torch.optim.Adam(learner.parameters(), lr=cfg.lr)
    leaves = ref.reference_params(learner)
    ref_opt = torch.optim.Adam(list(leaves.values()), lr=cfg.lr)
    ours_ms, ref_ms = [], []
    for i, (episode, d) in enumerate(zip(episodes, draws)):
        wall, cpu = time.perf_counter(), time.process_time()
        torch.manual_seed(1000 + i)
        optimizer.zero_grad()
        learner(episode, train=True).loss.backward()
        optimizer.step()
        if i >= 1:  # the first step warms caches up
            ours_ms.append(lap(wall, cpu))
        if 1 <= i <= args.reference_episodes:
            wall, cpu = time.perf_counter(), time.process_time()
            ref_opt.zero_grad()
            step = ref.cosmic_step(leaves, ppr, x32, episode.support.tolist(), episode.support_y.tolist(),
                                   _groups(d), d.lam, temperature)
            for k, g in step.grads.items():
                leaves[k].grad = g
            ref_opt.step()
            ref_ms.append(lap(wall, cpu))
    return [graph_name, f"2-way {shots}-shot", *speed_row(median_ms(ours_ms), median_ms(ref_ms)),
            f"{len(ours_ms)} / {len(ref_ms)}", f"{worst:.1e}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    episode_speed_arguments(parser, 20, "timed episodes of ours per cell", 10, "timed reference episodes per cell")
    parser.add_argument("--quick", action="store_true", help="8 episodes, 4 reference episodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.reference_episodes = 8, 4
    print_speed_table(args, bench, "COSMIC episode speed",
                      "per training episode (mix-up, subgraph batch, one-layer GCN (hidden 1024), SupCon, backward, "
                      "Adam)", "reference ms/ep", "max |diff| (check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
