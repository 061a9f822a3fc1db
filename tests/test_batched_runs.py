"""Batched runs (``--runs R`` as one computation) equal the same runs trained alone (real CiteSeer)."""
from __future__ import annotations

import json

import pytest
import torch

from gnn_cml.cli import main
from gnn_cml.config import resolve
from gnn_cml.engine.batched import evaluate_batched, fit_batched
from gnn_cml.engine.trainer import METRICS, Trainer, TrainerConfig, evaluate_tasks
from gnn_cml.experiments.graph import GraphTask
from gnn_cml.meta import fast
from gnn_cml.meta.factory import build_learner
from gnn_cml.sampling import TaskSet


@pytest.fixture(scope="module")
def citeseer(shared_data):
    def build(**overrides):
        cfg = resolve(dict(graph="citeseer", data_root=str(shared_data), **overrides))
        return cfg, GraphTask.build(cfg)
    return build


def _trainers(cfg, task, runs, dtype, episodes, val_every, patience, val_tasks=2):
    out = []
    for r in range(runs):
        seed = 31 + r
        learner = build_learner(cfg, task.graph, seed=seed).to(dtype)
        val = TaskSet.generate(task.sampler("val", cfg.queries, seed + 1), val_tasks)
        out.append(Trainer(learner, task.sampler("train", cfg.queries, seed + 2), val,
                           TrainerConfig(episodes=episodes, seed=seed, progress=False, val_every=val_every,
                                         patience=patience, lr=cfg.lr), tensorboard=False))
    return out


@pytest.mark.parametrize("method,cml,shots", [("gmeta", True, 1), ("ammgnn", False, 5), ("maml", True, 1)])
def test_batched_runs_equal_runs_alone_float64(citeseer, method, cml, shots):
    """Every logged loss (one per episode) over 50 episodes, every validation score and the final
    weights of 3 runs trained together equal the same runs trained one by one (float64, no early stop)."""
    cfg, task = citeseer(method=method, cml=cml, ways=2, shots=shots)
    assert fast.why_not_batched(build_learner(cfg, task.graph)) is None
    alone = _trainers(cfg, task, 3, torch.float64, episodes=50, val_every=1, patience=10 ** 6)
    for t in alone:
        t.fit()
    together = _trainers(cfg, task, 3, torch.float64, episodes=50, val_every=1, patience=10 ** 6)
    fit_batched(together, progress=False)
    for a, b in zip(alone, together):
        assert len(a.history) == len(b.history) == 50
        for x, y in zip(a.history, b.history):
            assert abs(x["train_loss"] - y["train_loss"]) <= 1e-6
            assert x["val_accuracy"] == y["val_accuracy"] and x["train_accuracy"] == y["train_accuracy"]
        assert (a.best_episode, a.episode) == (b.best_episode, b.episode)
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.allclose(p, q, rtol=0, atol=1e-6), name
    # the runs did differ from each other (a batch of copies would pass the comparison above too)
    assert len({round(t.history[-1]["train_loss"], 6) for t in together}) == 3


def test_batched_evaluation_equals_evaluate_tasks_with_dagger(citeseer):
    """Test-time accuracy of several runs on shared tasks, CML-dagger (co-learner) included."""
    cfg, task = citeseer(method="gmeta", cml=True, dagger=True, ways=2, shots=5)
    drawn = task.test_tasks()
    tests = [drawn[i] for i in range(12)]
    models = [build_learner(cfg, task.graph, seed=s).to(torch.float64) for s in (3, 4)]
    with torch.no_grad():  # untrained co-learners predict one class everywhere: scramble them per run
        for seed, m in zip((3, 4), models):
            torch.manual_seed(seed)
            for p in m.co_learner.parameters():
                p.normal_(0, 2)
    batched = evaluate_batched([m.test_model() for m in models], [tests, tests], [3, 4])
    for m, seed, got in zip(models, (3, 4), batched):
        want = evaluate_tasks(m.test_model(), tests, METRICS["accuracy"], seed=seed)
        assert got == pytest.approx(want, abs=1e-9)
    assert batched[0] != batched[1]


def test_stop_decisions_match_in_float32_through_the_cli(tmp_path, shared_data, capsys):
    """``gnn-cml train --runs 3`` batched (the default) and ``--no-batch-runs``: the same early stops,
    best episodes and test accuracies per run, and the same files."""
    args = ["train", "--graph", "citeseer", "--root", str(shared_data), "--method", "gmeta", "--cml",
            "--episodes", "150", "--val-every", "5", "--patience", "3", "--val-tasks", "6", "--test-tasks", "20",
            "--runs", "3", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "batched")]) == 0
    assert main(args + ["--no-batch-runs", "--out", str(tmp_path / "alone")]) == 0
    batched = json.loads((tmp_path / "batched" / "results.json").read_text())
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())
    for a, b in zip(alone["runs"], batched["runs"]):
        assert (a["episodes"], a["stopped_early"], a["best_episode"]) == (b["episodes"], b["stopped_early"],
                                                                          b["best_episode"])
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-6)
        assert b["batched_runs"] == 3 and "batched_runs" not in a
    assert any(r["stopped_early"] for r in batched["runs"])  # early stopping was exercised
    assert len({r["episodes"] for r in batched["runs"]}) > 1  # runs left the batch at different times
    for run in range(3):
        names = lambda d: sorted(p.name for p in (d / f"run_{run}").iterdir())  # noqa: E731
        assert names(tmp_path / "batched") == names(tmp_path / "alone")
        assert len((tmp_path / "batched" / f"run_{run}" / "metrics.jsonl").read_text().splitlines()) == \
            batched["runs"][run]["episodes"] // 5


def test_interrupted_batch_resumes_exactly(tmp_path, shared_data, monkeypatch):
    """A batched run killed mid-training (after a checkpoint) and resumed gives the results of an
    uninterrupted batched run; extending it with --runs trains only the new runs."""
    from gnn_cml.engine import batched

    args = ["train", "--graph", "citeseer", "--root", str(shared_data), "--method", "ammgnn", "--episodes", "30",
            "--val-every", "5", "--patience", "100", "--val-tasks", "3", "--test-tasks", "5", "--runs", "2",
            "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    real_step, calls = batched.RunBatch.step, []

    def dying(self):
        calls.append(1)
        if len(calls) == 13:  # after the checkpoint at episode 10, before the one at 15
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(batched.RunBatch, "step", dying)
    assert main(args + ["--out", str(tmp_path / "cut")]) == 130  # "interrupted; rerun with --resume"
    assert len(calls) == 13 and not (tmp_path / "cut" / "results.json").exists()
    monkeypatch.setattr(batched.RunBatch, "step", real_step)
    assert main(args + ["--resume", "--out", str(tmp_path / "cut")]) == 0
    strip = lambda rec: {k: v for k, v in rec.items() if not k.endswith("seconds") and k != "episodes_per_s"}  # noqa
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [strip(r) for r in whole["runs"]] == [strip(r) for r in cut["runs"]]
    for run in range(2):
        assert (tmp_path / "whole" / f"run_{run}" / "metrics.jsonl").read_text().count("\n") == \
            (tmp_path / "cut" / f"run_{run}" / "metrics.jsonl").read_text().count("\n") == 6
    # --runs 3 --resume: runs 1-2 are kept, run 3 alone equals run 3 of a 3-run batch
    assert main(args[:-3] + ["--runs", "3", "--no-progress", "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert main(args[:-3] + ["--runs", "3", "--no-progress", "--out", str(tmp_path / "three")]) == 0
    three = json.loads((tmp_path / "three" / "results.json").read_text())
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [r["test_accuracy"] for r in cut["runs"]] == pytest.approx([r["test_accuracy"] for r in three["runs"]],
                                                                      abs=1e-6)


def test_unsupported_learners_train_one_after_another(tmp_path, shared_data, capsys):
    """Second-order MAML is not batched: the runs are trained alone and the user is told why."""
    args = ["train", "--graph", "citeseer", "--root", str(shared_data), "--second-order", "--episodes", "4",
            "--val-every", "2", "--val-tasks", "2", "--test-tasks", "3", "--inner-steps", "2", "--runs", "2",
            "--out", str(tmp_path / "so")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "training the runs one after another: second-order inner loops" in err
    rec = json.loads((tmp_path / "so" / "results.json").read_text())
    assert all("batched_runs" not in r for r in rec["runs"])
    cfg = resolve(dict(graph="citeseer", method="metagnn", data_root=str(shared_data)))
    assert "subgraph-GCN" in fast.why_not_batched(build_learner(cfg, GraphTask.build(cfg).graph))


def test_device_without_a_gpu_is_a_one_line_error(tmp_path, shared_data, capsys):
    """--device cuda where torch sees no GPU (CI): the fix named, nothing written."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    out = tmp_path / "gpu"
    assert main(["train", "--graph", "citeseer", "--root", str(shared_data), "--device", "cuda",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("use --device cpu (the default)") and not out.exists()
    assert main(["train", "--graph", "citeseer", "--root", str(shared_data), "--device", "tpu",
                 "--out", str(out)]) == 2
    assert "use cpu, cuda or cuda:N" in capsys.readouterr().err and not out.exists()


def _record_products(monkeypatch):
    """Wrap the batched path's product builder and its solve-alone path: (product sizes, alone calls)."""
    sizes, alone = [], []
    cross, forward_alone = fast._Rows.cross, fast.forward_alone

    def recorded_cross(self, other, dtype):
        out = cross(self, other, dtype)
        sizes.append(out.numel())
        return out

    def recorded_alone(learner, episode, params, run, train):
        alone.append(train)
        return forward_alone(learner, episode, params, run, train)

    monkeypatch.setattr(fast._Rows, "cross", recorded_cross)
    monkeypatch.setattr(fast, "forward_alone", recorded_alone)
    return sizes, alone


@pytest.mark.parametrize("method,cml,rows", [("gmeta", True, 14), ("ammgnn", False, 6)])
def test_tasks_past_the_gram_cap_are_solved_alone_with_equal_results(citeseer, monkeypatch, capsys, method, cml,
                                                                     rows):
    """With MAX_GRAM_ENTRIES lowered to rows^2, below CiteSeer's larger 1-shot tasks (about half the
    training tasks; for G-Meta every validation task too, whose query-support product is larger),
    batched runs give the losses, scores and weights of the same runs trained alone (float64, 1e-6),
    no product array has more entries than the cap, and a status line says that tasks ran alone."""
    from gnn_cml.meta import closed_form

    cfg, task = citeseer(method=method, cml=cml, ways=2, shots=1)
    cap = rows * rows
    monkeypatch.setattr(closed_form, "MAX_GRAM_ENTRIES", cap)
    alone = _trainers(cfg, task, 3, torch.float64, episodes=20, val_every=5, patience=10 ** 6)
    for t in alone:
        t.fit()
    sizes, solved_alone = _record_products(monkeypatch)
    batched_calls = []
    batched_forward = fast.batched_forward
    monkeypatch.setattr(fast, "batched_forward",
                        lambda *a, **k: batched_calls.append(len(a[1]) * k["train"]) or batched_forward(*a, **k))
    together = _trainers(cfg, task, 3, torch.float64, episodes=20, val_every=5, patience=10 ** 6)
    val_alone = 0
    for t in together:
        for e in t.val_tasks:
            x_s, _, x_q, _ = fast.graph_inputs(t.model, e)
            val_alone += fast.past_gram_cap(t.model.test_model(), x_s.shape[0], x_q.shape[0], train=False)
    fit_batched(together, progress=True, label="runs")
    for a, b in zip(alone, together):
        assert len(a.history) == len(b.history) == 4
        for x, y in zip(a.history, b.history):
            assert abs(x["train_loss"] - y["train_loss"]) <= 1e-6
            assert x["val_accuracy"] == y["val_accuracy"] and x["train_accuracy"] == y["train_accuracy"]
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.allclose(p, q, rtol=0, atol=1e-6), name
    assert len({round(t.history[-1]["train_loss"], 6) for t in together}) == 3
    # both paths were taken in training: some of the 60 tasks alone, the others batched
    trained_alone = solved_alone.count(True)
    assert 10 <= trained_alone <= 50 and sum(batched_calls) == 60 - trained_alone
    assert solved_alone.count(False) == 4 * val_alone  # the validation tasks past the cap, at 4 validations
    assert sizes and max(sizes) <= cap
    if method == "gmeta":  # 3 runs x 2 validation tasks, each query-support product past 196 entries
        assert val_alone == 6
    err = capsys.readouterr().err
    assert f"past the batched path's cap of {cap:,} entries; such tasks run alone" in err
    assert "runs · training (episode " in err
    assert (f"runs · validation: {val_alone} task" in err) == (val_alone > 0)


def test_batched_evaluation_past_the_gram_cap_equals_evaluate_tasks(citeseer, monkeypatch):
    """Test tasks whose query-support product passes MAX_GRAM_ENTRIES are evaluated alone, the others
    batched: the same accuracies as evaluate_tasks (CML-dagger), no product array above the cap."""
    from gnn_cml.meta import closed_form

    cfg, task = citeseer(method="gmeta", cml=True, dagger=True, ways=2, shots=1)
    drawn = task.test_tasks()
    tests = [drawn[i] for i in range(12)]
    models = [build_learner(cfg, task.graph, seed=s).to(torch.float64) for s in (3, 4)]
    with torch.no_grad():  # untrained co-learners predict one class everywhere: scramble them per run
        for seed, m in zip((3, 4), models):
            torch.manual_seed(seed)
            for p in m.co_learner.parameters():
                p.normal_(0, 2)
    products = []
    for e in tests:
        x_s, _, x_q, _ = fast.graph_inputs(models[0], e)
        products.append(x_s.shape[0] * x_q.shape[0])
    cap = sorted(products)[6]
    over = sum(p > cap for p in products)
    assert 2 <= over <= 8
    monkeypatch.setattr(closed_form, "MAX_GRAM_ENTRIES", cap)
    sizes, solved_alone = _record_products(monkeypatch)
    notices = []
    batched = evaluate_batched([m.test_model() for m in models], [tests, tests], [3, 4],
                               notice=lambda count, rows: notices.append(count))
    assert notices == [2 * over] and solved_alone == [False] * (2 * over)
    assert sizes and max(sizes) <= cap
    for m, seed, got in zip(models, (3, 4), batched):
        want = evaluate_tasks(m.test_model(), tests, METRICS["accuracy"], seed=seed)
        assert got == pytest.approx(want, abs=1e-6)
    assert batched[0] != batched[1]
