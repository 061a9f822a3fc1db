"""Sinusoid regression benchmark: task distribution, learner wiring, learning, reports."""
import json

import numpy as np
import pytest
import torch

from gnn_cml.experiments.regression import (AMPLITUDE, PHASE, X_RANGE, SinusoidSampler, build_learner,
                                           run_regression)
from gnn_cml.cli import main
from gnn_cml.engine.trainer import METRICS, Trainer, TrainerConfig, evaluate_tasks
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta import CML, MAML


def test_sampler_draws_the_paper_distribution():
    amplitude, phase, x, y = SinusoidSampler(5, 10, seed=0).draw(2000)
    assert x.shape == y.shape == (2000, 15, 1)
    assert AMPLITUDE[0] <= amplitude.min() and amplitude.max() <= AMPLITUDE[1]
    assert PHASE[0] <= phase.min() and phase.max() <= PHASE[1]
    assert X_RANGE[0] <= x.min() and x.max() <= X_RANGE[1]
    assert amplitude.max() - amplitude.min() > 4.5 and phase.max() - phase.min() > 3.0  # the whole range is used
    assert np.allclose(y, amplitude[:, None, None] * np.sin(x - phase[:, None, None]))


def test_sampler_episode_shapes():
    ep = SinusoidSampler(5, 12, seed=1).sample()
    assert ep.support.shape == ep.support_y.shape == (5, 1)
    assert ep.query.shape == ep.query_y.shape == (12, 1)
    assert ep.support.dtype == ep.query_y.dtype == torch.float32
    assert ep.classes is None and ep.ways == 1
    with pytest.raises(GnnCmlError):
        SinusoidSampler(0, 5)


def test_sampler_is_deterministic_and_its_state_survives_a_safe_checkpoint(tmp_path):
    a, b = SinusoidSampler(10, 10, seed=3), SinusoidSampler(10, 10, seed=3)
    for ea, eb in zip(a.tasks(5), b.tasks(5)):
        assert torch.equal(ea.support, eb.support) and torch.equal(ea.query_y, eb.query_y)
    assert not torch.equal(SinusoidSampler(10, 10, seed=4).sample().support, a.sample().support)
    torch.save({"sampler": a.get_state()}, tmp_path / "s.pt")
    expected = a.sample()
    b.set_state(torch.load(tmp_path / "s.pt", weights_only=True)["sampler"])
    assert torch.equal(b.sample().support, expected.support)


def test_learner_matches_the_paper_and_cml_keeps_the_base_init():
    maml, cml = build_learner(False, seed=7), build_learner(True, seed=7)
    assert isinstance(maml, MAML) and isinstance(cml, CML)
    assert (maml.inner_steps, maml.inner_lr, cml.gamma) == (1, 0.01, 0.2)
    sizes = [tuple(p.shape) for p in maml.parameters()]
    assert sizes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]  # MLP 1-40-40-1
    co = [tuple(p.shape) for p in cml.co_learner.parameters()]
    assert co == [(40, 40), (40,), (1, 40), (1,)]  # one hidden layer of 40
    for (n, p), (_, q) in zip(maml.named_parameters(), cml.learner.named_parameters()):
        assert torch.equal(p, q), n
    ep = SinusoidSampler(5, 5, seed=0).sample()
    result = cml(ep)
    result.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cml.co_learner.parameters())
    assert cml.test_model() is cml.learner


def test_cml_training_lowers_the_test_mse():
    torch.manual_seed(0)
    learner = build_learner(True, seed=0)
    tasks = SinusoidSampler(10, 50, seed=1).tasks(50)
    before = np.mean(evaluate_tasks(learner.test_model(), tasks, METRICS["mse"]))
    Trainer(learner, SinusoidSampler(10, 10, seed=2), tasks[:10],
            TrainerConfig(episodes=200, meta_batch=4, lr=1e-3, val_every=100, patience=10, metric="mse",
                          progress=False)).fit()
    after = np.mean(evaluate_tasks(learner.test_model(), tasks, METRICS["mse"]))
    assert after < 0.9 * before, (before, after)


def test_quick_reproduction_writes_the_reports(tmp_path):
    out = tmp_path / "reg"
    rc = main(["reproduce", "regression", "--quick", "--shots", "5,10", "--seeds", "0", "--iterations", "10",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("regression.md", "regression.csv", "regression.json", "regression.png", "regression_curves.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "regression.json").read_text())
    assert [c["shots"] for c in result["cells"]] == [5, 10]
    for cell in result["cells"]:
        for method in ("maml", "maml+cml"):
            stats = cell["methods"][method]["over_tasks"]
            assert stats["n"] == 600 and 0 < stats["mean"] < 20
    csv_lines = (out / "regression.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4 and csv_lines[1].startswith("5,maml,")
    md = (out / "regression.md").read_text()
    assert "| 5 | maml+cml |" in md and "no numbers" in md
    assert (out / "runs" / "K5" / "seed0" / "maml+cml" / "metrics.jsonl").exists()


def test_quick_run_is_reproducible(tmp_path):
    a, b = (run_regression((5,), (1,), iterations=10, test_tasks=50, out=tmp_path / d, quick=True, progress=False)
            for d in "ab")
    for method in ("maml", "maml+cml"):
        assert a["cells"][0]["methods"][method]["per_seed"] == b["cells"][0]["methods"][method]["per_seed"]
    assert json.loads((tmp_path / "a" / "regression.json").read_text())["histories"] == a["histories"]


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert main(["reproduce", "regression", "--iterations", "0", "--out", str(tmp_path)]) == 2
    assert "--iterations must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "regression", "--shots", "five"])
