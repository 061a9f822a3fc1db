"""The fast paths compute what the plain definitions compute, on real Cora (1e-5).

Row-subset encoders against full-graph forwards, the Gram-tracked inner loop against
the direct one, the MAML+CML meta-gradient against a full-graph reference, sparse
row blocks against dense ones, and the batched (vmapped) meta-batch against a loop.
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from gnn_cml.config import RunConfig
from gnn_cml.meta import MAML
from gnn_cml.meta.factory import build_learner
from gnn_cml.models import GAT, GCN, SAGE, SGC, PreparedGraph, RowBlock, SubgraphGCN
from gnn_cml.sampling import EpisodeSampler

TOL = 1e-5
NODES = torch.tensor([0, 5, 633, 1701, 2707, 1358])




@pytest.fixture(scope="module")
def cora(shared_data):
    from gnn_cml.data import load_graph

    return load_graph("cora", shared_data)


@pytest.fixture(scope="module")
def graph(cora):
    return PreparedGraph(cora)


def episodes(cora, count, seed=0):
    sampler = EpisodeSampler(cora.y, range(7), 5, 5, 10, seed=seed)
    return [sampler.sample() for _ in range(count)]


def meta_grads(model, episode_list):
    """Mean outer loss of a loop over tasks and its meta-gradient."""
    model.zero_grad(set_to_none=True)
    loss = sum(model(e, train=True).loss for e in episode_list) / len(episode_list)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_close(a, b, tol=TOL):
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=tol, rtol=0), (x - y).abs().max()


# --- row-subset encoders == full-graph forward --------------------------------------------------

@pytest.mark.parametrize("norm", ["row", "sym"])
def test_gcn_rows_equal_full_graph(cora, norm):
    graph = PreparedGraph(cora, norm=norm)
    torch.manual_seed(0)
    enc = GCN(graph.num_features, 16, dropout=0.0).bind(graph).eval()
    adj, h = graph.torch_adjacency(), torch.as_tensor(graph.x)
    for layer in enc.layers:
        h = torch.relu(torch.sparse.mm(adj, h @ layer.weight.t()) + layer.bias)
    assert_close([enc(enc.prepare(NODES), training=False)], [h[NODES]])


def test_sgc_rows_equal_full_graph(graph):
    torch.manual_seed(0)
    enc = SGC(graph.num_features, 16, layers=2).bind(graph).eval()
    adj, h = graph.torch_adjacency(), torch.as_tensor(graph.x)
    full = torch.sparse.mm(adj, torch.sparse.mm(adj, h)) @ enc.linear.weight.t() + enc.linear.bias
    assert_close([enc(enc.prepare(NODES), training=False)], [full[NODES]])


@pytest.mark.parametrize("encoder", [SAGE, GAT])
def test_message_passing_rows_equal_full_graph(cora, graph, encoder):
    torch.manual_seed(0)
    enc = encoder(graph.num_features, 16, dropout=0.0).bind(graph).eval()
    h = cora.x
    for conv in enc.convs:
        h = enc.act(conv(h, cora.edge_index))
    assert_close([enc(enc.prepare(NODES), training=False)], [h[NODES]])


@pytest.mark.parametrize("pool", ["mean", "center"])
def test_subgraph_encoder_is_its_definition(graph, pool):
    """G-Meta: the GCN on Â restricted to each node's 2-hop subgraph, mean (or centre) pooled."""
    torch.manual_seed(0)
    enc = SubgraphGCN(graph.num_features, 16, dropout=0.0, pool=pool).bind(graph).eval()
    out = enc(enc.prepare(NODES), training=False)
    for row, v in zip(out, NODES.tolist()):
        s = graph.neighbourhood(np.array([v]), 2)
        a, h = torch.from_numpy(graph.adj[s][:, s].toarray()), torch.from_numpy(graph.x[s])
        for layer in enc.layers:
            h = torch.relu(a @ (h @ layer.weight.t()) + layer.bias)
        assert_close([row], [h.mean(0) if pool == "mean" else h[int(np.searchsorted(s, v))]])


# --- the Gram-tracked inner loop == the direct inner loop ----------------------------------------

def cml_learner(graph, backbone="gcn", steps=5, first_order=False, **extra):
    cfg = RunConfig(method="maml", cml=True, ways=5, shots=5, dropout=0.0, backbone=backbone,
                    inner_steps=steps, first_order=first_order, **extra)
    return build_learner(cfg, graph, seed=0)


@pytest.mark.parametrize("backbone,first_order", [("gcn", False), ("gcn", True), ("sgc", False),
                                                  ("subgraph_gcn", False)])
def test_gram_tracked_inner_loop_equals_direct(graph, cora, monkeypatch, backbone, first_order):
    model = cml_learner(graph, backbone, first_order=first_order)
    batch = episodes(cora, 2)
    key = f"net.encoder.{model.learner.encoder.input_weight}"
    monkeypatch.setattr(MAML, "_tracked_input", lambda self, adapted, *a: key)  # always tracked
    tracked = meta_grads(model, batch)
    monkeypatch.setattr(MAML, "_tracked_input", lambda self, *a: None)  # never tracked
    direct = meta_grads(model, batch)
    assert_close([tracked[0]], [direct[0]])
    assert_close(tracked[1], direct[1])


def test_gram_tracking_is_chosen_for_wide_features_only(graph, cora):
    learner = cml_learner(graph).learner
    support, _ = learner.inputs(episodes(cora, 1)[0])
    params = dict(learner.named_parameters())
    assert learner._tracked_input(params, support, None, 20) == "net.encoder.layers.0.weight"
    assert learner._tracked_input(params, support, {"scale": torch.ones(1)}, 20) is None  # AMM-GNN conditioning
    narrow = dict(support, x=RowBlock.from_matrix(np.ones((support["x"].shape[0], 8), np.float32)))
    assert learner._tracked_input(params, narrow, None, 20) is None


# --- MAML+CML meta-gradient == a full-graph reference --------------------------------------------

def full_graph_meta_gradient(model, graph, episode, steps, lr, gamma):
    adj, x = graph.torch_adjacency(), torch.as_tensor(graph.x)
    params = dict(model.named_parameters())

    def gcn(p):
        h = torch.relu(torch.sparse.mm(adj, x @ p["learner.net.encoder.layers.0.weight"].t())
                       + p["learner.net.encoder.layers.0.bias"])
        return torch.relu(torch.sparse.mm(adj, h @ p["learner.net.encoder.layers.1.weight"].t())
                          + p["learner.net.encoder.layers.1.bias"])

    def linear(p, name, h):
        return h @ p[name + ".weight"].t() + p[name + ".bias"]

    fast = {k: v for k, v in params.items() if k.startswith("learner.")}
    for _ in range(steps):
        loss = F.cross_entropy(linear(fast, "learner.net.head.net.1", gcn(fast)[episode.support]), episode.support_y)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads)}
    features = gcn(fast)[episode.query]
    co = linear(params, "co_learner.net.3", torch.relu(linear(params, "co_learner.net.1", features)))
    loss = F.cross_entropy(linear(fast, "learner.net.head.net.1", features), episode.query_y) \
        + gamma * F.cross_entropy(co, episode.query_y)
    return loss.detach(), list(torch.autograd.grad(loss, list(params.values())))


def test_meta_gradient_equals_full_graph_reference(graph, cora):
    model = cml_learner(graph, steps=5, out_activation="relu")  # second order, ReLU output: the non-default options
    episode = episodes(cora, 1, seed=3)[0]
    ours = meta_grads(model, [episode])
    ref = full_graph_meta_gradient(model, graph, episode, 5, model.learner.inner_lr, model.gamma)
    assert_close([ours[0]], [ref[0]])
    assert_close(ours[1], ref[1])


# --- sparse row blocks == dense ones ------------------------------------------------------------

def test_sparse_row_blocks_equal_dense(graph):
    m = sp.csr_matrix(graph.propagated(1)[graph.neighbourhood(NODES.numpy())])
    dense, sparse = RowBlock.from_matrix(m), RowBlock.from_matrix(m, limit=0)
    assert dense.dense is not None and sparse.dense is None
    torch.manual_seed(0)
    w, g = torch.randn(m.shape[1], 16), torch.randn(m.shape[0], 16)
    assert_close([sparse.matmul(w), sparse.tmatmul(g), sparse.gram()],
                 [dense.matmul(w), dense.tmatmul(g), dense.gram()])
