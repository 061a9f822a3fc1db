"""The closed-form first-order inner loop equals the autograd inner loop (real CiteSeer and Cora, float64)."""
import pytest
import torch

from gnn_cml.config import resolve
from gnn_cml.meta import closed_form
from gnn_cml.meta.factory import build_learner
from gnn_cml.models import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler


@pytest.fixture(scope="module")
def graphs(shared_data):
    from gnn_cml.data import load_graph

    out = {}
    for name in ("citeseer", "cora"):
        data = load_graph(name, shared_data)
        out[name] = (data, PreparedGraph(data))
    return out


def _run(learner, episode, train, seed):
    learner.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    learner.train(train)
    result = learner(episode, train=train) if train else learner.test_model()(episode, train=False)
    if train:
        result.loss.backward()
    grads = {k: p.grad.clone() for k, p in learner.named_parameters() if p.grad is not None}
    return result, grads


@pytest.mark.parametrize("graph", ["citeseer", "cora"])
@pytest.mark.parametrize("method,cml,shots", [("gmeta", False, 1), ("gmeta", True, 5), ("maml", True, 1),
                                             ("maml", False, 5), ("ammgnn", True, 1), ("ammgnn", False, 5)])
def test_closed_form_equals_autograd(graphs, graph, method, cml, shots, monkeypatch):
    data, prepared = graphs[graph]
    classes = 6 if graph == "citeseer" else 7
    counts = (2, 2, 2) if graph == "citeseer" else (3, 2, 2)
    cfg = resolve(dict(graph=graph, method=method, cml=cml, ways=2, shots=shots))
    assert cfg.first_order and cfg.dropout == 0.5
    learner = build_learner(cfg, prepared, seed=1).to(torch.float64)
    episode = EpisodeSampler(data.y, ClassSplit.from_counts(classes, counts).train, 2, shots, 5, seed=2).sample()
    calls = []
    real = closed_form.adapt
    monkeypatch.setattr(closed_form, "adapt", lambda *a, **k: calls.append(1) or real(*a, **k))
    for train in (True, False):  # meta-training (dropout on) and meta-test (eval mode)
        fast, fast_grads = _run(learner, episode, train, seed=5)
        assert calls, "the closed-form path was not taken"
        calls.clear()
        monkeypatch.setattr(type(learner.learner if cml else learner), "fast_inner", False, raising=False)
        base = learner.learner if cml else learner
        base.fast_inner = False
        slow, slow_grads = _run(learner, episode, train, seed=5)
        base.fast_inner = True
        assert not calls
        assert abs(float(fast.loss) - float(slow.loss)) <= 1e-5
        assert torch.allclose(fast.logits, slow.logits, atol=1e-5, rtol=0)
        assert fast_grads.keys() == slow_grads.keys()
        for name in slow_grads:
            assert torch.allclose(fast_grads[name], slow_grads[name], atol=1e-5, rtol=0), \
                (name, (fast_grads[name] - slow_grads[name]).abs().max())


def test_closed_form_is_not_used_where_it_would_differ(graphs):
    data, prepared = graphs["cora"]
    for extra in (dict(first_order=False), dict(out_activation="relu"), dict(modulation="feature", method="ammgnn"),
                  dict(backbone="sage")):
        cfg = resolve(dict(dict(graph="cora", method="maml", ways=2, shots=1), **extra))
        learner = build_learner(cfg, prepared, seed=0)
        episode = EpisodeSampler(data.y, [0, 1, 2], 2, 1, 5, seed=0).sample()
        support, _ = learner.inputs(episode)
        params = dict(learner.named_parameters())
        adapted, _ = learner.split_params(params)
        cond, _ = learner.condition(episode, params, True)
        usable = closed_form.applies(learner, adapted, support, cond, False)
        if "first_order" in extra:
            assert usable  # supported, but MAML.adapt only takes it without create_graph
        else:
            assert not usable, extra


def test_numpy_and_torch_step_loops_agree():
    g = torch.Generator().manual_seed(0)
    rows, hidden, ways, n = 13, 16, 3, 6
    z = torch.randn(rows, hidden, generator=g, dtype=torch.float64)
    gram = torch.rand(rows, rows, generator=g, dtype=torch.float64)
    prop = torch.rand(n, rows, generator=g, dtype=torch.float64)
    targets = torch.arange(n) % ways
    w2, b2 = torch.randn(hidden, hidden, generator=g, dtype=torch.float64), torch.randn(hidden, dtype=torch.float64)
    wh, bh = torch.randn(ways, hidden, generator=g, dtype=torch.float64), torch.randn(ways, dtype=torch.float64)
    masks = torch.empty(7, rows, hidden, dtype=torch.float64).bernoulli_(0.5, generator=g) * 2
    outs = [loop(z, gram, prop, targets, w2, b2, wh, bh, masks, 7, 0.1)
            for loop in (closed_form.numpy_steps, closed_form.torch_steps)]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    assert not torch.equal(outs[0][1], w2)  # the loop did update the weights


@pytest.mark.parametrize("pool,layers", [("mean", 2), ("center", 2), ("mean", 3)])
def test_subgraph_encoder_without_output_activation_equals_each_subgraph_gcn(graphs, pool, layers):
    """The collapsed last layer (pool Â) h W + b equals pooling the plain subgraph GCN's output."""
    import numpy as np

    from gnn_cml.models import SubgraphGCN

    data, graph = graphs["cora"]
    torch.manual_seed(0)
    enc = SubgraphGCN(graph.num_features, 8, layers=layers, dropout=0.0, pool=pool,
                      out_activation="none").bind(graph).double()
    nodes = np.array([3, 17, 1200, 2500])
    inputs = enc.prepare(torch.from_numpy(nodes))
    assert ("pool_adj" in inputs) and (("adj" in inputs) == (layers > 2)) and "pool" not in inputs
    out = enc(inputs, training=False)
    for row, v in zip(out, nodes):
        s = graph.neighbourhood(np.array([v]), 2)
        a = torch.from_numpy(graph.adj[s][:, s].toarray()).double()
        h = torch.from_numpy(graph.x[s]).double()
        for i, layer in enumerate(enc.layers):
            h = a @ (h @ layer.weight.t()) + layer.bias
            if i < layers - 1:
                h = torch.relu(h)
        expected = h.mean(0) if pool == "mean" else h[int(np.searchsorted(s, v))]
        assert torch.allclose(row, expected, atol=1e-8)
