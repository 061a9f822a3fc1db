"""The meta-learning engine: inner loop gradients, CML's co-learner, row-subset exactness."""
import copy

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from gnn_cml.config import resolve
from gnn_cml.meta import MAML
from gnn_cml.meta.factory import build_learner, with_cml
from gnn_cml.models import GCN, MLPHead, PreparedGraph, SubgraphGCN
from gnn_cml.sampling import Episode, EpisodeSampler


@pytest.fixture(scope="module")
def cora(shared_data):
    from gnn_cml.data import load_graph

    return load_graph("cora", shared_data)


def tiny_graph(seed=0, n=30, f=8, c=3):
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (2, 80), generator=g)
    x = torch.rand(n, f, generator=g)
    y = torch.arange(n) % c
    return Data(x=x, edge_index=torch.cat([edges, edges.flip(0)], 1), y=y, num_nodes=n)


def tiny_episode():
    return Episode(torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 2, 0, 1, 2]),
                   torch.tensor([6, 7, 8, 9, 10, 11]), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2]))


def full_graph_gcn(encoder: GCN, graph: PreparedGraph, params=None):
    """Reference: the GCN on every node with the sparse Â (what the reference code does)."""
    params = params or dict(encoder.named_parameters())
    adj = graph.torch_adjacency().to(torch.float64)
    h = torch.as_tensor(graph.x, dtype=torch.float64)
    for i in range(encoder.num_layers):
        h = torch.sparse.mm(adj, h @ params[f"layers.{i}.weight"].t().double()) + params[f"layers.{i}.bias"].double()
        h = torch.relu(h)
    return h


def test_row_subset_gcn_equals_full_graph_on_cora(cora):
    graph = PreparedGraph(cora)
    torch.manual_seed(0)
    for layers in (1, 2, 3):
        enc = GCN(graph.num_features, 16, layers=layers, dropout=0.0).bind(graph).eval()
        nodes = torch.tensor([0, 5, 633, 1701, 2707])
        ours = enc(enc.prepare(nodes), training=False).double()
        ref = full_graph_gcn(enc, graph)[nodes]
        assert torch.allclose(ours, ref, atol=1e-5), (layers, (ours - ref).abs().max())


def test_subgraph_encoder_is_the_gcn_on_each_restricted_subgraph():
    data = tiny_graph()
    graph = PreparedGraph(data)
    torch.manual_seed(0)
    enc = SubgraphGCN(8, 5, dropout=0.0).bind(graph)
    nodes = np.array([3, 17])
    out = enc(enc.prepare(torch.from_numpy(nodes)), training=False)
    for row, v in zip(out, nodes):
        s = graph.neighbourhood(np.array([v]), 2)
        a = torch.from_numpy(graph.adj[s][:, s].toarray())
        h = torch.from_numpy(graph.x[s])
        for layer in enc.layers:
            h = torch.relu(a @ (h @ layer.weight.t()) + layer.bias)
        assert torch.allclose(row, h.mean(0), atol=1e-5)


def make_maml(data, first_order=False, steps=3, dtype=torch.float64, dropout=0.0):
    graph = PreparedGraph(data)
    torch.manual_seed(0)
    enc = GCN(graph.num_features, 4, dropout=dropout).bind(graph)
    learner = MAML(enc, MLPHead(4, 3), inner_steps=steps, inner_lr=0.5, first_order=first_order)
    return learner.to(dtype)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_numerical(first_order):
    """Second order: gradcheck of the outer loss through the inner loop. First order: the
    gradient is the query-loss gradient at the adapted point (FOMAML), not the full one."""
    learner = make_maml(tiny_graph(), first_order=first_order)
    episode = tiny_episode()
    names = [n for n, _ in learner.named_parameters()]
    base = {n: p.detach().clone() for n, p in learner.named_parameters()}

    def outer(*flat):
        params = dict(zip(names, flat))
        adapted = learner.adapt(params, learner.encoder.prepare(episode.support), episode.support_y,
                                create_graph=not first_order)
        _, logits = torch.func.functional_call(learner.net, learner._net_params(adapted),
                                               (learner.encoder.prepare(episode.query),), {"training": False})
        return learner.task_loss(logits, episode.query_y)

    inputs = tuple(base[n].clone().requires_grad_() for n in names)
    if not first_order:
        assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-5)
        return
    fo = torch.autograd.grad(outer(*inputs), inputs)
    # FOMAML: d L_query / d theta' evaluated at theta'
    adapted = learner.adapt(dict(zip(names, inputs)), learner.encoder.prepare(episode.support),
                            episode.support_y, create_graph=False)
    point = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    _, logits = torch.func.functional_call(learner.net, learner._net_params(point),
                                           (learner.encoder.prepare(episode.query),), {"training": False})
    expected = torch.autograd.grad(learner.task_loss(logits, episode.query_y), [point[n] for n in names])
    for a, b in zip(fo, expected):
        assert torch.allclose(a, b, atol=1e-10)


def test_second_and_first_order_differ():
    episode = tiny_episode()
    grads = {}
    for fo in (False, True):
        learner = make_maml(tiny_graph(), first_order=fo)
        learner(episode).loss.backward()
        grads[fo] = torch.cat([p.grad.reshape(-1) for p in learner.parameters()])
    assert not torch.allclose(grads[False], grads[True])


def test_inner_loop_fits_the_support_set(cora):
    learner = make_maml(cora, steps=0, dtype=torch.float32)
    sampler = EpisodeSampler(cora.y, range(7), 3, 5, 5, seed=1)
    episode = sampler.sample()
    params = {k: v.detach() for k, v in learner.named_parameters()}
    support = learner.encoder.prepare(episode.support)

    def support_loss(p):
        _, logits = torch.func.functional_call(learner.net, learner._net_params(p), (support,), {"training": False})
        return float(learner.task_loss(logits, episode.support_y))

    before = support_loss(params)
    after = support_loss(learner.adapt(params, support, episode.support_y, steps=10, create_graph=False))
    assert after < before - 0.05


def cml_model(data, gamma, seed=0):
    cfg = resolve({"method": "maml", "cml": True, "gamma": gamma, "ways": 3, "inner_steps": 2, "dropout": 0.5})
    return build_learner(cfg, PreparedGraph(data), seed=seed)


def test_co_learner_gradient_reaches_the_shared_extractor():
    data, episode = tiny_graph(), tiny_episode()
    grads = {}
    for gamma in (0.0, 0.2):
        model = cml_model(data, gamma)
        torch.manual_seed(3)
        model(episode).loss.backward()
        co = [p.grad for p in model.co_learner.parameters()]
        if gamma:
            assert all(g is not None and g.abs().sum() > 0 for g in co)
        grads[gamma] = {n: p.grad.clone() for n, p in model.learner.named_parameters()}
    # the co-learner's query loss changes the extractor's (psi) meta-gradient, via the adapted features
    assert not torch.allclose(grads[0.0]["net.encoder.layers.0.weight"], grads[0.2]["net.encoder.layers.0.weight"])


def test_gamma_zero_reproduces_the_base_learner_exactly(cora):
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.sampling import TaskSet

    histories = []
    for cml in (False, True):
        cfg = resolve({"method": "maml", "cml": cml, "gamma": 0.0, "ways": 2, "inner_steps": 3})
        graph = PreparedGraph(cora)
        model = build_learner(cfg, graph, seed=5)
        val = TaskSet.generate(EpisodeSampler(cora.y, [3, 4], 2, 1, 5, seed=2), 3)
        trainer = Trainer(model, EpisodeSampler(cora.y, [0, 1, 2], 2, 1, 5, seed=1), val,
                          TrainerConfig(episodes=12, val_every=4, seed=9, progress=False), tensorboard=False)
        losses = [trainer.step()["loss"] for _ in range(12)]
        base = model.learner if cml else model
        histories.append((losses, {k: v.clone() for k, v in base.state_dict().items()}))
    assert histories[0][0] == histories[1][0]
    for k, v in histories[0][1].items():
        assert torch.equal(v, histories[1][1][k]), k


def test_meta_test_uses_no_co_learner_parameters():
    data, episode = tiny_graph(), tiny_episode()
    model = cml_model(data, 0.2)
    tester = model.test_model()
    assert not any("co_learner" in n for n, _ in tester.named_parameters())
    torch.manual_seed(0)
    before = tester(episode, train=False).logits
    with torch.no_grad():
        for p in model.co_learner.parameters():
            p.fill_(float("nan"))
    torch.manual_seed(0)
    assert torch.equal(before, model.test_model()(episode, train=False).logits)
    # CML-dagger predicts with the co-learner instead
    dagger = with_cml(copy.deepcopy(model.learner), model.learner.encoder.out_dim, 3, 0.2, dagger=True)
    assert dagger.test_model() is dagger
    assert not torch.equal(dagger(episode, train=False).logits, before)


def test_meta_test_builds_no_outer_graph():
    model = cml_model(tiny_graph(), 0.2)
    result = model.test_model()(tiny_episode(), train=False)
    assert not result.logits.requires_grad
