"""Meta-training time per episode of TEG: gnn-cml's learner against the transcription of its authors' code.

The reference side is ``tests/reference_code/teg.py`` (the test-only transcription that
tests/test_teg.py checks our learner against): PyG's ``GCNConv`` over the whole graph every
episode (normalisation cached, as the authors' ``cached=True``), dropout 0.5 on all input
features, the EGNN on the task's edge list with ``scatter_add_``, prototype losses, backward,
Adam (lr 0.001, weight decay 5e-4). Our side is the Trainer's step: drawing the episode, its
rows (one GCN layer on the task nodes' neighbourhoods only), the dense bipartite EGNN, the same
losses, backward, Adam. Both run the same episodes from the same initial weights, interleaved
episode by episode (both see the same machine load). Before timing, one episode in float64 with
dropout off must give the same loss and gradients on both sides (1e-5).

    python benchmarks/teg_speed.py            # CiteSeer and Cora, 2-way 1- and 5-shot (~1 min)
    python benchmarks/teg_speed.py --quick    # fewer episodes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test-only transcription
from _common import ReplaySampler, episode_speed_arguments, lap, median_ms, print_speed_table, speed_row  # noqa: E402

TOL = 1e-5


def build(graph_name, shots, graph, dropout=None, seed=0):
    from gnn_cml.config import resolve
    from gnn_cml.meta.factory import build_learner

    overrides = dict(graph=graph_name, method="teg", ways=2, shots=shots)
    if dropout is not None:
        overrides["dropout"] = dropout
    cfg = resolve(overrides)
    return cfg, build_learner(cfg, graph, seed=seed)


def check_equal(graph_name, shots, data, graph, episode) -> float:
    """Float64, dropout off, one episode: our loss and every gradient entry equal the transcription's."""
    import torch
    from reference_code import teg as ref

    cfg, learner = build(graph_name, shots, graph, dropout=0.0)
    learner = learner.to(torch.float64)
    gcn, egnn, names = ref.from_ours(learner)
    out = ref.teg_task(gcn, egnn, data.x.to(torch.float64), data.edge_index, learner.structure.to(torch.float64),
                       episode.support, episode.query, episode.query_y, ways=2, shots=shots,
                       gamma=cfg.option("teg_gamma"))
    out.loss.backward()
    result = learner(episode, train=True)
    result.loss.backward()
    ours = dict(learner.named_parameters())
    worst = abs(float(result.loss.detach()) - float(out.loss.detach()))
    for name, g in ref.gradients(gcn, egnn, names).items():
        mine = ours[name].grad if ours[name].grad is not None else torch.zeros_like(g)
        worst = max(worst, float((mine - g).abs().max()))
    assert worst <= TOL, f"{graph_name} {shots}-shot: transcription and ours differ by {worst:.1e}"
    return worst


def bench(graph_name, shots, args, cache):
    import torch
    from reference_code import teg as ref

    from gnn_cml.data import load_graph
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler, default_split

    if graph_name not in cache:
        data = load_graph(graph_name, args.root)
        cache[graph_name] = (data, PreparedGraph(data, norm="sym"))
    data, graph = cache[graph_name]
    split = default_split(data)
    sampler = EpisodeSampler(data.y, split.train, 2, shots, 5, seed=args.seed)
    episodes = [sampler.sample() for _ in range(args.episodes + 1)]
    worst = check_equal(graph_name, shots, data, graph, episodes[0])

    cfg, learner = build(graph_name, shots, graph, seed=args.seed)
    trainer = Trainer(learner, ReplaySampler(episodes), [],
                      TrainerConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, progress=False), tensorboard=False)
    gcn, egnn, _ = ref.from_ours(learner, dropout=cfg.dropout)
    gcn.train()
    ref_opt = torch.optim.Adam(list(gcn.parameters()) + list(egnn.parameters()), lr=cfg.lr,
                               weight_decay=cfg.weight_decay)
    features, edge_index, structure = data.x, data.edge_index, learner.structure

    def reference_step(episode):
        ref_opt.zero_grad()
        out = ref.teg_task(gcn, egnn, features, edge_index, structure, episode.support, episode.query,
                           episode.query_y, ways=2, shots=shots, gamma=cfg.option("teg_gamma"))
        out.loss.backward()
        ref_opt.step()

    ours_ms, ref_ms = [], []
    for i, episode in enumerate(episodes):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.step()
        if i >= 1:  # the first step warms caches up (Â X, GCNConv's cached normalisation)
            ours_ms.append(lap(wall, cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        reference_step(episode)
        if i >= 1:
            ref_ms.append(lap(wall, cpu))
    return [graph_name, f"2-way {shots}-shot", *speed_row(median_ms(ours_ms), median_ms(ref_ms), 2, 2),
            f"{len(ours_ms)} / {len(ref_ms)}", f"{worst:.1e}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    episode_speed_arguments(parser, 60, "timed episodes per side and cell")
    parser.add_argument("--quick", action="store_true", help="15 episodes per cell")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = 15
    print_speed_table(args, bench, "TEG episode speed",
                      "per meta-training episode (episode rows, GCN, EGNN, both prototype losses, backward, Adam; "
                      "dropout 0.5)", "transcription ms/ep", "max |diff| (float64 check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
