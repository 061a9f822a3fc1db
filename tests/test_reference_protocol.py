"""The paper protocol equals the reference code behind Table 3: split, init, and per-task computation."""
import json
import math

import pytest
import torch

from gnn_cml.config import resolve
from gnn_cml.meta.factory import build_learner
from gnn_cml.models import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler, distinct_split_seeds
from reference_code import gmeta_ammgnn as ref

# docs/protocol.md, "Class split": classes of np.random.seed(1234) + np.random.choice.
REFERENCE_SPLITS = {
    "citeseer": (6, (2, 2, 2), [3, 5], [0, 4], [2, 1]),
    "cora": (7, (3, 2, 2), [3, 5, 6], [4, 0], [2, 1]),
    "amazon_computers": (10, (4, 3, 3), [1, 3, 4, 6], [8, 5, 0], [7, 2, 9]),
    "corafull": (70, (40, 15, 15), None, [30, 2, 53, 9, 16, 56, 11, 14, 40, 32, 54, 21, 26, 64, 15],
                 [46, 57, 33, 36, 6, 25, 63, 66, 8, 20, 29, 4, 22, 18, 50]),
}


@pytest.mark.parametrize("graph", sorted(REFERENCE_SPLITS))
def test_reference_split_rule_gives_the_papers_classes(graph):
    classes, counts, train, val, test = REFERENCE_SPLITS[graph]
    split = ClassSplit.from_counts(classes, counts, seed=1234)
    assert list(split.test) == test and list(split.val) == val
    if train is not None:
        assert list(split.train) == train
    assert sorted(split.train + split.val + split.test) == list(range(classes))
    # the old Python-shuffle rule is still there, by name, and gives other classes
    assert list(ClassSplit.from_counts(classes, counts, seed=1234, rule="shuffle").test) != test


def test_default_split_of_the_real_graphs(shared_data):
    from gnn_cml.data import load_graph
    from gnn_cml.sampling import default_split

    for graph in ("citeseer", "cora"):
        split = default_split(load_graph(graph, shared_data))
        _, _, train, val, test = REFERENCE_SPLITS[graph]
        assert (list(split.train), list(split.val), list(split.test)) == (train, val, test)


def test_distinct_split_seeds_start_at_the_papers_and_never_repeat_a_test_set():
    seeds = distinct_split_seeds(6, (2, 2, 2), 5)
    assert seeds[0] == 1234 and seeds == sorted(seeds) and len(set(seeds)) == 5
    tests = [frozenset(ClassSplit.from_counts(6, (2, 2, 2), s).test) for s in seeds]
    assert len(set(tests)) == 5
    # every skipped seed repeats an earlier test set
    for s in range(seeds[0], seeds[-1]):
        if s not in seeds:
            t = frozenset(ClassSplit.from_counts(6, (2, 2, 2), s).test)
            assert t in {x for x, y in zip(tests, seeds) if y < s}
    # 3 classes with 1 test class: only 3 distinct test sets exist
    with pytest.raises(Exception, match="at most 3"):
        distinct_split_seeds(3, (1, 1, 1), 4)


@pytest.fixture(scope="module")
def citeseer(shared_data):
    from gnn_cml.data import load_graph

    data = load_graph("citeseer", shared_data)
    return data, PreparedGraph(data)


def _learner(graph, method, cml=False, **extra):
    cfg = resolve(dict(graph="citeseer", method=method, ways=2, shots=extra.pop("shots", 1), cml=cml, dropout=0.0,
                       **extra))
    return build_learner(cfg, graph, seed=7).to(torch.float64), cfg


def _episode(data, shots, seed=3):
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)
    return EpisodeSampler(data.y, split.train, 2, shots, 5, seed=seed).sample()


def test_reference_init_and_paper_protocol_defaults(citeseer):
    _, graph = citeseer
    learner, cfg = _learner(graph, "gmeta", cml=True)
    assert cfg.first_order and cfg.init == "reference" and cfg.out_activation == "none"
    assert cfg.episodes == 1000 and resolve(dict(graph="citeseer", method="ammgnn")).episodes == 500
    for name, p in learner.named_parameters():
        bound = 1 / math.sqrt(p.shape[0])  # weight (out, in) and bias (out,): out_features first
        assert float(p.abs().max()) <= bound + 1e-7, name
        assert float(p.abs().max()) > 0.5 * bound, name  # spread over the whole range, not nn.Linear's
    first = learner.learner.net.encoder.layers[0].weight
    assert float(first.abs().max()) > 10 * (1 / math.sqrt(first.shape[1]))  # >> nn.Linear's 1/sqrt(3703)


@pytest.mark.parametrize("shots", [1, 5])
def test_gmeta_task_equals_the_reference_computation_on_citeseer(citeseer, shots):
    data, graph = citeseer
    learner, cfg = _learner(graph, "gmeta", shots=shots)
    episode = _episode(data, shots)
    params = ref.reference_params(learner)
    out = ref.gmeta_task(params, ref.dense_adjacency(graph, torch.float64), ref.dense_features(graph, torch.float64),
                         episode.support, episode.support_y, episode.query, episode.query_y,
                         steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=0.0)
    learner.zero_grad()
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss) - float(out.loss)) <= 1e-5
    ours = dict(learner.named_parameters())
    for name, g in ref.to_ours(out.grads).items():
        assert torch.allclose(ours[name].grad, g, atol=1e-5, rtol=0), (name, (ours[name].grad - g).abs().max())
    assert float(out.grads["gc1_w"].abs().max()) > 1e-4  # a real gradient reaches the first layer


def test_gmeta_with_cml_equals_the_reference_plus_the_co_learner_term(citeseer):
    data, graph = citeseer
    learner, cfg = _learner(graph, "gmeta", cml=True, shots=5)
    episode = _episode(data, 5, seed=11)
    out = ref.gmeta_task(ref.reference_params(learner), ref.dense_adjacency(graph, torch.float64),
                         ref.dense_features(graph, torch.float64), episode.support, episode.support_y,
                         episode.query, episode.query_y, steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=0.0,
                         co_learner=learner.co_learner, gamma=cfg.gamma)
    learner.zero_grad()
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss) - float(out.loss)) <= 1e-5
    ours = dict(learner.named_parameters())
    for name, g in ref.to_ours(out.grads, prefix="learner.net.").items():
        assert torch.allclose(ours[name].grad, g, atol=1e-5, rtol=0), name
    for name, g in out.extra_grads.items():
        assert torch.allclose(ours["co_learner." + name].grad, g, atol=1e-5, rtol=0), name


@pytest.mark.parametrize("shots", [1, 5])
def test_ammgnn_task_equals_the_reference_computation_on_citeseer(citeseer, shots):
    data, graph = citeseer
    learner, cfg = _learner(graph, "ammgnn", shots=shots)
    assert cfg.modulation == "reference" and cfg.query_eval
    episode = _episode(data, shots, seed=5)
    torch.manual_seed(123)
    sets = learner.node_sets(episode)
    adj = graph.torch_adjacency().to(torch.float64)
    out = ref.ammgnn_task(ref.reference_params(learner), ref.modulation_params(learner), adj,
                          ref.dense_features(graph, torch.float64), episode.support, episode.support_y,
                          episode.query, episode.query_y, sets, steps=cfg.inner_steps, lr=cfg.inner_lr, dropout=0.0)
    learner.zero_grad()
    torch.manual_seed(123)  # the learner draws the same two node sets
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss) - float(out.loss)) <= 1e-5
    ours = dict(learner.named_parameters())
    expected = {**ref.to_ours(out.grads), **ref.modulation_to_ours(out.extra_grads)}
    for name, g in expected.items():
        assert torch.allclose(ours[name].grad, g, atol=1e-5, rtol=0), (name, (ours[name].grad - g).abs().max())
    assert float(out.extra_grads["alpha_w"].abs().max()) > 0  # the modulation is learned


def test_train_writes_the_reference_split_with_its_rule(tmp_path, shared_data):
    from gnn_cml.cli import main

    out = tmp_path / "run"
    assert main(["train", "--graph", "citeseer", "--method", "gmeta", "--ways", "2", "--shots", "1",
                 "--root", str(shared_data), "--out", str(out), "--episodes", "2", "--val-every", "1",
                 "--val-tasks", "2", "--test-tasks", "2", "--runs", "1", "--inner-steps", "1",
                 "--no-progress"]) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["test"] == [2, 1] and split["val"] == [0, 4] and split["train"] == [3, 5]
    assert split["rule"] == "reference" and split["seed"] == 1234
