"""TENT (TLP-FSNC's train_TENT.py) equals a transcription of the script's task on real CiteSeer,
and works from the CLI, a YAML file and Python."""
import json

import numpy as np
import pytest
import torch

from gnn_cml.config import resolve
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta.factory import build_learner
from gnn_cml.models import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler
from reference_code import tent as ref


@pytest.fixture(scope="module")
def citeseer(shared_data):
    from gnn_cml.data import load_graph

    data = load_graph("citeseer", shared_data)
    graph = PreparedGraph(data)
    return data, graph, ref.dense_adjacency(graph), ref.dense_features(graph)


def _learner(graph, cml=False, shots=1, seed=7, **extra):
    cfg = resolve(dict(graph="citeseer", method="tent", ways=2, shots=shots, cml=cml, **extra))
    return build_learner(cfg, graph, seed=seed).to(torch.float64), cfg


def _episode(data, shots, seed, queries=5):
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)
    return EpisodeSampler(data.y, split.train, 2, shots, queries, seed=seed).sample()


def _train_nodes(data):
    y = data.y.numpy()
    nodes = np.flatnonzero(np.isin(y, [3, 5]))  # CiteSeer's reference training classes
    return nodes, y[nodes]


def _check(learner, out, prefix=""):
    ours = dict(learner.named_parameters())
    expected = ref.to_ours(out.grads, prefix)
    expected.update({k: g for k, g in out.grads.items() if k.startswith("co_learner.")})
    assert set(expected) == {k for k, p in ours.items() if p.requires_grad}
    for name, g in expected.items():
        assert torch.allclose(ours[name].grad, g, atol=1e-5, rtol=0), (name, (ours[name].grad - g).abs().max())


# seed 184: a 1-shot episode with a support node and a query without neighbours (the script's special cases)
@pytest.mark.parametrize("shots,seed", [(1, 3), (5, 4), (1, 184)])
def test_tent_task_equals_the_reference_computation_on_citeseer(citeseer, shots, seed):
    data, graph, adj, x = citeseer
    learner, cfg = _learner(graph, shots=shots)
    assert cfg.dropout == 0.0 and cfg.lr == 0.05 and cfg.hidden == 16 and cfg.episodes == 2000
    episode = _episode(data, shots, seed)
    nodes, labels = _train_nodes(data)
    out = ref.tent_task(ref.reference_params(learner), adj, x, episode.support, episode.query, 2, shots,
                        nodes, labels)
    learner.zero_grad()
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss.detach()) - float(out.loss)) <= 1e-5
    assert torch.allclose(result.features, out.query_embeddings, atol=1e-8)
    _check(learner, out)
    assert float(out.grads["emb_w"].abs().max()) > 1e-4 and float(out.grads["gen_w"].abs().max()) > 1e-6


def test_the_equivalence_episodes_cover_a_support_node_without_neighbours(citeseer):
    data, graph, _, _ = citeseer
    alone = np.diff(graph.adj.indptr) == 1
    special, plain = _episode(data, 1, 184), _episode(data, 1, 3)
    assert alone[special.support.numpy()].any() and alone[special.query.numpy()].any()
    assert not alone[plain.support.numpy()].any()


def test_tent_with_cml_equals_the_reference_plus_the_co_learner_term(citeseer):
    data, graph, adj, x = citeseer
    learner, cfg = _learner(graph, cml=True, shots=5)
    episode = _episode(data, 5, seed=11)
    nodes, labels = _train_nodes(data)
    out = ref.tent_task(ref.reference_params(learner), adj, x, episode.support, episode.query, 2, 5, nodes, labels,
                        co_learner=learner.co_learner, gamma=cfg.gamma, query_y=episode.query_y)
    learner.zero_grad()
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss.detach()) - float(out.loss)) <= 1e-5
    _check(learner, out, prefix="learner.")
    assert float(out.grads["gen_w"].abs().max()) > 0


def test_tent_predicts_with_the_scripts_probe(citeseer):
    """Validation/test: multinomial logistic regression (C = 1) on l2-normalised embedder outputs."""
    from sklearn.linear_model import LogisticRegression

    data, graph, _, _ = citeseer
    learner, _ = _learner(graph, shots=5)
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)
    sampler = EpisodeSampler(data.y, split.test, 2, 5, 10, seed=0)
    agree = total = 0
    for _ in range(3):
        episode = sampler.sample()
        result = learner.eval()(episode, train=False)
        with torch.no_grad():
            emb = learner._embed(graph.feature_rows(1, np.arange(graph.num_nodes)))
        z = torch.nn.functional.normalize(emb).numpy()
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(z[episode.support.numpy()], episode.support_y.numpy())
        # sklearn's binary fit with C doubled is the multinomial one (half the penalty)
        clf2 = LogisticRegression(C=2.0, max_iter=1000, tol=1e-8).fit(z[episode.support.numpy()],
                                                                       episode.support_y.numpy())
        predicted = clf2.predict(z[episode.query.numpy()])
        agree += int((result.logits.argmax(1).numpy() == predicted).sum())
        total += len(predicted)
        assert clf.coef_.shape[1] == z.shape[1]
    assert agree == total


def test_tent_trains_from_the_cli_yaml_and_python(tmp_path, shared_data):
    from gnn_cml.cli import main

    common = ["--root", str(shared_data), "--episodes", "4", "--val-every", "2", "--val-tasks", "2",
              "--test-tasks", "3", "--runs", "1", "--no-progress"]
    out = tmp_path / "cli"
    assert main(["train", "--graph", "citeseer", "--method", "tent", "--ways", "2", "--shots", "1",
                 "--out", str(out), *common]) == 0
    result = json.loads((out / "results.json").read_text())
    assert 0.0 <= result["test_accuracy"]["mean"] <= 100.0
    assert (out / "run_0" / "result.json").is_file()

    config = tmp_path / "tent.yaml"
    config.write_text("graph: citeseer\nmethod: tent\nways: 2\nshots: 1\ncml: true\ngamma: 0.5\n"
                      "tent_predict: similarity\n")
    out = tmp_path / "yaml"
    assert main(["train", "--config", str(config), "--out", str(out), *common]) == 0
    saved = (out / "config.yaml").read_text()
    assert "method: tent" in saved and "cml: true" in saved and "lr: 0.05" in saved
    assert "tent_predict: similarity" in saved and "tent_virtual_node: reference" in saved
    assert json.loads((out / "results.json").read_text())["test_accuracy"]["mean"] >= 0.0

    # its options are refused on other methods, with a one-line message
    assert main(["train", "--graph", "citeseer", "--method", "gmeta", "--tent-predict", "probe",
                 "--out", str(tmp_path / "refused"), *common]) != 0
    assert not (tmp_path / "refused").exists()


def test_tent_options_change_what_they_name(citeseer):
    data, graph, _, _ = citeseer
    episode = _episode(data, 5, seed=4)
    losses = {}
    for key, value in (("tent_virtual_node", "reference"), ("tent_virtual_node", "class"),
                       ("tent_last_query", "once")):
        learner, cfg = _learner(graph, shots=5, **{key: value})
        assert cfg.option(key) == value
        losses[value] = float(learner(episode, train=True).loss.detach())
    assert losses["class"] != pytest.approx(losses["reference"], abs=1e-6)
    assert losses["once"] < losses["reference"]  # one InfoNCE term fewer
    learner, _ = _learner(graph, shots=5, tent_predict="similarity")
    test_episode = _episode(data, 5, seed=4, queries=10)
    result = learner.eval()(test_episode, train=False)
    assert result.logits.shape == (20, 2) and float(result.logits.abs().max()) <= 1 / 0.5 + 1e-9  # cosine / tau


def test_tent_from_python_refuses_training_without_labels(citeseer):
    from gnn_cml.meta.tent import TENT

    data, graph, _, _ = citeseer
    learner, _ = _learner(graph)
    assert type(learner).__name__ == "TENT" and learner.train_nodes is not None
    assert set(np.unique(data.y.numpy()[learner.train_nodes])) == {3, 5}
    bare = TENT(graph, 6)
    with pytest.raises(GnnCmlError, match="use_training_labels"):
        bare(_episode(data, 1, 3), train=True)
    with pytest.raises(GnnCmlError, match="virtual node"):
        TENT(graph, 6, virtual_node="paper")


def test_tent_trains_on_a_graph_with_dense_features_and_isolated_nodes():
    """Any graph gnn-cml loads: dense (not bag-of-words) features, nodes without neighbours, 4 ways."""
    from torch_geometric.data import Data

    from gnn_cml.meta.tent import TENT

    rng = np.random.default_rng(0)
    n, classes = 240, 8
    y = torch.from_numpy(np.arange(n) % classes)
    src, dst = rng.integers(0, 200, 400), rng.integers(0, 200, 400)  # nodes 200..239 stay isolated
    keep = src != dst
    edges = torch.from_numpy(np.stack([np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]]]))
    data = Data(x=torch.randn(n, 12), edge_index=edges, y=y, num_nodes=n)
    graph = PreparedGraph(data)
    assert (np.diff(graph.adj.indptr) == 1).sum() >= 40
    learner = TENT(graph, classes, virtual_node="class").initialise()
    train = np.flatnonzero(y.numpy() < 4)
    learner.use_training_labels(train, y.numpy()[train])
    sampler = EpisodeSampler(y, [0, 1, 2, 3], 4, 1, 3, seed=0)
    opt = torch.optim.Adam(learner.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        result = learner(sampler.sample(), train=True)
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        first = first if first is not None else float(result.loss.detach())
    assert torch.isfinite(result.loss) and float(result.loss.detach()) < first
    test = EpisodeSampler(y, [4, 5, 6, 7], 4, 1, 5, seed=1).sample()
    scores = learner.eval()(test, train=False)
    assert scores.logits.shape == (20, 4) and torch.isfinite(scores.logits).all()
