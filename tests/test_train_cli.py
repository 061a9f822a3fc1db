"""Every method trains and evaluates from the CLI on real CiteSeer and Cora."""
import json

import pytest
import torch
import yaml

from gnn_cml.cli import main

FAST = ["--episodes", "6", "--val-every", "3", "--val-tasks", "2", "--test-tasks", "4", "--runs", "2",
        "--inner-steps", "2", "--no-progress"]


@pytest.mark.parametrize("graph,method,cml", [
    ("citeseer", "maml", False), ("citeseer", "maml", True), ("citeseer", "metagnn", True),
    ("citeseer", "gmeta", False), ("citeseer", "gmeta", True), ("citeseer", "ammgnn", False),
    ("citeseer", "ammgnn", True), ("citeseer", "protonet", False), ("citeseer", "gpn", False),
    ("cora", "gmeta", True), ("cora", "ammgnn", True), ("cora", "maml", True),
])
def test_train_then_evaluate(tmp_path, shared_data, capsys, graph, method, cml):
    out = tmp_path / "run"
    args = ["train", "--graph", graph, "--method", method, "--ways", "2", "--shots", "1", "--out", str(out),
            "--root", str(shared_data)] + FAST + (["--cml"] if cml else [])
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads((out / "results.json").read_text())
    acc = result["test_accuracy"]
    assert len(acc["runs"]) == 2 and all(0 <= a <= 100 for a in acc["runs"])
    assert printed["test_accuracy"] == round(acc["mean"], 2)
    assert result["episodes_per_s"] > 0 and result["cml"] == cml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == method and cfg["graph"] == graph
    lines = (out / "run_0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [3, 6]
    state = torch.load(out / "run_0" / "checkpoint.pt", weights_only=True)
    assert state["episode"] == 6
    # re-evaluating the saved models reproduces the numbers exactly
    assert main(["evaluate", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"]["runs"] == pytest.approx(acc["runs"], abs=1e-9)
    if cml:
        assert main(["evaluate", str(out), "--co-learner", "--tasks", "3"]) == 0
        assert json.loads(capsys.readouterr().out)["co_learner"] is True


def test_protonet_with_cml_is_refused(tmp_path, shared_data, capsys):
    code = main(["train", "--graph", "citeseer", "--method", "protonet", "--cml", "--out", str(tmp_path / "x"),
                 "--root", str(shared_data)] + FAST)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gradient-based" in err[0]
    assert not (tmp_path / "x").exists()
