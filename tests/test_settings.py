"""--setting transductive|inductive on real CiteSeer.

What is checked: in the inductive setting no test-class node's features or edges reach any training
computation: the trained weights (meta-learners one at a time and batched; TLP's DGI and supervised
pretraining) are bit-identical whether the test-class nodes' features are zero or random and whether
their edges are there or not, while in the transductive setting the same change does change them
(so the check can fail). The phases' graphs are the induced subgraphs they claim to be, and
split.json / config.yaml record the setting.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gnn_cml.config import resolve
from gnn_cml.data import load_graph
from gnn_cml.engine.checkpoint import load_checkpoint
from gnn_cml.experiments import graph as graph_experiment
from gnn_cml.experiments.graph import GraphTask, run_experiment
from gnn_cml.models.graph import normalized_adjacency
from gnn_cml.models.inductive import nodes_of

FAST = dict(graph="citeseer", ways=2, shots=1, episodes=10, val_every=5, val_tasks=5, test_tasks=5, runs=1)
RUNS = {  # method -> config overrides and the file holding the trained weights
    "gmeta-batched": (dict(method="gmeta", runs=2), "model.pt"),
    "maml": (dict(method="maml", batch_runs=False), "model.pt"),
    "tlp-dgi": (dict(method="tlp", pretrain="dgi", pretrain_epochs=8, pretrain_hidden=64), "encoder.pt"),
    "tlp-supervised": (dict(method="tlp", pretrain="supervised", pretrain_epochs=15), "encoder.pt"),
    "tent": (dict(method="tent", tent_predict="similarity"), "model.pt"),
    "teg": (dict(method="teg"), "model.pt"),
    "cosmic": (dict(method="cosmic"), "model.pt"),
}


@pytest.fixture(scope="module")
def citeseer(shared_data):
    return load_graph("citeseer", str(shared_data))


def variants(data, split):
    """Two copies of ``data`` that differ only in the test-class nodes: zero features and none of
    their edges, or random features and every edge."""
    test = torch.from_numpy(nodes_of(data.y, split.test))
    hidden = torch.zeros(int(data.num_nodes), dtype=torch.bool)
    hidden[test] = True
    blank = data.clone()
    blank.x = data.x.clone()
    blank.x[test] = 0.0
    blank.edge_index = data.edge_index[:, ~(hidden[data.edge_index[0]] | hidden[data.edge_index[1]])]
    noisy = data.clone()
    noisy.x = data.x.clone()
    noisy.x[test] = torch.rand(len(test), data.x.shape[1], generator=torch.Generator().manual_seed(5))
    assert blank.edge_index.shape[1] < data.edge_index.shape[1]
    return blank, noisy


def trained(monkeypatch, data, overrides, out, shared_data):
    monkeypatch.setattr(graph_experiment, "_load_graph", lambda cfg: data)
    cfg = resolve(dict(FAST, data_root=str(shared_data), **overrides))
    run_experiment(cfg, out, progress=False)
    return out


def weights(out, name, run=0):
    state = load_checkpoint(out / f"run_{run}" / name)
    return state["model"] if "model" in state else state["encoder"]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(RUNS))
def test_inductive_training_never_reads_test_class_nodes(name, citeseer, shared_data, tmp_path, monkeypatch):
    overrides, file = RUNS[name]
    split = GraphTask.build(resolve(dict(FAST, data_root=str(shared_data), **overrides))).split
    blank, noisy = variants(citeseer, split)
    outs = {}
    for setting in ("inductive", "transductive"):
        for label, data in (("blank", blank), ("noisy", noisy)):
            outs[setting, label] = trained(monkeypatch, data, dict(overrides, setting=setting),
                                           tmp_path / f"{setting}-{label}", shared_data)
    runs = overrides.get("runs", 1)
    for run in range(runs):
        assert same(weights(outs["inductive", "blank"], file, run), weights(outs["inductive", "noisy"], file, run))
        assert not same(weights(outs["transductive", "blank"], file, run),
                        weights(outs["transductive", "noisy"], file, run))
    if runs > 1:  # the runs were trained as one batched computation
        record = json.loads((outs["inductive", "blank"] / "run_0" / "result.json").read_text())
        assert record.get("batched_runs") == runs
    # the test tasks do run on the whole graph: there the two copies differ
    accs = [json.loads((outs["inductive", v] / "results.json").read_text())["test_accuracy"]["runs"]
            for v in ("blank", "noisy")]
    assert accs[0] != accs[1]
    saved = json.loads((outs["inductive", "blank"] / "split.json").read_text())
    assert saved["setting"] == "inductive" and saved["phases"]["train"]["classes"] == list(split.train)
    assert "setting: inductive" in (outs["inductive", "blank"] / "config.yaml").read_text()


def test_phase_graphs_are_the_induced_subgraphs(citeseer, shared_data):
    task = GraphTask.build(resolve(dict(FAST, method="maml", setting="inductive", data_root=str(shared_data))))
    y = citeseer.y.numpy()
    for phase, classes in (("train", task.split.train), ("val", task.split.train + task.split.val)):
        g = task.graphs[phase]
        seen = np.flatnonzero(np.isin(y, classes))
        assert np.array_equal(g.visible, seen)
        ei = citeseer.edge_index.numpy()
        keep = np.isin(ei[0], seen) & np.isin(ei[1], seen)
        local = np.searchsorted(seen, ei[:, keep])
        induced = normalized_adjacency(torch.from_numpy(local), len(seen), task.cfg.norm)
        assert abs(g.adj[seen][:, seen] - induced).max() == 0
        unseen = np.setdiff1d(np.arange(len(y)), seen)
        assert g.adj[unseen].nnz == len(unseen)  # only their self-loops
        assert abs(g.x[unseen]).sum() == 0 and abs(g.x[seen] - task.graph.x[seen]).sum() == 0
    assert task.graphs.test is task.graph
    plain = GraphTask.build(resolve(dict(FAST, method="maml", data_root=str(shared_data))))
    assert plain.graphs.train is plain.graphs.val is plain.graphs.test is plain.graph


def test_setting_is_validated():
    from gnn_cml.errors import GnnCmlError

    with pytest.raises(GnnCmlError, match="setting must be one of transductive, inductive"):
        resolve({"setting": "semi"})


def test_reproduce_targets_pass_the_setting_to_every_arm(shared_data, tmp_path):
    """``reproduce table3/gamma --setting inductive``: every arm's run is inductive (config and split.json)."""
    from gnn_cml.cli import main

    quick = ["--graphs", "citeseer", "--runs", "1", "--quick", "--no-progress", "--root", str(shared_data),
             "--setting", "inductive"]
    assert main(["reproduce", "table3", "--shots", "1", "--methods", "maml", "--no-cml", *quick,
                 "--out", str(tmp_path / "t3")]) == 0
    assert main(["reproduce", "gamma", "--gammas", "0,0.5", "--methods", "maml", *quick,
                 "--out", str(tmp_path / "gamma")]) == 0
    arms = sorted(p.parent for p in tmp_path.rglob("split.json"))
    assert [p.name for p in arms] == ["maml_gamma0", "maml_gamma0.5", "maml"]  # --no-cml: no maml+cml arm
    for arm in arms:
        assert json.loads((arm / "split.json").read_text())["setting"] == "inductive"
        assert "setting: inductive" in (arm / "config.yaml").read_text()
