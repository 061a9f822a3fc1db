"""COSMIC equals the authors' training step on real CiteSeer, and trains from the CLI, YAML and Python."""
import json

import numpy as np
import pytest
import torch
import yaml

from gnn_cml.cli import main
from gnn_cml.config import resolve
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta.cosmic import COSMIC, supcon_loss
from gnn_cml.meta.factory import build_learner
from gnn_cml.models import PreparedGraph
from gnn_cml.sampling import ClassSplit, EpisodeSampler
from reference_code import cosmic as ref

FAST = ["--episodes", "4", "--val-every", "2", "--val-tasks", "2", "--test-tasks", "3", "--runs", "1",
        "--no-progress"]


@pytest.fixture(scope="module")
def citeseer(shared_data):
    from gnn_cml.data import load_graph

    data = load_graph("citeseer", shared_data)
    return data, PreparedGraph(data), ref.ReferencePPR(data.edge_index.numpy(), data.num_nodes)


def _learner(graph, shots, **extra):
    cfg = resolve(dict(graph="citeseer", method="cosmic", ways=2, shots=shots, **extra))
    return build_learner(cfg, graph, seed=7).to(torch.float64), cfg


def _sampler(data, shots, seed=3):
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)  # training classes [3, 5]
    return EpisodeSampler(data.y, split.train, 2, shots, 5, seed=seed)


def _draws(learner, episode, seed):
    torch.manual_seed(seed)
    return learner.draw_mixup(episode, np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)))))


@pytest.mark.parametrize("shots,hidden", [(1, 64), (5, 1024)])
def test_cosmic_step_equals_the_authors_computation_on_citeseer(citeseer, shots, hidden):
    data, graph, ppr = citeseer
    learner, cfg = _learner(graph, shots, hidden=hidden)
    assert (cfg.option("subgraph_size"), cfg.option("temperature"), cfg.option("mixup"), cfg.lr, cfg.episodes,
            cfg.hidden) == (20, 0.07, "reference", 0.001, 10000, hidden)
    sampler = _sampler(data, shots)
    learner.use_training_nodes(sampler.members)
    episode = sampler.sample()
    draws = _draws(learner, episode, seed=11)  # the same draws forward() makes after torch.manual_seed(11)
    groups = [list(draws.extra[draws.extra_labels == label]) for label in np.unique(draws.extra_labels)]
    out = ref.cosmic_step(ref.reference_params(learner), ppr, data.x.double(), episode.support.tolist(),
                          episode.support_y.tolist(), groups, draws.lam, temperature=cfg.option("temperature"))
    learner.zero_grad()
    torch.manual_seed(11)
    result = learner(episode, train=True)
    result.loss.backward()
    assert abs(float(result.loss.detach()) - float(out.loss)) <= 1e-5
    ours = dict(learner.named_parameters())
    for name, g in ref.to_ours(out.grads).items():
        # at zero bias the zero rows of padded subgraphs give F.normalize's 1/eps slope (~1e9 on the bias, on
        # both sides): the tolerance is 1e-5 relative to the largest entry when that exceeds 1
        scale = max(1.0, float(g.abs().max()))
        assert float((ours[name].grad - g).abs().max()) <= 1e-5 * scale, name
    assert float(out.grads["weight"].abs().max()) > 1e-4  # a real gradient reaches the GCN weight
    # the same PageRank subgraphs (tie order included), and the Beta parameter the code would use
    for v, nodes in out.nodes.items():
        assert np.array_equal(learner.subgraphs.get(v)[0], nodes), v
    used = min(len(episode.support), len(draws.extra))
    ours_conc = 10 * learner.similarity(episode.support.numpy()[draws.source[:used]])
    assert np.allclose(ours_conc, out.concentration[:used], atol=1e-5)
    # 2 training classes x 5 extra nodes; with 1 shot only 2 mixed subgraphs carry their own features
    assert len(draws.extra) == 10
    assert (len(set(draws.source.tolist())) < len(draws.source)) == (shots == 1)


def test_supcon_equals_the_authors_loss():
    gen = torch.Generator().manual_seed(0)
    views = torch.nn.functional.normalize(torch.randn(9, 2, 16, generator=gen, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 5, 5, 5, 6, 6])
    for t in (0.07, 0.5):
        assert abs(float(supcon_loss(views, labels, t, t)) - float(ref.supcon_loss(views, labels, t, t))) < 1e-10
    # all labels distinct: SimCLR-like, still well defined (each anchor's other view is its positive)
    assert torch.isfinite(supcon_loss(views, torch.arange(9)))


def test_mixup_draws_come_from_the_training_classes_and_the_task_seed(citeseer):
    data, graph, _ = citeseer
    learner, _ = _learner(graph, 1, hidden=32)
    sampler = _sampler(data, 1)
    episode = sampler.sample()
    with pytest.raises(GnnCmlError, match="use_training_nodes"):
        learner(episode, train=True)
    learner.use_training_nodes(sampler.members)
    a, b, c = _draws(learner, episode, 5), _draws(learner, episode, 5), _draws(learner, episode, 6)
    assert np.array_equal(a.extra, b.extra) and np.array_equal(a.lam, b.lam)
    assert not np.array_equal(a.lam, c.lam)
    train_nodes = set(np.concatenate(sampler.members).tolist())
    assert set(a.extra.tolist()) <= train_nodes
    assert set(np.asarray(data.y)[a.extra].tolist()) <= {3, 5}
    assert sorted(set(a.extra_labels.tolist())) == [2, 3]  # N + j, never an episode label
    assert a.lam.shape == (10, 20) and ((a.lam > 0) & (a.lam < 1)).all()
    torch.manual_seed(5)
    first = learner(episode, train=True)
    torch.manual_seed(5)
    again = learner(episode, train=True)
    assert float(first.loss) == float(again.loss)  # reseeding the task reproduces it exactly
    # mixup='none' trains on the task's own subgraphs: a different loss, no training nodes needed
    plain, _ = _learner(graph, 1, hidden=32, mixup="none")
    torch.manual_seed(5)
    assert abs(float(plain(episode, train=True).loss) - float(first.loss)) > 1e-3


def test_pairs_mixup_gives_every_mixed_subgraph_its_own_pair(citeseer):
    data, graph, _ = citeseer
    learner, _ = _learner(graph, 1, hidden=32, mixup="pairs")
    sampler = _sampler(data, 1)
    learner.use_training_nodes(sampler.members)
    episode = sampler.sample()
    draws = _draws(learner, episode, 5)
    assert list(draws.source) == [i % 2 for i in range(10)] and list(draws.partner) == list(range(10))
    assert len({row.tobytes() for row in draws.lam}) == 10  # no repeated mixing weights
    sim = learner.similarity(episode.support.numpy()[draws.source], draws.extra)
    assert np.ptp(sim) > 1e-3 and ((sim > 0.25) & (sim < 0.5)).all()  # pair similarities, not sigmoid(-1)
    reference, _ = _learner(graph, 1, hidden=32)
    reference.use_training_nodes(sampler.members)
    ref_draws = _draws(reference, episode, 5)
    assert np.array_equal(ref_draws.extra, draws.extra)  # same extra nodes, other pairing and weights
    views, labels, _ = learner.views(episode, draws)
    ref_views, ref_labels, _ = reference.views(episode, ref_draws)
    assert torch.equal(labels, ref_labels) and views.shape == ref_views.shape == (12, 2, 32)
    assert not torch.allclose(views[2:], ref_views[2:])
    assert len({tuple(v.tolist()) for v in views[2:, 0].round(decimals=6)}) == 10  # ten distinct mixed nodes


def test_python_api_trains_and_probes(citeseer):
    data, graph, _ = citeseer
    learner, _ = _learner(graph, 5, hidden=64)
    learner = learner.float()
    sampler = _sampler(data, 5, seed=9)
    learner.use_training_nodes(sampler.members)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    losses = []
    for step in range(15):
        episode = sampler.sample()
        torch.manual_seed(step)
        result = learner(episode, train=True)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(float(result.loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the contrastive loss goes down
    test = EpisodeSampler(data.y, ClassSplit.from_counts(6, (2, 2, 2), 1234).test, 2, 5, 10, seed=1).sample()
    result = learner(test, train=False)
    assert result.logits.shape == (20, 2) and result.features.shape == (20, 64)
    assert result.loss.requires_grad is False


def test_cli_trains_and_reevaluates_cosmic(tmp_path, shared_data, capsys):
    out = tmp_path / "run"
    assert main(["train", "--graph", "citeseer", "--method", "cosmic", "--ways", "2", "--shots", "1",
                 "--out", str(out), "--root", str(shared_data), "--subgraph-size", "10"] + FAST) == 0
    result = json.loads((out / "results.json").read_text())
    acc = result["test_accuracy"]
    assert len(acc["runs"]) == 1 and 0 <= acc["runs"][0] <= 100 and result["cml"] is False
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["method"], cfg["hidden"], cfg["subgraph_size"], cfg["mixup"]) == ("cosmic", 1024, 10, "reference")
    lines = (out / "run_0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [2, 4]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"]["runs"] == pytest.approx(acc["runs"], abs=1e-9)


def test_yaml_config_and_refusals(tmp_path, shared_data, capsys):
    config = tmp_path / "cosmic.yaml"
    config.write_text("method: cosmic\nmixup: none\ntemperature: 0.5\nhidden: 32\nsubgraph_size: 8\n")
    cfg = resolve({"graph": "citeseer"}, config)
    assert (cfg.method, cfg.option("mixup"), cfg.option("temperature"), cfg.hidden, cfg.option("subgraph_size")) == \
        ("cosmic", "none", 0.5, 32, 8)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--graph", "citeseer", "--ways", "2", "--shots", "1",
                 "--out", str(out), "--root", str(shared_data)] + FAST) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["mixup"] == "none"
    for flags, expected in ((["--method", "cosmic", "--cml"], "has none: drop --cml"),
                            (["--method", "maml", "--mixup", "none"], "only apply to --method cosmic"),
                            (["--method", "cosmic", "--mixup", "paper"], "mixup must be one of reference, pairs, none"),
                            (["--method", "cosmic", "--temperature", "0"], "temperature must be")):
        capsys.readouterr()
        code = main(["train", "--graph", "citeseer", "--root", str(shared_data), "--out", str(tmp_path / "bad")]
                    + flags + FAST)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
        assert not (tmp_path / "bad").exists()


def test_interrupted_training_resumes_exactly(citeseer, tmp_path):
    """Mix-up draws come from the per-task seed: 2 episodes + resume to 4 equals 4 in one go."""
    from gnn_cml.engine.trainer import Trainer, TrainerConfig

    data, graph, _ = citeseer
    split = ClassSplit.from_counts(6, (2, 2, 2), 1234)
    val = [EpisodeSampler(data.y, split.val, 2, 1, 5, seed=2).sample() for _ in range(2)]

    def trainer(run_dir, episodes, resume=False):
        learner, cfg = _learner(graph, 1, hidden=32)
        learner = learner.float()
        sampler = _sampler(data, 1, seed=4)
        learner.use_training_nodes(sampler.members)
        return Trainer(learner, sampler, val, TrainerConfig(episodes=episodes, val_every=2, lr=0.01, seed=3,
                                                            progress=False),
                       run_dir=run_dir, resume=resume, tensorboard=False)

    straight = trainer(tmp_path / "a", 4).fit()
    trainer(tmp_path / "b", 2).fit()
    resumed = trainer(tmp_path / "b", 4, resume=True).fit()
    assert resumed.episode == straight.episode == 4
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    a = [json.loads(line)["train_loss"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line)["train_loss"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert a == b and len(a) == 2
