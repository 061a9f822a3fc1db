"""TEG (--method teg) equals its authors' per-task computation on real CiteSeer, and runs from the CLI,
YAML and Python."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from gnn_cml.cli import main
from gnn_cml.config import resolve
from gnn_cml.data import load_graph
from gnn_cml.engine.checkpoint import load_checkpoint
from gnn_cml.errors import GnnCmlError
from gnn_cml.experiments.graph import evaluate_run
from gnn_cml.meta.factory import build_learner
from gnn_cml.meta.teg import TEG, anchor_features, anchor_members, prototype_logits
from gnn_cml.models import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler
from reference_code import teg as ref


@pytest.fixture(scope="module")
def citeseer(shared_data):
    data = load_graph("citeseer", shared_data)
    return data, PreparedGraph(data, norm="sym")


def _learner(graph, **extra):
    cfg = resolve(dict(graph="citeseer", method="teg", ways=2, **extra))
    return build_learner(cfg, graph, seed=7).to(torch.float64), cfg


def _episode(data, shots, seed=3, ways=2, train=True):
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)
    return EpisodeSampler(data.y, split.train if train else split.test, ways, shots, 5, seed=seed).sample()


@pytest.mark.parametrize("shots", [1, 5])
def test_teg_task_equals_the_reference_computation_on_citeseer(citeseer, shots):
    data, graph = citeseer
    learner, cfg = _learner(graph, shots=shots, dropout=0.0)
    assert (cfg.hidden, cfg.layers, cfg.norm, cfg.lr, cfg.weight_decay) == (64, 1, "sym", 1e-3, 5e-4)
    assert (cfg.option("teg_gamma"), cfg.option("anchors"), cfg.option("egnn_layers")) == (0.5, 16, 2)
    episode = _episode(data, shots)
    gcn, egnn, names = ref.from_ours(learner)
    features = data.x.to(torch.float64)
    out = ref.teg_task(gcn, egnn, features, data.edge_index, learner.structure.to(torch.float64), episode.support,
                       episode.query, episode.query_y, ways=2, shots=shots, gamma=cfg.option("teg_gamma"))
    out.loss.backward()
    learner.zero_grad()
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss.detach()) - float(out.loss.detach())) <= 1e-5
    assert torch.allclose(torch.log_softmax(result.logits, 1), out.output, atol=1e-5, rtol=0)
    ours = dict(learner.named_parameters())
    expected = ref.gradients(gcn, egnn, names)
    assert set(expected) == set(ours)  # every parameter has a counterpart in the reference
    for name, g in expected.items():
        got = ours[name].grad if ours[name].grad is not None else torch.zeros_like(g)
        assert torch.allclose(got, g, atol=1e-5, rtol=0), (name, float((got - g).abs().max()))
    # real gradients reach the graph embedder and both EGNN layers' coordinate maps
    for name in ("encoder.linear.weight", "embedder.layers.0.coordinate.4.weight",
                 "embedder.layers.1.message.0.weight"):
        assert float(expected[name].abs().max()) > 1e-6, name


def test_meta_test_mode_equals_the_reference_in_eval(citeseer):
    data, graph = citeseer
    learner, _ = _learner(graph, shots=1)  # dropout 0.5: eval mode must switch it off on both sides
    episode = _episode(data, 1, seed=9, train=False)
    gcn, egnn, _ = ref.from_ours(learner)
    with torch.no_grad():
        out = ref.teg_task(gcn, egnn, data.x.to(torch.float64), data.edge_index, learner.structure.to(torch.float64),
                           episode.support, episode.query, episode.query_y, ways=2, shots=1)
    learner.eval()
    result = learner(episode, train=False)
    assert not result.loss.requires_grad
    assert torch.allclose(torch.log_softmax(result.logits, 1), out.output, atol=1e-5, rtol=0)


def test_input_dropout_on_episode_rows(citeseer):
    """The dropout path (Â rows times dropped raw rows) equals the precomputed (ÂX) path when nothing
    is dropped, and is unbiased with dropout 0.5 (the mean of many draws approaches the eval output)."""
    data, graph = citeseer
    learner, _ = _learner(graph, shots=1)
    enc = learner.encoder
    nodes = torch.cat([_episode(data, 1).support, _episode(data, 1).query])
    with torch.no_grad():
        plain = enc(enc.prepare(nodes, drop=False))
        enc.dropout = 1e-12  # the dropout code path, keeping every entry
        assert torch.allclose(enc(enc.prepare(nodes, drop=True)), plain, atol=1e-6, rtol=0)  # float32 rows
        enc.dropout = 0.5
        torch.manual_seed(0)
        rows = enc.prepare(nodes, drop=True)
        draws = torch.stack([enc(rows) for _ in range(400)])
    assert float((draws[0] - plain).abs().max()) > 1e-3  # dropout does change a pass
    spread = draws.std(0) / 20  # standard error of the mean of 400 draws
    assert float(((draws.mean(0) - plain).abs() - 5 * spread).max()) < 1e-6


def test_structural_features_equal_networkx_on_citeseer(citeseer):
    data, graph = citeseer
    members = anchor_members(graph.num_nodes, 16, seed=5)
    assert [len(m) for m in members][:3] == [1663, 831, 415] and len(members[-1]) == 1
    ours = torch.from_numpy(anchor_features(graph.adj, members)).to(torch.float64)
    theirs = ref.structural_features(data.edge_index, graph.num_nodes, members).to(torch.float64)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert int((theirs == 0).all(1).sum()) > 0  # isolated nodes: unreachable from every anchor


def test_egnn_layers_are_euclidean_equivariant_but_its_layer_norm_is_not(citeseer):
    _, graph = citeseer
    learner, _ = _learner(graph, shots=1)
    embedder = learner.embedder
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    h_s, h_q = torch.rand(4, 16, **f64), torch.rand(6, 16, **f64)
    x_s, x_q = torch.randn(4, 64, **f64), torch.randn(6, 64, **f64)
    rotation, _ = torch.linalg.qr(torch.randn(64, 64, **f64))
    shift = torch.randn(64, **f64)

    def layers(xs, xq):
        hs, hq = h_s, h_q
        for layer in embedder.layers:
            hs, hq, xs, xq = layer(hs, hq, xs, xq)
        return xs, xq

    with torch.no_grad():
        a_s, a_q = layers(x_s, x_q)
        b_s, b_q = layers(x_s @ rotation + shift, x_q @ rotation + shift)
        assert float((a_q - x_q).abs().max()) > 1e-6  # the layers do move the coordinates
        assert torch.allclose(b_q, a_q @ rotation + shift, atol=1e-9) and torch.allclose(b_s, a_s @ rotation + shift,
                                                                                          atol=1e-9)
        labels = torch.tensor([0, 0, 1, 1])
        assert torch.allclose(prototype_logits(a_s, labels, a_q), prototype_logits(b_s, labels, b_q), atol=1e-9)
        # the reference's LayerNorm before the layers: the whole task embedder is not equivariant
        c_s, c_q = embedder(h_s, h_q, x_s @ rotation + shift, x_q @ rotation + shift)
        d_s, d_q = embedder(h_s, h_q, x_s, x_q)
        assert not torch.allclose(c_q, d_q @ rotation + shift, atol=1e-3)


def test_python_training_lowers_the_loss_of_a_task(citeseer):
    data, graph = citeseer
    cfg = resolve(dict(graph="citeseer", method="teg", ways=2, shots=5, dropout=0.0))
    learner = build_learner(cfg, graph, seed=0)
    assert isinstance(learner, TEG) and not learner.adapts
    episode = _episode(data, 5)
    optimiser = torch.optim.Adam(learner.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    first = float(learner(episode).loss)
    for _ in range(30):
        optimiser.zero_grad()
        learner(episode).loss.backward()
        optimiser.step()
    assert float(learner(episode).loss) < 0.5 * first
    # same seed, same anchors and weights; another seed, other anchors
    again = build_learner(cfg, graph, seed=0)
    assert torch.equal(again.structure, build_learner(cfg, graph, seed=0).structure)
    assert not torch.equal(again.structure, build_learner(cfg, graph, seed=1).structure)


def _train(shared_data, out, *extra):
    return main(["train", "--graph", "citeseer", "--root", str(shared_data), "--out", str(out), "--episodes", "4",
                 "--val-every", "2", "--val-tasks", "2", "--test-tasks", "3", "--runs", "1", "--no-progress", *extra])


def test_cli_trains_and_tests_teg(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GNN_CML_DATA", str(shared_data))
    out = tmp_path / "run"
    assert _train(shared_data, out, "--method", "teg", "--ways", "2", "--shots", "1", "--test-tasks", "30") == 0
    result = json.loads((out / "results.json").read_text())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == "teg" and saved["teg_gamma"] == 0.5 and saved["anchors"] == 16
    assert saved["hidden"] == 64 and saved["norm"] == "sym" and saved["weight_decay"] == 5e-4
    assert 0 <= result["test_accuracy"]["mean"] <= 100 and len(result["test_accuracy"]["runs"]) == 1
    # the saved model (weights and the run's structural features) gives the same test accuracy again
    again = evaluate_run(out)
    assert again["test_accuracy"]["runs"] == result["test_accuracy"]["runs"]
    saved_model = load_checkpoint(out / "run_0" / "model.pt")["model"]
    cfg = resolve({}, out / "config.yaml")
    run_learner = build_learner(cfg, PreparedGraph(load_graph("citeseer", shared_data), norm="sym"),
                                seed=result["runs"][0]["seed"])
    assert torch.equal(saved_model["structure"], run_learner.structure)  # the run's anchors, not seed 0's


def test_yaml_config_sets_teg_options(shared_data, tmp_path):
    config = tmp_path / "teg.yaml"
    config.write_text("method: teg\nways: 2\nshots: 1\nteg_gamma: 0.25\nanchors: 4\negnn_layers: 1\n")
    out = tmp_path / "run"
    assert _train(shared_data, out, "--config", str(config)) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["teg_gamma"], saved["anchors"], saved["egnn_layers"]) == (0.25, 4, 1)
    cfg = resolve({}, config)
    learner = build_learner(cfg, PreparedGraph(load_graph("citeseer", shared_data), norm=cfg.norm), seed=0)
    assert learner.structure.shape[1] == 4 and len(learner.embedder.layers) == 1 and learner.teg_gamma == 0.25


@pytest.mark.parametrize("extra, expected", [
    (["--method", "teg", "--cml"], ["--cml needs a gradient-based method with an inner loop", "teg", "drop --cml"]),
    (["--method", "teg", "--teg-gamma", "1.5"], ["teg_gamma must be in [0, 1]", "--teg-gamma"]),
    (["--method", "teg", "--anchors", "0"], ["anchors must be positive"]),
    (["--method", "teg", "--backbone", "sgc"], ["one GCN layer"]),
    (["--method", "maml", "--egnn-layers", "3"], ["only apply to --method teg", "--egnn-layers"]),
])
def test_bad_input_is_one_line(shared_data, tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    code = _train(shared_data, out, *extra)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists()
    with pytest.raises(GnnCmlError):
        resolve(dict(graph="citeseer", method="teg", cml=True))
