"""--method tlp: linear probes on a pretrained GCN (DGI, GRACE, supervised) on real Cora.

What is checked: a probe beats chance clearly on easy tasks after a few epochs of DGI; the
batched torch probe solves scikit-learn's problem; pretraining never reads a label of a
validation or test class (poisoned labels leave the encoder bit-for-bit unchanged); a run
interrupted after pretraining resumes from ``encoder.pt`` to the uninterrupted result; bad
input ends in one line naming the fix.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_cml.cli import main
from gnn_cml.config import resolve
from gnn_cml.engine.checkpoint import load_checkpoint
from gnn_cml.experiments.graph import GraphTask
from gnn_cml.meta import tlp as tlp_module
from gnn_cml.meta.factory import build_learner
from gnn_cml.meta.tlp import fit_probes, probe_logits, training_labels
from gnn_cml.sampling import EpisodeSampler, TaskSet
from helpers import without_keys

FAST = ["--graph", "cora", "--method", "tlp", "--pretrain-epochs", "3", "--pretrain-hidden", "32",
        "--test-tasks", "10", "--no-progress"]
TIMING_KEYS = {"train_seconds", "test_seconds", "pretrain_seconds", "wall_time_s", "pretrain_reused"}


def untimed(obj):
    return without_keys(obj, TIMING_KEYS)


@pytest.fixture(scope="module")
def cora(shared_data):
    return GraphTask.build(resolve({"graph": "cora", "method": "tlp", "data_root": str(shared_data)}))


def task_with(cora, y, **overrides):
    """``cora`` with other labels ``y`` (and config overrides): what pretraining could read."""
    data = cora.data.clone()
    data.y = torch.as_tensor(y)
    cfg = resolve({"graph": "cora", "method": "tlp", "data_root": cora.cfg.data_root, **overrides})
    return GraphTask(cfg, data, cora.graph, cora.split)


def pretrained(task, tmp_path: Path, seed: int = 3):
    tmp_path.mkdir(parents=True, exist_ok=True)
    learner = build_learner(task.cfg, task.graph, seed=seed)
    learner.fit(task, tmp_path, seed=seed, progress=False)
    return {k: v.clone() for k, v in learner.encoder.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the probe -----------------------------------------------------------------------------
def test_probe_on_real_cora_beats_chance(cora, tmp_path):
    """A few epochs of DGI and a probe on easy (2-way 5-shot) Cora test tasks: well above 50%."""
    task = task_with(cora, cora.data.y, pretrain="dgi", pretrain_epochs=15, pretrain_hidden=64)
    learner = build_learner(task.cfg, task.graph, seed=0)
    learner.fit(task, tmp_path, seed=0, progress=False)
    tests = TaskSet.generate(EpisodeSampler(cora.data.y, cora.split.test, 2, 5, 20, seed=1), 30)
    acc = float(np.mean(learner.evaluate(tests)))
    assert acc > 0.65, acc
    # the single-task forward (used by `gnn-cml evaluate`) gives the same predictions
    one = [float((learner(e).logits.argmax(-1) == e.query_y).double().mean()) for e in list(tests)[:5]]
    assert np.allclose(one, learner.evaluate(list(tests)[:5]))


@pytest.mark.parametrize("ways", [2, 3])
def test_batched_probe_solves_sklearns_problem(ways):
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    zs = torch.rand(2, ways * 5, 16, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).repeat_interleave(5).repeat(2, 1)
    zs = zs + 0.3 * torch.nn.functional.one_hot(ys, 16).double()  # separable-ish
    w, b = fit_probes(zs, ys, ways, c=1.0)
    for t in range(2):
        clf = LogisticRegression(C=1.0, tol=1e-8, max_iter=1000).fit(zs[t].numpy(), ys[t].numpy())
        ours = (zs[t] @ w[t].t() + b[t]).numpy()
        theirs = clf.decision_function(zs[t].numpy())
        if ways == 2:
            assert np.allclose(ours[:, 1] - ours[:, 0], theirs, atol=1e-4)
        else:  # multinomial scores are defined up to a per-row constant
            assert np.allclose(ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=1e-4)
    # and through probe_logits: the same decisions as the sklearn solver
    z = zs.reshape(-1, 16)
    from gnn_cml.sampling.episodes import Episode

    tasks = [Episode(torch.arange(t * ways * 5, (t + 1) * ways * 5), ys[t], torch.arange(len(z)), torch.zeros(len(z)).long())
             for t in range(2)]
    for a, c in zip(probe_logits(z, tasks, ways), probe_logits(z, tasks, ways, solver="sklearn")):
        assert torch.equal(a.argmax(-1), c.argmax(-1))


# --- no label of a validation or test class is read --------------------------------------
def test_supervised_pretraining_reads_only_training_class_labels(cora, tmp_path):
    y = cora.data.y.clone()
    held_out = torch.from_numpy(np.isin(y.numpy(), list(cora.split.val) + list(cora.split.test)))
    rng = np.random.default_rng(0)
    poisoned = y.clone()  # val/test labels shuffled among val/test nodes (and a few flipped within them)
    idx = held_out.nonzero().reshape(-1)
    poisoned[idx] = y[idx][torch.from_numpy(rng.permutation(len(idx)))]
    nodes, labels = training_labels(y, cora.split.train)
    assert set(np.unique(y[nodes].numpy())) == set(cora.split.train)
    assert torch.equal(nodes, training_labels(poisoned, cora.split.train)[0])
    clean = pretrained(task_with(cora, y, pretrain="supervised", pretrain_epochs=5), tmp_path / "a")
    dirty = pretrained(task_with(cora, poisoned, pretrain="supervised", pretrain_epochs=5), tmp_path / "b")
    assert same(clean, dirty)
    # the check is sensitive: changing training-class labels does change the encoder
    train_nodes = nodes[:50]
    flipped = y.clone()
    a, b = cora.split.train[:2]
    flipped[train_nodes] = torch.where(y[train_nodes] == a, torch.tensor(b), torch.tensor(a))
    assert not same(clean, pretrained(task_with(cora, flipped, pretrain="supervised", pretrain_epochs=5),
                                      tmp_path / "c"))


@pytest.mark.parametrize("method", ["dgi", "grace"])
def test_self_supervised_pretraining_reads_no_label(cora, tmp_path, method):
    y = cora.data.y
    noise = torch.from_numpy(np.random.default_rng(1).integers(0, int(y.max()) + 1, len(y)))
    kw = dict(pretrain=method, pretrain_epochs=1, pretrain_hidden=16)
    assert same(pretrained(task_with(cora, y, **kw), tmp_path / "a"),
                pretrained(task_with(cora, noise, **kw), tmp_path / "b"))


# --- resume ------------------------------------------------------------------------------------
def test_resume_after_pretraining_equals_uninterrupted(shared_data, tmp_path, monkeypatch):
    args = [*FAST, "--pretrain", "dgi", "--runs", "2", "--root", str(shared_data)]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["train", *args, "--out", str(ref)]) == 0

    calls = {"evaluate": 0}
    original = tlp_module.TLP.evaluate

    def killed_in_run_1(self, tasks):  # run 0 finishes; run 1 dies after its pretraining
        calls["evaluate"] += 1
        if calls["evaluate"] == 2:
            raise KeyboardInterrupt
        return original(self, tasks)

    monkeypatch.setattr(tlp_module.TLP, "evaluate", killed_in_run_1)
    assert main(["train", *args, "--out", str(out)]) == 130
    assert (out / "run_1" / "encoder.pt").is_file() and not (out / "run_1" / "result.json").exists()
    monkeypatch.setattr(tlp_module.TLP, "evaluate", original)

    def no_pretraining(*a, **k):
        raise AssertionError("a finished pretraining must be reused, not rerun")

    monkeypatch.setattr(tlp_module, "pretrain", no_pretraining)
    assert main(["train", *args, "--out", str(out), "--resume"]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, ref))
    assert untimed(a) == untimed(b)
    assert a["runs"][1]["pretrain_reused"] is True and "pretrain_seconds" in a
    for run in range(2):
        mine, theirs = (load_checkpoint(d / f"run_{run}" / "encoder.pt")["encoder"] for d in (out, ref))
        assert same(mine, theirs)
        # encoder.pt holds tensors and plain values only
        torch.load(out / f"run_{run}" / "encoder.pt", weights_only=True)

    # `gnn-cml evaluate` re-scores the saved encoders on the same fixed tasks
    from gnn_cml.experiments.graph import evaluate_run

    again = evaluate_run(out)
    assert np.allclose(again["test_accuracy"]["runs"], a["test_accuracy"]["runs"])


def test_pretrained_reuses_another_runs_encoders(shared_data, tmp_path, monkeypatch):
    """A 5-shot run reuses the 1-shot run's encoders (pretraining does not depend on shots)."""
    base = [*FAST, "--pretrain", "supervised", "--runs", "1", "--root", str(shared_data)]
    one, five, ref = tmp_path / "one", tmp_path / "five", tmp_path / "ref"
    assert main(["train", *base, "--shots", "1", "--out", str(one)]) == 0
    assert main(["train", *base, "--shots", "5", "--out", str(ref)]) == 0
    real = tlp_module.pretrain
    monkeypatch.setattr(tlp_module, "pretrain", lambda *a, **k: pytest.fail("pretrained again"))
    assert main(["train", *base, "--shots", "5", "--out", str(five), "--pretrained", str(one)]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (five, ref))
    assert a["test_accuracy"]["runs"] == b["test_accuracy"]["runs"]
    assert all(r["pretrain_reused"] for r in a["runs"]) and (five / "run_0" / "encoder.pt").is_file()
    monkeypatch.setattr(tlp_module, "pretrain", real)


def test_pretrained_with_other_settings_is_refused(shared_data, tmp_path, capsys):
    base = [*FAST, "--runs", "1", "--root", str(shared_data)]
    one = tmp_path / "one"
    assert main(["train", *base, "--pretrain", "supervised", "--out", str(one)]) == 0
    out = tmp_path / "other"
    assert main(["train", *base, "--pretrain", "dgi", "--pretrained", str(one), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pretrain differ" in err[0] and "drop --pretrained" in err[0], err
    # supervised encoders depend on the class split (DGI's and GRACE's do not)
    assert main(["train", *base, "--pretrain", "supervised", "--split-rule", "shuffle", "--pretrained", str(one),
                 "--out", str(out)]) == 2
    assert "(split_rule differ)" in capsys.readouterr().err
    assert not out.exists()


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", [
    (["--method", "tlp", "--cml"], ["--cml", "drop --cml"]),
    (["--method", "tlp", "--pretrain", "bert"], ["pretrain must be one of dgi, grace, supervised"]),
    (["--method", "maml", "--pretrain", "dgi"], ["only apply to --method tlp", "--pretrain"]),
    (["--method", "tlp", "--probe-c", "0"], ["probe_c must be a positive", "--probe-c"]),
    (["--method", "tlp", "--pretrain-epochs", "0"], ["pretrain_epochs must be positive"]),
    (["--method", "tlp", "--probe-solver", "liblinear"], ["probe_solver must be one of torch, sklearn"]),
    (["--method", "tlp", "--probe-scale", "z"], ["probe_scale must be one of minmax, none"]),
    (["--method", "tlp", "--pretrained", "/nonexistent"], ["not a gnn-cml run directory"]),
])
def test_bad_input_is_one_line(shared_data, tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    code = main(["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists()


def test_table3_has_tlp_columns_on_the_cells_tasks(shared_data, tmp_path, monkeypatch):
    from gnn_cml.experiments import grid
    from gnn_cml.report import table3

    monkeypatch.setitem(table3.SETTINGS, "cora", [(2, 1)])
    declared = grid.method_overrides
    monkeypatch.setattr(grid, "method_overrides",
                        lambda arm, quick=False: {**declared(arm, quick), "pretrain_epochs": 2, "pretrain_hidden": 32})
    report = table3.run_table3(["cora"], tmp_path, runs=1, quick=True, data_root=str(shared_data), progress=False,
                               methods=[], baselines=["tlp-dgi", "tlp-supervised"])
    rows = report.rows
    assert not report.skipped and [r.method for r in rows] == ["tlp-dgi", "tlp-supervised"]
    assert all(r.mean is not None and r.episodes_per_s is None for r in rows)
    split = tmp_path / "cora" / "2w1s" / "split_1234"
    for name in ("tlp-dgi", "tlp-supervised"):
        with np.load(split / "test_tasks.npz") as f, np.load(split / name / "test_tasks.npz") as g:
            assert all(np.array_equal(f[k], g[k]) for k in ("support", "query"))
