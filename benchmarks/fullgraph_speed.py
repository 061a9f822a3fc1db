"""Meta-training time per episode: gnn_cml's MAML+CML against a full-graph reference.

Setting: 2-layer GCN (hidden 16, dropout 0) + linear head, CML co-learner (hidden 16,
gamma 0.2), 20 second-order inner steps at 0.05, 5-way 5-shot, 10 queries per class,
tasks drawn from all classes. Our side is ``build_learner`` (row-subset GCN); the
reference, written here, runs the GCN on every node with a torch sparse ``Â`` at each
inner step and takes ``torch.autograd.grad(create_graph=True)``. Both start from the
same weights, run the same episodes, and must agree on the meta-loss and every
meta-gradient entry to 1e-5. (The vmapped meta-batch this script also timed was retired in
issue 17: nothing in the package used it; batched runs are ``benchmarks/runs_speed.py``.)

    python benchmarks/fullgraph_speed.py            # Cora, CiteSeer, a CoraFull-sized graph (~1 min)
    python benchmarks/fullgraph_speed.py --quick    # Cora and CiteSeer, fewer episodes (~15 s)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, default_threads, machine, setup, synthetic_graph, table  # noqa: E402

TOL = 1e-5
WAYS, SHOTS, QUERIES, STEPS, INNER_LR, GAMMA = 5, 5, 10, 20, 0.05, 0.2
CORAFULL_SIZE = dict(nodes=19793, edges=126842, features=8710, classes=70, density=0.01)


def load(name: str, root):
    if name == "corafull-size":
        return synthetic_graph(**CORAFULL_SIZE, seed=0)
    from gnn_cml.data import load_graph

    return load_graph(name, root)


def build_model(graph):
    from gnn_cml.config import RunConfig
    from gnn_cml.meta.factory import build_learner

    # This benchmark predates the paper protocol and keeps its setting: second order, ReLU output.
    cfg = RunConfig(method="maml", cml=True, gamma=GAMMA, ways=WAYS, shots=SHOTS, queries=QUERIES, dropout=0.0,
                    inner_steps=STEPS, inner_lr=INNER_LR, hidden=16, layers=2, co_hidden=[16],
                    first_order=False, out_activation="relu", init="torch")
    return build_learner(cfg, graph, seed=0)


class FullGraphReference:
    """MAML+CML as a straightforward implementation writes it: the whole graph every step.

    ``Â`` is a torch sparse CSR matrix; features stay sparse (CSR) when under 10%
    dense, the faster layout for both bag-of-words graphs here.
    """

    def __init__(self, model, graph, data):
        import torch

        self.torch = torch
        self.adj = graph.torch_adjacency().to_sparse_csr()
        x = data.x.coalesce() if data.x.is_sparse else data.x
        density = (x._nnz() if x.is_sparse else int((x != 0).sum())) / (x.shape[0] * x.shape[1])
        self.x = (x if x.is_sparse else x.to_sparse()).to_sparse_csr() if density < 0.1 else x
        self.params = dict(model.named_parameters())

    def _gcn(self, p):
        torch = self.torch
        enc = "learner.net.encoder.layers."
        w0 = p[enc + "0.weight"].t()
        xw = torch.sparse.mm(self.x, w0) if self.x.layout != torch.strided else self.x @ w0
        h = torch.relu(torch.sparse.mm(self.adj, xw) + p[enc + "0.bias"])
        return torch.relu(torch.sparse.mm(self.adj, h @ p[enc + "1.weight"].t()) + p[enc + "1.bias"])

    @staticmethod
    def _linear(p, prefix, h):
        return h @ p[prefix + ".weight"].t() + p[prefix + ".bias"]

    def loss_and_grads(self, episode):
        torch, ce = self.torch, self.torch.nn.functional.cross_entropy
        fast = {k: v for k, v in self.params.items() if k.startswith("learner.")}
        for _ in range(STEPS):
            logits = self._linear(fast, "learner.net.head.net.1", self._gcn(fast)[episode.support])
            grads = torch.autograd.grad(ce(logits, episode.support_y), list(fast.values()), create_graph=True)
            fast = {k: v - INNER_LR * g for (k, v), g in zip(fast.items(), grads)}
        features = self._gcn(fast)[episode.query]
        co = self._linear(self.params, "co_learner.net.3",
                          torch.relu(self._linear(self.params, "co_learner.net.1", features)))
        loss = (ce(self._linear(fast, "learner.net.head.net.1", features), episode.query_y)
                + GAMMA * ce(co, episode.query_y))
        return loss.detach(), torch.autograd.grad(loss, list(self.params.values()))


def ours(model, episode):
    """Our engine's meta-loss and meta-gradient for one task, as the Trainer computes them."""
    model.zero_grad(set_to_none=True)
    result = model(episode, train=True)
    result.loss.backward()
    return result.loss.detach(), [p.grad for p in model.parameters()]


def timed(fn, *args):
    """``fn(*args)`` and its (wall, CPU) milliseconds; CPU time is less disturbed by other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu))


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def agree(name, what, loss_a, loss_b, grads_a, grads_b):
    dl, dg = float((loss_a - loss_b).abs()), max_diff(grads_a, grads_b)
    assert dl <= TOL and dg <= TOL, f"{name}: {what} disagree: |dloss| {dl:.2e}, max |dgrad| {dg:.2e}"
    return max(dl, dg)


def bench_graph(name, args):
    """Time one graph: a check/memory episode, a warm-up one, then ``args.episodes`` timed ones."""
    import numpy as np

    from gnn_cml.models import PreparedGraph
    from gnn_cml.sampling import EpisodeSampler

    data = load(name, args.root)
    start = time.perf_counter()
    graph = PreparedGraph(data)
    graph.propagated(1)
    prep_s = time.perf_counter() - start
    model = build_model(graph)
    reference = FullGraphReference(model, graph, data)
    classes = np.unique(data.y.numpy())
    sampler = EpisodeSampler(data.y, classes, WAYS, SHOTS, QUERIES, seed=args.seed)
    episodes = [sampler.sample() for _ in range(args.episodes + 2)]

    with PeakRSS() as ours_mem:  # episode 0: agreement check and peak memory
        ours_loss, ours_grads = ours(model, episodes[0])
    with PeakRSS() as ref_mem:
        ref_loss, ref_grads = reference.loss_and_grads(episodes[0])
    worst = agree(name, "reference and ours", ref_loss, ours_loss, ref_grads, ours_grads)
    ours(model, episodes[1])  # the reference's first run above was its warm-up
    ours_ms, ref_ms = [], []
    for i, episode in enumerate(episodes[2:]):
        (ours_loss, ours_grads), ms = timed(ours, model, episode)
        ours_ms.append(ms)
        if i < args.reference_episodes:  # interleaved, so both sides see the same machine load
            (ref_loss, ref_grads), ms = timed(reference.loss_and_grads, episode)
            ref_ms.append(ms)
            worst = max(worst, agree(name, "reference and ours", ref_loss, ours_loss, ref_grads, ours_grads))
    rows = np.mean([len(graph.neighbourhood(e.support.numpy())) + len(graph.neighbourhood(e.query.numpy()))
                    for e in episodes])
    (ours_wall, ours_cpu), (ref_wall, ref_cpu) = medians(ours_ms), medians(ref_ms)
    result = [name, data.num_nodes, data.x.shape[1], f"{rows:.0f}", f"{prep_s:.2f}",
              f"{ours_wall:.1f} / {ours_cpu:.1f}", f"{ours_mem.mib:.1f}", f"{ref_wall:.0f} / {ref_cpu:.0f}",
              f"{ref_mem.mib:.1f}", f"{ref_wall / ours_wall:.1f}x / {ref_cpu / ours_cpu:.1f}x", f"{worst:.1e}"]
    return result


def medians(times):
    """Median wall and median CPU milliseconds of (wall, cpu) pairs."""
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", help="comma-separated: cora, citeseer, corafull-size (generated); "
                                         "default all three (--quick: cora,citeseer)")
    parser.add_argument("--episodes", type=int, default=20, help="timed episodes of our engine per graph")
    parser.add_argument("--reference-episodes", type=int, default=4, help="timed reference episodes per graph")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="threads for both sides (sets OMP_NUM_THREADS; default $OMP_NUM_THREADS or 1)")
    parser.add_argument("--root", help="data root for Cora/CiteSeer (default $GNN_CML_DATA)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed")
    parser.add_argument("--quick", action="store_true", help="5 episodes, 1 reference episode")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.reference_episodes = 5, 1
    args.graphs = args.graphs or ("cora,citeseer" if args.quick else "cora,citeseer,corafull-size")
    args.reference_episodes = min(args.reference_episodes, args.episodes)
    setup(args.threads)
    import torch

    print(f"# episode speed: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"# 2-layer GCN MAML+CML, {STEPS} second-order inner steps, {WAYS}-way {SHOTS}-shot, "
          f"{QUERIES} queries/class; {args.episodes} timed episodes ours, {args.reference_episodes} reference; "
          f"medians; peak memory = RSS rise during one episode")
    speed = []
    for name in args.graphs.split(","):
        speed.append(bench_graph(name.strip(), args))
        print(f"# {name}: done", file=sys.stderr, flush=True)
    print(table(["graph", "nodes", "features", "rows/ep", "prep s", "ours ms/ep wall / cpu", "ours peak MiB",
                 "reference ms/ep wall / cpu", "ref peak MiB", "speed-up wall / cpu", "max |diff|"], speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
